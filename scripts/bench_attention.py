r"""Where a training step's layer time goes: one encoder layer, and attention on its own, on packed rows.

  python scripts/bench_attention.py                      # MiniLM's layer shape, 40 rows of 128 (the main job's step)
  python scripts/bench_attention.py --rows 80 --length 64 --repeats 3

Times, in milliseconds (mean of --repeats calls after one warm-up call): a bfloat16 `TransformerLayer`
of all-MiniLM-L6-v2's shape (384 wide, 12 heads, 1536 in the MLP; random weights: the time does not depend
on them), forward and forward + backward; then attention alone, forward and forward + backward, as
`jax.nn.dot_product_attention` computes it and as the encoder's bfloat16 path does (`_bf16_attention`).
The rows are packed as the trainer packs posts (texts of --text_tokens tokens, as many as fit a row, the
rest padding; attention stays inside a text). docs/results.md, "bfloat16 attention", reads it.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from pe_jax import sharding  # noqa: E402
from pe_jax.models import encoder  # noqa: E402
from pe_jax.tokenization import pack_rows, packed_arrays  # noqa: E402


def packed_segments(rows: int, length: int, text_tokens: int) -> np.ndarray:
  """Segment ids of `rows` rows packed by the trainer's own packing with texts of `text_tokens` tokens, as
  many as fit a row (0: padding)."""
  texts = [np.zeros(text_tokens, np.int32)] * (rows * max(1, length // text_tokens))
  packing = pack_rows(texts, range(len(texts)), length)
  return packed_arrays(texts, range(len(texts)), packing, length, rows, pad_id=0)[1]


def mean_ms(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))  # compiles
  start = time.perf_counter()
  for _ in range(repeats):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--rows", type=int, default=40)
  parser.add_argument("--length", type=int, default=128)
  parser.add_argument("--text_tokens", type=int, default=30, help="tokens per packed text")
  parser.add_argument("--repeats", type=int, default=10)
  args = parser.parse_args()

  cfg = encoder.EncoderConfig(vocab_size=8, dtype="bfloat16")
  with sharding.activate(sharding.single_device_mesh()):
    layer = encoder.TransformerLayer(cfg, nnx.Rngs(0))
  graphdef, state = nnx.split(layer)
  rng = np.random.default_rng(0)
  mask = encoder._packed_mask(jnp.asarray(packed_segments(args.rows, args.length, args.text_tokens)))
  x = jnp.asarray(rng.normal(size=(args.rows, args.length, cfg.hidden_size)), jnp.float32)
  heads = (args.rows, args.length, cfg.num_heads, cfg.hidden_size // cfg.num_heads)
  q, k, v = (jnp.asarray(rng.normal(size=heads), jnp.float32) for _ in range(3))

  def layer_sum(state, x):
    return nnx.merge(graphdef, state)(x, mask).astype(jnp.float32).sum()

  def timed(fn, *inputs):
    grad = jax.jit(jax.grad(fn, argnums=tuple(range(len(inputs)))))
    return mean_ms(jax.jit(fn), *inputs, repeats=args.repeats), mean_ms(grad, *inputs, repeats=args.repeats)

  print(f"{args.rows} rows x {args.length} tokens, texts of {args.text_tokens} tokens; ms per call "
        f"(forward / forward + backward)")
  print("bfloat16 layer:                 %7.1f / %7.1f" % timed(layer_sum, state, x))
  for name, attend in (("dot_product_attention", lambda q, k, v: jax.nn.dot_product_attention(q, k, v, mask=mask)),
                       ("bfloat16 attention", lambda q, k, v: encoder._bf16_attention(q, k, v, mask))):
    print(f"{name + ':':32s}" + "%7.1f / %7.1f" % timed(lambda q, k, v: attend(q, k, v).sum(), q, k, v))


if __name__ == "__main__":
  main()

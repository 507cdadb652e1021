"""The Flax encoder against an independent NumPy BERT forward, its config checks, and its sharding."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fixtures import (FFN, HEADS, HIDDEN, LAYERS, MAX_SEQ_LENGTH, VARIANTS, numpy_embed, run_encoder as run,
                      tiny_tensors, vocabulary)
from pe_jax import sharding
from pe_jax.models import encoder, weights
from pe_jax.models.encoder import EncoderConfig, l2_normalize, pool
from pe_jax.tokenization import pad_batch

TESTS = pathlib.Path(__file__).resolve().parents[1]
# Token id sequences of several lengths, [CLS]/<s> first and [SEP]/</s> last as the tokenizers make them.
SEQUENCES = {
    "bert": [[2, 13, 14, 3], [2, 30, 31, 32, 33, 34, 35, 36, 3], [2, 3], [2, *range(40, 61), 3]],
    "xlmr": [[0, 13, 14, 2], [0, 30, 31, 32, 33, 34, 35, 36, 2], [0, 2], [0, *range(40, 61), 2]],
}


def tiny_config(variant: str = "bert", **changes) -> EncoderConfig:
  v = VARIANTS[variant]
  cfg = EncoderConfig(
      vocab_size=len(vocabulary(variant)), hidden_size=HIDDEN, num_layers=LAYERS, num_heads=HEADS,
      intermediate_size=FFN, max_position_embeddings=MAX_SEQ_LENGTH + v["offset"],
      type_vocab_size=v["type_vocab_size"], pad_token_id=v["pad"], position_offset=v["offset"],
      max_seq_length=MAX_SEQ_LENGTH)
  return cfg.replace(**changes)


def projection_of(model):
  if model.projection is None:
    return None
  return np.asarray(model.projection.kernel[...]), np.asarray(model.projection.bias[...])


# Four cases cover both position schemes, both poolings, projection on/off and normalisation on/off; each
# case is one XLA compile (~1 s on 2 cores), so the full product is not worth it.
@pytest.mark.parametrize("variant, pooling, projection_dim, normalize", [
    ("bert", "mean", None, True), ("bert", "cls", 8, True), ("xlmr", "cls", None, True), ("xlmr", "mean", 8, False)])
def test_forward_matches_numpy_reference(variant, pooling, projection_dim, normalize):
  tensors = tiny_tensors(variant)
  cfg = tiny_config(variant, pooling=pooling, projection_dim=projection_dim, normalize=normalize)
  model = weights.load_encoder(cfg, tensors)
  # Padded to 24 columns and 6 rows; the reference sees each sequence alone and unpadded.
  got = run(model, SEQUENCES[variant], rows=6)
  want = np.stack([numpy_embed(tensors, s, offset=cfg.position_offset, pooling=pooling,
                               projection=projection_of(model), normalize=normalize) for s in SEQUENCES[variant]])
  assert got.shape == (6, projection_dim or HIDDEN) and got.dtype == np.float32
  np.testing.assert_allclose(got[:4], want, rtol=1e-4, atol=2e-5)
  assert np.isfinite(got).all()  # all-padding rows give finite garbage, never NaN
  if normalize:
    np.testing.assert_allclose(np.linalg.norm(got[:4], axis=1), 1, atol=1e-5)
  else:
    assert np.abs(np.linalg.norm(got[:4], axis=1) - 1).max() > 1e-2


def test_padding_columns_and_rows_do_not_change_real_rows():
  # XLM-R style: its pad id (1) is also a real embedding row, so a masking slip would show.
  model = weights.load_encoder(tiny_config("xlmr", pooling="cls"), tiny_tensors("xlmr"))
  tight = run(model, SEQUENCES["xlmr"], length=max(map(len, SEQUENCES["xlmr"])))
  padded = run(model, SEQUENCES["xlmr"], rows=6)
  np.testing.assert_allclose(padded[:4], tight, rtol=1e-5, atol=1e-6)


def test_position_offset_is_what_the_reference_checks():
  # Guards the reference: reading XLM-R positions from 0 instead of 2 must give visibly different vectors.
  tensors = tiny_tensors("xlmr")
  got = run(weights.load_encoder(tiny_config("xlmr", pooling="cls"), tensors), SEQUENCES["xlmr"], rows=6)[:4]
  wrong = np.stack([numpy_embed(tensors, s, offset=0, pooling="cls") for s in SEQUENCES["xlmr"]])
  assert np.abs(got - wrong).max() > 1e-2


def test_bfloat16_compute_is_close_to_float32():
  tensors = tiny_tensors("bert")
  fp32 = run(weights.load_encoder(tiny_config(), tensors), SEQUENCES["bert"], rows=6)[:4]
  bf16_model = weights.load_encoder(tiny_config(dtype="bfloat16"), tensors)
  assert bf16_model.layers[0].mlp_in.kernel[...].dtype == jnp.float32  # params stay fp32
  bf16 = run(bf16_model, SEQUENCES["bert"], rows=6)[:4]
  assert bf16.dtype == np.float32
  cosine = (fp32 * bf16).sum(1)
  assert cosine.min() > 0.99, cosine
  assert np.abs(fp32 - bf16).max() > 1e-6  # bf16 really ran


def _equations(jaxpr):
  """Every equation of `jaxpr` and of the jaxprs inside it (jit, custom_vjp, ...)."""
  for e in jaxpr.eqns:
    yield e
    for value in e.params.values():
      for sub in value if isinstance(value, (list, tuple)) else [value]:
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          yield from _equations(inner)


def test_bfloat16_products_accumulate_in_float32_forward_and_backward():
  # XLA:CPU multiplies bfloat16 at its native rate only into float32 (pe_jax/models/encoder.py:
  # _bf16_matmul): every product of a bf16 encoder's step, the backward pass's included, must be one.
  tensors = tiny_tensors("bert")
  fp32, bf16 = (weights.load_encoder(tiny_config(projection_dim=8, dtype=d), tensors) for d in ("float32", "bfloat16"))
  ids, mask = pad_batch([np.asarray(s) for s in SEQUENCES["bert"]], MAX_SEQ_LENGTH, 4, 0)
  target = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)

  def grads(model):
    graphdef, params = nnx.split(model)
    loss = lambda p: jnp.sum(nnx.merge(graphdef, p)(ids, mask) * target)
    return params, jax.grad(loss), loss

  params, grad_fn, _ = grads(bf16)
  dots = [(tuple(v.aval.dtype for v in e.invars), e.outvars[0].aval.dtype)
          for e in _equations(jax.make_jaxpr(grad_fn)(params).jaxpr) if e.primitive.name == "dot_general"]
  bf16_dots = [d for d in dots if jnp.bfloat16 in d[0]]
  assert all(d == ((jnp.bfloat16, jnp.bfloat16), jnp.float32) for d in bf16_dots), dots
  # 6 dense layers a block, each one product forward and two backward; attention's two products, each
  # two backward; the projection: float32
  assert len(bf16_dots) == (3 * 6 + 3 * 2) * LAYERS, dots

  want = jax.grad(grads(fp32)[2])(nnx.split(fp32)[1])
  got = grad_fn(params)
  for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
    cos = float(np.sum(np.asarray(g) * np.asarray(w)) / (np.linalg.norm(g) * np.linalg.norm(w) + 1e-12))
    assert g.dtype == jnp.float32 and (np.linalg.norm(w) < 1e-6 or cos > 0.99), (path, cos)
  assert bf16.projection.dtype == "float32"  # the projection stays float32 (Encoder.finish)


def test_bfloat16_attention_matches_float32_attention_and_its_gradient():
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.normal(size=(3, 10, 2, 8)), jnp.float32) for _ in range(3))
  # Row 0: two texts packed (tokens 0-5, 6-8) and a padding token; rows 1-2: all keys but the last two.
  segments = np.array([[1] * 6 + [2] * 3 + [0]] + [[1] * 8 + [0] * 2] * 2)
  mask = jnp.asarray(encoder._packed_mask(jnp.asarray(segments)))
  want_fn = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, mask=mask)
  got_fn = lambda q, k, v: encoder._bf16_attention(q, k, v, mask)
  real = jnp.asarray(segments > 0)[:, :, None, None]  # a padding token's output is never pooled
  want, got = want_fn(q, k, v), got_fn(q, k, v)
  assert got.dtype == jnp.float32 and np.isfinite(np.asarray(got)).all()
  np.testing.assert_allclose(np.asarray(got * real), np.asarray(want * real), atol=0.05)
  target = jnp.asarray(rng.normal(size=q.shape), jnp.float32) * real
  for w, g in zip(jax.grad(lambda *x: jnp.sum(want_fn(*x) * target), argnums=(0, 1, 2))(q, k, v),
                  jax.grad(lambda *x: jnp.sum(got_fn(*x) * target), argnums=(0, 1, 2))(q, k, v)):
    assert g.dtype == jnp.float32
    assert float(jnp.linalg.norm(g - w) / jnp.linalg.norm(w)) < 0.05


def test_every_param_has_logical_axis_names():
  _, state, _ = weights.abstract_encoder(tiny_config(projection_dim=8), sharding.single_device_mesh())
  known = {name for name, _ in sharding.LOGICAL_AXIS_RULES}
  params = [(k, v) for k, v in nnx.to_flat_state(state) if isinstance(v, nnx.Param)]
  assert len(params) == 5 + LAYERS * 16 + 2
  for key, param in params:
    axes = param.get_metadata().get("out_sharding")
    path = weights.path_str(key)
    assert axes is not None and len(axes) == param.get_value().ndim, (path, axes)
    assert set(axes) - {None} <= known, (path, axes)
  named = {weights.path_str(k): p.get_metadata()["out_sharding"] for k, p in params}
  assert named["embeddings.word.embedding"] == ("vocab", "embed")
  assert named["layers.1.attention.query.kernel"] == ("embed", "heads")
  assert named["layers.1.attention.out.kernel"] == ("heads", "embed")
  assert named["layers.0.mlp_out.kernel"] == ("mlp", "embed")
  assert named["projection.kernel"] == ("embed", "proj")


@pytest.mark.parametrize("changes, message", [
    (dict(pooling="max"), "pooling must be one of"),
    (dict(num_heads=5), "not divisible by num_heads 5"),
    (dict(max_seq_length=25), r"max_seq_length 25 \(\+ position offset 0\) exceeds max_position_embeddings 24"),
    (dict(hidden_act="swish"), "hidden_act 'swish' is not supported"),
])
def test_config_rejects_bad_values(changes, message):
  with pytest.raises(ValueError, match=message):
    tiny_config(**changes)


def test_config_dict_round_trip_and_unknown_fields():
  cfg = tiny_config("xlmr", projection_dim=50)
  assert EncoderConfig.from_dict(cfg.to_dict()) == cfg
  assert cfg.embedding_dim == 50 and tiny_config().embedding_dim == HIDDEN
  with pytest.raises(ValueError, match=r"unknown encoder config fields \['hiden_size'\]"):
    EncoderConfig.from_dict({**cfg.to_dict(), "hiden_size": 3})


def test_config_from_hf_config_families():
  base = dict(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
              max_position_embeddings=514)
  xlmr = EncoderConfig.from_hf_config({**base, "model_type": "xlm-roberta", "pad_token_id": 1})
  assert (xlmr.position_offset, xlmr.max_seq_length, xlmr.pad_token_id) == (2, 512, 1)
  bert = EncoderConfig.from_hf_config({**base, "model_type": "bert"}, pooling="cls")
  assert (bert.position_offset, bert.max_seq_length, bert.pooling) == (0, 512, "cls")
  with pytest.raises(ValueError, match="model_type 'gpt2' is not a BERT/XLM-R family encoder"):
    EncoderConfig.from_hf_config({**base, "model_type": "gpt2"})


def test_pool_and_normalize_edge_cases():
  hidden = jnp.arange(12, dtype=jnp.float32).reshape(1, 3, 4)
  np.testing.assert_allclose(pool(hidden, jnp.asarray([[1, 1, 0]]), "mean"), [[2, 3, 4, 5]])
  np.testing.assert_allclose(pool(hidden, jnp.asarray([[1, 1, 0]]), "cls"), [[0, 1, 2, 3]])
  # No real token and a zero vector: zero out, not NaN (as torch's normalize clamps).
  np.testing.assert_array_equal(pool(hidden, jnp.zeros((1, 3), jnp.int32), "mean"), np.zeros((1, 4)))
  np.testing.assert_array_equal(l2_normalize(jnp.zeros((2, 4))), np.zeros((2, 4)))


_MESH_SCRIPT = r"""
import json, sys
import numpy as np, jax
from flax import nnx
from pe_jax import sharding
from pe_jax.models import encoder, weights
from pe_jax.models.loading import load_model
from pe_jax.serving.embedder import Embedder

folder, out = sys.argv[1], sys.argv[2]
assert len(jax.devices()) == 8, jax.devices()
texts = ["hello world", "we are hiring a great data team today!", "", "the news of the day"] * 5 + ["post"]
mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
model, tok, _ = load_model(folder, mesh=mesh)
arrays = {weights.path_str(k): v.get_value() for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
report = {p: [list(a.sharding.spec), list(a.addressable_shards[0].data.shape)] for p, a in arrays.items()}
sharded = Embedder(model, tok, mesh=mesh, batch_size=8)(texts)
single_model, single_tok, _ = load_model(folder)
single = Embedder(single_model, single_tok, batch_size=8)(texts)
try:
  Embedder(model, tok, mesh=mesh, batch_size=6)
  report["bad_batch"] = None
except ValueError as e:
  report["bad_batch"] = str(e)
np.save(out + "/sharded.npy", sharded)
np.save(out + "/single.npy", single)
print(json.dumps(report))
"""


def test_sharded_on_8_devices_matches_one_device(tiny_bert_dir, tmp_path):
  # A fresh process: the fake device count must be set before jax initialises its backend.
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu",
         "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
  proc = subprocess.run([sys.executable, "-c", _MESH_SCRIPT, str(tiny_bert_dir), str(tmp_path)],
                        env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads(proc.stdout.strip().splitlines()[-1])
  # Logical axes land on mesh axes: embed -> fsdp, heads/mlp -> tensor, vocab whole.
  assert report["embeddings.word.embedding"] == [[None, "fsdp"], [len(vocabulary("bert")), HIDDEN // 2]]
  assert report["layers.0.attention.query.kernel"] == [["fsdp", "tensor"], [HIDDEN // 2, HIDDEN // 2]]
  assert report["layers.1.mlp_out.kernel"] == [["tensor", "fsdp"], [FFN // 2, HIDDEN // 2]]
  assert report["layers.1.mlp_norm.scale"] == [["fsdp"], [HIDDEN // 2]]
  assert "batch_size 6 must be a multiple of the data-parallel size 4" in report["bad_batch"]
  sharded, single = np.load(tmp_path / "sharded.npy"), np.load(tmp_path / "single.npy")
  assert sharded.shape == (21, HIDDEN)
  np.testing.assert_allclose(sharded, single, rtol=1e-5, atol=1e-5)

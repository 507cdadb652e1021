"""The jitted embedding function: any iterable of texts -> embeddings in input order.

Texts are tokenised a chunk at a time and packed several to a row, with the trainer's own packing
(`pe_jax.tokenization.pack_rows`) and model path (`Encoder.embed_packed`: attention inside each text,
pooling per text), so no compute goes to padding and every call has one of at most two shapes:
`batch_size` rows of `row_length` tokens, and, only for texts longer than `row_length`, rows of the
model's truncation length holding as many tokens. After warm-up nothing compiles again, whatever the
lengths. Texts are cut to the truncation length when they are tokenised (`TextTokenizer.encode`).

On CPU 8 rows of `ROW_LENGTH` a call embedded tweets faster than 16 or 32 (whose activations leave the
cache), as fast as the padded length buckets this replaced, without their eight compilations.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Iterable, Iterator

import jax
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from pe_jax import sharding as sharding_lib
from pe_jax.models.encoder import Encoder
from pe_jax.tokenization import ROW_LENGTH, TextTokenizer, TokenStats, clean_texts, pack_rows, packed_arrays, texts_per_call

@dataclasses.dataclass(frozen=True)
class RowShape:
  """One compiled shape: `rows` packed rows of `length` tokens a call."""

  rows: int
  length: int


def cut_calls(packing: list[list[int]], shape: RowShape, shards: int = 1) -> list[list[list[list[int]]]]:
  """Consecutive packed rows grouped into calls, each `shards` blocks (one per data-parallel shard, see
  `Encoder.pool_packed`) of at most `shape.rows // shards` rows and `shard_texts` texts.

  A row of more texts than a block pools (only texts of a token or two, or none) is cut into several.
  """
  rows, most = shape.rows // shards, shard_texts(shape, shards)
  blocks: list[list[list[int]]] = []
  texts = 0
  for row in (whole[i : i + most] for whole in packing for i in range(0, len(whole), most)):
    if not blocks or len(blocks[-1]) == rows or texts + len(row) > most:
      blocks.append([])
      texts = 0
    blocks[-1].append(row)
    texts += len(row)
  return [blocks[i : i + shards] for i in range(0, len(blocks), shards)]


def shard_texts(shape: RowShape, shards: int) -> int:
  """How many texts each shard's block of a call pools."""
  return texts_per_call(shape.rows // shards, shape.length)


class Embedder:
  """Embeds texts with an `Encoder`. Call it like a function: `embedder(texts) -> np.ndarray [N, D]`."""

  def __init__(
      self,
      model: Encoder,
      tokenizer: TextTokenizer,
      *,
      prefix: str = "",
      batch_size: int | None = None,
      row_length: int = ROW_LENGTH,
      chunk_size: int = 8192,
      mesh: jax.sharding.Mesh | None = None,
  ):
    self.tokenizer = tokenizer
    self.prefix = prefix
    self.chunk_size = chunk_size
    self.mesh = mesh or sharding_lib.single_device_mesh()
    dp = sharding_lib.data_parallel_size(self.mesh)
    # 8 rows (rounded up to fill every data-parallel shard) unless told.
    batch_size = batch_size or -(-8 // dp) * dp
    if batch_size % dp:
      raise ValueError(f"batch_size {batch_size} must be a multiple of the data-parallel size {dp}")
    if row_length < 1:
      raise ValueError(f"row_length must be positive, got {row_length}")
    self.batch_size = batch_size
    top = tokenizer.max_length
    short = RowShape(batch_size, min(row_length, top))
    # Long rows hold about as many tokens a call as short ones, so both calls take about as long.
    long_rows = -(-max(1, batch_size * short.length // top) // dp) * dp
    self.shapes = [short] if short.length == top else [short, RowShape(long_rows, top)]
    self.stats = TokenStats()
    self.num_traces = 0
    self.config = model.cfg
    self._graphdef, self._state = nnx.split(model)
    self._input_sharding = sharding_lib.batch_sharding(self.mesh)
    self._shards = dp

    def forward(state, input_ids, segment_ids, positions):
      self.num_traces += 1  # runs only while tracing: counts compilations
      num_texts = dp * shard_texts(RowShape(*input_ids.shape), dp)
      return nnx.merge(self._graphdef, state).embed_packed(input_ids, segment_ids, positions, num_texts, shards=dp)

    self._forward = jax.jit(forward)

  @classmethod
  def from_pretrained(cls, spec: str, *, mesh=None, config_overrides=None, **kwargs) -> "Embedder":
    """An alias, Hugging Face folder, hub id or training workdir (see `pe_jax.models.loading`)."""
    from pe_jax.models.loading import load_model

    mesh = mesh or sharding_lib.single_device_mesh()
    model, tokenizer, prefix = load_model(spec, mesh=mesh, **(config_overrides or {}))
    return cls(model, tokenizer, prefix=prefix, mesh=mesh, **kwargs)

  @property
  def dim(self) -> int:
    return self.config.embedding_dim

  def update_model(self, model: Encoder) -> None:
    """Swaps in new weights of the same architecture (evaluation during training) without recompiling."""
    self._state = nnx.state(model)

  def warmup(self) -> None:
    """Compiles both row shapes now, so the first real texts never wait for XLA (near-line serving)."""
    for shape in self.shapes:
      jax.block_until_ready(self._run([], [], [], shape))

  def _run(self, tokens: list[np.ndarray], text_ids: np.ndarray, call: list[list[int]], shape: RowShape) -> jax.Array:
    arrays = packed_arrays(tokens, text_ids, call, shape.length, shape.rows, self.tokenizer.pad_id)
    return self._forward(self._state, *jax.device_put(arrays, self._input_sharding))

  def _embed_chunk(self, texts: list[str], offset: int) -> np.ndarray:
    texts, stats = clean_texts(texts, offset)
    if self.prefix:
      texts = [self.prefix + t for t in texts]
    tokens, stats.truncated = self.tokenizer.encode(texts)
    self.stats.add(stats)
    lengths = np.array([len(t) for t in tokens])
    # Within a call, text k of shard g's block (in row order) is its segment k + 1 and the call's output
    # row g * shard_texts + k; `local` maps each text to its segment.
    local = np.zeros(len(tokens), np.int64)
    pending = []
    for shape, lower in zip(self.shapes, [0] + [s.length for s in self.shapes[:-1]]):
      members = np.flatnonzero((lengths > lower) & (lengths <= shape.length))
      if not len(members):
        continue
      packing = pack_rows([tokens[i] for i in members], members, shape.length)
      block_rows, most = shape.rows // self._shards, shard_texts(shape, self._shards)
      for call in cut_calls([[int(members[i]) for i in row] for row in packing], shape, self._shards):
        rows, order, slots = [], [], []
        for g, block in enumerate(call):
          rows += block + [[]] * (block_rows - len(block))  # block g fills its shard's rows
          texts_in = [i for row in block for i in row]
          local[texts_in] = np.arange(len(texts_in))
          order += texts_in
          slots += range(g * most, g * most + len(texts_in))
        # Dispatch is asynchronous: the next call is packed while this one runs.
        pending.append((order, slots, self._run(tokens, local, rows, shape)))
    out = np.empty((len(texts), self.dim), dtype=np.float32)
    for order, slots, emb in pending:
      out[order] = np.asarray(emb)[slots]
    return out

  def embed_stream(self, texts: Iterable[object], *, progress: bool = False, total: int | None = None) -> Iterator[np.ndarray]:
    """Yields embeddings chunk by chunk, in input order, for inputs too large to hold at once."""
    it = iter(texts)
    total = total if total is not None else (len(texts) if hasattr(texts, "__len__") else None)
    with tqdm(total=total, disable=not progress, unit="text", desc="embedding", smoothing=0.1) as bar:
      for offset in itertools.count(0, self.chunk_size):
        chunk = list(itertools.islice(it, self.chunk_size))
        if not chunk:
          return
        out = self._embed_chunk(chunk, offset)
        bar.update(len(chunk))
        yield out

  def embed(self, texts: Iterable[object], *, progress: bool = False, total: int | None = None) -> np.ndarray:
    """Embeddings [N, D] in input order; `self.stats` counts empty, truncated and repaired texts."""
    self.stats = TokenStats()
    chunks = list(self.embed_stream(texts, progress=progress, total=total))
    if not chunks:
      return np.zeros((0, self.dim), np.float32)
    return np.concatenate(chunks)

  __call__ = embed

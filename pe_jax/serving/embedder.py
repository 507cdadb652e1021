"""The jitted embedding function: any iterable of texts -> embeddings in input order.

Texts are tokenised a chunk at a time, sorted by length, and cut into batches of one fixed row count
whose length is rounded up to a bucket. The set of shapes is therefore small and fixed, and after
warm-up nothing compiles again however many texts stream through.
"""

from __future__ import annotations

import itertools
from typing import Iterable, Iterator

import jax
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from pe_jax import sharding as sharding_lib
from pe_jax.models.encoder import Encoder
from pe_jax.tokenization import TextTokenizer, TokenStats, bucket_length, clean_texts, pad_batch


class Embedder:
  """Embeds texts with an `Encoder`. Call it like a function: `embedder(texts) -> np.ndarray [N, D]`."""

  def __init__(
      self,
      model: Encoder,
      tokenizer: TextTokenizer,
      *,
      prefix: str = "",
      batch_size: int = 32,
      length_multiple: int = 8,
      chunk_size: int = 8192,
      mesh: jax.sharding.Mesh | None = None,
  ):
    self.tokenizer = tokenizer
    self.prefix = prefix
    self.length_multiple = length_multiple
    self.chunk_size = chunk_size
    self.mesh = mesh or sharding_lib.single_device_mesh()
    dp = sharding_lib.data_parallel_size(self.mesh)
    if batch_size % dp:
      raise ValueError(f"batch_size {batch_size} must be a multiple of the data-parallel size {dp}")
    self.batch_size = batch_size
    self.stats = TokenStats()
    self.num_traces = 0
    self.config = model.cfg
    self._graphdef, self._state = nnx.split(model)
    self._input_sharding = sharding_lib.batch_sharding(self.mesh)

    def forward(state, input_ids, attention_mask):
      self.num_traces += 1  # runs only while tracing: counts compilations
      return nnx.merge(self._graphdef, state)(input_ids, attention_mask)

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

  def bucket_lengths(self) -> list[int]:
    m, top = self.length_multiple, self.tokenizer.max_length
    return sorted({bucket_length(n, m, top) for n in range(1, top + 1)})

  def warmup(self, lengths: Iterable[int] | None = None) -> None:
    """Compiles every bucket now, so the first real texts never wait for XLA (near-line serving)."""
    for length in lengths or self.bucket_lengths():
      ids, mask = pad_batch([], length, self.batch_size, self.tokenizer.pad_id)
      jax.block_until_ready(self._run(ids, mask))

  def _run(self, ids: np.ndarray, mask: np.ndarray) -> jax.Array:
    ids, mask = jax.device_put((ids, mask), self._input_sharding)
    return self._forward(self._state, ids, mask)

  def _embed_chunk(self, texts: list[str], offset: int) -> np.ndarray:
    texts, stats = clean_texts(texts, offset)
    if self.prefix:
      texts = [self.prefix + t for t in texts]
    ids, stats.truncated = self.tokenizer.encode(texts)
    self.stats.add(stats)
    order = np.argsort([len(r) for r in ids], kind="stable")
    pending = []
    for start in range(0, len(order), self.batch_size):
      rows = order[start : start + self.batch_size]
      length = bucket_length(len(ids[rows[-1]]), self.length_multiple, self.tokenizer.max_length)
      batch_ids, batch_mask = pad_batch([ids[r] for r in rows], length, self.batch_size, self.tokenizer.pad_id)
      # Dispatch is asynchronous: the next batch is padded while this one runs.
      pending.append((rows, self._run(batch_ids, batch_mask)))
    out = np.empty((len(texts), self.dim), dtype=np.float32)
    for rows, emb in pending:
      out[rows] = np.asarray(emb)[: len(rows)]
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

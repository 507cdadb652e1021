"""Exact top-k by inner product over an embedding matrix too large for one score matrix.

Scores are computed a chunk of corpus rows at a time and merged into a running top-k, so memory holds
[queries, chunk] scores, never [queries, corpus]: millions of rows fit on one device. Given a mesh, corpus
rows are split over its data-parallel axes; each device keeps its own top-k and the k best of those win.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from pe_jax import sharding as sharding_lib

DEFAULT_CHUNK_SIZE = 16_384
# Queries are padded to a power of two up to this many rows, then searched this many at a time, so
# any query count reuses a handful of compiled shapes.
QUERY_BATCH = 256
_DATA_AXES = ("data", "fsdp")


def _running_top_k(queries: jax.Array, rows: jax.Array, first_id: jax.Array, num_valid: jax.Array, k: int,
                   chunk_size: int) -> tuple[jax.Array, jax.Array]:
  """Top-k of queries @ rows.T, scanning `chunk_size` rows at a time; ids count from `first_id`."""
  num_chunks = rows.shape[0] // chunk_size
  chunks = rows.reshape(num_chunks, chunk_size, rows.shape[1])
  starts = first_id + jnp.arange(num_chunks, dtype=jnp.int32) * chunk_size
  init = (jnp.full((queries.shape[0], k), -jnp.inf, jnp.float32),
          jnp.full((queries.shape[0], k), -1, jnp.int32))

  def merge(best, chunk_and_start):
    best_scores, best_ids = best
    chunk, start = chunk_and_start
    ids = start + jnp.arange(chunk_size, dtype=jnp.int32)
    scores = jnp.dot(queries, chunk.T, preferred_element_type=jnp.float32)
    scores = jnp.where(ids < num_valid, scores, -jnp.inf)  # padding rows never win
    chunk_scores, picked = jax.lax.top_k(scores, min(k, chunk_size))
    # Earlier (lower) ids come first, so equal scores keep the lower id.
    scores = jnp.concatenate([best_scores, chunk_scores], axis=1)
    ids = jnp.concatenate([best_ids, ids[picked]], axis=1)
    scores, picked = jax.lax.top_k(scores, k)
    return (scores, jnp.take_along_axis(ids, picked, axis=1)), None

  (scores, ids), _ = jax.lax.scan(merge, init, (chunks, starts))
  return scores, ids


@functools.partial(jax.jit, static_argnames=("k", "chunk_size", "mesh"))
def chunked_top_k(queries: jax.Array, rows: jax.Array, num_valid: jax.Array, *, k: int, chunk_size: int,
                  mesh: jax.sharding.Mesh | None = None) -> tuple[jax.Array, jax.Array]:
  """(scores [Q, k] float32, ids [Q, k] int32) of the k largest inner products, best first.

  `rows` is [R, D] with R a multiple of chunk_size (times the mesh's data-parallel size); rows from
  `num_valid` on are padding. With a mesh, `rows` is split over its data axes (see `DeviceCorpus`).
  A slot with no valid row left scores -inf with id -1.
  """
  queries = queries.astype(rows.dtype)
  if mesh is None:
    scores, ids = _running_top_k(queries, rows, jnp.int32(0), num_valid, k, chunk_size)
  else:
    shard_rows = rows.shape[0] // sharding_lib.data_parallel_size(mesh)
    local_k = min(k, shard_rows)

    def local(q, shard, n):
      first_id = jax.lax.axis_index(_DATA_AXES).astype(jnp.int32) * shard_rows
      return _running_top_k(q, shard, first_id, n, local_k, chunk_size)

    # check_vma off: the scan's -inf start is the same on every device, its result is not.
    scores, ids = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(_DATA_AXES), P()),
                                out_specs=P(None, _DATA_AXES), check_vma=False)(queries, rows, num_valid)
    scores, picked = jax.lax.top_k(scores, k)  # k best of every device's k best
    ids = jnp.take_along_axis(ids, picked, axis=1)
  return scores, jnp.where(jnp.isneginf(scores), -1, ids)


def check_matrix(x, *, what: str, dim: int | None = None) -> np.ndarray:
  """`x` as a finite float [N, D] array (D == dim when given); errors name `what`."""
  x = np.asarray(x)
  if x.ndim != 2:
    raise ValueError(f"{what} must be a 2-D [N, D] array, got shape {x.shape}")
  if dim is not None and x.shape[1] != dim:
    raise ValueError(f"{what} have dimension {x.shape[1]}, expected {dim}")
  if not np.issubdtype(x.dtype, np.floating):
    x = x.astype(np.float32)
  if not np.isfinite(x).all():
    raise ValueError(f"{what} hold NaN or inf")
  return x


@dataclasses.dataclass(frozen=True)
class DeviceCorpus:
  """Corpus rows padded and placed for `chunked_top_k` (split over the mesh's data axes when given)."""

  rows: jax.Array
  num_valid: int
  chunk_size: int
  mesh: jax.sharding.Mesh | None

  @classmethod
  def from_array(cls, corpus, *, chunk_size: int = DEFAULT_CHUNK_SIZE, mesh: jax.sharding.Mesh | None = None,
                 dtype=None) -> "DeviceCorpus":
    """`dtype` (e.g. jnp.bfloat16) halves the memory of a large corpus; scores stay float32."""
    corpus = check_matrix(corpus, what="corpus embeddings")
    if chunk_size < 1:
      raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    shards = sharding_lib.data_parallel_size(mesh) if mesh is not None else 1
    num_rows = corpus.shape[0]
    chunk = max(1, min(chunk_size, -(-num_rows // shards)))  # no chunk bigger than a shard
    padded = -(-max(num_rows, 1) // (chunk * shards)) * chunk * shards
    host = np.zeros((padded, corpus.shape[1]), dtype=dtype or corpus.dtype)
    host[:num_rows] = corpus
    sharding = NamedSharding(mesh, P(_DATA_AXES)) if mesh is not None else None
    return cls(jax.device_put(host, sharding), num_rows, chunk, mesh)

  @property
  def dim(self) -> int:
    return self.rows.shape[1]

  def top_k(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores [Q, k'] float32, ids [Q, k'] int64), k' = min(k, corpus rows): a corpus smaller than
    k returns all its rows."""
    queries = check_matrix(queries, what="queries", dim=self.dim)
    if k < 1:
      raise ValueError(f"k must be >= 1, got {k}")
    if self.num_valid == 0:
      raise ValueError("the corpus is empty: nothing to search")
    k = min(k, self.num_valid)
    scores, ids = [], []
    for start in range(0, max(len(queries), 1), QUERY_BATCH):
      batch = queries[start:start + QUERY_BATCH]
      rows = min(QUERY_BATCH, 1 << max(3, (len(batch) - 1).bit_length()))
      padded = np.zeros((rows, self.dim), dtype=np.float32)
      padded[:len(batch)] = batch
      s, i = chunked_top_k(padded, self.rows, jnp.int32(self.num_valid), k=k, chunk_size=self.chunk_size,
                           mesh=self.mesh)
      scores.append(np.asarray(s)[:len(batch)])
      ids.append(np.asarray(i)[:len(batch)].astype(np.int64))
    return np.concatenate(scores), np.concatenate(ids)


def top_k(queries, corpus, k: int, *, chunk_size: int = DEFAULT_CHUNK_SIZE,
          mesh: jax.sharding.Mesh | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Exact k largest inner products of each query row against the corpus rows: (scores, ids), best first.

  For repeated searches over one corpus keep a `DeviceCorpus` (or an `ExactIndex`) instead.
  """
  return DeviceCorpus.from_array(corpus, chunk_size=chunk_size, mesh=mesh).top_k(queries, k)

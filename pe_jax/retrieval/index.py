"""One small search interface over embeddings: exact (JAX) or approximate (faiss), same calls.

  index = ExactIndex(dim=50)          # or FaissIndex(dim=50, factory="HNSW32")
  index.add(post_embeddings)          # ids 0, 1, ... in the order added
  scores, ids = index.search(queries, k=10)

With metric="cosine" (the default) vectors and queries are L2-normalised, so scores are cosines.
"""

from __future__ import annotations

import abc
from typing import Literal

import jax
import numpy as np

from pe_jax.retrieval.exact import DEFAULT_CHUNK_SIZE, DeviceCorpus, check_matrix

Metric = Literal["cosine", "dot"]


class Index(abc.ABC):
  """Vectors get ids 0, 1, ... in the order added; `search` returns the k best, best first."""

  def __init__(self, dim: int, metric: Metric = "cosine"):
    if dim < 1:
      raise ValueError(f"dim must be >= 1, got {dim}")
    if metric not in ("cosine", "dot"):
      raise ValueError(f"metric must be 'cosine' or 'dot', got {metric!r}")
    self.dim = dim
    self.metric = metric
    self._size = 0

  def __len__(self) -> int:
    return self._size

  def _prepare(self, x, what: str) -> np.ndarray:
    x = check_matrix(x, what=what, dim=self.dim).astype(np.float32)
    if self.metric == "cosine":
      norms = np.linalg.norm(x, axis=1, keepdims=True)
      x = x / np.where(norms > 0, norms, 1.0)  # a zero vector stays zero: cosine 0 with everything
    return x

  def add(self, vectors) -> np.ndarray:
    """Adds [N, dim] vectors; returns their ids."""
    vectors = self._prepare(vectors, "vectors to add")
    self._add(vectors)
    ids = np.arange(self._size, self._size + len(vectors))
    self._size += len(vectors)
    return ids

  def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores [Q, k'] float32, ids [Q, k'] int64), k' = min(k, len(self)); an approximate index
    marks a slot it could not fill with id -1 and score -inf."""
    queries = self._prepare(queries, "queries")
    if k < 1:
      raise ValueError(f"k must be >= 1, got {k}")
    if self._size == 0:
      raise ValueError(f"{type(self).__name__} is empty: add vectors before searching")
    return self._search(queries, min(k, self._size))

  @abc.abstractmethod
  def _add(self, vectors: np.ndarray) -> None:
    ...

  @abc.abstractmethod
  def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    ...


class ExactIndex(Index):
  """Exact search with the jitted chunked top-k; with a mesh the corpus is split over its data axes."""

  def __init__(self, dim: int, metric: Metric = "cosine", *, chunk_size: int = DEFAULT_CHUNK_SIZE,
               mesh: jax.sharding.Mesh | None = None, dtype=None):
    super().__init__(dim, metric)
    self._kwargs = dict(chunk_size=chunk_size, mesh=mesh, dtype=dtype)
    self._parts: list[np.ndarray] = []
    self._corpus: DeviceCorpus | None = None

  def _add(self, vectors: np.ndarray) -> None:
    self._parts.append(vectors)
    self._corpus = None  # placed again on the next search

  def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if self._corpus is None:
      self._parts = [np.concatenate(self._parts)]
      self._corpus = DeviceCorpus.from_array(self._parts[0], **self._kwargs)
    return self._corpus.top_k(queries, k)


def _import_faiss():
  try:
    import faiss  # noqa: PLC0415 - optional dependency
  except ImportError as e:
    raise ImportError("FaissIndex needs faiss: pip install 'pe_jax[faiss]' (or pip install faiss-cpu)") from e
  return faiss


class FaissIndex(Index):
  """An approximate (or flat) faiss index by inner product, built from a faiss factory string.

  "HNSW32" (default) needs no training; "IVF{n},Flat" and the like are trained on the first `add`,
  which must then hold enough vectors for faiss. "Flat" is exact.
  """

  def __init__(self, dim: int, metric: Metric = "cosine", *, factory: str = "HNSW32"):
    super().__init__(dim, metric)
    faiss = _import_faiss()
    self.index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)

  def _add(self, vectors: np.ndarray) -> None:
    if not self.index.is_trained:
      self.index.train(vectors)
    self.index.add(vectors)

  def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores, ids = self.index.search(np.ascontiguousarray(queries), k)
    return np.where(ids < 0, -np.inf, scores).astype(np.float32), ids.astype(np.int64)

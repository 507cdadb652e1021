"""Retrieval over the store as the worker fills it: each refresh appends the rows written since the last.

`refresh()` asks the store for changes after the version it last saw: new ids are appended to the
matrix, ids written again (an edit, or a replay that changed bits) replace their row. Call it before a
search, or let `follow(interval_s)` call it on a thread, and a post is searchable a refresh interval
after it is stored.
"""

from __future__ import annotations

import logging
import threading

import jax.numpy as jnp
import numpy as np

from pe_jax.nearline.streams import Store
from pe_jax.retrieval import exact

log = logging.getLogger(__name__)


class LiveIndex:
  def __init__(self, store: Store, *, page: int = 10_000):
    self.store, self.page = store, page
    self.version = 0
    self.ids: list[str] = []
    self._row: dict[str, int] = {}
    self._matrix = np.zeros((0, 0), np.float32)  # capacity rows; the first len(ids) are live
    self._device: exact.DeviceCorpus | None = None  # the matrix on the device, until the next change
    self._lock = threading.Lock()
    self._refreshing = threading.Lock()
    self._follower: threading.Thread | None = None
    self._stop = threading.Event()

  def __len__(self) -> int:
    return len(self.ids)

  def refresh(self) -> int:
    """Pulls everything written since the last refresh; the number of rows added or replaced."""
    changed = 0
    with self._refreshing:  # one refresher at a time: a slower one would apply older rows over newer
      while True:
        ids, vectors, version = self.store.changes(self.version, self.page)
        if not ids:
          return changed
        with self._lock:  # searches wait only while rows are copied in, not while the store is read
          self._apply(ids, vectors)
          self.version = version
        changed += len(ids)

  def _apply(self, ids: list[str], vectors: np.ndarray) -> None:
    if not self.ids:
      capacity = 1 << max(10, (len(ids) - 1).bit_length())  # a power of two: search chunks divide it
      self._matrix = np.zeros((capacity, vectors.shape[1]), np.float32)
    elif vectors.shape[1] != self._matrix.shape[1]:
      raise ValueError(f"live index: store rows are {vectors.shape[1]}-d, the index holds "
                       f"{self._matrix.shape[1]}-d; was the store written by two models?")
    for post_id, vector in zip(ids, vectors):
      row = self._row.get(post_id)
      if row is None:
        row = len(self.ids)
        if row == len(self._matrix):  # doubling: appends are amortised O(1)
          self._matrix = np.concatenate([self._matrix, np.zeros_like(self._matrix)])
        self._row[post_id] = row
        self.ids.append(post_id)
      self._matrix[row] = vector
    self._device = None

  def search(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, list[list[str]]]:
    """Top-k by dot product (cosine for the normalised embeddings): scores [Q, k'] and ids, best first,
    with k' = min(k, len(self))."""
    queries = np.atleast_2d(np.asarray(queries, np.float32))
    with self._lock:
      n = len(self.ids)
      k = min(k, n)
      if k == 0:
        return np.zeros((len(queries), 0), np.float32), [[] for _ in queries]
      if self._device is None:  # `_apply` drops it on every change
        # The whole capacity goes to the device, so its shape (and the compiled search) changes only
        # when the capacity doubles; rows past n are padding that never wins.
        capacity = len(self._matrix)
        self._device = exact.DeviceCorpus(jnp.asarray(self._matrix), n,
                                          min(exact.DEFAULT_CHUNK_SIZE, capacity), None)
      # No copy of the ids: the list only grows, and every id a search returns is below n.
      corpus, ids = self._device, self.ids
    scores, top = corpus.top_k(queries, k)
    return scores, [[ids[j] for j in row] for row in top]

  def follow(self, interval_s: float = 1.0) -> "LiveIndex":
    """Refreshes every `interval_s` on a daemon thread until `close()`."""
    def loop():
      while not self._stop.wait(interval_s):
        try:
          self.refresh()
        except Exception as e:  # noqa: BLE001 - a store outage delays freshness; the next tick tries again
          log.warning("live index refresh failed: %s: %s", type(e).__name__, e)

    self._follower = threading.Thread(target=loop, name="live-index", daemon=True)
    self._follower.start()
    return self

  def close(self) -> None:
    self._stop.set()
    if self._follower is not None:
      self._follower.join()

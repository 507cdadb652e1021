"""The live index against a brute-force search, as rows arrive and change in the store."""

from __future__ import annotations

import numpy as np
import pytest

from pe_jax.nearline.live_index import LiveIndex
from pe_jax.nearline.streams import open_store


def unit(rng, n, d=8):
  x = rng.standard_normal((n, d)).astype(np.float32)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(ids, matrix, queries, k):
  scores = queries @ matrix.T
  order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
  return np.take_along_axis(scores, order, axis=1), [[ids[j] for j in row] for row in order]


def test_refresh_appends_new_rows_and_replaces_changed_ones(tmp_path):
  rng = np.random.default_rng(0)
  store = open_store(f"sqlite:///{tmp_path / 's.db'}")
  index = LiveIndex(store, page=7)  # pages smaller than a refresh: several pulls per refresh
  assert index.refresh() == 0 and len(index) == 0
  scores, ids = index.search(unit(rng, 2), k=5)
  assert scores.shape == (2, 0) and ids == [[], []]

  first = {f"a{i}": v for i, v in enumerate(unit(rng, 1500))}  # past the initial capacity of 1,024 rows
  store.upsert(list(first), np.stack(list(first.values())), stored_at=1.0)
  assert index.refresh() == 1500 and len(index) == 1500 and index.refresh() == 0

  edited = unit(rng, 2)
  store.upsert(["a3", "b0"], edited, stored_at=2.0)  # one edit, one new post
  assert index.refresh() == 2 and len(index) == 1501
  first["a3"], first["b0"] = edited

  queries = np.concatenate([unit(rng, 5), edited])
  want_scores, want_ids = brute_force(list(first), np.stack(list(first.values())), queries, 10)
  got_scores, got_ids = index.search(queries, k=10)
  assert got_ids == want_ids
  np.testing.assert_allclose(got_scores, want_scores, rtol=1e-6)
  assert got_ids[5][0] == "a3" and got_ids[6][0] == "b0"
  assert index.search(queries[0], k=5000)[0].shape == (1, 1501)  # k capped at the index size


def test_vectors_of_another_width_are_refused(tmp_path):
  store = open_store(f"sqlite:///{tmp_path / 's.db'}")
  store.upsert(["a"], np.ones((1, 8), np.float32), stored_at=1.0)
  index = LiveIndex(store)
  index.refresh()
  with pytest.raises(ValueError, match="queries have dimension 4, expected 8"):
    index.search(np.ones((1, 4), np.float32))
  store.upsert(["b"], np.ones((1, 4), np.float32), stored_at=2.0)
  with pytest.raises(ValueError, match="two models"):
    index.refresh()

"""Exact chunked top-k (one device and sharded), the Index interface and faiss behind it."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from pe_jax.retrieval import exact
from pe_jax.retrieval.index import ExactIndex, FaissIndex


def _reference(queries, corpus, k):
  scores = queries @ corpus.T
  ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
  return np.take_along_axis(scores, ids, axis=1), ids


@pytest.fixture(scope="module")
def data():
  rng = np.random.default_rng(0)
  return rng.normal(size=(7, 12)).astype(np.float32), rng.normal(size=(1003, 12)).astype(np.float32)


@pytest.mark.parametrize("chunk_size", [1, 64, 1003, 5000])
def test_top_k_matches_full_sort_for_any_chunk_size(data, chunk_size):
  queries, corpus = data
  scores, ids = exact.top_k(queries, corpus, 9, chunk_size=chunk_size)
  ref_scores, ref_ids = _reference(queries, corpus, 9)
  np.testing.assert_array_equal(ids, ref_ids)
  np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-5)
  assert scores.dtype == np.float32 and ids.dtype == np.int64


def test_equal_scores_keep_the_lower_id_across_chunks():
  corpus = np.ones((10, 3), np.float32)
  _, ids = exact.top_k(np.ones((1, 3), np.float32), corpus, 4, chunk_size=3)
  np.testing.assert_array_equal(ids, [[0, 1, 2, 3]])


def test_corpus_smaller_than_k_returns_every_row(data):
  queries, corpus = data
  scores, ids = exact.top_k(queries, corpus[:3], 10)
  assert ids.shape == (7, 3)
  np.testing.assert_array_equal(np.sort(ids, axis=1), np.tile([0, 1, 2], (7, 1)))
  assert np.isfinite(scores).all()


def test_many_query_batches_and_no_queries(data):
  _, corpus = data
  queries = np.random.default_rng(1).normal(size=(exact.QUERY_BATCH + 5, 12)).astype(np.float32)
  _, ids = exact.top_k(queries, corpus, 3, chunk_size=256)
  np.testing.assert_array_equal(ids, _reference(queries, corpus, 3)[1])
  scores, ids = exact.top_k(np.zeros((0, 12), np.float32), corpus, 3)
  assert scores.shape == ids.shape == (0, 3)


def test_repeated_searches_reuse_one_compilation(data):
  queries, corpus = data
  placed = exact.DeviceCorpus.from_array(corpus, chunk_size=128)
  placed.top_k(queries, 5)
  before = exact.chunked_top_k._cache_size()
  for n in (1, 3, 7):
    placed.top_k(queries[:n], 5)
  assert exact.chunked_top_k._cache_size() == before


@pytest.mark.parametrize("bad, match", [
    (np.zeros((3, 5), np.float32), "dimension 5, expected 12"),
    (np.zeros(12, np.float32), "2-D"),
    (np.full((1, 12), np.nan, np.float32), "NaN"),
])
def test_bad_queries_are_named(data, bad, match):
  _, corpus = data
  with pytest.raises(ValueError, match=match):
    exact.top_k(bad, corpus, 3)


def test_k_and_empty_corpus_errors(data):
  queries, corpus = data
  with pytest.raises(ValueError, match="k must be >= 1"):
    exact.top_k(queries, corpus, 0)
  with pytest.raises(ValueError, match="corpus is empty"):
    exact.top_k(queries, corpus[:0], 3)


_SHARDED_CHECK = """
import jax, numpy as np
from pe_jax import sharding as sharding_lib
from pe_jax.retrieval import exact
assert jax.device_count() == 4, jax.devices()
rng = np.random.default_rng(2)
queries, corpus = rng.normal(size=(5, 8)).astype(np.float32), rng.normal(size=(1001, 8)).astype(np.float32)
def reference(corpus, k):
  scores = queries @ corpus.T
  ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
  return np.take_along_axis(scores, ids, axis=1), ids
mesh = sharding_lib.make_mesh({"data": 2, "fsdp": 2})
placed = exact.DeviceCorpus.from_array(corpus, chunk_size=64, mesh=mesh)
assert len(placed.rows.sharding.device_set) == 4
scores, ids = placed.top_k(queries, 7)
ref_scores, ref_ids = reference(corpus, 7)
np.testing.assert_array_equal(ids, ref_ids)
np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-5)
# Fewer rows than devices x k: each device has fewer than k rows to offer.
_, ids = exact.top_k(queries, corpus[:3], 7, mesh=mesh)
np.testing.assert_array_equal(ids, reference(corpus[:3], 3)[1])
print("sharded ok")
"""


def test_sharded_search_matches_one_device():
  """On 4 fake CPU devices (a child process: XLA_FLAGS must be set before jax starts)."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4"}
  proc = subprocess.run([sys.executable, "-c", _SHARDED_CHECK], env=env, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0 and "sharded ok" in proc.stdout, proc.stderr[-3000:]


def test_exact_index_cosine_add_in_parts(data):
  queries, corpus = data
  index = ExactIndex(12, chunk_size=100)
  np.testing.assert_array_equal(index.add(corpus[:500]), np.arange(500))
  index.search(queries, 2)  # placed once, then placed again after the next add
  np.testing.assert_array_equal(index.add(corpus[500:]), np.arange(500, 1003))
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  scores, ids = index.search(queries * 3.0, 5)
  ref_scores, ref_ids = _reference(unit(queries), unit(corpus), 5)
  np.testing.assert_array_equal(ids, ref_ids)
  np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
  assert len(index) == 1003


def test_exact_index_dot_metric_and_errors(data):
  queries, corpus = data
  index = ExactIndex(12, metric="dot")
  with pytest.raises(ValueError, match="ExactIndex is empty"):
    index.search(queries, 3)
  index.add(corpus)
  np.testing.assert_array_equal(index.search(queries, 4)[1], _reference(queries, corpus, 4)[1])
  with pytest.raises(ValueError, match="vectors to add have dimension 11, expected 12"):
    index.add(corpus[:, :11])
  with pytest.raises(ValueError, match="queries have dimension 384, expected 12"):
    index.search(np.zeros((1, 384)), 3)
  with pytest.raises(ValueError, match="metric must be"):
    ExactIndex(12, metric="l2")


def test_faiss_flat_matches_exact_and_hnsw_recalls(data):
  pytest.importorskip("faiss")
  queries, corpus = data
  exact_index, flat = ExactIndex(12), FaissIndex(12, factory="Flat")
  for index in (exact_index, flat):
    index.add(corpus)
  scores, ids = exact_index.search(queries, 10)
  flat_scores, flat_ids = flat.search(queries, 10)
  np.testing.assert_array_equal(flat_ids, ids)
  np.testing.assert_allclose(flat_scores, scores, atol=1e-5)
  hnsw = FaissIndex(12)
  hnsw.add(corpus)
  _, hnsw_ids = hnsw.search(queries, 10)
  overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(hnsw_ids, ids)])
  assert overlap >= 0.8
  assert flat.search(queries, 2000)[1].shape == (7, 1003)
  with pytest.raises(ValueError, match="dimension 3, expected 12"):
    hnsw.search(np.zeros((1, 3)), 1)


def test_faiss_missing_names_the_extra(monkeypatch):
  import builtins

  real_import = builtins.__import__

  def no_faiss(name, *args, **kwargs):
    if name == "faiss":
      raise ImportError("No module named 'faiss'")
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, "__import__", no_faiss)
  with pytest.raises(ImportError, match=r"pip install 'pe_jax\[faiss\]'"):
    FaissIndex(4)

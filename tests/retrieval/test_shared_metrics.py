"""`metrics.ranking_metrics`: the evaluators' retrieval scores over any retriever's ranked lists."""

from __future__ import annotations

import numpy as np
import pytest

from pe_jax.evaluation import metrics
from pe_jax.retrieval.index import ExactIndex


def test_hand_computed_lists_with_padding():
  ranked = np.array([[5, 2, -1], [7, 8, 9]])  # query 0 got two results and a padding slot
  relevant = [{2: 1, 4: 1}, {9: 2}]
  scores = metrics.ranking_metrics(ranked, relevant, ks=(1, 3))
  assert scores["recall@1"] == 0.0
  assert scores["recall@3"] == pytest.approx((1 / 2 + 1) / 2)
  assert scores["mrr@10"] == pytest.approx((1 / 2 + 1 / 3) / 2)
  ndcg0 = (1 / np.log2(3)) / (1 + 1 / np.log2(3))
  ndcg1 = (2 / np.log2(4)) / 2
  assert scores["ndcg@10"] == pytest.approx((ndcg0 + ndcg1) / 2)


def test_exact_index_lists_score_as_the_evaluator_does():
  rng = np.random.default_rng(0)
  docs, queries = rng.normal(size=(60, 8)), rng.normal(size=(6, 8))
  qrels = {f"q{q}": {f"d{d}": 1 + d % 2 for d in rng.choice(60, 4, replace=False)} for q in range(6)}
  expected = metrics.retrieval_metrics(queries, docs, [f"q{q}" for q in range(6)], [f"d{d}" for d in range(60)],
                                       qrels, ks=(1, 5, 20))
  index = ExactIndex(8)
  index.add(docs)
  _, ids = index.search(queries, 20)
  relevant = [{int(d[1:]): g for d, g in qrels[f"q{q}"].items()} for q in range(6)]
  got = metrics.ranking_metrics(ids, relevant, ks=(1, 5, 20))
  for key, value in got.items():
    assert value == pytest.approx(expected[key]), key


def test_bad_lists_are_named():
  with pytest.raises(ValueError, match="ranking_metrics: ranked must be"):
    metrics.ranking_metrics(np.zeros((2, 3), int), [{1: 1}])
  with pytest.raises(ValueError, match="query 0 needs at least one relevant doc"):
    metrics.ranking_metrics(np.zeros((1, 3), int), [{}])
  with pytest.raises(ValueError, match="ks must be positive"):
    metrics.ranking_metrics(np.zeros((1, 3), int), [{1: 1}], ks=(0,))

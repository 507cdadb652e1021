"""Metrics on tiny hand-made inputs with hand-computed answers, and against independent references."""

import math

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from pe_jax.evaluation import metrics


def _unit(*rows):
  x = np.array(rows, dtype=np.float64)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


# ----------------------------------------------------------------------------- sample_triplets


def _check_triplets(labels, anchor, positive, negative):
  assert (labels[anchor] & labels[positive]).any(axis=1).all()
  assert (anchor != positive).all()
  assert not (labels[anchor] & labels[negative]).any(axis=1).any()


def test_sample_triplets_rules_and_determinism():
  # Multi-label rows, one label-less row (a negative, never an anchor) and one row whose only
  # label is unique to it (no positive, so never an anchor).
  labels = np.array([
      [1, 1, 0, 0],
      [0, 1, 1, 0],
      [0, 0, 1, 0],
      [1, 0, 0, 0],
      [0, 0, 0, 0],
      [0, 0, 0, 1],
  ], dtype=bool)
  a, p, n = metrics.sample_triplets(labels, num_triplets=2000, seed=3)
  _check_triplets(labels, a, p, n)
  assert set(a) == {0, 1, 2, 3}
  assert set(n) >= {4, 5}
  again = metrics.sample_triplets(labels, num_triplets=2000, seed=3)
  for x, y in zip((a, p, n), again):
    np.testing.assert_array_equal(x, y)
  other = metrics.sample_triplets(labels, num_triplets=2000, seed=4)
  assert not all(np.array_equal(x, y) for x, y in zip((a, p, n), other))


def test_sample_triplets_anchor_share_follows_label_skew():
  labels = np.zeros((100, 2), dtype=bool)
  labels[:90, 0] = True
  labels[90:, 1] = True
  a, p, n = metrics.sample_triplets(labels, num_triplets=20_000, seed=0)
  _check_triplets(labels, a, p, n)
  assert abs((a < 90).mean() - 0.9) < 0.01
  # Positive uniform over the anchor's label mates: every other member shows up.
  assert set(p[a == 95]) == set(range(90, 100)) - {95}


def test_sample_triplets_rare_negatives_fall_back_to_explicit_lists():
  # 2 of 2,000 examples carry the other label: uniform draws rarely hit them, so most anchors
  # exhaust the rejection rounds and draw from the explicit list.
  labels = np.zeros((2000, 2), dtype=bool)
  labels[:1998, 0] = True
  labels[1998:, 1] = True
  a, p, n = metrics.sample_triplets(labels, num_triplets=3000, seed=0)
  _check_triplets(labels, a, p, n)
  assert set(n[a < 1998]) == {1998, 1999}


def test_sample_triplets_scales_to_50k_by_20_labels():
  rng = np.random.default_rng(0)
  labels = rng.random((50_000, 20)) < 0.1
  a, p, n = metrics.sample_triplets(labels, num_triplets=20_000, seed=0)
  _check_triplets(labels, a, p, n)


@pytest.mark.parametrize("labels, match", [
    (np.ones((5, 2), dtype=bool), "no example has both a positive"),
    (np.eye(3, dtype=bool), "no example has both a positive"),
    (np.zeros((0, 3), dtype=bool), "non-empty"),
    (np.zeros(4, dtype=bool), "non-empty"),
])
def test_sample_triplets_rejects_degenerate_labels(labels, match):
  with pytest.raises(ValueError, match=f"sample_triplets: .*{match}"):
    metrics.sample_triplets(labels, num_triplets=10, seed=0)


# ----------------------------------------------------------------------------- triplet_accuracy


def test_triplet_accuracy_wins_losses_and_ties():
  # Rows: 0 anchor, 1 near it, 2 far, 3 a copy of 1 (a tie), unnormalised on purpose.
  emb = np.array([[2.0, 0.0], [3.0, 1.0], [0.0, 5.0], [3.0, 1.0]])
  a = np.array([0, 0, 0])
  assert metrics.triplet_accuracy(emb, a, np.array([1, 2, 1]), np.array([2, 1, 3])) == pytest.approx(
      (1 + 0 + 0.5) / 3)


def test_triplet_accuracy_errors():
  emb = np.eye(3)
  with pytest.raises(ValueError, match="triplet_accuracy: no triplets"):
    metrics.triplet_accuracy(emb, np.array([], int), np.array([], int), np.array([], int))
  with pytest.raises(ValueError, match="triplet_accuracy: .*differ in length"):
    metrics.triplet_accuracy(emb, np.array([0]), np.array([1, 2]), np.array([2]))
  with pytest.raises(ValueError, match="triplet_accuracy: negative must hold"):
    metrics.triplet_accuracy(emb, np.array([0]), np.array([1]), np.array([3]))
  with pytest.raises(ValueError, match="triplet_accuracy: NaN or inf in embeddings"):
    metrics.triplet_accuracy(np.full((3, 2), np.nan), np.array([0]), np.array([1]), np.array([2]))


# ----------------------------------------------------------------------------- pairs


def test_pair_roc_auc_hand_computed_with_tie():
  emb_a = np.array([[1.0, 0.0]] * 4)
  # cosines 1.0, 0.6, 0.6, 0.0 for labels 1, 1, 0, 0: pos/neg pairs (1>0.6, 1>0, 0.6=0.6, 0.6>0).
  emb_b = np.array([[1.0, 0.0], [0.6, 0.8], [0.6, 0.8], [0.0, 1.0]])
  assert metrics.pair_roc_auc(emb_a, emb_b, np.array([1, 1, 0, 0])) == pytest.approx(3.5 / 4)


def test_pair_roc_auc_matches_sklearn_with_ties():
  rng = np.random.default_rng(0)
  # b rows drawn from 5 fixed vectors: identical rows give bit-identical cosines, so many ties.
  choices = np.array([[1.0, 0.0], [3.0, 1.0], [1.0, 1.0], [1.0, 3.0], [-1.0, 2.0]])
  pick = rng.integers(5, size=300)
  emb_a, emb_b = np.tile([2.0, 0.0], (300, 1)), choices[pick]
  labels = (rng.random(300) < 0.3 + 0.1 * pick).astype(np.float32)
  cos = _unit(*choices)[pick, 0]
  assert metrics.pair_roc_auc(emb_a, emb_b, labels) == pytest.approx(
      sk_metrics.roc_auc_score(labels, cos))


def test_pair_roc_auc_errors():
  emb = np.eye(2)
  with pytest.raises(ValueError, match="pair_roc_auc: needs both classes"):
    metrics.pair_roc_auc(emb, emb, np.array([1, 1]))
  with pytest.raises(ValueError, match="pair_roc_auc: labels must be 0 or 1"):
    metrics.pair_roc_auc(emb, emb, np.array([0.0, 0.5]))
  with pytest.raises(ValueError, match="pair_roc_auc: emb_a .* differ in shape"):
    metrics.pair_roc_auc(emb, np.eye(3), np.array([0, 1]))


def test_sts_spearman_hand_computed():
  emb_a = np.array([[1.0, 0.0]] * 4)
  emb_b = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 3.0], [0.0, 1.0]])  # cosine falls row by row
  assert metrics.sts_spearman(emb_a, emb_b, np.array([5.0, 3.0, 2.0, 0.0])) == pytest.approx(1.0)
  assert metrics.sts_spearman(emb_a, emb_b, np.array([0.0, 2.0, 3.0, 5.0])) == pytest.approx(-1.0)
  # One swapped neighbour pair: rho = 1 - 6 * 2 / (4 * 15) = 0.8.
  assert metrics.sts_spearman(emb_a, emb_b, np.array([5.0, 2.0, 3.0, 0.0])) == pytest.approx(0.8)


def test_sts_spearman_rejects_constant_input():
  emb = np.eye(2)
  with pytest.raises(ValueError, match="sts_spearman: undefined"):
    metrics.sts_spearman(emb, emb, np.array([1.0, 1.0]))
  with pytest.raises(ValueError, match="sts_spearman: scores shape"):
    metrics.sts_spearman(emb, emb, np.array([1.0, 2.0, 3.0]))


# ----------------------------------------------------------------------------- retrieval


def _reference_retrieval(query_emb, doc_emb, query_ids, doc_ids, qrels, ks):
  """Straightforward per-query scoring with a full sort, for comparison."""
  q, d = _unit(*query_emb), _unit(*doc_emb)
  per_query = {"ndcg@10": [], "mrr@10": [], **{f"recall@{k}": [] for k in ks}}
  for qi, qid in enumerate(query_ids):
    judged = {doc: g for doc, g in qrels.get(qid, {}).items() if doc in doc_ids and g > 0}
    if not judged:
      continue
    sims = q[qi] @ d.T
    ranking = sorted(range(len(doc_ids)), key=lambda j: (-sims[j], j))
    ranked_ids = [doc_ids[j] for j in ranking]
    dcg = sum(judged.get(doc, 0) / math.log2(r + 2) for r, doc in enumerate(ranked_ids[:10]))
    ideal = sorted(judged.values(), reverse=True)[:10]
    idcg = sum(g / math.log2(r + 2) for r, g in enumerate(ideal))
    per_query["ndcg@10"].append(dcg / idcg)
    first = next((r for r, doc in enumerate(ranked_ids[:10]) if doc in judged), None)
    per_query["mrr@10"].append(0.0 if first is None else 1 / (first + 1))
    for k in ks:
      per_query[f"recall@{k}"].append(sum(doc in judged for doc in ranked_ids[:k]) / len(judged))
  return {key: float(np.mean(v)) for key, v in per_query.items()}


def test_retrieval_metrics_hand_computed():
  docs = _unit([1.0, 0.0], [0.9, 0.1], [0.7, 0.3], [0.0, 1.0])  # ranked d0, d1, d2, d3 for q0
  queries = _unit([1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0])
  qrels = {
      "q0": {"d1": 2, "d2": 1, "d3": 0},
      "q1": {"d0": 1},  # ranked last of 4
      "q2": {"gone": 3},  # judged doc not in the corpus: skipped
      # q3 has no judgements: skipped
  }
  out = metrics.retrieval_metrics(queries, docs, ["q0", "q1", "q2", "q3"],
                                  ["d0", "d1", "d2", "d3"], qrels, ks=(1, 2, 10))
  ndcg_q0 = (2 / math.log2(3) + 1 / math.log2(4)) / (2 + 1 / math.log2(3))
  ndcg_q1 = (1 / math.log2(5)) / 1
  assert out["ndcg@10"] == pytest.approx((ndcg_q0 + ndcg_q1) / 2)
  assert out["mrr@10"] == pytest.approx((1 / 2 + 1 / 4) / 2)
  assert out["recall@1"] == 0.0
  assert out["recall@2"] == pytest.approx((1 / 2 + 0) / 2)
  assert out["recall@10"] == 1.0
  assert out["num_queries"] == 2 and out["num_skipped_queries"] == 2


@pytest.mark.parametrize("block_elements", [1 << 24, 7])
def test_retrieval_metrics_match_reference(monkeypatch, block_elements):
  # A tiny block forces one query per similarity block: chunking must not change anything.
  monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", block_elements)
  rng = np.random.default_rng(1)
  query_emb, doc_emb = rng.normal(size=(30, 8)), rng.normal(size=(60, 8))
  query_ids = [f"q{i}" for i in range(30)]
  doc_ids = [f"d{i}" for i in range(60)]
  qrels = {}
  for qid in query_ids[:-3]:  # the last 3 queries have no judgements
    judged = rng.choice(70, size=rng.integers(1, 15), replace=False)  # d60.. are not in corpus
    qrels[qid] = {f"d{j}": int(rng.integers(0, 4)) for j in judged}
  ks = (1, 5, 10, 100)
  out = metrics.retrieval_metrics(query_emb, doc_emb, query_ids, doc_ids, qrels, ks=ks)
  expected = _reference_retrieval(query_emb, doc_emb, query_ids, doc_ids, qrels, ks)
  for key, value in expected.items():
    assert out[key] == pytest.approx(value), key
  assert out["num_queries"] + out["num_skipped_queries"] == 30
  assert out["num_skipped_queries"] >= 3


def test_retrieval_metrics_errors():
  emb = np.eye(2)
  with pytest.raises(ValueError, match="retrieval_metrics: no query has a relevant doc"):
    metrics.retrieval_metrics(emb, emb, ["q0", "q1"], ["d0", "d1"], {"q0": {"d0": 0}})
  with pytest.raises(ValueError, match="retrieval_metrics: .*must each be unique"):
    metrics.retrieval_metrics(emb, emb, ["q0", "q1"], ["d0", "d0"], {"q0": {"d0": 1}})
  with pytest.raises(ValueError, match="retrieval_metrics: 1 query ids for 2"):
    metrics.retrieval_metrics(emb, emb, ["q0"], ["d0", "d1"], {"q0": {"d0": 1}})


# ----------------------------------------------------------------------------- classification


def test_knn_accuracy_hand_computed():
  train = np.array([[1.0, 0.0], [0.9, 0.1], [0.1, 0.9], [0.0, 1.0], [-1.0, 0.1]])
  train_y = np.array([0, 0, 1, 1, 2])
  test = np.array([[1.0, 0.05], [0.05, 1.0], [0.6, 0.4]])
  test_y = np.array([0, 1, 1])
  # k=3: test0 -> {0,0,1} = 0; test1 -> {1,1,0} = 1; test2 -> nearest 0.9/0.1, 1.0/0, 0.1/0.9 = 0.
  out = metrics.knn_accuracy(train, train_y, test, test_y, k=3)
  assert out["accuracy"] == pytest.approx(2 / 3)
  # class 0: P=1/2, R=1, F1=2/3; class 1: P=1, R=1/2, F1=2/3 (class 2 absent from test).
  assert out["macro_f1"] == pytest.approx(2 / 3)


def test_knn_accuracy_breaks_vote_ties_by_nearest():
  train = np.array([[1.0, 0.0], [0.0, 1.0]])
  test = np.array([[0.9, 0.1], [0.1, 0.9]])
  out = metrics.knn_accuracy(train, np.array([0, 1]), test, np.array([0, 1]), k=2)
  assert out == {"accuracy": 1.0, "macro_f1": 1.0}


def test_knn_accuracy_multi_hot_single_and_multi_label():
  train = np.array([[1.0, 0.0], [0.95, 0.05], [0.0, 1.0], [0.05, 0.95]])
  test = np.array([[1.0, 0.01], [0.01, 1.0]])
  one_hot = np.eye(2, dtype=bool)
  single = metrics.knn_accuracy(train, one_hot[[0, 0, 1, 1]], test, one_hot[[0, 1]], k=1)
  assert single == {"accuracy": 1.0, "macro_f1": 1.0}
  # Multi-label: a third label carried by train rows 0, 1 and 2 and by test row 0 only. k=3 for
  # test 0: rows 0,1,2 -> labels {0: 2/3, 1: 1/3, 2: 3/3} -> {0, 2}, correct. Test 1: rows 2,3,1
  # -> {0: 1/3, 1: 2/3, 2: 2/3} -> {1, 2}, wrong (truth {1}).
  train_y = np.array([[1, 0, 1], [1, 0, 1], [0, 1, 1], [0, 1, 0]], dtype=bool)
  test_y = np.array([[1, 0, 1], [0, 1, 0]], dtype=bool)
  out = metrics.knn_accuracy(train, train_y, test, test_y, k=3)
  assert out["accuracy"] == 0.5
  assert out["macro_f1"] == pytest.approx((1 + 1 + 2 / 3) / 3)


def test_knn_accuracy_errors():
  emb = np.eye(2)
  with pytest.raises(ValueError, match=r"knn_accuracy: k must be in \[1, 2\]"):
    metrics.knn_accuracy(emb, np.array([0, 1]), emb, np.array([0, 1]), k=3)
  with pytest.raises(ValueError, match="knn_accuracy: train and test labels must both be"):
    metrics.knn_accuracy(emb, np.array([0, 1]), emb, np.eye(2, dtype=bool), k=1)
  with pytest.raises(ValueError, match="knn_accuracy: 2 train embeddings for 3 labels"):
    metrics.knn_accuracy(emb, np.array([0, 1, 1]), emb, np.array([0, 1]), k=1)


def test_linear_probe_separable_single_and_multi_label():
  rng = np.random.default_rng(0)
  centers = np.eye(3) * 4
  train_y, test_y = rng.integers(3, size=120), rng.integers(3, size=60)
  train = centers[train_y] + rng.normal(scale=0.3, size=(120, 3))
  test = centers[test_y] + rng.normal(scale=0.3, size=(60, 3))
  out = metrics.linear_probe(train, train_y, test, test_y, c=10.0)
  assert out == {"accuracy": 1.0, "macro_f1": 1.0}
  # Multi-label: label j is "coordinate j positive"; one label always on in train (constant).
  train_m = rng.normal(size=(200, 3))
  test_m = rng.normal(size=(80, 3))
  to_labels = lambda x: np.concatenate([x > 0, np.ones((len(x), 1), bool)], axis=1)
  out = metrics.linear_probe(train_m, to_labels(train_m), test_m, to_labels(test_m), c=100.0)
  assert out["macro_f1"] > 0.9 and out["accuracy"] > 0.75


def test_linear_probe_rejects_single_class():
  with pytest.raises(ValueError, match="linear_probe: train labels hold a single class"):
    metrics.linear_probe(np.eye(2), np.array([1, 1]), np.eye(2), np.array([0, 1]))


# ----------------------------------------------------------------------------- bitext


def test_bitext_accuracy_directions():
  tgt = np.array([[1.0, 0.0], [0.0, 1.0]])
  src = np.array([[1.0, 0.0], [1.0, 0.9]])  # src1 is nearer tgt0 (0.74) than tgt1 (0.67)
  out = metrics.bitext_accuracy(src, tgt)
  # tgt -> src: tgt0 finds src0 (1.0 > 0.74); tgt1 finds src1 (0.67 > 0).
  assert out == {"src2tgt": 0.5, "tgt2src": 1.0, "mean": 0.75}
  perfect = np.random.default_rng(0).normal(size=(50, 16))
  assert metrics.bitext_accuracy(perfect, perfect * 3)["mean"] == 1.0


def test_bitext_accuracy_splits_ties():
  # Constant embeddings: every row ties with all N, so accuracy is 1/N, not 1 or 0.
  out = metrics.bitext_accuracy(np.ones((4, 3)), np.ones((4, 3)))
  assert out == {"src2tgt": 0.25, "tgt2src": 0.25, "mean": 0.25}
  with pytest.raises(ValueError, match="bitext_accuracy: src .* must be aligned"):
    metrics.bitext_accuracy(np.ones((4, 3)), np.ones((5, 3)))


# ----------------------------------------------------------------------------- PCA


def test_pca_reduce_keeps_the_high_variance_axes():
  rng = np.random.default_rng(0)
  # Variance mostly along axes 0 and 1 of 6; the projection keeps their geometry.
  fit = np.concatenate([rng.normal(scale=[5.0, 2.0], size=(400, 2)),
                        rng.normal(scale=0.01, size=(400, 4))], axis=1) + [0, 0, 10, 0, 0, 0]
  project = metrics.pca_reduce(fit, 2)
  assert project.components.shape == (2, 6)
  np.testing.assert_allclose(np.abs(project.components[:, 2:]), 0, atol=0.05)
  out = project(fit[:10])
  assert out.shape == (10, 2) and out.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, rtol=1e-5)
  again = metrics.pca_reduce(fit, 2)
  np.testing.assert_array_equal(project.components, again.components)
  assert (project.components[np.arange(2), np.abs(project.components).argmax(1)] > 0).all()


def test_pca_reduce_with_groups_drops_an_axis_that_only_tells_the_groups_apart():
  rng = np.random.default_rng(1)
  groups = np.repeat([0, 1, 2], 100)
  fit = rng.normal(scale=[0.1, 1.0, 0.3], size=(300, 3))
  fit[:, 0] += np.array([-5.0, 0.0, 5.0])[groups]  # a language offset: large, and nothing else
  np.testing.assert_allclose(np.abs(metrics.pca_reduce(fit, 1, normalize=False).components), [[1, 0, 0]], atol=0.01)
  within = metrics.pca_reduce(fit, 1, normalize=False, groups=groups)
  np.testing.assert_allclose(np.abs(within.components), [[0, 1, 0]], atol=0.02)
  np.testing.assert_allclose(within.mean, fit.mean(axis=0), rtol=1e-5)  # still centred on all rows


def test_pca_reduce_errors():
  with pytest.raises(ValueError, match=r"pca_reduce: dim must be in \[1, 3\]"):
    metrics.pca_reduce(np.random.default_rng(0).normal(size=(4, 5)), 4)
  project = metrics.pca_reduce(np.random.default_rng(0).normal(size=(10, 5)), 2)
  with pytest.raises(ValueError, match="PcaProjection: fitted on dim 5"):
    project(np.ones((2, 4)))

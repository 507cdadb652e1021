"""Embedding-quality metrics: pure NumPy (+ SciPy / scikit-learn) functions over embedding arrays.

Every function takes embeddings as `[N, D]` arrays and L2-normalises the rows itself, so cosine is a
dot product whatever the caller passes. An all-zero row stays zero (cosine 0 with everything); a
non-finite value is an error. Errors name the metric that raised them.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import scipy.stats
from sklearn import linear_model, metrics as sk_metrics, multiclass

# Cosine differences below this are float round-off (e.g. the same vector reached through two BLAS
# code paths), so they count as ties rather than as wins for whichever side the rounding favoured.
_TIE_ATOL = 1e-9

# Bound on a [queries, docs] similarity block, so top-k over a 100k-doc corpus stays at ~64 MiB.
_BLOCK_ELEMENTS = 1 << 24

# Uniform draws tried per anchor before listing its negatives explicitly; only anchors whose
# negatives are rarer than ~1 in 50 examples get that far.
_REJECTION_ROUNDS = 256

NDCG_AT = 10
MRR_AT = 10


def l2_normalize(x: np.ndarray, *, metric: str, what: str = "embeddings") -> np.ndarray:
  """Rows of `x` scaled to unit L2 norm (float32); zero rows stay zero."""
  x = np.asarray(x, dtype=np.float32)
  if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
    raise ValueError(f"{metric}: {what} must be a non-empty [N, D] array, got shape {x.shape}")
  if not np.isfinite(x).all():
    raise ValueError(f"{metric}: NaN or inf in {what}")
  norms = np.linalg.norm(x, axis=1, keepdims=True)
  return x / np.where(norms > 0, norms, 1.0)


def _paired_cosine(emb_a: np.ndarray, emb_b: np.ndarray, *, metric: str) -> np.ndarray:
  a = l2_normalize(emb_a, metric=metric, what="emb_a")
  b = l2_normalize(emb_b, metric=metric, what="emb_b")
  if a.shape != b.shape:
    raise ValueError(f"{metric}: emb_a {a.shape} and emb_b {b.shape} differ in shape")
  return np.einsum("nd,nd->n", a.astype(np.float64), b.astype(np.float64))


def _top_k(queries: np.ndarray, docs: np.ndarray, k: int) -> np.ndarray:
  """Indices [Q, k] of each (unit) query's k most cosine-similar (unit) docs, best first.

  Similarities are computed a block of queries at a time. Equal scores rank the lower doc index
  first (ties at the k-th place may fall either way).
  """
  num_docs = docs.shape[0]
  k = min(k, num_docs)
  step = max(1, _BLOCK_ELEMENTS // num_docs)
  top = np.empty((queries.shape[0], k), dtype=np.int64)
  for start in range(0, queries.shape[0], step):
    sims = queries[start:start + step] @ docs.T
    if k < num_docs:
      cand = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    else:
      cand = np.broadcast_to(np.arange(num_docs), sims.shape)
    cand_sims = np.take_along_axis(sims, cand, axis=1)
    order = np.lexsort((cand, -cand_sims), axis=-1)
    top[start:start + step] = np.take_along_axis(cand, order, axis=1)
  return top


# ----------------------------------------------------------------------------- triplets


def _has_negative(labels: np.ndarray) -> np.ndarray:
  """bool [N]: example i has some example sharing none of its labels.

  Compares distinct label rows (few in practice) block by block, and stops looking for a row's
  negative once one is found, so even all-distinct rows take seconds, not minutes.
  """
  patterns, inverse = np.unique(labels, axis=0, return_inverse=True)
  pat = patterns.astype(np.float32)
  has_negative = np.zeros(len(patterns), dtype=bool)
  undecided = np.arange(len(patterns))
  col_step = 1024
  row_step = _BLOCK_ELEMENTS // col_step
  for col in range(0, len(patterns), col_step):
    cols = pat[col:col + col_step].T
    for row in range(0, undecided.size, row_step):
      rows = undecided[row:row + row_step]
      has_negative[rows] = ((pat[rows] @ cols) == 0).any(axis=1)
    undecided = undecided[~has_negative[undecided]]
    if undecided.size == 0:
      break
  return has_negative[inverse.reshape(-1)]


def sample_triplets(labels_multi_hot: np.ndarray, *, num_triplets: int,
                    seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Seeded (anchor, positive, negative) example-index arrays, each [num_triplets].

  - anchor: uniform over *examples* (with replacement) among those that have a positive and a
    negative, so frequent labels supply proportionally more triplets (label skew shows, as in the
    paper's per-task triplet accuracy);
  - positive: one of the anchor's labels held by another example, chosen uniformly, then a
    uniform other member of that label (never the anchor itself);
  - negative: uniform over the examples sharing no label with the anchor (rows with no label at
    all are valid negatives, never anchors).
  Uses per-label member lists and rejection sampling; never builds an N x N matrix.
  """
  labels = np.asarray(labels_multi_hot)
  if labels.ndim != 2 or labels.shape[0] == 0 or labels.shape[1] == 0:
    raise ValueError(
        f"sample_triplets: labels_multi_hot must be a non-empty [N, num_labels] array, got "
        f"shape {labels.shape}")
  labels = labels.astype(bool)
  if num_triplets < 1:
    raise ValueError(f"sample_triplets: num_triplets must be >= 1, got {num_triplets}")
  num_examples, num_labels = labels.shape

  label_sizes = labels.sum(axis=0)
  pos_labels = labels & (label_sizes >= 2)
  eligible = np.flatnonzero(pos_labels.any(axis=1) & _has_negative(labels))
  if eligible.size == 0:
    raise ValueError(
        "sample_triplets: no example has both a positive (another example sharing a label) and a "
        "negative (an example sharing none of its labels)")

  rng = np.random.default_rng(seed)
  anchor = eligible[rng.integers(eligible.size, size=num_triplets)]

  # The anchor's label: the r-th of its labels that has another member, r uniform.
  rows, cols = np.nonzero(pos_labels)
  first = np.searchsorted(rows, anchor)
  count = pos_labels.sum(axis=1)[anchor]
  label = cols[first + rng.integers(0, count)]

  # Members of all labels in one sorted array keyed by (label, example); drawing from the label's
  # other members means drawing among size-1 slots and skipping the anchor's own slot.
  member_label, member = np.nonzero(labels.T)  # sorted by label, then example
  offsets = np.concatenate([[0], np.cumsum(label_sizes)])
  keys = member_label * num_examples + member
  own_slot = np.searchsorted(keys, label * num_examples + anchor) - offsets[label]
  slot = rng.integers(0, label_sizes[label] - 1)
  slot += slot >= own_slot
  positive = member[offsets[label] + slot]

  negative = np.empty(num_triplets, dtype=np.int64)
  todo = np.arange(num_triplets)
  for _ in range(_REJECTION_ROUNDS):
    cand = rng.integers(num_examples, size=todo.size)
    ok = ~(labels[cand] & labels[anchor[todo]]).any(axis=1)
    negative[todo[ok]] = cand[ok]
    todo = todo[~ok]
    if todo.size == 0:
      break
  if todo.size:
    patterns, which = np.unique(labels[anchor[todo]], axis=0, return_inverse=True)
    for p, pattern in enumerate(patterns):
      sel = todo[which.reshape(-1) == p]
      cands = np.flatnonzero(~labels[:, pattern].any(axis=1))
      negative[sel] = cands[rng.integers(cands.size, size=sel.size)]
  return anchor, positive, negative


def triplet_accuracy(emb: np.ndarray, anchor: np.ndarray, positive: np.ndarray,
                     negative: np.ndarray) -> float:
  """Share of triplets with cos(anchor, positive) > cos(anchor, negative); ties count 1/2.

  `emb` is [N, D]; the three index arrays (same length) pick rows of it.
  """
  return float(triplet_outcomes(emb, anchor, positive, negative).mean())


def triplet_outcomes(emb: np.ndarray, anchor: np.ndarray, positive: np.ndarray,
                     negative: np.ndarray) -> np.ndarray:
  """Per triplet: 1 if cos(anchor, positive) > cos(anchor, negative), 1/2 on a tie, else 0; float [T].

  What paired comparisons of two models on the same triplets need (`triplet_accuracy` is the mean).
  """
  emb = l2_normalize(emb, metric="triplet_accuracy")
  idx = [np.asarray(i) for i in (anchor, positive, negative)]
  if not len(idx[0]) == len(idx[1]) == len(idx[2]):
    raise ValueError(
        f"triplet_accuracy: anchor ({len(idx[0])}), positive ({len(idx[1])}) and negative "
        f"({len(idx[2])}) differ in length")
  if len(idx[0]) == 0:
    raise ValueError("triplet_accuracy: no triplets")
  for name, i in zip(("anchor", "positive", "negative"), idx):
    if not np.issubdtype(i.dtype, np.integer) or i.min() < 0 or i.max() >= len(emb):
      raise ValueError(
          f"triplet_accuracy: {name} must hold integer row indices in [0, {len(emb)})")
  a, p, n = (emb[i].astype(np.float64) for i in idx)
  margin = np.einsum("td,td->t", a, p) - np.einsum("td,td->t", a, n)
  return np.where(np.abs(margin) <= _TIE_ATOL, 0.5, (margin > 0).astype(np.float64))


# ----------------------------------------------------------------------------- pairs


def pair_roc_auc(emb_a: np.ndarray, emb_b: np.ndarray, labels: np.ndarray) -> float:
  """ROC-AUC of cos(a_i, b_i) as a score for the binary label of pair i.

  Computed as the Mann-Whitney statistic: the chance that a random related pair scores above a
  random unrelated one, ties counting 1/2.
  """
  sims = _paired_cosine(emb_a, emb_b, metric="pair_roc_auc")
  labels = np.asarray(labels)
  if labels.shape != sims.shape:
    raise ValueError(
        f"pair_roc_auc: labels shape {labels.shape} does not match {len(sims)} pairs")
  if not np.isin(labels, (0, 1)).all():
    raise ValueError("pair_roc_auc: labels must be 0 or 1")
  is_pos = labels.astype(bool)
  num_pos, num_neg = int(is_pos.sum()), int((~is_pos).sum())
  if num_pos == 0 or num_neg == 0:
    raise ValueError(
        f"pair_roc_auc: needs both classes, got {num_pos} related and {num_neg} unrelated pairs")
  ranks = scipy.stats.rankdata(sims)
  return float((ranks[is_pos].sum() - num_pos * (num_pos + 1) / 2) / (num_pos * num_neg))


def sts_spearman(emb_a: np.ndarray, emb_b: np.ndarray, scores: np.ndarray) -> float:
  """Spearman rank correlation between cos(a_i, b_i) and the gold similarity score of pair i."""
  sims = _paired_cosine(emb_a, emb_b, metric="sts_spearman")
  scores = np.asarray(scores, dtype=np.float64)
  if scores.shape != sims.shape:
    raise ValueError(
        f"sts_spearman: scores shape {scores.shape} does not match {len(sims)} pairs")
  if len(sims) < 2 or np.ptp(sims) == 0 or np.ptp(scores) == 0:
    raise ValueError(
        "sts_spearman: undefined for fewer than 2 pairs or constant cosines / gold scores")
  return float(scipy.stats.spearmanr(sims, scores).statistic)


# ----------------------------------------------------------------------------- retrieval


def retrieval_metrics(query_emb: np.ndarray, doc_emb: np.ndarray, query_ids: Sequence[str],
                      doc_ids: Sequence[str], qrels: Mapping[str, Mapping[str, int]],
                      ks: Sequence[int] = (1, 5, 10, 100)) -> dict[str, float]:
  """Dense retrieval by cosine, scored against graded judgements (grade > 0 is relevant).

  Returns, averaged over evaluated queries:
  - "ndcg@10": DCG = sum over the top 10 of grade / log2(rank + 1) (rank from 1, linear gains as
    in trec_eval / BEIR), divided by the DCG of the ideal order of all judged docs in the corpus;
  - "recall@k" for each k in ks: relevant docs in the top k / relevant docs in the corpus;
  - "mrr@10": 1 / rank of the first relevant doc in the top 10 (0 if none);
  and "num_queries" (evaluated) and "num_skipped_queries" (no relevant doc in the corpus).
  """
  metric = "retrieval_metrics"
  queries = l2_normalize(query_emb, metric=metric, what="query_emb")
  docs = l2_normalize(doc_emb, metric=metric, what="doc_emb")
  if len(query_ids) != len(queries) or len(doc_ids) != len(docs):
    raise ValueError(
        f"{metric}: {len(query_ids)} query ids for {len(queries)} query embeddings, "
        f"{len(doc_ids)} doc ids for {len(docs)} doc embeddings")
  if queries.shape[1] != docs.shape[1]:
    raise ValueError(
        f"{metric}: query dim {queries.shape[1]} differs from doc dim {docs.shape[1]}")
  doc_index = {d: i for i, d in enumerate(doc_ids)}
  if len(doc_index) != len(doc_ids) or len(set(query_ids)) != len(query_ids):
    raise ValueError(f"{metric}: query ids and doc ids must each be unique")
  if not ks or min(ks) < 1:
    raise ValueError(f"{metric}: ks must be positive cut-offs, got {tuple(ks)}")

  relevant: list[dict[int, int]] = []  # per evaluated query: doc row -> grade
  evaluated = []
  for row, qid in enumerate(query_ids):
    grades = {doc_index[d]: g for d, g in qrels.get(qid, {}).items() if g > 0 and d in doc_index}
    if grades:
      evaluated.append(row)
      relevant.append(grades)
  if not evaluated:
    raise ValueError(f"{metric}: no query has a relevant doc in the corpus")

  top = _top_k(queries[evaluated], docs, max(*ks, NDCG_AT, MRR_AT))
  result = ranking_metrics(top, relevant, ks, metric=metric)
  result["num_queries"] = float(len(evaluated))
  result["num_skipped_queries"] = float(len(query_ids) - len(evaluated))
  return result


def ranking_metrics(ranked: np.ndarray, relevant: Sequence[Mapping[int, int]],
                    ks: Sequence[int] = (1, 5, 10, 100), *,
                    metric: str = "ranking_metrics") -> dict[str, float]:
  """nDCG@10, MRR@10 and recall@k (as in `retrieval_metrics`) of ranked result lists, averaged.

  `ranked` is [Q, K] doc ids, best first, from any retriever (padding ids match nothing);
  `relevant[q]` maps query q's relevant doc ids to their grade (> 0), and is never empty.
  Recall@k divides by all of the query's relevant docs, so a list shorter than k counts misses.
  """
  ranked = np.asarray(ranked)
  if ranked.ndim != 2 or len(ranked) != len(relevant) or len(ranked) == 0:
    raise ValueError(
        f"{metric}: ranked must be [Q, K] with one row per relevance map, got shape "
        f"{ranked.shape} for {len(relevant)} relevance maps")
  if not ks or min(ks) < 1:
    raise ValueError(f"{metric}: ks must be positive cut-offs, got {tuple(ks)}")
  discounts = 1.0 / np.log2(np.arange(2, max(ranked.shape[1], NDCG_AT) + 2))
  ndcg, mrr, recall = [], [], {k: [] for k in ks}
  for q, (row, grades) in enumerate(zip(ranked, relevant)):
    if not grades or min(grades.values()) <= 0:
      raise ValueError(f"{metric}: query {q} needs at least one relevant doc, all grades > 0")
    gains = np.array([grades.get(int(d), 0) for d in row], dtype=np.float64)
    ideal = np.sort(np.fromiter(grades.values(), dtype=np.float64))[::-1][:NDCG_AT]
    ndcg.append(gains[:NDCG_AT] @ discounts[:min(NDCG_AT, len(gains))]
                / (ideal @ discounts[:len(ideal)]))
    hits = np.flatnonzero(gains[:MRR_AT] > 0)
    mrr.append(1.0 / (hits[0] + 1) if hits.size else 0.0)
    for k in ks:
      recall[k].append((gains[:k] > 0).sum() / len(grades))
  result = {f"ndcg@{NDCG_AT}": float(np.mean(ndcg)), f"mrr@{MRR_AT}": float(np.mean(mrr))}
  result.update({f"recall@{k}": float(np.mean(v)) for k, v in recall.items()})
  return result


# ----------------------------------------------------------------------------- classification


def _class_targets(train_labels: np.ndarray, test_labels: np.ndarray,
                   metric: str) -> tuple[np.ndarray, np.ndarray, bool]:
  """(train targets, test targets, multi_label) from class ids [N] or multi-hot [N, L] labels.

  Multi-hot labels with exactly one label per row (train and test) become class ids; otherwise
  they stay multi-hot and the task is multi-label.
  """
  train, test = np.asarray(train_labels), np.asarray(test_labels)
  if train.ndim != test.ndim or train.ndim not in (1, 2) or (
      train.ndim == 2 and train.shape[1] != test.shape[1]):
    raise ValueError(
        f"{metric}: train and test labels must both be class ids [N] or multi-hot [N, L] with "
        f"the same L, got shapes {train.shape} and {test.shape}")
  if train.ndim == 1:
    return train.astype(np.int64), test.astype(np.int64), False
  train, test = train.astype(bool), test.astype(bool)
  if (train.sum(axis=1) == 1).all() and (test.sum(axis=1) == 1).all():
    return train.argmax(axis=1), test.argmax(axis=1), False
  return train, test, True


def _classification_scores(true: np.ndarray, pred: np.ndarray, multi_label: bool) -> dict[str, float]:
  """Accuracy (exact match of the label set when multi-label) and macro-F1 over the classes that
  occur in the test labels (classes absent from the test set have no defined recall)."""
  if multi_label:
    present = np.flatnonzero(true.any(axis=0))
  else:
    present = np.unique(true)
  return {
      "accuracy": float(sk_metrics.accuracy_score(true, pred)),
      "macro_f1": float(sk_metrics.f1_score(
          true, pred, labels=present, average="macro", zero_division=0)),
  }


def _check_split(train_emb, train_y, test_emb, test_y, metric) -> tuple[np.ndarray, np.ndarray]:
  train = l2_normalize(train_emb, metric=metric, what="train_emb")
  test = l2_normalize(test_emb, metric=metric, what="test_emb")
  if len(train) != len(train_y) or len(test) != len(test_y):
    raise ValueError(
        f"{metric}: {len(train)} train embeddings for {len(train_y)} labels, {len(test)} test "
        f"embeddings for {len(test_y)} labels")
  if train.shape[1] != test.shape[1]:
    raise ValueError(f"{metric}: train dim {train.shape[1]} differs from test dim {test.shape[1]}")
  return train, test


def knn_accuracy(train_emb: np.ndarray, train_labels: np.ndarray, test_emb: np.ndarray,
                 test_labels: np.ndarray, *, k: int = 10) -> dict[str, float]:
  """k-nearest-neighbour classification by cosine: {"accuracy", "macro_f1"}.

  Labels are class ids [N] or multi-hot [N, L]. Single-label: majority vote of the k nearest
  train examples; equal votes go to the class whose member ranks nearest. Multi-label (one vs
  rest): a label is predicted when more than half of the k neighbours carry it; accuracy is then
  exact match of the whole label set, macro-F1 averages per-label F1.
  """
  metric = "knn_accuracy"
  train_y, test_y, multi_label = _class_targets(train_labels, test_labels, metric)
  train, test = _check_split(train_emb, train_y, test_emb, test_y, metric)
  if not 1 <= k <= len(train):
    raise ValueError(f"{metric}: k must be in [1, {len(train)}] (train size), got {k}")
  neighbours = _top_k(test, train, k)
  if multi_label:
    pred = train_y[neighbours].sum(axis=1) * 2 > k
  else:
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    rows = np.repeat(np.arange(len(test)), k)
    classes = train_y[neighbours].reshape(-1)
    votes = np.zeros((len(test), num_classes), dtype=np.int64)
    np.add.at(votes, (rows, classes), 1)
    nearest_rank = np.full((len(test), num_classes), k, dtype=np.int64)
    np.minimum.at(nearest_rank, (rows, classes), np.tile(np.arange(k), len(test)))
    pred = np.argmax(votes * (k + 1) + (k - nearest_rank), axis=1)
  return _classification_scores(test_y, pred, multi_label)


def linear_probe(train_emb: np.ndarray, train_labels: np.ndarray, test_emb: np.ndarray,
                 test_labels: np.ndarray, *, c: float = 1.0, max_iter: int = 1000,
                 seed: int = 0) -> dict[str, float]:
  """Logistic-regression probe on the (unit) embeddings: {"accuracy", "macro_f1"}.

  Labels as in `knn_accuracy`. Single-label: one multinomial LogisticRegression. Multi-label:
  one-vs-rest LogisticRegressions, a label predicted at probability > 0.5 (a label constant in
  train is predicted as that constant); accuracy is exact match of the label set.
  """
  metric = "linear_probe"
  train_y, test_y, multi_label = _class_targets(train_labels, test_labels, metric)
  train, test = _check_split(train_emb, train_y, test_emb, test_y, metric)
  if not multi_label and len(np.unique(train_y)) < 2:
    raise ValueError(f"{metric}: train labels hold a single class")
  model = linear_model.LogisticRegression(C=c, max_iter=max_iter, random_state=seed)
  if multi_label:
    model = multiclass.OneVsRestClassifier(model)
  with warnings.catch_warnings():
    # One-vs-rest warns for labels constant in train; it then predicts the constant, as documented.
    warnings.filterwarnings("ignore", message="Label .* is present in all training examples")
    warnings.filterwarnings("ignore", message="Label not .* is present in all training examples")
    model.fit(train, train_y)
    pred = model.predict(test)
  return _classification_scores(test_y, pred.astype(test_y.dtype), multi_label)


# ----------------------------------------------------------------------------- bitext


def _nearest_is_gold(queries: np.ndarray, keys: np.ndarray) -> float:
  """Share of query rows i whose most cosine-similar key row is row i. When several keys tie for
  the best score (e.g. duplicate sentences), a query whose gold is among them scores
  1 / (number tied): the expected accuracy under a random tie-break."""
  keys64 = keys.astype(np.float64)
  step = max(1, _BLOCK_ELEMENTS // len(keys))
  total = 0.0
  for start in range(0, len(queries), step):
    sims = queries[start:start + step].astype(np.float64) @ keys64.T
    rows = np.arange(sims.shape[0])
    best = sims.max(axis=1)
    num_best = (sims >= best[:, None] - _TIE_ATOL).sum(axis=1)
    gold_is_best = sims[rows, start + rows] >= best - _TIE_ATOL
    total += float((gold_is_best / num_best).sum())
  return total / len(queries)


def bitext_accuracy(src_emb: np.ndarray, tgt_emb: np.ndarray) -> dict[str, float]:
  """Tatoeba bitext-mining accuracy; row i of src is the translation of row i of tgt.

  "src2tgt": share of src rows whose nearest tgt row (cosine, over all tgt rows) is row i — the
  direction MTEB's BitextMining scores (sentence1 -> sentence2; Tatoeba has xxx as src, eng as
  tgt); "tgt2src": the reverse search; "mean": their average, LASER's usual single number
  (1 - mean is LASER's error rate).
  """
  src = l2_normalize(src_emb, metric="bitext_accuracy", what="src_emb")
  tgt = l2_normalize(tgt_emb, metric="bitext_accuracy", what="tgt_emb")
  if src.shape != tgt.shape:
    raise ValueError(
        f"bitext_accuracy: src {src.shape} and tgt {tgt.shape} must be aligned, same shape")
  src2tgt, tgt2src = _nearest_is_gold(src, tgt), _nearest_is_gold(tgt, src)
  return {"src2tgt": src2tgt, "tgt2src": tgt2src, "mean": (src2tgt + tgt2src) / 2}


# ----------------------------------------------------------------------------- PCA baseline


@dataclasses.dataclass(frozen=True)
class PcaProjection:
  """Project (unit-normalised) embeddings onto fitted principal axes, then re-normalise."""

  mean: np.ndarray  # float32 [D]
  components: np.ndarray  # float32 [dim, D], rows are principal axes, largest variance first

  def __call__(self, emb: np.ndarray) -> np.ndarray:
    emb = l2_normalize(emb, metric="PcaProjection")
    if emb.shape[1] != self.mean.shape[0]:
      raise ValueError(
          f"PcaProjection: fitted on dim {self.mean.shape[0]}, got embeddings of dim "
          f"{emb.shape[1]}")
    return l2_normalize((emb - self.mean) @ self.components.T, metric="PcaProjection")


def pca_reduce(fit_emb: np.ndarray, dim: int, *, normalize: bool = True,
               groups: np.ndarray | None = None) -> PcaProjection:
  """PCA to `dim` axes fitted on `fit_emb` (rows unit-normalised first unless `normalize=False`):
  the fair small baseline, e.g. the base model cut to 50-d by PCA fitted on training posts, and the
  starting point of a trained projection.

  `groups` (int [N]): each group's rows are centred on the group's own mean before the axes are fitted,
  so axes along which only the groups differ (e.g. the languages of a multilingual model) are not kept
  for that alone; the projection still centres on the mean of all rows.

  Each axis' sign is fixed so its largest-magnitude loading is positive, so a refit on the same
  data gives the same projection.
  """
  emb = fit_emb if not normalize else l2_normalize(fit_emb, metric="pca_reduce", what="fit_emb")
  emb = np.asarray(emb, np.float64)
  max_dim = min(emb.shape[0] - 1, emb.shape[1])
  if not 1 <= dim <= max_dim:
    raise ValueError(
        f"pca_reduce: dim must be in [1, {max_dim}] (min(num_fit_rows - 1, emb_dim)), got {dim}")
  mean = emb.mean(axis=0)
  centred = emb - mean
  if groups is not None:
    _, groups = np.unique(groups, return_inverse=True)
    sums = np.zeros((groups.max() + 1, emb.shape[1]))
    np.add.at(sums, groups, emb)
    centred = emb - (sums / np.bincount(groups)[:, None])[groups]
  _, _, vt = np.linalg.svd(centred, full_matrices=False)
  components = vt[:dim]
  signs = np.sign(components[np.arange(dim), np.abs(components).argmax(axis=1)])
  return PcaProjection(mean=mean.astype(np.float32),
                       components=(components * signs[:, None]).astype(np.float32))

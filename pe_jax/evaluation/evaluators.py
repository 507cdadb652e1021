"""Offline evaluators, chosen by name in a config (big_vision style).

Each evaluator is built from already-loaded data and scores any text embedder:

    ev = make_evaluator("triplet", data=labeled_texts, num_triplets=10_000, seed=0)
    ev.run(embed_fn)  # {"triplet_acc": 0.87}

`embed_fn(list[str]) -> np.ndarray [N, D]` is all an evaluator sees, so the same code scores the
trained model, the untuned base and a PCA-reduced base. Each distinct text is embedded once per
run, in one call. Metric keys returned by each kind:

  triplet       triplet_acc
  knn           knn_acc, knn_macro_f1
  linear_probe  linear_probe_acc, linear_probe_macro_f1
  pair_auc      pair_auc
  sts           sts_spearman
  retrieval     ndcg@10, mrr@10, recall@<k> per k, num_queries, num_skipped_queries
  bitext        bitext_acc (mean of both directions), bitext_acc_a2b, bitext_acc_b2a
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from pe_jax.data.examples import LabeledTexts, RetrievalSet, TextPairs
from pe_jax.evaluation import metrics

EmbedFn = Callable[[list[str]], np.ndarray]


def embed_texts(embed_fn: EmbedFn, *text_lists: Sequence[str]) -> tuple[np.ndarray, ...]:
  """Unit-normalised embeddings [len(texts), D] for each list, calling `embed_fn` once on the
  distinct texts of all lists together (first-seen order)."""
  index: dict[str, int] = {}
  positions = [np.array([index.setdefault(t, len(index)) for t in texts], dtype=np.int64)
               for texts in text_lists]
  if not index:
    raise ValueError("embed_texts: no texts to embed")
  emb = np.asarray(embed_fn(list(index)))
  if emb.ndim != 2 or emb.shape[0] != len(index):
    raise ValueError(
        f"embed_texts: embed_fn returned shape {emb.shape} for {len(index)} texts; expected "
        f"[{len(index)}, D]")
  emb = metrics.l2_normalize(emb, metric="embed_texts", what="embed_fn output")
  return tuple(emb[p] for p in positions)


@contextlib.contextmanager
def _named(kind: str, name: str) -> Iterator[None]:
  """Prefixes a ValueError with the evaluator kind and the dataset it ran on."""
  try:
    yield
  except ValueError as e:
    raise ValueError(f"{kind} evaluator on {name!r}: {e}") from e


def _subsample(data: LabeledTexts, max_examples: int | None, seed: int) -> LabeledTexts:
  """A seeded subset of at most `max_examples` rows (kept in their original order)."""
  if max_examples is None or len(data) <= max_examples:
    return data
  keep = np.sort(np.random.default_rng(seed).choice(len(data), max_examples, replace=False))
  return LabeledTexts(name=data.name, texts=[data.texts[i] for i in keep],
                      labels=data.labels[keep], label_names=data.label_names)


class Evaluator(abc.ABC):
  """Scores an embedder on one dataset: `run(embed_fn) -> {metric key: value}`."""

  kind: str

  def __init__(self, data: LabeledTexts | TextPairs | RetrievalSet):
    self.data = data

  def run(self, embed_fn: EmbedFn) -> dict[str, float]:
    with _named(self.kind, self.data.name):
      return self._evaluate(embed_fn)

  @abc.abstractmethod
  def _evaluate(self, embed_fn: EmbedFn) -> dict[str, float]:
    ...


class TripletEvaluator(Evaluator):
  """The paper's per-task triplet accuracy; triplets are drawn once, at construction."""

  kind = "triplet"

  def __init__(self, data: LabeledTexts, *, num_triplets: int = 10_000, seed: int = 0):
    super().__init__(data)
    with _named(self.kind, data.name):
      triplet = metrics.sample_triplets(data.labels, num_triplets=num_triplets, seed=seed)
    # Only the examples some triplet uses get embedded.
    self._used = np.unique(np.concatenate(triplet))
    self._triplet = tuple(np.searchsorted(self._used, t) for t in triplet)

  def outcomes(self, embed_fn: EmbedFn) -> np.ndarray:
    """Per-triplet outcome (1 right, 1/2 tie, 0 wrong), float [num_triplets], the triplets in a fixed order."""
    with _named(self.kind, self.data.name):
      (emb,) = embed_texts(embed_fn, [self.data.texts[i] for i in self._used])
      return metrics.triplet_outcomes(emb, *self._triplet)

  def _evaluate(self, embed_fn: EmbedFn) -> dict[str, float]:
    return {"triplet_acc": float(self.outcomes(embed_fn).mean())}


class _ProbeEvaluator(Evaluator):
  """Fits a classifier on `train` embeddings and scores it on `data` (test) embeddings."""

  def __init__(self, data: LabeledTexts, *, train: LabeledTexts, max_train: int | None = None,
               max_test: int | None = None, seed: int = 0):
    super().__init__(data)
    if train.label_names != data.label_names:
      raise ValueError(
          f"{self.kind} evaluator: train {train.name!r} and test {data.name!r} have different "
          f"label names: {train.label_names} vs {data.label_names}")
    self.train = _subsample(train, max_train, seed)
    self.test = _subsample(data, max_test, seed)

  def _evaluate(self, embed_fn: EmbedFn) -> dict[str, float]:
    train_emb, test_emb = embed_texts(embed_fn, self.train.texts, self.test.texts)
    scores = self._score(train_emb, test_emb)
    return {f"{self.kind}_acc": scores["accuracy"], f"{self.kind}_macro_f1": scores["macro_f1"]}

  @abc.abstractmethod
  def _score(self, train_emb: np.ndarray, test_emb: np.ndarray) -> dict[str, float]:
    ...


class KnnEvaluator(_ProbeEvaluator):
  """k-NN (cosine, majority vote) from `train` to `data`; see `metrics.knn_accuracy`."""

  kind = "knn"

  def __init__(self, data: LabeledTexts, *, train: LabeledTexts, k: int = 10,
               max_train: int | None = None, max_test: int | None = None, seed: int = 0):
    super().__init__(data, train=train, max_train=max_train, max_test=max_test, seed=seed)
    self.k = k

  def _score(self, train_emb: np.ndarray, test_emb: np.ndarray) -> dict[str, float]:
    return metrics.knn_accuracy(train_emb, self.train.labels, test_emb, self.test.labels,
                                k=self.k)


class LinearProbeEvaluator(_ProbeEvaluator):
  """Logistic regression fitted on `train`, scored on `data`; see `metrics.linear_probe`."""

  kind = "linear_probe"

  def __init__(self, data: LabeledTexts, *, train: LabeledTexts, c: float = 1.0,
               max_iter: int = 1000, max_train: int | None = None, max_test: int | None = None,
               seed: int = 0):
    super().__init__(data, train=train, max_train=max_train, max_test=max_test, seed=seed)
    self.c, self.max_iter, self.seed = c, max_iter, seed

  def _score(self, train_emb: np.ndarray, test_emb: np.ndarray) -> dict[str, float]:
    return metrics.linear_probe(train_emb, self.train.labels, test_emb, self.test.labels,
                                c=self.c, max_iter=self.max_iter, seed=self.seed)


class PairAucEvaluator(Evaluator):
  """ROC-AUC of pair cosine against 0/1 pair labels (paraphrase, related posts)."""

  kind = "pair_auc"

  def __init__(self, data: TextPairs):
    super().__init__(data)
    if not np.isin(data.scores, (0, 1)).all():
      raise ValueError(f"{self.kind} evaluator on {data.name!r}: scores must be 0 or 1")

  def _evaluate(self, embed_fn: EmbedFn) -> dict[str, float]:
    emb_a, emb_b = embed_texts(embed_fn, self.data.texts_a, self.data.texts_b)
    return {"pair_auc": metrics.pair_roc_auc(emb_a, emb_b, self.data.scores)}


class StsEvaluator(Evaluator):
  """Spearman correlation of pair cosine with graded similarity (STS-B)."""

  kind = "sts"

  def _evaluate(self, embed_fn: EmbedFn) -> dict[str, float]:
    emb_a, emb_b = embed_texts(embed_fn, self.data.texts_a, self.data.texts_b)
    return {"sts_spearman": metrics.sts_spearman(emb_a, emb_b, self.data.scores)}


class RetrievalEvaluator(Evaluator):
  """Dense retrieval over a BEIR-style set; see `metrics.retrieval_metrics`.

  `query_prefix` / `doc_prefix` are prepended to the texts for bases trained with them (E5 wants
  "query: " and "passage: ").
  """

  kind = "retrieval"

  def __init__(self, data: RetrievalSet, *, ks: Sequence[int] = (1, 5, 10, 100),
               query_prefix: str = "", doc_prefix: str = ""):
    super().__init__(data)
    self.ks = tuple(ks)
    self.query_prefix, self.doc_prefix = query_prefix, doc_prefix

  def _evaluate(self, embed_fn: EmbedFn) -> dict[str, float]:
    query_emb, doc_emb = embed_texts(
        embed_fn, [self.query_prefix + q for q in self.data.queries],
        [self.doc_prefix + d for d in self.data.docs])
    return metrics.retrieval_metrics(query_emb, doc_emb, self.data.query_ids, self.data.doc_ids,
                                     self.data.qrels, ks=self.ks)


class BitextEvaluator(Evaluator):
  """Tatoeba-style bitext mining over aligned pairs (texts_a[i] translates texts_b[i]).

  "bitext_acc_a2b" searches texts_b for each texts_a row (MTEB's direction when texts_a is the
  non-English side), "bitext_acc_b2a" the reverse, "bitext_acc" their mean (LASER's number).
  """

  kind = "bitext"

  def _evaluate(self, embed_fn: EmbedFn) -> dict[str, float]:
    emb_a, emb_b = embed_texts(embed_fn, self.data.texts_a, self.data.texts_b)
    acc = metrics.bitext_accuracy(emb_a, emb_b)
    return {"bitext_acc": acc["mean"], "bitext_acc_a2b": acc["src2tgt"],
            "bitext_acc_b2a": acc["tgt2src"]}


EVALUATORS: dict[str, type[Evaluator]] = {
    cls.kind: cls for cls in (TripletEvaluator, KnnEvaluator, LinearProbeEvaluator,
                              PairAucEvaluator, StsEvaluator, RetrievalEvaluator, BitextEvaluator)
}


def make_evaluator(kind: str, **kwargs) -> Evaluator:
  """The evaluator registered under `kind`, built from `kwargs` (data=..., and its options)."""
  if kind not in EVALUATORS:
    raise ValueError(f"unknown evaluator kind {kind!r}; known kinds: {sorted(EVALUATORS)}")
  return EVALUATORS[kind](**kwargs)

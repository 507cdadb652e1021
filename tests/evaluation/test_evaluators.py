"""Evaluators with fake embedders: a label-revealing one scores ~1.0, a random one ~chance."""

import hashlib

import numpy as np
import pytest

from pe_jax.data.examples import LabeledTexts, RetrievalSet, TextPairs
from pe_jax.evaluation import evaluators
from pe_jax.evaluation.evaluators import make_evaluator

DIM = 512


def _seed(token: str) -> int:
  return int.from_bytes(hashlib.sha256(token.encode()).digest()[:8], "little")


def bow_embed(texts: list[str]) -> np.ndarray:
  """Hashing bag of words: each word adds a fixed random +-1 vector; texts sharing words align."""
  out = np.zeros((len(texts), DIM))
  for i, text in enumerate(texts):
    for word in text.split():
      out[i] += np.random.default_rng(_seed(word)).choice([-1.0, 1.0], size=DIM)
  return out


def random_embed(texts: list[str]) -> np.ndarray:
  """A fixed random vector per whole text: no structure at all."""
  return np.stack([np.random.default_rng(_seed(t)).normal(size=DIM) for t in texts])


class CountingEmbed:
  """Wraps an embedder, recording every text it is asked for."""

  def __init__(self, fn):
    self.fn, self.calls = fn, []

  def __call__(self, texts):
    self.calls.append(list(texts))
    return self.fn(texts)


def _labeled(name, num, num_labels, seed, with_topic=True):
  rng = np.random.default_rng(seed)
  y = rng.integers(num_labels, size=num)
  # "topicK" words reveal the label to bow_embed; "postI" words are per-example noise.
  texts = [(f"topic{l} topic{l} topic{l} " if with_topic else "") + f"post{seed}x{i}"
           for i, l in enumerate(y)]
  return LabeledTexts(name=name, texts=texts, labels=np.eye(num_labels, dtype=bool)[y],
                      label_names=tuple(f"l{i}" for i in range(num_labels)))


# ----------------------------------------------------------------------------- embed_texts


def test_embed_texts_embeds_each_distinct_text_once_and_indexes_back():
  embed = CountingEmbed(bow_embed)
  a, b = evaluators.embed_texts(embed, ["x y", "z", "x y"], ["z", "w", "x y"])
  assert embed.calls == [["x y", "z", "w"]]
  np.testing.assert_array_equal(a[0], a[2])
  np.testing.assert_array_equal(a[0], b[2])
  np.testing.assert_array_equal(a[1], b[0])
  np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1, rtol=1e-6)


def test_embed_texts_rejects_bad_embedder_output():
  with pytest.raises(ValueError, match=r"embed_texts: embed_fn returned shape \(1, 4\) for 2 texts"):
    evaluators.embed_texts(lambda texts: np.ones((1, 4)), ["a", "b"])
  with pytest.raises(ValueError, match="embed_texts: NaN or inf in embed_fn output"):
    evaluators.embed_texts(lambda texts: np.full((len(texts), 4), np.nan), ["a"])


# ----------------------------------------------------------------------------- labeled texts


def test_triplet_perfect_random_dedup_and_determinism():
  data = _labeled("topics", 300, 5, seed=0)
  # Duplicated texts must be embedded once.
  data = LabeledTexts(name=data.name, texts=data.texts + data.texts[:50],
                      labels=np.concatenate([data.labels, data.labels[:50]]),
                      label_names=data.label_names)
  ev = make_evaluator("triplet", data=data, num_triplets=4000, seed=0)
  embed = CountingEmbed(bow_embed)
  assert ev.run(embed) == {"triplet_acc": 1.0}
  assert len(embed.calls) == 1 and len(set(embed.calls[0])) == len(embed.calls[0]) <= 300
  random_acc = ev.run(random_embed)["triplet_acc"]
  assert abs(random_acc - 0.5) < 0.05
  assert make_evaluator("triplet", data=data, num_triplets=4000, seed=0).run(
      random_embed)["triplet_acc"] == random_acc


def test_triplet_constructor_names_dataset_on_bad_labels():
  data = LabeledTexts(name="one_label", texts=["a", "b"], labels=np.ones((2, 1), bool),
                      label_names=("x",))
  with pytest.raises(ValueError, match="triplet evaluator on 'one_label': sample_triplets:"):
    make_evaluator("triplet", data=data)


@pytest.mark.parametrize("kind", ["knn", "linear_probe"])
def test_probes_perfect_and_random(kind):
  train, test = _labeled("train", 200, 4, seed=1), _labeled("test", 100, 4, seed=2)
  ev = make_evaluator(kind, data=test, train=train)
  assert ev.run(bow_embed) == {f"{kind}_acc": 1.0, f"{kind}_macro_f1": 1.0}
  random = ev.run(random_embed)
  assert random[f"{kind}_acc"] < 0.45  # chance is 0.25


def test_probe_subsampling_is_seeded_and_bounded():
  train, test = _labeled("train", 200, 4, seed=1), _labeled("test", 100, 4, seed=2)
  embed = CountingEmbed(bow_embed)
  ev = make_evaluator("knn", data=test, train=train, k=5, max_train=50, max_test=30, seed=7)
  ev.run(embed)
  assert len(embed.calls[0]) == 80
  again = make_evaluator("knn", data=test, train=train, k=5, max_train=50, max_test=30, seed=7)
  assert again.train.texts == ev.train.texts and again.test.texts == ev.test.texts


def test_probe_rejects_mismatched_label_names():
  train = _labeled("train", 20, 3, seed=1)
  test = _labeled("test", 20, 4, seed=2)
  with pytest.raises(ValueError, match="knn evaluator: train 'train' and test 'test' have"):
    make_evaluator("knn", data=test, train=train)


def test_probe_multi_label():

  def multi(name, num, seed):
    labels = np.random.default_rng(seed).random((num, 3)) < 0.4
    texts = [" ".join(f"tag{j} tag{j} tag{j}" for j in np.flatnonzero(row)) + f" post{seed}x{i}"
             for i, row in enumerate(labels)]
    return LabeledTexts(name=name, texts=texts, labels=labels, label_names=("a", "b", "c"))

  out = make_evaluator("linear_probe", data=multi("test", 150, 2), train=multi("train", 300, 1),
                       c=10.0).run(bow_embed)
  assert out["linear_probe_acc"] > 0.9 and out["linear_probe_macro_f1"] > 0.9


# ----------------------------------------------------------------------------- pairs


def _pairs(name, num, seed):
  rng = np.random.default_rng(seed)
  related = rng.random(num) < 0.5
  texts_a = [f"subject{i} subject{i} subject{i} a{i}" for i in range(num)]
  texts_b = [f"subject{i if r else i + num} subject{i if r else i + num} "
             f"subject{i if r else i + num} b{i}" for i, r in enumerate(related)]
  return TextPairs(name=name, texts_a=texts_a, texts_b=texts_b,
                   scores=related.astype(np.float32))


def test_pair_auc_perfect_and_random():
  ev = make_evaluator("pair_auc", data=_pairs("para", 400, 0))
  assert ev.run(bow_embed) == {"pair_auc": 1.0}
  assert abs(ev.run(random_embed)["pair_auc"] - 0.5) < 0.08


def test_pair_auc_rejects_graded_scores():
  data = TextPairs(name="sts", texts_a=["a", "b"], texts_b=["c", "d"],
                   scores=np.array([0.0, 2.5], np.float32))
  with pytest.raises(ValueError, match="pair_auc evaluator on 'sts': scores must be 0 or 1"):
    make_evaluator("pair_auc", data=data)


def test_sts_perfect_and_random():
  # Pair i shares s of 5 words with its partner, and gold score s: cosine rises with s. The
  # "b" word keeps the two texts distinct even at s = 5 (identical texts share one embedding).
  rng = np.random.default_rng(0)
  scores = rng.integers(0, 6, size=300)
  texts_a = [" ".join(f"w{i}_{j}" for j in range(5)) for i in range(300)]
  texts_b = [" ".join([f"w{i}_{j}" for j in range(s)] + [f"v{i}_{j}" for j in range(5 - s)])
             + " b" for i, s in enumerate(scores)]
  ev = make_evaluator("sts", data=TextPairs(name="sts", texts_a=texts_a, texts_b=texts_b,
                                            scores=scores.astype(np.float32)))
  assert ev.run(bow_embed)["sts_spearman"] > 0.95
  assert abs(ev.run(random_embed)["sts_spearman"]) < 0.15


def test_bitext_perfect_and_random():
  # The "translation" keeps the content words, in another order, with another function word.
  texts_a = [f"le mot{i} chose{i}" for i in range(100)]
  texts_b = [f"chose{i} mot{i} the" for i in range(100)]
  ev = make_evaluator("bitext", data=TextPairs(name="fra-eng", texts_a=texts_a, texts_b=texts_b,
                                               scores=np.ones(100, np.float32)))
  assert ev.run(bow_embed) == {"bitext_acc": 1.0, "bitext_acc_a2b": 1.0, "bitext_acc_b2a": 1.0}
  assert ev.run(random_embed)["bitext_acc"] < 0.1


# ----------------------------------------------------------------------------- retrieval


def _retrieval_set():
  queries = [f"what about thing{i}" for i in range(20)]
  docs = [f"thing{i} thing{i} is described here doc{i}" for i in range(20)]
  docs += [f"distractor number{j}" for j in range(80)]
  qrels = {f"q{i}": {f"d{i}": 2, f"d{20 + i}": 0} for i in range(19)}  # q19: none -> skipped
  return RetrievalSet(name="toy", query_ids=[f"q{i}" for i in range(20)], queries=queries,
                      doc_ids=[f"d{i}" for i in range(100)], docs=docs, qrels=qrels)


def test_retrieval_perfect_random_and_prefixes():
  ev = make_evaluator("retrieval", data=_retrieval_set(), ks=(1, 10))
  out = ev.run(bow_embed)
  assert out == {"ndcg@10": 1.0, "mrr@10": 1.0, "recall@1": 1.0, "recall@10": 1.0,
                 "num_queries": 19.0, "num_skipped_queries": 1.0}
  assert ev.run(random_embed)["ndcg@10"] < 0.4
  embed = CountingEmbed(bow_embed)
  make_evaluator("retrieval", data=_retrieval_set(), query_prefix="query: ",
                 doc_prefix="passage: ").run(embed)
  assert embed.calls[0][0] == "query: what about thing0"
  assert embed.calls[0][20] == "passage: thing0 thing0 is described here doc0"


# ----------------------------------------------------------------------------- registry


def test_registry_and_unknown_kind():
  assert set(evaluators.EVALUATORS) == {
      "triplet", "knn", "linear_probe", "pair_auc", "sts", "retrieval", "bitext"}
  assert isinstance(make_evaluator("sts", data=_pairs("p", 4, 0)), evaluators.StsEvaluator)
  with pytest.raises(ValueError, match=r"unknown evaluator kind 'tripplet'; known kinds: \['bitext'"):
    make_evaluator("tripplet", data=None)


def test_run_errors_name_evaluator_and_dataset():
  ev = make_evaluator("sts", data=TextPairs(name="flat", texts_a=["a", "b"], texts_b=["c", "d"],
                                            scores=np.array([1.0, 1.0], np.float32)))
  with pytest.raises(ValueError, match="sts evaluator on 'flat': sts_spearman: undefined"):
    ev.run(bow_embed)

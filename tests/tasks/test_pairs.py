import time

import numpy as np
import pytest

from pe_jax.data.examples import LabeledTexts, ParallelTexts, RetrievalSet, TextPairs
from pe_jax.tasks.pairs import (LabelingPairs, PairBatch, QueryPosts, ScoredPairs, TranslationPairs,
                                stream_window, task_key)


def labeled(name, label_lists, num_labels):
  labels = np.zeros((len(label_lists), num_labels), dtype=bool)
  for i, row in enumerate(label_lists):
    labels[i, row] = True
  return LabeledTexts(name=name, texts=[f"post {i}" for i in range(len(label_lists))],
                      labels=labels, label_names=tuple(f"l{k}" for k in range(num_labels)))


def shares(labels, i, j):
  return bool((labels[i] & labels[j]).any())


def test_stream_window_walks_per_epoch_permutations():
  n = 10
  first_epoch = stream_window(n, seed=3, key=5, start=0, count=n)
  assert sorted(first_epoch) == list(range(n))
  across = stream_window(n, seed=3, key=5, start=7, count=6)
  second_epoch = stream_window(n, seed=3, key=5, start=10, count=n)
  np.testing.assert_array_equal(across, np.concatenate([first_epoch[7:], second_epoch[:3]]))
  assert not np.array_equal(first_epoch, second_epoch)
  assert not np.array_equal(first_epoch, stream_window(n, seed=3, key=6, start=0, count=n))


def test_labeling_pairs_single_label():
  rng = np.random.default_rng(0)
  data = labeled("emoji", [[k] for k in rng.integers(0, 4, size=60)], 4)
  task = LabelingPairs(data)
  b = task.batch(seed=0, step=2, batch_size=16)
  assert isinstance(b, PairBatch) and len(b) == 16 and b.sides == ("texts", "texts")
  for i, p, n in zip(b.a, b.b, b.negatives):
    assert p != i and shares(data.labels, i, p) and not shares(data.labels, i, n)
  np.testing.assert_array_equal(b.label_rows_a, data.labels[b.a])
  np.testing.assert_array_equal(b.label_rows_b, data.labels[b.b])
  np.testing.assert_array_equal(b.label_rows_negatives, data.labels[b.negatives])
  np.testing.assert_array_equal(b.targets, np.ones(16, np.float32))
  texts_a, texts_b, texts_neg = task.texts_for(b)
  assert texts_a == [f"post {i}" for i in b.a] and texts_neg == [f"post {i}" for i in b.negatives]
  assert texts_b == [f"post {i}" for i in b.b]


def test_labeling_pairs_multi_label_matches_brute_force_eligibility():
  lists = [[0, 1], [1], [2], [2, 3], [3], [0, 1, 2, 3], [], [4], [0]]
  data = labeled("topics", lists, 5)
  task = LabelingPairs(data)
  n = len(lists)
  eligible = [i for i in range(n)
              if any(shares(data.labels, i, j) for j in range(n) if j != i)
              and any(not shares(data.labels, i, j) for j in range(n))]
  # 5 has labels 0-3 yet 6 (no label) and 7 (label 4) share none; 6 and 7 have no positive.
  assert len(task) == len(eligible) and eligible == [0, 1, 2, 3, 4, 5, 8]
  seen = set()
  for step in range(40):
    b = task.batch(seed=1, step=step, batch_size=4)
    seen.update(b.a.tolist())
    for i, p, q in zip(b.a, b.b, b.negatives):
      assert i in eligible and p != i and shares(data.labels, i, p)
      assert not shares(data.labels, i, q)
  assert seen == set(eligible)
  every_label = LabelingPairs(labeled("topics", [[0], [0], [1], [1], [0, 1]], 2))
  assert len(every_label) == 4  # example 4 shares a label with everyone: no negative


def test_one_epoch_of_steps_visits_every_anchor_once_and_shards_are_disjoint():
  data = labeled("emoji", [[k % 5] for k in range(40)], 5)
  task = LabelingPairs(data)
  anchors = np.concatenate([task.batch(seed=4, step=s, batch_size=10).a for s in range(4)])
  assert sorted(anchors) == list(range(40))
  sharded = [task.batch(seed=4, step=1, batch_size=5, shard=k, num_shards=4).a for k in range(4)]
  assert sorted(np.concatenate(sharded)) == sorted(np.concatenate([
      task.batch(seed=4, step=s, batch_size=10).a for s in (2, 3)]))


def test_batches_are_pure_functions_of_seed_step_shard_and_task_name():
  data = labeled("emoji", [[k % 3] for k in range(30)], 3)
  task = LabelingPairs(data)
  x = task.batch(seed=9, step=5, batch_size=8, shard=1, num_shards=2)
  task.batch(seed=9, step=0, batch_size=8)  # interleaved calls leave no state behind
  y = LabelingPairs(data).batch(seed=9, step=5, batch_size=8, shard=1, num_shards=2)
  for field in ("a", "b", "negatives"):
    np.testing.assert_array_equal(getattr(x, field), getattr(y, field))
  other = LabelingPairs(labeled("hashtag", [[k % 3] for k in range(30)], 3))
  assert task_key("emoji") != task_key("hashtag")
  assert not np.array_equal(x.a, other.batch(seed=9, step=5, batch_size=8, shard=1, num_shards=2).a)


def test_positive_is_uniform_over_the_other_label_members():
  data = labeled("emoji", [[0], [0], [0], [1], [1]], 2)
  task = LabelingPairs(data)
  positives_of_0 = []
  for step in range(600):
    b = task.batch(seed=0, step=step, batch_size=5)
    positives_of_0 += b.b[b.a == 0].tolist()
  counts = np.bincount(positives_of_0, minlength=5)
  assert counts[0] == 0 and counts[3:].sum() == 0
  assert abs(counts[1] / counts.sum() - 0.5) < 0.06


def test_rare_negatives_take_the_exact_path():
  # Anchors of label 0 have a single negative among 300 examples: rejection draws almost always fail.
  data = labeled("rare", [[0]] * 299 + [[1]], 2)
  task = LabelingPairs(data, negatives=True)
  b = task.batch(seed=0, step=0, batch_size=64)
  assert len(task) == 299  # the lone label-1 example has no positive
  np.testing.assert_array_equal(b.negatives, np.full(64, 299))


@pytest.mark.parametrize("lists, match", [
    ([[0], [1], [2]], "no label is carried by two examples"),
    ([[0], [0, 1], [0]], "every example shares a label"),
])
def test_labeling_data_that_cannot_form_pairs_names_the_task(lists, match):
  with pytest.raises(ValueError, match=f"'bad'.*{match}"):
    LabelingPairs(labeled("bad", lists, 3))


def test_labeling_pairs_is_fast_at_50k_by_20():
  rng = np.random.default_rng(0)
  p = 0.5 ** np.arange(1, 21)
  data = labeled("emoji", [[k] for k in rng.choice(20, size=50_000, p=p / p.sum())], 20)
  start = time.perf_counter()
  task = LabelingPairs(data)
  built = time.perf_counter() - start
  start = time.perf_counter()
  for step in range(10):
    b = task.batch(seed=0, step=step, batch_size=256)
  per_batch = (time.perf_counter() - start) / 10
  assert not (data.labels[b.a] & data.labels[b.negatives]).any()
  assert built < 1.0 and per_batch < 0.05, (built, per_batch)


def test_scored_pairs_binary_graded_and_threshold():
  binary = TextPairs("pawsx", ["a0", "a1", "a2"], ["b0", "b1", "b2"], np.array([1, 0, 1], np.float32))
  task = ScoredPairs(binary)
  b = task.batch(seed=0, step=0, batch_size=3)
  np.testing.assert_array_equal(b.a, b.b)
  np.testing.assert_array_equal(b.targets, binary.scores[b.a])
  assert b.sides == ("texts_a", "texts_b") and b.negatives is None and b.label_rows_a is None
  assert task.texts_for(b)[:2] == ([f"a{i}" for i in b.a], [f"b{i}" for i in b.b])

  sts = TextPairs("stsb", ["x"] * 4, ["y"] * 4, np.array([5.0, 0.0, 2.5, 4.2], np.float32))
  b = ScoredPairs(sts).batch(seed=0, step=0, batch_size=4)
  np.testing.assert_allclose(b.targets, sts.scores[b.a] / 5)
  positives = ScoredPairs(sts, positive_threshold=4.0)
  assert len(positives) == 2
  assert set(positives.batch(seed=0, step=0, batch_size=6).a) == {0, 3}


def test_scored_pairs_reject_out_of_range_scores():
  with pytest.raises(ValueError, match="'stsb'.*pair 1"):
    ScoredPairs(TextPairs("stsb", ["x", "x"], ["y", "y"], np.array([1.0, 6.0], np.float32)))
  with pytest.raises(ValueError, match="'stsb'.*positive_threshold=9"):
    ScoredPairs(TextPairs("stsb", ["x"], ["y"], np.array([3.0], np.float32)), positive_threshold=9)


def retrieval_set():
  return RetrievalSet(
      name="dbpedia", query_ids=["q0", "q1", "q2"], queries=["Q0", "Q1", "Q2"],
      doc_ids=[f"d{j}" for j in range(6)], docs=[f"D{j}" for j in range(6)],
      qrels={"q0": {"d0": 2, "d1": 1, "d2": 0, "gone": 1},
             "q1": {"d3": 1},
             "q2": {"d4": 0},  # no relevant doc: not in the stream
             "q9": {"d5": 1}})  # query not in the set


def test_query_posts_pairs_are_the_relevant_judgements():
  task = QueryPosts(retrieval_set())
  assert len(task) == 3
  b = task.batch(seed=0, step=0, batch_size=3)
  assert sorted(zip(b.a.tolist(), b.b.tolist())) == [(0, 0), (0, 1), (1, 3)]
  assert b.sides == ("queries", "docs") and b.negatives is None
  queries, docs, _ = task.texts_for(b)
  assert queries == [f"Q{i}" for i in b.a] and docs == [f"D{j}" for j in b.b]


def test_query_posts_negatives():
  relevant = {0: {0, 1}, 1: {3}}
  random = QueryPosts(retrieval_set(), negatives="random")
  judged = QueryPosts(retrieval_set(), negatives="judged")
  seen = {0: set(), 1: set()}
  for step in range(200):
    b = random.batch(seed=0, step=step, batch_size=3)
    for q, n in zip(b.a, b.negatives):
      assert n not in relevant[q]
      seen[q].add(int(n))
    b = judged.batch(seed=0, step=step, batch_size=3)
    assert (b.negatives[b.a == 0] == 2).all()  # q0's only grade-0 judgement
    assert not np.isin(b.negatives[b.a == 1], [3]).any()  # q1 has none: random
  assert seen == {0: {2, 3, 4, 5}, 1: {0, 1, 2, 4, 5}}


def test_query_posts_errors_name_the_task():
  data = retrieval_set()
  with pytest.raises(ValueError, match="'dbpedia'.*negatives must be"):
    QueryPosts(data, negatives="hard")
  everything = RetrievalSet("tiny", ["q"], ["Q"], ["d"], ["D"], {"q": {"d": 1}})
  with pytest.raises(ValueError, match="'tiny'.*every doc is relevant to query 'q'"):
    QueryPosts(everything, negatives="random")
  none = RetrievalSet("tiny", ["q"], ["Q"], ["d"], ["D"], {"q": {"d": 0}})
  with pytest.raises(ValueError, match="'tiny'.*no judgement with grade > 0"):
    QueryPosts(none)


def test_batch_arguments_are_checked():
  task = QueryPosts(retrieval_set())
  with pytest.raises(ValueError, match="shard 2 is outside"):
    task.batch(seed=0, step=0, batch_size=2, shard=2, num_shards=2)
  with pytest.raises(ValueError, match="'dbpedia'.*batch_size"):
    task.batch(seed=0, step=0, batch_size=0)
  other = ScoredPairs(TextPairs("pawsx", ["a"], ["b"], np.array([1.0], np.float32)))
  with pytest.raises(ValueError, match="batch of task 'pawsx' given to task 'dbpedia'"):
    task.texts_for(other.batch(seed=0, step=0, batch_size=1))


def test_label_balanced_batches_spread_anchors_over_drawn_labels():
  """k labels a batch, anchors spread evenly over them whatever the label frequencies; positives from
  the anchor's own drawn label, negatives from another drawn label; pure in (seed, step, shard)."""
  rng = np.random.default_rng(1)
  # Very skewed: label 0 carries 85% of the posts, labels 1..9 the rest.
  data = labeled("emoji", [[0] if rng.random() < 0.85 else [int(rng.integers(1, 10))] for _ in range(400)], 10)
  task = LabelingPairs(data, labels_per_block=4)
  for step in range(5):
    b = task.batch(seed=0, step=step, batch_size=16)
    own = data.labels[b.a].argmax(axis=1)
    drawn, counts = np.unique(own, return_counts=True)
    assert len(drawn) == 4 and (counts == 4).all(), counts  # 16 anchors = 4 labels x 4
    assert (data.labels[b.b].argmax(axis=1) == own).all() and (b.b != b.a).all()
    negative = data.labels[b.negatives].argmax(axis=1)
    assert (negative != own).all() and np.isin(negative, drawn).all()
    again = task.batch(seed=0, step=step, batch_size=16)
    np.testing.assert_array_equal(b.a, again.a)
    np.testing.assert_array_equal(b.negatives, again.negatives)
  # A rare label leads batches as often as the common one: 10 labels, 4 drawn a batch.
  leads = np.concatenate([np.unique(data.labels[task.batch(0, s, 16).a].argmax(axis=1)) for s in range(200)])
  share = np.bincount(leads, minlength=10) / 200
  assert abs(share[0] - 0.4) < 0.1 and abs(share[5] - 0.4) < 0.1, share


def test_label_balanced_batches_with_fewer_labels_than_asked():
  data = labeled("irony", [[i % 2] for i in range(30)], 2)
  b = LabelingPairs(data, labels_per_block=8).batch(seed=0, step=0, batch_size=10)
  np.testing.assert_array_equal(np.bincount(data.labels[b.a].argmax(axis=1)), [5, 5])
  assert (data.labels[b.a].argmax(axis=1) != data.labels[b.negatives].argmax(axis=1)).all()


def parallel(n=12, languages=("de", "fr", "ja"), repeat=()):
  """Sentence i is "s{i}" in English and "s{i} in <lang>" elsewhere; `repeat` rows copy row 0's English."""
  english = [("s0" if i in repeat else f"s{i}") for i in range(n)]
  return ParallelTexts("stsb", "en", {"en": english, **{l: [f"s{i} in {l}" for i in range(n)] for l in languages}})


def test_translation_rows_are_one_sentence_in_three_languages():
  task = TranslationPairs(parallel())
  assert task.sides == ("en", "translations") and task.languages == ("de", "fr", "ja")
  batch = task.batch(seed=0, step=1, batch_size=8)
  a, b, third = task.texts_for(batch)
  for english, first, second in zip(a, b, third):
    assert first.startswith(english + " in ") and second.startswith(english + " in ")
    assert first != second  # two different languages
  # One label per sentence of the batch, the same on all three sides: the texts of a row are positives.
  rows = batch.label_rows_a.astype(int)
  np.testing.assert_array_equal(rows @ rows.T, np.eye(8))  # eight sentences, one label each
  assert (batch.label_rows_a == batch.label_rows_b).all() and (batch.label_rows_a == batch.label_rows_negatives).all()
  langs = {t.rsplit(" ", 1)[1] for t in b + third}
  assert langs == {"de", "fr", "ja"}


def test_translation_stream_runs_over_distinct_english_sentences():
  task = TranslationPairs(parallel(n=10, repeat=(3, 7)))  # rows 3 and 7 repeat row 0's sentence
  assert len(task) == 8
  epoch = task.batch(seed=1, step=0, batch_size=8)
  assert sorted(epoch.a) == [0, 1, 2, 4, 5, 6, 8, 9]
  # A window wrapping into the next epoch can meet a sentence twice: its rows then share a label.
  wrapped = task.batch(seed=1, step=1, batch_size=12)
  same = wrapped.a[:, None] == wrapped.a[None, :]
  np.testing.assert_array_equal(wrapped.label_rows_a.astype(int) @ wrapped.label_rows_a.T.astype(int) > 0, same)


def test_translation_with_one_language_has_no_third_text():
  task = TranslationPairs(parallel(languages=("de",)))
  batch = task.batch(seed=0, step=0, batch_size=4)
  a, b, third = task.texts_for(batch)
  assert third is None and batch.label_rows_negatives is None
  assert all(t == f"{e} in de" for e, t in zip(a, b))


def test_translation_batches_are_pure_and_need_a_language():
  task = TranslationPairs(parallel())
  first, again = task.batch(seed=2, step=3, batch_size=6), task.batch(seed=2, step=3, batch_size=6)
  for field in ("a", "b", "negatives"):
    np.testing.assert_array_equal(getattr(first, field), getattr(again, field))
  with pytest.raises(ValueError, match="task 'stsb': no language besides the pivot 'en'"):
    TranslationPairs(ParallelTexts("stsb", "en", {"en": ["x"]}))

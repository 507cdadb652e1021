"""Tasks as pair batches: indices of (text_a, text_b[, negative]) with a target, drawn from in-memory data.

Every batch is a pure function of (seed, step, shard): the task's rows are read as one endless stream
of per-epoch permutations, and batch `g = step * num_shards + shard` is the window at stream position
`g * batch_size`. Epoch `e`'s permutation comes from rng(seed, task key, e), and everything else a
batch draws (positives, negatives) from rng(seed, task key, g). The task key is a CRC32 of the task
name, so adding or dropping another task never changes this task's batches.

A task picked only at some steps reads the windows of those steps: no row repeats within an epoch of
the stream, and a row skipped at an unpicked step comes round again in a later epoch's order.
"""

from __future__ import annotations

import abc
import dataclasses
import zlib
from collections.abc import Callable

import numpy as np

from pe_jax.data.examples import LabeledTexts, ParallelTexts, RetrievalSet, TextPairs

# Lead each seed list so stream permutations and per-batch draws never share an rng state.
_STREAM_DOMAIN = 0x57EA
_DRAW_DOMAIN = 0xD7A3
# Rejection draws per row before falling back to listing a row's allowed items exactly.
_TRIES = 8


@dataclasses.dataclass(frozen=True)
class PairBatch:
  """One batch of a task as indices; `sides` names the text lists `a` and `b`/`negatives` index.

  `targets[i]` is the BCE target of pair (a[i], b[i]); a negative's target against a[i] is 0.
  Label rows (bool [B, num_labels]) are set for labeling tasks, for label-aware in-batch negatives,
  and decide what is related whenever they are set: `TranslationPairs` puts a further translation of
  a[i] in the `negatives` slot (the row's third text) and marks it related through its label rows.
  """

  task: str
  sides: tuple[str, str]
  a: np.ndarray  # int64 [B]
  b: np.ndarray  # int64 [B]
  targets: np.ndarray  # float32 [B] in [0, 1]
  negatives: np.ndarray | None = None  # int64 [B], indexes the same list as `b`
  label_rows_a: np.ndarray | None = None
  label_rows_b: np.ndarray | None = None
  label_rows_negatives: np.ndarray | None = None

  def __len__(self) -> int:
    return len(self.a)


def task_key(name: str) -> int:
  """Stable integer identity of a task, used in its rng seeds."""
  return zlib.crc32(name.encode("utf-8"))


def stream_window(num_rows: int, *, seed: int, key: int, start: int, count: int) -> np.ndarray:
  """Rows at positions [start, start + count) of the endless stream of per-epoch permutations."""
  positions = start + np.arange(count, dtype=np.int64)
  epochs, offsets = np.divmod(positions, num_rows)
  out = np.empty(count, dtype=np.int64)
  for epoch in np.unique(epochs):
    here = epochs == epoch
    perm = np.random.default_rng([_STREAM_DOMAIN, seed, key, int(epoch)]).permutation(num_rows)
    out[here] = perm[offsets[here]]
  return out


class PairTask(abc.ABC):
  """A task that serves `PairBatch`es; subclasses say what a stream row becomes."""

  def __init__(self, name: str, sides: tuple[str, str], texts: tuple[list[str], list[str]],
               num_rows: int):
    self.name = name
    self.sides = sides
    self.key = task_key(name)
    self._texts = texts
    self._num_rows = num_rows

  def __len__(self) -> int:
    """Rows in one epoch of the stream (the task's size for mixture weights)."""
    return self._num_rows

  def batch(self, seed: int, step: int, batch_size: int, shard: int = 0,
            num_shards: int = 1) -> PairBatch:
    """Batch for data-parallel `shard` of `num_shards` at `step`; shards read disjoint windows."""
    if seed < 0 or step < 0 or batch_size < 1:
      raise ValueError(f"task {self.name!r}: need seed >= 0, step >= 0, batch_size >= 1; got "
                       f"seed={seed}, step={step}, batch_size={batch_size}")
    if not 0 <= shard < num_shards:
      raise ValueError(f"task {self.name!r}: shard {shard} is outside [0, {num_shards})")
    g = step * num_shards + shard
    rows = stream_window(self._num_rows, seed=seed, key=self.key, start=g * batch_size,
                         count=batch_size)
    return self._make(rows, np.random.default_rng([_DRAW_DOMAIN, seed, self.key, g]))

  def texts_for(self, batch: PairBatch) -> tuple[list[str], list[str], list[str] | None]:
    """The strings of a batch: (side a, side b, negatives or None)."""
    if batch.task != self.name:
      raise ValueError(f"batch of task {batch.task!r} given to task {self.name!r}")
    texts_a, texts_b = self._texts
    negatives = None if batch.negatives is None else [texts_b[i] for i in batch.negatives]
    return [texts_a[i] for i in batch.a], [texts_b[i] for i in batch.b], negatives

  @abc.abstractmethod
  def _make(self, rows: np.ndarray, rng: np.random.Generator) -> PairBatch:
    """Turns stream rows into a batch, drawing anything random from `rng` only."""


class LabelingPairs(PairTask):
  """Anchor, positive sharing >= 1 label, negative sharing none (single- or multi-label).

  The positive is a uniform member (not the anchor) of a label drawn uniformly from the anchor's
  labels that another example also carries; the negative is uniform over examples sharing no label
  with the anchor. Anchors that can have no positive or no negative are left out of the stream.

  `labels_per_block` > 0 makes every batch label-balanced instead: it draws that many labels
  (uniformly, all of them if the task has fewer), spreads the anchors evenly over them, takes each
  anchor's positive from its own drawn label and its negative from another drawn label. Every label
  of a batch then holds several texts, so an in-batch loss sees positives and negatives for every
  text, and rare labels are trained as often as common ones. Anchors are then drawn with the batch's
  rng rather than read from the stream.
  """

  def __init__(self, data: LabeledTexts, *, negatives: bool = True, labels_per_block: int = 0):
    labels = np.asarray(data.labels, dtype=bool)
    n = len(labels)
    counts = labels.sum(axis=0)
    shared = counts >= 2
    has_positive = (labels & shared).any(axis=1)
    if not has_positive.any():
      raise ValueError(f"task {data.name!r}: no label is carried by two examples, so no positive "
                       f"pair can be formed")
    anchors = np.flatnonzero(has_positive & _has_disjoint_example(labels, counts))
    if not anchors.size:
      raise ValueError(f"task {data.name!r}: every example shares a label with all others "
                       f"(label counts {dict(zip(data.label_names, counts.tolist()))} of {n}), so "
                       f"no negative can be formed")
    super().__init__(data.name, ("texts", "texts"), (data.texts, data.texts), len(anchors))
    self._labels = labels
    self._counts = counts
    self._shared = shared
    self._anchors = anchors
    self._with_negatives = negatives
    # Per-label member lists as one sorted array of keys label * n + example, so one searchsorted
    # finds where each anchor sits in its chosen label's list.
    self._member_keys = np.flatnonzero(labels.T)
    self._label_starts = np.concatenate([[0], np.cumsum(counts)])
    self.labels_per_block = labels_per_block
    if labels_per_block:
      is_anchor = np.zeros(n, bool)
      is_anchor[anchors] = True
      # Labels that can lead a balanced batch: carried by an anchor and by one more example.
      self._label_anchors = {l: np.flatnonzero(labels[:, l] & is_anchor) for l in np.flatnonzero(shared)}
      self._label_anchors = {l: a for l, a in self._label_anchors.items() if a.size}

  def _make(self, rows, rng):
    n = len(self._labels)
    if self.labels_per_block:
      anchors, label, drawn = self._balanced_anchors(len(rows), rng)
    else:
      anchors = self._anchors[rows]
      label = np.where(self._labels[anchors] & self._shared, rng.random(self._labels[anchors].shape),
                       -1.0).argmax(axis=1)
    own = self._labels[anchors]
    start = self._label_starts[label]
    slot = np.searchsorted(self._member_keys, label * n + anchors) - start
    pick = rng.integers(self._counts[label] - 1)
    pick += pick >= slot  # skip the anchor itself
    positives = self._member_keys[start + pick] % n

    negatives = None
    if self._with_negatives:
      excluded = lambda cand: (self._labels[cand] & own[:, None, :]).any(axis=-1)
      negatives = _draw_excluding(
          rng, n, len(anchors), excluded=excluded,
          allowed=lambda r: np.flatnonzero(~self._labels[:, own[r]].any(axis=1)))
      if self.labels_per_block and len(drawn) > 1:
        # A member of another drawn label; the uniform draw above stays where none qualifies.
        other = drawn[(np.searchsorted(drawn, label) + 1 + rng.integers(len(drawn) - 1, size=len(label)))
                      % len(drawn)]
        start = self._label_starts[other]
        candidate = self._member_keys[start + rng.integers(self._counts[other])] % n
        ok = ~excluded(candidate[:, None])[:, 0]
        negatives[ok] = candidate[ok]
    return PairBatch(
        task=self.name, sides=self.sides, a=anchors, b=positives,
        targets=np.ones(len(anchors), np.float32), negatives=negatives,
        label_rows_a=own, label_rows_b=self._labels[positives],
        label_rows_negatives=None if negatives is None else self._labels[negatives])

  def _balanced_anchors(self, count: int, rng: np.random.Generator):
    """(anchors, each anchor's drawn label, the batch's sorted drawn labels) of a balanced batch."""
    pool = np.array(sorted(self._label_anchors))
    drawn = np.sort(rng.choice(pool, size=min(self.labels_per_block, len(pool)), replace=False))
    label = drawn[rng.permutation(count) % len(drawn)]
    anchors = np.empty(count, np.int64)
    for l in drawn:
      here = np.flatnonzero(label == l)
      members = self._label_anchors[l]
      anchors[here] = members[rng.choice(len(members), size=len(here), replace=len(here) > len(members))]
    return anchors, label, drawn


class ScoredPairs(PairTask):
  """Given pairs (a, b) with their score as the target.

  Targets: scores / max_score. With max_score=None, data whose scores are all 0 or 1 (paraphrase,
  bitext) keeps them as they are, anything else is read as graded 0..5 (STS) and divided by 5.
  With `positive_threshold`, only pairs scoring at or above it (raw score) are in the stream, for
  contrastive use where every pair is a positive.
  """

  def __init__(self, data: TextPairs, positive_threshold: float | None = None, *,
               max_score: float | None = None):
    scores = np.asarray(data.scores, dtype=np.float32)
    if max_score is None:
      max_score = 1.0 if np.isin(scores, (0.0, 1.0)).all() else 5.0
    bad = np.flatnonzero(~((scores >= 0) & (scores <= max_score)))
    if bad.size:
      raise ValueError(f"task {data.name!r}: score {scores[bad[0]]} of pair {bad[0]} is outside "
                       f"[0, {max_score}]")
    rows = np.arange(len(scores))
    if positive_threshold is not None:
      rows = np.flatnonzero(scores >= positive_threshold)
    if not rows.size:
      raise ValueError(f"task {data.name!r}: no pairs to train on ({len(scores)} pairs, "
                       f"positive_threshold={positive_threshold})")
    super().__init__(data.name, ("texts_a", "texts_b"), (data.texts_a, data.texts_b), len(rows))
    self._rows = rows
    self._targets = scores / np.float32(max_score)

  def _make(self, rows, rng):
    pairs = self._rows[rows]
    return PairBatch(task=self.name, sides=self.sides, a=pairs, b=pairs,
                     targets=self._targets[pairs])


class TranslationPairs(PairTask):
  """Three texts of one sentence per row: its pivot (English) text, then two translations in two
  different languages drawn uniformly from the others (one translation when there is one language;
  the third text is then left out).

  Label rows mark the batch's sentences (one label per distinct sentence), so a label-aware in-batch
  loss ("supcon") takes a sentence's three texts as positives of one another — (English, translation)
  and (translation, translation) pairs — and every other sentence of the block as a negative; "contrastive"
  takes the pair (pivot, first translation) against the block's other sentences. The pivot text on
  side a is what self-distillation pulls all three towards. The stream runs over distinct pivot texts
  (STS-B repeats sentences across rows), so no sentence meets itself as a negative.
  """

  def __init__(self, data: ParallelTexts):
    languages = [lang for lang in data.texts if lang != data.pivot]
    if not languages:
      raise ValueError(f"task {data.name!r}: no language besides the pivot {data.pivot!r} to translate into")
    pivots = data.texts[data.pivot]
    _, first = np.unique(np.asarray(pivots, dtype=object), return_index=True)
    rows = np.sort(first)
    # Side b lists every translation, language-major: text l * N + i is sentence i in languages[l].
    super().__init__(data.name, (data.pivot, "translations"),
                     (pivots, [t for lang in languages for t in data.texts[lang]]), len(rows))
    self.languages = tuple(languages)
    self._rows = rows
    self._n = len(pivots)

  def _make(self, rows, rng):
    sentences = self._rows[rows]
    count, num_languages = len(sentences), len(self.languages)
    first = rng.integers(num_languages, size=count)
    negatives = None
    if num_languages > 1:
      second = (first + 1 + rng.integers(num_languages - 1, size=count)) % num_languages
      negatives = second * self._n + sentences
    # Sentence labels of this batch only: a stream window can wrap into a new epoch and repeat one.
    _, label = np.unique(sentences, return_inverse=True)
    label_rows = np.eye(label.max() + 1, dtype=bool)[label]
    return PairBatch(task=self.name, sides=self.sides, a=sentences, b=first * self._n + sentences,
                     targets=np.ones(count, np.float32), negatives=negatives, label_rows_a=label_rows,
                     label_rows_b=label_rows, label_rows_negatives=None if negatives is None else label_rows)


class QueryPosts(PairTask):
  """(query, relevant doc) pairs for every judgement with grade > 0, target 1.

  negatives: None; "random" (uniform over docs not relevant to the query, easy); or "judged" (uniform
  over the query's grade <= 0 judgements, hard; "random" for a query without any). Judgements whose
  query or doc is not in the set are skipped (BEIR subsets keep qrels of dropped docs).
  """

  NEGATIVES = (None, "random", "judged")

  def __init__(self, data: RetrievalSet, *, negatives: str | None = None):
    if negatives not in self.NEGATIVES:
      raise ValueError(f"task {data.name!r}: negatives must be one of {self.NEGATIVES}, got "
                       f"{negatives!r}")
    query_index = {qid: i for i, qid in enumerate(data.query_ids)}
    doc_index = {did: j for j, did in enumerate(data.doc_ids)}
    num_docs = len(data.doc_ids)
    relevant, judged = [], []
    for qid, grades in data.qrels.items():
      if qid not in query_index:
        continue
      for did, grade in grades.items():
        if did in doc_index:
          key = query_index[qid] * num_docs + doc_index[did]
          (relevant if grade > 0 else judged).append(key)
    if not relevant:
      raise ValueError(f"task {data.name!r}: no judgement with grade > 0 names a query and a doc "
                       f"of this set")
    relevant = np.unique(np.array(relevant, dtype=np.int64))
    queries, per_query = np.unique(relevant // num_docs, return_counts=True)
    if negatives and (per_query >= num_docs).any():
      qid = data.query_ids[queries[np.argmax(per_query >= num_docs)]]
      raise ValueError(f"task {data.name!r}: every doc is relevant to query {qid!r}, so it has no "
                       f"negative")
    super().__init__(data.name, ("queries", "docs"), (data.queries, data.docs), len(relevant))
    self._num_docs = num_docs
    self._relevant = relevant  # sorted keys query * num_docs + doc
    self._judged = np.unique(np.array(judged, dtype=np.int64))
    self._negatives = negatives

  def _make(self, rows, rng):
    d = self._num_docs
    query, doc = np.divmod(self._relevant[rows], d)
    negatives = None
    if self._negatives:
      negatives = _draw_excluding(
          rng, d, len(rows),
          excluded=lambda cand: np.isin(query[:, None] * d + cand, self._relevant),
          allowed=lambda r: np.setdiff1d(np.arange(d), self._relevant_docs(query[r])))
    if self._negatives == "judged":
      lo, hi = (np.searchsorted(self._judged, query * d + off) for off in (0, d))
      pick = lo + (rng.random(len(rows)) * (hi - lo)).astype(np.int64)
      has_judged = hi > lo
      negatives[has_judged] = self._judged[pick[has_judged]] % d
    return PairBatch(task=self.name, sides=self.sides, a=query, b=doc,
                     targets=np.ones(len(rows), np.float32), negatives=negatives)

  def _relevant_docs(self, query: int) -> np.ndarray:
    d, keys = self._num_docs, self._relevant
    return keys[np.searchsorted(keys, query * d):np.searchsorted(keys, (query + 1) * d)] % d


def sample_posts(tasks: dict[str, PairTask], num_posts: int, seed: int) -> list[str]:
  """About `num_posts` anchors drawn from the tasks' training streams, the same share from every
  task (a PCA fit, a baseline): pure in (tasks, num_posts, seed)."""
  return [post for posts in sample_posts_by_task(tasks, num_posts, seed).values() for post in posts]


def sample_posts_by_task(tasks: dict[str, PairTask], num_posts: int, seed: int) -> dict[str, list[str]]:
  """`sample_posts`, task by task (sorted by name)."""
  per_task = max(num_posts // len(tasks), 1)
  return {name: tasks[name].texts_for(tasks[name].batch(seed, 0, min(per_task, len(tasks[name]))))[0]
          for name in sorted(tasks)}


def _has_disjoint_example(labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
  """bool [N]: some example shares no label with this one."""
  has = np.ones(len(labels), dtype=bool)
  # Only an example whose labels have >= N members in all can reach every example; check each
  # distinct label set among those once.
  reach_all = np.flatnonzero(labels.astype(np.int64) @ counts >= len(labels))
  sets, inverse = np.unique(labels[reach_all], axis=0, return_inverse=True)
  for u, label_set in enumerate(sets):
    has[reach_all[inverse.reshape(-1) == u]] = not labels[:, label_set].any(axis=1).all()
  return has


def _draw_excluding(rng: np.random.Generator, num_items: int, count: int,
                    excluded: Callable[[np.ndarray], np.ndarray],
                    allowed: Callable[[int], np.ndarray]) -> np.ndarray:
  """For each of `count` rows, a uniform item of range(num_items) that the row does not exclude.

  `excluded(candidates [count, k]) -> bool [count, k]`; `allowed(row)` lists a row's items exactly,
  used only for rows whose rejection draws all failed (so rare that looping is fine).
  """
  candidates = rng.integers(num_items, size=(count, _TRIES))
  ok = ~excluded(candidates)
  out = candidates[np.arange(count), ok.argmax(axis=1)]
  for r in np.flatnonzero(~ok.any(axis=1)):
    pool = allowed(int(r))
    out[r] = pool[rng.integers(len(pool))]
  return out

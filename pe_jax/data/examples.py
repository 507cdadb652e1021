"""In-memory forms of a dataset split, shared by tasks, training and evaluation.

Every reader returns one of these shapes, so a task or an evaluator never needs to know which
file format or dataset a split came from.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class LabeledTexts:
  """Posts with one or more labels each (a semantic labeling task).

  `labels` is multi-hot for single- and multi-label data alike, so "shares a label" is one rule:
  `labels[i] & labels[j]` has a True.
  """

  name: str
  texts: list[str]
  labels: np.ndarray  # bool [N, num_labels]
  label_names: tuple[str, ...]

  def __post_init__(self):
    if self.labels.ndim != 2 or self.labels.shape != (len(self.texts), len(self.label_names)):
      raise ValueError(
          f"{self.name}: labels must be [num_texts={len(self.texts)}, "
          f"num_labels={len(self.label_names)}], got {self.labels.shape}")

  def __len__(self) -> int:
    return len(self.texts)


@dataclasses.dataclass(frozen=True)
class TextPairs:
  """Pairs of texts with a relatedness score: 0/1 labels (paraphrase, bitext) or graded (STS)."""

  name: str
  texts_a: list[str]
  texts_b: list[str]
  scores: np.ndarray  # float32 [N]

  def __post_init__(self):
    if not len(self.texts_a) == len(self.texts_b) == len(self.scores):
      raise ValueError(
          f"{self.name}: texts_a ({len(self.texts_a)}), texts_b ({len(self.texts_b)}) and "
          f"scores ({len(self.scores)}) differ in length")

  def __len__(self) -> int:
    return len(self.texts_a)


@dataclasses.dataclass(frozen=True)
class ParallelTexts:
  """The same sentences in several languages, row-aligned: `texts[lang][i]` all say sentence i.

  `pivot` is the language the others were translated from (English), the first key of `texts`.
  """

  name: str
  pivot: str
  texts: dict[str, list[str]]

  def __post_init__(self):
    if next(iter(self.texts), None) != self.pivot:
      raise ValueError(f"{self.name}: the pivot language {self.pivot!r} must be the first of {list(self.texts)}")
    sizes = {lang: len(texts) for lang, texts in self.texts.items()}
    if len(set(sizes.values())) > 1:
      raise ValueError(f"{self.name}: languages differ in length {sizes}; rows must be aligned")

  def __len__(self) -> int:
    return len(self.texts[self.pivot])


@dataclasses.dataclass(frozen=True)
class RetrievalSet:
  """Queries, a corpus and graded relevance judgements (BEIR layout)."""

  name: str
  query_ids: list[str]
  queries: list[str]
  doc_ids: list[str]
  docs: list[str]
  qrels: dict[str, dict[str, int]]  # query id -> {doc id: grade}; grade > 0 is relevant

  def __post_init__(self):
    if len(self.query_ids) != len(self.queries) or len(self.doc_ids) != len(self.docs):
      raise ValueError(f"{self.name}: ids and texts differ in length")

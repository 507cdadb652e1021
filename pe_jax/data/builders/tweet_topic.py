"""TweetTopic: single-label English (temporal splits) and multi-label TweetTopicXL (4 languages)."""

from __future__ import annotations

import dataclasses
import json

import tensorflow_datasets as tfds

from pe_jax.data import readers
from pe_jax.data.builders import base

SINGLE_SOURCE = base.Source(
    repo="c3324/COMP3330-Bolognese-Bandits", commit="5d39af5e39661f6d1ea42d4860d1a6fed857dbeb",
    remote_root="Q2/dataset", local_root="tweet_topic_single")
XL_SOURCE = base.Source(
    repo="anon7331/tweet_topicXL", commit="2b5db0d017f8084db65741b7868c327d32a6231e",
    remote_root="data", local_root="tweet_topic_xl")

SINGLE_LABELS = ("arts_&_culture", "business_&_entrepreneurs", "pop_culture", "daily_life",
                 "sports_&_gaming", "science_&_technology")
# README order, ids 0-18; each is also a 0/1 field of every JSON line.
XL_LABELS = (
    "arts_&_culture", "business_&_entrepreneurs", "celebrity_&_pop_culture",
    "diaries_&_daily_life", "family", "fashion_&_style", "film_tv_&_video", "fitness_&_health",
    "food_&_dining", "gaming", "learning_&_educational", "music", "news_&_social_concern",
    "other_hobbies", "relationships", "science_&_technology", "sports", "travel_&_adventure",
    "youth_&_student_life")


class TweetTopicSingle(base.PeJaxBuilder):
  """TweetTopic single-label (6 topics), temporal splits; usual protocol train_2020 -> test_2021."""

  name = "pe_jax_tweet_topic_single"
  VERSION = tfds.core.Version("1.0.0")
  SOURCE = SINGLE_SOURCE
  DESCRIPTION = ("cardiffnlp/tweet_topic_single (Antypas et al., COLING 2022), temporal splits; "
                 "`id` is the tweet id.")
  BUILDER_CONFIGS = [
      base.Config(name="temporal", splits=(
          "train_2020", "validation_2020", "test_2020", "train_2021", "validation_2021",
          "test_2021")),
  ]

  def _features(self):
    return base.labeling_features(SINGLE_LABELS)

  def _read_split(self, files, split, stats):
    if split == self.builder_config.splits[0]:
      self._check_label_file(files)
    relpath = f"split_temporal/{split}.single.json"
    path = files.path(relpath)
    records = readers.read_jsonl(path, stats)
    files.check_records(relpath, len(records))
    examples = []
    for lineno, obj in records:
      _require_fields(obj, ("id", "text", "label", "label_name"), path, lineno)
      label = obj["label"]
      if not isinstance(label, int) or label not in range(len(SINGLE_LABELS)):
        raise readers.DataFormatError(path, lineno, f"label {label!r} is not in 0..5")
      if obj["label_name"] != SINGLE_LABELS[label]:
        raise readers.DataFormatError(
            path, lineno, f"label_name {obj['label_name']!r} disagrees with label {label} "
            f"({SINGLE_LABELS[label]})")
      examples.append({"id": str(obj["id"]), "text": stats.text(obj["text"], path, lineno),
                       "labels": [label], "lang": "en"})
    return examples

  def _check_label_file(self, files: base.RawFiles) -> None:
    path = files.path("label.single.json")
    mapping = json.loads(path.read_bytes())
    if mapping != {name: i for i, name in enumerate(SINGLE_LABELS)}:
      raise ValueError(f"{path}: label ids {mapping} differ from the builder's {SINGLE_LABELS}")


@dataclasses.dataclass(eq=False, kw_only=True)
class XlConfig(base.Config):
  lang: str  # ISO 639-1 (the folder `gr` is Greek, `el`)


class TweetTopicXl(base.PeJaxBuilder):
  """TweetTopicXL / X-Topic: 19-topic multi-label tweets, en/es/gr/ja (label = >=2 coders agree)."""

  name = "pe_jax_tweet_topic_xl"
  VERSION = tfds.core.Version("1.0.0")
  SOURCE = XL_SOURCE
  DESCRIPTION = ("TweetTopicXL (anonymised X-Topic release), multi-label over 19 topics; `id` is "
                 "the tweet id.")
  BUILDER_CONFIGS = [
      XlConfig(name=folder, lang=lang, splits=("train", "validation", "test"))
      for folder, lang in (("en", "en"), ("es", "es"), ("gr", "el"), ("ja", "ja"))
  ]

  def _features(self):
    return base.labeling_features(XL_LABELS)

  def _read_split(self, files, split, stats):
    folder = self.builder_config.name
    relpath = f"{folder}/{folder}_{split}.jsonl"
    path = files.path(relpath)
    records = readers.read_jsonl(path, stats)
    files.check_records(relpath, len(records))
    examples = []
    for lineno, obj in records:
      _require_fields(obj, ("id", "text", *XL_LABELS), path, lineno)
      flags = [obj[name] for name in XL_LABELS]
      bad = [(name, flag) for name, flag in zip(XL_LABELS, flags) if flag not in (0, 1)]
      if bad:
        raise readers.DataFormatError(path, lineno, f"topic flags must be 0 or 1, got {bad}")
      examples.append({"id": str(obj["id"]), "text": stats.text(obj["text"], path, lineno),
                       "labels": [i for i, flag in enumerate(flags) if flag],
                       "lang": self.builder_config.lang})
    return examples


def _require_fields(obj: dict, fields: tuple[str, ...], path, lineno: int) -> None:
  missing = [f for f in fields if f not in obj]
  if missing:
    raise readers.DataFormatError(path, lineno, f"missing field(s) {missing}")

"""TweetEval (cardiffnlp/tweeteval) and UMSAB (cardiffnlp/xlm-t): one tweet and one label per line.

Both keep `<split>_text.txt` and `<split>_labels.txt` aligned by line. Label names live in the
configs (features need them before any file is read) and are checked against TweetEval's
mapping.txt when preparing.
"""

from __future__ import annotations

import dataclasses

import tensorflow_datasets as tfds

from pe_jax.data import readers
from pe_jax.data.builders import base

TWEETEVAL_SOURCE = base.Source(
    repo="cardiffnlp/tweeteval", commit="4fbd22cd78421f05b1ecdb4fc5725bc7a7bd8f66",
    remote_root="datasets", local_root="tweeteval")
UMSAB_SOURCE = base.Source(
    repo="cardiffnlp/xlm-t", commit="874214d64d96599eb869a033c22ec2cc57d19256",
    remote_root="data/sentiment", local_root="xlm_t_umsab")

_SPLITS = ("train", "val", "test")
_SENTIMENT = ("negative", "neutral", "positive")
_STANCE = ("none", "against", "favor")
_EMOJI = (
    "red_heart", "smiling_face_with_hearteyes", "face_with_tears_of_joy", "two_hearts", "fire",
    "smiling_face_with_smiling_eyes", "smiling_face_with_sunglasses", "sparkles", "blue_heart",
    "face_blowing_a_kiss", "camera", "United_States", "sun", "purple_heart", "winking_face",
    "hundred_points", "beaming_face_with_smiling_eyes", "Christmas_tree", "camera_with_flash",
    "winking_face_with_tongue")


@dataclasses.dataclass(eq=False, kw_only=True)
class TextLabelConfig(base.Config):
  folder: str  # under the source's local_root
  label_names: tuple[str, ...]
  lang: str  # ISO 639-1
  mapping: str | None = None  # mapping.txt to check label_names against


def read_text_label_split(files: base.RawFiles, config: TextLabelConfig, split: str,
                          stats: readers.TextStats) -> list[base.Example]:
  """Examples of `<folder>/<split>_{text,labels}.txt`; `id` is the line number."""
  text_rel, label_rel = f"{config.folder}/{split}_text.txt", f"{config.folder}/{split}_labels.txt"
  text_path, label_path = files.path(text_rel), files.path(label_rel)
  texts = readers.read_text_lines(text_path, stats)
  labels = readers.read_text_lines(label_path, stats)
  files.check_records(text_rel, len(texts))
  files.check_records(label_rel, len(labels))
  if len(texts) != len(labels):
    raise readers.DataFormatError(
        label_path, min(len(texts), len(labels)) + 1,
        f"{len(labels)} labels for {len(texts)} texts in {text_path}")
  allowed = range(len(config.label_names))
  return [{
      "id": str(lineno),
      "text": stats.text(text, text_path, lineno),
      "labels": [readers.parse_int(label, label_path, lineno, "label", allowed=allowed)],
      "lang": config.lang,
  } for lineno, (text, label) in enumerate(zip(texts, labels), start=1)]


def check_mapping(files: base.RawFiles, relpath: str, label_names: tuple[str, ...]) -> None:
  """mapping.txt rows are `id<TAB>name` (emoji: `id<TAB>emoji<TAB>_name_<TAB>`).

  The name compared is the row's last non-empty field without surrounding underscores.
  """
  path = files.path(relpath)
  rows = readers.read_text_lines(path, readers.TextStats())
  files.check_records(relpath, len(rows))
  names = []
  for lineno, row in enumerate(rows, start=1):
    fields = [f for f in row.split("\t") if f.strip()]
    if len(fields) < 2:
      raise readers.DataFormatError(path, lineno, f"expected 'id<TAB>name', got {row!r}")
    readers.parse_int(fields[0], path, lineno, "label id", allowed=range(lineno - 1, lineno))
    names.append(fields[-1].strip().strip("_"))
  if tuple(names) != label_names:
    raise ValueError(f"{path}: label names {tuple(names)} differ from the builder's {label_names}")


def _tweeteval_config(name: str, folder: str, label_names: tuple[str, ...], *,
                      mapping: str | None = None, splits: tuple[str, ...] = _SPLITS,
                      description: str = "") -> TextLabelConfig:
  return TextLabelConfig(
      name=name, folder=folder, label_names=label_names, lang="en", splits=splits,
      mapping=mapping or f"{folder}/mapping.txt", description=description)


class TweetEval(base.PeJaxBuilder):
  """TweetEval: 7 English tweet classification tasks (stance split into its 5 targets)."""

  name = "pe_jax_tweeteval"
  VERSION = tfds.core.Version("1.0.0")
  SOURCE = TWEETEVAL_SOURCE
  DESCRIPTION = ("TweetEval (Barbieri et al., Findings of EMNLP 2020), one tweet and one label per "
                 "example; `id` is the line number in the source split file.")
  BUILDER_CONFIGS = [
      _tweeteval_config("emoji", "emoji", _EMOJI),
      _tweeteval_config("emotion", "emotion", ("anger", "joy", "optimism", "sadness")),
      _tweeteval_config("hate", "hate", ("not-hate", "hate")),
      _tweeteval_config("irony", "irony", ("non_irony", "irony")),
      _tweeteval_config("offensive", "offensive", ("not-offensive", "offensive")),
      _tweeteval_config(
          "sentiment", "sentiment", _SENTIMENT, splits=("val", "test"),
          description="val/test only: the train text is absent from every GitHub snapshot."),
      *(_tweeteval_config(f"stance_{target}", f"stance/{target}", _STANCE,
                          mapping="stance/mapping.txt")
        for target in ("abortion", "atheism", "climate", "feminist", "hillary")),
  ]

  def _features(self):
    return base.labeling_features(self.builder_config.label_names)

  def _read_split(self, files, split, stats):
    if split == self.builder_config.splits[0]:
      check_mapping(files, self.builder_config.mapping, self.builder_config.label_names)
    return read_text_label_split(files, self.builder_config, split, stats)


_UMSAB_LANGUAGES = {
    "arabic": "ar", "english": "en", "french": "fr", "german": "de", "hindi": "hi",
    "italian": "it", "portuguese": "pt", "spanish": "es"}


class XlmTUmsab(base.PeJaxBuilder):
  """UMSAB: tweet sentiment in 8 languages, 0 negative / 1 neutral / 2 positive.

  `english` is carved out of TweetEval sentiment: see `pe_jax.data.load.overlaps`.
  """

  name = "pe_jax_xlm_t_umsab"
  VERSION = tfds.core.Version("1.0.0")
  SOURCE = UMSAB_SOURCE
  DESCRIPTION = ("UMSAB multilingual tweet sentiment (Barbieri et al., XLM-T, LREC 2022); `id` is "
                 "the line number in the source split file.")
  BUILDER_CONFIGS = [
      TextLabelConfig(name=language, folder=language, label_names=_SENTIMENT, lang=lang,
                      splits=_SPLITS)
      for language, lang in _UMSAB_LANGUAGES.items()
  ]

  def _features(self):
    return base.labeling_features(self.builder_config.label_names)

  def _read_split(self, files, split, stats):
    return read_text_label_split(files, self.builder_config, split, stats)

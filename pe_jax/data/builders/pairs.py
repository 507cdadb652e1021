"""Text-pair datasets: STS-B machine-translated (graded), PAWS-X dev (0/1), Tatoeba bitext (1.0)."""

from __future__ import annotations

import tensorflow_datasets as tfds

from pe_jax.data import readers
from pe_jax.data.builders import base

STSB_SOURCE = base.Source(
    repo="PhilipMay/stsb-multi-mt", commit="30de0dec4ee199b7f42351d3f1a0b19592955385",
    remote_root="data", local_root="stsb_multi_mt")
PAWSX_SOURCE = base.Source(
    repo="GautamGupta17/MESH", commit="68f82e29e71a4e425069ff398a61387c24c0f30d",
    remote_root="data/pawsx", local_root="pawsx")
TATOEBA_SOURCE = base.Source(
    repo="facebookresearch/LASER", commit="74bc6ae7ffb7cba670fe0f428d0ede9f666fb821",
    remote_root="data/tatoeba/v1", local_root="tatoeba")

# ISO 639-3 codes of LASER's Tatoeba test sets at TATOEBA_SOURCE's commit.
TATOEBA_LANGUAGES = (
    "afr", "amh", "ang", "ara", "arq", "arz", "ast", "awa", "aze", "bel", "ben", "ber", "bos",
    "bre", "bul", "cat", "cbk", "ceb", "ces", "cha", "cmn", "cor", "csb", "cym", "dan", "deu",
    "dsb", "dtp", "ell", "epo", "est", "eus", "fao", "fin", "fra", "fry", "gla", "gle", "glg",
    "gsw", "heb", "hin", "hrv", "hsb", "hun", "hye", "ido", "ile", "ina", "ind", "isl", "ita",
    "jav", "jpn", "kab", "kat", "kaz", "khm", "kor", "kur", "kzj", "lat", "lfn", "lit", "lvs",
    "mal", "mar", "max", "mhr", "mkd", "mon", "nds", "nld", "nno", "nob", "nov", "oci", "orv",
    "pam", "pes", "pms", "pol", "por", "ron", "rus", "slk", "slv", "spa", "sqi", "srp", "swe",
    "swg", "swh", "tam", "tat", "tel", "tgl", "tha", "tuk", "tur", "tzl", "uig", "ukr", "urd",
    "uzb", "vie", "war", "wuu", "xho", "yid", "yue", "zsm")


class StsbMultiMt(base.PeJaxBuilder):
  """STS Benchmark in 11 languages (en original, the rest DeepL translations, row-aligned)."""

  name = "pe_jax_stsb_multi_mt"
  VERSION = tfds.core.Version("1.0.0")
  SOURCE = STSB_SOURCE
  DESCRIPTION = "stsb_multi_mt (May, 2021): sentence pairs with a similarity score in [0, 5]."
  BUILDER_CONFIGS = [
      base.Config(name=lang, splits=("train", "dev", "test"))
      for lang in ("de", "en", "es", "fr", "it", "ja", "nl", "pl", "pt", "ru", "zh")
  ]

  @staticmethod
  def source_file(lang: str, split: str) -> str:
    """The raw file of a language's split, relative to the source's folder."""
    return f"stsb-{lang}-{split}.csv"

  def _features(self):
    return base.pair_features()

  def _read_split(self, files, split, stats):
    relpath = self.source_file(self.builder_config.name, split)
    path = files.path(relpath)
    rows = readers.read_csv(path, stats, num_fields=3)
    # The Files table counts lines, not CSV records. These files hold one CRLF-terminated record
    # per line and no quoted newline (as staged), so records == lines; a record spanning lines
    # would make the counts differ and is reported rather than silently accepted.
    files.check_records(relpath, len(rows))
    return [{
        "text_a": stats.text(a, path, lineno, "sentence1"),
        "text_b": stats.text(b, path, lineno, "sentence2"),
        "score": readers.parse_float(score, path, lineno, "similarity_score", low=0.0, high=5.0),
    } for lineno, (a, b, score) in rows]


class Pawsx(base.PeJaxBuilder):
  """PAWS-X dev sets (human-translated from PAWS-Wiki dev), score 1.0 = paraphrase, 0.0 = not."""

  name = "pe_jax_pawsx"
  VERSION = tfds.core.Version("1.0.0")
  SOURCE = PAWSX_SOURCE
  DESCRIPTION = "PAWS-X (Yang et al., EMNLP 2019) dev pairs, XTREME TSV layout."
  BUILDER_CONFIGS = [
      base.Config(name=lang, splits=("dev",)) for lang in ("de", "en", "es", "fr", "ja", "ko", "zh")
  ]

  @staticmethod
  def source_file(lang: str, split: str) -> str:
    """The raw file of a language's split, relative to the source's folder."""
    return f"{split}-{lang}.tsv"

  def _features(self):
    return base.pair_features()

  def _read_split(self, files, split, stats):
    relpath = self.source_file(self.builder_config.name, split)
    path = files.path(relpath)
    rows = readers.read_tsv(path, stats, num_fields=3)
    files.check_records(relpath, len(rows))
    return [{
        "text_a": stats.text(a, path, lineno, "sentence1"),
        "text_b": stats.text(b, path, lineno, "sentence2"),
        "score": float(readers.parse_int(label, path, lineno, "label", allowed=range(2))),
    } for lineno, (a, b, label) in rows]


class Tatoeba(base.PeJaxBuilder):
  """LASER Tatoeba bitext: text_a in the config's language, text_b its English translation."""

  name = "pe_jax_tatoeba"
  VERSION = tfds.core.Version("1.0.0")
  SOURCE = TATOEBA_SOURCE
  DESCRIPTION = ("LASER Tatoeba test sets (Artetxe & Schwenk, 2019): line i of both sides is a "
                 "translation pair (score 1.0).")
  BUILDER_CONFIGS = [base.Config(name=lang, splits=("test",)) for lang in TATOEBA_LANGUAGES]

  def _features(self):
    return base.pair_features()

  def _read_split(self, files, split, stats):
    lang = self.builder_config.name
    source_rel, english_rel = f"tatoeba.{lang}-eng.{lang}", f"tatoeba.{lang}-eng.eng"
    source_path, english_path = files.path(source_rel), files.path(english_rel)
    sources = readers.read_text_lines(source_path, stats)
    english = readers.read_text_lines(english_path, stats)
    files.check_records(source_rel, len(sources))
    files.check_records(english_rel, len(english))
    if len(sources) != len(english):
      raise readers.DataFormatError(
          english_path, min(len(sources), len(english)) + 1,
          f"{len(english)} English lines for {len(sources)} lines in {source_path}")
    return [{
        "text_a": stats.text(a, source_path, lineno),
        "text_b": stats.text(b, english_path, lineno),
        "score": 1.0,
    } for lineno, (a, b) in enumerate(zip(sources, english), start=1)]

"""What every pe_jax TFDS builder shares: where files come from, features per kind, stats.

Local files: pass the staged raw data folder (the one holding MANIFEST.md) as
`tfds.download.DownloadConfig(manual_dir=...)`; every file is then checked against the manifest
(size, sha256, record count). Without a manual_dir the same files are downloaded from the source's
pinned GitHub commit (no manifest checks then, only the format checks of the readers).
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import pathlib
from typing import Any, ClassVar, Iterator

import numpy as np
import tensorflow_datasets as tfds

from pe_jax.data import manifest as manifest_lib
from pe_jax.data import readers

log = logging.getLogger(__name__)

Example = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Source:
  """A public GitHub snapshot: `remote_root` in the repo is `local_root` in the raw data folder."""

  repo: str
  commit: str
  remote_root: str
  local_root: str

  def url(self, relpath: str) -> str:
    return (f"https://raw.githubusercontent.com/{self.repo}/{self.commit}/"
            f"{self.remote_root}/{relpath}")

  @property
  def homepage(self) -> str:
    return f"https://github.com/{self.repo}/tree/{self.commit}/{self.remote_root}"


class RawFiles:
  """Files of one source, from the local data folder (checked) or downloaded."""

  def __init__(self, source: Source, dl_manager: tfds.download.DownloadManager):
    self.source = source
    self._dl_manager = dl_manager
    self.manifest: manifest_lib.Manifest | None = None
    try:
      manual_dir = pathlib.Path(dl_manager.manual_dir)
    except AssertionError:  # tfds: no manual_dir, or an absent/empty one
      manual_dir = None
    if manual_dir is not None:
      if not (manual_dir / source.local_root).is_dir():
        raise FileNotFoundError(
            f"Raw data folder {manual_dir} has no {source.local_root}/: the staged data folder holds "
            f"{manifest_lib.MANIFEST_NAME} and one folder per dataset")
      self.manifest = manifest_lib.Manifest(manual_dir)
    self.origin = str(manual_dir) if manual_dir is not None else source.homepage

  def path(self, relpath: str) -> pathlib.Path:
    """Local path of `<local_root>/<relpath>`."""
    if self.manifest is not None:
      return self.manifest.verify(f"{self.source.local_root}/{relpath}")
    return pathlib.Path(self._dl_manager.download(self.source.url(relpath)))

  def check_records(self, relpath: str, num_records: int, *, header_lines: int = 0) -> None:
    """Record count against the manifest (local files only; downloads have no manifest)."""
    if self.manifest is not None:
      self.manifest.check_records(f"{self.source.local_root}/{relpath}", num_records,
                                  header_lines=header_lines)


@dataclasses.dataclass(eq=False, kw_only=True)
class Config(tfds.core.BuilderConfig):
  """A subset; `splits` is known without preparing, so names can be checked up front."""

  splits: tuple[str, ...]


def labeling_features(label_names: tuple[str, ...]) -> tfds.features.FeaturesDict:
  """A text with its label ids (one for single-label data, several for multi-label)."""
  return tfds.features.FeaturesDict({
      "id": tfds.features.Text(),
      "text": tfds.features.Text(),
      "labels": tfds.features.Sequence(tfds.features.ClassLabel(names=list(label_names))),
      "lang": tfds.features.Text(),
  })


def pair_features() -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({
      "text_a": tfds.features.Text(),
      "text_b": tfds.features.Text(),
      "score": tfds.features.Scalar(dtype=np.float32),
  })


class _LocalDatasetInfo(tfds.core.DatasetInfo):
  """A DatasetInfo that never looks for itself on TFDS's public bucket."""

  def initialize_from_bucket(self) -> None:
    # None of these datasets is on gs://tfds-data, and TFDS's own version makes a temporary folder before it
    # looks and never removes it: every builder made before its data is prepared (each first run, every
    # test on a fresh folder) left an empty /tmp/tmp*tfds behind, about 200 a test run.
    pass


class PeJaxBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Reads every split eagerly (the data is small) so counts are checked before anything is written.

  Order is kept (`disable_shuffling`): line i of a source file is example i of its split, which
  keeps row-aligned translations (stsb_multi_mt, tatoeba) aligned.
  """

  SOURCE: ClassVar[Source]
  DESCRIPTION: ClassVar[str]
  # tfds would look for a checksums.tsv beside the module, through the `importlib_resources`
  # backport it does not install on Python >= 3.9. Downloads here carry no registered checksums.
  url_infos = None

  @property
  def MANUAL_DOWNLOAD_INSTRUCTIONS(self) -> str:  # pylint: disable=invalid-name
    return (f"Set manual_dir to the raw data folder holding MANIFEST.md and "
            f"{self.SOURCE.local_root}/; without it the files are downloaded from "
            f"{self.SOURCE.homepage}.")

  @abc.abstractmethod
  def _features(self) -> tfds.features.FeaturesDict:
    ...

  @abc.abstractmethod
  def _read_split(self, files: RawFiles, split: str, stats: readers.TextStats) -> list[Example]:
    ...

  def _info(self) -> tfds.core.DatasetInfo:
    return _LocalDatasetInfo(
        builder=self,
        description=self.DESCRIPTION,
        features=self._features(),
        homepage=self.SOURCE.homepage,
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(),
    )

  # tfds prints "Downloading and preparing dataset Unknown size ..." and "... downloaded and prepared"
  # around every preparation, downloading or not; the log line in _split_generators says what happens.
  def _log_download_bytes(self) -> None:
    pass

  def _log_download_done(self) -> None:
    pass

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    files = RawFiles(self.SOURCE, dl_manager)
    log.info("preparing %s/%s from %s (once: kept in %s)", self.name, self.builder_config.name, files.origin,
             self.data_dir_root)
    generators = {}
    stats_per_split = {}
    for split in self.builder_config.splits:
      stats = readers.TextStats()
      examples = self._read_split(files, split, stats)
      stats_per_split[split] = dataclasses.asdict(stats)
      if stats.utf8_replacements or stats.empty_texts:
        log.warning("%s/%s %s: %d empty texts kept, %d invalid UTF-8 sequences replaced",
                    self.name, self.builder_config.name, split, stats.empty_texts,
                    stats.utf8_replacements)
      generators[split] = self._generate_examples(examples)
    self.info.metadata["text_stats"] = stats_per_split
    return generators

  def _generate_examples(self, examples: list[Example]) -> Iterator[tuple[int, Example]]:
    yield from enumerate(examples)

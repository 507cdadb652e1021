"""The **Files** table of the raw data folder's MANIFEST.md, and the checks built on it.

Each row gives a file's `lines` (number of newline bytes, as `wc -l` counts them), `bytes` and
`sha256`.
Builders reading local files check that every file is the one the manifest describes and that the
number of records parsed from it matches its line count.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import re

from pe_jax.data.paths import MANIFEST_NAME

_FILES_HEADING = re.compile(r"^##\s+Files\s*$")
_ROW = re.compile(r"^\|\s*`(?P<path>[^`]+)`\s*\|\s*(?P<lines>\d+)\s*\|\s*(?P<bytes>\d+)\s*\|"
                  r"\s*(?P<sha256>[0-9a-f]{64})\s*\|\s*$")


class ManifestError(ValueError):
  """A file disagrees with MANIFEST.md, or the manifest itself cannot be read."""


@dataclasses.dataclass(frozen=True)
class FileEntry:
  path: str  # relative to the data folder, '/'-separated
  lines: int
  bytes: int
  sha256: str


class Manifest:
  """The Files table of `<data_dir>/MANIFEST.md`."""

  def __init__(self, data_dir: str | os.PathLike):
    self.data_dir = pathlib.Path(data_dir)
    self.path = self.data_dir / MANIFEST_NAME
    if not self.path.is_file():
      raise ManifestError(
          f"{self.path} not found: the local data folder must be the staged folder that holds "
          f"{MANIFEST_NAME} and the dataset folders")
    self.entries = _parse_files_table(self.path)

  def entry(self, relpath: str) -> FileEntry:
    try:
      return self.entries[relpath]
    except KeyError:
      raise ManifestError(f"{relpath} is not listed in the Files table of {self.path}") from None

  def verify(self, relpath: str) -> pathlib.Path:
    """Path of `relpath` after checking it exists with the manifest's size and sha256."""
    entry = self.entry(relpath)
    path = self.data_dir / relpath
    if not path.is_file():
      raise ManifestError(f"{path} is listed in {self.path} but missing")
    data = path.read_bytes()
    if len(data) != entry.bytes:
      raise ManifestError(f"{path} has {len(data)} bytes, {self.path} says {entry.bytes}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256:
      raise ManifestError(f"{path} has sha256 {digest}, {self.path} says {entry.sha256}")
    return path

  def expected_records(self, relpath: str, *, header_lines: int = 0) -> int:
    """Records a line-based file holds: its newline count, plus an unterminated last line.

    Several files (xlm_t_umsab, tweet_topic_single, some mapping.txt) lack a final newline, so
    `wc -l` is one short of the record count there. The file itself tells which case holds; it
    was just checked against the manifest's sha256, so this reads the manifest's file.
    """
    entry = self.entry(relpath)
    path = self.data_dir / relpath
    unterminated = 0
    if entry.bytes:
      with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        unterminated = int(f.read(1) != b"\n")
    return entry.lines + unterminated - header_lines

  def check_records(self, relpath: str, num_records: int, *, header_lines: int = 0) -> None:
    """Raises when `num_records` parsed from `relpath` differs from the manifest's line count."""
    expected = self.expected_records(relpath, header_lines=header_lines)
    if num_records != expected:
      header = f" minus {header_lines} header line(s)" if header_lines else ""
      raise ManifestError(
          f"{self.data_dir / relpath}: parsed {num_records} records, but {self.path} lists "
          f"{self.entry(relpath).lines} lines{header} (expected {expected} records)")


def _parse_files_table(path: pathlib.Path) -> dict[str, FileEntry]:
  entries: dict[str, FileEntry] = {}
  in_files = False
  for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
    if line.startswith("## "):
      in_files = bool(_FILES_HEADING.match(line))
      continue
    if not in_files or not line.startswith("| `"):
      continue
    match = _ROW.match(line)
    if match is None:
      raise ManifestError(f"{path}:{lineno}: malformed Files table row: {line!r}")
    entries[match["path"]] = FileEntry(
        path=match["path"], lines=int(match["lines"]), bytes=int(match["bytes"]),
        sha256=match["sha256"])
  if not entries:
    raise ManifestError(
        f"{path}: no '## Files' table with rows | `path` | lines | bytes | sha256 |")
  return entries

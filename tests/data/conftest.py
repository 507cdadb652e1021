"""Fixtures for the data tests: synthetic data folders (the staged data and tfds dir are in tests/conftest.py)."""

from __future__ import annotations

import hashlib
import pathlib
from typing import Callable

import pytest


def _manifest_row(relpath: str, data: bytes, lines: int | None = None) -> str:
  """A Files-table row; `lines` defaults to the true newline count."""
  lines = data.count(b"\n") if lines is None else lines
  return f"| `{relpath}` | {lines} | {len(data)} | {hashlib.sha256(data).hexdigest()} |"


@pytest.fixture
def make_data_dir(tmp_path) -> Callable[..., pathlib.Path]:
  """Writes `files` ({relpath: bytes}) and a MANIFEST.md describing them; returns the folder.

  `lines` overrides the manifest's line count of a file (to provoke a count mismatch).
  """

  def make(files: dict[str, bytes], lines: dict[str, int] | None = None) -> pathlib.Path:
    root = tmp_path / "raw"
    rows = []
    for relpath, data in files.items():
      (root / relpath).parent.mkdir(parents=True, exist_ok=True)
      (root / relpath).write_bytes(data)
      rows.append(_manifest_row(relpath, data, (lines or {}).get(relpath)))
    table = "\n".join(["## Files", "", "| path | lines | bytes | sha256 |", "|---|---:|---:|---|",
                       *rows])
    (root / "MANIFEST.md").write_text(f"# synthetic\n\n{table}\n", encoding="utf-8")
    return root

  return make

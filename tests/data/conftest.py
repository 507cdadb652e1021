"""Fixtures for the data tests: the real staged data, a shared tfds dir, synthetic data folders."""

from __future__ import annotations

import hashlib
import os
import pathlib
from typing import Callable

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def shared_data_dir() -> pathlib.Path:
  """$PE_JAX_DATA_DIR, else <repo>/../shared/data."""
  path = pathlib.Path(os.environ.get("PE_JAX_DATA_DIR") or REPO.parent / "shared" / "data")
  if not (path / "MANIFEST.md").is_file():
    pytest.skip(f"staged data not found at {path} (set PE_JAX_DATA_DIR)")
  return path


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory) -> pathlib.Path:
  """One tfds dir per test session, so each real dataset is prepared once."""
  return tmp_path_factory.mktemp("tfds")


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

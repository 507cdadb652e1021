"""Shared fixtures: the staged data folder and tiny Hugging Face model folders (see tests/fixtures.py)."""

from __future__ import annotations

import os
import pathlib

import pytest

from fixtures import write_tiny_hf_folder

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data_dir() -> pathlib.Path:
  """$PE_JAX_DATA_DIR, else <repo>/../shared/data; skips when the data is not staged."""
  path = pathlib.Path(os.environ.get("PE_JAX_DATA_DIR") or REPO.parent / "shared" / "data")
  if not (path / "MANIFEST.md").is_file():
    pytest.skip(f"staged data not found at {path} (set PE_JAX_DATA_DIR)")
  return path


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory) -> pathlib.Path:
  """One prepared-datasets dir per test session, so each real dataset is prepared once."""
  return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> pathlib.Path:
  """A random 2-layer BERT folder: [PAD]=0, mean pooling, max_seq_length 24."""
  return write_tiny_hf_folder(tmp_path_factory.mktemp("tiny_bert"), "bert")


@pytest.fixture(scope="session")
def tiny_xlmr_dir(tmp_path_factory) -> pathlib.Path:
  """A random 2-layer XLM-R style folder: <pad>=1, positions from 2, one token type, CLS pooling."""
  return write_tiny_hf_folder(tmp_path_factory.mktemp("tiny_xlmr"), "xlmr")

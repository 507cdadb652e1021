"""Shared fixtures: the staged data folder, one prepared-datasets dir and one persistent XLA cache per
session, and tiny Hugging Face model folders (see tests/fixtures.py)."""

from __future__ import annotations

import os
import pathlib

import jax
import pytest

from fixtures import write_tiny_hf_folder

REPO = pathlib.Path(__file__).resolve().parents[1]
TFDS_DIR_ENV = "PE_JAX_TEST_TFDS_DIR"  # the parent session's prepared datasets, for its children
CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"


@pytest.fixture(scope="session")
def shared_data_dir() -> pathlib.Path:
  """$PE_JAX_DATA_DIR, else <repo>/../shared/data; skips when the data is not staged."""
  path = pathlib.Path(os.environ.get("PE_JAX_DATA_DIR") or REPO.parent / "shared" / "data")
  if not (path / "MANIFEST.md").is_file():
    pytest.skip(f"staged data not found at {path} (set PE_JAX_DATA_DIR)")
  return path


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> pathlib.Path:
  """A random 2-layer BERT folder: [PAD]=0, mean pooling, max_seq_length 24."""
  return write_tiny_hf_folder(tmp_path_factory.mktemp("tiny_bert"), "bert")


@pytest.fixture(scope="session")
def tiny_xlmr_dir(tmp_path_factory) -> pathlib.Path:
  """A random 2-layer XLM-R style folder: <pad>=1, positions from 2, one token type, CLS pooling."""
  return write_tiny_hf_folder(tmp_path_factory.mktemp("tiny_xlmr"), "xlmr")


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
  """One persistent XLA cache for the session and its subprocesses (children, the train and embed
  command lines): runs here compile the same few train-step shapes again and again, and compiling
  dominates a tiny model's run time."""
  inherited = os.environ.get(CACHE_ENV)  # the parent session's, in a child
  path = pathlib.Path(inherited) if inherited else tmp_path_factory.mktemp("jax_cache")
  env = {CACHE_ENV: str(path), "PE_JAX_COMPILATION_CACHE": str(path)}  # the latter for pe_jax's CLIs
  settings = {"jax_compilation_cache_dir": str(path), "jax_persistent_cache_min_compile_time_secs": 0,
              "jax_persistent_cache_min_entry_size_bytes": 0}
  saved_env = {k: os.environ.get(k) for k in env}
  saved_settings = {k: getattr(jax.config, k) for k in settings}
  os.environ.update(env)
  for key, value in settings.items():
    jax.config.update(key, value)
  yield path
  for key, value in saved_settings.items():
    jax.config.update(key, value)
  for key, value in saved_env.items():
    if value is None:
      os.environ.pop(key, None)
    else:
      os.environ[key] = value


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory) -> pathlib.Path:
  """One prepared-datasets dir per test session (each real dataset is prepared once), also handed to
  child processes (`cpu_devices` tests) through the environment."""
  if os.environ.get(TFDS_DIR_ENV):
    return pathlib.Path(os.environ[TFDS_DIR_ENV])
  path = tmp_path_factory.mktemp("tfds")
  os.environ[TFDS_DIR_ENV] = str(path)
  return path

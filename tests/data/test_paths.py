import pathlib

import pytest

from pe_jax.data import paths


def test_data_dir_argument_beats_env(tmp_path, monkeypatch):
  explicit, from_env = tmp_path / "a", tmp_path / "b"
  for folder in (explicit, from_env):
    folder.mkdir()
    (folder / paths.MANIFEST_NAME).write_text("## Files\n")
  monkeypatch.setenv(paths.DATA_DIR_ENV, str(from_env))
  assert paths.resolve_data_dir(explicit) == explicit
  assert paths.resolve_data_dir() == from_env


def test_missing_data_dir_says_how_to_set_it(monkeypatch):
  monkeypatch.delenv(paths.DATA_DIR_ENV, raising=False)
  with pytest.raises(FileNotFoundError, match="PE_JAX_DATA_DIR") as err:
    paths.resolve_data_dir()
  assert "download" in str(err.value)


def test_data_dir_must_exist(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    paths.resolve_data_dir(tmp_path / "nope")


def test_a_folder_without_manifest_is_no_data_folder(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"has no MANIFEST.md \(it is empty\)"):
    paths.resolve_data_dir(tmp_path)


def test_tfds_dir_argument_then_env_then_cache(tmp_path, monkeypatch):
  monkeypatch.setenv(paths.TFDS_DIR_ENV, str(tmp_path / "env"))
  assert paths.resolve_tfds_dir(tmp_path / "arg") == tmp_path / "arg"
  assert paths.resolve_tfds_dir() == tmp_path / "env"
  monkeypatch.delenv(paths.TFDS_DIR_ENV)
  assert paths.resolve_tfds_dir() == pathlib.Path.home() / ".cache" / "pe_jax" / "tfds"

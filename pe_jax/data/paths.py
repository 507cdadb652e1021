"""Where the raw data folder and the prepared TFDS datasets live."""

from __future__ import annotations

import os
import pathlib

DATA_DIR_ENV = "PE_JAX_DATA_DIR"
MANIFEST_NAME = "MANIFEST.md"  # what makes a folder a data folder (pe_jax.data.manifest reads it)
TFDS_DIR_ENV = "PE_JAX_TFDS_DIR"
DEFAULT_TFDS_DIR = pathlib.Path("~/.cache/pe_jax/tfds")


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> pathlib.Path:
  """The raw data folder (the one holding MANIFEST.md): argument, else $PE_JAX_DATA_DIR."""
  if data_dir is None:
    data_dir = os.environ.get(DATA_DIR_ENV) or None
  if data_dir is None:
    raise FileNotFoundError(
        f"No raw data folder given: pass data_dir=... or set {DATA_DIR_ENV} to the folder holding "
        "MANIFEST.md (e.g. shared/data). Online, the builders in pe_jax.data.builders can instead "
        "download the files from their pinned GitHub commits: see pe_jax.data.load.prepare(..., "
        "download=True).")
  path = pathlib.Path(data_dir).expanduser()
  if not path.is_dir():
    raise FileNotFoundError(f"Raw data folder {path} does not exist or is not a directory")
  if not (path / MANIFEST_NAME).is_file():
    # tfds would take an empty folder for no folder at all, and try to download instead.
    raise FileNotFoundError(f"Raw data folder {path} has no {MANIFEST_NAME}"
                            f"{' (it is empty)' if not any(path.iterdir()) else ''}: give the staged data folder, "
                            f"which holds {MANIFEST_NAME} and one folder per dataset")
  return path


def resolve_tfds_dir(tfds_dir: str | os.PathLike | None = None) -> pathlib.Path:
  """Where prepared TFDS datasets go: argument, else $PE_JAX_TFDS_DIR, else ~/.cache/pe_jax/tfds."""
  if tfds_dir is None:
    tfds_dir = os.environ.get(TFDS_DIR_ENV) or DEFAULT_TFDS_DIR
  return pathlib.Path(tfds_dir).expanduser()

"""A tiny trained workdir for the export tests: the smoke recipe (random 2-layer model, MiniLM tokenizer,
three real tasks) cut to 4 steps, evaluated at steps 2 and 4 so --best and the model card have metrics."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

from pe_jax.training.train import train_and_evaluate

REPO = pathlib.Path(__file__).resolve().parents[2]


def smoke_config(data_dir: pathlib.Path, tfds_dir: pathlib.Path):
  spec = importlib.util.spec_from_file_location("multitask_config", REPO / "configs" / "multitask.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("smoke")
  config.update({"data_dir": str(data_dir), "tfds_dir": str(tfds_dir), "total_steps": 4, "eval_every": 2,
                 "checkpoint_every": 2, "keep_checkpoints": 3})
  config.model.encoder.max_seq_length = 16
  config.eval.num_triplets = 20
  return config


@pytest.fixture(scope="session")
def trained_workdir(shared_data_dir, tfds_dir, tmp_path_factory) -> pathlib.Path:
  """Do not modify it: every test of the session reads the same run."""
  workdir = tmp_path_factory.mktemp("export_smoke") / "workdir"
  train_and_evaluate(smoke_config(shared_data_dir, tfds_dir), workdir)
  return workdir

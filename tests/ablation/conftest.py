"""The smoke ablation config (tiny random model, three real tasks) on the session's data folders."""

from __future__ import annotations

from typing import Callable

import ml_collections
import pytest

from configs.ablation import smoke


@pytest.fixture(scope="session")
def ablation_config(shared_data_dir, tfds_dir) -> Callable[..., ml_collections.ConfigDict]:
  """`make(**ablation_changes)`: a fresh configs/ablation/smoke.py reading the staged data."""

  def make(**changes) -> ml_collections.ConfigDict:
    config = smoke.get_config()
    config.data_dir = str(shared_data_dir)
    config.tfds_dir = str(tfds_dir)
    config.ablation.update(changes)
    return config

  return make

"""configs/presets.py: every preset is the multi-task recipe with its machine's mesh, precision and batch."""

import math

import pytest

from configs import multitask, presets


@pytest.mark.parametrize("name", list(presets.PRESETS))
def test_preset_is_the_recipe_on_its_machine(name):
  preset = presets.PRESETS[name]
  config = presets.get_config(name)
  reference = multitask.get_config()
  assert math.prod(config.mesh.to_dict().values()) == preset.devices
  assert preset.devices % preset.hosts == 0
  assert config.model.encoder.dtype == "bfloat16"
  assert config.batch_size == preset.batch_size
  # Only the machine changes: tasks, model, optimizer and schedule are the recipe's.
  assert config.tasks == reference.tasks and config.mixture == reference.mixture
  assert config.model.base == reference.model.base and config.optimizer == reference.optimizer
  assert config.total_steps == reference.total_steps


def test_multi_device_presets_train_the_same_global_batch():
  sizes = {n: p.batch_size * p.mesh["data"] * p.mesh["fsdp"] for n, p in presets.PRESETS.items() if p.devices > 1}
  assert set(sizes.values()) == {512}, sizes


def test_multilingual_base_and_errors():
  assert presets.get_config("gpu8,multilingual").model.base == "multilingual-e5-small"
  with pytest.raises(ValueError, match=r"unknown preset 'h100'; known: gpu1, gpu8"):
    presets.get_config("h100")
  with pytest.raises(ValueError, match=r"unknown base 'french'"):
    presets.get_config("gpu1,french")

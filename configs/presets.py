r"""Accelerator presets: the multi-task recipe with a mesh, precision and batch size per machine.

  python -m pe_jax.train --config configs/presets.py:gpu8 --workdir workdirs/gpu8
  python -m pe_jax.train --config configs/presets.py:tpu_v5e_16,multilingual --workdir ... --distributed_auto

The argument is a preset name, optionally followed by ",multilingual" for configs/multilingual.py's
tasks and model instead of configs/multitask.py's. Both models are small (22M and 118M parameters),
so every preset is pure data parallelism: each chip holds the whole model and one task's block of
pairs per step (the paper's per-device task scheme). Every multi-device preset trains 512 pairs per
step, so their runs compare. Run from the repository root.
"""

import dataclasses

import ml_collections

from configs import multilingual, multitask


@dataclasses.dataclass(frozen=True)
class Preset:
  devices: int  # accelerators in the job (GPUs, TPU chips), all hosts together
  hosts: int  # processes to start, one per host
  mesh: dict
  batch_size: int  # pairs per data-parallel shard per step
  dtype: str = "bfloat16"  # compute; weights and optimizer state stay float32
  description: str = ""


PRESETS = {
    "gpu1": Preset(1, 1, dict(data=1, fsdp=1, tensor=1), 512, description="one H100/H200/A100"),
    "gpu8": Preset(8, 1, dict(data=8, fsdp=1, tensor=1), 64, description="one 8-GPU host"),
    "tpu_v4_8": Preset(4, 1, dict(data=4, fsdp=1, tensor=1), 128, description="TPU v4-8: 4 chips, 1 host"),
    "tpu_v4_32": Preset(16, 4, dict(data=16, fsdp=1, tensor=1), 32, description="TPU v4-32: 16 chips, 4 hosts"),
    "tpu_v5e_8": Preset(8, 1, dict(data=8, fsdp=1, tensor=1), 64, description="TPU v5e-8: 8 chips, 1 host"),
    "tpu_v5e_16": Preset(16, 4, dict(data=16, fsdp=1, tensor=1), 32, description="TPU v5e-16: 16 chips, 4 hosts"),
}
BASES = {"multitask": multitask.get_config, "multilingual": multilingual.get_config}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`arg`: "<preset>" or "<preset>,multilingual"; presets: gpu1, gpu8, tpu_v4_8, tpu_v4_32, tpu_v5e_8, tpu_v5e_16."""
  name, _, base = (arg or "").partition(",")
  if name not in PRESETS:
    raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
  if (base or "multitask") not in BASES:
    raise ValueError(f"unknown base {base!r} after the preset; known: {', '.join(BASES)}")
  preset = PRESETS[name]
  c = BASES[base or "multitask"]()
  c.mesh.update(preset.mesh)
  c.batch_size = preset.batch_size
  c.model.encoder.dtype = preset.dtype
  return c

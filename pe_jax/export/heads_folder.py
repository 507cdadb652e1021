"""The task heads in a folder of their own: nothing reads them to embed, but they are the trained model too.

  task_heads/config.json        each head's options (as in model.json) and its learned scale and bias
  task_heads/model.safetensors  every head parameter under its pe_jax path, pe_jax layout (kernels [in, out])

All parameters are written whatever their kind, so a new head feature cannot be dropped on the way out.
"""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np
from safetensors.numpy import save_file

from pe_jax.models import weights
from pe_jax.models.heads import TaskHeads

HEADS_DIR = "task_heads"


def head_tensors(heads: TaskHeads) -> dict[str, np.ndarray]:
  return weights.param_arrays(heads)


def write_heads(folder: pathlib.Path, heads: TaskHeads, head_specs: list) -> None:
  out = folder / HEADS_DIR
  out.mkdir(parents=True, exist_ok=True)
  tensors = head_tensors(heads)
  save_file(tensors, str(out / "model.safetensors"))
  described = []
  for name, options in head_specs:
    head = heads[name]
    described.append({
        "name": name, "options": dict(options),
        "scale": min(math.exp(float(tensors[f"{name}.log_scale"])), head.max_scale),
        "bias": float(tensors[f"{name}.bias"]),
        "projection_shape": list(tensors[f"{name}.projection.kernel"].shape) if head.projection is not None else None,
    })
  (out / "config.json").write_text(json.dumps({
      "heads": described,
      "formula": "pair logit = min(exp(log_scale), max_scale) * cos(head(a), head(b)) + bias; "
                 "head(x) = x, or normalize(x @ projection.kernel) with a projection",
      "tensors": sorted(tensors),
  }, indent=2) + "\n")

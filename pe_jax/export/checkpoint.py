"""The trained model an export starts from: one checkpoint of a workdir, with the heads and the run's record.

Errors name the path and what is wrong with it, since an export is often run long after training,
on a copied or half-synced workdir.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import orbax.checkpoint as ocp
import tokenizers
from flax import nnx

from pe_jax import sharding as sharding_lib
from pe_jax.models.encoder import Encoder
from pe_jax.models.heads import TaskHeads
from pe_jax.models import trained


class CheckpointError(ValueError):
  """A workdir or checkpoint that cannot be exported: missing, incomplete or corrupt."""


@dataclasses.dataclass
class ExportSource:
  """What every format writes from. `heads`, `workdir`, `step` and `run_config` are absent for a bare encoder."""

  encoder: Encoder
  tokenizer: tokenizers.Tokenizer
  prefix: str = ""
  heads: TaskHeads | None = None
  head_specs: list = dataclasses.field(default_factory=list)
  workdir: pathlib.Path | None = None
  step: int | None = None
  run_config: dict[str, Any] = dataclasses.field(default_factory=dict)


def _read_json(path: pathlib.Path) -> dict[str, Any]:
  try:
    return json.loads(path.read_text())
  except FileNotFoundError:
    raise CheckpointError(f"{path} is missing: not a complete training workdir") from None
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{path} is corrupt: invalid JSON at line {e.lineno}: {e.msg}") from None


def _choose_step(manager: ocp.CheckpointManager, checkpoints: pathlib.Path, step: int | None, best: bool,
                 best_metric: str | None) -> int:
  steps = list(manager.all_steps())
  if not steps:
    raise CheckpointError(f"{checkpoints}: no checkpoint in it")
  if best:
    if not best_metric:
      raise CheckpointError(f"{checkpoints.parent / trained.CONFIG_FILE}: no best_metric, so --best has no meaning")
    chosen = trained.best_step(manager, best_metric)
    if chosen is None:
      raise CheckpointError(f"{checkpoints}: no checkpoint carries the metric {best_metric!r} (have steps {steps})")
    return chosen
  if step is None:
    return manager.latest_step()
  if step not in steps:
    raise CheckpointError(f"{checkpoints}: no checkpoint at step {step}; have steps {steps}")
  return step


def load_checkpoint(workdir: str | pathlib.Path, *, step: int | None = None, best: bool = False) -> ExportSource:
  """The full trained model (encoder and task heads) of the latest, `step`'s or the best checkpoint."""
  if step is not None and best:
    raise ValueError("give --step or --best, not both")
  workdir = pathlib.Path(workdir)
  if not workdir.is_dir():
    raise CheckpointError(f"{workdir}: no such directory")
  _read_json(workdir / trained.MODEL_FILE)  # a missing or garbled file, named, before it is parsed
  run_config = _read_json(workdir / trained.CONFIG_FILE)
  try:
    encoder_config, head_specs, prefix = trained.read_model_description(workdir)
  except (KeyError, TypeError, ValueError) as e:
    raise CheckpointError(f"{workdir / trained.MODEL_FILE}: not a model description: {e}") from e
  tokenizer_path = workdir / trained.TOKENIZER_FILE
  try:
    tokenizer = tokenizers.Tokenizer.from_file(str(tokenizer_path))
  except Exception as e:  # noqa: BLE001 - tokenizers raises a bare Exception for both missing and corrupt files
    raise CheckpointError(f"{tokenizer_path}: cannot read the tokenizer: {e}") from e

  checkpoints = workdir / trained.CHECKPOINTS
  if not checkpoints.is_dir():
    raise CheckpointError(f"{checkpoints}: no checkpoints directory; the run has saved no checkpoint yet")
  mesh = sharding_lib.single_device_mesh()
  graphdef, target = trained.abstract_model(encoder_config, head_specs, mesh)
  manager = ocp.CheckpointManager(checkpoints.absolute(), item_names=("params", "train"),
                                  options=ocp.CheckpointManagerOptions(create=False))
  try:
    chosen = _choose_step(manager, checkpoints, step, best, run_config.get("best_metric"))
    try:
      restored = manager.restore(chosen, args=ocp.args.Composite(params=ocp.args.StandardRestore(target)))
    except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise many types for a damaged checkpoint
      raise CheckpointError(f"{checkpoints / str(chosen)}: cannot restore the parameters "
                            f"({type(e).__name__}: {str(e)[:500]})") from e
  finally:
    manager.close()
  model = nnx.merge(graphdef, restored["params"])
  return ExportSource(encoder=model.encoder, tokenizer=tokenizer, prefix=prefix, heads=model.heads,
                      head_specs=head_specs, workdir=workdir, step=chosen, run_config=run_config)

"""A training workdir as the trainer writes it: its config, a self-contained model description, and Orbax checkpoints.

  WORKDIR/config.json        the run's config; a rerun with a different one is refused
  WORKDIR/model.json         encoder config, task heads, text prefix: enough to rebuild the model
  WORKDIR/tokenizer.json     the tokenizer, so embedding needs nothing but this folder
  WORKDIR/checkpoints/<step> Orbax: "params" (encoder + heads) and "train" (step, optimizer state)
  WORKDIR/metrics.jsonl, WORKDIR/tensorboard/, WORKDIR/log.txt (the command line's library log)

Reading a trained model back is `pe_jax.models.trained` (re-exported here), below the trainer.
"""

from __future__ import annotations

import json
import logging
import pathlib
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
import tokenizers
from orbax.checkpoint import checkpoint_managers as ocm

from pe_jax.models.encoder import EncoderConfig
from pe_jax.models.trained import (CHECKPOINTS, CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE,  # noqa: F401 - re-exported
                                   abstract_model, best_step, is_workdir, load_trained_model, read_model_description)

# Settings that may change between a run and its resumption without changing what it computes
# up to the restored step. total_steps reshapes the learning-rate decay from then on; a mesh with
# another data-parallel size draws another task schedule from then on.
RESUMABLE_CHANGES = ("total_steps", "log_every", "checkpoint_every", "eval_every", "keep_checkpoints",
                     "data_dir", "tfds_dir", "eval.", "mesh.")


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
  """{"a.b.c": leaf} of a nested dict."""
  if isinstance(d, dict):
    out = {}
    for k, v in d.items():
      out.update(flatten(v, f"{prefix}{k}."))
    return out
  return {prefix[:-1]: d}


def config_to_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return json.loads(config.to_json_best_effort())


def check_config(workdir: pathlib.Path, config: ml_collections.ConfigDict, *, file: str = CONFIG_FILE,
                 resumable: tuple[str, ...] = RESUMABLE_CHANGES) -> None:
  """Refuses a workdir whose config differs from `config` in substance (any key but those starting with
  one of `resumable`); a fresh workdir passes. Writes nothing."""
  path = workdir / file
  if not path.exists():
    return
  a, b = flatten(json.loads(path.read_text())), flatten(config_to_dict(config))
  differs = sorted(k for k in set(a) | set(b)
                   if a.get(k, "<absent>") != b.get(k, "<absent>") and not k.startswith(resumable))
  if differs:
    # One line, as the command lines print it: every differing key, then what to do.
    keys = "; ".join(f"{k}: workdir has {a.get(k, '<absent>')!r}, this run has {b.get(k, '<absent>')!r}"
                     for k in differs)
    raise ValueError(f"{workdir} holds a run with a different config ({keys}); use a new --workdir or the same "
                     "config")


def write_config(workdir: pathlib.Path, config: ml_collections.ConfigDict, *, file: str = CONFIG_FILE) -> None:
  """Creates the workdir with its config (process 0): the moment a run starts to exist on disk."""
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
    # Whole or not at all: the other processes of a job read this file while process 0 writes it.
    path = workdir / file
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(config_to_dict(config), indent=2))
    partial.replace(path)


def check_or_write_config(workdir: pathlib.Path, config: ml_collections.ConfigDict, *,
                          file: str = CONFIG_FILE, resumable: tuple[str, ...] = RESUMABLE_CHANGES) -> None:
  """`check_config`, then `write_config`."""
  check_config(workdir, config, file=file, resumable=resumable)
  write_config(workdir, config, file=file)


def write_model_description(workdir: pathlib.Path, encoder_config: EncoderConfig, head_specs, prefix: str,
                            tokenizer: tokenizers.Tokenizer) -> None:
  if jax.process_index() != 0:
    return
  (workdir / MODEL_FILE).write_text(json.dumps(
      {"encoder": encoder_config.to_dict(), "heads": [[n, dict(o)] for n, o in head_specs], "prefix": prefix},
      indent=2))
  (workdir / TOKENIZER_FILE).write_text(tokenizer.to_str())


def _not_untracked_save(record: logging.LogRecord) -> bool:
  # Saves between evaluations carry no metrics by design (BestN ranks only the evaluated ones); orbax warns
  # at every such save, and nobody can act on it.
  return "Requested `tracked_metric`" not in record.getMessage()


def checkpoint_manager(workdir: pathlib.Path, *, keep: int, best_metric: str | None) -> ocp.CheckpointManager:
  """Keeps the latest `keep` checkpoints and, by `best_metric` (higher is better), the best one."""
  logging.getLogger("absl").addFilter(_not_untracked_save)  # orbax logs through absl; adding twice adds once
  policies = [ocm.LatestN(n=keep)]
  if best_metric:
    policies.append(ocm.BestN(get_metric_fn=lambda m: m[best_metric], n=1, keep_checkpoints_without_metrics=False))
  options = ocp.CheckpointManagerOptions(
      preservation_policy=ocm.AnyPreservationPolicy(policies), create=True, enable_async_checkpointing=True,
      best_fn=(lambda m: m[best_metric]) if best_metric else None)  # without best_fn orbax writes no metrics
  return ocp.CheckpointManager((workdir / CHECKPOINTS).absolute(), options=options, item_names=("params", "train"))


def abstract_like(tree: Any) -> Any:
  """Shape, dtype and sharding of each leaf: the restore target that places a checkpoint on this mesh."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)

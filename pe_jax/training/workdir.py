"""A training workdir: its config, a self-contained model description, and Orbax checkpoints.

  WORKDIR/config.json        the run's config; a rerun with a different one is refused
  WORKDIR/model.json         encoder config, task heads, text prefix: enough to rebuild the model
  WORKDIR/tokenizer.json     the tokenizer, so embedding needs nothing but this folder
  WORKDIR/checkpoints/<step> Orbax: "params" (encoder + heads) and "train" (step, optimizer state)
  WORKDIR/metrics.jsonl, WORKDIR/tensorboard/
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
import tokenizers
from flax import nnx
from orbax.checkpoint import checkpoint_managers as ocm

from pe_jax import sharding as sharding_lib
from pe_jax.models.encoder import Encoder, EncoderConfig
from pe_jax.models.post_model import PostEmbeddingModel
from pe_jax.tokenization import TextTokenizer

CONFIG_FILE = "config.json"
MODEL_FILE = "model.json"
TOKENIZER_FILE = "tokenizer.json"
CHECKPOINTS = "checkpoints"

# Settings that may change between a run and its resumption without changing what it computes
# up to the restored step. total_steps reshapes the learning-rate decay from then on; a mesh with
# another data-parallel size draws another task schedule from then on.
RESUMABLE_CHANGES = ("total_steps", "log_every", "checkpoint_every", "eval_every", "keep_checkpoints",
                     "data_dir", "tfds_dir", "eval.", "mesh.")


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(d, dict):
    out = {}
    for k, v in d.items():
      out.update(_flatten(v, f"{prefix}{k}."))
    return out
  return {prefix[:-1]: d}


def config_to_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return json.loads(config.to_json_best_effort())


def check_or_write_config(workdir: pathlib.Path, config: ml_collections.ConfigDict, *,
                          file: str = CONFIG_FILE, resumable: tuple[str, ...] = RESUMABLE_CHANGES) -> None:
  """Writes the config on a fresh workdir; on an existing one, refuses one that differs in substance
  (any key but those starting with one of `resumable`)."""
  path = workdir / file
  new = config_to_dict(config)
  if path.exists():
    old = json.loads(path.read_text())
    a, b = _flatten(old), _flatten(new)
    differs = sorted(k for k in set(a) | set(b)
                     if a.get(k, "<absent>") != b.get(k, "<absent>") and not k.startswith(resumable))
    if differs:
      lines = [f"  {k}: workdir has {a.get(k, '<absent>')!r}, this run has {b.get(k, '<absent>')!r}" for k in differs]
      raise ValueError(f"{workdir} holds a run with a different config; use a new --workdir or the same config.\n"
                       + "\n".join(lines))
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
    # Whole or not at all: the other processes of a job read this file while process 0 writes it.
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(new, indent=2))
    partial.replace(path)


def write_model_description(workdir: pathlib.Path, encoder_config: EncoderConfig, head_specs, prefix: str,
                            tokenizer: tokenizers.Tokenizer) -> None:
  if jax.process_index() != 0:
    return
  (workdir / MODEL_FILE).write_text(json.dumps(
      {"encoder": encoder_config.to_dict(), "heads": [[n, dict(o)] for n, o in head_specs], "prefix": prefix},
      indent=2))
  (workdir / TOKENIZER_FILE).write_text(tokenizer.to_str())


def checkpoint_manager(workdir: pathlib.Path, *, keep: int, best_metric: str | None) -> ocp.CheckpointManager:
  """Keeps the latest `keep` checkpoints and, by `best_metric` (higher is better), the best one."""
  policies = [ocm.LatestN(n=keep)]
  if best_metric:
    policies.append(ocm.BestN(get_metric_fn=lambda m: m[best_metric], n=1, keep_checkpoints_without_metrics=False))
  options = ocp.CheckpointManagerOptions(
      preservation_policy=ocm.AnyPreservationPolicy(policies), create=True, enable_async_checkpointing=True,
      best_fn=(lambda m: m[best_metric]) if best_metric else None)  # without best_fn orbax writes no metrics
  return ocp.CheckpointManager((workdir / CHECKPOINTS).absolute(), options=options, item_names=("params", "train"))


def best_step(manager: ocp.CheckpointManager, metric: str) -> int | None:
  scored = [(m[metric], s) for s in manager.all_steps() if (m := manager.metrics(s)) and metric in m]
  return max(scored)[1] if scored else None


def abstract_like(tree: Any) -> Any:
  """Shape, dtype and sharding of each leaf: the restore target that places a checkpoint on this mesh."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def is_workdir(spec: str) -> bool:
  path = pathlib.Path(spec)
  return (path / MODEL_FILE).is_file()  # without checkpoints: load_trained_model says so


def read_model_description(workdir: pathlib.Path) -> tuple[EncoderConfig, list, str]:
  desc = json.loads((workdir / MODEL_FILE).read_text())
  return EncoderConfig.from_dict(desc["encoder"]), [(n, o) for n, o in desc["heads"]], desc.get("prefix", "")


def abstract_model(encoder_config: EncoderConfig, head_specs, mesh: jax.sharding.Mesh):
  """(graphdef, abstract params with this mesh's shardings) of a PostEmbeddingModel, nothing allocated."""
  with sharding_lib.activate(mesh):
    model = nnx.eval_shape(lambda: PostEmbeddingModel(
        Encoder(encoder_config, rngs=nnx.Rngs(0)), head_specs, rngs=nnx.Rngs(0)))
    graphdef, params = nnx.split(model)
    shardings = nnx.get_named_sharding(params, mesh)
  target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), params, shardings)
  return graphdef, target


def load_trained_model(spec: str, *, mesh: jax.sharding.Mesh | None = None, step: int | None = None, best: bool = False,
                       best_metric: str | None = None, **overrides):
  """(encoder, tokenizer, prefix) from a workdir's latest (or `step`, or best) checkpoint."""
  workdir = pathlib.Path(spec)
  mesh = mesh or sharding_lib.single_device_mesh()
  encoder_config, head_specs, prefix = read_model_description(workdir)
  if overrides:
    encoder_config = encoder_config.replace(**{k: v for k, v in overrides.items() if k in ("dtype",)})
  graphdef, target = abstract_model(encoder_config, head_specs, mesh)
  manager = ocp.CheckpointManager((workdir / CHECKPOINTS).absolute(), item_names=("params", "train"),
                                 options=ocp.CheckpointManagerOptions(create=False))  # reading never creates
  try:
    if best:
      metric = best_metric or json.loads((workdir / CONFIG_FILE).read_text()).get("best_metric")
      step = best_step(manager, metric) if metric else None
      if step is None:
        raise FileNotFoundError(f"{workdir}: no checkpoint carries the metric {metric!r}")
    step = step if step is not None else manager.latest_step()
    if step is None or step not in manager.all_steps():
      raise FileNotFoundError(f"{workdir / CHECKPOINTS}: no checkpoint {'found' if step is None else 'at step ' + str(step)}; "
                              f"have {manager.all_steps()}")
    restored = manager.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target)))
  finally:
    manager.close()  # its background threads would otherwise outlive every load
  model = nnx.merge(graphdef, restored["params"])
  tokenizer = TextTokenizer(tokenizers.Tokenizer.from_file(str(workdir / TOKENIZER_FILE)),
                            max_length=encoder_config.max_seq_length, pad_id=encoder_config.pad_token_id)
  return model.encoder, tokenizer, prefix

"""A trained model as a training workdir holds it, read back for serving, evaluation and export.

  WORKDIR/model.json         encoder config, task heads, text prefix: enough to rebuild the model
  WORKDIR/tokenizer.json     the tokenizer, so embedding needs nothing but this folder
  WORKDIR/config.json        the run's config (best_metric, for --best)
  WORKDIR/checkpoints/<step> Orbax: "params" (encoder + heads) and "train" (step, optimizer state)

The trainer writes these files (`pe_jax.training.workdir`); reading them lives here, with the models,
so that loading a model never imports the trainer.
"""

from __future__ import annotations

import json
import pathlib

import jax
import orbax.checkpoint as ocp
import tokenizers
from flax import nnx

from pe_jax import sharding as sharding_lib
from pe_jax.models.encoder import Encoder, EncoderConfig
from pe_jax.models.post_model import PostEmbeddingModel
from pe_jax.tokenization import TextTokenizer

CONFIG_FILE = "config.json"
MODEL_FILE = "model.json"
TOKENIZER_FILE = "tokenizer.json"
CHECKPOINTS = "checkpoints"


def is_workdir(spec: str | pathlib.Path) -> bool:
  """A training workdir, finished or not: `load_trained_model` names what it lacks."""
  path = pathlib.Path(spec)
  return (path / MODEL_FILE).is_file() or (path / CHECKPOINTS).is_dir()


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


def best_step(manager: ocp.CheckpointManager, metric: str) -> int | None:
  scored = [(m[metric], s) for s in manager.all_steps() if (m := manager.metrics(s)) and metric in m]
  return max(scored)[1] if scored else None


def load_trained_model(spec: str | pathlib.Path, *, mesh: jax.sharding.Mesh | None = None, step: int | None = None,
                       best: bool = False, best_metric: str | None = None, **overrides):
  """(encoder, tokenizer, prefix) from a workdir's latest (or `step`, or best) checkpoint."""
  workdir = pathlib.Path(spec)
  if not (workdir / MODEL_FILE).is_file():
    raise FileNotFoundError(f"{workdir}: a training workdir without {MODEL_FILE}: its run stopped before the model "
                            "was built; rerun the training command to finish it")
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
    if step is None and manager.latest_step() is None:
      raise FileNotFoundError(f"{workdir / CHECKPOINTS}: no checkpoint found; the run has saved none yet "
                              "(rerun the training command: it saves every checkpoint_every steps)")
    step = step if step is not None else manager.latest_step()
    if step not in manager.all_steps():
      raise FileNotFoundError(f"{workdir / CHECKPOINTS}: no checkpoint at step {step}; have {manager.all_steps()}")
    restored = manager.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target)))
  finally:
    manager.close()  # its background threads would otherwise outlive every load
  model = nnx.merge(graphdef, restored["params"])
  tokenizer = TextTokenizer(tokenizers.Tokenizer.from_file(str(workdir / TOKENIZER_FILE)),
                            max_length=encoder_config.max_seq_length, pad_id=encoder_config.pad_token_id)
  return model.encoder, tokenizer, prefix

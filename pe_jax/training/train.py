"""`train_and_evaluate(config, workdir)`: multi-task post-embedding training, resumable and sharded.

The sections run in a deliberate order: workdir and config first (a wrong config must fail before
anything heavy), then the mesh, the data, the model created already sharded, the optimizer and the
jitted step, the checkpoint restore, the evaluators, and the loop.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from flax import nnx
from jax.experimental import multihost_utils

from pe_jax import sharding as sharding_lib
from pe_jax.data import load as data_load
from pe_jax.data.examples import LabeledTexts, RetrievalSet, TextPairs
from pe_jax.evaluation import suite as suite_lib
from pe_jax.models import pretrained, weights
from pe_jax.models.post_model import PostEmbeddingModel
from pe_jax.serving.embedder import Embedder
from pe_jax.tasks import mixture
from pe_jax.suggest import did_you_mean
from pe_jax.tasks.pairs import LabelingPairs, PairTask, QueryPosts, ScoredPairs, TranslationPairs
from pe_jax.tokenization import TextTokenizer
from pe_jax.training import batches as batches_lib
from pe_jax.training import flops as flops_lib
from pe_jax.training import optimizer as optimizer_lib
from pe_jax.training import warm_start
from pe_jax.training import workdir as workdir_lib
from pe_jax.training.metrics_writer import MetricsWriter
from pe_jax.training.step import TaskLoss, make_train_step

# Losses that read a row's third text through its labels (a translation task's is a positive).
TRANSLATION_LOSSES = ("supcon", "contrastive")


def build_tasks(config: ml_collections.ConfigDict) -> dict[str, PairTask]:
  """The training tasks with a non-zero weight, each turned into pairs by its data's shape."""
  tasks = {}
  for name, spec in config.tasks.items():
    if spec.weight == 0:
      continue
    if spec.get("languages"):
      tasks[name] = _translation_task(config, name, spec)
      continue
    try:
      data = data_load.load_split(spec.dataset, spec.split, data_dir=config.data_dir, tfds_dir=config.tfds_dir)
    except (ValueError, KeyError, FileNotFoundError) as e:
      raise ValueError(f"task {name!r}: cannot load {spec.dataset}:{spec.split}: {e}") from e
    data = dataclasses.replace(data, name=name)  # errors and batches then speak of the task
    try:
      if isinstance(data, LabeledTexts):
        labels_per_block = spec.get("labels_per_block", 0)
        if labels_per_block and config.batch_size < labels_per_block:
          raise ValueError(
              f"tasks.{name}.labels_per_block={labels_per_block} needs config.batch_size >= it: a block of "
              f"{2 * config.batch_size} anchors and positives is smaller than twice the {labels_per_block} "
              f"labels drawn, so some label would have no positive; lower labels_per_block or raise batch_size")
        tasks[name] = LabelingPairs(data, labels_per_block=labels_per_block)
      elif isinstance(data, TextPairs):
        tasks[name] = ScoredPairs(data, spec.get("positive_threshold"))
      elif isinstance(data, RetrievalSet):
        tasks[name] = QueryPosts(data, negatives=spec.get("negatives", "random"))
    except ValueError as e:
      raise ValueError(f"task {name!r} ({spec.dataset}:{spec.split}): {e}") from e
  if not tasks:
    raise ValueError("every task has weight 0: nothing to train")
  return tasks


def check_translation_tasks(config: ml_collections.ConfigDict) -> None:
  """Refuses a translation task (`languages` set) whose languages, pivot or loss cannot work, naming
  the key, before any file is read."""
  for name, spec in config.tasks.items():
    if spec.get("languages"):
      _check_translation_task(name, spec)


def _check_translation_task(name: str, spec: ml_collections.ConfigDict) -> None:
  key = f"config.tasks.{name}"
  try:
    known = data_load.translation_languages(spec.dataset)
  except ValueError as e:
    raise ValueError(f"{key}.dataset: {e}") from e
  languages = tuple(spec.languages)
  for field, wanted in (("pivot", (spec.pivot,)), ("languages", languages)):
    for lang in wanted:
      if lang not in known:
        raise ValueError(f"{key}.{field}: {spec.dataset} has no file in language {lang!r}"
                         f"{did_you_mean(lang, known)}; its languages: {', '.join(known)}")
  if spec.pivot in languages or len(set(languages)) != len(languages):
    raise ValueError(f"{key}.languages={languages}: name each language once, and not the pivot {spec.pivot!r}")
  if spec.loss not in TRANSLATION_LOSSES:
    raise ValueError(f"{key}.loss={spec.loss!r}: a translation task trains with {' or '.join(TRANSLATION_LOSSES)} "
                     f"(its third text is another translation, not a negative)")


def _translation_task(config: ml_collections.ConfigDict, name: str,
                      spec: ml_collections.ConfigDict) -> TranslationPairs:
  """A task of row-aligned translations (`spec.languages` set)."""
  _check_translation_task(name, spec)
  languages = tuple(spec.languages)
  try:
    data = data_load.load_parallel(spec.dataset, spec.split, languages, pivot=spec.pivot,
                                   data_dir=config.data_dir, tfds_dir=config.tfds_dir)
    return TranslationPairs(dataclasses.replace(data, name=name))
  except (ValueError, KeyError, FileNotFoundError) as e:
    raise ValueError(f"task {name!r}: {e}") from e


def build_model(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, head_specs):
  """(model, tokenizer, source) with the encoder pretrained or freshly initialised, already sharded."""
  source = pretrained.resolve(config.model.base, **config.model.encoder.to_dict())
  if config.model.random_init:
    encoder = weights.random_encoder(source.config, mesh=mesh, seed=config.seed)
  else:
    encoder = weights.load_encoder(source.config, source.tensors, mesh=mesh, source=source.description,
                                   seed=config.seed)
  with sharding_lib.activate(mesh):
    model = PostEmbeddingModel(encoder, head_specs, rngs=nnx.Rngs(config.seed))
  tokenizer = TextTokenizer(source.tokenizer, max_length=source.config.max_seq_length,
                            pad_id=source.config.pad_token_id)
  return model, tokenizer, source


def _on_mesh(tree: Any, mesh: jax.sharding.Mesh) -> Any:
  """Leaves not laid out on the mesh (optimizer counters) become replicated on it."""
  def place(x):
    s = getattr(x, "sharding", None)
    if isinstance(s, jax.sharding.NamedSharding) and s.mesh == mesh:
      return x
    return jax.device_put(x, sharding_lib.replicated(mesh))
  return jax.tree.map(place, tree)


def _save_args(state: dict[str, Any]) -> ocp.args.Composite:
  return ocp.args.Composite(
      params=ocp.args.StandardSave(state["params"]),
      train=ocp.args.StandardSave({"step": state["step"], "opt_state": state["opt_state"]}))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict[str, float]:
  """Trains until `config.total_steps`, resuming from `workdir` if it holds a run; returns the last eval."""
  workdir = pathlib.Path(workdir)

  # --- Workdir and config: refuse an incompatible run before any heavy work ------------------------
  warm_start.check_config(config)
  check_translation_tasks(config)
  workdir_lib.check_config(workdir, config)  # written once the data and model load: no half workdir
  suite_lib.check_no_leak(config)

  # --- Mesh ----------------------------------------------------------------------------------------
  mesh = sharding_lib.make_mesh(config.mesh.to_dict())
  logging.info("mesh %s over %d devices in %d processes (this is process %d)", dict(mesh.shape), mesh.size,
               jax.process_count(), jax.process_index())

  # --- Data: tasks and their mixture ---------------------------------------------------------------
  _prepare_datasets_once(config)
  tasks = build_tasks(config)
  warm_start.check_distill_pairs(
      config, batches_lib.num_blocks(config, len(tasks), sharding_lib.data_parallel_size(mesh)))
  weights_by_task = mixture.config_weights(config, batches_lib.task_sizes(tasks))
  logging.info("mixture: %s", {k: round(v, 4) for k, v in weights_by_task.items()})

  # --- Model, created already sharded --------------------------------------------------------------
  head_specs = [(name, dict(config.tasks[name].head)) for name in mixture.task_order(weights_by_task)]
  model, tokenizer, source = build_model(config, mesh, head_specs)
  warm_start.check_teacher(config, model.encoder.cfg)
  frozen_layers = optimizer_lib.check_frozen_layers(config, model.encoder.cfg.num_layers)
  workdir_lib.write_config(workdir, config)
  workdir_lib.write_model_description(workdir, model.encoder.cfg, head_specs, source.prefix, source.tokenizer)
  builder = batches_lib.BatchBuilder(
      tasks, weights_by_task, tokenizer, mesh=mesh, batch_size_per_shard=config.batch_size, seed=config.seed,
      per_shard_tasks=config.mixture.per_shard, tasks_per_step=config.mixture.get("tasks_per_step", 1),
      prefix=source.prefix)
  logging.info("%d task blocks of %d pairs per step (%d per shard)", builder.num_blocks, config.batch_size,
               builder.blocks_per_shard)

  # --- Warm start: the projection from PCA, head biases from data, the frozen teacher ---------------
  # Evaluation embeds with the same mesh and batch as the suite (below); built here to fit the start.
  eval_mesh = mesh if jax.process_count() == 1 else sharding_lib.make_mesh({"data": -1}, jax.local_devices())
  make_embedder = lambda encoder: Embedder(encoder, tokenizer, prefix=source.prefix, mesh=eval_mesh)
  if config.model.get("projection_init", "random") == "pca":
    warm_start.fit_projection(config, model, make_embedder(model.encoder.without_projection(normalize=False)),
                              tasks, workdir)
  embedder = make_embedder(model.encoder)
  manager = workdir_lib.checkpoint_manager(workdir, keep=config.keep_checkpoints, best_metric=config.best_metric)
  if manager.latest_step() is None:  # a resumed run restores its trained heads instead
    warm_start.set_head_biases(config, model, embedder, tasks)
  distill = config.get("distill") or {}
  teacher_graphdef, teacher_params = None, None
  if warm_start.needs_teacher(config):
    # The encoder as the run starts (the PCA projection in place) is the frozen teacher of every term.
    teacher_graphdef, teacher_params = nnx.split(model.encoder)
    teacher_params = jax.tree.map(jnp.copy, teacher_params)  # frozen: the state below is donated

  # --- Optimizer and the jitted step ---------------------------------------------------------------
  accum = config.grad_accum_steps
  schedule = optimizer_lib.learning_rate_schedule(_updates_config(config, accum))
  tx = optimizer_lib.make_optimizer(config.optimizer, schedule, frozen_layers=frozen_layers)
  if accum > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=accum)
  graphdef, params = nnx.split(model)
  state = _on_mesh({"step": np.int32(0), "params": params, "opt_state": tx.init(params)}, mesh)
  losses = [TaskLoss(n, config.tasks[n].loss, tuple(config.tasks[n].matryoshka_dims),
                     config.tasks[n].get("symmetric", False), config.tasks[n].get("bce_in_batch", True),
                     *warm_start.self_distill(config.tasks[n]),
                     hold_unrelated=warm_start.hold_unrelated(config.tasks[n]))
            for n in builder.order]
  train_step = make_train_step(graphdef, tx, losses, lambda s: schedule(s // accum),
                               teacher_graphdef=teacher_graphdef,
                               distill_weight=warm_start.distill_weight(config, builder.num_blocks),
                               distill_teacher=distill.get("teacher") or "base",
                               distill_pairs=distill.get("pairs", "all"),
                               distill_row_stride=distill.get("row_stride", 1),
                               shards=sharding_lib.data_parallel_size(mesh), frozen_layers=frozen_layers)

  # --- Checkpoints: resume where the workdir left off, on whatever mesh this run has ---------------
  if (latest := manager.latest_step()) is not None:
    restored = manager.restore(latest, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(workdir_lib.abstract_like(state["params"])),
        train=ocp.args.StandardRestore(workdir_lib.abstract_like(
            {"step": state["step"], "opt_state": state["opt_state"]}))))
    state = {"step": restored["train"]["step"], "params": restored["params"],
             "opt_state": restored["train"]["opt_state"]}
    logging.info("resumed from %s at step %d", workdir, latest)
  step = int(state["step"])

  # --- Evaluators ----------------------------------------------------------------------------------
  # With several processes each one evaluates the whole suite on its own devices (a small suite; every
  # process then holds the same results, which checkpoint ranking needs), so no text crosses hosts. Built
  # before the loop, so a missing evaluation set stops the run before it trains; not at all by a run that
  # never evaluates (eval_every 0, as the quality benchmark times training): about 1 s on the main job, 3 s on
  # the 12 tasks.
  suite = (suite_lib.build_suite(config, data_dir=config.data_dir, tfds_dir=config.tfds_dir)
           if config.eval_every else None)

  gather = jax.jit(lambda p: p, out_shardings=sharding_lib.replicated(mesh))  # compiled once, used per eval

  def evaluate(params) -> dict[str, float]:
    if eval_mesh is not mesh:
      params = _local_copy(gather(params), eval_mesh)
    embedder.update_model(nnx.merge(graphdef, params).encoder)
    return suite_lib.run_suite(suite, embedder, tasks=list(config.tasks))

  # --- Loop ----------------------------------------------------------------------------------------
  writer = MetricsWriter(workdir, resume_step=step, total_steps=config.total_steps)
  throughput = flops_lib.Throughput(
      model.encoder.cfg, num_devices=mesh.size,
      peak=flops_lib.peak_flops(mesh.devices.flat[0].device_kind, model.encoder.cfg.dtype),
      frozen_layers=frozen_layers)
  every = lambda n: n and (step % n == 0 or step == config.total_steps)
  results: dict[str, float] = {}
  try:
    plan, batch = builder.build(step) if step < config.total_steps else (None, None)
    while step < config.total_steps:
      # jit's count of compiled programs (private, but the only cheap signal): a step that compiled a
      # new batch shape is left out of the throughput, which measures the steady state.
      start, programs = time.perf_counter(), train_step._cache_size()
      state, metrics = train_step(state, batch, teacher_params)
      compiled = train_step._cache_size() > programs
      step += 1
      if step < config.total_steps:  # host work for the next step overlaps the device's
        next_plan, next_batch = builder.build(step)
      metrics = _to_host(metrics)
      throughput.add(plan.counts, time.perf_counter() - start, compiled=compiled)
      loss, grad_norm = float(metrics["loss"]), float(metrics["grad_norm"])
      names = batches_lib.shard_task_names(builder.order, plan.task_ids)
      if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        # Nothing of this step is saved. Rerunning resumes from the latest checkpoint and meets the same
        # batch again: lower the learning rate or fix the data (named tasks) in a new workdir.
        raise FloatingPointError(
            f"step {step}: loss {loss}, gradient norm {grad_norm} (tasks {sorted(set(names))}). Stopped "
            f"without saving; the latest checkpoint is step {manager.latest_step()} in "
            f"{workdir / workdir_lib.CHECKPOINTS}.")
      if every(config.log_every):
        record = {**_step_record(loss, metrics, names), **throughput.record()}
        writer.write(step, record)
        writer.progress(step, loss, ",".join(sorted(set(names))), mfu=record.get("perf/mfu"))
      evaluation = None
      if every(config.eval_every):
        evaluation = results = evaluate(state["params"])
        writer.write(step, {f"eval/{k}": v for k, v in evaluation.items()})
      if every(config.checkpoint_every) or evaluation:
        manager.save(step, args=_save_args(state), metrics=evaluation)
      if step < config.total_steps:
        plan, batch = next_plan, next_batch
  finally:
    manager.wait_until_finished()
    manager.close()
    writer.close()
  return results


def _prepare_datasets_once(config: ml_collections.ConfigDict) -> None:
  """Process 0 prepares every dataset the run reads before the others look: processes sharing a
  tfds dir must not write the same files at once. (On hosts with their own tfds dir, the others
  then prepare theirs when they load.)"""
  if jax.process_count() == 1:
    return
  if jax.process_index() == 0:
    # weight 0 tasks are still evaluated
    datasets = {dataset for spec in config.tasks.values() for dataset, _ in suite_lib.training_splits(spec)}
    datasets |= {spec.dataset for spec in config.eval.zero_shot.values()}
    for dataset in sorted(datasets):
      data_load.prepare(dataset, data_dir=config.data_dir, tfds_dir=config.tfds_dir)
  multihost_utils.sync_global_devices("pe_jax: datasets prepared")


def _to_host(tree: Any) -> Any:
  """Numpy copies of the step's metrics; with several processes, every process gets every shard."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def _local_copy(whole: Any, local_mesh: jax.sharding.Mesh) -> Any:
  """Replicated `whole` params, copied onto every device of `local_mesh` (this process's)."""
  return jax.tree.map(lambda x: jax.device_put(x.addressable_data(0), sharding_lib.replicated(local_mesh)), whole)


def _updates_config(config: ml_collections.ConfigDict, accum: int) -> ml_collections.ConfigDict:
  """With accumulation the schedule counts updates, not micro-steps."""
  c = config.copy_and_resolve_references()
  c.total_steps = max(config.total_steps // accum, 1)
  c.optimizer.warmup_steps = config.optimizer.warmup_steps // accum
  return c


def _step_record(loss: float, metrics: dict[str, jax.Array], names: list[str]) -> dict[str, Any]:
  block_loss = np.asarray(metrics["block_loss"])
  record: dict[str, Any] = {
      "loss": loss, "task": ",".join(sorted(set(names))), "tasks": names,
      "learning_rate": float(metrics["learning_rate"]), "grad_norm": float(metrics["grad_norm"]),
      "distill_loss": float(metrics["distill_loss"]), "self_distill_loss": float(metrics["self_distill_loss"]),
      "hold_unrelated_loss": float(metrics["hold_unrelated_loss"]),
  }
  for name in sorted(set(names)):
    record[f"loss/{name}"] = float(block_loss[[n == name for n in names]].mean())
  return record

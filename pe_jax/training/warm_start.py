"""Where a run starts: a projection fitted by PCA, task-head biases read from data, and the checks on
the frozen teacher (the encoder as the run starts) that distillation holds the model to.

A fresh 384 -> 50 projection throws away what the base model knows at step 0; PCA of the base's
pooled embeddings of training posts keeps as much of it as 50 axes can (the base cut to 50-d is a
strong baseline that costs nothing, so training starts there). The fit is saved in the workdir, so a
resumed run rebuilds the same starting point (its teacher) without refitting.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from pe_jax.evaluation import metrics as metrics_lib
from pe_jax.models.encoder import EncoderConfig
from pe_jax.models.loading import load_model
from pe_jax.models.post_model import PostEmbeddingModel
from pe_jax.serving.embedder import Embedder
from pe_jax.tasks.pairs import PairTask, sample_posts_by_task
from pe_jax.training.step import DISTILL_PAIRS, TEACHER_VIEWS

PROJECTION_INIT_FILE = "projection_init.npz"
PROJECTION_INITS = ("random", "pca")
# What config.distill.weight counts against: one task's loss (divided over a step's task blocks) or the step's.
DISTILL_WEIGHT_PER = ("task", "step")
PCA_CENTERS = ("global", "task")  # what the PCA fit centres each post on: all posts' mean, or its task's
# Anchor/partner/negative triples per task used to place a BCE head's decision boundary.
_BIAS_PAIRS = 64


def check_config(config: ml_collections.ConfigDict) -> None:
  """Refuses warm-start settings that cannot work, naming the key, before anything heavy runs."""
  init = config.model.get("projection_init", "random")
  if init not in PROJECTION_INITS:
    raise ValueError(f"config.model.projection_init={init!r}; known: {', '.join(PROJECTION_INITS)}")
  dim = config.model.encoder.get("projection_dim")
  center = config.model.get("pca_center", "global")
  if center not in PCA_CENTERS:
    raise ValueError(f"config.model.pca_center={center!r}; known: {', '.join(PCA_CENTERS)}")
  if init == "pca":
    if not dim:
      raise ValueError("config.model.projection_init='pca' needs config.model.encoder.projection_dim (the "
                       "width to fit)")
    posts = config.model.get("pca_fit_posts", 0)
    if posts <= dim:
      raise ValueError(f"config.model.pca_fit_posts={posts} must exceed the projection dimension {dim}: "
                       f"PCA cannot fit {dim} axes on fewer posts")
  distill = config.get("distill") or {}
  if distill.get("pairs", "all") not in DISTILL_PAIRS:
    raise ValueError(f"config.distill.pairs={distill.get('pairs')!r}; known: {', '.join(DISTILL_PAIRS)}")
  if distill.get("weight", 0) < 0:
    raise ValueError(f"config.distill.weight must be >= 0, got {distill.get('weight')}")
  if distill.get("weight_per", "step") not in DISTILL_WEIGHT_PER:
    raise ValueError(f"config.distill.weight_per={distill.get('weight_per')!r}; known: "
                     f"{', '.join(DISTILL_WEIGHT_PER)}")
  if distill.get("weight", 0) > 0 and distill.get("teacher") not in TEACHER_VIEWS:
    raise ValueError(f"config.distill.weight={distill.get('weight')} needs a teacher: set "
                     f"config.distill.teacher to 'base' (the pretrained encoder at full width) or 'init' "
                     f"(the model as training starts), got {distill.get('teacher')!r}")
  stride = distill.get("row_stride", 1)
  if not isinstance(stride, int) or stride < 1:
    raise ValueError(f"config.distill.row_stride must be an integer >= 1 (the teacher embeds every k-th packed "
                     f"row; 1: all), got {stride!r}")
  for name, spec in config.tasks.items():
    weight, view = self_distill(spec)
    if weight and spec.weight and stride > 1:
      raise ValueError(f"config.tasks.{name}.self_distill needs the teacher's view of every anchor, but "
                       f"config.distill.row_stride={stride} embeds one packed row in {stride}: set row_stride=1")
    if weight < 0:
      raise ValueError(f"config.tasks.{name}.self_distill.weight must be >= 0, got {weight}")
    if weight > 0 and view not in TEACHER_VIEWS:
      raise ValueError(f"config.tasks.{name}.self_distill.teacher={view!r}: set it to 'init' (the base through "
                       f"the starting projection) or 'base' (the base at full width)")
    hold = hold_unrelated(spec)
    if hold < 0:
      raise ValueError(f"config.tasks.{name}.hold_unrelated must be >= 0, got {hold}")
    if hold > 0 and distill.get("teacher") not in TEACHER_VIEWS:  # as the relational term's own check above
      raise ValueError(f"config.tasks.{name}.hold_unrelated={hold} holds pairs to config.distill.teacher, which "
                       f"is {distill.get('teacher')!r}: set it to 'base' or 'init'")


def distill_weight(config: ml_collections.ConfigDict, num_blocks: int) -> float:
  """The relational distillation term's weight in the step's loss. The task losses of a step sum to
  about one task's loss (each block scaled by its share of the mixture), so with `num_blocks` tasks in
  a step each task weighs about 1/num_blocks of it: weight_per="task" divides the weight by the blocks
  so that distillation holds each task equally hard whether a step has 1, 3 or 12 of them (the
  ablation's single-task and all-tasks runs alike); "step" takes the weight as it is."""
  distill = config.get("distill") or {}
  weight = float(distill.get("weight", 0.0))
  return weight / num_blocks if distill.get("weight_per", "step") == "task" else weight


def check_distill_pairs(config: ml_collections.ConfigDict, num_blocks: int) -> None:
  """Refuses distillation over pairs across blocks when a step holds a single block: it would hold
  nothing, and the run would train as if distillation were off."""
  distill = config.get("distill") or {}
  if distill.get("weight", 0) > 0 and distill.get("pairs", "all") == "across_blocks" and num_blocks < 2:
    raise ValueError("config.distill.pairs='across_blocks' holds no pair when a step has one task block (one "
                     "trained task, or config.mixture.tasks_per_step=1 on one device): set "
                     "config.distill.pairs='all'")


def self_distill(spec: ml_collections.ConfigDict) -> tuple[float, str]:
  """(weight, teacher view) of a task spec's self-distillation; (0, "init") when it has none."""
  settings = spec.get("self_distill") or {}
  return float(settings.get("weight", 0.0)), settings.get("teacher") or "init"


def hold_unrelated(spec: ml_collections.ConfigDict) -> float:
  """The weight of a task spec's hold on the pairs its blocks call unrelated (0 when it has none)."""
  return float(spec.get("hold_unrelated", 0.0))


def needs_teacher(config: ml_collections.ConfigDict) -> bool:
  """Whether any distillation term is on (relational, a task's self-distillation or its hold on unrelated
  pairs)."""
  return bool((config.get("distill") or {}).get("weight", 0)) or any(
      self_distill(spec)[0] or hold_unrelated(spec) for spec in config.tasks.values() if spec.weight)


def check_teacher(config: ml_collections.ConfigDict, student: EncoderConfig) -> None:
  """Refuses a self-distillation teacher whose embedding is not the width of the student's, naming the
  key: the full-width base ("base") cannot be a target for a student that embeds through a projection
  to another width, while "init" (the base through the starting projection) always fits."""
  for name, spec in config.tasks.items():
    weight, view = self_distill(spec)
    if spec.weight and weight and view == "base" and student.hidden_size != student.embedding_dim:
      raise ValueError(
          f"config.tasks.{name}.self_distill.teacher='base' embeds at {student.hidden_size}-d (the base at full "
          f"width) but the student embeds at {student.embedding_dim}-d (config.model.encoder.projection_dim): "
          f"use 'init' (the base through the starting projection, in the student's space)")


def fit_projection(config: ml_collections.ConfigDict, model: PostEmbeddingModel, embedder: Embedder,
                   tasks: Mapping[str, PairTask], workdir: pathlib.Path) -> None:
  """Sets the encoder's projection to PCA of the pooled base embeddings of training posts.

  `embedder` embeds with `model.encoder.without_projection(normalize=False)`. The projection computes (pooled - mean) @ axes,
  i.e. kernel = axes.T and bias = -mean @ axes.T; the saved fit is reused when it exists.
  """
  kernel, bias = projection_fit(config, embedder, tasks, workdir / PROJECTION_INIT_FILE)
  projection = model.encoder.projection
  projection.kernel[...] = jnp.asarray(kernel, projection.kernel.dtype).reshape(projection.kernel.shape)
  projection.bias[...] = jnp.asarray(bias, projection.bias.dtype).reshape(projection.bias.shape)


def projection_fit(config: ml_collections.ConfigDict, embedder: Embedder, tasks: Mapping[str, PairTask],
                   path: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
  """(kernel, bias) of the PCA projection saved at `path`, fitted and saved there first if absent.

  Ablations fit it once per seed on all their tasks' posts and place the file in each run's workdir,
  so every run of a seed starts from the same projection (pe_jax/ablation/runner.py).
  """
  if path.exists():
    with np.load(path) as saved:
      return saved["kernel"], saved["bias"]
  by_task = sample_posts_by_task(tasks, config.model.pca_fit_posts, config.seed)
  posts = [post for task_posts in by_task.values() for post in task_posts]
  dim = config.model.encoder.projection_dim
  if len(posts) <= dim:
    raise ValueError(f"config.model.pca_fit_posts: the tasks gave {len(posts)} posts, not more than the "
                     f"projection dimension {dim}")
  # "task": each task's posts centred on their own mean, so axes that only tell tasks apart (in a
  # multilingual mixture, mostly the languages) are not kept for that.
  groups = np.repeat(np.arange(len(by_task)), [len(p) for p in by_task.values()])
  fit = metrics_lib.pca_reduce(embedder(posts), dim, normalize=False,
                               groups=groups if config.model.get("pca_center", "global") == "task" else None)
  kernel, bias = fit.components.T, -fit.mean @ fit.components.T
  if jax.process_index() == 0:
    _save_atomically(path, kernel=kernel, bias=bias, num_posts=len(posts))
  logging.info("projection initialised by PCA on %d training posts", len(posts))
  return kernel, bias


def set_head_biases(config: ml_collections.ConfigDict, model: PostEmbeddingModel, embedder: Embedder,
                    tasks: Mapping[str, PairTask]) -> dict[str, float]:
  """For tasks with `head.bias_from_data`, puts the BCE decision boundary (scale * cos + bias = 0)
  halfway between the starting model's mean cosine of positive and of negative training pairs.

  A fixed bias of -10 at scale 20 decides at cosine 0.5 while real post pairs sit near 0.1-0.2: nearly
  every pair then reads as negative and the loss only pulls positives together, collapsing the space.
  """
  biases = {}
  for name, task in tasks.items():
    spec = config.tasks[name]
    if not spec.get("bias_from_data", False):
      continue
    a, b, n = task.texts_for(task.batch(config.seed, 0, min(_BIAS_PAIRS, len(task))))
    if n is None:
      raise ValueError(f"task {name!r}: tasks.{name}.bias_from_data needs negatives to place the boundary")
    ea, eb, en = np.split(embedder(a + b + n), 3)  # one call: the embedder packs them together
    positive, negative = np.mean(np.sum(ea * eb, 1)), np.mean(np.sum(ea * en, 1))
    head = model.heads[name]
    bias = -float(head.scale()) * (positive + negative) / 2
    head.bias[...] = jnp.asarray(bias, head.bias.dtype)
    biases[name] = bias
    logging.info("task %s: mean cosine positive %.3f, negative %.3f -> bias %.2f", name, positive, negative, bias)
  return biases


def start_weights(encoder, workdir: pathlib.Path, base: str) -> dict:
  """Flat {path: array} of where the run in `workdir` started, laid out as `encoder`'s state: the `base`
  encoder's pretrained weights with the projection the run fitted by PCA."""
  pretrained = dict(nnx.to_flat_state(nnx.state(load_model(base)[0])))
  with np.load(workdir / PROJECTION_INIT_FILE) as fit:
    projection = {"kernel": fit["kernel"], "bias": fit["bias"]}
  start = {}
  for path, variable in nnx.to_flat_state(nnx.state(encoder)):
    value = variable.get_value()
    source = projection[path[-1]] if path[0] == "projection" else pretrained[path].get_value()
    start[path] = jnp.asarray(source, value.dtype).reshape(value.shape)
  return start


def _save_atomically(path: pathlib.Path, **arrays) -> None:
  tmp = path.with_suffix(".tmp.npz")
  np.savez(tmp, **arrays)
  tmp.replace(path)

"""Where a run starts: a projection fitted by PCA, task-head biases read from data, and the frozen
teacher that relational distillation holds the model to.

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

from pe_jax.evaluation import metrics as metrics_lib
from pe_jax.models.encoder import Encoder
from pe_jax.models.post_model import PostEmbeddingModel
from pe_jax.serving.embedder import Embedder
from pe_jax.tasks.pairs import PairTask, sample_posts

PROJECTION_INIT_FILE = "projection_init.npz"
PROJECTION_INITS = ("random", "pca")
TEACHERS = ("base", "init")
# Anchor/partner/negative triples per task used to place a BCE head's decision boundary.
_BIAS_PAIRS = 64


def check_config(config: ml_collections.ConfigDict) -> None:
  """Refuses warm-start settings that cannot work, naming the key, before anything heavy runs."""
  init = config.model.get("projection_init", "random")
  if init not in PROJECTION_INITS:
    raise ValueError(f"config.model.projection_init={init!r}; known: {', '.join(PROJECTION_INITS)}")
  dim = config.model.encoder.get("projection_dim")
  if init == "pca":
    if not dim:
      raise ValueError("config.model.projection_init='pca' needs config.model.encoder.projection_dim (the "
                       "width to fit)")
    posts = config.model.get("pca_fit_posts", 0)
    if posts <= dim:
      raise ValueError(f"config.model.pca_fit_posts={posts} must exceed the projection dimension {dim}: "
                       f"PCA cannot fit {dim} axes on fewer posts")
  distill = config.get("distill") or {}
  if distill.get("weight", 0) < 0:
    raise ValueError(f"config.distill.weight must be >= 0, got {distill.get('weight')}")
  if distill.get("weight", 0) > 0 and distill.get("teacher") not in TEACHERS:
    raise ValueError(f"config.distill.weight={distill.get('weight')} needs a teacher: set "
                     f"config.distill.teacher to 'base' (the pretrained encoder at full width) or 'init' "
                     f"(the model as training starts), got {distill.get('teacher')!r}")


def teacher(config: ml_collections.ConfigDict, encoder: Encoder) -> Encoder:
  """The frozen model relational distillation holds the student to, from the encoder as the run
  starts: "base" drops the projection (the pretrained model's own normalised embedding, whose
  geometry general similarity lives in), "init" keeps it (the starting point, e.g. the PCA cut)."""
  return encoder.without_projection(normalize=True) if config.distill.teacher == "base" else encoder


def fit_projection(config: ml_collections.ConfigDict, model: PostEmbeddingModel, embedder: Embedder,
                   tasks: Mapping[str, PairTask], workdir: pathlib.Path) -> None:
  """Sets the encoder's projection to PCA of the pooled base embeddings of training posts.

  `embedder` embeds with `model.encoder.without_projection(normalize=False)`. The projection computes (pooled - mean) @ axes,
  i.e. kernel = axes.T and bias = -mean @ axes.T; the saved fit is reused when it exists.
  """
  path = workdir / PROJECTION_INIT_FILE
  if path.exists():
    with np.load(path) as saved:
      kernel, bias = saved["kernel"], saved["bias"]
  else:
    posts = sample_posts(tasks, config.model.pca_fit_posts, config.seed)
    dim = config.model.encoder.projection_dim
    if len(posts) <= dim:
      raise ValueError(f"config.model.pca_fit_posts: the tasks gave {len(posts)} posts, not more than the "
                       f"projection dimension {dim}")
    fit = metrics_lib.pca_reduce(embedder(posts), dim, normalize=False)
    kernel, bias = fit.components.T, -fit.mean @ fit.components.T
    if jax.process_index() == 0:
      _save_atomically(path, kernel=kernel, bias=bias, num_posts=len(posts))
    logging.info("projection initialised by PCA on %d training posts", len(posts))
  projection = model.encoder.projection
  projection.kernel[...] = jnp.asarray(kernel, projection.kernel.dtype).reshape(projection.kernel.shape)
  projection.bias[...] = jnp.asarray(bias, projection.bias.dtype).reshape(projection.bias.shape)


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


def _save_atomically(path: pathlib.Path, **arrays) -> None:
  tmp = path.with_suffix(".tmp.npz")
  np.savez(tmp, **arrays)
  tmp.replace(path)

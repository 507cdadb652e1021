"""Task heads beside the shared encoder: a learnable similarity scale and bias, optionally a projection.

Parameters carry logical axis names ('embed' for the encoder's output axis, () for scalars), so build
the heads inside `with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):` like the encoder.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx


class TaskHead(nnx.Module):
  """Scale and bias for a task's loss, and an optional projection applied before the cosine.

  The scale is exp(log_scale) clipped to `max_scale`, so it stays positive and cannot run away.
  For pair BCE the logit is scale * cos + bias: scale 20 with bias -10 puts the decision at cos 0.5.
  """

  def __init__(self, dim: int, *, rngs: nnx.Rngs, scale_init: float = 20.0,
               max_scale: float = 100.0, bias_init: float = 0.0,
               projection_dim: int | None = None):
    if not 0 < scale_init <= max_scale:
      raise ValueError(f"need 0 < scale_init <= max_scale, got {scale_init} and {max_scale}")
    self.max_scale = max_scale
    self.log_scale = _scalar(math.log(scale_init), rngs)
    self.bias = _scalar(bias_init, rngs)
    self.projection = None if projection_dim is None else nnx.Linear(
        dim, projection_dim, use_bias=False, rngs=rngs,
        kernel_init=nnx.with_partitioning(nnx.initializers.lecun_normal(), ("embed", None)))

  def __call__(self, x: jax.Array) -> jax.Array:
    """Embeddings [B, dim] -> the task's L2-normalised embeddings (identity without projection)."""
    if self.projection is None:
      return x
    y = self.projection(x)
    return y * jax.lax.rsqrt(jnp.maximum(jnp.sum(y * y, axis=-1, keepdims=True), 1e-12))

  def scale(self) -> jax.Array:
    return jnp.minimum(jnp.exp(self.log_scale[...]), self.max_scale)


class TaskHeads(nnx.Dict):
  """Task name -> `TaskHead`, from (name, TaskHead keyword options) in config order."""

  def __init__(self, specs: Sequence[tuple[str, Mapping[str, Any]]], *, dim: int,
               rngs: nnx.Rngs):
    heads = {}
    for name, options in specs:
      if not name.isidentifier() or hasattr(nnx.Dict, name):
        raise ValueError(f"task head name {name!r} must be an identifier not used by nnx.Dict")
      if name in heads:
        raise ValueError(f"task head {name!r} is listed twice")
      try:
        heads[name] = TaskHead(dim, rngs=rngs, **options)
      except (TypeError, ValueError) as e:
        raise ValueError(f"task head {name!r}: {e}") from e
    super().__init__(heads)


def _scalar(value: float, rngs: nnx.Rngs) -> nnx.Param:
  init = nnx.with_partitioning(nnx.initializers.constant(value), ())
  return nnx.Param(init(rngs.params(), (), jnp.float32))

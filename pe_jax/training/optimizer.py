"""AdamW with warm-up and decay, clipping, and no weight decay on biases, norms or head scalars."""

from __future__ import annotations

import jax
import ml_collections
import optax


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  opt = config.optimizer
  warmup = min(opt.warmup_steps, config.total_steps)
  decay_steps = max(config.total_steps - warmup, 1)
  decay = {
      "cosine": optax.cosine_decay_schedule(opt.learning_rate, decay_steps, alpha=opt.final_lr_fraction),
      "linear": optax.linear_schedule(opt.learning_rate, opt.learning_rate * opt.final_lr_fraction, decay_steps),
      "constant": optax.constant_schedule(opt.learning_rate),
  }
  if opt.decay not in decay:
    raise ValueError(f"config.optimizer.decay={opt.decay!r}; known: {sorted(decay)}")
  warm = optax.linear_schedule(0.0, opt.learning_rate, warmup) if warmup else None
  return optax.join_schedules([warm, decay[opt.decay]], [warmup]) if warm else decay[opt.decay]


def decay_mask(params):
  """Weight decay for matrices only (kernels, embeddings), as BERT fine-tuning recipes do."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def param_group(path) -> str:
  """"heads" (task heads), "projection" (the new compact projection) or "encoder" (pretrained)."""
  keys = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
  if keys and keys[0] == "heads":
    return "heads"
  return "projection" if "projection" in keys else "encoder"


def make_optimizer(opt: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
  """`opt` is `config.optimizer`; `schedule` counts parameter updates.

  Parameters that start from scratch (task heads, the projection) learn `*_lr_multiplier` times
  faster than the pretrained encoder: at the encoder's rate a head's scale and bias barely move in a
  short run.
  """
  multipliers = {"encoder": 1.0, "projection": opt.get("projection_lr_multiplier", 1.0),
                 "heads": opt.get("head_lr_multiplier", 1.0)}
  adamw = lambda m: optax.adamw(lambda step: schedule(step) * m, b1=opt.b1, b2=opt.b2, eps=opt.eps,
                                weight_decay=opt.weight_decay, mask=decay_mask)
  return optax.chain(
      optax.clip_by_global_norm(opt.grad_clip_norm),
      optax.multi_transform({group: adamw(m) for group, m in multipliers.items()},
                            lambda params: jax.tree_util.tree_map_with_path(lambda p, _: param_group(p), params)),
  )

"""AdamW with warm-up and decay, clipping, no weight decay on biases, norms or head scalars, and an
optionally frozen trunk (the embeddings and first layers of the encoder)."""

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


def param_group(path, frozen_layers: int = 0) -> str:
  """"heads" (task heads), "projection" (the new compact projection), "encoder" (pretrained) or
  "frozen" (with `frozen_layers` k > 0: the encoder's embeddings and its first k layers)."""
  keys = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
  if keys and keys[0] == "heads":
    return "heads"
  if "projection" in keys:
    return "projection"
  if frozen_layers and keys[:2] == ["encoder", "embeddings"]:
    return "frozen"
  if keys[:2] == ["encoder", "layers"] and int(keys[2]) < frozen_layers:
    return "frozen"
  return "encoder"


def check_frozen_layers(config: ml_collections.ConfigDict, num_layers: int) -> int:
  """config.model.frozen_layers, refused (naming the key) unless 0 <= k <= the encoder's layers."""
  k = config.model.get("frozen_layers", 0)
  if not isinstance(k, int) or not 0 <= k <= num_layers:
    raise ValueError(f"config.model.frozen_layers={k!r} must be an integer from 0 (every layer trains) to "
                     f"{num_layers} (the encoder's layers; only the projection and heads train)")
  return k


def make_optimizer(opt: ml_collections.ConfigDict, schedule: optax.Schedule, *,
                   frozen_layers: int = 0) -> optax.GradientTransformation:
  """`opt` is `config.optimizer`; `schedule` counts parameter updates.

  Parameters that start from scratch (task heads, the projection) learn `*_lr_multiplier` times
  faster than the pretrained encoder: at the encoder's rate a head's scale and bias barely move in a
  short run. The "frozen" group (`param_group`) never moves, weight decay included, and keeps no
  optimizer state.
  """
  multipliers = {"encoder": 1.0, "projection": opt.get("projection_lr_multiplier", 1.0),
                 "heads": opt.get("head_lr_multiplier", 1.0)}
  adamw = lambda m: optax.adamw(lambda step: schedule(step) * m, b1=opt.b1, b2=opt.b2, eps=opt.eps,
                                weight_decay=opt.weight_decay, mask=decay_mask)
  groups = {group: adamw(m) for group, m in multipliers.items()}
  if frozen_layers:
    groups["frozen"] = optax.set_to_zero()
  label = lambda p, _: param_group(p, frozen_layers)
  return optax.chain(
      optax.clip_by_global_norm(opt.grad_clip_norm),
      optax.multi_transform(groups, lambda params: jax.tree_util.tree_map_with_path(label, params)),
  )

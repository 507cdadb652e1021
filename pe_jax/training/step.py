"""The jitted training step: siamese encoding of every side, each shard's task loss, one update.

The global batch holds one block of rows per data-parallel shard, and each block carries its own
task (the paper's per-device scheme) or all blocks the same task. Every head's loss is computed on
every block and the block's own task selects which counts: a few B x B products per task, nothing
next to the encoder, and it keeps the step one static program whatever tasks a step draws.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from pe_jax.models.post_model import PostEmbeddingModel
from pe_jax.training import losses

LOSSES = ("bce", "contrastive")


@dataclasses.dataclass(frozen=True)
class TaskLoss:
  """How one task is trained: `kind` is "bce" (the paper) or "contrastive" (in-batch negatives)."""

  name: str
  kind: str
  matryoshka_dims: tuple[int, ...] = ()
  symmetric: bool = False

  def __post_init__(self):
    if self.kind not in LOSSES:
      raise ValueError(f"task {self.name!r}: loss {self.kind!r} is not one of {LOSSES}")


def _bce(a, b, targets, scale, bias, negatives_valid, same_label, *, negatives):
  del same_label
  loss = losses.pair_bce_loss(a, b, targets, scale, bias)
  # A task either has negatives on every row or on none, so the block's first flag speaks for all.
  has_neg = negatives_valid[0]
  neg = losses.pair_bce_loss(a, negatives, jnp.zeros_like(targets), scale, bias)
  return (loss + has_neg * neg) / (1 + has_neg)


def _contrastive(a, b, targets, scale, bias, negatives_valid, same_label, *, negatives, symmetric):
  del targets, bias, negatives_valid  # invalid negative columns are already masked in same_label
  return losses.in_batch_contrastive_loss(a, b, scale, negatives=negatives, same_label=same_label,
                                          symmetric=symmetric)


def _block_loss_fn(task: TaskLoss) -> Callable:
  fn = _bce if task.kind == "bce" else functools.partial(_contrastive, symmetric=task.symmetric)
  return losses.matryoshka(fn, task.matryoshka_dims) if task.matryoshka_dims else fn


def encode_sides(encoder, batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One encoder pass over anchors, partners and negatives together (siamese: shared weights)."""
  n = batch["targets"].shape[0]
  emb = encoder.embed_packed(batch["ids"], batch["segments"], batch["positions"], num_texts=3 * n)
  return emb[:n], emb[n : 2 * n], emb[2 * n :]


def compute_loss(model: PostEmbeddingModel, batch: dict[str, jax.Array], tasks: Sequence[TaskLoss]):
  """Mean over shards of each shard's own task loss; also returns the per-shard losses [S]."""
  task_ids = batch["task_ids"]
  shards = task_ids.shape[0]
  ea, eb, en = encode_sides(model.encoder, batch)
  blocks = lambda x: x.reshape(shards, -1, *x.shape[1:])
  per_shard = jnp.zeros((shards,), jnp.float32)
  for t, task in enumerate(tasks):
    head = model.heads[task.name]
    loss_fn = _block_loss_fn(task)
    scale, bias = head.scale(), head.bias[...]
    block_losses = jax.vmap(
        lambda a, b, n, tg, nv, sl: loss_fn(a, b, tg, scale, bias, nv, sl, negatives=n)
    )(blocks(head(ea)), blocks(head(eb)), blocks(head(en)), blocks(batch["targets"]),
      blocks(batch["negatives_valid"]), blocks(batch["same_label"]))
    per_shard = per_shard + jnp.where(task_ids == t, block_losses, 0.0)
  return per_shard.mean(), per_shard


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, tasks: Sequence[TaskLoss],
                    schedule: optax.Schedule):
  """(state, batch) -> (state, metrics); `state` = {"step", "params", "opt_state"} is donated."""
  tasks = tuple(tasks)

  def loss_fn(params, batch):
    return compute_loss(nnx.merge(graphdef, params), batch, tasks)

  def train_step(state: dict[str, Any], batch: dict[str, jax.Array]):
    (loss, per_shard), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], batch)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    metrics = {"loss": loss, "shard_loss": per_shard, "grad_norm": optax.tree.norm(grads),
               "learning_rate": schedule(state["step"])}
    return {"step": state["step"] + 1, "params": params, "opt_state": opt_state}, metrics

  return jax.jit(train_step, donate_argnums=0)

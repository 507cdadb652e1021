"""The jitted training step: siamese encoding of every text, each block's task loss, one update.

The global batch holds blocks of rows, each of one task: every task in every step, a few, or the
paper's one task per device (`BatchBuilder`). Every head's loss is computed on every block and the
block's own task selects which counts: a few small products per task, nothing next to the encoder,
and it keeps the step one static program whatever tasks a step draws. A frozen teacher (the encoder as
training started) embeds the same texts in the same pass: it can anchor the batch's pairwise geometry
(relational distillation), and pull a task's texts towards its embedding of each row's side-a text
(self-distillation: translations towards the English sentence).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from pe_jax.models.encoder import l2_normalize
from pe_jax.models.post_model import PostEmbeddingModel
from pe_jax.training import losses

LOSSES = ("supcon", "contrastive", "bce")
# Which pairs of the batch relational distillation holds: all of them, or only pairs of texts from
# different blocks, whose geometry no task loss sets (within a block the task's labels decide).
DISTILL_PAIRS = ("all", "across_blocks")
# What the frozen teacher gives as a text's target: "base", its full-width embedding (the pretrained
# model's own); "init", its embedding through the starting projection (the student's space at step 0).
TEACHER_VIEWS = ("base", "init")


@dataclasses.dataclass(frozen=True)
class TaskLoss:
  """How one task is trained.

  kind: "supcon" (label-aware in-batch loss over all of a block's texts), "contrastive" (InfoNCE of
  anchors against partners and negatives, label-masked) or "bce" (the paper's pair BCE on scaled
  cosine; `in_batch` adds every other pair of the block, related or not, as further BCE pairs).
  self_distill: weight of the mean squared distance between each of the block's texts and the frozen
  teacher's `self_distill_teacher` view of its row's side-a text (0: none).
  hold_unrelated: weight of a relational distillation over the pairs inside the task's blocks that its
  loss calls unrelated (a translation block's different sentences: its in-batch loss pushes them all apart
  alike, and how alike they were is what STS asks of the model), held to the step's distillation teacher
  view (0: none).
  """

  name: str
  kind: str
  matryoshka_dims: tuple[int, ...] = ()
  symmetric: bool = False
  in_batch: bool = True
  self_distill: float = 0.0
  self_distill_teacher: str = "init"
  hold_unrelated: float = 0.0

  def __post_init__(self):
    if self.kind not in LOSSES:
      raise ValueError(f"task {self.name!r}: loss {self.kind!r} is not one of {LOSSES}")
    if self.self_distill_teacher not in TEACHER_VIEWS:
      raise ValueError(f"task {self.name!r}: self-distillation teacher {self.self_distill_teacher!r} is not "
                       f"one of {TEACHER_VIEWS}")


def _bce(a, b, targets, scale, bias, negatives_valid, related, valid, *, negatives, in_batch):
  loss = losses.pair_bce_loss(a, b, targets, scale, bias)
  # A task either has negatives on every row or on none, so the block's first flag speaks for all.
  has_neg = negatives_valid[0]
  neg = losses.pair_bce_loss(a, negatives, jnp.zeros_like(targets), scale, bias)
  paper = (loss + has_neg * neg) / (1 + has_neg)
  if not in_batch:
    return paper
  everything = jnp.concatenate([a, b, negatives])
  return (paper + losses.in_batch_bce_loss(everything, related, valid, scale, bias)) / 2


def _contrastive(a, b, targets, scale, bias, negatives_valid, related, valid, *, negatives, symmetric):
  del targets, bias, negatives_valid
  n = a.shape[0]
  # Columns that must not serve as a row's negatives: related ones, and negatives the task lacks.
  same_label = related[:n, n:] | ~valid[None, n:]
  return losses.in_batch_contrastive_loss(a, b, scale, negatives=negatives, same_label=same_label,
                                          symmetric=symmetric)


def _supcon(a, b, targets, scale, bias, negatives_valid, related, valid, *, negatives):
  del targets, bias, negatives_valid
  return losses.supervised_contrastive_loss(jnp.concatenate([a, b, negatives]), related, valid, scale)


def _block_loss_fn(task: TaskLoss) -> Callable:
  fn = {"bce": functools.partial(_bce, in_batch=task.in_batch),
        "contrastive": functools.partial(_contrastive, symmetric=task.symmetric),
        "supcon": _supcon}[task.kind]
  return losses.matryoshka(fn, task.matryoshka_dims) if task.matryoshka_dims else fn


def frozen_trunk(encoder, batch: dict[str, jax.Array], frozen_layers: int):
  """The embeddings and first `frozen_layers` layers of every text, computed once and without gradient:
  they never train, so the student and its frozen teacher (equal there) both start from these states.
  None when nothing is frozen."""
  if not frozen_layers:
    return None
  states, k = encoder.packed_trunk(batch["ids"], batch["segments"], batch["positions"], frozen_layers)
  return jax.lax.stop_gradient(states), k


def encode_texts(encoder, batch: dict[str, jax.Array], trunk=None) -> jax.Array:
  """One encoder pass over every text of the batch (siamese: shared weights) -> [3 * M * B, D];
  `trunk`: `frozen_trunk`'s states, where the pass starts."""
  n = batch["targets"].shape[0]
  return encoder.embed_packed(batch["ids"], batch["segments"], batch["positions"], num_texts=3 * n, trunk=trunk)


def teacher_views(teacher, batch: dict[str, jax.Array], trunk=None, *, row_stride: int = 1,
                  shards: int = 1) -> tuple[dict[str, jax.Array], jax.Array]:
  """The frozen teacher's `TEACHER_VIEWS` of the batch's texts from one pass -> ({view: [3MB, D]}, seen
  [3MB] bool). `row_stride` k > 1: the teacher embeds only every k-th packed row of each of the `shards`
  data-parallel shards (a shard's rows are its own), and `seen` marks the texts those rows hold (the
  others' views are zero). The packer fills rows longest texts first, so every k-th row is a sample of
  texts spread over every length; per shard, so no row crosses devices."""
  n = batch["targets"].shape[0]
  rows = lambda x: x.reshape(shards, -1, *x.shape[1:])[:, ::row_stride].reshape(-1, *x.shape[1:])
  ids, segments, positions = (rows(batch[k]) for k in ("ids", "segments", "positions"))
  if trunk is not None:
    trunk = (rows(trunk[0]), trunk[1])
  pooled = jax.lax.stop_gradient(teacher.pool_packed(ids, segments, positions, num_texts=3 * n, trunk=trunk))
  if row_stride == 1:  # every text is in some row: nothing to count on the step's hot path
    seen = jnp.ones(3 * n, bool)
  else:
    seen = jax.ops.segment_sum(jnp.ones(segments.size, jnp.int32), segments.reshape(-1) - 1, num_segments=3 * n) > 0
  return {"base": l2_normalize(pooled), "init": teacher.finish(pooled)}, seen


def compute_loss(model: PostEmbeddingModel, batch: dict[str, jax.Array], tasks: Sequence[TaskLoss], *,
                 teacher=None, distill_weight: float = 0.0, distill_teacher: str = "base",
                 distill_pairs: str = "all", distill_row_stride: int = 1, shards: int = 1,
                 frozen_layers: int = 0):
  """The step's loss: each block's own task loss times its `block_scale`, summed, plus the weighted
  relational distillation against the `distill_teacher` view of `teacher` (the frozen starting encoder)
  over `distill_pairs` (one of DISTILL_PAIRS) of the texts the teacher embeds (`teacher_views`:
  `distill_row_stride`, `shards`), and each task's self-distillation (mean over its blocks of the step).
  `frozen_layers`: the encoder's embeddings and first layers that never train (the optimizer leaves
  them), run once for the student and the teacher. Returns (loss, aux) with aux
  {"block_loss": [M], "distill_loss": scalar, "self_distill_loss": scalar (unweighted, summed over tasks)}."""
  task_ids = batch["task_ids"]
  m = task_ids.shape[0]
  n = batch["targets"].shape[0]
  trunk = frozen_trunk(model.encoder, batch, frozen_layers)
  emb = encode_texts(model.encoder, batch, trunk)
  ea, eb, en = emb[:n], emb[n : 2 * n], emb[2 * n :]
  blocks = lambda x: x.reshape(m, -1, *x.shape[1:])
  # Texts are side-major ([side, block, row]); a block's own texts in `valid`'s order [block, side * B + row].
  by_block = lambda x: x.reshape(3, m, -1, *x.shape[1:]).swapaxes(0, 1).reshape(m, -1, *x.shape[1:])
  if teacher is None and (distill_weight or any(task.self_distill or task.hold_unrelated for task in tasks)):
    raise ValueError("distillation needs the frozen teacher: pass `teacher`")
  if distill_row_stride > 1 and any(task.self_distill for task in tasks):
    raise ValueError("self-distillation needs the teacher's view of every anchor: distill_row_stride must be 1")
  views, seen = (None, None) if teacher is None else teacher_views(teacher, batch, trunk,
                                                                   row_stride=distill_row_stride, shards=shards)
  block_loss = jnp.zeros((m,), jnp.float32)
  self_distill = jnp.zeros((), jnp.float32)
  weighted_self_distill = jnp.zeros((), jnp.float32)
  for t, task in enumerate(tasks):
    head = model.heads[task.name]
    loss_fn = _block_loss_fn(task)
    scale, bias = head.scale(), head.bias[...]
    this_task = jax.vmap(
        lambda a, b, neg, tg, nv, rel, val: loss_fn(a, b, tg, scale, bias, nv, rel, val, negatives=neg)
    )(blocks(head(ea)), blocks(head(eb)), blocks(head(en)), blocks(batch["targets"]),
      blocks(batch["negatives_valid"]), batch["related"], batch["valid"])
    block_loss = block_loss + jnp.where(task_ids == t, this_task, 0.0)
    if task.self_distill:
      # Every text of a row (anchor, partner, third text) towards the teacher's view of the row's anchor.
      anchors = blocks(views[task.self_distill_teacher][:n])  # [M, B, D]
      target = jnp.broadcast_to(anchors[:, None], (m, 3, *anchors.shape[1:])).reshape(m, -1, anchors.shape[-1])
      per_block = jax.vmap(losses.embedding_distillation_loss)(by_block(emb), target, batch["valid"])
      mine = task_ids == t
      term = losses.masked_mean(per_block, mine)
      self_distill = self_distill + term
      weighted_self_distill = weighted_self_distill + task.self_distill * term
  loss = jnp.sum(batch["block_scale"] * block_loss) + weighted_self_distill
  # Side-major, as `emb`: each text's validity (its row embedded by the teacher too) and its block.
  valid = batch["valid"].reshape(m, 3, -1).transpose(1, 0, 2).reshape(-1) & (True if seen is None else seen)
  rows = n // m  # pairs per block
  block = (jnp.arange(3 * n) // rows) % m
  holds = any(task.hold_unrelated for task in tasks)
  # One matrix of cosine gaps to the teacher, averaged over each term's pairs: the relational term and every
  # task's hold.
  gaps = losses.cosine_gaps(emb, views[distill_teacher]) if distill_weight or holds else None
  distill = jnp.zeros((), jnp.float32)
  if distill_weight:
    pairs = block[:, None] != block[None, :] if distill_pairs == "across_blocks" else None
    distill = losses.mean_over_pairs(gaps, valid, pairs)
    loss = loss + distill_weight * distill
  hold = jnp.zeros((), jnp.float32)
  if holds:
    in_block = (jnp.arange(3 * n) // n) * rows + jnp.arange(3 * n) % rows  # place in its block's [side * B + row]
    related = batch["related"][block[:, None], in_block[:, None], in_block[None, :]]  # [3N, 3N], same block
    same_block = block[:, None] == block[None, :]
    for t, task in enumerate(tasks):
      if task.hold_unrelated:
        mine = (task_ids == t)[block]
        term = losses.mean_over_pairs(gaps, valid, same_block & ~related & mine[:, None])
        hold = hold + term
        loss = loss + task.hold_unrelated * term
  return loss, {"block_loss": block_loss, "distill_loss": distill, "self_distill_loss": self_distill,
                "hold_unrelated_loss": hold}


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, tasks: Sequence[TaskLoss],
                    schedule: optax.Schedule, *, teacher_graphdef: nnx.GraphDef | None = None,
                    distill_weight: float = 0.0, distill_teacher: str = "base", distill_pairs: str = "all",
                    distill_row_stride: int = 1, shards: int = 1, frozen_layers: int = 0):
  """(state, batch[, teacher_params]) -> (state, metrics); `state` = {"step", "params", "opt_state"}
  is donated. With `teacher_graphdef` (the starting encoder), the step takes the frozen teacher's params
  as a third argument. `frozen_layers` must match the optimizer's (`optimizer.make_optimizer`): the step
  shares those layers' states with the teacher, which is right only while they never change. `shards`:
  the data-parallel shards the batch's rows are laid over (`distill_row_stride` strides each one's rows)."""
  tasks = tuple(tasks)

  def loss_fn(params, batch, teacher_params):
    teacher = None if teacher_graphdef is None else nnx.merge(teacher_graphdef, teacher_params)
    return compute_loss(nnx.merge(graphdef, params), batch, tasks, teacher=teacher,
                        distill_weight=distill_weight, distill_teacher=distill_teacher,
                        distill_pairs=distill_pairs, distill_row_stride=distill_row_stride, shards=shards,
                        frozen_layers=frozen_layers)

  def train_step(state: dict[str, Any], batch: dict[str, jax.Array], teacher_params=None):
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], batch, teacher_params)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    metrics = {"loss": loss, **aux, "grad_norm": optax.tree.norm(grads),
               "learning_rate": schedule(state["step"])}
    return {"step": state["step"] + 1, "params": params, "opt_state": opt_state}, metrics

  return jax.jit(train_step, donate_argnums=0)

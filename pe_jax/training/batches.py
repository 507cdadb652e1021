"""Host side of a training step: which task each shard trains, its texts, and the padded arrays.

Everything here is a pure function of (seed, step), so a resumed run reads exactly the batches the
interrupted one would have. Each process builds only the shards its own devices hold.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from pe_jax import sharding as sharding_lib
from pe_jax.tasks import mixture
from pe_jax.tasks.pairs import PairTask
from pe_jax.training.flops import TokenCounts
from pe_jax.tokenization import TextTokenizer, clean_texts, pack_rows, packed_arrays


@dataclasses.dataclass(frozen=True)
class StepPlan:
  """Which task each block of a step trains (`blocks_per_shard` consecutive blocks per shard)."""

  step: int
  task_ids: np.ndarray  # int [num_shards * blocks_per_shard], indices into the mixture's task order
  counts: TokenCounts | None = None  # of the whole global batch, once `build` has tokenised it


@dataclasses.dataclass(frozen=True)
class Block:
  """One task's rows of a step: its texts and what the loss needs about them."""

  texts: list[str]  # anchors, then partners, then negatives ("" where the task has none)
  targets: np.ndarray  # float32 [B]: the paper's pair targets (a_i, b_i)
  negatives_valid: np.ndarray  # float32 [B]
  related: np.ndarray  # bool [3B, 3B]: the two texts share a label, are a pair, or are the same text
  valid: np.ndarray  # bool [3B]: the text exists (a task without negatives leaves that side empty)


def blocks_per_shard(tasks_per_step: int, num_tasks: int, num_shards: int) -> int:
  """Task blocks each data-parallel shard holds per step.

  tasks_per_step 0 puts every task in every step (spread over the shards); otherwise a step holds
  that many task blocks in all (at least one per shard: 1 is the paper's one task per device).
  """
  if tasks_per_step < 0:
    raise ValueError(f"config.mixture.tasks_per_step must be >= 0 (0: every task), got {tasks_per_step}")
  wanted = num_tasks if tasks_per_step == 0 else tasks_per_step
  return max(-(-wanted // num_shards), 1)


def num_blocks(config, num_tasks: int, num_shards: int = 1) -> int:
  """Task blocks in a training step of `config` over all shards, as BatchBuilder lays them out."""
  return num_shards * blocks_per_shard(config.mixture.get("tasks_per_step", 1), num_tasks, num_shards)


def texts_per_step(config, num_tasks: int, num_shards: int = 1) -> int:
  """Texts through the encoder per training step (anchors, partners, negatives), the budget unit."""
  return 3 * config.batch_size * num_blocks(config, num_tasks, num_shards)


class BatchBuilder:
  """Turns (step) into the sharded global batch that `train_step` consumes."""

  def __init__(
      self,
      tasks: Mapping[str, PairTask],
      weights: Mapping[str, float],
      tokenizer: TextTokenizer,
      *,
      mesh: jax.sharding.Mesh,
      batch_size_per_shard: int,
      seed: int,
      per_shard_tasks: bool,
      tasks_per_step: int = 1,
      prefix: str = "",
      rows_multiple: int = 8,
  ):
    self.order = mixture.task_order(weights)  # the task ids of the train step index this list
    self.tasks = [tasks[name] for name in self.order]
    self.weights = dict(weights)
    self.tokenizer = tokenizer
    self.mesh = mesh
    self.batch_size = batch_size_per_shard
    self.seed = seed
    self.per_shard_tasks = per_shard_tasks
    self.prefix = prefix  # the model's text prefix ("query: " for e5): training sees what serving sees
    # Packed row counts are rounded up to this, so only a few batch shapes ever compile.
    self.rows_multiple = rows_multiple
    self.num_shards = sharding_lib.data_parallel_size(mesh)
    self.blocks_per_shard = blocks_per_shard(tasks_per_step, len(self.order), self.num_shards)
    self.num_blocks = self.num_shards * self.blocks_per_shard
    # A block's loss is scaled by its task's weight over the task's expected blocks per step, so the
    # step's loss is the mixture-weighted sum of task losses whether the mixture acts through sampling
    # (one task per shard) or, once every task is in every step, through these scales alone.
    share = mixture.shard_share(self.weights, self.num_blocks)
    self.block_scale = np.array([self.weights[n] for n in self.order]) / share
    self._sharding = sharding_lib.batch_sharding(mesh)
    self._local_shards = _local_shard_indices(mesh)

  def plan(self, step: int) -> StepPlan:
    ids = mixture.task_schedule(self.weights, seed=self.seed, step=step, num_shards=self.num_blocks,
                                per_shard=self.per_shard_tasks)
    return StepPlan(step, np.asarray(ids, np.int32))

  def _block(self, plan: StepPlan, block: int) -> Block:
    task = self.tasks[plan.task_ids[block]]
    batch = task.batch(self.seed, plan.step, self.batch_size, shard=block, num_shards=self.num_blocks)
    texts_a, texts_b, texts_n = task.texts_for(batch)
    has_neg = texts_n is not None
    texts_n = texts_n if has_neg else [""] * len(texts_a)
    texts = texts_a + texts_b + texts_n
    b = len(texts_a)
    valid = np.ones(3 * b, bool)
    valid[2 * b:] = has_neg
    if batch.label_rows_a is not None:
      rows = [batch.label_rows_a, batch.label_rows_b]
      rows.append(batch.label_rows_negatives if has_neg else np.zeros_like(batch.label_rows_a))
      labels = np.concatenate(rows).astype(np.float32)
      related = labels @ labels.T > 0
    else:  # pairs without labels: a_i and b_i belong together
      related = np.zeros((3 * b, 3 * b), bool)
      related[np.arange(b), b + np.arange(b)] = related[b + np.arange(b), np.arange(b)] = True
    # The same text twice (one query with several relevant posts, a repeated pair) is related to
    # whatever either copy is related to, and to itself: never a negative.
    _, text_class = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
    same_text = text_class[:, None] == text_class[None, :]
    same = same_text.astype(np.int32)
    related = same_text | (same @ related.astype(np.int32) @ same > 0)
    return Block(texts, batch.targets.astype(np.float32), np.full(b, float(has_neg), np.float32),
                 related & valid[:, None] & valid[None, :], valid)

  def build(self, step: int) -> tuple[StepPlan, dict[str, jax.Array]]:
    """The global batch of `step`, texts packed several to a row (see `Encoder.embed_packed`).

    Blocks are numbered shard by shard (shard s holds blocks s*K .. s*K+K-1). Text
    `side * M * B + block * B + i` is row i of side a / b / negatives (side 0 / 1 / 2) of a block,
    M blocks in all; each shard's texts are packed into that shard's own rows, so the rows shard
    like any batch.
    """
    plan = self.plan(step)
    K, M, B, length = self.blocks_per_shard, self.num_blocks, self.batch_size, self.tokenizer.max_length
    shard_blocks = {s: list(range(s * K, (s + 1) * K)) for s in self._local_shards}
    blocks = {j: self._block(plan, j) for s in self._local_shards for j in shard_blocks[s]}
    packs = []
    for s in self._local_shards:
      texts = [t for j in shard_blocks[s] for t in blocks[j].texts]
      texts, _ = clean_texts([self.prefix + t for t in texts])
      tokens, _ = self.tokenizer.encode(texts)
      text_ids = [side * M * B + j * B + i for j in shard_blocks[s] for side in range(3) for i in range(B)]
      packs.append((tokens, text_ids, pack_rows(tokens, text_ids, length)))
    most = max(len(packing) for _, _, packing in packs)
    lengths = np.array([len(t) for tokens, _, _ in packs for t in tokens], np.int64)
    num_rows, counts = _across_processes(-(-most // self.rows_multiple) * self.rows_multiple,
                                         TokenCounts(len(lengths), int(lengths.sum()), int((lengths ** 2).sum())))
    plan = dataclasses.replace(plan, counts=counts)
    arrays = [packed_arrays(t, ids, packing, length, num_rows, self.tokenizer.pad_id) for t, ids, packing in packs]
    local_blocks = [blocks[j] for s in self._local_shards for j in shard_blocks[s]]
    local_ids = plan.task_ids[[j for s in self._local_shards for j in shard_blocks[s]]]
    local = {
        "ids": np.concatenate([a[0] for a in arrays]),
        "segments": np.concatenate([a[1] for a in arrays]),
        "positions": np.concatenate([a[2] for a in arrays]),
        "targets": np.concatenate([b.targets for b in local_blocks]),
        "negatives_valid": np.concatenate([b.negatives_valid for b in local_blocks]),
        "related": np.stack([b.related for b in local_blocks]),
        "valid": np.stack([b.valid for b in local_blocks]),
        "task_ids": local_ids,
        "block_scale": self.block_scale[local_ids].astype(np.float32),
    }
    return plan, {k: jax.make_array_from_process_local_data(self._sharding, v) for k, v in local.items()}


def _local_shard_indices(mesh: jax.sharding.Mesh) -> list[int]:
  """Data-parallel shard indices whose rows live on this process's devices."""
  sharding = sharding_lib.batch_sharding(mesh)
  num_shards = sharding_lib.data_parallel_size(mesh)
  index_map = sharding.addressable_devices_indices_map((num_shards,))
  return sorted({idx[0].start or 0 for idx in index_map.values()})


def _across_processes(num_rows: int, counts: TokenCounts) -> tuple[int, TokenCounts]:
  """The row count every process must use (the global batch has one shape) and the global counts."""
  if jax.process_count() == 1:
    return num_rows, counts
  # jax gathers int32 (x64 is off); a sum of squared lengths can pass 2**31, so it travels in two halves.
  sq_high, sq_low = divmod(counts.squared_lengths, 1 << 16)
  local = np.array([num_rows, counts.texts, counts.tokens, sq_high, sq_low], np.int32)
  gathered = np.asarray(multihost_utils.process_allgather(local), np.int64).reshape(-1, len(local))
  texts, tokens, sq_high, sq_low = (int(x) for x in gathered[:, 1:].sum(axis=0))
  return int(gathered[:, 0].max()), TokenCounts(texts, tokens, (sq_high << 16) + sq_low)


def task_sizes(tasks: Mapping[str, PairTask]) -> dict[str, int]:
  return {name: len(task) for name, task in tasks.items()}


def shard_task_names(order: Sequence[str], task_ids: np.ndarray) -> list[str]:
  return [order[i] for i in task_ids]

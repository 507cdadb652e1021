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
  """Which task each data-parallel shard trains at one step."""

  step: int
  task_ids: np.ndarray  # int [num_shards], indices into the mixture's task order
  counts: TokenCounts | None = None  # of the whole global batch, once `build` has tokenised it


@dataclasses.dataclass(frozen=True)
class ShardBlock:
  """One shard's rows of a step: its texts and what the loss needs about them."""

  texts: list[str]  # anchors, then partners, then negatives ("" where the task has none)
  targets: np.ndarray  # float32 [B]
  negatives_valid: np.ndarray  # float32 [B]
  same_label: np.ndarray  # bool [B, 2B]: True = not a negative for that row


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
    self._sharding = sharding_lib.batch_sharding(mesh)
    self._local_shards = _local_shard_indices(mesh)

  def plan(self, step: int) -> StepPlan:
    ids = mixture.task_schedule(self.weights, seed=self.seed, step=step, num_shards=self.num_shards,
                                per_shard=self.per_shard_tasks)
    return StepPlan(step, np.asarray(ids, np.int32))

  def _shard_block(self, plan: StepPlan, shard: int) -> ShardBlock:
    task = self.tasks[plan.task_ids[shard]]
    batch = task.batch(self.seed, plan.step, self.batch_size, shard=shard, num_shards=self.num_shards)
    texts_a, texts_b, texts_n = task.texts_for(batch)
    has_neg = texts_n is not None
    texts_n = texts_n if has_neg else [""] * len(texts_a)
    b = len(texts_a)
    # Columns are this block's partners then its negatives; True = not a negative for that row.
    same = np.zeros((b, 2 * b), bool)
    if batch.label_rows_a is not None:
      la = batch.label_rows_a.astype(np.float32)
      same[:, :b] = la @ batch.label_rows_b.astype(np.float32).T > 0
      if has_neg:
        same[:, b:] = la @ batch.label_rows_negatives.astype(np.float32).T > 0
    # Repeated partner texts (one query, several relevant posts; duplicated pairs) are no negatives.
    same[:, :b] |= batch.b[:, None] == batch.b[None, :]
    if not has_neg:
      same[:, b:] = True
    return ShardBlock(texts_a + texts_b + texts_n, batch.targets.astype(np.float32),
                      np.full(b, float(has_neg), np.float32), same)

  def build(self, step: int) -> tuple[StepPlan, dict[str, jax.Array]]:
    """The global batch of `step`, texts packed several to a row (see `Encoder.embed_packed`).

    Text `side * S * B + shard * B + i` is row i of side a / b / negatives (side 0 / 1 / 2) of a shard;
    each shard's texts are packed into that shard's own rows, so the rows shard like any batch.
    """
    plan = self.plan(step)
    blocks = [self._shard_block(plan, s) for s in self._local_shards]
    S, B, length = self.num_shards, self.batch_size, self.tokenizer.max_length
    packs = []
    for block, shard in zip(blocks, self._local_shards):
      texts, _ = clean_texts([self.prefix + t for t in block.texts])
      tokens, _ = self.tokenizer.encode(texts)
      text_ids = [side * S * B + shard * B + i for side in range(3) for i in range(B)]
      packs.append((tokens, text_ids, pack_rows(tokens, text_ids, length)))
    most = max(len(packing) for _, _, packing in packs)
    lengths = np.array([len(t) for tokens, _, _ in packs for t in tokens], np.int64)
    num_rows, counts = _across_processes(-(-most // self.rows_multiple) * self.rows_multiple,
                                         TokenCounts(len(lengths), int(lengths.sum()), int((lengths ** 2).sum())))
    plan = dataclasses.replace(plan, counts=counts)
    arrays = [packed_arrays(t, ids, packing, length, num_rows, self.tokenizer.pad_id) for t, ids, packing in packs]
    local = {
        "ids": np.concatenate([a[0] for a in arrays]),
        "segments": np.concatenate([a[1] for a in arrays]),
        "positions": np.concatenate([a[2] for a in arrays]),
        "targets": np.concatenate([b.targets for b in blocks]),
        "negatives_valid": np.concatenate([b.negatives_valid for b in blocks]),
        "same_label": np.concatenate([b.same_label for b in blocks]),
        "task_ids": plan.task_ids[self._local_shards],
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

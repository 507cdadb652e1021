"""Task mixtures: how often each task is trained on, and which task each data-parallel shard takes.

Both are pure functions of their arguments (no sampler state), so a resumed run or an ablation that
changes one task's weight replays every other decision exactly.

Task order: `task_schedule` returns indices into `task_order(weights)`, the task names SORTED, so
reordering tasks in a config changes nothing.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping

import numpy as np

SCHEMES = ("proportional", "temperature", "uniform", "explicit", "transfer")

# Leads every seed list so that schedule draws can never coincide with a task's data draws
# (numpy's SeedSequence treats [a, b] and [a, b, 0] alike, so distinct lengths are not enough).
_SCHEDULE_DOMAIN = 0x5C4ED


def mixture_weights(
    sizes: Mapping[str, int],
    scheme: str,
    *,
    temperature: float = 1.0,
    cap: int | None = None,
    explicit: Mapping[str, float] | None = None,
    transfer: Mapping[str, float] | None = None,
) -> dict[str, float]:
  """Sampling weight of each task, normalised to sum 1; tasks whose weight is 0 are left out.

  Schemes: "proportional" (min(size, cap)), "temperature" (seqio's min(size, cap) ** (1 / T)),
  "uniform" (1 each), "explicit" (`explicit` gives every task's weight) and "transfer" (`transfer`
  gives them: `transfer_factors` of an ablation's measured effects). Under the other schemes
  `explicit` multiplies the named tasks' weights, so `explicit={"hate": 0}` is leave-one-out and
  `explicit={t: 0 for t in others}` is single-task, both as config overrides.
  """
  if scheme not in SCHEMES:
    raise ValueError(f"unknown mixture scheme {scheme!r}; expected one of {SCHEMES}")
  if temperature <= 0:
    raise ValueError(f"mixture temperature must be > 0, got {temperature}")
  if cap is not None and cap <= 0:
    raise ValueError(f"mixture cap must be > 0, got {cap}")
  for task, size in sizes.items():
    if size <= 0:
      raise ValueError(f"task {task!r}: size must be > 0, got {size}")
  explicit = dict(explicit or {})
  for task, weight in explicit.items():
    if task not in sizes:
      raise ValueError(f"task {task!r} in explicit weights is not in the mixture {sorted(sizes)}")
    if not weight >= 0:  # also catches NaN
      raise ValueError(f"task {task!r}: weight must be >= 0, got {weight}")

  if scheme == "explicit":
    missing = sorted(set(sizes) - set(explicit))
    if missing:
      raise ValueError(f"scheme 'explicit' needs a weight for every task; missing {missing}")
    raw = {task: float(explicit[task]) for task in sizes}
  elif scheme == "transfer":
    missing = sorted(set(sizes) - set(transfer or {}))
    if missing:
      raise ValueError(f"scheme 'transfer' needs a factor for every task; missing {missing}")
    raw = {task: float(transfer[task]) * float(explicit.get(task, 1.0)) for task in sizes}
  else:
    raw = {}
    for task, size in sizes.items():
      capped = min(size, cap) if cap is not None else size
      base = {"proportional": float(capped), "temperature": float(capped) ** (1.0 / temperature),
              "uniform": 1.0}[scheme]
      raw[task] = base * float(explicit.get(task, 1.0))

  total = sum(raw.values())
  if total <= 0:
    raise ValueError(f"every task's weight is 0 (tasks {sorted(sizes)}); nothing left to train on")
  return {task: weight / total for task, weight in raw.items() if weight > 0}


def transfer_factors(report: Mapping, *, penalty: float) -> dict[str, float]:
  """The "transfer" scheme's rule: a task that measurably hurts the others gets `penalty`, every
  other task 1.

  `report` is an ablation's transfer.json. Its "gives_others" entry holds, per left-out task t, the
  paired difference all tasks - all but t, averaged over the other trained tasks, with a 95%
  interval (pe_jax/ablation/stats.py). t hurts the others when that interval lies wholly below 0:
  leaving t out made them measurably better. A task inside the noise, one that helps, and one the
  ablation did not leave out keep 1, so without clear evidence the mixture stays uniform.
  penalty 0 drops such a task; 0.5 halves its loss weight.
  """
  if not 0 <= penalty <= 1:
    raise ValueError(f"config.mixture.transfer_penalty must be in [0, 1], got {penalty}")
  effects = report.get("gives_others") or {}
  if not effects:
    raise ValueError("the transfer file holds no leave-one-out effects ('gives_others'); run the ablation "
                     "with 'leave_one_out' in ablation.kinds first")
  factors = {task: 1.0 for task in report["tasks"]}
  for task, effect in effects.items():
    if effect["high"] < 0:
      factors[task] = float(penalty)
  return factors


def marks_every_task(factors: Mapping[str, float]) -> bool:
  """Whether `transfer_factors` penalised every task: equal factors cancel in the normalisation (or drop
  every task at penalty 0), so such a "learnt" mixture is the uniform one, or empty, under another name."""
  return max(factors.values()) < 1


def config_weights(config, sizes: Mapping[str, int]) -> dict[str, float]:
  """`mixture_weights` as a training config (`config.mixture`, `config.tasks[t].weight`) asks for them."""
  explicit = {name: spec.weight for name, spec in config.tasks.items() if name in sizes}
  transfer = None
  if config.mixture.scheme == "transfer":
    path = config.mixture.get("transfer_file")
    if not path:
      raise ValueError("config.mixture.scheme='transfer' needs config.mixture.transfer_file (an ablation's "
                       "transfer.json)")
    try:
      report = json.loads(pathlib.Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
      raise ValueError(f"config.mixture.transfer_file={path!r}: cannot read it ({e})") from e
    factors = transfer_factors(report, penalty=config.mixture.get("transfer_penalty", 0.0))
    transfer = {t: factors.get(t, 1.0) for t in sizes}
    if marks_every_task(transfer):
      raise ValueError(f"config.mixture.transfer_file={path!r} marks every task ({', '.join(sorted(sizes))}) as "
                       f"hurting the others: the transfer mixture would be the uniform one (or empty at penalty 0), "
                       f"so there is nothing to learn from this file; train the uniform mixture instead")
  return mixture_weights(sizes, config.mixture.scheme, temperature=config.mixture.temperature,
                         cap=config.mixture.cap, explicit=explicit, transfer=transfer)


def task_order(weights: Mapping[str, float]) -> list[str]:
  """Task names in the order that `task_schedule`'s indices refer to (sorted)."""
  return sorted(weights)


def task_schedule(
    weights: Mapping[str, float], *, seed: int, step: int, num_shards: int, per_shard: bool
) -> np.ndarray:
  """Task index (into `task_order(weights)`) for each data-parallel shard at `step`, int [num_shards].

  per_shard=False: one task a step, drawn with probability = weight, the same on every shard.
  per_shard=True (the paper's scheme): shards take different tasks when num_shards <= num tasks;
  with more shards than tasks every task gets at least one shard. Counts are drawn by systematic
  sampling with expected shard counts `shard_share(...)` = num_shards * weight, clipped to at most 1
  (or at least 1 when shards outnumber tasks) with the difference spread in proportion to the
  weights, so each task's share of all shards over many steps equals its weight whenever no clip
  binds (max weight <= 1 / num_shards when num_shards <= num tasks).
  """
  if seed < 0 or step < 0:
    raise ValueError(f"seed and step must be >= 0, got seed={seed}, step={step}")
  if num_shards < 1:
    raise ValueError(f"num_shards must be >= 1, got {num_shards}")
  p = _probabilities(weights)
  rng = np.random.default_rng([_SCHEDULE_DOMAIN, seed, step])
  if not per_shard:
    return np.full(num_shards, rng.choice(len(p), p=p), dtype=np.int64)

  order = rng.permutation(len(p))
  ends = np.cumsum(shard_share(weights, num_shards)[order])
  # Points u, u+1, ..., spaced one apart: a segment no longer than 1 holds at most one of them.
  points = rng.random() + np.arange(num_shards)
  slots = np.minimum(np.searchsorted(ends, points, side="right"), len(p) - 1)
  return rng.permutation(order[slots])


def shard_share(weights: Mapping[str, float], num_shards: int) -> np.ndarray:
  """Expected number of shards per step for each task (in `task_order`) under per_shard=True."""
  p = _probabilities(weights)
  bound = 1.0
  at_most = num_shards <= len(p)
  clipped = np.zeros(len(p), dtype=bool)
  # Water-filling: clip the tasks past the bound, rescale the rest to fill the remaining shards.
  while not clipped.all():
    c = (num_shards - bound * clipped.sum()) / p[~clipped].sum()
    past = ~clipped & ((c * p > bound) if at_most else (c * p < bound))
    if not past.any():
      return np.where(clipped, bound, c * p)
    clipped |= past
  return np.full(len(p), bound)


def _probabilities(weights: Mapping[str, float]) -> np.ndarray:
  if not weights:
    raise ValueError("task mixture is empty")
  names = task_order(weights)
  p = np.array([weights[name] for name in names], dtype=np.float64)
  bad = [name for name, w in zip(names, p) if not w > 0]
  if bad:
    raise ValueError(f"tasks {bad} have weight <= 0; drop them with mixture_weights first")
  return p / p.sum()

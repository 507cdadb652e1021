"""Which training runs an ablation makes, each with a matched per-task example budget.

The all-tasks run trains `config.total_steps` steps; under its mixture each task t is expected to
fill `share_t` of the `num_shards` data-parallel shards per step, i.e. to see
`total_steps * share_t * batch_size` examples. Every other run gives each of its tasks exactly that
expected number of examples:

  only_t      total_steps * share_t / num_shards steps, every shard on t;
  without_t   total_steps * (num_shards - share_t) / num_shards steps, the mixture renormalised
              over the other tasks (exact for schemes whose weights are per-task: proportional,
              temperature, uniform, explicit; with shard clipping, in expectation).

So a difference between runs is the effect of the other tasks' data, not of a longer schedule for t.
Warm-up scales with the run's length; the seed, evaluation suite and every other setting are shared.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import ml_collections
import numpy as np

from pe_jax.tasks import mixture

KINDS = ("single", "all", "leave_one_out")
ALL = "all"


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of the ablation."""

  name: str  # "all", "only_<task>" or "without_<task>"
  kind: str  # one of KINDS
  seed: int
  tasks: tuple[str, ...]  # trained on, sorted
  total_steps: int

  @property
  def path(self) -> str:
    """Where the run lives under the ablation workdir."""
    return f"runs/{self.name}/seed_{self.seed}"


def run_name(kind: str, task: str | None = None) -> str:
  return {"single": f"only_{task}", "all": ALL, "leave_one_out": f"without_{task}"}[kind]


def mixture_shares(config: ml_collections.ConfigDict, sizes: Mapping[str, int], num_shards: int) -> dict[str, float]:
  """Expected data-parallel shards per step for each task of the full mixture (sums to num_shards)."""
  explicit = {name: spec.weight for name, spec in config.tasks.items() if name in sizes}
  weights = mixture.mixture_weights(sizes, config.mixture.scheme, temperature=config.mixture.temperature,
                                    cap=config.mixture.cap, explicit=explicit)
  if config.mixture.per_shard:
    share = mixture.shard_share(weights, num_shards)
  else:
    share = np.array([weights[t] for t in mixture.task_order(weights)]) * num_shards
  return dict(zip(mixture.task_order(weights), map(float, share)))


def plan_runs(config: ml_collections.ConfigDict, sizes: Mapping[str, int], num_shards: int) -> list[Run]:
  """Every run of `config.ablation` for every seed; raises before any training on a bad ablation.

  `sizes`: the training tasks (non-zero weight) and their sizes, as the trainer counts them.
  """
  if config.mixture.get("tasks_per_step", 1) != 1:
    raise ValueError(f"config.mixture.tasks_per_step={config.mixture.tasks_per_step}: the ablation's matched "
                     f"budgets count one task block per shard and step; set config.mixture.tasks_per_step=1")
  ablation = config.ablation
  unknown_kinds = sorted(set(ablation.kinds) - set(KINDS))
  if unknown_kinds:
    raise ValueError(f"ablation.kinds: unknown {unknown_kinds}; known: {list(KINDS)}")
  if not ablation.seeds:
    raise ValueError("ablation.seeds is empty: give at least one seed")
  trained = sorted(sizes)
  focus = list(ablation.tasks) or trained
  missing = [t for t in focus if t not in sizes]
  if missing:
    dropped = [t for t in missing if t in config.tasks]
    raise ValueError(
        f"ablation.tasks names {missing}, not in the mixture {trained}"
        + (f" ({dropped} have weight 0 in config.tasks)" if dropped else ""))

  share = mixture_shares(config, sizes, num_shards)
  steps_all = config.total_steps
  runs_by_seed: list[tuple[str, str, tuple[str, ...], float]] = []
  if "single" in ablation.kinds:
    runs_by_seed += [("single", run_name("single", t), (t,), steps_all * share[t] / num_shards) for t in focus]
  if "all" in ablation.kinds:
    runs_by_seed.append(("all", ALL, tuple(trained), float(steps_all)))
  if "leave_one_out" in ablation.kinds:
    if len(trained) < 3:
      raise ValueError(f"leave_one_out needs at least 3 tasks in the mixture (with 2 it repeats the "
                       f"single-task runs); the mixture has {trained}")
    runs_by_seed += [("leave_one_out", run_name("leave_one_out", t), tuple(u for u in trained if u != t),
                      steps_all * (num_shards - share[t]) / num_shards) for t in focus]

  # Every task must get at least one step of its own in the all-tasks run, or no run means anything.
  starved = {t: steps_all * share[t] / num_shards for t in trained if steps_all * share[t] / num_shards < 1}
  for kind, name, tasks, steps in runs_by_seed:
    if round(steps) < 1:
      starved.setdefault(tasks[0], steps)
  if starved:
    detail = ", ".join(f"{t}: {s:.2f} expected steps" for t, s in sorted(starved.items()))
    raise ValueError(f"the budget of {steps_all} steps leaves tasks with zero steps ({detail}); raise "
                     f"total_steps or these tasks' weights (mixture {config.mixture.scheme})")
  # Leave-one-out costs (tasks - 1) x the all-tasks run; it may run on fewer seeds than the rest.
  loo_seeds = tuple(ablation.get("leave_one_out_seeds") or ()) or tuple(ablation.seeds)
  return [Run(name, kind, seed, tasks, int(round(steps)))
          for seed in dict.fromkeys((*ablation.seeds, *loo_seeds))
          for kind, name, tasks, steps in runs_by_seed
          if seed in (loo_seeds if kind == "leave_one_out" else ablation.seeds)]


def run_config(config: ml_collections.ConfigDict, run: Run) -> ml_collections.ConfigDict:
  """The training config of one run: the ablation's config with other tasks at weight 0."""
  c = config.copy_and_resolve_references()
  with c.unlocked():
    del c["ablation"]
  for name in c.tasks:
    if name not in run.tasks:
      c.tasks[name].weight = 0.0
  fraction = run.total_steps / config.total_steps
  c.seed = run.seed
  c.total_steps = run.total_steps
  c.optimizer.warmup_steps = int(round(config.optimizer.warmup_steps * fraction))
  c.eval_every = run.total_steps  # one evaluation, at the end
  c.checkpoint_every = min(config.checkpoint_every, run.total_steps) or run.total_steps
  return c


def summarize(runs: Sequence[Run]) -> str:
  total = sum(r.total_steps for r in runs)
  return f"{len(runs)} runs, {total} training steps in all"

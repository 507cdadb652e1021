"""Which training runs an ablation makes, each with a matched per-task anchor budget, and their cost.

A run of the ablation trains a subset of the tasks (or all of them under a variant of the recipe).
Per step it holds `blocks_t` task blocks of `batch_size` anchors for each of its tasks t: under
`mixture.tasks_per_step=0` (every task in every step, the recipe) one block each while the tasks
fit the shards; under 1 (the paper's one task per shard) the mixture's expected shards per step.
The all-tasks run trains `config.total_steps` steps; every other run is as long as it takes to give
its tasks the anchors they get there:

  only_t          t's anchors:                  steps_all * blocks_t(all) / blocks_t(only_t)
  without_t       the other tasks' anchors:     steps_all * sum_u!=t blocks_u(all) / sum_u blocks_u(without_t)
  variant_<name>  all anchors, recipe changed:  steps_all * sum_u blocks_u(all) / sum_u blocks_u(variant)

Under tasks_per_step=0 every run is then `total_steps` long (one block per task and step, and
the mixture weights act on the losses only); under 1 a single-task run is share_t of it. The
without_t budget is exact whenever the mixture's weights are per-task (proportional, temperature,
uniform, explicit, transfer), because leaving t out scales the others alike. So a difference
between runs is the effect of the other tasks' data, not of a longer schedule for t. Warm-up scales
with the run's length; the seed, evaluation suite and every other setting are shared.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import ml_collections
import numpy as np

from pe_jax.tasks import mixture
from pe_jax.training import batches, workdir

KINDS = ("single", "all", "leave_one_out", "variant")
ALL = "all"


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of the ablation."""

  name: str  # "all", "only_<task>", "without_<task>" or "variant_<name>"
  kind: str  # one of KINDS
  seed: int
  tasks: tuple[str, ...]  # trained on, sorted
  total_steps: int
  blocks: tuple[tuple[str, float], ...] = ()  # (task, expected blocks per step), sorted by task
  variant: str | None = None  # the name in ablation.variants (kind "variant")

  @property
  def path(self) -> str:
    """Where the run lives under the ablation workdir."""
    return f"runs/{self.name}/seed_{self.seed}"

  def anchors(self, batch_size: int) -> dict[str, int]:
    """Expected anchors of each task over the whole run."""
    return {t: int(round(self.total_steps * b * batch_size)) for t, b in self.blocks}

  def texts(self, batch_size: int) -> int:
    """Texts through the encoder over the whole run (anchor, positive, negative per pair)."""
    return int(round(3 * batch_size * self.total_steps * sum(b for _, b in self.blocks)))


def run_name(kind: str, task: str | None = None) -> str:
  return {"single": f"only_{task}", "all": ALL, "leave_one_out": f"without_{task}",
          "variant": f"variant_{task}"}[kind]


def training_config(config: ml_collections.ConfigDict, tasks: Sequence[str],
                    variant: str | None = None) -> ml_collections.ConfigDict:
  """The ablation's config training only `tasks` (the others at weight 0), under `variant`'s changes."""
  c = config.copy_and_resolve_references()
  with c.unlocked():
    del c["ablation"]
  if variant is not None:
    changes = workdir.flatten(config.ablation.variants[variant].to_dict())
    flat = workdir.flatten(workdir.config_to_dict(c))
    unknown = sorted(k for k in changes if k not in flat)
    if unknown:  # a typo would otherwise add a key nobody reads, and the variant would be the recipe
      raise ValueError(f"ablation.variants.{variant}: {unknown} are not keys of the config")
    c.update_from_flattened_dict(changes)
  for name in c.tasks:
    if name not in tasks:
      c.tasks[name].weight = 0.0
  return c


def blocks_per_step(config: ml_collections.ConfigDict, sizes: Mapping[str, int], num_shards: int) -> dict[str, float]:
  """Expected task blocks per step of each task a training `config` trains, as BatchBuilder lays them out."""
  weights = mixture.config_weights(config, sizes)
  num_blocks = batches.num_blocks(config, len(weights), num_shards)
  order = mixture.task_order(weights)
  if config.mixture.per_shard:
    share = mixture.shard_share(weights, num_blocks)
  else:  # one task a step, drawn by weight, on every block
    share = np.array([weights[t] for t in order]) * num_blocks
  return dict(zip(order, map(float, share)))


def seed_lists(ablation: ml_collections.ConfigDict) -> dict[str, tuple[int, ...]]:
  """Seeds per kind: leave-one-out and variants may run on fewer seeds (empty: ablation.seeds)."""
  if not ablation.seeds:
    raise ValueError("ablation.seeds is empty: give at least one seed, e.g. --config.ablation.seeds='(0,)'")
  seeds = tuple(ablation.seeds)
  for key in ("seeds", "leave_one_out_seeds", "variant_seeds"):
    values = tuple(ablation.get(key) or ())
    bad = [s for s in values if not isinstance(s, int) or s < 0]
    if bad or len(set(values)) != len(values):
      raise ValueError(f"ablation.{key}={values}: seeds must be distinct integers >= 0")
  return {"single": seeds, "all": seeds, "leave_one_out": tuple(ablation.get("leave_one_out_seeds") or ()) or seeds,
          "variant": tuple(ablation.get("variant_seeds") or ()) or seeds}


def plan_runs(config: ml_collections.ConfigDict, sizes: Mapping[str, int], num_shards: int) -> list[Run]:
  """Every run of `config.ablation` for every seed; raises before any training on a bad ablation.

  `sizes`: the training tasks (non-zero weight) and their sizes, as the trainer counts them.
  """
  ablation = config.ablation
  unknown_kinds = sorted(set(ablation.kinds) - set(KINDS))
  if unknown_kinds:
    raise ValueError(f"ablation.kinds: unknown {unknown_kinds}; known: {list(KINDS)}")
  seeds = seed_lists(ablation)
  trained = sorted(sizes)
  focus = list(ablation.tasks) or trained
  missing = [t for t in focus if t not in sizes]
  if missing:
    dropped = [t for t in missing if t in config.tasks]
    raise ValueError(
        f"ablation.tasks names {missing}, not in the mixture {trained}"
        + (f" ({dropped} have weight 0 in config.tasks)" if dropped else ""))
  variants = list((ablation.get("variants") or {}).keys()) if "variant" in ablation.kinds else []
  if "variant" in ablation.kinds and not variants:
    raise ValueError("ablation.kinds has 'variant' but ablation.variants is empty")

  def blocks(tasks, variant=None):
    c = training_config(config, tasks, variant)
    return blocks_per_step(c, {t: sizes[t] for t in tasks}, num_shards)

  steps_all = config.total_steps
  all_blocks = blocks(trained)
  specs: list[tuple[str, str, tuple[str, ...], float, dict[str, float], str | None]] = []
  if "single" in ablation.kinds:
    for t in focus:
      b = blocks([t])
      specs.append(("single", run_name("single", t), (t,), steps_all * all_blocks[t] / b[t], b, None))
  if "all" in ablation.kinds:
    specs.append(("all", ALL, tuple(trained), float(steps_all), all_blocks, None))
  if "leave_one_out" in ablation.kinds:
    if len(trained) < 3:
      raise ValueError(f"leave_one_out needs at least 3 tasks in the mixture (with 2 it repeats the "
                       f"single-task runs); the mixture has {trained}")
    for t in focus:
      others = tuple(u for u in trained if u != t)
      b = blocks(others)
      steps = steps_all * sum(all_blocks[u] for u in others) / sum(b.values())
      specs.append(("leave_one_out", run_name("leave_one_out", t), others, steps, b, None))
  for v in variants:
    b = blocks(trained, v)
    specs.append(("variant", run_name("variant", v), tuple(trained), steps_all * sum(all_blocks.values())
                  / sum(b.values()), b, v))

  # Every task must get at least one step of its own in the all-tasks run, or no run means anything.
  starved = {t: steps_all * all_blocks[t] for t in trained if steps_all * all_blocks[t] < 1}
  for _, _, tasks, steps, _, _ in specs:
    if round(steps) < 1:
      starved.setdefault(tasks[0], steps)
  if starved:
    detail = ", ".join(f"{t}: {s:.2f} expected steps" for t, s in sorted(starved.items()))
    raise ValueError(f"the budget of {steps_all} steps leaves tasks with zero steps ({detail}); raise "
                     f"total_steps or these tasks' weights (mixture {config.mixture.scheme})")

  runs = [Run(name, kind, seed, tasks, int(round(steps)), tuple(sorted(b.items())), variant)
          for seed in dict.fromkeys(s for kind in KINDS for s in seeds[kind])
          for kind, name, tasks, steps, b, variant in specs if seed in seeds[kind]]
  _check_anchors(config, runs)
  return runs


def _check_anchors(config: ml_collections.ConfigDict, runs: Sequence[Run]) -> None:
  """Refuses a budget giving a task fewer than ablation.min_anchors anchors in a single or all-tasks run."""
  wanted = config.ablation.get("min_anchors", 0)
  for run in runs:
    if run.kind not in ("single", "all"):
      continue
    for task, n in sorted(run.anchors(config.batch_size).items()):
      if n < wanted:
        per_step = dict(run.blocks)[task] * config.batch_size
        need = int(np.ceil(wanted / per_step * config.total_steps / run.total_steps))
        raise ValueError(f"ablation.min_anchors={wanted}: task {task!r} gets {n} anchors in run {run.name} "
                         f"({run.total_steps} steps x {per_step:g}); raise total_steps to >= {need}")


def run_config(config: ml_collections.ConfigDict, run: Run) -> ml_collections.ConfigDict:
  """The training config of one run: the ablation's config with other tasks at weight 0.

  The run does not evaluate itself: the ablation scores its last checkpoint once, on the suite
  it shares with every other run (pe_jax/ablation/runner.py).
  """
  c = training_config(config, run.tasks, run.variant)
  fraction = run.total_steps / config.total_steps
  c.seed = run.seed
  c.total_steps = run.total_steps
  c.optimizer.warmup_steps = int(round(config.optimizer.warmup_steps * fraction))
  c.eval_every = 0
  c.checkpoint_every = min(config.checkpoint_every, run.total_steps) or run.total_steps
  return c


def estimate_seconds(config: ml_collections.ConfigDict, runs: Sequence[Run], num_evaluations: int) -> float:
  """The ablation's wall time from the config's documented costs: ablation.seconds_per_text (a training
  text through the encoder) and ablation.seconds_per_eval (a run's start-up and one evaluation)."""
  texts = sum(r.texts(config.batch_size) for r in runs)
  return texts * config.ablation.seconds_per_text + num_evaluations * config.ablation.seconds_per_eval


def format_plan(config: ml_collections.ConfigDict, runs: Sequence[Run], baselines: Sequence[str]) -> str:
  """The whole plan, one line a run name (its seeds, steps, anchors per task, estimated time), and the total."""
  lines = [f"{'run':<28} {'seeds':<12} {'steps':>6} {'minutes':>8}  anchors per task and seed  (minutes: all seeds)"]
  by_name: dict[str, list[Run]] = {}
  for r in runs:
    by_name.setdefault(r.name, []).append(r)
  for name, rs in by_name.items():
    r = rs[0]
    anchors = r.anchors(config.batch_size)
    low, high = min(anchors.values()), max(anchors.values())
    shown = (", ".join(f"{t} {n}" for t, n in anchors.items()) if len(anchors) == 1
             else f"{low}{'' if low == high else f'-{high}'} each of {len(anchors)} tasks")
    minutes = len(rs) * estimate_seconds(config, [r], 1) / 60
    lines.append(f"{name:<28} {','.join(str(x.seed) for x in rs):<12} {r.total_steps:>6} {minutes:>8.1f}  {shown}")
  if baselines:
    lines.append(f"{'baselines ' + ','.join(baselines):<48} {config.ablation.seconds_per_eval / 60:>8.1f}")
  total = estimate_seconds(config, runs, len(runs) + bool(baselines)) / 3600
  lines.append(f"{len(runs)} runs, {sum(r.total_steps for r in runs)} steps, "
               f"{sum(r.texts(config.batch_size) for r in runs):,} training texts, {len(runs) + bool(baselines)} "
               f"evaluations: about {total:.1f} h at {config.ablation.seconds_per_text} s a training text and "
               f"{config.ablation.seconds_per_eval:g} s an evaluation (ablation.seconds_per_text, seconds_per_eval)")
  return "\n".join(lines)

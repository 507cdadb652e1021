"""The ablation's report: scores per run (mean and spread over seeds), paired differences with 95%
intervals, a verdict per task.

Every difference is paired on the same triplets and seeds (pe_jax/ablation/stats.py: percentile
bootstrap over triplets and seeds); a cell counts only when its interval excludes 0.

  transfer[row][task]     row - the single-task model of task (the paper's comparison); the
                          verdict per task is that of row "all"
  leave_one_out[row][u]   without_t - all on each other task u: what dropping t does to u
  gives_others[t]         all - without_t averaged over the other tasks: > 0, t helps them
                          (the "transfer" mixture reads this, pe_jax/tasks/mixture.py)
  versus_all[row][task]   a baseline or variant - all, plus "mean" over the trained tasks: what
                          each choice of the recipe is worth
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from pe_jax.ablation import stats
from pe_jax.ablation.plan import ALL, Run, run_name
from pe_jax.evaluation.suite import MEAN_KEY
from pe_jax.tasks import mixture

JSON_FILE, MARKDOWN_FILE, PLOT_FILE = "transfer.json", "transfer.md", "transfer.png"
TRIPLET = "triplet_acc"
NATURAL = "knn_macro_f1"
MEAN_COLUMN = "mean"
# Outcomes of one model: {task: float [num_triplets]}; of a trained row: one such dict per seed.
Outcomes = Mapping[str, np.ndarray]


def _spread(values: Sequence[float]) -> dict[str, Any]:
  v = np.asarray(values, dtype=np.float64)
  return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": len(v)}


def build_report(config: ml_collections.ConfigDict, runs: Sequence[Run],
                 finished: Mapping[tuple[str, int], Mapping[str, float]],
                 outcomes: Mapping[tuple[str, int], Outcomes],
                 reference: Mapping[str, Mapping[str, float]],
                 reference_outcomes: Mapping[str, Outcomes]) -> dict[str, Any]:
  """Everything the markdown, the plot and a notebook need, JSON-ready.

  `finished`/`outcomes`: scores and per-triplet outcomes of each (run name, seed);
  `reference`/`reference_outcomes`: those of the untrained baselines (seedless).
  """
  trained = sorted({t for r in runs for t in r.tasks})
  names = list(reference) + list(dict.fromkeys(r.name for r in sorted(runs, key=_row_order)))
  seeds_of = {name: sorted(s for n, s in finished if n == name) for name in names[len(reference):]}
  rows: dict[str, dict[str, dict[str, Any]]] = {}
  for name, results in reference.items():
    rows[name] = {k: _spread([v]) for k, v in results.items()}
  for name, seeds in seeds_of.items():
    per_seed = [finished[(name, s)] for s in seeds]
    keys = sorted(set().union(*per_seed))
    rows[name] = {k: _spread([r[k] for r in per_seed if k in r]) for k in keys}

  def outcome(name: str, seed: int, task: str) -> np.ndarray | None:
    got = reference_outcomes[name] if name in reference_outcomes else outcomes.get((name, seed), {})
    return got.get(task)

  def diff(a: str, b: str, task: str) -> np.ndarray | None:
    """[seeds, triplets] of a - b on `task`, over the seeds both ran (a baseline has every seed)."""
    sa, sb = (None if n in reference else set(seeds_of.get(n, ())) for n in (a, b))
    seeds = sorted(sa & sb if sa is not None and sb is not None else sa or sb or {0})
    pairs = [(outcome(a, s, task), outcome(b, s, task)) for s in seeds]
    if not pairs or any(x is None or y is None for x, y in pairs):
      return None
    return np.stack([x - y for x, y in pairs])

  def compare(a: str, b: str, tasks: Sequence[str]) -> dict[str, dict[str, Any]]:
    cells = {t: d for t in tasks if (d := diff(a, b, t)) is not None}
    out = {t: stats.paired_difference([d]) for t, d in cells.items()}
    if len(cells) > 1:
      # One seed draw for all tasks: only the seeds every task's difference has in common.
      if len({d.shape[0] for d in cells.values()}) == 1:
        out[MEAN_COLUMN] = stats.paired_difference(list(cells.values()))
    return out

  transfer = {}
  for name in names:
    row = {}
    for task in trained:
      single = run_name("single", task)
      if name != single and single in seeds_of and (d := diff(name, single, task)) is not None:
        row[task] = stats.paired_difference([d])
    if row:
      transfer[name] = row
  verdict = {task: cell["verdict"] for task, cell in transfer.get(ALL, {}).items()}

  leave_one_out, gives_others = {}, {}
  if ALL in seeds_of:
    for task in trained:
      name = run_name("leave_one_out", task)
      if name in seeds_of:
        others = [u for u in trained if u != task]
        leave_one_out[name] = compare(name, ALL, others)
        helps = [d for u in others if (d := diff(ALL, name, u)) is not None]
        if helps and len({d.shape[0] for d in helps}) == 1:
          gives_others[task] = stats.paired_difference(helps)
  versus_all = {}
  if ALL in seeds_of:
    for name in names:
      if name in reference or name.startswith(run_name("variant", "")):
        versus_all[name] = compare(name, ALL, trained)

  report = {
      "tasks": trained,
      "zero_shot": sorted(config.eval.zero_shot),
      "held_out_tasks": sorted(set(config.tasks) - set(trained)),
      "budget": {"all_tasks_steps": config.total_steps, "batch_size": config.batch_size,
                 "mixture": config.mixture.scheme, "tasks_per_step": config.mixture.get("tasks_per_step", 1),
                 "seeds": sorted({r.seed for r in runs}), "num_triplets": config.eval.num_triplets,
                 "steps": {r.name: r.total_steps for r in runs},
                 "anchors": {r.name: r.anchors(config.batch_size) for r in runs}},
      "variants": {r.name: config.ablation.variants[r.variant].to_dict() for r in runs if r.variant},
      "method": f"paired percentile bootstrap over triplets and seeds, {stats.LEVEL:.0%} interval",
      "rows": rows, "transfer": transfer, "verdict": verdict,
      "leave_one_out": leave_one_out, "gives_others": gives_others, "versus_all": versus_all,
  }
  if gives_others:  # what mixture.scheme="transfer" would make of this report, at the config's penalty
    penalty = config.mixture.get("transfer_penalty", 0.0)
    report["transfer_mixture"] = {"penalty": penalty,
                                  "factors": mixture.transfer_factors(report, penalty=penalty)}
  return report


def _row_order(run: Run) -> tuple[int, str]:
  return ({"single": 0, "all": 1, "leave_one_out": 2, "variant": 3}[run.kind], run.name)


# --- Writing -----------------------------------------------------------------------------------------

def write_report(report: Mapping[str, Any], workdir: pathlib.Path) -> None:
  (workdir / JSON_FILE).write_text(json.dumps(report, indent=2))
  (workdir / MARKDOWN_FILE).write_text(to_markdown(report))
  if report["transfer"] or report["leave_one_out"]:
    plot_transfer_matrix(report, workdir / PLOT_FILE)


def _cell(stat: Mapping[str, Any] | None) -> str:
  if stat is None:
    return ""
  return f"{stat['mean']:.3f}" + (f" ±{stat['std']:.3f}" if stat["n"] > 1 else "")


def _interval(cell: Mapping[str, Any] | None) -> str:
  """`+0.012 [-0.003, +0.027]`, in bold when the interval excludes 0."""
  if cell is None:
    return ""
  text = f"{cell['mean']:+.3f} [{cell['low']:+.3f}, {cell['high']:+.3f}]"
  return text if cell["verdict"] == stats.NEUTRAL else f"**{text}**"


def _table(report: Mapping[str, Any], columns: Sequence[str], header: Sequence[str]) -> list[str]:
  lines = ["| model | " + " | ".join(header) + " |", "|---" * (len(columns) + 1) + "|"]
  for name, row in report["rows"].items():
    lines.append(f"| {_label(name)} | " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
  return lines


def _interval_table(matrix: Mapping[str, Mapping[str, Any]], columns: Sequence[str]) -> list[str]:
  lines = ["| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
  for name, row in matrix.items():
    lines.append(f"| {_label(name)} | " + " | ".join(_interval(row.get(c)) for c in columns) + " |")
  return lines


def _label(name: str) -> str:
  return {"base": "base (untuned, full width)", "base_pca": "base, PCA to the projection width",
          ALL: "**all tasks**"}.get(name, name)


def to_markdown(report: Mapping[str, Any]) -> str:
  tasks, budget = report["tasks"], report["budget"]
  out = [
      "# Positive-transfer ablation", "",
      f"All-tasks run: {budget['all_tasks_steps']} steps, blocks of {budget['batch_size']} anchors, mixture "
      f"`{budget['mixture']}`, tasks_per_step {budget['tasks_per_step']}; every other run gives each of its "
      f"tasks the anchors it gets there. Seeds: {budget['seeds']} (± in the score tables is the standard "
      f"deviation across seeds). Triplet accuracy on {budget['num_triplets']} fixed triplets per task.", "",
      "Steps per run: " + ", ".join(f"{k} {v}" for k, v in budget["steps"].items()) + ".", "",
      f"Differences: {report['method']}, each pair of models on the same triplets and seeds; **bold**: the "
      "interval excludes 0.", "",
      "## Triplet accuracy on the trained tasks", "",
      *_table(report, [f"{t}/{TRIPLET}" for t in tasks] + [MEAN_KEY], tasks + ["mean"]), ""]
  metrics = set().union(*(row.keys() for row in report["rows"].values()))
  natural = [f"{t}/{NATURAL}" for t in tasks if f"{t}/{NATURAL}" in metrics]
  if natural:
    out += [f"## {NATURAL} (k-NN classifier on the embedding, the tasks' natural metric)", "",
            *_table(report, natural, [c.split("/")[0] for c in natural]), ""]
  zero_shot = sorted(k for k in metrics if k.split("/")[0] in set(report["zero_shot"]) | set(report["held_out_tasks"]))
  if zero_shot:
    out += ["## Zero-shot: tasks and sets no run trained on", "", *_table(report, zero_shot, zero_shot), ""]
  if report["transfer"]:
    out += ["## Transfer: change against each task's single-task model", "",
            *_interval_table(report["transfer"], tasks), ""]
  if report["verdict"]:
    out += ["## Verdict (all tasks vs single task)", ""]
    for task, word in report["verdict"].items():
      cell = report["transfer"][ALL][task]
      out.append(f"- {task}: {word} ({cell['mean']:+.3f}, 95% [{cell['low']:+.3f}, {cell['high']:+.3f}], "
                 f"{cell['num_seeds']} seed(s))")
    out.append("")
  if report["leave_one_out"]:
    out += ["## Leave one out: all but t minus all tasks, on each other task", "",
            *_interval_table(report["leave_one_out"], tasks + [MEAN_COLUMN]), ""]
  if report["gives_others"]:
    out += ["## What each task gives the others", "",
            "All tasks minus all but this task, averaged over the other tasks; > 0: the task helps them.", ""]
    out += [f"- {t}: {_interval(c)} ({c['verdict']})" for t, c in report["gives_others"].items()] + [""]
    rule = report["transfer_mixture"]
    out += [f"`mixture.scheme=\"transfer\"` on this file (a task whose interval lies below 0 gets "
            f"transfer_penalty={rule['penalty']}, the others 1): "
            + ", ".join(f"{t} {f:g}" for t, f in rule["factors"].items())
            + ("; every task is marked, so the rule has nothing to choose (the mixture would be the uniform one)"
               if mixture.marks_every_task(rule["factors"]) else ""), ""]
  if report["versus_all"]:
    out += ["## What each choice is worth: baselines and recipe variants minus all tasks", ""]
    out += [f"- {name}: `{json.dumps(change)}`" for name, change in report["variants"].items()]
    out += ["", *_interval_table(report["versus_all"], tasks + [MEAN_COLUMN]), ""]
  return "\n".join(out)


def plot_transfer_matrix(report: Mapping[str, Any], path: pathlib.Path) -> None:
  """Heat maps of the paired differences; a cell whose interval holds 0 is drawn pale (neutral), whatever its sign."""
  import matplotlib  # noqa: PLC0415 - plotting is optional at import time

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  tasks = report["tasks"]
  panels = [(m, title) for m, title in (
      (report["transfer"], "minus the single-task model"),
      (report["leave_one_out"], "all but t minus all tasks"),
      (report["versus_all"], "minus all tasks")) if m]
  cells = [c for m, _ in panels for row in m.values() for c in row.values()]
  limit = max([abs(c["mean"]) for c in cells] + [1e-3])
  heights = [0.5 * len(m) + 1.2 for m, _ in panels]
  fig, axes = plt.subplots(len(panels), 1, figsize=(1.5 * len(tasks) + 4, sum(heights)),
                           gridspec_kw={"height_ratios": heights}, squeeze=False)
  for ax, (matrix, title) in zip(axes[:, 0], panels):
    columns = tasks + ([MEAN_COLUMN] if any(MEAN_COLUMN in row for row in matrix.values()) else [])
    names = list(matrix)
    color = np.full((len(names), len(columns)), np.nan)
    for i, name in enumerate(names):
      for j, column in enumerate(columns):
        cell = matrix[name].get(column)
        if cell is not None:
          # Inside the noise: no colour at all, whatever the sign of the mean.
          color[i, j] = 0.0 if cell["verdict"] == stats.NEUTRAL else cell["mean"]
          ax.text(j, i, f"{cell['mean']:+.3f}\n[{cell['low']:+.3f}, {cell['high']:+.3f}]", ha="center",
                  va="center", fontsize=6.5, color="0.45" if cell["verdict"] == stats.NEUTRAL else "black")
    image = ax.imshow(color, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), [_label(n).replace("*", "") for n in names])
    ax.set_title(f"triplet accuracy, {title} (pale: the 95% interval holds 0)", fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)

"""The ablation's report: scores per run (mean and spread over seeds), the transfer matrix, a verdict.

transfer[row][task] = score of `row` on `task` - score of the single-task model of `task`, the
paper's comparison. A difference counts as transfer only beyond the noise: twice the larger of the
spread across seeds and the binomial standard error of a difference of two triplet accuracies
measured on `num_triplets` triplets.
"""

from __future__ import annotations

import json
import math
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from pe_jax.ablation.plan import ALL, Run, run_name
from pe_jax.evaluation.suite import MEAN_KEY

JSON_FILE, MARKDOWN_FILE, PLOT_FILE = "transfer.json", "transfer.md", "transfer.png"
TRIPLET = "triplet_acc"
NATURAL = "knn_macro_f1"


def _stats(values: Sequence[float]) -> dict[str, Any]:
  v = np.asarray(values, dtype=np.float64)
  return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": len(v)}


def build_report(config: ml_collections.ConfigDict, runs: Sequence[Run],
                 finished: Mapping[tuple[str, int], Mapping[str, float]],
                 reference: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
  """Everything the markdown, the plot and a notebook need, JSON-ready."""
  trained = sorted({t for r in runs for t in r.tasks})
  names = list(reference) + list(dict.fromkeys(r.name for r in sorted(runs, key=_row_order)))
  rows: dict[str, dict[str, dict[str, Any]]] = {}
  for name, results in reference.items():
    rows[name] = {k: _stats([v]) for k, v in results.items()}
  for name in names[len(reference):]:
    per_seed = [finished[(r.name, r.seed)] for r in runs if r.name == name]
    keys = sorted(set().union(*per_seed))
    rows[name] = {k: _stats([s[k] for s in per_seed if k in s]) for k in keys}

  num_triplets = config.eval.num_triplets
  transfer: dict[str, dict[str, dict[str, float]]] = {}
  noise: dict[str, float] = {}
  for task in trained:
    single = rows.get(run_name("single", task), {}).get(f"{task}/{TRIPLET}")
    if single is None:
      continue
    p = single["mean"]
    noise[task] = 2 * math.sqrt(2 * p * (1 - p) / num_triplets)
    for name in names:
      cell = rows[name].get(f"{task}/{TRIPLET}")
      if cell is not None:
        transfer.setdefault(name, {})[task] = {
            "delta": cell["mean"] - p, "spread": math.hypot(cell["std"], single["std"])}

  verdict = {}
  for task, threshold in noise.items():
    if ALL in transfer and task in transfer[ALL]:
      cell = transfer[ALL][task]
      bound = max(threshold, 2 * cell["spread"])
      verdict[task] = ("positive" if cell["delta"] > bound else "negative" if cell["delta"] < -bound
                       else "within noise")

  # What leaving task t out does to the others: mean over u != t of (all - without_t) on u.
  leave_one_out = {}
  if ALL in rows:
    for task in trained:
      name = run_name("leave_one_out", task)
      if name in rows:
        diffs = [rows[ALL][f"{u}/{TRIPLET}"]["mean"] - rows[name][f"{u}/{TRIPLET}"]["mean"]
                 for u in trained if u != task]
        leave_one_out[task] = float(np.mean(diffs))

  steps = {r.name: r.total_steps for r in runs}
  return {
      "tasks": trained,
      "zero_shot": sorted(config.eval.zero_shot),
      "held_out_tasks": sorted(set(config.tasks) - set(trained)),
      "budget": {"all_tasks_steps": config.total_steps, "batch_size": config.batch_size,
                 "mixture": config.mixture.scheme, "seeds": sorted({r.seed for r in runs}),
                 "num_triplets": num_triplets, "steps": steps},
      "rows": rows, "transfer": transfer, "noise": noise, "verdict": verdict,
      "leave_one_out_helps_others": leave_one_out,
  }


def _row_order(run: Run) -> tuple[int, str]:
  return ({"single": 0, "all": 1, "leave_one_out": 2}[run.kind], run.name)


# --- Writing -----------------------------------------------------------------------------------------

def write_report(report: Mapping[str, Any], workdir: pathlib.Path) -> None:
  (workdir / JSON_FILE).write_text(json.dumps(report, indent=2))
  (workdir / MARKDOWN_FILE).write_text(to_markdown(report))
  if report["transfer"]:
    plot_transfer_matrix(report, workdir / PLOT_FILE)


def _cell(stat: Mapping[str, Any] | None, signed: bool = False) -> str:
  if stat is None:
    return ""
  text = f"{stat['mean']:+.3f}" if signed else f"{stat['mean']:.3f}"
  return text + (f" ±{stat['std']:.3f}" if stat["n"] > 1 else "")


def _table(report: Mapping[str, Any], columns: Sequence[str], header: Sequence[str]) -> list[str]:
  lines = ["| model | " + " | ".join(header) + " |", "|---" * (len(columns) + 1) + "|"]
  for name, row in report["rows"].items():
    lines.append(f"| {_label(name)} | " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
  return lines


def _label(name: str) -> str:
  return {"base": "base (untuned, full width)", "base_pca": "base, PCA to the projection width",
          ALL: "**all tasks**"}.get(name, name)


def to_markdown(report: Mapping[str, Any]) -> str:
  tasks, budget = report["tasks"], report["budget"]
  seeds = budget["seeds"]
  out = [
      "# Positive-transfer ablation", "",
      f"All-tasks run: {budget['all_tasks_steps']} steps x {budget['batch_size']} pairs per shard, "
      f"mixture `{budget['mixture']}`; every other run gives each of its tasks the same expected number of "
      f"examples. Seeds: {seeds} (± is the standard deviation across seeds). Triplet accuracy on "
      f"{budget['num_triplets']} fixed triplets per task.", "",
      "Steps per run: " + ", ".join(f"{k} {v}" for k, v in budget["steps"].items()) + ".", "",
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
            "| model | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for name, row in report["transfer"].items():
      cells = [f"{row[t]['delta']:+.3f}" + (f" ±{row[t]['spread']:.3f}" if row[t]["spread"] else "")
               if t in row else "" for t in tasks]
      out.append(f"| {_label(name)} | " + " | ".join(cells) + " |")
    out += ["", "Noise threshold per task (2 x binomial s.e. of a difference): "
            + ", ".join(f"{t} {v:.3f}" for t, v in report["noise"].items()), ""]
  if report["verdict"]:
    out += ["## Verdict (all tasks vs single task)", ""]
    for task, word in report["verdict"].items():
      d = report["transfer"][ALL][task]["delta"]
      out.append(f"- {task}: {word} ({d:+.3f})")
    out.append("")
  if report["leave_one_out_helps_others"]:
    out += ["## What each task gives the others", "",
            "Mean over the other tasks of (all tasks - all but this task); positive: the task helps them.", ""]
    out += [f"- {t}: {v:+.3f}" for t, v in report["leave_one_out_helps_others"].items()] + [""]
  return "\n".join(out)


def plot_transfer_matrix(report: Mapping[str, Any], path: pathlib.Path) -> None:
  """Heat map: rows are models, columns tasks, cells the change against the single-task model."""
  import matplotlib  # noqa: PLC0415 - plotting is optional at import time

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  tasks = report["tasks"]
  names = [n for n in report["transfer"]]
  delta = np.full((len(names), len(tasks)), np.nan)
  spread = np.zeros_like(delta)
  for i, name in enumerate(names):
    for j, task in enumerate(tasks):
      if task in report["transfer"][name]:
        delta[i, j] = report["transfer"][name][task]["delta"]
        spread[i, j] = report["transfer"][name][task]["spread"]
  limit = max(float(np.nanmax(np.abs(delta))), 1e-3)
  fig, ax = plt.subplots(figsize=(1.2 * len(tasks) + 3, 0.45 * len(names) + 1.5))
  image = ax.imshow(delta, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
  for i in range(len(names)):
    for j in range(len(tasks)):
      if not np.isnan(delta[i, j]):
        text = f"{delta[i, j]:+.3f}" + (f"\n±{spread[i, j]:.3f}" if spread[i, j] else "")
        ax.text(j, i, text, ha="center", va="center", fontsize=7)
  ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right")
  ax.set_yticks(range(len(names)), [_label(n).replace("*", "") for n in names])
  ax.set_title("triplet accuracy minus the single-task model's")
  fig.colorbar(image, ax=ax, shrink=0.8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)

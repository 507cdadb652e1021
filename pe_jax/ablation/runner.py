"""`run_ablation(config, workdir)`: every run of a positive-transfer ablation, resumable, then the report.

  WORKDIR/ablation.json                 the ablation's config; another config is refused
  WORKDIR/runs/<baseline>/result.json   untrained references (base, base_pca)
  WORKDIR/runs/<run>/seed_<k>/          a training workdir, plus result.json once it finished
  WORKDIR/transfer.{json,md,png}        the report (pe_jax/ablation/report.py)

A finished run (result.json present) is skipped; an interrupted one resumes from its checkpoint,
because each run is an ordinary `train_and_evaluate` workdir.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time
from typing import Any

import ml_collections

from pe_jax import sharding as sharding_lib
from pe_jax.ablation import baselines as baselines_lib
from pe_jax.ablation import plan as plan_lib
from pe_jax.ablation import report as report_lib
from pe_jax.evaluation import suite as suite_lib
from pe_jax.training import batches as batches_lib
from pe_jax.training import metrics_writer
from pe_jax.training import train as train_lib
from pe_jax.training import workdir as workdir_lib

ABLATION_FILE = "ablation.json"
RESULT_FILE = "result.json"
# Growing an ablation (more seeds, kinds, tasks or baselines) reuses every finished run; anything
# else changes what the finished runs mean.
EXTENSIBLE = ("data_dir", "tfds_dir", "log_every", "ablation.seeds", "ablation.leave_one_out_seeds",
              "ablation.kinds", "ablation.tasks", "ablation.baselines")


def run_ablation(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict[str, Any]:
  """Runs what is missing of `config.ablation` under `workdir` and returns the report."""
  workdir = pathlib.Path(workdir)
  if "ablation" not in config:
    raise ValueError("the config has no `ablation` section (see configs/ablation/ for examples)")
  unknown = sorted(set(config.ablation.baselines) - set(baselines_lib.BASELINES))
  if unknown:
    raise ValueError(f"ablation.baselines: unknown {unknown}; known: {list(baselines_lib.BASELINES)}")

  # --- Everything that can be wrong is checked before the first step --------------------------------
  suite_lib.check_no_leak(config)
  mesh = sharding_lib.make_mesh(config.mesh.to_dict())
  tasks = train_lib.build_tasks(config)
  runs = plan_lib.plan_runs(config, batches_lib.task_sizes(tasks), sharding_lib.data_parallel_size(mesh))
  workdir_lib.check_or_write_config(workdir, config, file=ABLATION_FILE, resumable=EXTENSIBLE)
  _say(f"ablation: {plan_lib.summarize(runs)} under {workdir}")

  # --- References: the untrained encoder, full width and PCA-reduced --------------------------------
  reference: dict[str, dict[str, float]] = {}
  todo = [b for b in config.ablation.baselines if not (workdir / "runs" / b / RESULT_FILE).exists()]
  if todo:
    _say(f"ablation: scoring baselines {todo}")
    suite = suite_lib.build_suite(config, data_dir=config.data_dir, tfds_dir=config.tfds_dir)
    for name, results in baselines_lib.evaluate_baselines(config, suite, tasks, mesh, todo).items():
      _write_result(workdir / "runs" / name, {"name": name, "kind": "baseline", "results": results})
  for name in config.ablation.baselines:
    reference[name] = _read_result(workdir / "runs" / name)["results"]

  # --- Training runs, each an ordinary resumable workdir ---------------------------------------------
  finished: dict[tuple[str, int], dict[str, float]] = {}
  total = sum(r.total_steps for r in runs)
  done, start = 0, time.perf_counter()
  trained_steps = 0
  for i, run in enumerate(runs, 1):
    path = workdir / run.path
    if (path / RESULT_FILE).exists():
      finished[(run.name, run.seed)] = _read_result(path)["results"]
      done += run.total_steps
      continue
    elapsed = time.perf_counter() - start
    eta = elapsed / trained_steps * (total - done) if trained_steps else float("nan")
    _say(f"ablation: run {i}/{len(runs)} {run.name} seed {run.seed} ({run.total_steps} steps); "
         f"{done}/{total} steps of the ablation done" + (f", ETA {eta / 60:.0f} min" if eta == eta else ""))
    results = train_lib.train_and_evaluate(plan_lib.run_config(config, run), path)
    results = results or _final_eval(path, run.total_steps)
    _write_result(path, {"name": run.name, "kind": run.kind, "seed": run.seed, "tasks": list(run.tasks),
                         "total_steps": run.total_steps, "results": results})
    finished[(run.name, run.seed)] = results
    done += run.total_steps
    trained_steps += run.total_steps

  # --- Report ---------------------------------------------------------------------------------------
  report = report_lib.build_report(config, runs, finished, reference)
  report_lib.write_report(report, workdir)
  _say(f"ablation: report in {workdir / report_lib.JSON_FILE}, {report_lib.MARKDOWN_FILE}, {report_lib.PLOT_FILE}")
  return report


def _final_eval(path: pathlib.Path, step: int) -> dict[str, float]:
  """The last evaluation a finished run logged (it finished, then died before writing result.json)."""
  for record in reversed(metrics_writer.read_metrics(path)):
    if record["step"] == step and any(k.startswith("eval/") for k in record):
      return {k[len("eval/"):]: v for k, v in record.items() if k.startswith("eval/")}
  raise ValueError(f"{path}: the run reached step {step} but logged no evaluation there; delete the "
                   f"folder to rerun it")


def _write_result(path: pathlib.Path, record: dict[str, Any]) -> None:
  path.mkdir(parents=True, exist_ok=True)
  tmp = path / (RESULT_FILE + ".tmp")
  tmp.write_text(json.dumps(record, indent=2))
  tmp.replace(path / RESULT_FILE)  # a crash leaves no half-written result to be trusted later


def _read_result(path: pathlib.Path) -> dict[str, Any]:
  try:
    return json.loads((path / RESULT_FILE).read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{path / RESULT_FILE}: not valid JSON ({e}); delete it to redo that run") from e


def _say(message: str) -> None:
  print(message, file=sys.stderr, flush=True)

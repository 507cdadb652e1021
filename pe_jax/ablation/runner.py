"""`run_ablation(config, workdir)`: every run of a positive-transfer ablation, resumable, then the report.

  WORKDIR/ablation.json                   the ablation's config; another config is refused
  WORKDIR/fingerprint.json                what the finished runs mean: the results format this code
                                          writes and a hash of the config; another is refused
  WORKDIR/cache/projection_init_seed_<k>.npz  the PCA start of every run of seed k
  WORKDIR/runs/<baseline>/                untrained references (base, base_pca)
  WORKDIR/runs/<run>/seed_<k>/            a training workdir
  .../result.json, outcomes.npz           its scores and per-triplet outcomes, once it finished
  WORKDIR/transfer.{json,md,png}          the report (pe_jax/ablation/report.py)

The whole plan (runs, steps, anchors, estimated time) is printed before anything heavy runs. A
finished run (result.json present) is skipped; an interrupted one resumes from its checkpoint,
because each run is an ordinary `train_and_evaluate` workdir.

What the runs share, so that the ablation costs its training and little else: the evaluation suite
(loaded and its triplets drawn once), one embedder whose weights each run swaps in (its programs
compile once), and per seed the PCA-initialised projection (the frozen base embeds the fit posts
once, and every run of the seed starts from the same point, fitted on all trained tasks' posts).
Each run is scored once, on its last checkpoint, embedding each distinct evaluation text once.
Training steps compile per run unless the persistent compilation cache already holds their shapes
(pe_jax.runtime.enable_compilation_cache).
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import shutil
import sys
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from pe_jax import sharding as sharding_lib
from pe_jax.ablation import baselines as baselines_lib
from pe_jax.ablation import plan as plan_lib
from pe_jax.ablation import report as report_lib
from pe_jax.evaluation import suite as suite_lib
from pe_jax.models import trained as trained_lib
from pe_jax.serving.embedder import Embedder
from pe_jax.training import batches as batches_lib
from pe_jax.training import train as train_lib
from pe_jax.training import warm_start
from pe_jax.training import workdir as workdir_lib

ABLATION_FILE, FINGERPRINT_FILE = "ablation.json", "fingerprint.json"
RESULT_FILE, OUTCOMES_FILE = "result.json", "outcomes.npz"
# The results layout this code writes: 1 (no fingerprint file) had no per-triplet outcomes and let
# the trainer score each run; 2 scores the last checkpoint on the shared suite and keeps outcomes.
FORMAT = 2
# Growing an ablation (more seeds, kinds, tasks, variants or baselines) reuses every finished run;
# anything else changes what the finished runs mean. The cost constants only change the estimate.
EXTENSIBLE = ("data_dir", "tfds_dir", "log_every", "ablation.seeds", "ablation.leave_one_out_seeds",
              "ablation.variant_seeds", "ablation.kinds", "ablation.tasks", "ablation.baselines",
              "ablation.variants", "ablation.min_anchors", "ablation.seconds_per_text",
              "ablation.seconds_per_eval")


def run_ablation(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *,
                 dry_run: bool = False) -> dict[str, Any] | None:
  """Runs what is missing of `config.ablation` under `workdir` and returns the report.

  dry_run: print the plan and its estimated time, check everything, train nothing, write nothing.
  """
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
  for run in runs:  # a run's own workdir holds its config: a changed variant or recipe is named here
    run_config = plan_lib.run_config(config, run)
    warm_start.check_config(run_config)
    workdir_lib.check_config(workdir / run.path, run_config)
  _check_fingerprint(workdir, config)
  workdir_lib.check_config(workdir, config, file=ABLATION_FILE, resumable=EXTENSIBLE)
  todo = [r for r in runs if not (workdir / r.path / RESULT_FILE).exists()]
  baselines_todo = [b for b in config.ablation.baselines if not (workdir / "runs" / b / RESULT_FILE).exists()]
  plan = plan_lib.format_plan(config, runs, config.ablation.baselines)
  if len(todo) < len(runs):
    left = plan_lib.estimate_seconds(config, todo, len(todo) + bool(baselines_todo)) / 3600
    plan += f"\n{len(runs) - len(todo)} runs already finished here: about {left:.1f} h left"
  _say(f"ablation plan under {workdir}:\n{plan}")
  if dry_run:
    return None
  workdir_lib.write_config(workdir, config, file=ABLATION_FILE)
  (workdir / FINGERPRINT_FILE).write_text(json.dumps(_fingerprint(config), indent=2))

  suite = None if not (todo or baselines_todo) else suite_lib.build_suite(
      config, data_dir=config.data_dir, tfds_dir=config.tfds_dir)

  # --- References: the untrained encoder, full width and PCA-reduced --------------------------------
  if baselines_todo:
    _say(f"ablation: scoring baselines {baselines_todo}")
    scored = baselines_lib.evaluate_baselines(config, suite, tasks, mesh, baselines_todo)
    for name, (results, outcomes) in scored.items():
      _write_result(workdir / "runs" / name, {"name": name, "kind": "baseline", "results": results}, outcomes)
  reference = {b: _read_result(workdir / "runs" / b) for b in config.ablation.baselines}

  # --- Training runs, each an ordinary resumable workdir, scored on the shared suite ----------------
  finished: dict[tuple[str, int], dict[str, float]] = {}
  outcomes: dict[tuple[str, int], dict[str, np.ndarray]] = {}
  total = sum(r.total_steps for r in runs)
  done, trained_steps, start = 0, 0, time.perf_counter()
  scorer = _Scorer(suite, list(config.tasks), mesh)
  for i, run in enumerate(runs, 1):
    path = workdir / run.path
    if not (path / RESULT_FILE).exists():
      elapsed = time.perf_counter() - start
      eta = f", ETA {elapsed / trained_steps * (total - done) / 60:.0f} min" if trained_steps else ""
      _say(f"ablation: run {i}/{len(runs)} {run.name} seed {run.seed} ({run.total_steps} steps); "
           f"{done}/{total} steps of the ablation done{eta}")
      run_config = plan_lib.run_config(config, run)
      if run_config.model.get("projection_init", "random") == "pca":
        _place_projection_init(config, run, tasks, mesh, workdir, path)
      train_lib.train_and_evaluate(run_config, path)  # resumes; a finished run trains nothing
      results, run_outcomes = scorer(path)
      _write_result(path, {"name": run.name, "kind": run.kind, "seed": run.seed, "tasks": list(run.tasks),
                           "total_steps": run.total_steps, "results": results}, run_outcomes)
      trained_steps += run.total_steps
    finished[(run.name, run.seed)], outcomes[(run.name, run.seed)] = _read_result(path)
    done += run.total_steps

  # --- Report ---------------------------------------------------------------------------------------
  report = report_lib.build_report(config, runs, finished, outcomes, {b: r for b, (r, _) in reference.items()},
                                   {b: o for b, (_, o) in reference.items()})
  report_lib.write_report(report, workdir)
  _say(f"ablation: report in {workdir / report_lib.JSON_FILE}, {report_lib.MARKDOWN_FILE}, {report_lib.PLOT_FILE}")
  return report


class _Scorer:
  """Scores a run's last checkpoint on the shared suite with one embedder for every run."""

  def __init__(self, suite, tasks: list[str], mesh: jax.sharding.Mesh):
    self.suite, self.tasks, self.mesh = suite, tasks, mesh
    self.embedder: Embedder | None = None

  def __call__(self, path: pathlib.Path) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    encoder, tokenizer, prefix = trained_lib.load_trained_model(path, mesh=self.mesh)
    if self.embedder is None or self.embedder.config != encoder.cfg or self.embedder.prefix != prefix:
      self.embedder = Embedder(encoder, tokenizer, prefix=prefix, mesh=self.mesh)
    else:  # same architecture: the compiled embedding programs serve this run too
      self.embedder.update_model(encoder)
    outcomes: dict[str, np.ndarray] = {}
    results = suite_lib.run_suite(self.suite, self.embedder, tasks=self.tasks, outcomes=outcomes)
    return results, outcomes


def _place_projection_init(config: ml_collections.ConfigDict, run: plan_lib.Run, tasks, mesh: jax.sharding.Mesh,
                           workdir: pathlib.Path, path: pathlib.Path) -> None:
  """Puts the seed's PCA projection (fitted once, on all trained tasks' posts) into the run's workdir."""
  target = path / warm_start.PROJECTION_INIT_FILE
  if target.exists():
    return
  cache = workdir / "cache" / f"projection_init_seed_{run.seed}.npz"
  if not cache.exists():
    cache.parent.mkdir(parents=True, exist_ok=True)
    seeded = config.copy_and_resolve_references()
    seeded.seed = run.seed  # a random_init encoder and the fit posts follow the run's seed
    model, tokenizer, source = train_lib.build_model(seeded, mesh, head_specs=[])
    embedder = Embedder(model.encoder.without_projection(normalize=False), tokenizer, prefix=source.prefix, mesh=mesh)
    warm_start.projection_fit(seeded, embedder, tasks, cache)
  path.mkdir(parents=True, exist_ok=True)
  shutil.copyfile(cache, target)


def _fingerprint(config: ml_collections.ConfigDict) -> dict[str, Any]:
  flat = workdir_lib.flatten(workdir_lib.config_to_dict(config))
  kept = {k: v for k, v in sorted(flat.items()) if not k.startswith(EXTENSIBLE)}
  return {"format": FORMAT, "config_sha256": hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()}


def _check_fingerprint(workdir: pathlib.Path, config: ml_collections.ConfigDict) -> None:
  """Refuses a workdir written by another results format; another config is named by its keys below."""
  if not (workdir / ABLATION_FILE).exists():
    return
  path = workdir / FINGERPRINT_FILE
  held = json.loads(path.read_text()) if path.exists() else {"format": 1}
  if held.get("format") != FORMAT:
    raise ValueError(f"{workdir} holds an ablation of results format {held.get('format')} (this code writes "
                     f"{FORMAT}: per-triplet outcomes, runs scored on the shared suite); use a new --workdir")
  if held.get("config_sha256") != _fingerprint(config)["config_sha256"]:
    workdir_lib.check_config(workdir, config, file=ABLATION_FILE, resumable=EXTENSIBLE)  # names the keys
    raise ValueError(f"{workdir} holds an ablation of another config ({FINGERPRINT_FILE} differs); use a new "
                     f"--workdir or the same config")


def _write_result(path: pathlib.Path, record: dict[str, Any], outcomes: dict[str, np.ndarray]) -> None:
  path.mkdir(parents=True, exist_ok=True)
  # Outcomes are 0, 1/2 or 1: twice them fits a byte. Written before the result, which marks the run done.
  np.savez_compressed(path / OUTCOMES_FILE, **{k: np.round(2 * v).astype(np.uint8) for k, v in outcomes.items()})
  tmp = path / (RESULT_FILE + ".tmp")
  tmp.write_text(json.dumps(record, indent=2))
  tmp.replace(path / RESULT_FILE)  # a crash leaves no half-written result to be trusted later


def _read_result(path: pathlib.Path) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """(scores, per-triplet outcomes) of a finished run or baseline."""
  try:
    results = json.loads((path / RESULT_FILE).read_text())["results"]
  except json.JSONDecodeError as e:
    raise ValueError(f"{path / RESULT_FILE}: not valid JSON ({e}); delete it to redo that run") from e
  with np.load(path / OUTCOMES_FILE) as saved:
    return results, {k: saved[k].astype(np.float64) / 2 for k in saved.files}


def _say(message: str) -> None:
  print(message, file=sys.stderr, flush=True)

import json

import numpy as np
import pytest

from pe_jax.ablation import report as report_lib
from pe_jax.ablation import run_ablation
from pe_jax.ablation import runner as runner_lib
from pe_jax.training import train as train_lib
from pe_jax.training import warm_start

pytestmark = pytest.mark.slow  # two short trainings and two evaluations: ~40 s on a quiet CPU


@pytest.fixture(scope="module")
def finished(ablation_config, tmp_path_factory):
  """A real smoke ablation cut to two runs (emotion alone, all three tasks) plus both baselines."""
  workdir = tmp_path_factory.mktemp("ablation")
  config = ablation_config(kinds=("single", "all"), tasks=("emotion",))
  return workdir, config, run_ablation(config, workdir)


def _no_training(*args, **kwargs):
  raise AssertionError("a finished or refused ablation must not train")


def test_an_ablation_trains_scores_and_reports(finished):
  workdir, config, report = finished
  assert set(report["rows"]) == {"base", "base_pca", "only_emotion", "all"}
  assert report["budget"]["steps"] == {"only_emotion": 12, "all": 12}  # every task every step: same length
  for row in report["rows"].values():
    assert 0 <= row["emotion/triplet_acc"]["mean"] <= 1 and "irony/triplet_acc" in row
  assert report["verdict"]["emotion"] in ("positive", "negative", "within noise")
  cell = report["transfer"]["all"]["emotion"]
  assert cell["low"] <= cell["mean"] <= cell["high"] and cell["num_triplets"] == config.eval.num_triplets
  single = workdir / "runs/only_emotion/seed_0"
  assert json.loads((single / runner_lib.RESULT_FILE).read_text())["total_steps"] == 12
  with np.load(single / runner_lib.OUTCOMES_FILE) as outcomes:
    assert outcomes["emotion"].shape == (config.eval.num_triplets,)
    result = json.loads((single / runner_lib.RESULT_FILE).read_text())["results"]
    assert outcomes["emotion"].mean() / 2 == pytest.approx(result["emotion/triplet_acc"])
  # Both runs of the seed start from the one PCA fit, made once.
  init = [(workdir / "runs" / r / "seed_0" / warm_start.PROJECTION_INIT_FILE).read_bytes()
          for r in ("all", "only_emotion")]
  assert init[0] == init[1] == (workdir / "cache/projection_init_seed_0.npz").read_bytes()
  assert (workdir / report_lib.PLOT_FILE).stat().st_size > 0 and (workdir / report_lib.MARKDOWN_FILE).exists()


def test_a_rerun_skips_finished_runs_and_prints_the_plan(finished, monkeypatch, capsys):
  workdir, config, report = finished
  monkeypatch.setattr(train_lib, "train_and_evaluate", _no_training)
  assert run_ablation(config, workdir)["rows"] == report["rows"]
  plan = capsys.readouterr().err
  assert "only_emotion                 0                12" in plan and "2 runs already finished here" in plan


def test_a_run_that_finished_without_its_result_file_is_scored_from_its_checkpoint(finished):
  workdir, config, report = finished
  result = workdir / "runs/all/seed_0" / runner_lib.RESULT_FILE
  saved = result.read_text()
  result.unlink()  # as if killed between the last checkpoint and writing the result
  try:
    again = run_ablation(config, workdir)  # the run resumes at its last step: nothing left to train
    means = lambda row: {k: v["mean"] for k, v in row.items()}
    assert means(again["rows"]["all"]) == pytest.approx(means(report["rows"]["all"]))
  finally:
    result.write_text(saved)


def test_a_dry_run_prints_the_plan_and_writes_nothing(ablation_config, tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(train_lib, "train_and_evaluate", _no_training)
  assert run_ablation(ablation_config(), tmp_path / "new", dry_run=True) is None
  plan = capsys.readouterr().err
  assert "variant_one_task_per_step    0                36" in plan and "8 runs, 120 steps" in plan
  assert not (tmp_path / "new").exists()


def test_a_workdir_of_another_ablation_is_refused_before_training(finished, monkeypatch):
  workdir, config, _ = finished
  monkeypatch.setattr(train_lib, "train_and_evaluate", _no_training)
  other = config.copy_and_resolve_references()
  other.total_steps = 24
  with pytest.raises(ValueError, match=r"different config \(total_steps: workdir has 12, this run has 24\)"):
    run_ablation(other, workdir)


def test_a_workdir_of_another_results_format_is_refused(finished, monkeypatch, tmp_path):
  workdir, config, _ = finished
  monkeypatch.setattr(train_lib, "train_and_evaluate", _no_training)
  old = tmp_path / "old"
  old.mkdir()
  (old / runner_lib.ABLATION_FILE).write_text((workdir / runner_lib.ABLATION_FILE).read_text())  # no fingerprint
  with pytest.raises(ValueError, match=r"old holds an ablation of results format 1 \(this code writes 2"):
    run_ablation(config, old)


def test_a_bad_ablation_fails_before_writing_anything(ablation_config, tmp_path, monkeypatch):
  monkeypatch.setattr(train_lib, "train_and_evaluate", _no_training)
  with pytest.raises(ValueError, match="not in the mixture"):
    run_ablation(ablation_config(tasks=("hate",)), tmp_path / "new")
  with pytest.raises(ValueError, match="ablation.min_anchors=1000: task 'emotion' gets 96 anchors"):
    run_ablation(ablation_config(min_anchors=1000), tmp_path / "new")
  assert not (tmp_path / "new").exists()

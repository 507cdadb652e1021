import json

import pytest

from pe_jax.ablation import report as report_lib
from pe_jax.ablation import run_ablation
from pe_jax.ablation import runner as runner_lib
from pe_jax.training import train as train_lib

pytestmark = pytest.mark.slow  # two short trainings and three evaluations: ~30 s on a quiet CPU


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
  assert report["budget"]["steps"] == {"only_emotion": 4, "all": 12}
  for row in report["rows"].values():
    assert 0 <= row["emotion/triplet_acc"]["mean"] <= 1 and "irony/triplet_acc" in row
  assert report["verdict"]["emotion"] in ("positive", "negative", "within noise")
  single = json.loads((workdir / "runs/only_emotion/seed_0" / runner_lib.RESULT_FILE).read_text())
  assert single["tasks"] == ["emotion"] and single["total_steps"] == 4
  assert (workdir / report_lib.PLOT_FILE).stat().st_size > 0 and (workdir / report_lib.MARKDOWN_FILE).exists()


def test_a_rerun_skips_finished_runs(finished, monkeypatch):
  workdir, config, report = finished
  monkeypatch.setattr(train_lib, "train_and_evaluate", _no_training)
  assert run_ablation(config, workdir)["rows"] == report["rows"]


def test_a_run_that_finished_without_its_result_file_is_read_back_from_its_metrics(finished, tmp_path):
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


def test_a_workdir_of_another_ablation_is_refused_before_training(finished, monkeypatch):
  workdir, config, _ = finished
  monkeypatch.setattr(train_lib, "train_and_evaluate", _no_training)
  other = config.copy_and_resolve_references()
  other.total_steps = 24
  with pytest.raises(ValueError, match=r"different config \(total_steps: workdir has 12, this run has 24\)"):
    run_ablation(other, workdir)


def test_a_bad_ablation_fails_before_writing_anything(ablation_config, tmp_path, monkeypatch):
  monkeypatch.setattr(train_lib, "train_and_evaluate", _no_training)
  with pytest.raises(ValueError, match="not in the mixture"):
    run_ablation(ablation_config(tasks=("hate",)), tmp_path / "new")
  assert not (tmp_path / "new").exists()

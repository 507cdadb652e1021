import json

import pytest

from configs.ablation import smoke
from pe_jax.ablation import report as report_lib
from pe_jax.ablation.plan import Run

TASKS = ("a", "b")


def _runs(seeds=(0, 1)):
  return [Run(name, kind, s, tasks, 10) for s in seeds for name, kind, tasks in (
      ("only_a", "single", ("a",)), ("only_b", "single", ("b",)), ("all", "all", TASKS))]


def _scores(a, b):
  return {"a/triplet_acc": a, "b/triplet_acc": b, "triplet_acc/mean": (a + b) / 2, "zs/sts_spearman": 0.5}


def _report(finished, num_triplets=1000):
  config = smoke.get_config()
  config.eval.num_triplets = num_triplets
  config.eval.zero_shot = {"zs": dict(kind="sts", dataset="x", split="test")}
  return report_lib.build_report(config, _runs(sorted({s for _, s in finished})), finished,
                                 {"base": _scores(0.6, 0.6)})


def test_transfer_is_the_change_against_the_single_task_model_with_the_seed_spread():
  finished = {("only_a", 0): _scores(0.70, 0.50), ("only_a", 1): _scores(0.72, 0.52),
              ("only_b", 0): _scores(0.55, 0.80), ("only_b", 1): _scores(0.55, 0.80),
              ("all", 0): _scores(0.80, 0.70), ("all", 1): _scores(0.82, 0.70)}
  report = _report(finished)
  assert report["rows"]["all"]["a/triplet_acc"]["mean"] == pytest.approx(0.81)
  assert report["rows"]["all"]["a/triplet_acc"]["std"] == pytest.approx(0.0141421, rel=1e-4)
  assert report["transfer"]["all"]["a"]["delta"] == pytest.approx(0.10)
  assert report["transfer"]["all"]["b"]["delta"] == pytest.approx(-0.10)
  assert report["transfer"]["base"]["a"]["delta"] == pytest.approx(-0.11)
  assert report["verdict"] == {"a": "positive", "b": "negative"}
  assert report["budget"]["seeds"] == [0, 1]


def test_small_differences_are_within_noise():
  finished = {("only_a", 0): _scores(0.70, 0.50), ("only_b", 0): _scores(0.5, 0.80),
              ("all", 0): _scores(0.72, 0.799)}
  # 200 triplets: 2 x s.e. of a difference at p=0.7 is 0.092
  assert _report(finished, num_triplets=200)["verdict"] == {"a": "within noise", "b": "within noise"}
  assert _report(finished, num_triplets=100_000)["verdict"] == {"a": "positive", "b": "within noise"}


def test_the_written_report_has_tables_a_plot_and_json(tmp_path):
  finished = {("only_a", 0): _scores(0.70, 0.50), ("only_b", 0): _scores(0.5, 0.80),
              ("all", 0): _scores(0.75, 0.70)}
  report_lib.write_report(_report(finished), tmp_path)
  markdown = (tmp_path / report_lib.MARKDOWN_FILE).read_text()
  assert "| **all tasks** | 0.750 | 0.700 | 0.725 |" in markdown
  assert "## Zero-shot" in markdown and "| base (untuned, full width) | 0.500 |" in markdown
  assert "- a: positive (+0.050)" in markdown
  assert json.loads((tmp_path / report_lib.JSON_FILE).read_text())["transfer"]["all"]["b"]["delta"] == pytest.approx(-0.1)
  assert (tmp_path / report_lib.PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

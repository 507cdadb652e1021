import json

import numpy as np

from configs.ablation import smoke
from pe_jax.ablation import report as report_lib
from pe_jax.ablation import stats
from pe_jax.ablation.plan import Run

TASKS = ("a", "b", "c")
N = 800


def _runs(seeds):
  kinds = [(f"only_{t}", "single", (t,)) for t in TASKS] + [("all", "all", TASKS)]
  kinds += [(f"without_{t}", "leave_one_out", tuple(u for u in TASKS if u != t)) for t in TASKS]
  kinds += [("variant_x", "variant", TASKS)]
  return [Run(name, kind, s, tasks, 10, tuple((t, 1.0) for t in tasks), "x" if kind == "variant" else None)
          for s in seeds for name, kind, tasks in kinds]


def _outcomes(rng, accuracy):
  """A model's outcomes on fixed triplets: triplet i is right when its difficulty is below the accuracy."""
  difficulty = np.random.default_rng(99).random(N)  # the same triplets for every model
  noise = rng.random(N) < 0.05  # and a little training noise
  right = difficulty < accuracy
  return np.where(noise, ~right, right).astype(np.float64)


def _report(accuracy, seeds=(0, 1, 2)):
  """`accuracy[run name][task]`: the expected accuracy of each trained run; base and all at 0.6."""
  rng = np.random.default_rng(0)
  config = smoke.get_config()
  config.eval.zero_shot = {"zs": dict(kind="sts", dataset="x", split="test")}
  config.ablation.variants = {"x": {"distill": {"weight": 0.0}}}
  finished, outcomes = {}, {}
  for run in _runs(seeds):
    acc = {t: accuracy.get(run.name, {}).get(t, 0.6) for t in TASKS}
    outcomes[(run.name, run.seed)] = {t: _outcomes(rng, acc[t]) for t in TASKS}
    finished[(run.name, run.seed)] = {**{f"{t}/triplet_acc": outcomes[(run.name, run.seed)][t].mean() for t in TASKS},
                                      "zs/sts_spearman": 0.5}
  base = {t: _outcomes(rng, 0.6) for t in TASKS}
  return report_lib.build_report(config, _runs(seeds), finished, outcomes,
                                 {"base": {f"{t}/triplet_acc": base[t].mean() for t in TASKS}}, {"base": base})


def test_verdicts_follow_the_intervals():
  # all tasks beat a's single model by 0.1, lose 0.1 to b's, tie c's (all other runs sit at 0.6)
  report = _report({"only_a": {"a": 0.5}, "only_b": {"b": 0.7}})
  assert report["verdict"] == {"a": stats.POSITIVE, "b": stats.NEGATIVE, "c": stats.NEUTRAL}
  cell = report["transfer"]["all"]["a"]
  assert cell["low"] < 0.1 < cell["high"] and cell["num_seeds"] == 3 and cell["num_triplets"] == N
  assert report["transfer"]["base"]["a"]["verdict"] == stats.POSITIVE  # the seedless base against every seed


def test_leave_one_out_says_which_task_hurts_the_others():
  # without c, a and b gain 0.08: c hurts them. Leaving a or b out changes nothing.
  report = _report({"without_c": {"a": 0.68, "b": 0.68}})
  assert report["leave_one_out"]["without_c"]["a"]["verdict"] == stats.POSITIVE
  assert report["gives_others"]["c"]["verdict"] == stats.NEGATIVE
  assert report["gives_others"]["c"]["high"] < 0
  assert {report["gives_others"][t]["verdict"] for t in "ab"} == {stats.NEUTRAL}
  assert set(report["leave_one_out"]["without_a"]) == {"b", "c", "mean"}
  assert report["transfer_mixture"] == {"penalty": 0.0, "factors": {"a": 1.0, "b": 1.0, "c": 0.0}}
  assert "transfer_penalty=0.0, the others 1): a 1, b 1, c 0" in report_lib.to_markdown(report)


def test_versus_all_rows_for_baselines_and_variants():
  report = _report({"variant_x": {"a": 0.5, "b": 0.5, "c": 0.5}})
  assert set(report["versus_all"]) == {"base", "variant_x"}
  assert report["versus_all"]["variant_x"]["mean"]["verdict"] == stats.NEGATIVE
  assert report["versus_all"]["base"]["mean"]["verdict"] == stats.NEUTRAL
  assert report["variants"] == {"variant_x": {"distill": {"weight": 0.0}}}


def test_one_seed_still_gives_triplet_intervals():
  report = _report({"only_a": {"a": 0.5}}, seeds=(0,))
  assert report["transfer"]["all"]["a"]["num_seeds"] == 1 and report["verdict"]["a"] == stats.POSITIVE
  assert report["rows"]["all"]["a/triplet_acc"]["n"] == 1


def test_the_written_report_has_interval_tables_a_plot_and_json(tmp_path):
  report = _report({"only_a": {"a": 0.5}})
  report_lib.write_report(report, tmp_path)
  markdown = (tmp_path / report_lib.MARKDOWN_FILE).read_text()
  assert "paired percentile bootstrap over triplets and seeds" in markdown
  assert "## Zero-shot" in markdown and "| base (untuned, full width) |" in markdown
  assert "- a: positive (+0." in markdown and "| **all tasks** | **+0." in markdown
  assert "## What each task gives the others" in markdown
  saved = json.loads((tmp_path / report_lib.JSON_FILE).read_text())
  assert saved["transfer"]["all"]["a"]["verdict"] == "positive" and "gives_others" in saved
  assert (tmp_path / report_lib.PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

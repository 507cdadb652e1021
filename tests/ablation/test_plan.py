import pytest

from configs.ablation import smoke
from pe_jax.ablation import plan as plan_lib

SIZES = {"emotion": 3000, "irony": 2800, "stance_climate": 350}


def test_uniform_budget_matches_every_task_across_runs():
  config = smoke.get_config()  # uniform mixture, 12 steps for all tasks
  runs = {r.name: r for r in plan_lib.plan_runs(config, SIZES, num_shards=1)}
  assert set(runs) == {"only_emotion", "only_irony", "only_stance_climate", "all", "without_emotion",
                       "without_irony", "without_stance_climate"}
  assert runs["all"].total_steps == 12 and runs["all"].tasks == ("emotion", "irony", "stance_climate")
  assert {runs[f"only_{t}"].total_steps for t in SIZES} == {4}  # 12 steps / 3 tasks
  assert {runs[f"without_{t}"].total_steps for t in SIZES} == {8}
  assert runs["without_irony"].tasks == ("emotion", "stance_climate")


def test_temperature_budget_follows_each_tasks_share_on_several_shards():
  config = smoke.get_config()
  config.mixture.scheme = "temperature"
  config.total_steps = 100
  share = plan_lib.mixture_shares(config, SIZES, num_shards=2)
  assert sum(share.values()) == pytest.approx(2.0)
  runs = {r.name: r for r in plan_lib.plan_runs(config, SIZES, num_shards=2)}
  for task in SIZES:  # each run gives the task the examples it gets in the all-tasks run
    assert runs[f"only_{task}"].total_steps == round(100 * share[task] / 2)
    assert runs[f"without_{task}"].total_steps == round(100 * (2 - share[task]) / 2)
  assert runs["only_emotion"].total_steps > runs["only_stance_climate"].total_steps


def test_seeds_repeat_every_run_and_focus_tasks_limit_the_ablation():
  config = smoke.get_config()
  config.ablation.update(dict(seeds=(0, 1), tasks=("irony",), kinds=("single", "all")))
  runs = plan_lib.plan_runs(config, SIZES, num_shards=1)
  assert [(r.name, r.seed) for r in runs] == [("only_irony", 0), ("all", 0), ("only_irony", 1), ("all", 1)]
  assert runs[2].path == "runs/only_irony/seed_1"


def test_leave_one_out_may_run_on_fewer_seeds():
  config = smoke.get_config()
  config.ablation.update(dict(seeds=(0, 1), leave_one_out_seeds=(0,), tasks=("irony",)))
  runs = [(r.name, r.seed) for r in plan_lib.plan_runs(config, SIZES, num_shards=1)]
  assert runs == [("only_irony", 0), ("all", 0), ("without_irony", 0), ("only_irony", 1), ("all", 1)]


@pytest.mark.parametrize("change, message", [
    (dict(tasks=("hate",)), r"ablation.tasks names \['hate'\], not in the mixture"),
    (dict(kinds=("single", "sequentially")), r"unknown \['sequentially'\]"),
    (dict(seeds=()), "seeds is empty"),
])
def test_bad_ablations_are_named(change, message):
  config = smoke.get_config()
  config.ablation.update(change)
  with pytest.raises(ValueError, match=message):
    plan_lib.plan_runs(config, SIZES, num_shards=1)


def test_a_task_left_out_of_the_mixture_is_named_as_such():
  config = smoke.get_config()
  config.ablation.tasks = ("irony",)
  with pytest.raises(ValueError, match=r"\['irony'\] have weight 0"):
    plan_lib.plan_runs(config, {"emotion": 3000, "stance_climate": 350}, num_shards=1)


def test_a_budget_that_starves_a_task_fails_before_training():
  config = smoke.get_config()
  config.total_steps = 2  # 3 tasks: 0.67 expected steps each
  with pytest.raises(ValueError, match=r"zero steps \(emotion: 0.67 expected steps"):
    plan_lib.plan_runs(config, SIZES, num_shards=1)


def test_leave_one_out_needs_three_tasks():
  with pytest.raises(ValueError, match="at least 3 tasks"):
    plan_lib.plan_runs(smoke.get_config(), {"emotion": 3000, "irony": 2800}, num_shards=1)


def test_run_config_drops_the_other_tasks_and_scales_the_schedule():
  config = smoke.get_config()
  config.total_steps, config.optimizer.warmup_steps = 120, 12
  run = plan_lib.Run("only_irony", "single", 3, ("irony",), 20)
  c = plan_lib.run_config(config, run)
  assert {n: t.weight for n, t in c.tasks.items()} == {"emotion": 0.0, "irony": 1.0, "stance_climate": 0.0}
  assert (c.seed, c.total_steps, c.optimizer.warmup_steps, c.eval_every) == (3, 20, 2, 20)
  assert c.checkpoint_every == 4 and "ablation" not in c
  assert config.tasks.emotion.weight == 1.0  # the ablation's config is untouched

import pytest

from configs import multitask
from configs.ablation import posts, smoke
from pe_jax.ablation import plan as plan_lib

SIZES = {"emotion": 3000, "irony": 2800, "stance_climate": 350}


def _one_task_per_step(config=None):
  config = config or smoke.get_config()
  config.mixture.tasks_per_step = 1
  config.ablation.min_anchors = 0  # a third of the anchors of every task in every step
  return config


def _runs(config, num_shards=1, sizes=SIZES):
  return {r.name: r for r in plan_lib.plan_runs(config, sizes, num_shards=num_shards)}


def test_every_task_every_step_gives_every_run_the_all_tasks_length():
  config = smoke.get_config()  # tasks_per_step 0, 12 steps, 8 anchors a block
  runs = _runs(config)
  assert set(runs) == {"only_emotion", "only_irony", "only_stance_climate", "all", "without_emotion",
                       "without_irony", "without_stance_climate", "variant_one_task_per_step"}
  assert {r.total_steps for n, r in runs.items() if n != "variant_one_task_per_step"} == {12}
  assert runs["only_irony"].anchors(config.batch_size) == {"irony": 96}  # the anchors of irony in "all"
  assert runs["all"].anchors(config.batch_size) == {t: 96 for t in SIZES}
  assert runs["without_irony"].anchors(config.batch_size) == {"emotion": 96, "stance_climate": 96}
  # The paper's schedule as a variant: one block a step, so three times the steps for the same anchors.
  assert runs["variant_one_task_per_step"].total_steps == 36
  assert runs["variant_one_task_per_step"].texts(config.batch_size) == runs["all"].texts(config.batch_size)


def test_every_task_every_step_on_more_shards_than_tasks():
  config = smoke.get_config()
  config.ablation.kinds = ("single", "all")
  runs = _runs(config, num_shards=4)  # all: 4 blocks for 3 tasks; only_t: 4 blocks of t
  blocks = dict(runs["all"].blocks)
  assert sum(blocks.values()) == pytest.approx(4.0)
  for task in SIZES:
    assert runs[f"only_{task}"].total_steps == round(12 * blocks[task] / 4)


def test_one_task_per_step_gives_each_task_its_share_of_the_steps():
  runs = _runs(_one_task_per_step())
  assert runs["all"].total_steps == 12
  assert {runs[f"only_{t}"].total_steps for t in SIZES} == {4}  # 12 steps / 3 tasks
  assert {runs[f"without_{t}"].total_steps for t in SIZES} == {8}
  assert runs["without_irony"].tasks == ("emotion", "stance_climate")
  assert runs["only_irony"].anchors(8) == {"irony": 32} == {"irony": round(runs["all"].anchors(8)["irony"])}


def test_temperature_budget_follows_each_tasks_share_on_several_shards():
  config = _one_task_per_step()
  config.mixture.scheme = "temperature"
  config.total_steps = 100
  config.ablation.kinds = ("single", "all", "leave_one_out")
  share = plan_lib.blocks_per_step(plan_lib.training_config(config, sorted(SIZES)), SIZES, num_shards=2)
  assert sum(share.values()) == pytest.approx(2.0)
  runs = _runs(config, num_shards=2)
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


def test_leave_one_out_and_variants_may_run_on_fewer_seeds():
  config = smoke.get_config()
  config.ablation.update(dict(seeds=(0, 1, 2), leave_one_out_seeds=(0,), variant_seeds=(1,), tasks=("irony",)))
  runs = [(r.name, r.seed) for r in plan_lib.plan_runs(config, SIZES, num_shards=1)]
  assert runs == [("only_irony", 0), ("all", 0), ("without_irony", 0), ("only_irony", 1), ("all", 1),
                  ("variant_one_task_per_step", 1), ("only_irony", 2), ("all", 2)]


def test_a_variant_changes_only_its_keys_of_the_run_config():
  config = smoke.get_config()
  run = next(r for r in plan_lib.plan_runs(config, SIZES, 1) if r.variant)
  c = plan_lib.run_config(config, run)
  assert c.mixture.tasks_per_step == 1 and c.total_steps == 36 and c.distill.weight == config.distill.weight


def test_the_posts_ablation_meets_the_issue_budget():
  config = posts.get_config()
  sizes = {t: 5_000 for t in posts.TRAINED}
  runs = plan_lib.plan_runs(config, sizes, num_shards=1)
  for run in runs:
    if run.kind in ("single", "all"):
      assert min(run.anchors(config.batch_size).values()) >= 1_000
  assert {r.seed for r in runs if r.kind in ("single", "all")} == {0, 1, 2}
  assert config.eval.num_triplets >= 2_500
  assert {r.name for r in runs if r.kind == "variant"} == {
      "variant_one_task_per_step", "variant_bce", "variant_no_distill", "variant_every_layer"}
  every_layer = plan_lib.run_config(config, next(r for r in runs if r.name == "variant_every_layer"))
  assert config.model.frozen_layers > 0 and every_layer.model.frozen_layers == 0
  assert every_layer.optimizer.learning_rate == 1e-4
  text = plan_lib.format_plan(config, runs, ("base", "base_pca"))
  assert "only_topic" in text and "1008 each of 6 tasks" in text and " s a training text and " in text


def test_the_demo_ablation_is_the_main_jobs_suite_on_three_seeds():
  config = posts.get_config("demo")
  runs = plan_lib.plan_runs(config, {t: 2_000 for t in multitask.DEMO_TASKS}, num_shards=1)
  assert {r.name for r in runs if r.kind == "single"} == {f"only_{t}" for t in multitask.DEMO_TASKS}
  assert {r.seed for r in runs if r.kind in ("single", "all")} == {0, 1, 2}
  assert all(min(r.anchors(config.batch_size).values()) >= 1_000 for r in runs if r.kind in ("single", "all"))
  assert sorted(config.eval.zero_shot) == sorted([f"zs_{t}" for t in multitask.DEMO_HELD_OUT] + ["zs_sts"])
  assert config.eval.zero_shot.zs_hate.num_triplets == 2_000 and config.eval.num_triplets >= 2_500
  with pytest.raises(ValueError, match="choose one of the switches gpu, demo"):
    posts.get_config("gpu,demo")


@pytest.mark.parametrize("change, message", [
    (dict(tasks=("hate",)), r"ablation.tasks names \['hate'\], not in the mixture"),
    (dict(kinds=("single", "sequentially")), r"unknown \['sequentially'\]"),
    (dict(seeds=()), "ablation.seeds is empty"),
    (dict(leave_one_out_seeds=(0, 0)), r"ablation.leave_one_out_seeds=\(0, 0\): seeds must be distinct"),
    (dict(min_anchors=100), r"ablation.min_anchors=100: task 'emotion' gets 96 anchors in run only_emotion "
                            r"\(12 steps x 8\); raise total_steps to >= 13"),
])
def test_bad_ablations_are_named(change, message):
  config = smoke.get_config()
  config.ablation.update(change)
  with pytest.raises(ValueError, match=message):
    plan_lib.plan_runs(config, SIZES, num_shards=1)


def test_a_variant_naming_an_unknown_key_is_named():
  config = smoke.get_config()
  config.ablation.variants.one_task_per_step.mixture.tasks_per_stp = 1
  with pytest.raises(ValueError, match=r"variants.one_task_per_step: \['mixture.tasks_per_stp'\] are not keys"):
    plan_lib.plan_runs(config, SIZES, num_shards=1)
  config.ablation.variants = {}
  with pytest.raises(ValueError, match="ablation.variants is empty"):
    plan_lib.plan_runs(config, SIZES, num_shards=1)


def test_a_task_left_out_of_the_mixture_is_named_as_such():
  config = smoke.get_config()
  config.ablation.tasks = ("irony",)
  with pytest.raises(ValueError, match=r"\['irony'\] have weight 0"):
    plan_lib.plan_runs(config, {"emotion": 3000, "stance_climate": 350}, num_shards=1)


def test_a_budget_that_starves_a_task_fails_before_training():
  config = _one_task_per_step()
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
  assert (c.seed, c.total_steps, c.optimizer.warmup_steps, c.eval_every) == (3, 20, 2, 0)
  assert c.checkpoint_every == 4 and "ablation" not in c
  assert config.tasks.emotion.weight == 1.0  # the ablation's config is untouched

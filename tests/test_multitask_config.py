"""configs/multitask.py: the switch syntax every config shares, and the switches that move the recipe along
its trade-off keep its budget."""

import pytest

from configs import multitask
from pe_jax.training.batches import texts_per_step


@pytest.mark.parametrize("base", ["demo", "cpu", ""])
def test_tasks_first_spends_the_same_posts_in_more_updates_at_a_light_hold(base):
  plain = multitask.get_config(base or None)
  config = multitask.get_config(",".join(filter(None, [base, "tasks_first"])))
  tasks = len(plain.tasks)
  assert texts_per_step(config, tasks) * config.total_steps == texts_per_step(plain, tasks) * plain.total_steps
  # Exactly these change; everything else (tasks, model, optimizer, mixture, evaluation) is the recipe's.
  expected = plain.copy_and_resolve_references()
  if base == "demo":  # 3 blocks a step: blocks of half the anchors, twice the steps
    factor = 2
    expected.batch_size = plain.batch_size // 2
  else:  # all 12 tasks a step: 3 of them a step, four times the steps, the teacher on every row
    factor = 4
    expected.mixture.tasks_per_step = 3
    expected.distill.row_stride = 1
  expected.total_steps = factor * plain.total_steps
  expected.optimizer.warmup_steps = factor * plain.optimizer.warmup_steps
  expected.eval_every = factor * plain.eval_every
  expected.checkpoint_every = factor * plain.checkpoint_every
  expected.distill.weight = 5.0
  assert config.to_dict() == expected.to_dict()
  assert config.distill.weight < plain.distill.weight


@pytest.mark.parametrize("arg", ["demo,paper,tasks_first", "cpu,paper,tasks_first", "paper,tasks_first",
                                 "smoke,tasks_first"])
def test_tasks_first_is_refused_beside_the_papers_recipe(arg):
  with pytest.raises(ValueError, match="tasks_first is a setting of the recipe: not with paper or smoke"):
    multitask.get_config(arg)


def test_a_flag_written_false_is_off_and_true_is_on():
  assert multitask.get_config("demo,tasks_first=false").to_dict() == multitask.get_config("demo").to_dict()
  assert multitask.get_config("demo,tasks_first=True").to_dict() == multitask.get_config("demo,tasks_first").to_dict()
  assert multitask.parse_switches("cpu=TRUE,paper=false,demo,demo=false", multitask.VARIANTS) == {"cpu": "true"}
  assert multitask.parse_switches("demo=false,demo", multitask.VARIANTS) == {"demo": "true"}  # the last one wins


@pytest.mark.parametrize("arg, message", [
    ("demo,tasks_first=2", "config switch 'tasks_first' is on or off, not '2': write tasks_first or tasks_first=false"),
    ("demo,tasks_first=yes", "config switch 'tasks_first' is on or off, not 'yes'"),
    ("dmeo=false", "unknown config switch 'dmeo'; known: smoke, demo, cpu, paper, tasks_first"),
])
def test_a_switch_is_a_known_flag_with_no_other_value(arg, message):
  with pytest.raises(ValueError, match=message):
    multitask.get_config(arg)


def test_a_valued_switch_keeps_its_value_and_needs_one():
  assert multitask.parse_switches("cpu,transfer=runs/a=b.json", ("cpu", "transfer"), valued=("transfer",)) == {
      "cpu": "true", "transfer": "runs/a=b.json"}
  with pytest.raises(ValueError, match="config switch 'transfer' needs a value: write transfer=VALUE"):
    multitask.parse_switches("transfer", ("transfer",), valued=("transfer",))


def test_a_config_without_switches_refuses_any():
  from configs.ablation import smoke
  assert smoke.get_config("").total_steps == smoke.get_config(None).total_steps
  with pytest.raises(ValueError, match="unknown config switch 'demo'; known: none, this config takes no switches"):
    smoke.get_config("demo")

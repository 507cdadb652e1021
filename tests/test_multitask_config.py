"""configs/multitask.py: the switches that move the recipe along its trade-off keep its budget."""

import pytest

from configs import multitask
from pe_jax.training.batches import texts_per_step


@pytest.mark.parametrize("base", ["demo", "cpu", ""])
def test_tasks_first_spends_the_same_posts_in_twice_the_updates_at_a_light_hold(base):
  plain = multitask.get_config(base or None)
  config = multitask.get_config(",".join(filter(None, [base, "tasks_first"])))
  tasks = len(plain.tasks)
  assert texts_per_step(config, tasks) * config.total_steps == texts_per_step(plain, tasks) * plain.total_steps
  assert config.total_steps == 2 * plain.total_steps
  for key in ("eval_every", "checkpoint_every"):
    assert config[key] == 2 * plain[key]
  assert config.optimizer.warmup_steps == 2 * plain.optimizer.warmup_steps
  assert config.distill.weight == 5.0 < plain.distill.weight
  # Nothing else moves: the tasks, the model and the rest of the distillation are the recipe's.
  assert config.tasks == plain.tasks and config.model == plain.model
  assert config.distill.pairs == plain.distill.pairs and config.distill.row_stride == plain.distill.row_stride


@pytest.mark.parametrize("arg", ["demo,paper,tasks_first", "smoke,tasks_first"])
def test_tasks_first_is_refused_beside_the_papers_recipe(arg):
  with pytest.raises(ValueError, match="tasks_first is a setting of the recipe: not with paper or smoke"):
    multitask.get_config(arg)

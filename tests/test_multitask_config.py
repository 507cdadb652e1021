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
  # Exactly these change; everything else (tasks, model, optimizer, mixture, evaluation) is the recipe's.
  expected = plain.copy_and_resolve_references()
  expected.batch_size = plain.batch_size // 2
  expected.total_steps = 2 * plain.total_steps
  expected.optimizer.warmup_steps = 2 * plain.optimizer.warmup_steps
  expected.eval_every = 2 * plain.eval_every
  expected.checkpoint_every = 2 * plain.checkpoint_every
  expected.distill.weight = 5.0
  assert config.to_dict() == expected.to_dict()
  assert config.distill.weight < plain.distill.weight


@pytest.mark.parametrize("arg", ["demo,paper,tasks_first", "cpu,paper,tasks_first", "paper,tasks_first",
                                 "smoke,tasks_first"])
def test_tasks_first_is_refused_beside_the_papers_recipe(arg):
  with pytest.raises(ValueError, match="tasks_first is a setting of the recipe: not with paper or smoke"):
    multitask.get_config(arg)

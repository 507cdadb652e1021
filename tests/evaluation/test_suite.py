"""pe_jax.evaluation.suite: choosing part of a config's suite."""

from __future__ import annotations

import pytest

from configs import multitask
from pe_jax.evaluation.suite import select_sets


def test_select_sets_keeps_the_named_tasks_and_zero_shot_sets():
  config = multitask.get_config("cpu")
  part = select_sets(config, ["topic", "zs_topic_xl"])
  assert list(part.tasks) == ["topic"]
  assert list(part.eval.zero_shot) == ["zs_topic_xl"]
  assert part.eval.zero_shot.zs_topic_xl.dataset == "tweet_topic_xl/en"
  assert len(config.tasks) == 12 and len(config.eval.zero_shot) == 4  # the caller's config is untouched
  assert select_sets(config, None) is config


def test_select_sets_refuses_a_name_the_config_lacks():
  with pytest.raises(ValueError, match=r"'zs_topicxl' is neither.*did you mean 'zs_topic_xl'"):
    select_sets(multitask.get_config("cpu"), ["zs_topicxl"])

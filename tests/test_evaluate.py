"""pe_jax.evaluate: scoring part of a config's suite."""

from __future__ import annotations

import pytest

from pe_jax import cli
from pe_jax.evaluate import only_sets
from configs import multitask


def test_only_sets_keeps_the_named_tasks_and_zero_shot_sets():
  config = multitask.get_config("cpu")
  part = only_sets(config, ["topic", "zs_topic_xl"])
  assert list(part.tasks) == ["topic"]
  assert list(part.eval.zero_shot) == ["zs_topic_xl"]
  assert part.eval.zero_shot.zs_topic_xl.dataset == "tweet_topic_xl/en"
  assert len(config.tasks) == 12 and len(config.eval.zero_shot) == 4  # the caller's config is untouched
  assert only_sets(config, None) is config


def test_only_sets_refuses_a_name_the_config_lacks():
  with pytest.raises(cli.UsageError, match=r"'zs_topicxl' is neither.*did you mean 'zs_topic_xl'"):
    only_sets(multitask.get_config("cpu"), ["zs_topicxl"])

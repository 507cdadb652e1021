import json

import numpy as np
import pytest

from pe_jax.tasks.mixture import (config_weights, mixture_weights, shard_share, task_order, task_schedule,
                                  transfer_factors)

SIZES = {"emoji": 45_000, "hate": 9_000, "irony": 2_862, "stance": 587}


def test_proportional_is_size_share():
  w = mixture_weights(SIZES, "proportional")
  total = sum(SIZES.values())
  assert w == pytest.approx({t: s / total for t, s in SIZES.items()})


def test_temperature_matches_seqio_formula():
  w = mixture_weights(SIZES, "temperature", temperature=3.0, cap=10_000)
  raw = {t: min(s, 10_000) ** (1 / 3) for t, s in SIZES.items()}
  assert w == pytest.approx({t: r / sum(raw.values()) for t, r in raw.items()})
  assert w["emoji"] == pytest.approx(w["hate"] * (10_000 / 9_000) ** (1 / 3))


def test_uniform_and_explicit():
  assert mixture_weights(SIZES, "uniform") == pytest.approx({t: 0.25 for t in SIZES})
  w = mixture_weights(SIZES, "explicit", explicit={"emoji": 2, "hate": 1, "irony": 1, "stance": 0})
  assert w == pytest.approx({"emoji": 0.5, "hate": 0.25, "irony": 0.25})


def test_zero_override_drops_task_for_leave_one_out_and_single_task():
  loo = mixture_weights(SIZES, "temperature", temperature=2.0, explicit={"hate": 0})
  assert set(loo) == {"emoji", "irony", "stance"}
  full = mixture_weights(SIZES, "temperature", temperature=2.0)
  rest = 1 - full["hate"]
  assert loo == pytest.approx({t: full[t] / rest for t in loo})
  single = mixture_weights(SIZES, "proportional", explicit={t: 0 for t in SIZES if t != "irony"})
  assert single == {"irony": 1.0}


@pytest.mark.parametrize("kwargs, match", [
    (dict(scheme="explicit", explicit={"emoji": 1, "hate": 1, "irony": 1}), "stance"),
    (dict(scheme="uniform", explicit={"emojj": 0}), "emojj"),
    (dict(scheme="uniform", explicit={"hate": -1}), "hate"),
    (dict(scheme="uniform", explicit={t: 0 for t in SIZES}), "weight is 0"),
    (dict(scheme="size"), "unknown mixture scheme"),
    (dict(scheme="temperature", temperature=0.0), "temperature"),
])
def test_bad_mixtures_say_what_is_wrong(kwargs, match):
  with pytest.raises(ValueError, match=match):
    mixture_weights(SIZES, **kwargs)


def test_empty_task_is_named():
  with pytest.raises(ValueError, match="'irony'"):
    mixture_weights({**SIZES, "irony": 0}, "uniform")


def test_schedule_is_a_pure_function_of_seed_and_step():
  w = mixture_weights(SIZES, "uniform")
  args = dict(num_shards=3, per_shard=True)
  first = [task_schedule(w, seed=1, step=s, **args) for s in range(50)]
  again = [task_schedule(w, seed=1, step=s, **args) for s in reversed(range(50))][::-1]
  other = [task_schedule(w, seed=2, step=s, **args) for s in range(50)]
  assert all(np.array_equal(x, y) for x, y in zip(first, again))
  assert not all(np.array_equal(x, y) for x, y in zip(first, other))


def test_schedule_indexes_sorted_task_names_whatever_the_dict_order():
  w = {"b": 0.2, "c": 0.5, "a": 0.3}
  shuffled = {"c": 0.5, "a": 0.3, "b": 0.2}
  assert task_order(w) == ["a", "b", "c"]
  for step in range(20):
    np.testing.assert_array_equal(
        task_schedule(w, seed=0, step=step, num_shards=2, per_shard=True),
        task_schedule(shuffled, seed=0, step=step, num_shards=2, per_shard=True))


def _shard_frequencies(w, num_shards, per_shard, steps=4000):
  picks = np.stack([task_schedule(w, seed=7, step=s, num_shards=num_shards, per_shard=per_shard)
                    for s in range(steps)])
  return picks, np.bincount(picks.ravel(), minlength=len(w)) / picks.size


def test_one_task_a_step_matches_weights():
  w = {"a": 0.6, "b": 0.3, "c": 0.1}
  picks, freq = _shard_frequencies(w, num_shards=4, per_shard=False)
  assert (picks == picks[:, :1]).all()
  np.testing.assert_allclose(freq, [0.6, 0.3, 0.1], atol=0.025)


def test_per_shard_tasks_differ_and_match_weights_when_no_task_needs_two_shards():
  w = {"a": 0.3, "b": 0.3, "c": 0.2, "d": 0.1, "e": 0.1}
  picks, freq = _shard_frequencies(w, num_shards=3, per_shard=True)
  assert all(len(set(row)) == 3 for row in picks.tolist())
  np.testing.assert_allclose(freq, [0.3, 0.3, 0.2, 0.1, 0.1], atol=0.015)


def test_per_shard_caps_a_heavy_task_at_one_shard_and_spreads_the_rest():
  w = {"a": 0.7, "b": 0.2, "c": 0.1}
  share = shard_share(w, 2)
  np.testing.assert_allclose(share, [1.0, 2 / 3, 1 / 3])
  picks, freq = _shard_frequencies(w, num_shards=2, per_shard=True)
  assert all(len(set(row)) == 2 for row in picks.tolist())
  np.testing.assert_allclose(freq, share / 2, atol=0.015)


def test_more_shards_than_tasks_gives_every_task_a_shard():
  w = {"a": 0.85, "b": 0.1, "c": 0.05}
  share = shard_share(w, 8)
  np.testing.assert_allclose(share, [6.0, 1.0, 1.0])
  w = {"a": 0.5, "b": 0.3, "c": 0.2}
  share = shard_share(w, 8)
  np.testing.assert_allclose(share, [4.0, 2.4, 1.6])
  picks, freq = _shard_frequencies(w, num_shards=8, per_shard=True, steps=2000)
  counts = np.stack([np.bincount(row, minlength=3) for row in picks])
  assert ((counts == np.floor(share)) | (counts == np.ceil(share))).all()
  np.testing.assert_allclose(freq, [0.5, 0.3, 0.2], atol=0.01)


def test_as_many_shards_as_tasks_uses_each_task_once():
  w = {"a": 0.9, "b": 0.05, "c": 0.05}
  for step in range(20):
    assert sorted(task_schedule(w, seed=0, step=step, num_shards=3, per_shard=True)) == [0, 1, 2]


def test_schedule_rejects_zero_weights_and_bad_arguments():
  with pytest.raises(ValueError, match=r"\['b'\]"):
    task_schedule({"a": 1.0, "b": 0.0}, seed=0, step=0, num_shards=1, per_shard=False)
  with pytest.raises(ValueError, match="num_shards"):
    task_schedule({"a": 1.0}, seed=0, step=0, num_shards=0, per_shard=False)
  with pytest.raises(ValueError, match="step"):
    task_schedule({"a": 1.0}, seed=0, step=-1, num_shards=1, per_shard=False)


# --- scheme "transfer": weights from an ablation's measured leave-one-out effects ---------------------

def _effect(mean, low, high):
  return {"mean": mean, "low": low, "high": high}


TRANSFER_REPORT = {"tasks": sorted(SIZES), "gives_others": {
    "emoji": _effect(-0.03, -0.05, -0.01),  # leaving emoji out measurably helped the others: it hurts them
    "hate": _effect(-0.01, -0.03, 0.01),  # inside the noise: kept
    "irony": _effect(0.02, 0.01, 0.03),  # helps the others
}}  # stance was not left out: kept


def test_transfer_rule_penalises_only_a_task_that_measurably_hurts_the_others():
  assert transfer_factors(TRANSFER_REPORT, penalty=0.0) == {"emoji": 0.0, "hate": 1.0, "irony": 1.0, "stance": 1.0}
  assert transfer_factors(TRANSFER_REPORT, penalty=0.5)["emoji"] == 0.5
  w = mixture_weights(SIZES, "transfer", transfer=transfer_factors(TRANSFER_REPORT, penalty=0.0))
  assert w == pytest.approx({"hate": 1 / 3, "irony": 1 / 3, "stance": 1 / 3})  # emoji dropped


def test_a_transfer_file_that_marks_every_task_is_refused(tmp_path):
  """Every task hurting the others (the 128-d demo ablation): equal factors cancel, so the transfer mixture
  would be the uniform one under another name; the config is refused, naming the file."""
  from configs.ablation import smoke

  path = tmp_path / "transfer.json"
  tasks = ["emoji", "hate", "irony"]
  path.write_text(json.dumps({"tasks": tasks, "gives_others": {t: _effect(-0.03, -0.05, -0.01) for t in tasks}}))
  config = smoke.get_config()
  config.mixture.scheme, config.mixture.transfer_file, config.mixture.transfer_penalty = "transfer", str(path), 0.5
  with pytest.raises(ValueError, match=r"transfer.json' marks every task \(emoji, hate, irony\) as hurting the "
                                       r"others: the transfer mixture would be the uniform one"):
    config_weights(config, {t: 10 for t in tasks})


def test_transfer_mixture_reads_the_file_a_config_names(tmp_path):
  from configs.ablation import smoke

  path = tmp_path / "transfer.json"
  path.write_text(json.dumps(TRANSFER_REPORT))
  config = smoke.get_config()
  config.mixture.scheme, config.mixture.transfer_file, config.mixture.transfer_penalty = "transfer", str(path), 0.5
  w = config_weights(config, {"emoji": 10, "hate": 10, "irony": 10})
  assert w == pytest.approx({"emoji": 0.2, "hate": 0.4, "irony": 0.4})


@pytest.mark.parametrize("report, penalty, match", [
    ({"tasks": ["emoji"], "gives_others": {}}, 0.0, "no leave-one-out effects"),
    (TRANSFER_REPORT, 2.0, r"transfer_penalty must be in \[0, 1\]"),
])
def test_bad_transfer_inputs_are_named(report, penalty, match):
  with pytest.raises(ValueError, match=match):
    transfer_factors(report, penalty=penalty)


def test_transfer_scheme_needs_its_file_and_a_factor_per_task(tmp_path):
  from configs.ablation import smoke

  config = smoke.get_config()
  config.mixture.scheme = "transfer"
  with pytest.raises(ValueError, match="config.mixture.transfer_file"):
    config_weights(config, {"emotion": 10})
  config.mixture.transfer_file = str(tmp_path / "missing.json")
  with pytest.raises(ValueError, match="missing.json.*cannot read it"):
    config_weights(config, {"emotion": 10})
  with pytest.raises(ValueError, match=r"missing \['stance'\]"):
    mixture_weights(SIZES, "transfer", transfer={"emoji": 1, "hate": 1, "irony": 1})

import numpy as np
import pytest

from pe_jax.ablation import stats


def _outcomes(rng, p, shape):
  return (rng.random(shape) < p).astype(np.float64)


def _paired(rng, p_a, p_b, seeds=3, triplets=2_500):
  """Outcomes of two models on the same triplets: a triplet's difficulty is shared, as in real runs."""
  difficulty = rng.random(triplets)
  a = np.repeat((difficulty < p_a)[None, :], seeds, axis=0).astype(np.float64)
  b = (difficulty[None, :] < p_b).astype(np.float64)
  flip = _outcomes(rng, 0.1, (seeds, triplets)).astype(bool)  # training noise: some triplets change
  a[flip] = 1 - a[flip]
  return a, b


def test_a_known_effect_is_covered_and_called_positive():
  rng = np.random.default_rng(0)
  a, b = _paired(rng, 0.75, 0.65)
  true = (a - b).mean()
  cell = stats.paired_difference([a - b])
  assert cell["low"] < true < cell["high"]
  assert cell["low"] > 0 and cell["verdict"] == stats.POSITIVE
  assert (cell["num_seeds"], cell["num_triplets"]) == (3, 2_500)
  assert stats.paired_difference([b - a])["verdict"] == stats.NEGATIVE


def test_a_null_effect_is_within_noise():
  rng = np.random.default_rng(1)
  a = _outcomes(rng, 0.7, (3, 2_500))
  b = _outcomes(rng, 0.7, (3, 2_500))
  cell = stats.paired_difference([a - b])
  assert cell["low"] < 0 < cell["high"] and cell["verdict"] == stats.NEUTRAL
  # 4 standard errors of a difference of independent accuracies over 7,500 outcomes is 0.03; drawing
  # seeds as well counts each seed's triplet noise once more (conservative, see stats.py): under 0.06.
  assert 0.025 < cell["high"] - cell["low"] < 0.06


def test_pairing_removes_the_triplets_shared_difficulty():
  rng = np.random.default_rng(2)
  a, b = _paired(rng, 0.72, 0.70)  # same difficulty draw: far less noise than independent outcomes
  paired = stats.paired_difference([a - b])
  independent = stats.paired_difference([a - np.roll(b, 1, axis=1)])
  assert paired["high"] - paired["low"] < 0.8 * (independent["high"] - independent["low"])


def test_seed_noise_widens_the_interval():
  rng = np.random.default_rng(3)
  d = _outcomes(rng, 0.5, (3, 2_500)) - 0.5
  shifted = d + np.array([[-0.1], [0.0], [0.1]])  # training runs that differ a lot from seed to seed
  narrow, wide = stats.paired_difference([d]), stats.paired_difference([shifted])
  assert wide["high"] - wide["low"] > 3 * (narrow["high"] - narrow["low"])
  assert wide["mean"] == pytest.approx(narrow["mean"])


def test_several_tasks_average_their_differences():
  rng = np.random.default_rng(4)
  tasks = [np.full((2, 1_000), 0.1) + 0.01 * rng.standard_normal((2, 1_000)), np.full((2, 400), -0.02)]
  cell = stats.paired_difference(tasks)
  assert cell["mean"] == pytest.approx(0.04, abs=1e-3)  # mean of the task means, not of the triplets
  assert cell["low"] < 0.04 < cell["high"] and cell["num_triplets"] == 1_400


def test_bad_shapes_are_named():
  with pytest.raises(ValueError, match="same seeds"):
    stats.paired_difference([np.zeros((2, 10)), np.zeros((3, 10))])
  with pytest.raises(ValueError, match="no differences"):
    stats.paired_difference([])

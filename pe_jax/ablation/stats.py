"""Paired differences between two models scored on the same triplets, with a bootstrap interval.

Every run of an ablation is scored on the same fixed triplets (the eval seed, not the run's), and
the evaluator keeps each triplet's outcome (1 right, 1/2 tie, 0 wrong). A comparison A - B of one
task pairs the two models seed by seed and triplet by triplet: d[s, i] = outcome_A[s, i] -
outcome_B[s, i] for the seeds both ran. Its estimate is the mean of d.

The 95% interval is a paired percentile bootstrap over seeds and triplets, the two sources of
noise: each replicate draws the seeds with replacement and, independently, the triplets with
replacement, and takes the mean of d over both draws; the interval is the 2.5th and 97.5th
percentiles of `num_resamples` replicates. Drawing seeds captures the training noise (with one
seed it cannot: the interval then holds the triplet noise alone, and says so by `num_seeds`);
pairing removes the triplets' own difficulty, which both models share. Drawing both is
conservative: each seed's mean already carries its triplet noise, which the triplet draw then adds
once more (on 3 seeds of independent outcomes the interval comes out about 1.7x the exact one's
width), so a verdict other than "within noise" is one to trust. A difference averaged over
several tasks (what leaving one task out does to the others) draws each task's triplets
independently and the seeds once for all of them.

The verdict comes from the interval, not the sign of the mean: "positive" when it lies wholly
above 0, "negative" wholly below, "within noise" when it holds 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

POSITIVE, NEGATIVE, NEUTRAL = "positive", "negative", "within noise"
LEVEL = 0.95


def paired_difference(diffs: Sequence[np.ndarray], *, num_resamples: int = 2_000,
                      seed: int = 0) -> dict[str, float | int | str]:
  """Mean of the per-task paired differences and its bootstrap interval (see the module docstring).

  `diffs`: one array per task, float [num_seeds, num_triplets_of_that_task], the same seeds (rows)
  in every array. Returns {"mean", "low", "high", "verdict", "num_seeds", "num_triplets"}.
  """
  if not diffs:
    raise ValueError("paired_difference: no differences given")
  diffs = [np.asarray(d, dtype=np.float64) for d in diffs]
  num_seeds = diffs[0].shape[0]
  if any(d.ndim != 2 or d.shape[0] != num_seeds or d.shape[1] == 0 for d in diffs):
    raise ValueError(f"paired_difference: every array must be [num_seeds, num_triplets] with the same seeds; "
                     f"got shapes {[d.shape for d in diffs]}")
  rng = np.random.default_rng(seed)
  # A draw with replacement is a count per item: a replicate's mean is then a weighted mean, computed
  # for every replicate at once without materialising the resampled arrays.
  seed_counts = _counts(rng, num_seeds, num_resamples)
  replicates = np.zeros(num_resamples)
  for d in diffs:
    n = d.shape[1]
    per_seed = _counts(rng, n, num_resamples) @ d.T / n  # [R, num_seeds]: each seed's mean over the drawn triplets
    replicates += (seed_counts * per_seed).sum(axis=1) / num_seeds
  replicates /= len(diffs)
  mean = float(np.mean([d.mean() for d in diffs]))
  low, high = np.quantile(replicates, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
  return {"mean": mean, "low": float(low), "high": float(high), "verdict": verdict(float(low), float(high)),
          "num_seeds": num_seeds, "num_triplets": int(sum(d.shape[1] for d in diffs))}


def _counts(rng: np.random.Generator, n: int, num_resamples: int) -> np.ndarray:
  """[num_resamples, n]: how often each of n items is drawn in n draws with replacement, per replicate."""
  drawn = rng.integers(n, size=(num_resamples, n)) + n * np.arange(num_resamples)[:, None]
  return np.bincount(drawn.ravel(), minlength=num_resamples * n).reshape(num_resamples, n).astype(np.float64)


def verdict(low: float, high: float) -> str:
  return POSITIVE if low > 0 else NEGATIVE if high < 0 else NEUTRAL

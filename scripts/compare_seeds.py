r"""Two recipes run on the same seeds, compared seed by seed: the paired difference and its interval.

  python scripts/compare_seeds.py --a workdirs/demo_pairs_all,workdirs/demo_pairs_all_s1,workdirs/demo_pairs_all_s2 \
      --b workdirs/probe_H,workdirs/probe_H_s1,workdirs/probe_H_s2 --names "all pairs,across blocks" \
      --trained topic,emotion,sentiment

`--a` and `--b` list one result per seed, in the same seed order (workdirs or `pe_jax.evaluate` JSON, as
scripts/compare_evals.py reads them). For each of the trained mean, the held-out mean and every other
shared metric, a row per seed and the mean difference b - a with a 95% t-interval over the seeds
(Student's t, n - 1 degrees of freedom): the seeds are the unit, since both recipes meet the same
triplets and their triplet noise largely cancels in the pairing. An interval that holds 0 is "within noise".
"""

from __future__ import annotations

import argparse
import math

from scipy import stats

from compare_evals import add_group_means, load_results


def interval(diffs: list[float]) -> tuple[float, float, float]:
  """(mean, low, high): the 95% t-interval of the mean of `diffs`."""
  n = len(diffs)
  mean = sum(diffs) / n
  sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
  half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
  return mean, mean - half, mean + half


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--a", required=True, help="comma-separated results of recipe A, one per seed")
  p.add_argument("--b", required=True, help="comma-separated results of recipe B, the same seeds in the same order")
  p.add_argument("--names", default="A,B", help="the two recipes' names")
  p.add_argument("--trained", help="comma-separated trained tasks: their mean and the held-out tasks' mean")
  args = p.parse_args()
  a, b = args.a.split(","), args.b.split(",")
  if len(a) != len(b) or len(a) < 2:
    raise SystemExit(f"--a and --b need the same number of seeds, at least 2 (got {len(a)} and {len(b)})")
  name_a, name_b = args.names.split(",")
  runs = [[load_results(spec) for spec in side] for side in (a, b)]
  for side in runs:
    for r in side:
      add_group_means(r, args.trained.split(",") if args.trained else None)
  keys = [k for k in runs[0][0] if all(k in r for side in runs for r in side)]
  keys = [k for k in keys if k.startswith("triplet_acc/")] + [k for k in keys if k.startswith("zs_")]
  print(f"| metric | seed | {name_a} | {name_b} | Δ |")
  print("|---|---|---|---|---|")
  for k in keys:
    diffs = []
    for seed, (ra, rb) in enumerate(zip(*runs)):
      diffs.append(rb[k] - ra[k])
      print(f"| {k} | {seed} | {ra[k]:.3f} | {rb[k]:.3f} | {diffs[-1]:+.3f} |")
    mean, low, high = interval(diffs)
    verdict = "within noise" if low <= 0 <= high else "positive" if low > 0 else "negative"
    print(f"| {k} | mean | | | **{mean:+.3f}** [{low:+.3f}, {high:+.3f}] {verdict} |")


if __name__ == "__main__":
  main()

r"""A markdown table of evaluation results side by side, with the change against the first column.

  python scripts/compare_evals.py base.json workdirs/multitask --names "base 384-d,multi-task 50-d"

Each argument is a `pe_jax.evaluate` JSON file or a training workdir (its last evaluation in
metrics.jsonl). Rows are the metrics all inputs share. Triplet and bitext accuracies carry their standard
error sqrt(p(1-p)/n) (n = --num_triplets, times the tasks for the mean; --num_bitext_pairs), and a change
inside twice the standard error of a difference (sqrt(2) s.e.) is marked "~": within noise.

`--plot trade.png --x zs_sts/sts_spearman --y triplet_acc/trained_mean` also draws the inputs as points
of one metric against another: where each recipe sits between what it trains and what it keeps.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib

from pe_jax.training.metrics_writer import read_metrics


def load_results(spec: str) -> dict[str, float]:
  path = pathlib.Path(spec)
  if path.is_dir():
    evals = [r for r in read_metrics(path) if any(k.startswith("eval/") for k in r)]
    if not evals:
      raise SystemExit(f"{path}/metrics.jsonl has no evaluation yet")
    return {k.removeprefix("eval/"): v for k, v in evals[-1].items() if k.startswith("eval/")}
  return json.loads(path.read_text())["results"]


def add_group_means(results: dict[str, float], trained: list[str] | None) -> None:
  """With `trained` tasks: replaces the mean over all post tasks by the means over the trained and
  the held-out ones, apart (in place). None leaves `results` as they are."""
  if not trained:
    return
  tasks = [k.removesuffix("/triplet_acc") for k in results if k.endswith("/triplet_acc") and not k.startswith("zs_")]
  for name, group in (("trained", [t for t in tasks if t in trained]),
                      ("held_out", [t for t in tasks if t not in trained])):
    if group:
      results[f"triplet_acc/{name}_mean"] = sum(results[f"{t}/triplet_acc"] for t in group) / len(group)
  results.pop("triplet_acc/mean", None)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("inputs", nargs="+")
  p.add_argument("--names", help="comma-separated column names (default: the inputs)")
  p.add_argument("--skip", default="num_queries,num_skipped_queries,mrr@10,recall@1,recall@5",
                 help="comma-separated metric suffixes to leave out")
  p.add_argument("--trained", help="comma-separated trained tasks: adds their mean and the held-out tasks' mean")
  p.add_argument("--num_triplets", type=int, default=2_000, help="triplets per task, for the standard error")
  p.add_argument("--plot", help="also write a scatter of --y against --x for every input to this image")
  p.add_argument("--x", default="zs_sts/sts_spearman", help="--plot's horizontal metric")
  p.add_argument("--y", default="triplet_acc/trained_mean", help="--plot's vertical metric")
  p.add_argument("--num_bitext_pairs", type=int, default=1_000,
                 help="pairs per bitext set (Tatoeba: 1,000 for most languages), for the standard error")
  args = p.parse_args()
  names = args.names.split(",") if args.names else args.inputs
  results = [load_results(s) for s in args.inputs]
  for r in results:
    add_group_means(r, args.trained.split(",") if args.trained else None)
  skip = tuple(args.skip.split(",")) if args.skip else ()
  keys = [k for k in results[0] if all(k in r for r in results[1:]) and not k.endswith(skip)]
  trained = set(args.trained.split(",")) if args.trained else set()
  keys.sort(key=lambda k: (k.startswith("zs_"), k.startswith("triplet_acc/"), k.split("/")[0] not in trained, k))
  task_rows = [k.removesuffix("/triplet_acc") for k in keys if k.endswith("/triplet_acc") and not k.startswith("zs_")]
  group_size = {"triplet_acc/mean": len(task_rows), "triplet_acc/trained_mean": len(trained & set(task_rows)),
                "triplet_acc/held_out_mean": len(set(task_rows) - trained)}
  header = ["metric", *names] + [f"Δ {n}" for n in names[1:]] + ["s.e."]
  print("| " + " | ".join(header) + " |")
  print("|" + "---|" * len(header))
  for k in keys:
    values = [r[k] for r in results]
    se = None
    if k.endswith("triplet_acc") or k in group_size:
      n = args.num_triplets * max(group_size.get(k, 1), 1)
      se = math.sqrt(values[0] * (1 - values[0]) / n)
    elif k.endswith("/bitext_acc"):
      se = math.sqrt(values[0] * (1 - values[0]) / args.num_bitext_pairs)
    deltas = [f"{v - values[0]:+.3f}" + (" ~" if se and abs(v - values[0]) < 2 * math.sqrt(2) * se else "")
              for v in values[1:]]
    cells = [k, *(f"{v:.3f}" for v in values), *deltas, f"±{se:.3f}" if se else ""]
    print("| " + " | ".join(cells) + " |")
  if args.plot:
    plot(results, names, args.x, args.y, args.plot)


def plot(results: list[dict[str, float]], names: list[str], x: str, y: str, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  missing = [n for n, r in zip(names, results) if x not in r or y not in r]
  if missing:
    raise SystemExit(f"--plot: {', '.join(missing)} lack {x} or {y}")
  fig, ax = plt.subplots(figsize=(6.5, 4.5))
  for i, (name, r) in enumerate(zip(names, results)):
    ax.scatter(r[x], r[y], marker="*" if i == 0 else "o", s=140 if i == 0 else 50, zorder=3)
    # Alternate labels above and below their points: neighbours (seeds of one recipe) stay readable.
    ax.annotate(name, (r[x], r[y]), textcoords="offset points", xytext=(6, 4 if i % 2 else -11), fontsize=8)
  ax.axvline(results[0][x], color="grey", lw=0.8, ls=":")
  ax.axhline(results[0][y], color="grey", lw=0.8, ls=":")
  ax.set_xlabel(x)
  ax.set_ylabel(y)
  ax.set_title(f"{y} against {x} (dotted: {names[0]})", fontsize=9)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=130)
  print(f"wrote {path}")


if __name__ == "__main__":
  main()

r"""A markdown table of evaluation results side by side, with the change against the first column.

  python scripts/compare_evals.py base.json workdirs/multitask --names "base 384-d,multi-task 50-d"

Each argument is a `pe_jax.evaluate` JSON file or a training workdir (its last evaluation in
metrics.jsonl). Rows are the metrics all inputs share.
"""

from __future__ import annotations

import argparse
import json
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


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("inputs", nargs="+")
  p.add_argument("--names", help="comma-separated column names (default: the inputs)")
  p.add_argument("--skip", default="num_queries,num_skipped_queries,mrr@10,recall@1,recall@5",
                 help="comma-separated metric suffixes to leave out")
  args = p.parse_args()
  names = args.names.split(",") if args.names else args.inputs
  results = [load_results(s) for s in args.inputs]
  skip = tuple(args.skip.split(",")) if args.skip else ()
  keys = [k for k in results[0] if all(k in r for r in results[1:]) and not k.endswith(skip)]
  keys.sort(key=lambda k: (k.startswith("zs_"), k == "triplet_acc/mean", k))
  header = ["metric", *names] + [f"Δ {n}" for n in names[1:]]
  print("| " + " | ".join(header) + " |")
  print("|" + "---|" * len(header))
  for k in keys:
    values = [r[k] for r in results]
    deltas = [f"{v - values[0]:+.3f}" for v in values[1:]]
    print(f"| {k} | " + " | ".join(f"{v:.3f}" for v in values) + " | " + " | ".join(deltas) + " |")


if __name__ == "__main__":
  main()

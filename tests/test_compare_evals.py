"""scripts/compare_evals.py: every row of its table has the header's cells, one input or several."""

import json
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def table(tmp_path, *results: dict) -> list[list[str]]:
  files = []
  for i, r in enumerate(results):
    files.append(tmp_path / f"r{i}.json")
    files[-1].write_text(json.dumps({"results": r}))
  out = subprocess.run([sys.executable, str(REPO / "scripts" / "compare_evals.py"), *map(str, files),
                        "--num_triplets", "1000"], capture_output=True, text=True, check=True, cwd=REPO).stdout
  return [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("|")]


@pytest.mark.parametrize("count", [1, 2, 3])
def test_every_row_has_the_headers_cells(tmp_path, count):
  base = {"a/triplet_acc": 0.6, "triplet_acc/mean": 0.6, "zs_sts/sts_spearman": 0.8}
  rows = table(tmp_path, *[{k: v + 0.1 * i for k, v in base.items()} for i in range(count)])
  assert all(len(row) == len(rows[0]) for row in rows), rows
  assert rows[0][-1] == "s.e." and rows[2][-1] == "±0.015"  # sqrt(0.6 * 0.4 / 1000)
  if count > 1:
    assert rows[2][1 + count] == "+0.100"  # Δ of the second input, beyond 2 sqrt(2) s.e.

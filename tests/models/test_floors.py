"""The models floor imports nothing above it: loading a model never pulls in the trainer, data or serving."""

from __future__ import annotations

import ast
import pathlib

import pytest

MODELS = pathlib.Path(__file__).resolve().parents[2] / "pe_jax" / "models"
# What pe_jax/models may import from pe_jax: itself and the modules below it.
ALLOWED = ("pe_jax.models", "pe_jax.runtime", "pe_jax.sharding", "pe_jax.suggest", "pe_jax.tokenization")


def pe_jax_imports(path: pathlib.Path) -> list[tuple[int, str]]:
  """(line, module) of every pe_jax import in the file, function-level (lazy) imports included."""
  found = []
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      found += [(node.lineno, alias.name) for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      # `from pe_jax import sharding` imports pe_jax.sharding: the names are modules too.
      found += [(node.lineno, f"{node.module}.{alias.name}" if node.module == "pe_jax" else node.module)
                for alias in node.names]
  return [(line, module) for line, module in found if module == "pe_jax" or module.startswith("pe_jax.")]


@pytest.mark.parametrize("path", sorted(MODELS.glob("*.py")), ids=lambda p: p.name)
def test_models_import_nothing_above_them(path):
  upward = [f"{path.name}:{line}: {module}" for line, module in pe_jax_imports(path)
            if not any(module == allowed or module.startswith(allowed + ".") for allowed in ALLOWED)]
  assert not upward, f"pe_jax/models imports a higher floor: {upward}"


def test_the_check_sees_lazy_imports(tmp_path):
  source = tmp_path / "lazy.py"
  source.write_text("def f():\n  from pe_jax.training import workdir\n  import pe_jax.serving.embedder\n")
  assert pe_jax_imports(source) == [(2, "pe_jax.training"), (3, "pe_jax.serving.embedder")]

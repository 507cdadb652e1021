"""Process-wide JAX settings that the command lines share."""

from __future__ import annotations

import os
import pathlib


def enable_compilation_cache(path: str | os.PathLike | None = None) -> pathlib.Path | None:
  """Persists XLA executables across processes, so a rerun (a resumed training run, the next
  embedding job) skips compiling the shapes an earlier run already compiled.

  `path` > $PE_JAX_COMPILATION_CACHE > ~/.cache/pe_jax/xla; the value "off" disables it.
  """
  import jax

  path = path or os.environ.get("PE_JAX_COMPILATION_CACHE") or pathlib.Path.home() / ".cache" / "pe_jax" / "xla"
  if str(path) == "off":
    return None
  path = pathlib.Path(path).expanduser()
  path.mkdir(parents=True, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", str(path))
  # The embedder's row shapes compile in a second or two each; they are worth keeping too.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
  return path

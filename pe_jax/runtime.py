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


def native_bfloat16(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> bool:
  """Whether the default JAX device multiplies bfloat16 natively: TPUs, GPUs from Ampere on, and CPUs with
  AVX512-BF16 or AMX (their flags in `cpuinfo`). Elsewhere bfloat16 products are emulated and float32 is
  the faster compute dtype."""
  import jax

  device = jax.devices()[0]
  if device.platform == "tpu":
    return True
  if device.platform == "gpu":
    return float(getattr(device, "compute_capability", 0) or 0) >= 8.0
  try:
    flags = pathlib.Path(cpuinfo).read_text().split()
  except OSError:  # not Linux: no cheap way to ask, so the safe choice
    return False
  return "avx512_bf16" in flags or "amx_bf16" in flags


def compute_dtype(dtype: str) -> str:
  """A config's compute dtype with "auto" made concrete: "bfloat16" where `native_bfloat16`, else "float32"."""
  if dtype != "auto":
    return dtype
  return "bfloat16" if native_bfloat16() else "float32"

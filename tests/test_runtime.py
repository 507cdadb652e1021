"""Process-wide settings: the compute dtype "auto" resolves to what the device multiplies natively."""

import pytest

from pe_jax import runtime
from pe_jax.models import pretrained


@pytest.mark.parametrize("flags, native", [("fpu avx2 avx512f avx512_bf16 avx512_vnni", True),
                                           ("fpu avx2 amx_bf16 amx_tile", True), ("fpu avx2 avx512f fma", False)])
def test_cpu_bfloat16_is_read_off_the_cpu_flags(tmp_path, flags, native):
  cpuinfo = tmp_path / "cpuinfo"
  cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
  assert runtime.native_bfloat16(cpuinfo) is native
  assert runtime.native_bfloat16(tmp_path / "absent") is False  # no /proc: float32, the safe choice


def test_auto_is_made_concrete_before_any_model_sees_it(monkeypatch):
  for native, want in ((True, "bfloat16"), (False, "float32")):
    monkeypatch.setattr(runtime, "native_bfloat16", lambda native=native: native)
    assert runtime.compute_dtype("auto") == want
    assert pretrained.resolve("minilm-l6", dtype="auto").config.dtype == want
  assert runtime.compute_dtype("float32") == "float32" and runtime.compute_dtype("bfloat16") == "bfloat16"

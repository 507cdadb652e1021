"""Metrics to `WORKDIR/metrics.jsonl` and TensorBoard, and a progress line a person can read."""

from __future__ import annotations

import json
import math
import pathlib
import sys
import time
from typing import Any

import jax

METRICS_FILE = "metrics.jsonl"
# Measurements of the machine (step time, tokens/s, MFU), not results of the run: two runs of one
# config differ in them, so `read_metrics` gives them only when asked.
TIMING_PREFIX = "perf/"


class MetricsWriter:
  """Only process 0 writes; every logged step is one JSON object with at least `step`."""

  def __init__(self, workdir: pathlib.Path, *, resume_step: int, total_steps: int):
    self.enabled = jax.process_index() == 0
    self.total_steps = total_steps
    self._path = workdir / METRICS_FILE
    self._start = (time.perf_counter(), resume_step)
    if not self.enabled:
      return
    _drop_steps_after(self._path, resume_step)  # a resumed run rewrites what the dead one logged after its checkpoint
    from tensorboardX import SummaryWriter

    self._tb = SummaryWriter(str(workdir / "tensorboard"))
    self._file = open(self._path, "a", encoding="utf-8")

  def write(self, step: int, metrics: dict[str, Any]) -> None:
    if not self.enabled:
      return
    record = {"step": step, **metrics}
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()
    for key, value in metrics.items():
      if isinstance(value, (int, float)) and math.isfinite(value):
        self._tb.add_scalar(key, value, step)

  def progress(self, step: int, loss: float, task: str, *, mfu: float | None = None) -> None:
    if not self.enabled:
      return
    t0, s0 = self._start
    rate = (step - s0) / max(time.perf_counter() - t0, 1e-9)
    eta = (self.total_steps - step) / rate if rate > 0 else float("inf")
    utilisation = f"  MFU {mfu:.1%}" if mfu is not None else ""
    print(f"step {step}/{self.total_steps}  loss {loss:.4f}  [{task}]  {rate:.2f} steps/s{utilisation}  "
          f"ETA {_duration(eta)}", file=sys.stderr, flush=True)

  def close(self) -> None:
    if self.enabled:
      self._file.close()
      self._tb.close()


def _duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  m, s = divmod(int(seconds), 60)
  h, m = divmod(m, 60)
  return f"{h}:{m:02d}:{s:02d}"


def _drop_steps_after(path: pathlib.Path, step: int) -> None:
  if not path.exists():
    return
  kept = []
  for line in path.read_text(encoding="utf-8").splitlines():
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      continue  # the line a killed run was writing
    if record["step"] <= step:
      kept.append(line)
  path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def read_metrics(workdir: str | pathlib.Path, *, timings: bool = False) -> list[dict[str, Any]]:
  """The logged records in order; with `timings`, also their `perf/…` fields."""
  path = pathlib.Path(workdir) / METRICS_FILE
  records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
  if timings:
    return records
  return [{k: v for k, v in r.items() if not k.startswith(TIMING_PREFIX)} for r in records]

"""Model FLOPs of a packed training step and accelerator peaks: model FLOPs utilisation (MFU).

Model FLOPs count what the model needs, not what the hardware did: matmuls over real tokens only
(packing padding and the block-diagonal attention between packed texts are overhead, not model
work) and each text's attention over its own length. Training costs three forward passes (the
backward pass two), less the backward pass of a frozen trunk. Embedding lookups, norms and activations
are left out, as is usual for MFU.
"""

from __future__ import annotations

import dataclasses

from pe_jax.models.encoder import EncoderConfig


@dataclasses.dataclass(frozen=True)
class TokenCounts:
  """What a step's FLOPs depend on, summed over the global batch."""

  texts: int
  tokens: int  # real (non-padding) tokens
  squared_lengths: int  # sum over texts of length ** 2: attention's cost


def forward_flops(cfg: EncoderConfig, counts: TokenCounts) -> float:
  """Multiply-adds x 2 of one forward pass of the encoder and its projection."""
  d, f = cfg.hidden_size, cfg.intermediate_size
  per_token = 2 * (4 * d * d + 2 * d * f)  # q, k, v, output projections; the two MLP matmuls
  attention = 2 * 2 * d * counts.squared_lengths  # scores q.k and the weighted sum of v
  projection = 2 * d * cfg.projection_dim * counts.texts if cfg.projection_dim else 0
  return cfg.num_layers * (per_token * counts.tokens + attention) + projection


def train_step_flops(cfg: EncoderConfig, counts: TokenCounts, frozen_layers: int = 0) -> float:
  """A forward pass and the backward pass (twice a forward's work) of what trains: a frozen trunk of
  `frozen_layers` layers takes no backward pass."""
  trained = cfg.replace(num_layers=cfg.num_layers - frozen_layers)
  return forward_flops(cfg, counts) + 2.0 * forward_flops(trained, counts)


# Dense peak FLOP/s per device (a GPU, a TPU chip) for bfloat16 and float32 inputs. float32 counts
# the tensor cores' TF32 rate on GPUs and bfloat16 passes on TPUs: what XLA uses for float32
# matmuls at jax's default precision. Matched against `device_kind` in order, first match wins.
_PEAKS: tuple[tuple[str, float, float], ...] = (
    ("h100 pcie", 756e12, 378e12),
    ("h100", 989e12, 495e12),  # SXM
    ("h200", 989e12, 495e12),
    ("a100", 312e12, 156e12),
    ("tpu v4 lite", 138e12, 138e12),  # v4i
    ("tpu v4", 275e12, 275e12),
    ("tpu v5 lite", 197e12, 197e12),  # v5e
    ("tpu v5e", 197e12, 197e12),
    ("tpu v5", 459e12, 459e12),  # v5p
    ("tpu v6", 918e12, 918e12),  # v6e (Trillium)
)


def peak_flops(device_kind: str, dtype: str) -> float | None:
  """Peak FLOP/s of one device of `device_kind` (jax's `Device.device_kind`); None when unknown (CPU)."""
  kind = device_kind.lower()
  for name, bf16, f32 in _PEAKS:
    if name in kind:
      return bf16 if dtype == "bfloat16" else f32
  return None


def mfu(flops: float, seconds: float, num_devices: int, peak: float) -> float:
  """Fraction of the devices' peak that `flops` model FLOPs in `seconds` reached."""
  return flops / (seconds * num_devices * peak)


class Throughput:
  """Step times and token counts between two log lines, as the `perf/…` fields of a metrics record.

  Steps that compiled a new program are left out: their time is XLA's, not the step's.
  """

  def __init__(self, cfg: EncoderConfig, *, num_devices: int, peak: float | None, frozen_layers: int = 0):
    self.cfg = cfg
    self.frozen_layers = frozen_layers
    self.num_devices = num_devices
    self.peak = peak
    self._reset()

  def _reset(self) -> None:
    self._steps, self._seconds, self._flops, self._tokens = 0, 0.0, 0.0, 0

  def add(self, counts: TokenCounts, seconds: float, *, compiled: bool) -> None:
    if compiled:
      return
    self._steps += 1
    self._seconds += seconds
    self._flops += train_step_flops(self.cfg, counts, self.frozen_layers)
    self._tokens += counts.tokens

  def record(self) -> dict[str, float]:
    """The fields since the last call (none if every step since compiled), then starts over."""
    if not self._steps:
      return {}
    s = self._seconds
    out = {"perf/step_time": s / self._steps, "perf/tokens_per_second": self._tokens / s,
           "perf/model_flops_per_step": self._flops / self._steps}
    if self.peak:
      out["perf/mfu"] = mfu(self._flops, s, self.num_devices, self.peak)
    self._reset()
    return out

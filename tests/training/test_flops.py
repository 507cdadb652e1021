"""Model FLOPs of a packed step, device peaks, and the MFU / throughput fields of metrics.jsonl."""

import jax
import numpy as np
import pytest

from pe_jax import sharding as sharding_lib
from pe_jax.models.encoder import EncoderConfig
from pe_jax.training import flops
from pe_jax.training.batches import BatchBuilder
from pe_jax.training.metrics_writer import read_metrics

TINY = EncoderConfig(vocab_size=10, hidden_size=4, num_layers=2, num_heads=2, intermediate_size=8,
                     max_position_embeddings=16, max_seq_length=16, projection_dim=3)


def test_forward_flops_count_every_matmul_of_each_text():
  lengths = [2, 3]
  counts = flops.TokenCounts(texts=2, tokens=5, squared_lengths=13)
  d, f = TINY.hidden_size, TINY.intermediate_size
  # (rows, inner, cols) of each matmul of one text of n tokens, per layer; then the projection.
  def matmuls(n):
    layer = [(n, d, d)] * 4 + [(n, d, f), (n, f, d)] + [(n, d, n), (n, n, d)]  # q k v o, mlp, scores, mix
    return layer * TINY.num_layers + [(1, d, TINY.projection_dim)]
  expected = sum(2 * a * b * c for n in lengths for a, b, c in matmuls(n))
  assert flops.forward_flops(TINY, counts) == expected
  assert flops.train_step_flops(TINY, counts) == 3 * expected
  # A frozen trunk takes the forward pass only: with every layer frozen, only the projection trains.
  projection = sum(2 * d * TINY.projection_dim for _ in lengths)
  assert flops.train_step_flops(TINY, counts, frozen_layers=TINY.num_layers) == expected + 2 * projection


@pytest.mark.parametrize("kind, dtype, peak", [
    ("NVIDIA H100 80GB HBM3", "bfloat16", 989e12),
    ("NVIDIA H100 PCIe", "bfloat16", 756e12),
    ("NVIDIA H200", "float32", 495e12),
    ("NVIDIA A100-SXM4-40GB", "bfloat16", 312e12),
    ("TPU v4", "bfloat16", 275e12),
    ("TPU v5 lite", "float32", 197e12),
    ("TPU v5", "bfloat16", 459e12),
    ("TPU v6 lite", "bfloat16", 918e12),
    ("cpu", "float32", None),
])
def test_peak_by_device_kind(kind, dtype, peak):
  assert flops.peak_flops(kind, dtype) == peak


def test_throughput_leaves_out_compiling_steps():
  counts = flops.TokenCounts(texts=2, tokens=5, squared_lengths=13)
  t = flops.Throughput(TINY, num_devices=2, peak=1e6)
  t.add(counts, 100.0, compiled=True)
  assert t.record() == {}
  t.add(counts, 1.0, compiled=False)
  t.add(counts, 3.0, compiled=False)
  step_flops = flops.train_step_flops(TINY, counts)
  assert t.record() == pytest.approx({"perf/step_time": 2.0, "perf/tokens_per_second": 2.5,
                                      "perf/model_flops_per_step": step_flops,
                                      "perf/mfu": 2 * step_flops / (4.0 * 2 * 1e6)})
  assert t.record() == {}  # started over
  unknown_peak = flops.Throughput(TINY, num_devices=1, peak=None)
  unknown_peak.add(counts, 1.0, compiled=False)
  assert set(unknown_peak.record()) == {"perf/step_time", "perf/tokens_per_second", "perf/model_flops_per_step"}


def test_builder_counts_the_global_batch_it_built(labeling_task, minilm_tokenizer):
  names = ("alpha", "bravo")
  builder = BatchBuilder({n: labeling_task(n) for n in names}, {n: 0.5 for n in names}, minilm_tokenizer,
                         mesh=sharding_lib.single_device_mesh(), batch_size_per_shard=4, seed=0,
                         per_shard_tasks=True)
  plan, batch = builder.build(3)
  segments = np.asarray(jax.device_get(batch["segments"]))
  lengths = np.bincount(segments[segments > 0])[1:]
  assert plan.counts == flops.TokenCounts(texts=3 * 4, tokens=int((segments > 0).sum()),
                                          squared_lengths=int((lengths ** 2).sum()))


def test_training_logs_step_time_and_tokens_per_second(smoke_run):
  records = [r for r in read_metrics(smoke_run.workdir, timings=True) if "loss" in r]
  timed = [r for r in records if "perf/step_time" in r]
  assert len(timed) >= len(records) - 3  # only steps that compiled go untimed
  for r in timed:
    assert r["perf/step_time"] > 0 and r["perf/tokens_per_second"] > 0 and r["perf/model_flops_per_step"] > 0
    assert "perf/mfu" not in r  # a CPU's peak is unknown
  assert not any(k.startswith("perf/") for r in read_metrics(smoke_run.workdir) for k in r)

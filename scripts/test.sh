#!/usr/bin/env bash
# Installs what is missing, then runs the test suite (fast tests; `scripts/test.sh -m slow` for the rest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --with-redis  # the near-line tests run on a real Redis
. .venv/bin/activate
export PE_JAX_DATA_DIR="${PE_JAX_DATA_DIR:-$(cd .. && pwd)/shared/data}"
export PE_JAX_TFDS_DIR="${PE_JAX_TFDS_DIR:-$PWD/.cache/tfds}"
exec python -m pytest -q "$@"

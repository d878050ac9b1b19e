#!/usr/bin/env bash
# Install everything and run the main job on the embedded default: a real Temporal dev
# server and a worker for every discovered action (`nomad-actions dev`), then the example
# plugin's offline formula analysis, its progress followed and its result printed.
# Usage: ./scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install.sh
export PATH="$PWD/${VENV:-.venv}/bin:$PATH"

# A fresh data dir: the dev server keeps its SQLite file there; the CLI finds the running
# dev server through its dev.json.
export NOMAD_ACTIONS_DATA_DIR="$(mktemp -d -t nomad-actions-demo.XXXXXX)"
unset NOMAD_TEMPORAL_HOST NOMAD_TEMPORAL_PORT
LOG="$NOMAD_ACTIONS_DATA_DIR/dev.log"

echo "==> starting nomad-actions dev (log: $LOG)"
nomad-actions dev --data-dir "$NOMAD_ACTIONS_DATA_DIR" >"$LOG" 2>&1 &
DEV_PID=$!
stop_dev() {
    if kill -0 "$DEV_PID" 2>/dev/null; then
        kill -INT "$DEV_PID"
        wait "$DEV_PID" || true
    fi
}
trap stop_dev EXIT

for _ in $(seq 1 240); do
    [ -f "$NOMAD_ACTIONS_DATA_DIR/dev.json" ] && break
    if ! kill -0 "$DEV_PID" 2>/dev/null; then
        echo "nomad-actions dev exited early:" >&2
        cat "$LOG" >&2
        exit 1
    fi
    sleep 0.5
done
[ -f "$NOMAD_ACTIONS_DATA_DIR/dev.json" ] || { echo "dev server did not come up" >&2; cat "$LOG" >&2; exit 1; }
grep -v -e " WARNING " -e " INFO " "$LOG" | sed "/Press Ctrl-C/q"

echo "==> the installed actions"
nomad-actions actions

echo "==> running the example action (offline formula analysis)"
nomad-actions start nomad_actions_example.formulas:formulas_action --user demo --wait --data \
    '{"formulas": ["H2O", "NaCl", "C6H12O6", "Ca(OH)2", "Fe2(SO4)3", "CO2", "NH3", "C2H5OH"],
      "delay_per_formula": 0.4}'

echo "==> stopping the dev server and workers"
stop_dev
trap - EXIT
echo "done"

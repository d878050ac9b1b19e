"""The engine's tokio runtime: its size comes from NOMAD_ACTIONS_RUNTIME_THREADS."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nomad_actions.testing import free_port

# Starts the runtime with one failing connect (nothing listens on the port), then counts
# the runtime's worker threads by name.
PROBE = """
import os, sys
import nomad_actions
nomad_actions.configure(host="127.0.0.1", port=int(sys.argv[1]), connect_timeout=2)
try:
    nomad_actions.get_action_status("no-such-workflow")
except nomad_actions.TemporalConnectionError:
    pass
names = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
print(sum(name == "tokio-rt-worker" for name in names))
"""


@pytest.mark.parametrize(("setting", "expected"), [(None, 1), ("3", 3), ("junk", 1)])
def test_runtime_threads(setting: str | None, expected: int) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NOMAD_ACTIONS_RUNTIME_THREADS"}
    if setting is not None:
        env["NOMAD_ACTIONS_RUNTIME_THREADS"] = setting
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip().splitlines()[-1]) == expected

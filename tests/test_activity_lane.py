"""Where activity starts run: `async def` ones on the bridge's event loop itself (the
`LoopLane`), `def` ones from the worker's Python threads straight to their pool thread.

Our worker (in this process) serves the activities, temporalio's official worker runs the
workflow that calls them, on a real dev server. What the tests prove: an `async def` start
no longer wakes a worker thread (their context switches do not grow with the number of
activities), while `def` activities still go through them. Cancels follow their start onto
the loop; tests/test_worker.py::test_stop_action_cancels_heartbeating_activity cancels an
`async def` activity through it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .test_activity_payloads import Peers, Sample, running_peers

pytestmark = pytest.mark.timeout(300)

RUNS = 30


def activity_thread_switches() -> int:
    """Voluntary context switches of this process's `nomad-activities` threads, and of the
    `def` activities' pool threads they started (a new thread inherits its starter's name;
    the kernel cuts it to 15 characters)."""
    total = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                if f.read().strip() != "nomad-activitie":
                    continue
            with open(f"/proc/self/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
        except FileNotFoundError:
            continue
    return total


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    with running_peers(tmp_path_factory.mktemp("lane-server") / "temporal.log") as running:
        yield running


def test_async_starts_run_on_the_loop_and_sync_ones_on_the_worker_threads(
    peers: Peers,
) -> None:
    sample = {"name": "s", "energy": 1.0, "tags": [], "measured": "2024-01-01T00:00:00Z"}
    peers.call("scale_sample", sample, 1)  # warm up
    before = activity_thread_switches()
    for i in range(RUNS):
        answer, _ = peers.call("scale_sample", sample, i)
        assert Sample.model_validate(answer["result"]).energy == float(i)
    async_switches = activity_thread_switches() - before
    # Each activity runs alone, so a start through a worker thread would wake it (and
    # cost a switch when it sleeps again): at least RUNS. Only idle timeouts remain.
    assert async_switches < RUNS / 3, async_switches

    before = activity_thread_switches()
    for i in range(RUNS):
        assert peers.call("increment", i)[0] == {"result": i + 1}
    sync_switches = activity_thread_switches() - before
    assert sync_switches >= RUNS, sync_switches

"""A test-only action whose activity reports progress with `report_progress`.

The activity keeps reporting (every 0.2 s) until the file `data.release_file` exists, so a
test decides when it ends and never races the heartbeat throttle. The short
`heartbeat_timeout` makes the worker send progress to the server every 1.6 s at most
(0.8 x the timeout), as a real plugin should.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    from nomad_actions import report_progress

#: How long the activity waits for its release file at most.
MAX_SECONDS = 150.0
STEP_SECONDS = 0.2


@dataclass
class ProgressInput:
    user_id: str
    release_file: str
    use_async: bool = False


@dataclass
class ProgressOutput:
    steps: int
    mode: str


def _fraction(step: int) -> float:
    return min(step / 100, 0.9)


@activity.defn
def report_steps(data: ProgressInput) -> ProgressOutput:
    """A `def` activity: reports `step N` until released."""
    release = Path(data.release_file)
    deadline = time.monotonic() + MAX_SECONDS
    step = 0
    while not release.exists() and time.monotonic() < deadline:
        step += 1
        report_progress(_fraction(step), f"step {step}")
        time.sleep(STEP_SECONDS)
    report_progress(1.0, "done")
    return ProgressOutput(steps=step, mode="sync")


@activity.defn
async def report_steps_async(data: ProgressInput) -> ProgressOutput:
    """The same as an `async def` activity."""
    release = Path(data.release_file)
    deadline = time.monotonic() + MAX_SECONDS
    step = 0
    while not release.exists() and time.monotonic() < deadline:
        step += 1
        report_progress(_fraction(step), f"step {step}")
        await asyncio.sleep(STEP_SECONDS)
    report_progress(1.0, "done")
    return ProgressOutput(steps=step, mode="async")


@workflow.defn(name="CliProgressWorkflow")
class ProgressWorkflow:
    """Runs one of the reporting activities with a short heartbeat timeout."""

    @workflow.run
    async def run(self, data: ProgressInput) -> ProgressOutput:
        return await workflow.execute_activity(
            report_steps_async if data.use_async else report_steps,
            data,
            start_to_close_timeout=timedelta(seconds=MAX_SECONDS + 60),
            heartbeat_timeout=timedelta(seconds=2),
        )

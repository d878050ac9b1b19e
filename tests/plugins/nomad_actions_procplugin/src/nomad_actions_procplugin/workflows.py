"""Workflows of the process-test actions (sandbox-safe: other modules are passed through)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from .activities import heartbeat_work, sleep_work
    from .models import SleepInput, WorkInput, WorkOutput

RETRY = RetryPolicy(maximum_attempts=5, initial_interval=timedelta(seconds=0.5))


@workflow.defn(name="ProcHeartbeatWorkflow")
class HeartbeatWorkflow:
    """Runs ``heartbeat_work``; a lost worker is noticed within the 2 s heartbeat timeout."""

    @workflow.run
    async def run(self, data: WorkInput) -> WorkOutput:
        return await workflow.execute_activity(
            heartbeat_work,
            data,
            start_to_close_timeout=timedelta(minutes=5),
            heartbeat_timeout=timedelta(seconds=2),
            retry_policy=RETRY,
        )


@workflow.defn(name="ProcSleeperWorkflow")
class SleeperWorkflow:
    """Runs the ``def`` activity ``sleep_work``."""

    @workflow.run
    async def run(self, data: SleepInput) -> str:
        return await workflow.execute_activity(
            sleep_work,
            data,
            start_to_close_timeout=timedelta(minutes=5),
            retry_policy=RETRY,
        )

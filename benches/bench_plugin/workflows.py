"""Workflows of the benchmark (sandbox-safe: other modules are passed through)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from .activities import greet, sleep_ms
    from .models import FanOutInput, GreetInput, GreetOutput

_TIMEOUT = timedelta(seconds=60)
_RETRY = RetryPolicy(maximum_attempts=3)


@workflow.defn(name="BenchSingle")
class SingleWorkflow:
    """One Pydantic activity, as the seed action does."""

    @workflow.run
    async def run(self, data: GreetInput) -> GreetOutput:
        return await workflow.execute_activity(
            greet, data, start_to_close_timeout=_TIMEOUT, retry_policy=_RETRY
        )


@workflow.defn(name="BenchFanOut")
class FanOutWorkflow:
    """`data.count` short Pydantic activities at once, gathered."""

    @workflow.run
    async def run(self, data: FanOutInput) -> int:
        results = await asyncio.gather(
            *(
                workflow.execute_activity(
                    greet,
                    GreetInput(user_id=data.user_id, name="fan-out", index=i),
                    start_to_close_timeout=_TIMEOUT,
                    retry_policy=_RETRY,
                )
                for i in range(data.count)
            )
        )
        return len(results)


@workflow.defn(name="BenchSyncSleep")
class SyncSleepWorkflow:
    """`data.count` sync activities of `data.sleep_ms` each, gathered; the worker's
    activity slots bound how many run at once."""

    @workflow.run
    async def run(self, data: FanOutInput) -> int:
        results = await asyncio.gather(
            *(
                workflow.execute_activity(
                    sleep_ms, data.sleep_ms, start_to_close_timeout=_TIMEOUT, retry_policy=_RETRY
                )
                for _ in range(data.count)
            )
        )
        return len(results)


WORKFLOWS = [SingleWorkflow, FanOutWorkflow, SyncSleepWorkflow]
ACTIVITIES = [greet, sleep_ms]

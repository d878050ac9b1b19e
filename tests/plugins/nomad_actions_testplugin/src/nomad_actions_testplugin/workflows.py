"""Workflows of the test actions (sandbox-safe: other modules are passed through)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from .activities import make_greeting
    from .models import FailsInput, GreetInput, GreetOutput, WaitInput


@workflow.defn(name="GreetWorkflow")
class GreetWorkflow:
    """Runs the ``make_greeting`` activity."""

    @workflow.run
    async def run(self, data: GreetInput) -> GreetOutput:
        return await workflow.execute_activity(
            make_greeting,
            data,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(maximum_attempts=3),
        )


@workflow.defn(name="WaiterWorkflow")
class WaiterWorkflow:
    """Waits for the ``finish`` signal, at most ``data.seconds``."""

    def __init__(self) -> None:
        self._done = False
        self._value: str | None = None

    @workflow.run
    async def run(self, data: WaitInput) -> str:
        try:
            await workflow.wait_condition(
                lambda: self._done, timeout=timedelta(seconds=data.seconds)
            )
        except asyncio.TimeoutError:
            return "timeout"
        return self._value if self._value is not None else ""

    @workflow.signal
    def finish(self, value: str) -> None:
        self._value = value
        self._done = True

    @workflow.query
    def state(self) -> str:
        return "done" if self._done else "waiting"


@workflow.defn(name="FailsWorkflow")
class FailsWorkflow:
    """Always fails with a non-retryable ``ApplicationError``."""

    @workflow.run
    async def run(self, data: FailsInput) -> None:
        raise ApplicationError(f"boom: {data.reason}", non_retryable=True)

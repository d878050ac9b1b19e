"""Workflows of the fault plugin (sandbox-safe: other modules are passed through)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy

with workflow.unsafe.imports_passed_through():
    from .activities import (
        fault_bad_result,
        fault_echo,
        fault_echo_any,
        fault_heartbeat,
        fault_ok,
        fault_square,
        fault_step,
        fault_step_a,
        fault_step_b,
    )
    from .models import (
        BadResultInput,
        EchoInput,
        EchoOutput,
        HeartbeatInput,
        OkInput,
        SoakInput,
        SoakOutput,
        StepInput,
        StepsInput,
        StepsOutput,
        VersionedInput,
    )
    from .version import WORKFLOW_VERSION

#: Retries quickly after a lost worker; never gives up (the tests must see every step done).
STEP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=0.5),
    backoff_coefficient=1.5,
    maximum_interval=timedelta(seconds=2),
)
ONCE = RetryPolicy(maximum_attempts=1)


def spin(n: int) -> int:
    """Deterministic CPU work, so that a workflow activation takes a while."""
    acc = 0
    for i in range(n):
        acc = (acc * 31 + i) % 1_000_003
    return acc


@workflow.defn(name="FaultStepsWorkflow")
class StepsWorkflow:
    """Runs ``steps`` ``fault_step`` activities, ``parallel`` at a time, with CPU work in
    every activation; returns the sum of their values."""

    @workflow.run
    async def run(self, data: StepsInput) -> StepsOutput:
        total = 0
        for first in range(0, data.steps, max(1, data.parallel)):
            spin(data.spin)
            indices = range(first, min(first + max(1, data.parallel), data.steps))
            values = await asyncio.gather(
                *(
                    workflow.execute_activity(
                        fault_step,
                        StepInput(marker_dir=data.marker_dir, index=i, seconds=data.seconds),
                        activity_id=f"step-{i}",
                        start_to_close_timeout=timedelta(seconds=15),
                        retry_policy=STEP_RETRY,
                    )
                    for i in indices
                )
            )
            total += sum(values)
        spin(data.spin)
        return StepsOutput(total=total, steps=data.steps)


@workflow.defn(name="FaultEchoWorkflow")
class EchoWorkflow:
    """Waits for ``signals`` ``push`` signals (with ``signals < 0``: for the ``finish``
    signal), then echoes payload and signals through the ``fault_echo`` activity (one
    attempt: a decoding failure must show, not retry)."""

    def __init__(self) -> None:
        self._pushed: list[Any] = []
        self._finished = False

    @workflow.run
    async def run(self, data: EchoInput) -> EchoOutput:
        if data.signals < 0:
            await workflow.wait_condition(lambda: self._finished)
        elif data.signals:
            await workflow.wait_condition(lambda: len(self._pushed) >= data.signals)
        return await workflow.execute_activity(
            fault_echo,
            EchoOutput(payload=data.payload, pushed=self._pushed),
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=ONCE,
        )

    @workflow.signal
    def push(self, value: Any) -> None:
        self._pushed.append(value)

    @workflow.signal
    def finish(self) -> None:
        self._finished = True


@workflow.defn(name="FaultRawEchoWorkflow")
class RawEchoWorkflow:
    """Hands its input payload, undecoded, to the ``fault_echo_any`` activity: the
    activity's own payload decoding is what gets tested."""

    @workflow.run
    async def run(self, data: RawValue) -> Any:
        return await workflow.execute_activity(
            fault_echo_any,
            data,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=ONCE,
        )


@workflow.defn(name="FaultVersionedWorkflow")
class VersionedWorkflow:
    """Version 1 runs ``fault_step_a`` first, version 2 ``fault_step_b``; then it waits for
    the ``go`` signal and runs ``fault_step_a``. Changing the version under a running
    workflow is a non-deterministic change."""

    def __init__(self) -> None:
        self._go = False

    @workflow.run
    async def run(self, data: VersionedInput) -> str:
        first_step = fault_step_a if WORKFLOW_VERSION == 1 else fault_step_b
        first = await workflow.execute_activity(
            first_step, data.tag, start_to_close_timeout=timedelta(seconds=30)
        )
        await workflow.wait_condition(lambda: self._go)
        second = await workflow.execute_activity(
            fault_step_a, data.tag, start_to_close_timeout=timedelta(seconds=30)
        )
        return f"{first}+{second}"

    @workflow.signal
    def go(self) -> None:
        self._go = True


@workflow.defn(name="FaultBadResultWorkflow")
class BadResultWorkflow:
    """Runs ``fault_bad_result`` once; its failure fails the workflow."""

    @workflow.run
    async def run(self, data: BadResultInput) -> Any:
        return await workflow.execute_activity(
            fault_bad_result,
            data.kind,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=ONCE,
        )


@workflow.defn(name="FaultSoakWorkflow")
class SoakWorkflow:
    """One small activity: the unit of the load test."""

    @workflow.run
    async def run(self, data: SoakInput) -> SoakOutput:
        square = await workflow.execute_activity(
            fault_square, data.n, start_to_close_timeout=timedelta(seconds=60)
        )
        return SoakOutput(n=data.n, square=square)


@workflow.defn(name="FaultHeartbeatWorkflow")
class HeartbeatWorkflow:
    """One heartbeating activity whose heartbeat timeout is shorter than its run time: a
    worker whose heartbeats stop reaching the server for longer than that loses it."""

    @workflow.run
    async def run(self, data: HeartbeatInput) -> int:
        return await workflow.execute_activity(
            fault_heartbeat,
            data,
            start_to_close_timeout=timedelta(seconds=120),
            heartbeat_timeout=timedelta(seconds=8),
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=0.5)),
        )


@workflow.defn(name="FaultOkWorkflow")
class OkWorkflow:
    """A working action beside the broken ones on ``BROKEN_QUEUE``."""

    @workflow.run
    async def run(self, data: OkInput) -> str:
        return await workflow.execute_activity(
            fault_ok, data.name, start_to_close_timeout=timedelta(seconds=30)
        )


class NotAWorkflow:
    """A class a plugin forgot to decorate with ``@workflow.defn``."""

    async def run(self, data: OkInput) -> str:
        return data.name

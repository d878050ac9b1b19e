"""Activity interceptors (``Interceptor.intercept_activity``) on our engine, side by side with
the official temporalio worker: the chain sees every activity, ``def`` and ``async def``,
with ``activity.info()`` set; it can change the input and the result; what it binds in
contextvars reaches the activity body; its outbound side sees heartbeats. Both our worker
(``nomad_actions.worker.Worker``) and the drop-in ``nomad_actions.temporal.Worker`` run it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import dataclasses
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import temporalio.worker
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import (
    ActivityInboundInterceptor,
    ActivityOutboundInterceptor,
    ExecuteActivityInput,
    UnsandboxedWorkflowRunner,
)

from nomad_actions import temporal as dropin
from nomad_actions.config import ConnectionConfig
from nomad_actions.testing import DevServer
from nomad_actions.worker import Worker

bound: contextvars.ContextVar[str] = contextvars.ContextVar("bound", default="unbound")


@activity.defn
def shout_sync(name: str) -> str:
    activity.heartbeat("sync-beat")
    return f"{name}|{bound.get()}|{activity.info().activity_type}"


@activity.defn
async def shout_async(name: str) -> str:
    activity.heartbeat("async-beat")
    return f"{name}|{bound.get()}|{activity.info().activity_type}"


@workflow.defn(name="InterceptedWorkflow")
class InterceptedWorkflow:
    @workflow.run
    async def run(self, name: str) -> list[str]:
        options: dict[str, Any] = {
            "start_to_close_timeout": timedelta(seconds=30),
            "retry_policy": RetryPolicy(maximum_attempts=1),
        }
        return [
            await workflow.execute_activity(shout_sync, name, **options),
            await workflow.execute_activity(shout_async, name, **options),
        ]


class Recorder(temporalio.worker.Interceptor):
    """Binds a contextvar, upper-cases the input, brackets the result, records what it saw."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None, str]] = []
        self.heartbeats: list[tuple[Any, ...]] = []

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        recorder = self

        class Outbound(ActivityOutboundInterceptor):
            def heartbeat(self, *details: Any) -> None:
                recorder.heartbeats.append(details)
                super().heartbeat(*details)

        class Inbound(ActivityInboundInterceptor):
            def init(self, outbound: ActivityOutboundInterceptor) -> None:
                super().init(Outbound(outbound))

            async def execute_activity(self, input: ExecuteActivityInput) -> Any:
                info = activity.info()
                recorder.seen.append((info.activity_type, info.workflow_type, input.args[0]))
                bound.set(f"bound-in-{info.activity_type}")
                changed = dataclasses.replace(input, args=[input.args[0].upper()])
                return f"[{await super().execute_activity(changed)}]"

        return Inbound(next)


EXPECTED = [
    "[ADA|bound-in-shout_sync|shout_sync]",
    "[ADA|bound-in-shout_async|shout_async]",
]


@pytest.fixture(scope="module")
def server() -> Iterator[DevServer]:
    with DevServer() as s:
        yield s


def _check(recorder: Recorder, result: list[str]) -> None:
    assert result == EXPECTED
    assert recorder.seen == [
        ("shout_sync", "InterceptedWorkflow", "ada"),
        ("shout_async", "InterceptedWorkflow", "ada"),
    ]
    assert recorder.heartbeats == [("sync-beat",), ("async-beat",)]


async def _start(client: Client, queue: str) -> list[str]:
    return await client.execute_workflow(
        InterceptedWorkflow.run,
        "ada",
        id=f"intercepted-{uuid.uuid4().hex[:8]}",
        task_queue=queue,
        execution_timeout=timedelta(seconds=60),
    )


def test_official_worker_behaves_so(server: DevServer) -> None:
    """The reference: the same interceptor on temporalio's own worker."""

    async def main() -> tuple[Recorder, list[str]]:
        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        recorder, queue = Recorder(), f"icpt-off-{uuid.uuid4().hex[:6]}"
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            async with temporalio.worker.Worker(
                client,
                task_queue=queue,
                workflows=[InterceptedWorkflow],
                activities=[shout_sync, shout_async],
                activity_executor=pool,
                interceptors=[recorder],
                workflow_runner=UnsandboxedWorkflowRunner(),
            ):
                return recorder, await _start(client, queue)

    _check(*asyncio.run(main()))


def test_our_worker_runs_the_chain(server: DevServer) -> None:
    async def main() -> tuple[Recorder, list[str]]:
        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        recorder, queue = Recorder(), f"icpt-ours-{uuid.uuid4().hex[:6]}"
        worker = Worker(
            queue,
            actions=[],
            workflows=[InterceptedWorkflow],
            activities=[shout_sync, shout_async],
            config=ConnectionConfig(host=server.host, port=server.port, development=True),
            interceptors=[recorder],
            sandboxed=False,
        )
        with worker:
            return recorder, await _start(client, queue)

    _check(*asyncio.run(main()))


def test_dropin_worker_runs_the_chain(server: DevServer) -> None:
    async def main() -> tuple[Recorder, list[str]]:
        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        recorder, queue = Recorder(), f"icpt-dropin-{uuid.uuid4().hex[:6]}"
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            async with dropin.Worker(
                client,
                task_queue=queue,
                workflows=[InterceptedWorkflow],
                activities=[shout_sync, shout_async],
                activity_executor=pool,
                interceptors=[recorder],
                workflow_runner=UnsandboxedWorkflowRunner(),
            ):
                return recorder, await _start(client, queue)

    _check(*asyncio.run(main()))


def test_a_failing_interceptor_fails_the_activity(server: DevServer) -> None:
    class Refuser(temporalio.worker.Interceptor):
        def intercept_activity(
            self, next: ActivityInboundInterceptor
        ) -> ActivityInboundInterceptor:
            class Inbound(ActivityInboundInterceptor):
                async def execute_activity(self, input: ExecuteActivityInput) -> Any:
                    raise RuntimeError(f"refused {activity.info().activity_type}")

            return Inbound(next)

    async def main() -> str:
        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        queue = f"icpt-fail-{uuid.uuid4().hex[:6]}"
        worker = Worker(
            queue,
            actions=[],
            workflows=[InterceptedWorkflow],
            activities=[shout_sync, shout_async],
            config=ConnectionConfig(host=server.host, port=server.port, development=True),
            interceptors=[Refuser()],
            sandboxed=False,
        )
        with worker:
            try:
                await _start(client, queue)
            except Exception as err:
                cause = err.__cause__
                return str(getattr(cause, "cause", None) or cause)
        return "no error"

    assert asyncio.run(main()).endswith("refused shout_sync")

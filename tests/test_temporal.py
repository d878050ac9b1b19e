"""`nomad_actions.temporal.Worker` as a drop-in for `temporalio.worker.Worker`: temporalio's
documented features, run in the same process as the test, on our engine."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import timedelta

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.converter import DataConverter, PayloadCodec
from temporalio.worker import UnsandboxedWorkflowRunner

from nomad_actions.temporal import UnsupportedOptionError, Worker
from nomad_actions.testing import DevServer

from .dropin_workflows import (
    BlockingWorkflow,
    ChildWorkflow,
    GreetingWorkflow,
    LocalGreetingWorkflow,
    LoopingWorkflow,
    MessagesWorkflow,
    ParentWorkflow,
    compose_greeting,
    shout,
)

WORKFLOWS = [GreetingWorkflow, MessagesWorkflow, ChildWorkflow, ParentWorkflow, LoopingWorkflow]


@pytest.fixture(scope="module")
def server() -> Iterator[DevServer]:
    with DevServer() as s:
        yield s


def queue() -> str:
    return f"dropin-{uuid.uuid4().hex[:8]}"


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("sandboxed", [True, False], ids=["sandboxed", "unsandboxed"])
def test_activities_signals_queries_updates_children_continue_as_new(
    server: DevServer, sandboxed: bool
) -> None:
    async def main() -> None:
        client = await Client.connect(server.address)
        tq = queue()
        runner = {} if sandboxed else {"workflow_runner": UnsandboxedWorkflowRunner()}
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            async with Worker(
                client,
                task_queue=tq,
                workflows=WORKFLOWS,
                activities=[compose_greeting, shout],
                activity_executor=pool,
                **runner,
            ):
                result = await client.execute_workflow(
                    GreetingWorkflow.run, "World", id=f"greet-{uuid.uuid4()}", task_queue=tq
                )
                assert result == "HELLO, WORLD!"

                handle = await client.start_workflow(
                    MessagesWorkflow.run, id=f"msg-{uuid.uuid4()}", task_queue=tq
                )
                await handle.signal(MessagesWorkflow.add, "one")
                assert await handle.execute_update(MessagesWorkflow.add_and_count, "two") == 2
                assert await handle.query(MessagesWorkflow.messages) == ["one", "two"]
                with pytest.raises(WorkflowUpdateFailedError) as info:
                    await handle.execute_update(MessagesWorkflow.add_and_count, "")
                assert "empty message" in str(info.value.cause)
                await handle.signal(MessagesWorkflow.exit)
                assert await handle.result() == ["one", "two"]

                squares = await client.execute_workflow(
                    ParentWorkflow.run, 4, id=f"parent-{uuid.uuid4()}", task_queue=tq
                )
                assert squares == [0, 1, 4, 9]

                looped = await client.execute_workflow(
                    LoopingWorkflow.run, args=[0, 3], id=f"loop-{uuid.uuid4()}", task_queue=tq
                )
                assert looped.startswith("finished at 3")

    run(main())


class XorCodec(PayloadCodec):
    """A custom codec: payloads on the server are unreadable without it."""

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [
            Payload(
                metadata={"encoding": b"binary/xor"},
                data=bytes(b ^ 0x5A for b in p.SerializeToString()),
            )
            for p in payloads
        ]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        out = []
        for p in payloads:
            if p.metadata.get("encoding") != b"binary/xor":
                out.append(p)
                continue
            out.append(Payload.FromString(bytes(b ^ 0x5A for b in p.data)))
        return out


def test_custom_data_converter_with_codec(server: DevServer) -> None:
    async def main() -> None:
        converter = DataConverter(payload_codec=XorCodec())
        client = await Client.connect(server.address, data_converter=converter)
        tq = queue()
        wid = f"codec-{uuid.uuid4()}"
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            async with Worker(
                client,
                task_queue=tq,
                workflows=[GreetingWorkflow],
                activities=[compose_greeting, shout],
                activity_executor=pool,
            ):
                result = await client.execute_workflow(
                    GreetingWorkflow.run, "Codec", id=wid, task_queue=tq
                )
        assert result == "HELLO, CODEC!"
        # On the server every payload is encoded: the activity input and result too.
        plain = await Client.connect(server.address)
        history = await plain.get_workflow_handle(wid).fetch_history()
        encodings = set()
        for event in history.events:
            for name in (
                "activity_task_scheduled_event_attributes",
                "activity_task_completed_event_attributes",
            ):
                if event.HasField(name):
                    attrs = getattr(event, name)
                    payloads = attrs.input if hasattr(attrs, "input") else attrs.result
                    encodings.update(p.metadata["encoding"] for p in payloads.payloads)
        assert encodings == {b"binary/xor"}

    run(main())


def test_blocking_activation_does_not_block_the_callers_loop(server: DevServer) -> None:
    async def main() -> None:
        client = await Client.connect(server.address)
        tq = queue()
        gaps: list[float] = []

        async def ticker(stop: asyncio.Event) -> None:
            last = time.monotonic()
            while not stop.is_set():
                await asyncio.sleep(0.05)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        async with Worker(client, task_queue=tq, workflows=[BlockingWorkflow]):
            stop = asyncio.Event()
            tick = asyncio.create_task(ticker(stop))
            result = await client.execute_workflow(
                BlockingWorkflow.run, 1.2, id=f"block-{uuid.uuid4()}", task_queue=tq
            )
            stop.set()
            await tick
        assert result == "woke up"
        # The workflow thread slept 1.2 s; the test's loop kept ticking meanwhile.
        assert len(gaps) > 5 and max(gaps) < 1.0, gaps

    run(main())


def test_deadlocked_workflow_task_fails_with_a_message_naming_the_workflow(
    server: DevServer,
) -> None:
    async def main() -> None:
        client = await Client.connect(server.address)
        tq = queue()
        wid = f"deadlock-{uuid.uuid4()}"
        async with Worker(client, task_queue=tq, workflows=[BlockingWorkflow]):
            handle = await client.start_workflow(BlockingWorkflow.run, 4.0, id=wid, task_queue=tq)
            deadline = time.monotonic() + 30
            message = ""
            while time.monotonic() < deadline and "deadlock" not in message:
                await asyncio.sleep(0.3)
                async for event in handle.fetch_history_events():
                    if event.HasField("workflow_task_failed_event_attributes"):
                        message = event.workflow_task_failed_event_attributes.failure.message
            await handle.terminate()
        assert "Potential deadlock detected" in message and "BlockingWorkflow" in message

    run(main())


def test_a_thread_stuck_in_workflow_code_does_not_hold_up_other_workflows(
    server: DevServer,
) -> None:
    """Activations share a few Python threads; one stuck in a blocking call (no interrupt
    reaches `time.sleep`) must make the worker add a thread, not stall the queue."""

    async def main() -> None:
        client = await Client.connect(server.address)
        tq = queue()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            async with Worker(
                client,
                task_queue=tq,
                workflows=[BlockingWorkflow, GreetingWorkflow],
                activities=[compose_greeting, shout],
                activity_executor=pool,
            ):
                stuck = await client.start_workflow(
                    BlockingWorkflow.run, 60.0, id=f"stuck-{uuid.uuid4()}", task_queue=tq
                )
                # Wait until its first activation is inside the 60 s sleep.
                deadline = time.monotonic() + 30
                failed = False
                while not failed and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                    async for event in stuck.fetch_history_events():
                        failed |= event.HasField("workflow_task_failed_event_attributes")
                assert failed, "the blocking workflow never reported its deadlock"
                results = await asyncio.wait_for(
                    asyncio.gather(
                        *(
                            client.execute_workflow(
                                GreetingWorkflow.run,
                                f"n{i}",
                                id=f"greet-{uuid.uuid4()}",
                                task_queue=tq,
                            )
                            for i in range(5)
                        )
                    ),
                    timeout=40,  # the stuck thread sleeps on for 55 s and more
                )
                assert results == [f"HELLO, N{i}!" for i in range(5)]
                await stuck.terminate()

    run(main())


def test_failures_surface_like_the_official_worker(server: DevServer) -> None:
    async def main() -> None:
        client = await Client.connect(server.address)
        tq = queue()
        async with Worker(client, task_queue=tq, workflows=[ChildWorkflow]):
            with pytest.raises(WorkflowFailureError):
                # Wrong argument type: the workflow fails decoding its input.
                await client.execute_workflow(
                    "ChildWorkflow",
                    "not a number",
                    id=f"bad-{uuid.uuid4()}",
                    task_queue=tq,
                    execution_timeout=timedelta(seconds=10),
                )

    run(main())


def test_unsupported_options_are_named(server: DevServer) -> None:
    async def main() -> None:
        client = await Client.connect(server.address)
        with pytest.raises(UnsupportedOptionError, match=r"tuner.*use_worker_versioning"):
            Worker(
                client,
                task_queue="q",
                workflows=[ChildWorkflow],
                tuner=object(),
                use_worker_versioning=True,
            )
        with pytest.raises(TypeError, match="no_such_option"):
            Worker(client, task_queue="q", workflows=[ChildWorkflow], no_such_option=1)
        with pytest.raises(ValueError, match="executor required"):
            Worker(client, task_queue="q", activities=[shout])

    run(main())


def test_no_remote_activities_runs_workflows_and_local_activities_only(server: DevServer) -> None:
    """As temporalio's `no_remote_activities=True`: local activities run, remote activity
    tasks of the queue are left for other workers."""

    async def main() -> None:
        client = await Client.connect(server.address)
        tq = queue()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            async with Worker(
                client,
                task_queue=tq,
                workflows=[LocalGreetingWorkflow, GreetingWorkflow],
                activities=[compose_greeting, shout],
                activity_executor=pool,
                no_remote_activities=True,
            ):
                local = await client.execute_workflow(
                    LocalGreetingWorkflow.run,
                    "Ada",
                    id=f"local-{uuid.uuid4()}",
                    task_queue=tq,
                    execution_timeout=timedelta(seconds=60),
                )
                assert local == "HELLO, ADA!"
                remote = await client.start_workflow(
                    GreetingWorkflow.run, "Bo", id=f"remote-{uuid.uuid4()}", task_queue=tq
                )
                # The remote activity is scheduled but never started by this worker.
                deadline = time.monotonic() + 30
                pending: list = []
                while time.monotonic() < deadline:
                    desc = await remote.describe()
                    pending = list(desc.raw_description.pending_activities)
                    if pending:
                        break
                    await asyncio.sleep(0.2)
                assert pending, "the remote activity was never scheduled"
                await asyncio.sleep(3)
                desc = await remote.describe()
                (activity_info,) = desc.raw_description.pending_activities
                assert activity_info.activity_type.name == "compose_greeting"
                assert activity_info.attempt == 1 and not activity_info.HasField(
                    "last_started_time"
                )
            # A worker that polls remote activities finishes it.
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                async with Worker(
                    client,
                    task_queue=tq,
                    workflows=[GreetingWorkflow],
                    activities=[compose_greeting, shout],
                    activity_executor=pool,
                ):
                    assert await remote.result() == "HELLO, BO!"

    run(main())

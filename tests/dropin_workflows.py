"""Plain temporalio workflows and activities (as in temporalio's own docs), used to check
that `nomad_actions.temporal.Worker` is a drop-in for `temporalio.worker.Worker`."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.workflow import ParentClosePolicy


@dataclass
class Greeting:
    greeting: str
    name: str


@activity.defn
async def compose_greeting(arg: Greeting) -> str:
    return f"{arg.greeting}, {arg.name}!"


@activity.defn
def shout(text: str) -> str:
    # A sync activity: runs on the worker's thread pool.
    return text.upper()


@workflow.defn
class GreetingWorkflow:
    @workflow.run
    async def run(self, name: str) -> str:
        greeting = await workflow.execute_activity(
            compose_greeting,
            Greeting("Hello", name),
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(maximum_attempts=2),
        )
        return await workflow.execute_activity(
            shout, greeting, start_to_close_timeout=timedelta(seconds=10)
        )


@workflow.defn
class MessagesWorkflow:
    """Signals, queries and updates, as in temporalio's message-passing docs."""

    def __init__(self) -> None:
        self._messages: list[str] = []
        self._exit = False

    @workflow.run
    async def run(self) -> list[str]:
        await workflow.wait_condition(lambda: self._exit)
        return self._messages

    @workflow.signal
    async def add(self, message: str) -> None:
        self._messages.append(message)

    @workflow.signal
    def exit(self) -> None:
        self._exit = True

    @workflow.query
    def messages(self) -> list[str]:
        return self._messages

    @workflow.update
    async def add_and_count(self, message: str) -> int:
        self._messages.append(message)
        return len(self._messages)

    @add_and_count.validator
    def _validate(self, message: str) -> None:
        if not message:
            raise ValueError("empty message")


@workflow.defn
class ChildWorkflow:
    @workflow.run
    async def run(self, n: int) -> int:
        await workflow.sleep(0.05)
        return n * n


@workflow.defn
class ParentWorkflow:
    @workflow.run
    async def run(self, n: int) -> list[int]:
        handles = [
            workflow.execute_child_workflow(
                ChildWorkflow.run,
                i,
                id=f"{workflow.info().workflow_id}-child-{i}",
                parent_close_policy=ParentClosePolicy.TERMINATE,
            )
            for i in range(n)
        ]
        return list(await asyncio.gather(*handles))


@workflow.defn
class LoopingWorkflow:
    @workflow.run
    async def run(self, count: int, until: int) -> str:
        if count < until:
            workflow.continue_as_new(args=[count + 1, until])
        return f"finished at {count} in run {workflow.info().run_id[:4]}"


@workflow.defn(sandboxed=False)
class BlockingWorkflow:
    """Blocks its thread (bad workflow code) for `seconds`."""

    @workflow.run
    async def run(self, seconds: float) -> str:
        time.sleep(seconds)
        return "woke up"


@workflow.defn
class LocalGreetingWorkflow:
    """GreetingWorkflow with local activities (run by the workflow's own worker)."""

    @workflow.run
    async def run(self, name: str) -> str:
        greeting = await workflow.execute_local_activity(
            compose_greeting,
            Greeting("Hello", name),
            start_to_close_timeout=timedelta(seconds=10),
        )
        return await workflow.execute_local_activity(
            shout, greeting, start_to_close_timeout=timedelta(seconds=10)
        )

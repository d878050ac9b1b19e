"""Shared fixtures: a real Temporal dev server, and an official temporalio worker as a
peer for the client tests (our client starts workflows, their worker runs them)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from nomad_actions import configure, load_action
from nomad_actions.config import reset_config
from nomad_actions.testing import DevServer

GREET = "nomad_actions_testplugin.actions:greet_action"
WAITER = "nomad_actions_testplugin.actions:waiter_action"
FAILS = "nomad_actions_testplugin.actions:fails_action"
TEST_QUEUE = "nomad-test-queue"


@pytest.fixture(scope="session")
def temporal_server() -> Iterator[DevServer]:
    """One dev server (in memory, free ports) for the whole session."""
    with DevServer() as server:
        yield server


@pytest.fixture
def temporal(temporal_server: DevServer) -> Iterator[DevServer]:
    """Point nomad_actions at the session's dev server for one test."""
    configure(host=temporal_server.host, port=temporal_server.port)
    yield temporal_server
    reset_config()


@dataclass
class OfficialWorker:
    """A `temporalio.worker.Worker` running in a background thread's event loop."""

    address: str
    task_queue: str
    thread: threading.Thread | None = None
    loop: asyncio.AbstractEventLoop | None = None
    stop_event: asyncio.Event | None = None

    def start(self) -> None:
        ready = threading.Event()
        errors: list[BaseException] = []

        async def main() -> None:
            from temporalio.client import Client
            from temporalio.contrib.pydantic import pydantic_data_converter
            from temporalio.worker import Worker

            actions = [load_action(i) for i in (GREET, WAITER, FAILS)]
            client = await Client.connect(self.address, data_converter=pydantic_data_converter)
            self.loop = asyncio.get_running_loop()
            self.stop_event = asyncio.Event()
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                async with Worker(
                    client,
                    task_queue=self.task_queue,
                    workflows=[a.workflow for a in actions],
                    activities=[f for a in actions for f in a.activities],
                    activity_executor=pool,
                ):
                    ready.set()
                    await self.stop_event.wait()

        def run() -> None:
            try:
                asyncio.run(main())
            except BaseException as err:
                errors.append(err)
                ready.set()

        self.thread = threading.Thread(target=run, name="official-worker", daemon=True)
        self.thread.start()
        ready.wait(60)
        if errors:
            raise errors[0]

    def stop(self) -> None:
        if self.loop and self.stop_event:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        if self.thread:
            self.thread.join(30)


@pytest.fixture(scope="session")
def official_worker(temporal_server: DevServer) -> Iterator[OfficialWorker]:
    """The official temporalio worker serving the test plugin's actions."""
    worker = OfficialWorker(temporal_server.address, TEST_QUEUE)
    worker.start()
    yield worker
    worker.stop()

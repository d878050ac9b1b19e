"""The official temporalio worker in a background thread, for side-by-side tests."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import temporalio.worker
from temporalio.client import Client


@dataclass
class OfficialWorker:
    """An official `temporalio.worker.Worker` on an event loop in a background thread, as a
    context manager; the same plugin code our worker runs, for side-by-side tests."""

    address: str
    task_queue: str
    workflows: list[type]
    activities: list[Callable[..., Any]]
    data_converter: Any
    unsandboxed: bool = False
    _thread: threading.Thread | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None

    def __enter__(self) -> OfficialWorker:
        ready = threading.Event()
        errors: list[BaseException] = []

        async def main() -> None:
            client = await Client.connect(self.address, data_converter=self.data_converter)
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            extra: dict[str, Any] = {}
            if self.unsandboxed:
                extra["workflow_runner"] = temporalio.worker.UnsandboxedWorkflowRunner()
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                async with temporalio.worker.Worker(
                    client,
                    task_queue=self.task_queue,
                    workflows=self.workflows,
                    activities=self.activities,
                    activity_executor=pool,
                    **extra,
                ):
                    ready.set()
                    await self._stop.wait()

        def run() -> None:
            try:
                asyncio.run(main())
            except BaseException as err:
                errors.append(err)
                ready.set()

        self._thread = threading.Thread(target=run, name="official-worker", daemon=True)
        self._thread.start()
        assert ready.wait(60), "the official worker did not start"
        if errors:
            raise errors[0]
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(60)

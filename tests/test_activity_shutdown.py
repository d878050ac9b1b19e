"""Graceful shutdown of running activities, decided by the Rust worker's one timer
(`drain` in src/worker/activities.rs): activities see `is_worker_shutdown()` at once, those
still running after `graceful_shutdown_timeout` are cancelled with `worker_shutdown`, and
those that ignore the cancel are failed after a bound so the worker can stop. Against a
real dev server; the outcome is read from the workflow's history.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import temporalio.exceptions
from temporalio import activity, workflow
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.contrib.pydantic import pydantic_data_converter

from nomad_actions.config import ConnectionConfig
from nomad_actions.testing import DevServer
from nomad_actions.worker import Worker

GRACE = 0.5
# CANCEL_BOUND in activities.rs: how long a cancelled activity may take to answer.
CANCEL_BOUND = 10.0

started = threading.Event()
release = threading.Event()
seen: list[tuple[str, bool, bool | None]] = []


@activity.defn
def finishing() -> str:
    """Ends on its own once the worker shuts down, well within the grace period."""
    started.set()
    activity.wait_for_worker_shutdown_sync(30)
    return f"finished shutdown={activity.is_worker_shutdown()}"


@activity.defn
def patient() -> str:
    """Runs until cancelled (the error is raised in its thread)."""
    started.set()
    try:
        while True:
            time.sleep(0.01)
    except temporalio.exceptions.CancelledError:
        details = activity.cancellation_details()
        seen.append(("patient", activity.is_worker_shutdown(), details and details.worker_shutdown))
        raise


@activity.defn(no_thread_cancel_exception=True)
def stubborn() -> str:
    """Ignores the cancel."""
    started.set()
    release.wait(60)
    return "too late"


@workflow.defn(name="ShutdownProbeWorkflow")
class ShutdownProbeWorkflow:
    @workflow.run
    async def run(self, name: str) -> Any:
        return await workflow.execute_activity(
            name,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )


@pytest.fixture(scope="module")
def server() -> Iterator[DevServer]:
    with DevServer() as s:
        yield s


def _shut_down_during(server: DevServer, name: str) -> tuple[float, list[HistoryEvent]]:
    """Run `name` in a workflow, shut the worker down once it started; returns how long
    the shutdown took and the workflow's history events."""
    started.clear()
    release.clear()
    seen.clear()
    queue = f"act-shutdown-{uuid.uuid4().hex[:6]}"

    async def main() -> tuple[float, list[HistoryEvent]]:
        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        worker = Worker(
            queue,
            actions=[],
            workflows=[ShutdownProbeWorkflow],
            activities=[finishing, patient, stubborn],
            config=ConnectionConfig(host=server.host, port=server.port, development=True),
            graceful_shutdown_timeout=GRACE,
            sandboxed=False,
        )
        with worker:
            handle = await client.start_workflow(
                ShutdownProbeWorkflow.run,
                name,
                id=f"shutdown-{name}-{uuid.uuid4().hex[:6]}",
                task_queue=queue,
                execution_timeout=timedelta(seconds=120),
            )
            assert await asyncio.to_thread(started.wait, 30), "the activity did not start"
            began = time.monotonic()
            worker.shutdown()
            await asyncio.to_thread(worker.__exit__, None, None, None)
            took = time.monotonic() - began
        release.set()
        # The activity's outcome reached the server before the worker stopped.
        history = await handle.fetch_history()
        await handle.terminate()
        return took, list(history.events)

    return asyncio.run(main())


def _activity_outcomes(events: list[HistoryEvent]) -> list[HistoryEvent]:
    return [
        e
        for e in events
        if e.HasField("activity_task_completed_event_attributes")
        or e.HasField("activity_task_failed_event_attributes")
        or e.HasField("activity_task_canceled_event_attributes")
    ]


def test_activity_that_finishes_within_the_grace_period_completes(server: DevServer) -> None:
    took, events = _shut_down_during(server, "finishing")
    [event] = _activity_outcomes(events)
    assert event.HasField("activity_task_completed_event_attributes")
    payload = event.activity_task_completed_event_attributes.result.payloads[0]
    assert payload.data == b'"finished shutdown=True"'
    assert took < GRACE + 5


def test_activity_still_running_after_the_grace_period_is_cancelled(server: DevServer) -> None:
    took, events = _shut_down_during(server, "patient")
    assert seen == [("patient", True, True)]
    assert GRACE <= took < GRACE + 5
    # Reported as a retryable failure (as core does for its own shutdown cancels), so the
    # server retries at once instead of after the activity's timeout.
    [event] = _activity_outcomes(events)
    assert event.HasField("activity_task_failed_event_attributes")
    failure = event.activity_task_failed_event_attributes.failure
    assert failure.application_failure_info.type == "WorkerShutdown"
    assert not failure.application_failure_info.non_retryable


def test_activity_ignoring_the_cancel_is_failed_after_the_bound(server: DevServer) -> None:
    took, events = _shut_down_during(server, "stubborn")
    assert GRACE + CANCEL_BOUND <= took < GRACE + CANCEL_BOUND + 5
    [event] = _activity_outcomes(events)
    assert event.HasField("activity_task_failed_event_attributes")
    failure = event.activity_task_failed_event_attributes.failure
    assert "Worker shut down before the activity finished" in failure.message
    assert failure.application_failure_info.type == "WorkerShutdown"

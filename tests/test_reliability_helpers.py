"""Helpers shared by the reliability tests (tests/test_reliability_*.py); no tests here.

Real `python -m nomad_actions worker` processes (tests/worker_processes.py) run the fault
plugin's actions (tests/plugins/nomad_actions_faultplugin) against real dev servers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

from nomad_actions import TemporalConnectionError, get_action_result
from nomad_actions.testing import DevServer
from nomad_actions_faultplugin import BROKEN_QUEUE, FAULT_QUEUE

from .polling import poll
from .worker_processes import START_TIMEOUT, WorkerPool, WorkerProcess, worker_environment

__all__ = [
    "BROKEN_QUEUE",
    "FAULT_QUEUE",
    "START_TIMEOUT",
    "ActivityRecord",
    "WorkerProcess",
    "Workers",
    "activity_records",
    "fault_action",
    "history",
    "poll",
    "result_through_outages",
    "workers_for",
]


def fault_action(name: str) -> str:
    """The id of a fault-plugin action, e.g. ``fault_action('steps_action')``."""
    return f"nomad_actions_faultplugin.actions:{name}"


class Workers(WorkerPool):
    """Worker processes on the fault plugin's queue (or another), without the fault
    plugin's own `NOMAD_FAULTPLUGIN_*` switches unless a test passes them in `env`."""

    def __init__(self, server: DevServer, tmp_path: Path) -> None:
        super().__init__(server, tmp_path, FAULT_QUEUE)

    def start(
        self,
        *options: str,
        queue: str = FAULT_QUEUE,
        env: dict[str, str] | None = None,
        ready: bool = True,
        port: int | None = None,
    ) -> WorkerProcess:
        environment = worker_environment(env, drop_prefixes=("NOMAD_FAULTPLUGIN_",))
        return self.launch(options, queue=queue, env=environment, ready=ready, port=port)


def workers_for(server: DevServer, tmp_path: Path) -> Iterator[Workers]:
    """Body of a `workers` fixture: yields a `Workers`, closes it in teardown."""
    pool = Workers(server, tmp_path)
    try:
        yield pool
    finally:
        pool.close()


def result_through_outages(workflow_id: str, timeout: float, logs: Callable[[], str]) -> Any:
    """`get_action_result`, retried while the server is unreachable (it may be restarting)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"{workflow_id} did not finish within {timeout:.0f} s\n{logs()}")
        try:
            return get_action_result(workflow_id, timeout=left)
        except TemporalConnectionError:
            time.sleep(0.5)
        except TimeoutError:
            continue


def history(address: str, workflow_id: str) -> list[HistoryEvent]:
    """The history of a workflow's latest run, read with the official temporalio client."""

    async def fetch() -> list[HistoryEvent]:
        client = await Client.connect(address)
        return [e async for e in client.get_workflow_handle(workflow_id).fetch_history_events()]

    return asyncio.run(fetch())


@dataclass
class ActivityRecord:
    """What a history says about one scheduled activity."""

    activity_id: str
    activity_type: str
    #: Attempt of the last start the server recorded (0 if it never started).
    attempt: int = 0
    completed: int = 0


def activity_records(events: list[HistoryEvent]) -> dict[str, ActivityRecord]:
    """Activity id -> its record, from `ActivityTaskScheduled/Started/Completed` events."""
    by_event: dict[int, ActivityRecord] = {}
    for event in events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            attrs = event.activity_task_scheduled_event_attributes
            by_event[event.event_id] = ActivityRecord(attrs.activity_id, attrs.activity_type.name)
        elif event.HasField("activity_task_started_event_attributes"):
            started = event.activity_task_started_event_attributes
            by_event[started.scheduled_event_id].attempt = started.attempt
        elif event.HasField("activity_task_completed_event_attributes"):
            by_event[
                event.activity_task_completed_event_attributes.scheduled_event_id
            ].completed += 1
    return {record.activity_id: record for record in by_event.values()}

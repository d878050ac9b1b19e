"""Helpers shared by the reliability tests (tests/test_reliability_*.py); no tests here.

Real `python -m nomad_actions worker` processes run the fault plugin's actions
(tests/plugins/nomad_actions_faultplugin) against real dev servers. Every process is
started here and killed by its pid in teardown; its output goes to a log file that is
printed when a test fails. Waits poll with generous deadlines: the tests run on loaded
two-core machines, and nothing here asserts on speed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowExecutionStatus

import nomad_actions
from nomad_actions import TemporalConnectionError, get_action_result, get_action_status
from nomad_actions.testing import DevServer
from nomad_actions_faultplugin import BROKEN_QUEUE, FAULT_QUEUE

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

#: Generous: a loaded 2-core machine starts a Python worker in seconds, not milliseconds.
START_TIMEOUT = 90.0


def fault_action(name: str) -> str:
    """The id of a fault-plugin action, e.g. ``fault_action('steps_action')``."""
    return f"nomad_actions_faultplugin.actions:{name}"


def poll(check: Callable[[], Any], timeout: float, what: str, logs: Callable[[], str] = str) -> Any:
    """Call `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{logs()}")
        time.sleep(0.1)


class WorkerProcess:
    """One `python -m nomad_actions worker` child process, output in a log file."""

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.argv = argv
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # a Ctrl-C in the terminal must not reach it
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"

    def report(self) -> str:
        code = self.proc.poll()
        state = "running" if code is None else f"exit code {code}"
        return f"--- worker pid {self.pid} ({state}): {' '.join(self.argv[1:])}\n{self.log()}"

    def wait_log(self, text: str, timeout: float = START_TIMEOUT, count: int = 1) -> None:
        """Wait until `text` appears `count` times in the log; fail if the process exits."""

        def seen() -> bool:
            if self.log().count(text) >= count:
                return True
            if not self.alive():
                pytest.fail(f"worker exited while waiting for {text!r}\n{self.report()}")
            return False

        poll(seen, timeout, f"{text!r} in the log of worker {self.pid}", self.report)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> WorkerProcess:
        self.wait_log("Worker polling", timeout)
        return self

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker {self.pid} still running after {timeout:.0f} s\n{self.report()}")

    def sigkill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        assert self.wait_exit(30) == -signal.SIGKILL

    def rss_kib(self) -> int:
        """Resident set size (VmRSS) of the process, in KiB."""
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError(f"no VmRSS for pid {self.pid}")

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
        self.proc.wait(timeout=30)


@dataclass
class Workers:
    """Starts worker processes for one test; `close()` kills them (by pid) and terminates
    the actions the test started, so nothing leaks into the next test."""

    server: DevServer
    tmp_path: Path
    started: list[WorkerProcess] = field(default_factory=list)
    workflow_ids: list[str] = field(default_factory=list)

    def start(
        self,
        *options: str,
        queue: str = FAULT_QUEUE,
        env: dict[str, str] | None = None,
        ready: bool = True,
        port: int | None = None,
    ) -> WorkerProcess:
        argv = [
            sys.executable, "-m", "nomad_actions", "worker",
            "--task-queue", queue,
            "--host", self.server.host,
            "--port", str(port or self.server.port),
            *options,
        ]  # fmt: skip
        environment = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("NOMAD_TEMPORAL_", "NOMAD_FAULTPLUGIN_"))
        }
        environment.setdefault("NOMAD_ACTIONS_CORE_LOG", "warn")
        environment.update(env or {})
        log = self.tmp_path / f"worker-{len(self.started)}.log"
        worker = WorkerProcess(argv, log, environment)
        self.started.append(worker)
        return worker.wait_ready() if ready else worker

    def track(self, workflow_id: str) -> str:
        self.workflow_ids.append(workflow_id)
        return workflow_id

    def reports(self) -> str:
        return "\n".join(w.report() for w in self.started) or "(no workers)"

    def close(self) -> None:
        for worker in self.started:
            worker.kill()
        for wid in self.workflow_ids:
            try:
                if get_action_status(wid) == WorkflowExecutionStatus.RUNNING:
                    nomad_actions.terminate_action(wid, reason="test teardown")
            except Exception as err:  # teardown must go on (the server may be gone)
                print(f"could not terminate {wid}: {err}")
        print(self.reports())  # shown by pytest only when the test failed


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

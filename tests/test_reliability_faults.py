"""Reliability under faults: crashed workers, a restarted or missing server, code that changes
under running workflows, results that cannot be serialized. Nothing may be lost, nothing that
the server recorded as done may run again, and every failure must say what happened.

Real `python -m nomad_actions worker` processes run the fault plugin's actions
(tests/plugins/nomad_actions_faultplugin) against real dev servers; histories are read with
the official temporalio client.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import TimeoutType, WorkflowTaskFailedCause
from temporalio.client import WorkflowExecutionStatus

from nomad_actions import (
    ActionFailedError,
    TemporalConnectionError,
    configure,
    get_action_result,
    get_action_status,
    signal_action,
    start_action,
)
from nomad_actions.config import get_config, reset_config
from nomad_actions.testing import DevServer, free_port
from nomad_actions.worker import Worker
from nomad_actions_faultplugin import VERSION_ENV
from nomad_actions_faultplugin.models import step_value

from .test_reliability_helpers import (
    FAULT_QUEUE,
    START_TIMEOUT,
    Workers,
    activity_records,
    fault_action,
    history,
    poll,
    result_through_outages,
    workers_for,
)

STEPS = fault_action("steps_action")
VERSIONED = fault_action("versioned_action")
BAD_RESULT = fault_action("bad_result_action")
OK = fault_action("ok_action")

RESULT_TIMEOUT = 240.0

# Real processes on a loaded machine: well above the suite's default per-test timeout.
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def fault_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """A dev server of this module's own: killed workers leave sticky queues behind."""
    log = tmp_path_factory.mktemp("fault-server") / "temporal.log"
    with DevServer(log_path=log) as server:
        yield server


@pytest.fixture
def client_config(fault_server: DevServer) -> Iterator[DevServer]:
    configure(host=fault_server.host, port=fault_server.port)
    yield fault_server
    reset_config()


@pytest.fixture
def workers(client_config: DevServer, tmp_path: Path) -> Iterator[Workers]:
    yield from workers_for(client_config, tmp_path)


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    path = tmp_path / "markers"
    path.mkdir()
    return path


def _user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------------- kill -9


def _marker_index(markers: Path) -> dict[tuple[str, str], list[tuple[int, int]]]:
    """(workflow id, activity id) -> [(attempt, pid)] of every completed activity run."""
    runs: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for path in markers.iterdir():
        workflow_id, activity_id, attempt, pid = path.name.rsplit("~", 3)
        runs.setdefault((workflow_id, activity_id), []).append((int(attempt[1:]), int(pid[1:])))
    return runs


def test_sigkill_mid_activities_and_workflow_tasks_loses_nothing(
    workers: Workers, markers: Path
) -> None:
    """kill -9 twice while many workflows run (their activations do CPU work, so workflow
    tasks are in flight, and activities run): a new worker finishes every action with the
    right result, and no activity the server recorded as completed ran again."""
    steps, parallel = 8, 2
    # Activations spin the CPU: with 30 runs in flight the worker is inside workflow tasks
    # most of the time, so each kill interrupts some of them (checked in the history below).
    data = {"steps": steps, "parallel": parallel, "seconds": 0.3, "spin": 200_000}
    first = workers.start("--max-concurrent-workflow-tasks", "8")
    wids = [
        workers.track(start_action(STEPS, {"user_id": _user(), "marker_dir": str(markers), **data}))
        for _ in range(30)
    ]
    total_steps = len(wids) * steps

    def completed_runs() -> int:
        return len(list(markers.iterdir()))

    killed = []
    victim = first
    for fraction in (4, 2):  # kill at a quarter, then at half of all steps
        poll(
            lambda f=fraction: completed_runs() >= total_steps // f,
            RESULT_TIMEOUT,
            f"1/{fraction} of the steps to complete",
            workers.reports,
        )
        victim.sigkill()
        killed.append(victim.pid)
        victim = workers.start("--max-concurrent-workflow-tasks", "8")
    survivor = victim

    expected = sum(step_value(i) for i in range(steps))
    for wid in wids:
        result = result_through_outages(wid, RESULT_TIMEOUT, workers.reports)
        assert (result.total, result.steps) == (expected, steps), wid
        assert get_action_status(wid) == WorkflowExecutionStatus.COMPLETED
    assert survivor.alive(), survivor.report()

    runs = _marker_index(markers)
    timeouts: Counter[int] = Counter()
    retried = 0
    for wid in wids:
        events = history(workers.server.address, wid)
        timeouts.update(
            e.workflow_task_timed_out_event_attributes.timeout_type
            for e in events
            if e.HasField("workflow_task_timed_out_event_attributes")
        )
        records = activity_records(events)
        assert sorted(records) == [f"step-{i}" for i in range(steps)], wid
        for activity_id, record in records.items():
            # Temporal recorded exactly one completion, by attempt `record.attempt`.
            assert record.completed == 1, (wid, record)
            done = sorted(runs.get((wid, activity_id), []))
            recorded = [(a, pid) for a, pid in done if a == record.attempt]
            # The recorded attempt ran to completion exactly once...
            assert len(recorded) == 1, (wid, record, done)
            # ...nothing ran after it (a recorded completion is never run again)...
            assert all(a <= record.attempt for a, _ in done), (wid, record, done)
            # ...and earlier completed runs are only those whose worker was killed before
            # it could report them (Temporal is at-least-once for unreported completions).
            assert all(pid in killed for a, pid in done if a < record.attempt), (wid, done)
            retried += record.attempt > 1
    # The kills did land mid-work: activities were retried, and workflow tasks that a killed
    # worker had started timed out (start-to-close) and were redone by the next worker.
    assert retried > 0
    assert timeouts[TimeoutType.TIMEOUT_TYPE_START_TO_CLOSE] > 0, timeouts


# ---------------------------------------------------------------------- server restart


def test_server_restart_while_actions_run(tmp_path: Path) -> None:
    """The dev server (SQLite file) stops and restarts on the same port while actions run.
    The worker process and this client keep running, reconnect by themselves (sdk-core's
    pollers retry; the client's cached channel reconnects), and every action completes."""
    port, ui_port = free_port(), free_port()
    db = tmp_path / "t.db"
    log = tmp_path / "temporal.log"
    server = DevServer(port=port, ui_port=ui_port, db_filename=db, log_path=log).start()
    configure(host=server.host, port=port)
    markers = tmp_path / "markers"
    markers.mkdir()
    pool = Workers(server, tmp_path)
    outage_errors: list[BaseException] = []
    try:
        worker = pool.start()
        data = {"marker_dir": str(markers), "steps": 10, "parallel": 1, "seconds": 0.3}
        wids = [pool.track(start_action(STEPS, {"user_id": _user(), **data})) for _ in range(15)]
        poll(lambda: len(list(markers.iterdir())) >= 30, RESULT_TIMEOUT, "progress", pool.reports)

        server.stop()
        # While the server is down, the client fails fast and clearly.
        with pytest.raises(TemporalConnectionError) as info:
            get_action_status(wids[0])
        outage_errors.append(info.value)
        time.sleep(3)
        assert worker.alive(), worker.report()
        server = DevServer(port=port, ui_port=ui_port, db_filename=db, log_path=log).start()
        pool.server = server

        # Actions started before the outage finish, and new ones start and finish too.
        wids.append(pool.track(start_action(STEPS, {"user_id": _user(), **data})))
        expected = sum(step_value(i) for i in range(10))
        for wid in wids:
            result = result_through_outages(wid, RESULT_TIMEOUT, pool.reports)
            assert result.total == expected, wid
        assert worker.alive(), worker.report()
        assert "Traceback" not in worker.log(), worker.report()
    finally:
        pool.close()
        server.stop()
        reset_config()
    assert f"127.0.0.1:{port}" in str(outage_errors[0])


# ---------------------------------------------------------------------- server unreachable


def test_start_action_with_server_down_is_a_clear_connection_error() -> None:
    port = free_port()  # nothing listens there
    configure(host="127.0.0.1", port=port, connect_timeout=2)
    try:
        started = time.monotonic()
        with pytest.raises(TemporalConnectionError) as info:
            start_action(OK, {"user_id": "u", "name": "x"})
        elapsed = time.monotonic() - started
    finally:
        reset_config()
    assert f"127.0.0.1:{port}" in str(info.value)
    # Within the connect timeout (2 s) plus slack for a loaded machine; never a hang.
    assert elapsed < 30, elapsed


def test_worker_started_before_the_server_waits_and_resumes(tmp_path: Path) -> None:
    """A worker whose server is down keeps retrying with a growing delay, logging the
    address each time, and starts working as soon as the server is up."""
    port = free_port()
    server = DevServer(port=port, log_path=tmp_path / "temporal.log")
    pool = Workers(server, tmp_path)
    try:
        worker = pool.start("--connect-timeout", "1", ready=False)
        worker.wait_log("retrying in", count=3)
        attempts = re.findall(
            rf"Cannot reach Temporal at 127\.0\.0\.1:{port} .*"
            rf"\(attempt (\d+)\).*retrying in (\S+) s",
            worker.log(),
        )
        assert [int(a) for a, _ in attempts[:3]] == [1, 2, 3], worker.report()
        assert [float(d) for _, d in attempts[:3]] == [1.0, 2.0, 4.0], worker.report()
        assert worker.alive()

        server.start()
        configure(host=server.host, port=port)
        worker.wait_ready(START_TIMEOUT + 30)  # the current delay may be up to 30 s
        data = {"user_id": _user(), "marker_dir": str(tmp_path), "steps": 2, "seconds": 0.0}
        wid = pool.track(start_action(STEPS, data))
        assert get_action_result(wid, timeout=RESULT_TIMEOUT).total == step_value(0) + step_value(1)
    finally:
        pool.close()
        server.stop()
        reset_config()


@pytest.mark.parametrize("run_async", [False, True], ids=["run", "run_async"])
def test_shutdown_while_waiting_for_the_server(
    run_async: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """`shutdown()` ends a worker that is still waiting for its server, without an error."""
    configure(host="127.0.0.1", port=free_port(), connect_timeout=1)
    try:
        worker = Worker(FAULT_QUEUE, actions=[STEPS], config=get_config())
    finally:
        reset_config()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(worker.run_async()) if run_async else worker.run()
        except BaseException as err:
            errors.append(err)

    with caplog.at_level("WARNING", logger="nomad_actions.worker"):
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        poll(lambda: "retrying in" in caplog.text, 60, "a retry to be logged")
        worker.shutdown()
        thread.join(60)
    assert not thread.is_alive()
    assert errors == []
    assert worker._finished.is_set()


def test_unknown_namespace_is_a_configuration_error_not_retried(client_config: DevServer) -> None:
    """A namespace the server does not know is no outage: the worker fails at once."""
    configure(host=client_config.host, port=client_config.port, namespace="no-such-namespace")
    worker = Worker(FAULT_QUEUE, actions=[STEPS], config=get_config())
    started = time.monotonic()
    with pytest.raises(ValueError, match='namespace "no-such-namespace" does not exist'):
        worker.run()
    assert time.monotonic() - started < 60


# ---------------------------------------------------------------------- non-determinism


def test_changed_workflow_code_is_reported_as_non_determinism(workers: Workers) -> None:
    """Version 1 of a workflow runs activity A and waits for a signal. A worker with version
    2 (activity B first) replays it: the workflow task fails with sdk-core's
    non-determinism error, in the history; the workflow is not corrupted, and a version 1
    worker finishes it."""
    address = workers.server.address
    v1 = workers.start(env={VERSION_ENV: "1"})
    wid = workers.track(start_action(VERSIONED, {"user_id": _user(), "tag": "t"}))

    def waiting_for_signal() -> bool:
        events = history(address, wid)
        records = activity_records(events)
        step_a = records.get("1")
        return bool(step_a and step_a.completed) and events[-1].HasField(
            "workflow_task_completed_event_attributes"
        )

    poll(waiting_for_signal, RESULT_TIMEOUT, "version 1 to wait for the signal", workers.reports)
    v1.sigkill()

    workers.start("--max-cached-workflows", "0", env={VERSION_ENV: "2"})
    signal_action(wid, "go")

    def failed_tasks() -> list[Any]:
        return [
            e.workflow_task_failed_event_attributes
            for e in history(address, wid)
            if e.HasField("workflow_task_failed_event_attributes")
        ]

    [failure, *_] = poll(failed_tasks, RESULT_TIMEOUT, "a failed workflow task", workers.reports)
    assert (
        failure.cause == WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_NON_DETERMINISTIC_ERROR
    )
    message = failure.failure.message
    assert "[TMPRL1100]" in message and "Nondeterminism" in message, message
    assert "fault_step_a" in message and "fault_step_b" in message, message

    # Not silently corrupted: still running, nothing of version 2 in the history.
    assert get_action_status(wid) == WorkflowExecutionStatus.RUNNING
    records = activity_records(history(address, wid))
    assert [r.activity_type for r in records.values()] == ["fault_step_a"]

    for worker in workers.started:
        worker.kill()
    workers.start(env={VERSION_ENV: "1"})
    assert get_action_result(wid, timeout=RESULT_TIMEOUT) == "a:t+a:t"


# ---------------------------------------------------------------------- bad results


#: Result kind of `fault_bad_result` -> what the failure must say.
BAD_RESULTS = {
    "object": "Unable to serialize unknown type: <class 'object'>",
    "socket": "Unable to serialize unknown type: <class 'socket.socket'>",
    "set": "Unable to serialize unknown type: <class 'object'>",
    "nested": "Unable to serialize unknown type: "
    "<class 'nomad_actions_faultplugin.activities.Opaque'>",
    "bigint": "value at $.count cannot be sent as JSON: integer of 71 bits is out of range",
    # Over Temporal's 2 MB blob limit; sdk-core refuses to upload it.
    "huge": "[TMPRL1103] Attempted to upload payloads with size that exceeded the error limit",
}


def test_unserializable_activity_results_fail_naming_the_type(workers: Workers) -> None:
    """An activity result with no JSON form fails the activity (and so the action) with a
    message that names the type (or the reason), instead of hanging or being dropped."""
    worker = workers.start()
    wids = {
        kind: workers.track(start_action(BAD_RESULT, {"user_id": _user(), "kind": kind}))
        for kind in BAD_RESULTS
    }
    for kind, wid in wids.items():
        with pytest.raises(ActionFailedError) as info:
            get_action_result(wid, timeout=RESULT_TIMEOUT)
        detail = " | ".join([info.value.failure_message, *info.value.causes])
        assert BAD_RESULTS[kind] in detail, (kind, detail)
        assert info.value.status == WorkflowExecutionStatus.FAILED
    assert worker.alive(), worker.report()
    # The worker is fine afterwards.
    wid = workers.track(start_action(BAD_RESULT, {"user_id": _user(), "kind": "fine"}))
    assert get_action_result(wid, timeout=RESULT_TIMEOUT) == "fine:fine"

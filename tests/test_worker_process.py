"""Real `nomad-actions worker` processes against their own dev server.

The actions come from the process-test plugin (tests/plugins/nomad_actions_procplugin, on
task queue 'nomad-proc-queue'); its activities write marker files naming the pid of the
worker process that ran them. Worker output goes to a log file per process, printed when a
test fails. Every process a test starts is killed (by pid) in teardown, and every action it
started is terminated, so nothing leaks into the next test on the shared queue.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus

import nomad_actions
from nomad_actions import (
    configure,
    get_action_progress,
    get_action_result,
    get_action_status,
    start_action,
)
from nomad_actions.config import reset_config
from nomad_actions.testing import DevServer, free_port
from nomad_actions_procplugin.models import WorkOutput

from .polling import poll
from .worker_processes import CONSOLE_SCRIPT, START_TIMEOUT, WorkerPool, WorkerProcess

HEARTBEAT = "nomad_actions_procplugin.actions:heartbeat_action"
SLEEPER = "nomad_actions_procplugin.actions:sleeper_action"
PROC_QUEUE = "nomad-proc-queue"

RESULT_TIMEOUT = 90.0


@pytest.fixture(scope="module")
def proc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """A dev server of this module's own: killed workers leave sticky queues behind."""
    log = tmp_path_factory.mktemp("proc-server") / "temporal.log"
    with DevServer(log_path=log) as server:
        yield server


@pytest.fixture(autouse=True)
def _client_config(proc_server: DevServer) -> Iterator[None]:
    configure(host=proc_server.host, port=proc_server.port)
    yield
    reset_config()


class Workers(WorkerPool):
    """Worker processes on this module's queue."""

    def __init__(self, server: DevServer, tmp_path: Path) -> None:
        super().__init__(server, tmp_path, PROC_QUEUE)

    def start(
        self, *options: str, console_script: bool = False, ready: bool = True
    ) -> WorkerProcess:
        worker = self.launch(options, ready=False, console_script=console_script)
        if ready:
            worker.wait_log(f"Worker polling {PROC_QUEUE}")
        return worker

    def start_action(self, action_id: str, data: dict[str, Any]) -> str:
        return self.track(start_action(action_id, data))


@pytest.fixture
def workers(proc_server: DevServer, tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(proc_server, tmp_path)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    path = tmp_path / "markers"
    path.mkdir()
    return path


def _marker(markers: Path, tag: str, attempt: int, stage: str) -> dict[str, int] | None:
    path = markers / f"{tag}.attempt{attempt}.{stage}"
    return json.loads(path.read_text()) if path.exists() else None


def _user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def _work(markers: Path, tag: str, values: list[int], seconds: float) -> dict[str, Any]:
    return {
        "user_id": _user(),
        "tag": tag,
        "marker_dir": str(markers),
        "values": values,
        "seconds": seconds,
    }


def _sleep(markers: Path, tag: str, seconds: float, value: str) -> dict[str, Any]:
    return {
        "user_id": _user(),
        "tag": tag,
        "marker_dir": str(markers),
        "seconds": seconds,
        "value": value,
    }


def _result(wid: str, workers: Workers, timeout: float = RESULT_TIMEOUT) -> Any:
    try:
        return get_action_result(wid, timeout=timeout)
    except TimeoutError:
        pytest.fail(f"{wid} did not finish within {timeout:.0f} s\n{workers.reports()}")


# ---------------------------------------------------------------------- sharing work


def test_two_workers_share_the_work(workers: Workers, markers: Path) -> None:
    """Two processes on one queue both run activities, and every result is right."""
    # Two activities at a time each: one worker alone cannot take all ten, so both work.
    limit = ("--max-concurrent-activities", "2")
    first, second = workers.start(*limit), workers.start(*limit)
    inputs = {f"share{i}": list(range(i, i + 5)) for i in range(10)}
    wids = {
        tag: workers.start_action(HEARTBEAT, _work(markers, tag, values, seconds=1.0))
        for tag, values in inputs.items()
    }
    results = {tag: _result(wid, workers) for tag, wid in wids.items()}

    for tag, result in results.items():
        assert isinstance(result, WorkOutput)
        assert result.total == sum(inputs[tag])
        assert result.pid in (first.pid, second.pid)
        assert _marker(markers, tag, result.attempt, "finished") == {
            "pid": result.pid,
            "attempt": result.attempt,
        }
    pids = {r.pid for r in results.values()}
    assert pids == {first.pid, second.pid}, f"only {pids} did work\n{workers.reports()}"


# ---------------------------------------------------------------------- kill -9


def test_sigkill_mid_activity_moves_the_work_to_the_survivor(
    workers: Workers, markers: Path
) -> None:
    """kill -9 of the worker running a heartbeating activity: the survivor finishes it."""
    procs = {w.pid: w for w in (workers.start(), workers.start())}
    values = [3, 4, 5]
    wid = workers.start_action(HEARTBEAT, _work(markers, "kill", values, seconds=6.0))

    started = poll(
        lambda: _marker(markers, "kill", 1, "started"),
        START_TIMEOUT,
        "the first attempt to start",
        workers.reports,
    )
    victim = procs.pop(started["pid"])
    [survivor] = procs.values()
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.wait_exit(30) == -signal.SIGKILL

    # The heartbeat timeout (2 s) ends attempt 1; the retry can only run on the survivor.
    result = _result(wid, workers)
    assert isinstance(result, WorkOutput)
    assert result.total == sum(values)
    assert result.pid == survivor.pid
    assert result.attempt >= 2
    assert _marker(markers, "kill", 1, "finished") is None
    assert _marker(markers, "kill", result.attempt, "started") == {
        "pid": survivor.pid,
        "attempt": result.attempt,
    }
    assert get_action_status(wid) == WorkflowExecutionStatus.COMPLETED
    assert survivor.proc.poll() is None


# ---------------------------------------------------------------------- SIGTERM


def test_sigterm_waits_for_the_running_activity(workers: Workers, markers: Path) -> None:
    """SIGTERM: the running activity finishes and is reported, then the worker exits 0."""
    worker = workers.start("--graceful-shutdown-timeout", "20", console_script=True)
    wid = workers.start_action(SLEEPER, _sleep(markers, "drain", seconds=3.0, value="drained"))
    poll(
        lambda: _marker(markers, "drain", 1, "started"),
        START_TIMEOUT,
        "the activity to start",
        workers.reports,
    )
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait_exit(60) == 0, worker.report()

    assert _marker(markers, "drain", 1, "finished") == {"pid": worker.pid, "attempt": 1}
    # The outcome reached the server before the process exited: nothing is pending.
    progress = get_action_progress(wid)
    assert progress.activities == [], progress
    assert progress.status in (WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.COMPLETED)

    # A new worker finishes the workflow from the recorded result; the activity never reruns.
    workers.start()
    assert _result(wid, workers) == "slept drained"
    assert get_action_status(wid) == WorkflowExecutionStatus.COMPLETED
    assert sorted(p.name for p in markers.iterdir()) == [
        "drain.attempt1.finished",
        "drain.attempt1.started",
    ]


def test_sigterm_with_short_grace_cancels_the_activity_and_exits(
    workers: Workers, markers: Path
) -> None:
    """SIGTERM with a 1 s grace: a long activity is cancelled and the worker exits 0."""
    worker = workers.start("--graceful-shutdown-timeout", "1")
    wid = workers.start_action(SLEEPER, _sleep(markers, "short", seconds=120.0, value="never"))
    poll(
        lambda: _marker(markers, "short", 1, "started"),
        START_TIMEOUT,
        "the activity to start",
        workers.reports,
    )
    worker.proc.send_signal(signal.SIGTERM)
    # Grace (1 s) + cancellation; far below the activity's 120 s.
    assert worker.wait_exit(60) == 0, worker.report()
    assert _marker(markers, "short", 1, "finished") is None

    # The cancelled attempt was reported as a (retryable) failure before the exit: the
    # server already schedules attempt 2 instead of waiting out the start-to-close timeout.
    def retried() -> dict[str, Any] | None:
        progress = get_action_progress(wid)
        assert progress.status == WorkflowExecutionStatus.RUNNING
        [activity] = progress.activities
        return activity if activity["attempt"] >= 2 else None

    activity = poll(retried, 30, "attempt 1 to be reported", workers.reports)
    assert activity["activity_type"] == "sleep_work"
    assert activity["last_failure"], activity


# ---------------------------------------------------------------------- CLI behaviour


def _run_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOMAD_TEMPORAL_")}
    return subprocess.run(
        [sys.executable, "-m", "nomad_actions", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def test_worker_help() -> None:
    done = _run_cli("worker", "--help")
    assert done.returncode == 0, done.stderr
    for option in (
        "--task-queue",
        "--max-concurrent-activities",
        "--max-concurrent-workflow-tasks",
        "--activity-threads",
        "--max-cached-workflows",
        "--graceful-shutdown-timeout",
        "--unsandboxed",
        "--deadlock-timeout",
        "--host",
        "--port",
        "--namespace",
        "--log-level",
    ):
        assert option in done.stdout


def test_version() -> None:
    done = _run_cli("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"nomad-actions {nomad_actions.__version__}"


def test_console_script_is_installed() -> None:
    assert CONSOLE_SCRIPT.is_file(), "run maturin develop to install the nomad-actions script"
    done = subprocess.run(
        [str(CONSOLE_SCRIPT), "--version"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert nomad_actions.__version__ in done.stdout


def test_unreachable_server_is_retried_naming_the_address(tmp_path: Path) -> None:
    """A worker whose server is down keeps retrying (it starts once the server is up, see
    test_reliability_faults.py), logging the address each time; SIGTERM ends it, exit 0."""
    port = free_port()  # nothing listens there
    argv = [
        sys.executable, "-m", "nomad_actions", "worker", "-q", PROC_QUEUE,
        "--host", "127.0.0.1", "--port", str(port), "--connect-timeout", "3",
    ]  # fmt: skip
    worker = WorkerProcess(argv, tmp_path / "worker.log")
    try:
        poll(lambda: worker.log().count("retrying in") >= 2, 60, "2 retries", worker.report)
        assert f"Cannot reach Temporal at 127.0.0.1:{port}" in worker.log()
        assert "Traceback" not in worker.log()
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.wait_exit(30) == 0, worker.report()
    finally:
        worker.kill()


def test_queue_without_actions_exits_2() -> None:
    queue = f"no-actions-{uuid.uuid4().hex[:8]}"
    done = _run_cli("worker", "--task-queue", queue, "--port", str(free_port()))
    assert done.returncode == 2, done.stderr
    assert f'no action is registered on task queue "{queue}"' in done.stderr
    assert PROC_QUEUE in done.stderr  # the hint lists the queues that have actions
    assert "Traceback" not in done.stderr


def test_missing_task_queue_is_a_usage_error() -> None:
    done = _run_cli("worker")
    assert done.returncode == 2
    assert "--task-queue" in done.stderr

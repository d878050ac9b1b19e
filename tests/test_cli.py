"""The `nomad-actions` command line, in process: argument parsing and option wiring.

The real worker processes are exercised in test_worker_process.py.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

import nomad_actions.worker
from nomad_actions import TaskQueue, TemporalConnectionError, __version__, get_config
from nomad_actions.cli import main
from nomad_actions.config import reset_config
from nomad_actions.errors import NothingToRunError
from nomad_actions.worker import TunerOptions


@pytest.fixture(autouse=True)
def _restore_global_state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    # A `nomad-actions dev` running for the user's default data dir must not leak in.
    monkeypatch.setenv("NOMAD_ACTIONS_DATA_DIR", str(tmp_path / "data"))
    for name in ("NOMAD_TEMPORAL_HOST", "NOMAD_TEMPORAL_PORT"):
        monkeypatch.delenv(name, raising=False)
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    reset_config()


class FakeWorker:
    """Records how the CLI builds and runs the worker."""

    instances: ClassVar[list[FakeWorker]] = []
    run_error: ClassVar[BaseException | None] = None

    def __init__(self, task_queue: str, **kwargs: Any) -> None:
        self.task_queue = task_queue
        self.kwargs = kwargs
        self.ran = False
        FakeWorker.instances.append(self)

    def run(self) -> None:
        self.ran = True
        if FakeWorker.run_error is not None:
            raise FakeWorker.run_error


@pytest.fixture
def fake_worker(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeWorker]]:
    FakeWorker.instances = []
    FakeWorker.run_error = None
    monkeypatch.setattr(nomad_actions.worker, "Worker", FakeWorker)
    yield FakeWorker


@pytest.mark.parametrize(
    ("given", "queue"),
    [("cpu", TaskQueue.CPU.value), ("GPU", TaskQueue.GPU.value), ("my-queue", "my-queue")],
)
def test_queue_aliases(fake_worker: type[FakeWorker], given: str, queue: str) -> None:
    assert main(["worker", "--task-queue", given]) == 0
    [worker] = fake_worker.instances
    assert worker.task_queue == queue
    assert worker.ran


def test_defaults_mirror_the_worker(fake_worker: type[FakeWorker]) -> None:
    assert main(["worker", "-q", "cpu"]) == 0
    [worker] = fake_worker.instances
    kwargs = dict(worker.kwargs)
    assert kwargs.pop("config") == get_config()
    # Slots and threads follow upstream's cpu_worker block (issue 12): no fixed activity
    # maximum, so the resource-based tuner with min = pool_size (12) and max 20.
    assert kwargs.pop("tuner") == TunerOptions(
        target_memory_usage=0.8,
        target_cpu_usage=0.8,
        min_activity_slots=12,
        max_activity_slots=20,
        activity_ramp_throttle_millis=200,
    )
    # Without nomad-lab: our action-log interceptor and no extra activities (test_action_logs).
    [interceptor] = kwargs.pop("interceptors")
    assert type(interceptor).__name__ == "ActionLogInterceptor"
    assert kwargs.pop("activities") == []
    assert kwargs == {
        "max_concurrent_activities": None,
        "max_concurrent_workflow_tasks": 100,
        "activity_threads": 12,
        "metrics_bind_address": None,
        "max_cached_workflows": 1000,
        "graceful_shutdown_timeout": 10.0,
        "sandboxed": True,
        "deadlock_timeout": 2.0,
        "skip_broken": False,
    }


def test_options_reach_the_worker(fake_worker: type[FakeWorker]) -> None:
    argv = [
        "worker", "-q", "q1",
        "--max-concurrent-activities", "3",
        "--max-concurrent-workflow-tasks", "4",
        "--activity-threads", "5",
        "--max-cached-workflows", "0",
        "--graceful-shutdown-timeout", "2.5",
        "--unsandboxed",
        "--deadlock-timeout", "0",
        "--host", "temporal.example", "--port", "7999", "--namespace", "ns1",
        "--connect-timeout", "1.5",
        "--log-level", "warning",
    ]  # fmt: skip
    assert main(argv) == 0
    [worker] = fake_worker.instances
    config = worker.kwargs["config"]
    assert (config.host, config.port, config.namespace) == ("temporal.example", 7999, "ns1")
    assert config.connect_timeout_millis == 1500
    assert worker.kwargs["max_concurrent_activities"] == 3
    assert worker.kwargs["max_concurrent_workflow_tasks"] == 4
    assert worker.kwargs["activity_threads"] == 5
    assert worker.kwargs["max_cached_workflows"] == 0
    assert worker.kwargs["graceful_shutdown_timeout"] == 2.5
    assert worker.kwargs["sandboxed"] is False
    assert worker.kwargs["deadlock_timeout"] is None
    assert logging.getLogger().level == logging.WARNING


def test_connection_defaults_come_from_the_environment(
    fake_worker: type[FakeWorker], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOMAD_TEMPORAL_HOST", "from-env")
    monkeypatch.setenv("NOMAD_TEMPORAL_PORT", "7444")
    assert main(["worker", "-q", "cpu", "--namespace", "ns2"]) == 0
    config = fake_worker.instances[0].kwargs["config"]
    assert (config.host, config.port, config.namespace) == ("from-env", 7444, "ns2")


def test_connection_error_is_one_line_and_exit_1(
    fake_worker: type[FakeWorker], capsys: pytest.CaptureFixture[str]
) -> None:
    fake_worker.run_error = TemporalConnectionError("transport error: refused")
    assert main(["worker", "-q", "cpu", "--host", "127.0.0.1", "--port", "7111"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "127.0.0.1:7111" in err and "refused" in err


def test_nothing_to_run_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def nothing(task_queue: str, **kwargs: Any) -> None:
        raise NothingToRunError(f'Nothing to run on task queue "{task_queue}": ...')

    monkeypatch.setattr(nomad_actions.worker, "Worker", nothing)
    assert main(["worker", "-q", "empty-queue"]) == 2
    assert 'no action is registered on task queue "empty-queue"' in capsys.readouterr().err


def test_worker_on_an_empty_queue_raises_nothing_to_run() -> None:
    # The class the CLI catches above, raised by the real Worker (a ValueError, as before).
    with pytest.raises(NothingToRunError, match=r'^Nothing to run on task queue "empty-q"') as info:
        nomad_actions.worker.Worker("empty-q", skip_broken=True)
    assert isinstance(info.value, ValueError) and info.value.task_queue == "empty-q"


@pytest.mark.parametrize(
    "argv",
    [
        ["worker"],
        ["worker", "-q", "cpu", "--port", "0"],
        ["worker", "-q", "cpu", "--port", "http"],
        ["worker", "-q", "cpu", "--max-concurrent-activities", "0"],
        ["worker", "-q", "cpu", "--graceful-shutdown-timeout", "-1"],
        ["worker", "-q", "cpu", "--log-level", "loud"],
        ["no-such-command"],
    ],
)
def test_usage_errors_exit_2(
    fake_worker: type[FakeWorker], argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert "error:" in capsys.readouterr().err
    assert not fake_worker.instances


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "worker" in capsys.readouterr().err


def test_help_and_version_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "worker" in capsys.readouterr().out
    assert main(["worker", "--help"]) == 0
    assert "--graceful-shutdown-timeout" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"nomad-actions {__version__}"


def test_worker_finds_a_running_dev_server(fake_worker: type[FakeWorker], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    info = {"pid": os.getpid(), "host": "127.0.0.9", "port": 7999, "namespace": "default"}
    (data_dir / "dev.json").write_text(json.dumps(info))
    assert main(["worker", "-q", "cpu"]) == 0
    config = fake_worker.instances[0].kwargs["config"]
    assert (config.host, config.port, config.development) == ("127.0.0.9", 7999, True)

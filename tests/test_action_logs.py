"""Per-action log files without nomad-lab (``nomad_actions.action_logs``): activity logs land
in ``<fs.actions>/<root workflow id>/nomad_system/logs/<id>.log`` as upstream 2.0 writes them
(child workflows in their root's file), through our worker in this process and through a
``nomad-actions worker`` process; ``nomad-actions logs`` shows them."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.workflow import ParentClosePolicy

from nomad_actions import configure, get_action_result, start_action
from nomad_actions.action_logs import ActionLogHandler, install_action_logging
from nomad_actions.config import ENV_FS_ACTIONS, ConnectionConfig, reset_config
from nomad_actions.manager import action_log_file_path
from nomad_actions.testing import DevServer
from nomad_actions.worker import Worker

from .conftest import GREET, TEST_QUEUE
from .polling import wait_until
from .worker_processes import WorkerPool, worker_environment

plain_logger = logging.getLogger("test_action_logs.plain")


@activity.defn
def note_sync(text: str) -> str:
    activity.logger.info("sync says %s", text)
    return text


@activity.defn
async def note_async(text: str) -> str:
    plain_logger.warning('async says "%s"', text)  # quotes: the file stays JSON
    return text


@workflow.defn(name="ActionLogsChild")
class ChildWorkflow:
    @workflow.run
    async def run(self, text: str) -> str:
        return await workflow.execute_activity(
            note_sync, f"child {text}", start_to_close_timeout=timedelta(seconds=30)
        )


@workflow.defn(name="ActionLogsRoot")
class RootWorkflow:
    @workflow.run
    async def run(self, text: str) -> list[str]:
        options = {"start_to_close_timeout": timedelta(seconds=30)}
        first = await workflow.execute_activity(note_sync, text, **options)
        second = await workflow.execute_activity(note_async, text, **options)
        child = await workflow.execute_child_workflow(
            ChildWorkflow.run,
            text,
            id=f"{workflow.info().workflow_id}-child",
            parent_close_policy=ParentClosePolicy.TERMINATE,
        )
        return [first, second, child]


@pytest.fixture(scope="module")
def server() -> Iterator[DevServer]:
    with DevServer() as dev:
        yield dev


@pytest.fixture
def fs_actions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(ENV_FS_ACTIONS, str(tmp_path / "actions"))
    return tmp_path / "actions"


def _records(path: str | Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_activity_logs_of_an_action_and_its_child_land_in_the_roots_file(
    server: DevServer, fs_actions: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    config = ConnectionConfig(host=server.host, port=server.port, development=True)
    interceptor = install_action_logging(config)
    queue = f"action-logs-{uuid.uuid4().hex[:6]}"
    wid = f"action-logs-{uuid.uuid4().hex[:8]}"
    try:
        with Worker(
            queue,
            actions=[],
            workflows=[RootWorkflow, ChildWorkflow],
            activities=[note_sync, note_async],
            config=config,
            interceptors=[interceptor],
            sandboxed=False,
        ):

            async def run() -> list[str]:
                client = await Client.connect(server.address)
                return await client.execute_workflow(
                    RootWorkflow.run, "hi", id=wid, task_queue=queue
                )

            assert asyncio.run(run()) == ["hi", "hi", "child hi"]
    finally:
        for handler in list(logging.getLogger().handlers):
            if isinstance(handler, ActionLogHandler):
                logging.getLogger().removeHandler(handler)
                handler.close()
    path = Path(action_log_file_path(wid))
    assert path == fs_actions / wid / "nomad_system" / "logs" / f"{wid}.log"
    records = _records(path)
    events = [(r["level"], r["event"].split(" ({")[0]) for r in records]
    assert events == [
        ("INFO", "sync says hi"),
        ("WARNING", 'async says "hi"'),
        ("INFO", "sync says child hi"),
    ]
    assert all(r["timestamp"].endswith("Z") for r in records)
    assert not (fs_actions / f"{wid}-child").exists()  # the child has no file of its own


def test_worker_process_writes_them_and_logs_shows_them(
    server: DevServer, fs_actions: Path, tmp_path: Path
) -> None:
    configure(host=server.host, port=server.port)
    pool = WorkerPool(server, tmp_path, TEST_QUEUE)
    env = worker_environment({ENV_FS_ACTIONS: str(fs_actions)})
    try:
        pool.launch(("--skip-broken",), env=env)
        wid = pool.track(start_action(GREET, {"user_id": "logs-user", "name": "Ada"}))
        get_action_result(wid, timeout=60)
        path = Path(action_log_file_path(wid))
        wait_until(path.exists, "the action's log file")
        [record] = _records(path)
        assert record["level"] == "INFO" and record["event"].startswith("Greeting Ada")

        def logs(*extra: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "nomad_actions", "logs", wid, *extra,
                 "--host", server.host, "--port", str(server.port)],
                capture_output=True, text=True, timeout=60, env=env,
            )  # fmt: skip

        shown = logs()
        assert shown.returncode == 0, shown.stderr
        assert f"{record['timestamp']} INFO     Greeting Ada" in shown.stdout
        followed = logs("--follow", "--json")  # the action has ended: prints and returns
        assert followed.returncode == 0, followed.stderr
        assert [json.loads(line) for line in followed.stdout.splitlines()] == [record]
        missing = subprocess.run(
            [sys.executable, "-m", "nomad_actions", "logs", "no-such-action"],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
        assert missing.returncode == 1 and "no log for action 'no-such-action'" in missing.stderr
    finally:
        pool.close()
        reset_config()

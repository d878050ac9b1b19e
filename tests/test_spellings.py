"""Upstream NOMAD's spellings and plugin helpers, end to end on our worker.

The ways upstream code starts and follows actions (positional, keywords, ``action_name=``,
``get_action_status(id, user_id)``), activities registered for other task queues
(``Action.task_queue_activities``), the ``heartbeat`` context manager for long blocking code,
and the artifacts directories. Own dev server; our worker runs in this process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import temporalio.worker
from temporalio import activity, workflow
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import RetryPolicy
from temporalio.contrib.pydantic import pydantic_data_converter

import nomad_actions
import nomad_actions.manager
import nomad_actions.utils
from nomad_actions import (
    Action,
    ActionFailedError,
    TaskQueue,
    action_artifacts_dir,
    action_instance_artifacts_dir,
    configure,
    get_action_progress,
    get_action_result,
    get_action_status,
    get_action_status_async,
    heartbeat,
    register_action,
    start_action,
    start_action_async,
    unregister_action,
)
from nomad_actions.artifacts import ENV_ARTIFACTS_DIR
from nomad_actions.config import reset_config
from nomad_actions.testing import DevServer
from nomad_actions.worker import Worker
from nomad_actions_testplugin.models import GreetInput, GreetOutput

from .conftest import GREET, TEST_QUEUE
from .polling import wait_until

RESULT_TIMEOUT = 60.0
Status = WorkflowExecutionStatus


# -- workflows and activities of this module (run unsandboxed) ---------------------------------


@dataclass
class BlockInput:
    user_id: str
    kind: str  # "sync" or "async"
    seconds: float
    use_heartbeat: bool
    heartbeat_timeout: float


def _block(data: BlockInput) -> str:
    if not data.use_heartbeat:
        time.sleep(data.seconds)
        return "survived without heartbeats"
    beats = 0

    def progress() -> dict[str, Any]:
        nonlocal beats
        beats += 1
        return {"phase": "blocking", "beat": beats}

    with heartbeat(interval=0.3, details=progress):
        time.sleep(data.seconds)  # long blocking code: no chance to heartbeat by itself
    return f"done ({data.kind})"


@activity.defn
def block_sync(data: BlockInput) -> str:
    return _block(data)


@activity.defn
async def block_async(data: BlockInput) -> str:
    return _block(data)  # blocks the event loop on purpose


@workflow.defn(name="SpellingsBlockWorkflow")
class BlockWorkflow:
    @workflow.run
    async def run(self, data: BlockInput) -> str:
        return await workflow.execute_activity(
            block_sync if data.kind == "sync" else block_async,
            data,
            start_to_close_timeout=timedelta(seconds=data.seconds * 4 + 60),
            heartbeat_timeout=timedelta(seconds=data.heartbeat_timeout),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )


@dataclass
class RemoteInput:
    user_id: str
    queue: str
    name: str


@activity.defn
def where_it_ran(data: RemoteInput) -> str:
    return f"{data.name} ran on {activity.info().task_queue}"


@workflow.defn(name="SpellingsRemoteWorkflow")
class RemoteWorkflow:
    @workflow.run
    async def run(self, data: RemoteInput) -> str:
        return await workflow.execute_activity(
            where_it_ran,
            data,
            task_queue=data.queue,
            start_to_close_timeout=timedelta(seconds=RESULT_TIMEOUT),
        )


@activity.defn
def write_artifact(data: GreetInput) -> str:
    path = action_instance_artifacts_dir() / "result.txt"
    path.write_text(f"hello {data.name}")
    return str(path)


@workflow.defn(name="SpellingsArtifactWorkflow")
class ArtifactWorkflow:
    @workflow.run
    async def run(self, data: GreetInput) -> str:
        return await workflow.execute_activity(
            write_artifact, data, start_to_close_timeout=timedelta(seconds=RESULT_TIMEOUT)
        )


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[DevServer]:
    with DevServer() as dev:
        yield dev


@pytest.fixture(scope="module")
def greet_worker(server: DevServer) -> Iterator[Worker]:
    configure(host=server.host, port=server.port)
    try:
        with Worker(TEST_QUEUE, actions=[GREET]) as running:
            yield running
    finally:
        reset_config()


@pytest.fixture(autouse=True)
def connected(server: DevServer) -> Iterator[DevServer]:
    configure(host=server.host, port=server.port)
    yield server
    reset_config()


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def registered(action: Action, name: str) -> Iterator[str]:
    action_id = register_action(action, id=f"test_spellings:{name}-{uuid.uuid4().hex[:6]}")
    try:
        yield action_id
    finally:
        unregister_action(action_id)


# -- start_action / get_action_status spellings -----------------------------------------------


@pytest.mark.usefixtures("greet_worker")
def test_start_action_spellings() -> None:
    uid = new_user()
    data = {"user_id": uid, "name": "Ada"}
    wids = [
        start_action(GREET, data),  # nomad 1.4
        start_action(action_id=GREET, data=data),
        start_action(action_name=GREET, data=data),  # nomad 2.x docs
        start_action(action_name="Greet", data=data),  # the entry point's name
        start_action(GREET, GreetInput(**data)),
    ]
    assert len(set(wids)) == len(wids)
    for wid in wids:
        assert wid.startswith(f"{GREET}-{uid}-")
        assert get_action_result(wid, timeout=RESULT_TIMEOUT) == GreetOutput(
            message="Hello, Ada!", count=1
        )
    with pytest.raises(TypeError, match="action_id and action_name"):
        start_action(GREET, data, action_name=GREET)


@pytest.mark.usefixtures("greet_worker")
def test_get_action_status_spellings() -> None:
    uid = new_user()
    wid = start_action(GREET, {"user_id": uid, "name": "Bo"})
    get_action_result(wid, timeout=RESULT_TIMEOUT)
    assert get_action_status(wid) == Status.COMPLETED
    assert get_action_status(wid, uid) == Status.COMPLETED
    assert get_action_status(workflow_id=wid, user_id=uid) == Status.COMPLETED
    assert nomad_actions.manager.get_action_status(wid, uid) == Status.COMPLETED

    async def both() -> tuple[Status, Status]:
        wid2 = await start_action_async(action_name=GREET, data={"user_id": uid, "name": "Cy"})
        return await get_action_status_async(wid), await get_action_status_async(wid2, uid)

    first, second = asyncio.run(both())
    assert first == Status.COMPLETED and second in (Status.RUNNING, Status.COMPLETED)


# -- task_queue_activities ----------------------------------------------------------------------


def test_task_queue_activities_run_on_their_queue(connected: DevServer) -> None:
    wf_queue = f"spell-wf-{uuid.uuid4().hex[:6]}"
    act_queue = f"spell-act-{uuid.uuid4().hex[:6]}"
    action = Action(
        task_queue=wf_queue,
        activities=[],
        workflow=RemoteWorkflow,
        task_queue_activities={act_queue: [where_it_ran]},
    )
    for action_id in registered(action, "remote"):
        # Default discovery: the other queue's worker picks up the activity of this action.
        activity_worker = Worker(act_queue)
        assert where_it_ran in activity_worker.activities
        assert not activity_worker.workflows
        with (
            Worker(wf_queue, actions=[action_id], sandboxed=False),
            activity_worker,
        ):
            wid = start_action(action_id, RemoteInput(new_user(), act_queue, "Dee"))
            assert get_action_result(wid, timeout=RESULT_TIMEOUT) == f"Dee ran on {act_queue}"


def test_task_queue_activities_with_task_queue_members() -> None:
    action = Action(
        task_queue=f"spell-wf-{uuid.uuid4().hex[:6]}",
        activities=[],
        workflow=RemoteWorkflow,
        task_queue_activities={TaskQueue.GPU: [where_it_ran]},
    )
    for _ in registered(action, "gpu"):
        for queue in (TaskQueue.GPU, "gpu", "gpu-task-queue"):
            worker = Worker(queue)  # never run: shutdown() releases its threads
            try:
                assert where_it_ran in worker.activities
            finally:
                worker.shutdown()


# -- heartbeat ----------------------------------------------------------------------------------


@pytest.fixture
def block_action() -> Iterator[str]:
    queue = f"spell-block-{uuid.uuid4().hex[:6]}"
    action = Action(task_queue=queue, activities=[block_sync, block_async], workflow=BlockWorkflow)
    for action_id in registered(action, "block"):
        # Heartbeats reach the server at most every 0.5 s (instead of 80% of the timeout), so
        # a slow machine still keeps well inside the heartbeat timeout.
        with Worker(
            queue,
            actions=[action_id],
            sandboxed=False,
            max_heartbeat_throttle_interval=0.5,
            default_heartbeat_throttle_interval=0.5,
        ):
            yield action_id


def test_heartbeat_keeps_long_blocking_activities_alive(block_action: str) -> None:
    """Blocking three times longer than the heartbeat timeout: with `heartbeat` both a sync
    and an async activity complete; the same code without it times out."""
    hb_timeout, seconds = 3.0, 9.0
    uid = new_user()
    runs = {
        (kind, use): start_action(
            block_action,
            BlockInput(uid, kind, seconds, use_heartbeat=use, heartbeat_timeout=hb_timeout),
        )
        for kind in ("sync", "async")
        for use in (True, False)
        if use or kind == "sync"
    }
    # Progress (the callable's details) is visible while it blocks.
    details = wait_until(
        lambda: [
            d
            for a in get_action_progress(runs["sync", True]).activities
            for d in a["heartbeat_details"]
        ],
        "heartbeat details",
    )
    assert details[0]["phase"] == "blocking" and details[0]["beat"] >= 1

    assert get_action_result(runs["sync", True], timeout=RESULT_TIMEOUT) == "done (sync)"
    assert get_action_result(runs["async", True], timeout=RESULT_TIMEOUT) == "done (async)"
    with pytest.raises(ActionFailedError) as info:
        get_action_result(runs["sync", False], timeout=RESULT_TIMEOUT)
    assert "heartbeat" in str(info.value).lower(), str(info.value)


def test_heartbeat_on_the_official_worker(connected: DevServer) -> None:
    """The same plugin code on temporalio's own worker (a `def` activity; an `async def` one
    must keep its loop free there, see the heartbeat module)."""
    queue = f"spell-official-{uuid.uuid4().hex[:6]}"
    data = BlockInput(new_user(), "sync", 9.0, use_heartbeat=True, heartbeat_timeout=3.0)

    async def main() -> str:
        client = await Client.connect(connected.address, data_converter=pydantic_data_converter)
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            async with temporalio.worker.Worker(
                client,
                task_queue=queue,
                workflows=[BlockWorkflow],
                activities=[block_sync],
                activity_executor=pool,
                workflow_runner=temporalio.worker.UnsandboxedWorkflowRunner(),
                max_heartbeat_throttle_interval=timedelta(seconds=0.5),
                default_heartbeat_throttle_interval=timedelta(seconds=0.5),
            ):
                return await client.execute_workflow(
                    BlockWorkflow.run,
                    data,
                    id=f"official-block-{uuid.uuid4()}",
                    task_queue=queue,
                    execution_timeout=timedelta(seconds=RESULT_TIMEOUT),
                )

    assert asyncio.run(main()) == "done (sync)"


def test_heartbeat_outside_an_activity_and_bad_intervals() -> None:
    with pytest.raises(RuntimeError, match="inside an activity"), heartbeat():
        pass
    with pytest.raises(ValueError, match="interval"), heartbeat(interval=0):
        pass
    assert nomad_actions.heartbeat is heartbeat is nomad_actions.manager.heartbeat
    assert nomad_actions.utils.heartbeat is heartbeat


# -- artifacts ----------------------------------------------------------------------------------


def test_artifacts_dir_from_env_and_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_ARTIFACTS_DIR, str(tmp_path / "shared" / "arts"))
    base = action_artifacts_dir()
    assert base == (tmp_path / "shared" / "arts").resolve() and base.is_dir()
    monkeypatch.delenv(ENV_ARTIFACTS_DIR)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    default = action_artifacts_dir()
    assert default == (tmp_path / "tmp" / "nomad-actions" / "artifacts").resolve()
    assert default.is_dir()


def test_instance_dirs_are_safe_and_distinct(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_ARTIFACTS_DIR, str(tmp_path))
    base = action_artifacts_dir()
    wid = f"{GREET}-user-1-{uuid.uuid4()}"
    path = action_instance_artifacts_dir(wid)
    assert path.parent == base and path.is_dir()
    assert path.name == wid.replace(":", "_")
    for hostile in ("../../etc", "..", "/abs/path", "a/b\\c", "x" * 500):
        p = action_instance_artifacts_dir(hostile)
        assert p.parent == base and p.is_dir() and len(p.name) <= 200, hostile
    assert action_instance_artifacts_dir("y" * 500) != action_instance_artifacts_dir("y" * 501)
    with pytest.raises(ValueError, match="workflow_id"):
        action_instance_artifacts_dir()  # outside an activity
    with pytest.raises(ValueError):
        action_instance_artifacts_dir("")
    # nomad_actions.manager has upstream 2.0's str-returning, fs.actions-based ones
    # (tests/test_manager.py).
    for module in (nomad_actions, nomad_actions.utils):
        assert module.action_artifacts_dir is action_artifacts_dir
        assert module.action_instance_artifacts_dir is action_instance_artifacts_dir


def test_instance_dir_inside_an_activity_defaults_to_its_workflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_ARTIFACTS_DIR, str(tmp_path))
    queue = f"spell-art-{uuid.uuid4().hex[:6]}"
    action = Action(task_queue=queue, activities=[write_artifact], workflow=ArtifactWorkflow)
    for action_id in registered(action, "artifact"):
        with Worker(queue, actions=[action_id], sandboxed=False):
            wid = start_action(action_id, {"user_id": new_user(), "name": "Eve"})
            written = Path(get_action_result(wid, timeout=RESULT_TIMEOUT))
    assert written == action_instance_artifacts_dir(wid) / "result.txt"
    assert written.read_text() == "hello Eve"
    assert ":" not in written.parent.name

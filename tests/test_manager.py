"""``nomad_actions.manager``: upstream NOMAD 2.0's manager semantics on Temporal alone.

Return shapes (serialized results, ``ActionSchemaInfo`` rows, cursor pages), the errors
upstream raises ("Action is not running.", unknown ids reading TERMINATED), the per-run
directories and the signal-input pair. The signatures are compared with nomad-lab 2.0.0's in
``tests/nomad20/``. Own dev server; our worker runs in this process.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowExecutionStatus

import nomad_actions
import nomad_actions.utils
from nomad_actions import Action, configure, manager, register_action, unregister_action
from nomad_actions.config import ENV_FS_ACTIONS, reset_config
from nomad_actions.errors import (
    ActionNotFoundError,
    ActionNotRunningError,
    SignalInputNotFoundError,
)
from nomad_actions.testing import DevServer
from nomad_actions.worker import Worker

from .conftest import FAILS, GREET, TEST_QUEUE, WAITER
from .polling import wait_until

Status = WorkflowExecutionStatus
SIGNAL_QUEUE = f"manager-signal-{uuid.uuid4().hex[:6]}"


@dataclass
class AskInput:
    user_id: str


@dataclass
class Approval:
    approved_by: str
    comment: str


@workflow.defn(name="ManagerAskWorkflow")
class AskWorkflow:
    def __init__(self) -> None:
        self.approval: Approval | None = None

    @workflow.signal(name="approve-signal")
    def approve(self, data: Approval) -> None:
        self.approval = data

    @workflow.run
    async def run(self, data: AskInput) -> str:
        await manager.request_signal_input(
            workflow.info().workflow_id,
            data.user_id,
            "approve",
            title="Approve",
            initial_data={"comment": "ok?"},
        )
        await workflow.wait_condition(lambda: self.approval is not None)
        assert self.approval is not None
        return f"{self.approval.approved_by}: {self.approval.comment}"


@pytest.fixture(scope="module")
def server() -> Iterator[DevServer]:
    with DevServer() as dev:
        yield dev


@pytest.fixture(autouse=True)
def connected(server: DevServer) -> Iterator[DevServer]:
    configure(host=server.host, port=server.port)
    yield server
    reset_config()


@pytest.fixture(scope="module")
def worker(server: DevServer) -> Iterator[Worker]:
    configure(host=server.host, port=server.port)
    try:
        with Worker(TEST_QUEUE, actions=[GREET, WAITER, FAILS]) as running:
            yield running
    finally:
        reset_config()


@pytest.fixture
def ask_action(server: DevServer) -> Iterator[str]:
    action = Action(task_queue=SIGNAL_QUEUE, activities=[], workflow=AskWorkflow)
    action_id = register_action(action, id=f"test_manager:ask-{uuid.uuid4().hex[:6]}")
    try:
        with Worker(SIGNAL_QUEUE, actions=[action_id], sandboxed=False):
            yield action_id
    finally:
        unregister_action(action_id)


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def test_unknown_id_reads_terminated_and_needs_an_owner_with_a_user() -> None:
    assert manager.get_action_status("no-such-workflow") == Status.TERMINATED
    assert asyncio.run(manager.get_action_status_async("no-such-workflow")) == Status.TERMINATED
    with pytest.raises(ActionNotFoundError, match="different user"):
        manager.get_action_status("no-such-workflow", "someone")
    # The typed top-level function keeps telling the two apart.
    with pytest.raises(nomad_actions.WorkflowNotFoundError):
        nomad_actions.get_action_status("no-such-workflow")


@pytest.mark.usefixtures("worker")
def test_result_is_the_serialized_dict_and_stop_of_a_closed_action_fails() -> None:
    uid = new_user()
    wid = manager.start_action(action_name=GREET, data={"user_id": uid, "name": "Ada"})
    assert manager.get_action_result(wid, uid) == {"message": "Hello, Ada!", "count": 1}
    assert manager.get_action_status(wid) == Status.COMPLETED
    assert manager.get_action_status(wid, uid) == Status.COMPLETED
    with pytest.raises(ActionNotRunningError, match=r"^Action is not running\.$"):
        manager.stop_action(wid, uid)
    with pytest.raises(ActionNotFoundError):
        manager.get_action_result(wid, "another-user")
    with pytest.raises(ActionNotFoundError):
        manager.stop_action(wid, "another-user")
    with pytest.raises(ValueError, match="identify the same action"):
        manager.start_action(GREET, {"user_id": uid, "name": "x"}, action_name=WAITER)
    with pytest.raises(ValueError, match="action_id or action_name is required"):
        manager.start_action(data={"user_id": uid})


@pytest.mark.usefixtures("worker")
def test_stop_a_running_action() -> None:
    uid = new_user()
    wid = manager.start_action(WAITER, {"user_id": uid, "seconds": 60})
    assert manager.get_action_status(wid, uid) == Status.RUNNING
    asyncio.run(manager.stop_action_async(wid, uid))
    wait_until(lambda: manager.get_action_status(wid) == Status.CANCELED, "the cancel")
    with pytest.raises(ActionNotRunningError):
        manager.stop_action(wid, uid)


@pytest.mark.usefixtures("worker")
def test_list_user_actions_pages_with_a_cursor() -> None:
    uid = new_user()
    wids = [
        manager.start_action(
            GREET, {"user_id": uid, "name": f"n{i}", "upload_id": "up-a" if i < 3 else "up-b"}
        )
        for i in range(5)
    ]
    for wid in wids:
        manager.get_action_result(wid, uid)

    async def pages(**kwargs: object) -> list[manager.ActionRecordPage]:
        out = [await manager.list_user_actions(uid, page_size=2, **kwargs)]  # type: ignore[arg-type]
        while out[-1].next_cursor is not None:
            out.append(
                await manager.list_user_actions(
                    uid,
                    2,
                    out[-1].next_cursor,
                    **kwargs,  # type: ignore[arg-type]
                )
            )
        return out

    def all_listed() -> bool:
        return asyncio.run(manager.list_user_actions(uid, page_size=10)).total == 5

    wait_until(all_listed, "all 5 listed")  # visibility is eventually consistent
    listed = asyncio.run(pages())
    assert [len(p.items) for p in listed] == [2, 2, 1]
    assert all(p.total == 5 for p in listed)
    ids = [item.action_instance_id for p in listed for item in p.items]
    assert ids == list(reversed(wids))  # newest first, no repeats
    first = listed[0].items[0]
    assert isinstance(first, manager.ActionSummaryRecord)
    assert (first.action_id, first.status, first.upload_id) == (GREET, "COMPLETED", "up-b")
    by_upload = asyncio.run(pages(upload_id="up-a"))
    assert [i.action_instance_id for p in by_upload for i in p.items] == wids[2::-1]
    assert by_upload[0].total == 3
    with pytest.raises(ValueError, match="page_size"):
        asyncio.run(manager.list_user_actions(uid, page_size=0))
    with pytest.raises(ValueError, match="Invalid pagination cursor"):
        asyncio.run(manager.list_user_actions(uid, cursor="not-a-cursor"))


@pytest.mark.usefixtures("worker")
def test_get_user_action_is_a_record() -> None:
    uid = new_user()
    wid = manager.start_action(GREET, {"user_id": uid, "name": "Bo", "upload_id": "up"})
    manager.get_action_result(wid, uid)
    record = asyncio.run(manager.get_user_action(wid, uid))
    assert isinstance(record, manager.ActionRecord)
    assert (record.action_id, record.user_id, record.upload_id, record.status) == (
        GREET,
        uid,
        "up",
        "COMPLETED",
    )
    assert record.results == {"message": "Hello, Bo!", "count": 1}
    assert record.created_at <= record.updated_at
    assert asyncio.run(manager.get_user_action(wid, "another-user")) is None


def test_all_action_schemas_are_schema_info_rows() -> None:
    infos = {info.action_id: info for info in manager.get_all_action_schemas()}
    greet = infos[GREET]
    assert isinstance(greet, manager.ActionSchemaInfo)
    assert greet.name == "Greet"
    assert greet.description == "Greets someone via an activity."
    assert greet.task_queue == TEST_QUEUE
    assert greet.plugin_package == "nomad_actions_testplugin"
    assert "user_id" not in greet.json_schema["properties"]
    assert "name" in greet.json_schema["properties"]
    assert greet.signals == []
    assert infos[WAITER].signals == [{"finish": {"type": "string"}}]
    assert "nomad_actions_testplugin.actions:broken_action" not in infos


def test_directories_follow_upstream_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_FS_ACTIONS, str(tmp_path))
    wid = f"{GREET}-u1-{uuid.uuid4()}"
    assert manager.action_artifacts_dir() == str(tmp_path / "artifacts")
    assert manager.action_instance_artifacts_dir(wid) == str(tmp_path / wid / "artifacts")
    assert manager.action_instance_assets_dir(wid) == str(tmp_path / wid / "assets")
    log = manager.action_log_file_path(wid)
    assert log == str(tmp_path / wid / "nomad_system" / "logs" / f"{wid}.log")
    assert Path(log).parent.is_dir() and Path(manager.action_instance_assets_dir(wid)).is_dir()
    for hostile in ("", "..", "a/b"):
        with pytest.raises(ValueError, match="action instance id"):
            manager.action_log_file_path(hostile)


def test_signal_input_round_trip(ask_action: str) -> None:
    uid = new_user()
    wid = manager.start_action(ask_action, {"user_id": uid})

    def pending() -> list:
        record = asyncio.run(manager.get_user_action(wid, uid))
        return record.signal_input_requests if record else []

    wait_until(lambda: bool(pending()), "the pending request")
    assert pending() == [
        {"signal_fn_name": "approve", "title": "Approve", "initial_data": {"comment": "ok?"}}
    ]
    with pytest.raises(SignalInputNotFoundError, match="'reject'"):
        asyncio.run(manager.submit_signal_input(wid, uid, "reject", {}))
    with pytest.raises(ActionNotFoundError):
        asyncio.run(manager.submit_signal_input(wid, "another-user", "approve", {}))
    asyncio.run(
        manager.submit_signal_input(
            wid, uid, "approve", Approval(approved_by="Ada", comment="fine")
        )
    )
    assert manager.get_action_result(wid, uid) == "Ada: fine"
    with pytest.raises(ActionNotRunningError):
        asyncio.run(manager.submit_signal_input(wid, uid, "approve", {}))


def test_utils_exports_the_docs_import_path() -> None:
    assert nomad_actions.utils.start_action is nomad_actions.start_action
    assert nomad_actions.utils.get_action_status is nomad_actions.get_action_status
    assert {"start_action", "get_action_status"} <= set(nomad_actions.utils.__all__)


def test_validate_action_arg_takes_upstreams_argument_name() -> None:
    value = manager.validate_action_arg(GREET, arg={"user_id": "u", "name": "Ada"})
    assert value.name == "Ada"
    with pytest.raises(ValueError, match='field "name"'):
        manager.validate_action_arg(GREET, {"user_id": "u"})

"""Access control as in upstream NOMAD 2.x.

An entry point with ``users`` or ``groups`` admits only the users it lists and the members
of the groups it lists (``start_action(..., user_groups=[...])``); one without either admits
everyone. Once started, an action belongs to its user: with a ``user_id``, status, result,
stop and signal refuse everyone else.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus

from nomad_actions import (
    Action,
    ActionPermissionError,
    configure,
    get_action_result,
    get_action_status,
    register_action,
    signal_action,
    start_action,
    start_action_async,
    stop_action,
    terminate_action,
    unregister_action,
)
from nomad_actions.config import reset_config
from nomad_actions.testing import DevServer
from nomad_actions.worker import Worker
from nomad_actions_testplugin.actions import GreetActionEntryPoint
from nomad_actions_testplugin.models import GreetOutput

from .conftest import GREET, TEST_QUEUE, WAITER

RESULT_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def server() -> Iterator[DevServer]:
    with DevServer() as dev:
        yield dev


@pytest.fixture(scope="module")
def worker(server: DevServer) -> Iterator[Worker]:
    configure(host=server.host, port=server.port)
    try:
        with Worker(TEST_QUEUE, actions=[GREET, WAITER]) as running:
            yield running
    finally:
        reset_config()


@pytest.fixture(autouse=True)
def connected(server: DevServer, worker: Worker) -> Iterator[None]:
    configure(host=server.host, port=server.port)
    yield
    reset_config()


def restricted(
    users: list[str] | None = None, groups: list[str] | None = None, entry_point: Any = None
) -> Iterator[str]:
    action_id = f"test_access:greet-{uuid.uuid4().hex[:8]}"
    if entry_point is None:
        entry_point = GreetActionEntryPoint(
            name="Restricted greet", task_queue=TEST_QUEUE, users=users, groups=groups
        )
    register_action(entry_point, id=action_id)
    try:
        yield action_id
    finally:
        unregister_action(action_id)


@pytest.fixture
def users_only() -> Iterator[str]:
    yield from restricted(users=["alice", "bob"])


@pytest.fixture
def groups_only() -> Iterator[str]:
    yield from restricted(groups=["lab-a", "lab-b"])


@pytest.fixture
def users_and_groups() -> Iterator[str]:
    yield from restricted(users=["alice"], groups=["lab-a"])


def greet(action_id: str, user: str, **kwargs: Any) -> GreetOutput:
    wid = start_action(action_id, {"user_id": user, "name": user}, **kwargs)
    return get_action_result(wid, user_id=user, timeout=RESULT_TIMEOUT)


def test_listed_users_may_start_others_may_not(users_only: str) -> None:
    assert greet(users_only, "alice").message == "Hello, alice!"
    assert greet(users_only, "bob").message == "Hello, bob!"
    with pytest.raises(ActionPermissionError) as info:
        start_action(users_only, {"user_id": "mallory", "name": "x"}, user_groups=["lab-a"])
    text = str(info.value)
    assert users_only in text and "mallory" in text, text
    assert isinstance(info.value, PermissionError)


def test_group_members_may_start_others_may_not(groups_only: str) -> None:
    assert greet(groups_only, "carol", user_groups=["other", "lab-b"]).count == 1
    for groups in (None, [], ["other"]):
        with pytest.raises(ActionPermissionError, match=groups_only):
            start_action(groups_only, {"user_id": "carol", "name": "x"}, user_groups=groups)


def test_users_or_groups_either_admits(users_and_groups: str) -> None:
    assert greet(users_and_groups, "alice").count == 1  # listed, no groups needed
    assert greet(users_and_groups, "dave", user_groups=["lab-a"]).count == 1  # a member
    with pytest.raises(ActionPermissionError):
        start_action(users_and_groups, {"user_id": "dave", "name": "x"}, user_groups=["lab-z"])


def test_no_users_or_groups_admits_everyone() -> None:
    for action_id in restricted(users=[], groups=[]):
        assert greet(action_id, "anyone").count == 1
    assert greet(GREET, "anyone-else").count == 1


def test_async_start_checks_too(groups_only: str) -> None:
    async def run() -> str:
        with pytest.raises(ActionPermissionError):
            await start_action_async(groups_only, {"user_id": "eve", "name": "x"})
        return await start_action_async(
            groups_only, {"user_id": "eve", "name": "x"}, user_groups=["lab-a"]
        )

    wid = asyncio.run(run())
    assert get_action_result(wid, user_id="eve", timeout=RESULT_TIMEOUT).count == 1


def test_upstream_shaped_entry_points_are_checked_by_their_fields() -> None:
    class UpstreamEntryPoint:
        """Shaped like nomad-lab's ActionEntryPoint, not derived from ours."""

        entry_point_type = "action"

        def __init__(self) -> None:
            self.name = "Upstream"
            self.task_queue = TEST_QUEUE
            self.users = ["frank"]
            self.groups = None

        def load(self) -> Action:
            from nomad_actions_testplugin.activities import make_greeting
            from nomad_actions_testplugin.workflows import GreetWorkflow

            return Action(task_queue=TEST_QUEUE, activities=[make_greeting], workflow=GreetWorkflow)

    for action_id in restricted(entry_point=UpstreamEntryPoint()):
        assert greet(action_id, "frank").count == 1
        with pytest.raises(ActionPermissionError):
            start_action(action_id, {"user_id": "grace", "name": "x"})


def test_user_groups_must_be_a_list(groups_only: str) -> None:
    with pytest.raises(TypeError, match="user_groups"):
        start_action(groups_only, {"user_id": "carol", "name": "x"}, user_groups="lab-a")


def test_the_permission_check_comes_before_anything_is_sent(users_only: str) -> None:
    configure(port=1)  # nothing listens there: reaching the server would fail differently
    with pytest.raises(ActionPermissionError):
        start_action(users_only, {"user_id": "mallory", "name": "x"})


def test_only_the_owner_may_follow_and_control_an_action() -> None:
    owner = f"owner-{uuid.uuid4().hex[:6]}"
    wid = start_action(WAITER, {"user_id": owner, "seconds": 120})
    try:
        for call in (
            lambda: get_action_status(wid, "intruder"),
            lambda: get_action_result(wid, user_id="intruder", timeout=1),
            lambda: stop_action(wid, "intruder"),
            lambda: signal_action(wid, "finish", "hijacked", user_id="intruder"),
        ):
            with pytest.raises(ActionPermissionError, match="intruder"):
                call()
        assert get_action_status(wid, owner) == WorkflowExecutionStatus.RUNNING
        signal_action(wid, "finish", "mine", user_id=owner)
        assert get_action_result(wid, user_id=owner, timeout=RESULT_TIMEOUT) == "mine"
    finally:
        if get_action_status(wid) == WorkflowExecutionStatus.RUNNING:
            terminate_action(wid)

"""Priority as upstream NOMAD 2.0 sends it: ``ActionEntryPoint.priority_key`` (1-5) and
``priority_fairness_key='user_id'`` become the started workflow's Temporal ``Priority``
(fairness key = the starting user's id), read back with temporalio's own client."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pydantic
import pytest
from temporalio.client import Client

from nomad_actions import (
    ActionEntryPoint,
    configure,
    register_action,
    start_action,
    unregister_action,
)
from nomad_actions.config import reset_config
from nomad_actions.registry import load_action
from nomad_actions.testing import DevServer

from .conftest import GREET


class PrioritisedGreet(ActionEntryPoint):
    def load(self):  # type: ignore[no-untyped-def]
        return load_action(GREET)


@pytest.fixture(scope="module")
def server() -> Iterator[DevServer]:
    with DevServer() as dev:
        yield dev


@pytest.fixture(autouse=True)
def connected(server: DevServer) -> Iterator[DevServer]:
    configure(host=server.host, port=server.port)
    yield server
    reset_config()


def _priority(server: DevServer, workflow_id: str) -> tuple[int, str]:
    async def describe() -> tuple[int, str]:
        client = await Client.connect(server.address)
        info = (await client.get_workflow_handle(workflow_id).describe()).raw_description
        priority = info.workflow_execution_info.priority
        return priority.priority_key, priority.fairness_key

    return asyncio.run(describe())


@pytest.mark.parametrize(
    ("key", "fairness", "expected"),
    [
        (2, "user_id", (2, "USER")),
        (5, None, (5, "")),
        (None, "user_id", (0, "USER")),
        (None, None, (0, "")),
    ],
)
def test_start_sends_the_entry_points_priority(
    server: DevServer, key: int | None, fairness: str | None, expected: tuple[int, str]
) -> None:
    entry_point = PrioritisedGreet(
        name="Prioritised",
        task_queue="nobody-polls-this",
        priority_key=key,
        priority_fairness_key=fairness,
    )
    action_id = register_action(entry_point, id=f"test_priority:greet-{uuid.uuid4().hex[:6]}")
    try:
        user = f"user-{uuid.uuid4().hex[:6]}"
        wid = start_action(action_id, {"user_id": user, "name": "Ada"})
        want = (expected[0], user if expected[1] == "USER" else "")
        assert _priority(server, wid) == want
    finally:
        unregister_action(action_id)


def test_priority_key_is_checked_as_upstream() -> None:
    for bad in (0, 6):
        with pytest.raises(pydantic.ValidationError, match="priority_key"):
            PrioritisedGreet(name="x", priority_key=bad)
    with pytest.raises(pydantic.ValidationError, match="priority_fairness_key"):
        PrioritisedGreet(name="x", priority_fairness_key="upload_id")

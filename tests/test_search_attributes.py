"""Listing by search attributes (NomadUserId, NomadActionId, NomadUploadId) on real dev
servers: with the attributes registered (the fixtures' server), and on a namespace without
them (fallback to the memo scan, registration by `nomad-actions setup` and by a worker)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

from nomad_actions import configure, get_action_result, start_action, terminate_action
from nomad_actions import search_attributes as sa
from nomad_actions.cli import main as cli_main
from nomad_actions.client import (
    _client_for,
    count_actions,
    list_actions,
    list_actions_page,
)
from nomad_actions.config import get_config, reset_config
from nomad_actions.testing import DevServer
from nomad_actions.worker import Worker

from .conftest import GREET, TEST_QUEUE, WAITER
from .polling import wait_until

USER_KEY = SearchAttributeKey.for_keyword("NomadUserId")
ACTION_KEY = SearchAttributeKey.for_keyword("NomadActionId")
UPLOAD_KEY = SearchAttributeKey.for_keyword("NomadUploadId")


def user() -> str:
    return f"sa-{uuid.uuid4().hex[:8]}"


@pytest.fixture(autouse=True)
def _fresh_knowledge() -> Iterator[None]:
    sa.forget()
    yield
    sa.forget()


def test_fixture_server_has_the_attributes(temporal: DevServer) -> None:
    assert temporal.command().count("--search-attribute") == 3
    registered = _client_for(get_config()).search_attributes(True)
    assert {name: registered[name] for name in sa.SEARCH_ATTRIBUTES} == {
        name: 2
        for name in sa.SEARCH_ATTRIBUTES  # IndexedValueType KEYWORD
    }


@pytest.mark.usefixtures("official_worker")
def test_start_sets_them_and_listing_queries_them(temporal: DevServer) -> None:
    uid, upload = user(), f"upload-{uuid.uuid4().hex[:6]}"
    wid = start_action(WAITER, {"user_id": uid, "seconds": 60})
    other = start_action(GREET, {"user_id": uid, "name": "x", "upload_id": upload})
    try:

        async def attributes() -> TypedSearchAttributes:
            client = await Client.connect(temporal.address)
            return (await client.get_workflow_handle(other).describe()).typed_search_attributes

        typed = asyncio.run(attributes())
        assert typed.get(USER_KEY) == uid
        assert typed.get(ACTION_KEY) == GREET
        assert typed.get(UPLOAD_KEY) == upload

        rows = wait_until(
            lambda: len(list_actions(user_id=uid)) == 2 and list_actions(user_id=uid), "both listed"
        )
        assert {r.workflow_id for r in rows} == {wid, other}
        assert [r.workflow_id for r in list_actions(user_id=uid, upload_id=upload)] == [other]
        assert [r.workflow_id for r in list_actions(user_id=uid, action_id=WAITER)] == [wid]
        get_action_result(other, timeout=60)
        wait_until(
            lambda: [r.workflow_id for r in list_actions(user_id=uid, status="RUNNING")] == [wid],
            "only the waiter to be listed as running",
        )
        assert count_actions(user_id=uid) == 2
        assert count_actions(user_id=uid, upload_id=upload) == 1
    finally:
        terminate_action(wid)


def test_query_is_answered_by_the_server_not_the_memo(temporal: DevServer) -> None:
    """A run whose memo names one owner and whose search attribute names another is listed
    for the attribute's owner: the filter ran on the server, over the attributes."""
    memo_owner, attribute_owner = user(), user()

    async def start() -> str:
        client = await Client.connect(temporal.address)
        handle = await client.start_workflow(
            "WaiterWorkflow",
            {"user_id": memo_owner, "seconds": 60},
            id=f"sa-mismatch-{uuid.uuid4()}",
            task_queue=TEST_QUEUE,
            memo={"nomad_user_id": memo_owner, "nomad_action_id": WAITER},
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(USER_KEY, attribute_owner),
                    SearchAttributePair(ACTION_KEY, WAITER),
                ]
            ),
        )
        return handle.id

    wid = asyncio.run(start())
    try:
        rows = wait_until(lambda: list_actions(user_id=attribute_owner), "the run to be listed")
        assert [r.workflow_id for r in rows] == [wid]
        assert rows[0].user_id == memo_owner  # the row itself still reads the memo
        assert list_actions(user_id=memo_owner) == []
        # manager.list_user_actions (upstream 2.0's paging) finds runs the same way.
        from nomad_actions.manager import list_user_actions

        page = asyncio.run(list_user_actions(attribute_owner))
        assert [i.action_instance_id for i in page.items] == [wid] and page.total == 1
        assert asyncio.run(list_user_actions(memo_owner)).total == 0
    finally:
        terminate_action(wid)


def test_pages_with_cursor_and_total(temporal: DevServer) -> None:
    uid = user()
    wids = [start_action(WAITER, {"user_id": uid, "seconds": 60}) for _ in range(5)]
    try:
        wait_until(lambda: count_actions(user_id=uid) == 5, "all five to be visible")
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            page = list_actions_page(user_id=uid, page_size=2, cursor=cursor)
            pages += 1
            assert page.total == 5
            assert len(page.executions) <= 2
            seen += [r.workflow_id for r in page.executions]
            cursor = page.next_cursor
            if cursor is None:
                break
            assert cursor.startswith("q:")
        assert pages == 3
        assert sorted(seen) == sorted(wids)
        with pytest.raises(ValueError, match="Invalid list cursor"):
            list_actions_page(user_id=uid, cursor="bogus")
        with pytest.raises(ValueError, match="page_size"):
            list_actions_page(user_id=uid, page_size=0)
    finally:
        for wid in wids:
            terminate_action(wid)


@pytest.mark.parametrize(
    "shape", ["o'brien-{}", 'say "hi" {}', "back\\slash-{}"], ids=["quote", "dquote", "bslash"]
)
def test_awkward_values_are_listed(temporal: DevServer, shape: str) -> None:
    """A single quote is escaped in the filter; a double quote or a backslash cannot be
    written there, so that listing scans the memo: either way the run is found."""
    tricky = shape.format(uuid.uuid4().hex[:6])
    expressible = sa.query_value(tricky) is not None
    assert expressible == ("'" in tricky)
    wid = start_action(WAITER, {"user_id": tricky, "seconds": 60})
    try:
        rows = wait_until(lambda: list_actions(user_id=tricky), "the run to be listed")
        assert [r.workflow_id for r in rows] == [wid]
        assert count_actions(user_id=tricky) == 1
    finally:
        terminate_action(wid)


def test_register_command_names_every_attribute() -> None:
    command = sa.register_command(
        configure(host="temporal.example.org", port=7233, namespace="nomad")
    )
    reset_config()
    assert command.startswith("temporal operator search-attribute create")
    assert "--address temporal.example.org:7233 --namespace nomad" in command
    for name in sa.SEARCH_ATTRIBUTES:
        assert f"--name {name} --type Keyword" in command


@pytest.fixture
def bare_server(tmp_path: Path) -> Iterator[DevServer]:
    """A dev server whose namespace lacks the attributes, as a fresh cluster does."""
    with DevServer(search_attributes=False, log_path=tmp_path / "temporal.log") as server:
        configure(host=server.host, port=server.port)
        try:
            yield server
        finally:
            reset_config()


def test_namespace_without_them_falls_back_to_the_scan_and_setup_registers_them(
    bare_server: DevServer, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sa.missing_from(_client_for(get_config()).search_attributes(True)) == list(
        sa.SEARCH_ATTRIBUTES
    )
    uid = user()
    with caplog.at_level(logging.WARNING, logger="nomad_actions.search_attributes"):
        wid = start_action(WAITER, {"user_id": uid, "seconds": 60})
        rows = wait_until(lambda: list_actions(user_id=uid), "the run to be listed by the scan")
    assert [r.workflow_id for r in rows] == [wid]
    warning = "\n".join(r.getMessage() for r in caplog.records)
    assert "has no search attributes NomadUserId, NomadActionId, NomadUploadId" in warning
    assert (
        "nomad-actions setup" in warning and "temporal operator search-attribute create" in warning
    )
    assert count_actions(user_id=uid) == 1
    page = list_actions_page(user_id=uid, page_size=1)
    assert page.total == 1 and page.next_cursor is None

    code = cli_main(["setup", "--host", bare_server.host, "--port", str(bare_server.port)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Registered NomadUserId, NomadActionId, NomadUploadId" in out
    assert not sa.missing_from(_client_for(get_config()).search_attributes(True))
    assert cli_main(["setup", "--host", bare_server.host, "--port", str(bare_server.port)]) == 0
    assert "Already registered" in capsys.readouterr().out

    # From now on starts carry them and listing queries them.
    sa.forget()
    later = start_action(WAITER, {"user_id": uid, "seconds": 60})
    rows = wait_until(lambda: list_actions(user_id=uid), "the new run to be listed by query")
    assert [r.workflow_id for r in rows] == [later]  # the first run has no attributes
    for w in (wid, later):
        terminate_action(w)


def test_a_worker_registers_them_at_start(bare_server: DevServer) -> None:
    native = _client_for(get_config())
    assert sa.missing_from(native.search_attributes(True))
    with Worker(TEST_QUEUE, actions=[GREET]):
        pass
    assert not sa.missing_from(native.search_attributes(True))

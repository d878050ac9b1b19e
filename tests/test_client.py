"""The client API against a real dev server, with the official temporalio worker as peer."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
import uuid

import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter

import nomad_actions
from nomad_actions import (
    ActionFailedError,
    ActionInputError,
    UnknownActionError,
    WorkflowNotFoundError,
    get_action_result,
    get_action_status,
    list_actions,
    signal_action,
    start_action,
    stop_action,
)
from nomad_actions.testing import DevServer, free_port
from nomad_actions_testplugin.models import GreetInput, GreetOutput, WaitInput

from .conftest import FAILS, GREET, TEST_QUEUE, WAITER

pytestmark = pytest.mark.usefixtures("temporal", "official_worker")


def user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def wait_for_status(wid: str, status: WorkflowExecutionStatus, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while get_action_status(wid) != status:
        assert time.monotonic() < deadline, f"{wid} never reached {status.name}"
        time.sleep(0.1)


def test_start_runs_on_official_worker_and_result_is_typed() -> None:
    uid = user()
    wid = start_action(GREET, {"user_id": uid, "name": "Ada", "times": 2})
    assert wid.startswith(f"{GREET}-{uid}-")
    uuid.UUID(wid.removeprefix(f"{GREET}-{uid}-"))  # upstream's id shape
    result = get_action_result(wid, timeout=30)
    assert isinstance(result, GreetOutput)
    assert result == GreetOutput(message="Hello, Ada! Hello, Ada!", count=2)
    assert get_action_status(wid) == WorkflowExecutionStatus.COMPLETED


def test_model_input_keyword_and_action_name_spellings() -> None:
    uid = user()
    data = GreetInput(user_id=uid, name="Bo")
    for wid in (
        start_action(GREET, data),
        start_action(action_id=GREET, data=data),
        start_action(action_name=GREET, data=data),
    ):
        assert get_action_result(wid, timeout=30).message == "Hello, Bo!"


def test_custom_workflow_id_and_duplicate_is_refused() -> None:
    wid = f"custom-{uuid.uuid4()}"
    assert start_action(WAITER, {"user_id": user(), "seconds": 30}, workflow_id=wid) == wid
    with pytest.raises(nomad_actions.WorkflowAlreadyStartedError, match=wid):
        start_action(WAITER, {"user_id": user()}, workflow_id=wid)
    nomad_actions.terminate_action(wid)


def test_payload_bytes_match_the_pydantic_converter() -> None:
    """What we send is byte-identical to what temporalio's Pydantic converter sends."""
    uid = user()
    data = GreetInput(user_id=uid, name="Åsa 🙂", times=1)
    wid = start_action(GREET, data)
    get_action_result(wid, timeout=30)

    async def first_input() -> bytes:
        client = await Client.connect(nomad_actions.get_config().address)
        history = await client.get_workflow_handle(wid).fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes
        return started.input.payloads[0]

    ours = asyncio.run(first_input())
    reference = pydantic_data_converter.payload_converter.to_payloads([data])[0]
    assert ours.metadata["encoding"] == b"json/plain"
    assert ours.data == reference.data


def test_workflow_started_by_official_client_reads_with_ours() -> None:
    wid = f"official-{uuid.uuid4()}"

    async def start() -> None:
        client = await Client.connect(
            nomad_actions.get_config().address, data_converter=pydantic_data_converter
        )
        await client.start_workflow(
            "GreetWorkflow", GreetInput(user_id="x", name="Cy"), id=wid, task_queue=TEST_QUEUE
        )

    asyncio.run(start())
    # No memo from us: the result comes back as plain JSON data.
    assert get_action_result(wid, timeout=30) == {"message": "Hello, Cy!", "count": 1}


def test_validation_errors_name_the_field_and_the_action() -> None:
    with pytest.raises(ActionInputError) as info:
        start_action(GREET, {"user_id": "u", "times": 0})
    text = str(info.value)
    assert GREET in text and '"name"' in text and '"times"' in text
    with pytest.raises(ActionInputError, match="user_id"):
        start_action(GREET, {"name": "x"})
    with pytest.raises(ActionInputError, match="needs input data"):
        start_action(GREET, None)
    assert isinstance(info.value, ValueError)


def test_unknown_action_lists_known_ids() -> None:
    with pytest.raises(UnknownActionError) as info:
        start_action("no.such:action", {"user_id": "u"})
    assert GREET in str(info.value) and WAITER in str(info.value)
    assert isinstance(info.value, LookupError)


@pytest.mark.parametrize(
    "call",
    [
        lambda wid: get_action_status(wid),
        lambda wid: get_action_result(wid, timeout=5),
        lambda wid: stop_action(wid),
        lambda wid: signal_action(wid, "finish", "x"),
        lambda wid: nomad_actions.query_action(wid, "state"),
    ],
    ids=["status", "result", "stop", "signal", "query"],
)
def test_unknown_workflow_id_is_a_lookup_error(call) -> None:
    wid = f"does-not-exist-{uuid.uuid4()}"
    with pytest.raises(WorkflowNotFoundError) as info:
        call(wid)
    assert isinstance(info.value, LookupError)
    assert info.value.workflow_id == wid and wid in str(info.value)


def test_wrong_owner_is_refused_and_owner_is_allowed() -> None:
    owner, other = user(), user()
    wid = start_action(WAITER, {"user_id": owner, "seconds": 30})
    assert get_action_status(wid, owner) == WorkflowExecutionStatus.RUNNING
    for call in (
        lambda: get_action_status(wid, other),
        lambda: get_action_result(wid, other, timeout=1),
        lambda: stop_action(wid, other),
        lambda: signal_action(wid, "finish", "x", user_id=other),
    ):
        with pytest.raises(PermissionError, match=other):
            call()
    assert get_action_status(wid) == WorkflowExecutionStatus.RUNNING  # nothing happened
    signal_action(wid, "finish", "by owner", user_id=owner)
    assert get_action_result(wid, owner, timeout=30) == "by owner"


def test_status_running_then_completed_through_signal_and_query() -> None:
    wid = start_action(WAITER, WaitInput(user_id=user(), seconds=60))
    wait_for_status(wid, WorkflowExecutionStatus.RUNNING)
    assert nomad_actions.query_action(wid, "state") == "waiting"
    signal_action(wid, "finish", "hello")
    assert get_action_result(wid, timeout=30) == "hello"
    assert get_action_status(wid) == WorkflowExecutionStatus.COMPLETED


def test_status_failed_and_result_carries_the_failure_message() -> None:
    wid = start_action(FAILS, {"user_id": user(), "reason": "bad sample"})
    with pytest.raises(ActionFailedError, match="boom: bad sample") as info:
        get_action_result(wid, timeout=30)
    assert info.value.status == WorkflowExecutionStatus.FAILED
    assert get_action_status(wid) == WorkflowExecutionStatus.FAILED


def test_stop_action_cancels() -> None:
    wid = start_action(WAITER, {"user_id": user(), "seconds": 60})
    wait_for_status(wid, WorkflowExecutionStatus.RUNNING)
    stop_action(wid)
    with pytest.raises(ActionFailedError) as info:
        get_action_result(wid, timeout=30)
    assert info.value.status == WorkflowExecutionStatus.CANCELED
    assert get_action_status(wid) == WorkflowExecutionStatus.CANCELED


def test_terminate_action() -> None:
    wid = start_action(WAITER, {"user_id": user(), "seconds": 60})
    nomad_actions.terminate_action(wid, reason="operator said so")
    with pytest.raises(ActionFailedError, match="operator said so") as info:
        get_action_result(wid, timeout=30)
    assert info.value.status == WorkflowExecutionStatus.TERMINATED
    assert get_action_status(wid) == WorkflowExecutionStatus.TERMINATED


def test_result_timeout() -> None:
    wid = start_action(WAITER, {"user_id": user(), "seconds": 60})
    with pytest.raises(TimeoutError):
        get_action_result(wid, timeout=0.5)
    nomad_actions.terminate_action(wid)


def test_list_actions_filters_by_user_action_and_status() -> None:
    uid = user()
    done = start_action(GREET, {"user_id": uid, "name": "L"})
    get_action_result(done, timeout=30)
    running = start_action(WAITER, {"user_id": uid, "seconds": 60})
    start_action(GREET, {"user_id": user(), "name": "other user"})

    deadline = time.monotonic() + 20
    while True:  # visibility is eventually consistent
        mine = list_actions(user_id=uid)
        if {a.workflow_id for a in mine} == {done, running}:
            break
        assert time.monotonic() < deadline, mine
        time.sleep(0.2)
    assert all(a.user_id == uid for a in mine)
    by_id = {a.workflow_id: a for a in mine}
    assert by_id[done].action_id == GREET and by_id[done].workflow_type == "GreetWorkflow"
    assert by_id[running].task_queue == TEST_QUEUE
    assert [a.workflow_id for a in list_actions(user_id=uid, action_id=WAITER)] == [running]
    deadline = time.monotonic() + 20
    while [a.workflow_id for a in list_actions(user_id=uid, status="RUNNING")] != [running]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert [a.workflow_id for a in list_actions(user_id=uid, status="COMPLETED")] == [done]
    assert len(list_actions(limit=1)) == 1
    with pytest.raises(ValueError, match="Unknown status"):
        list_actions(status="sleepy")
    nomad_actions.terminate_action(running)


def test_async_twins() -> None:
    async def main() -> None:
        uid = user()
        wid = await nomad_actions.start_action_async(GREET, {"user_id": uid, "name": "As"})
        result = await nomad_actions.get_action_result_async(wid, uid, timeout=30)
        assert result.message == "Hello, As!"
        status = await nomad_actions.get_action_status_async(wid, uid)
        assert status == WorkflowExecutionStatus.COMPLETED
        waiting = await nomad_actions.start_action_async(WAITER, {"user_id": uid})
        await nomad_actions.signal_action_async(waiting, "finish", "async")
        assert await nomad_actions.get_action_result_async(waiting) == "async"
        cancelled = await nomad_actions.start_action_async(WAITER, {"user_id": uid})
        await nomad_actions.stop_action_async(cancelled)
        with pytest.raises(ActionFailedError):
            await nomad_actions.get_action_result_async(cancelled, timeout=30)
        rows = await nomad_actions.list_actions_async(user_id=uid, limit=10)
        assert all(r.user_id == uid for r in rows)

    asyncio.run(main())


def test_sync_api_inside_a_running_event_loop_thread() -> None:
    """An ELN normalize() may run inside an event loop's thread: the sync API still works."""

    async def normalize() -> WorkflowExecutionStatus:
        wid = start_action(GREET, {"user_id": user(), "name": "Loop"})
        get_action_result(wid, timeout=30)
        return get_action_status(wid)

    assert asyncio.run(normalize()) == WorkflowExecutionStatus.COMPLETED


def test_sync_api_from_many_threads_shares_one_connection() -> None:
    before = nomad_actions._core.connection_count()
    uid = user()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        wids = list(
            pool.map(lambda i: start_action(GREET, {"user_id": uid, "name": str(i)}), range(16))
        )
        results = list(pool.map(lambda w: get_action_result(w, timeout=60), wids))
    assert sorted(r.message for r in results) == sorted(f"Hello, {i}!" for i in range(16))
    assert nomad_actions._core.connection_count() == max(before, 1)


def test_waiting_releases_the_gil() -> None:
    """While one thread waits for a result, another thread runs Python and sends the
    signal that ends the wait; were the GIL held, this would deadlock."""
    wid = start_action(WAITER, {"user_id": user(), "seconds": 60})
    box: list[object] = []
    waiter = threading.Thread(target=lambda: box.append(get_action_result(wid, timeout=30)))
    waiter.start()
    time.sleep(0.3)
    signal_action(wid, "finish", "released")
    waiter.join(30)
    assert box == ["released"]


def test_server_down_is_a_clear_connection_error() -> None:
    port = free_port()
    nomad_actions.configure(host="127.0.0.1", port=port, connect_timeout=2)
    started = time.monotonic()
    with pytest.raises(nomad_actions.TemporalConnectionError) as info:
        get_action_status("anything")
    assert f"127.0.0.1:{port}" in str(info.value)
    assert isinstance(info.value, ConnectionError)
    assert time.monotonic() - started < 15, "must fail within the connect timeout, not hang"
    with pytest.raises(nomad_actions.TemporalConnectionError):
        start_action(GREET, {"user_id": "u", "name": "x"})


def test_reconnects_after_the_server_restarts(tmp_path) -> None:
    port = free_port()
    db = tmp_path / "temporal.db"
    nomad_actions.configure(host="127.0.0.1", port=port)
    with DevServer(port=port, db_filename=db):
        wid = start_action(WAITER, {"user_id": user(), "seconds": 600})
        assert get_action_status(wid) == WorkflowExecutionStatus.RUNNING
    with pytest.raises(nomad_actions.TemporalConnectionError):
        get_action_status(wid)
    with DevServer(port=port, db_filename=db):
        # Same process, same cached connection: it reconnects by itself.
        assert get_action_status(wid) == WorkflowExecutionStatus.RUNNING
        nomad_actions.terminate_action(wid)
        assert get_action_status(wid) == WorkflowExecutionStatus.TERMINATED


def test_result_timeout_is_a_structured_action_timeout_error() -> None:
    wid = start_action(WAITER, {"user_id": user(), "seconds": 60})
    with pytest.raises(nomad_actions.ActionTimeoutError) as info:
        get_action_result(wid, timeout=0.5)
    assert isinstance(info.value, TimeoutError)
    assert (info.value.workflow_id, info.value.timeout) == (wid, 0.5)
    nomad_actions.terminate_action(wid)


def test_connection_errors_carry_their_kind_and_address() -> None:
    """The kind comes from the error's types in Rust (the Python side never reads the text)."""
    from nomad_actions.config import configure, reset_config

    port = free_port()
    try:
        configure(host="127.0.0.1", port=port, connect_timeout=3)
        with pytest.raises(nomad_actions.TemporalConnectionError) as refused:
            get_action_status("x")
        assert refused.value.kind == "refused"
        assert refused.value.address == f"http://127.0.0.1:{port}"
        assert refused.value.reason and not refused.value.reason.startswith("cannot connect")
        configure(host="no-such-host.invalid", port=7233)
        with pytest.raises(nomad_actions.TemporalConnectionError) as unknown:
            get_action_status("x")
        assert unknown.value.kind == "unknown_host"
        assert unknown.value.address == "http://no-such-host.invalid:7233"
    finally:
        reset_config()


_COUNT_DESCRIBES = r"""
import json, sys, urllib.request
from nomad_actions import _core
from nomad_actions import (
    WorkflowNotFoundError, configure, get_action_status, query_action, signal_action,
    stop_action, terminate_action,
)

address = _core.start_metrics_exporter("127.0.0.1:0")
configure(host=sys.argv[1], port=int(sys.argv[2]))


def describes() -> float:
    text = urllib.request.urlopen(f"http://{address}/metrics", timeout=10).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("temporal_request{") and 'operation="DescribeWorkflowExecution"' in line
    )


counts = {}
for name, call in [
    ("stop", lambda user: stop_action("no-such-wid", user)),
    ("terminate", lambda user: terminate_action("no-such-wid", user)),
    ("signal", lambda user: signal_action("no-such-wid", "s", None, user_id=user)),
    ("query", lambda user: query_action("no-such-wid", "q", user_id=user)),
    ("status", lambda user: get_action_status("no-such-wid", user)),
]:
    for user in (None, "u1"):
        before = describes()
        try:
            call(user)
        except WorkflowNotFoundError:
            pass
        else:
            raise SystemExit(f"{name}: no WorkflowNotFoundError")
        counts[f"{name}:{user}"] = describes() - before
print(json.dumps(counts))
"""


def test_calls_without_an_owner_check_skip_the_describe(temporal: DevServer) -> None:
    """Counted by the client's own RPC metrics: without a user, stop/terminate/signal/query
    are one RPC (still `WorkflowNotFoundError` for an unknown id); with a user, the owner
    check describes first. A status is always one describe."""
    import json
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", _COUNT_DESCRIBES, temporal.host, str(temporal.port)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in ("stop", "terminate", "signal", "query"):
        assert counts[f"{name}:None"] == 0, counts
        assert counts[f"{name}:u1"] == 1, counts
    assert counts["status:None"] == 1 and counts["status:u1"] == 1, counts


def test_input_errors_name_their_fields() -> None:
    """What the CLI's `--user` hint reads instead of the message text."""
    with pytest.raises(nomad_actions.ActionInputError) as missing:
        start_action(GREET, {"name": "no user"})
    assert missing.value.action_id and "user_id" in missing.value.fields
    with pytest.raises(nomad_actions.ActionInputError) as invalid:
        start_action(GREET, {"user_id": user(), "name": ["not", "a", "string"]})
    assert invalid.value.fields == ["name"] and invalid.value.field == "name"

"""Payload encryption, checked against a reference of upstream NOMAD's codec.

Upstream NOMAD encrypts every payload with Fernet, keyed by the NOMAD API secret, unless it
runs in development mode. The reference codec below is written from that description with
Python's ``cryptography``; the official temporalio client and worker use it as their
``PayloadCodec``, so these tests show that our client and worker interoperate with upstream's
in both directions, that what reaches the server is encrypted, and that a wrong key fails
clearly instead of handing garbage to plugin code.

This module starts its own dev server: the session's official worker has no codec.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from typing import Any

import pytest
import temporalio.api.common.v1
import temporalio.api.enums.v1
import temporalio.worker
from cryptography.fernet import Fernet
from temporalio import activity, workflow
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import RetryPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import PayloadCodec

from nomad_actions import (
    Action,
    ActionFailedError,
    PayloadError,
    configure,
    get_action_progress,
    get_action_result,
    get_action_status,
    get_config,
    query_action,
    register_action,
    signal_action,
    start_action,
    terminate_action,
    unregister_action,
)
from nomad_actions.config import reset_config
from nomad_actions.testing import DevServer
from nomad_actions.worker import Worker
from nomad_actions_testplugin.activities import make_greeting
from nomad_actions_testplugin.models import GreetInput, GreetOutput
from nomad_actions_testplugin.workflows import GreetWorkflow

from .conftest import GREET, TEST_QUEUE, WAITER
from .official_worker import OfficialWorker
from .polling import wait_until

# An operator's secret: upstream's default `defaultApiSecret` is refused in production mode (by
# upstream and, since issue 12, by us: see test_settings.py).
SECRET = "an-oasis-api-secret-for-the-tests"
OTHER_SECRET = "a-different-secret-of-another-deployment"
RESULT_TIMEOUT = 60.0
ENCRYPTED = b"binary/encrypted"
EventType = temporalio.api.enums.v1.EventType


# -- the reference: upstream NOMAD's codec, in Python ----------------------------------------


def reference_key(secret: str) -> bytes:
    return base64.urlsafe_b64encode((b"\0" * max(32 - len(secret), 0) + secret.encode())[:32])


class ReferenceCodec(PayloadCodec):
    """Upstream NOMAD's Fernet payload codec."""

    def __init__(self, secret: str) -> None:
        self.fernet = Fernet(reference_key(secret))

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [
            Payload(
                metadata={"encoding": ENCRYPTED}, data=self.fernet.encrypt(p.SerializeToString())
            )
            for p in payloads
        ]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [
            Payload.FromString(self.fernet.decrypt(p.data))
            if p.metadata.get("encoding") == ENCRYPTED
            else p
            for p in payloads
        ]

    def decode_one(self, payload: Payload) -> Payload:
        return asyncio.run(self.decode([payload]))[0]


def reference_converter(secret: str) -> Any:
    return dataclasses.replace(pydantic_data_converter, payload_codec=ReferenceCodec(secret))


# -- test workflows and activities (run unsandboxed: they live in this test module) ----------

HEARTBEAT_RELEASE = threading.Event()
SEEN_BY_USER_CODE: list[Any] = []


@activity.defn
def heartbeat_progress(data: GreetInput) -> str:
    """Heartbeats its progress until the test releases it."""
    step = 0
    deadline = time.monotonic() + RESULT_TIMEOUT
    while not HEARTBEAT_RELEASE.wait(0.2) and time.monotonic() < deadline:
        step += 1
        activity.heartbeat({"step": step, "of": data.name})
    return f"done after {step} steps"


@workflow.defn(name="ProgressWorkflow")
class ProgressWorkflow:
    @workflow.run
    async def run(self, data: GreetInput) -> str:
        return await workflow.execute_activity(
            heartbeat_progress,
            data,
            start_to_close_timeout=timedelta(seconds=RESULT_TIMEOUT * 2),
            heartbeat_timeout=timedelta(seconds=30),
        )


@dataclasses.dataclass
class RemoteInput:
    user_id: str
    queue: str
    name: str


@activity.defn
def record_activity(data: RemoteInput) -> str:
    SEEN_BY_USER_CODE.append(data)
    return f"activity saw {data.name}"


@workflow.defn(name="RemoteActivityWorkflow")
class RemoteActivityWorkflow:
    """Runs `record_activity` on another task queue, without retries."""

    @workflow.run
    async def run(self, data: RemoteInput) -> str:
        return await workflow.execute_activity(
            record_activity,
            data,
            task_queue=data.queue,
            start_to_close_timeout=timedelta(seconds=RESULT_TIMEOUT),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )


@workflow.defn(name="RecordingWorkflow")
class RecordingWorkflow:
    """Records what user code was given, so a test can prove it got nothing."""

    @workflow.run
    async def run(self, data: GreetInput) -> str:
        SEEN_BY_USER_CODE.append(data)
        return data.name


# -- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _production_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """This module is about production mode: the suite's default development mode is off."""
    monkeypatch.delenv("NOMAD_SERVICES_MODE", raising=False)


@pytest.fixture(scope="module")
def server() -> Iterator[DevServer]:
    with DevServer() as dev:
        yield dev


@pytest.fixture
def encrypted(server: DevServer) -> Iterator[DevServer]:
    """Our client, configured like a production NOMAD (API secret, not development)."""
    configure(host=server.host, port=server.port, api_secret=SECRET, development=False)
    yield server
    reset_config()


@pytest.fixture(scope="module")
def our_worker(server: DevServer) -> Iterator[Worker]:
    """Our worker with the production secret, serving the test plugin's queue."""
    configure(host=server.host, port=server.port, api_secret=SECRET, development=False)
    try:
        worker = Worker(TEST_QUEUE, actions=[GREET, WAITER], config=get_config())
    finally:
        reset_config()
    with worker:
        yield worker


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def run_async(fn: Callable[[], Any]) -> Any:
    return asyncio.run(fn())


async def official_client(server: DevServer, secret: str | None = None) -> Client:
    """The official client; with `secret`, it encrypts like upstream NOMAD."""
    converter = pydantic_data_converter if secret is None else reference_converter(secret)
    return await Client.connect(server.address, data_converter=converter)


def history_events(server: DevServer, workflow_id: str) -> list[Any]:
    """The raw history events (payloads as stored on the server)."""

    async def fetch() -> list[Any]:
        client = await Client.connect(server.address)  # no codec: nothing is decoded
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        return list(history.events)

    return run_async(fetch)


def events_of(events: list[Any], event_type: int) -> list[Any]:
    return [e for e in events if e.event_type == event_type]


def assert_encrypted(payload: Payload, secret: str = SECRET) -> Payload:
    """`payload` is a Fernet token of `secret`; returns the decrypted original."""
    assert payload.metadata["encoding"] == ENCRYPTED
    assert set(payload.metadata) == {"encoding"}, "metadata must not leak the inner encoding"
    assert payload.data.startswith(b"gAAAAA"), "a Fernet token"
    return ReferenceCodec(secret).decode_one(payload)


# -- the key ----------------------------------------------------------------------------------


def test_key_derivation_matches_upstream() -> None:
    assert reference_key("secret") == b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABzZWNyZXQ="
    configure(api_secret=SECRET)
    try:
        assert get_config().payload_secret == SECRET
        configure(development=True)
        assert get_config().payload_secret is None
    finally:
        reset_config()


def test_env_turns_encryption_on_and_development_mode_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reset_config()
    monkeypatch.setenv("NOMAD_SERVICES_API_SECRET", SECRET)
    monkeypatch.delenv("NOMAD_SERVICES_MODE", raising=False)
    assert get_config().payload_secret == SECRET
    monkeypatch.setenv("NOMAD_SERVICES_MODE", "development")
    assert get_config().payload_secret is None


# -- (a) our client encrypts what it sends ----------------------------------------------------


@pytest.mark.usefixtures("our_worker")
def test_our_client_sends_encrypted_input_that_upstream_can_decrypt(server: DevServer) -> None:
    configure(host=server.host, port=server.port, api_secret=SECRET, development=False)
    try:
        data = GreetInput(user_id=new_user(), name="Åsa 🙂", times=2)
        wid = start_action(GREET, data)
        assert get_action_result(wid, timeout=RESULT_TIMEOUT) == GreetOutput(
            message="Hello, Åsa 🙂! Hello, Åsa 🙂!", count=2
        )
    finally:
        reset_config()
    events = history_events(server, wid)
    started = events[0].workflow_execution_started_event_attributes
    [payload] = started.input.payloads
    inner = assert_encrypted(payload)
    # Decrypted, it is exactly what temporalio's Pydantic converter would have sent.
    [reference] = pydantic_data_converter.payload_converter.to_payloads([data])
    assert inner.metadata["encoding"] == b"json/plain"
    assert inner.data == reference.data
    assert "Åsa".encode() not in payload.data
    # The memo (owner, action id) stays readable for listing and ownership checks.
    memo = started.memo.fields
    assert memo["nomad_user_id"].metadata["encoding"] == b"json/plain"


@pytest.mark.usefixtures("our_worker")
def test_signal_and_query_arguments_are_encrypted(encrypted: DevServer) -> None:
    uid = new_user()
    wid = start_action(WAITER, {"user_id": uid, "seconds": 60})
    wait_until(lambda: query_action(wid, "state") == "waiting", "the waiter to run")
    signal_action(wid, "finish", "secret value 42", user_id=uid)
    assert get_action_result(wid, timeout=RESULT_TIMEOUT) == "secret value 42"
    events = history_events(encrypted, wid)
    [signaled] = events_of(events, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED)
    [payload] = signaled.workflow_execution_signaled_event_attributes.input.payloads
    assert assert_encrypted(payload).data == b'"secret value 42"'
    [completed] = events_of(events, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED)
    [result] = completed.workflow_execution_completed_event_attributes.result.payloads
    assert assert_encrypted(result).data == b'"secret value 42"'


# -- (b) upstream's client, our worker ----------------------------------------------------------


@pytest.mark.usefixtures("our_worker")
def test_workflow_started_by_upstream_client_runs_on_our_worker(encrypted: DevServer) -> None:
    wid = f"upstream-client-{uuid.uuid4()}"

    async def run() -> Any:
        client = await official_client(encrypted, SECRET)
        handle = await client.start_workflow(
            GreetWorkflow.run,
            GreetInput(user_id="x", name="Cy", times=3),
            id=wid,
            task_queue=TEST_QUEUE,
        )
        return await asyncio.wait_for(handle.result(), RESULT_TIMEOUT)

    result = run_async(run)
    assert result == GreetOutput(message="Hello, Cy! Hello, Cy! Hello, Cy!", count=3)
    # Our client reads the same encrypted result (as plain data: there is no memo of ours).
    assert get_action_result(wid, timeout=RESULT_TIMEOUT) == {
        "message": "Hello, Cy! Hello, Cy! Hello, Cy!",
        "count": 3,
    }


# -- (c) our worker encrypts activity inputs, results and heartbeats -------------------------


def test_our_worker_encrypts_activity_payloads_and_heartbeats(encrypted: DevServer) -> None:
    queue = f"enc-progress-{uuid.uuid4().hex[:8]}"
    action_id = register_action(
        Action(task_queue=queue, activities=[heartbeat_progress], workflow=ProgressWorkflow),
        id=f"test_encryption:progress-{queue}",
    )
    HEARTBEAT_RELEASE.clear()
    try:
        with Worker(queue, actions=[action_id], sandboxed=False, config=get_config()):
            wid = start_action(action_id, {"user_id": new_user(), "name": "heartbeat"})

            def heartbeat_details() -> list[Payload]:
                async def describe() -> list[Payload]:
                    client = await official_client(encrypted)  # no codec
                    desc = await client.get_workflow_handle(wid).describe()
                    return [
                        p
                        for a in desc.raw_description.pending_activities
                        for p in a.heartbeat_details.payloads
                    ]

                return run_async(describe)

            [detail] = wait_until(heartbeat_details, "a heartbeat with details")
            inner = assert_encrypted(detail)
            assert inner.metadata["encoding"] == b"json/plain"
            # Our client decrypts the progress it shows.
            progress = get_action_progress(wid)
            assert progress.activities[0]["heartbeat_details"][0]["of"] == "heartbeat"
            HEARTBEAT_RELEASE.set()
            result = get_action_result(wid, timeout=RESULT_TIMEOUT)
            assert result.startswith("done after ")
    finally:
        HEARTBEAT_RELEASE.set()
        unregister_action(action_id)

    events = history_events(encrypted, wid)
    [scheduled] = events_of(events, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    [arg] = scheduled.activity_task_scheduled_event_attributes.input.payloads
    assert b'"name":"heartbeat"' in assert_encrypted(arg).data
    [done] = events_of(events, EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED)
    [value] = done.activity_task_completed_event_attributes.result.payloads
    assert assert_encrypted(value).data.startswith(b'"done after ')
    [completed] = events_of(events, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED)
    [final] = completed.workflow_execution_completed_event_attributes.result.payloads
    assert_encrypted(final)


# -- (d) our client, upstream's worker ----------------------------------------------------------


def test_upstream_worker_runs_what_our_client_encrypted(encrypted: DevServer) -> None:
    queue = f"enc-official-{uuid.uuid4().hex[:8]}"
    action_id = register_action(
        Action(task_queue=queue, activities=[make_greeting], workflow=GreetWorkflow),
        id=f"test_encryption:official-{queue}",
    )
    try:
        with OfficialWorker(
            encrypted.address, queue, [GreetWorkflow], [make_greeting], reference_converter(SECRET)
        ):
            wid = start_action(action_id, GreetInput(user_id=new_user(), name="Di"))
            result = get_action_result(wid, timeout=RESULT_TIMEOUT)
    finally:
        unregister_action(action_id)
    assert result == GreetOutput(message="Hello, Di!", count=1)
    events = history_events(encrypted, wid)
    [completed] = events_of(events, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED)
    [value] = completed.workflow_execution_completed_event_attributes.result.payloads
    assert_encrypted(value)


# -- (e) development mode ---------------------------------------------------------------------


@pytest.mark.usefixtures("our_worker")
@pytest.mark.parametrize("via", ["configure", "env"])
def test_development_mode_sends_plain_json_and_an_encrypting_worker_reads_it(
    server: DevServer, via: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reset_config()
    if via == "configure":
        configure(host=server.host, port=server.port, api_secret=SECRET, development=True)
    else:
        monkeypatch.setenv("NOMAD_TEMPORAL_HOST", server.host)
        monkeypatch.setenv("NOMAD_TEMPORAL_PORT", str(server.port))
        monkeypatch.setenv("NOMAD_SERVICES_API_SECRET", SECRET)
        monkeypatch.setenv("NOMAD_SERVICES_MODE", "development")
    try:
        assert get_config().payload_secret is None
        wid = start_action(GREET, {"user_id": new_user(), "name": "Dev"})
        # The worker (with the secret) reads the plain input: decoding passes it through.
        # Its result is encrypted, so only a client with the secret can read it.
        wait_until(
            lambda: get_action_status(wid) == WorkflowExecutionStatus.COMPLETED, "completion"
        )
        with pytest.raises(PayloadError, match="binary/encrypted") as info:
            get_action_result(wid, timeout=RESULT_TIMEOUT)
        assert "NOMAD_SERVICES_API_SECRET" in str(info.value), "the error says what to do"
    finally:
        reset_config()
    started = history_events(server, wid)[0].workflow_execution_started_event_attributes
    [payload] = started.input.payloads
    assert payload.metadata["encoding"] == b"json/plain"
    assert b'"name":"Dev"' in payload.data
    configure(host=server.host, port=server.port, api_secret=SECRET, development=False)
    try:
        assert get_action_result(wid, timeout=RESULT_TIMEOUT).message == "Hello, Dev!"
    finally:
        reset_config()


def test_worker_without_secret_cannot_run_encrypted_workflows(encrypted: DevServer) -> None:
    """A development worker fails the workflow task, naming the encoding; it never runs the
    workflow code with the encrypted bytes."""
    wid = _start_upstream_recording(encrypted, SECRET)
    queue = _queue_of(wid)
    plain = dataclasses.replace(get_config(), api_secret=None, development=True)
    SEEN_BY_USER_CODE.clear()
    with Worker(queue, actions=[_recording_action(queue)], sandboxed=False, config=plain):
        message = _first_workflow_task_failure(encrypted, wid)
    assert "binary/encrypted" in message, message
    assert SEEN_BY_USER_CODE == []
    assert get_action_status(wid) == WorkflowExecutionStatus.RUNNING
    terminate_action(wid)


# -- (f) a wrong key ----------------------------------------------------------------------------


@pytest.mark.usefixtures("our_worker")
def test_client_with_wrong_key_fails_clearly_on_the_result(server: DevServer) -> None:
    configure(host=server.host, port=server.port, api_secret=SECRET, development=False)
    try:
        wid = start_action(GREET, {"user_id": new_user(), "name": "Ed"})
        assert get_action_result(wid, timeout=RESULT_TIMEOUT).message == "Hello, Ed!"
        configure(api_secret=OTHER_SECRET)
        with pytest.raises(PayloadError) as info:
            get_action_result(wid, timeout=RESULT_TIMEOUT)
    finally:
        reset_config()
    text = str(info.value)
    assert "Fernet" in text and "binary/encrypted" in text, text
    assert "secret" in text, text
    assert wid in text, text


def test_worker_with_wrong_key_fails_the_workflow_task_naming_the_codec(
    encrypted: DevServer,
) -> None:
    wid = _start_upstream_recording(encrypted, SECRET)
    queue = _queue_of(wid)
    wrong = dataclasses.replace(get_config(), api_secret=OTHER_SECRET)
    SEEN_BY_USER_CODE.clear()
    with Worker(queue, actions=[_recording_action(queue)], sandboxed=False, config=wrong):
        message = _first_workflow_task_failure(encrypted, wid)
    assert "Fernet" in message and "binary/encrypted" in message, message
    assert SEEN_BY_USER_CODE == [], "user code must never see undecryptable input"
    assert get_action_status(wid) == WorkflowExecutionStatus.RUNNING
    # The right key still runs it: nothing was lost.
    with Worker(queue, actions=[_recording_action(queue)], sandboxed=False, config=get_config()):
        assert get_action_result(wid, timeout=RESULT_TIMEOUT) == "Rec"
    assert [d.name for d in SEEN_BY_USER_CODE] == ["Rec"]


def _recording_action(queue: str) -> Action:
    return Action(task_queue=queue, activities=[], workflow=RecordingWorkflow)


def _queue_of(workflow_id: str) -> str:
    return workflow_id.rsplit("@", 1)[1]


def _start_upstream_recording(server: DevServer, secret: str) -> str:
    """Starts RecordingWorkflow with upstream's encrypting client on a fresh queue; the
    queue is encoded in the workflow id after '@'."""
    queue = f"enc-rec-{uuid.uuid4().hex[:8]}"
    wid = f"upstream-{uuid.uuid4()}@{queue}"

    async def start() -> None:
        client = await official_client(server, secret)
        await client.start_workflow(
            "RecordingWorkflow",
            GreetInput(user_id="x", name="Rec"),
            id=wid,
            task_queue=queue,
            retry_policy=RetryPolicy(maximum_attempts=1),
        )

    run_async(start)
    return wid


def _first_workflow_task_failure(server: DevServer, workflow_id: str) -> str:
    """The message of the first failed workflow task, with its causes after ': '."""

    def failure() -> str | None:
        for event in history_events(server, workflow_id):
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                f = event.workflow_task_failed_event_attributes.failure
                messages = [f.message]
                while f.HasField("cause"):
                    f = f.cause
                    messages.append(f.message)
                return ": ".join(messages)
        return None

    return wait_until(failure, "a failed workflow task", timeout=RESULT_TIMEOUT)


@pytest.mark.parametrize("secret", [OTHER_SECRET, None], ids=["wrong-key", "no-secret"])
def test_activity_worker_that_cannot_decrypt_fails_the_activity_not_user_code(
    encrypted: DevServer, secret: str | None
) -> None:
    """Upstream's worker runs the workflow; our worker, serving only the activity, cannot
    decrypt its input: the activity fails (not retried) with a message naming the
    encoding, and the activity function is never called."""
    wf_queue = f"enc-wf-{uuid.uuid4().hex[:8]}"
    act_queue = f"enc-act-{uuid.uuid4().hex[:8]}"
    action_id = register_action(
        Action(task_queue=wf_queue, activities=[], workflow=RemoteActivityWorkflow),
        id=f"test_encryption:remote-{wf_queue}",
    )
    config = dataclasses.replace(get_config(), api_secret=secret, development=secret is None)
    SEEN_BY_USER_CODE.clear()
    try:
        with (
            OfficialWorker(
                encrypted.address,
                wf_queue,
                [RemoteActivityWorkflow],
                [],
                reference_converter(SECRET),
                unsandboxed=True,
            ),
            Worker(act_queue, actions=[], activities=[record_activity], config=config),
        ):
            data = RemoteInput(user_id=new_user(), queue=act_queue, name="Fay")
            wid = start_action(action_id, data)
            with pytest.raises(ActionFailedError) as info:
                get_action_result(wid, timeout=RESULT_TIMEOUT)
    finally:
        unregister_action(action_id)
    text = str(info.value)
    assert "binary/encrypted" in text, text
    if secret is not None:
        assert "Fernet" in text and "secret" in text, text
    assert SEEN_BY_USER_CODE == []


def test_activity_worker_with_the_key_serves_upstream_workflows(encrypted: DevServer) -> None:
    """The same set-up with the right key: upstream's workflow worker, our activity worker."""
    wf_queue = f"enc-wf-{uuid.uuid4().hex[:8]}"
    act_queue = f"enc-act-{uuid.uuid4().hex[:8]}"
    action_id = register_action(
        Action(task_queue=wf_queue, activities=[], workflow=RemoteActivityWorkflow),
        id=f"test_encryption:remote-{wf_queue}",
    )
    SEEN_BY_USER_CODE.clear()
    try:
        with (
            OfficialWorker(
                encrypted.address,
                wf_queue,
                [RemoteActivityWorkflow],
                [],
                reference_converter(SECRET),
                unsandboxed=True,
            ),
            Worker(act_queue, actions=[], activities=[record_activity], config=get_config()),
        ):
            wid = start_action(
                action_id, RemoteInput(user_id=new_user(), queue=act_queue, name="Gus")
            )
            assert get_action_result(wid, timeout=RESULT_TIMEOUT) == "activity saw Gus"
    finally:
        unregister_action(action_id)
    assert [d.name for d in SEEN_BY_USER_CODE] == ["Gus"]

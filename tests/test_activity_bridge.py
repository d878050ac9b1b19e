"""Tests for `nomad_actions.activity_bridge`: no server, no Rust; callbacks collect outcomes."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pydantic_core
import pytest
import temporalio.api.common.v1
import temporalio.api.failure.v1
import temporalio.common
import temporalio.converter
import temporalio.exceptions
from pydantic import BaseModel, SecretStr, field_serializer
from temporalio import activity
from temporalio.contrib.pydantic import pydantic_data_converter

from nomad_actions.activity_bridge import ActivityBridge

TIMEOUT = 10.0
Failure = temporalio.api.failure.v1.Failure
# The cancel flags Rust sends for a cancel request (`CancelFlags` in activities.rs).
CANCEL = {"cancel_requested": True}


# --------------------------------------------------------------------------- models


class User(BaseModel):
    name: str
    password: SecretStr
    tags: list[str] = []


class RevealedUser(BaseModel):
    """Opts in to sending the secret, which both converters then honour."""

    name: str
    password: SecretStr

    @field_serializer("password", when_used="json")
    def _reveal(self, value: SecretStr) -> str:
        return value.get_secret_value()


@dataclasses.dataclass
class Inner:
    x: int
    label: str | None = None


@dataclasses.dataclass
class Outer:
    inner: Inner
    items: list[Inner]


USER_IN = {"name": "ada", "password": "s3cret", "tags": ["a"]}
OUTER_IN = {"inner": {"x": 1}, "items": [{"x": 2, "label": "two"}]}


# --------------------------------------------------------------------------- harness


def as_sent(outcome: dict) -> dict:
    """The outcome as the value Rust sends: JSON text (``result_json``, with the value it
    stands for) reads as ``{"result": value}``, the shape the assertions here compare."""
    if "result_json" in outcome:
        assert set(outcome) == {"result_json", "result_value"}, outcome
        return {"result": json.loads(outcome["result_json"])}
    return outcome


class Recorder:
    """Thread-safe sink for the bridge's callbacks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: Outcomes as the bridge reported them (`as_sent` in `outcomes`).
        self.reported: dict[bytes, dict] = {}
        self.outcomes: dict[bytes, dict] = {}
        self.calls: list[bytes] = []
        self.heartbeats: dict[bytes, list[list]] = {}
        self._events: dict[bytes, threading.Event] = {}

    def _event(self, token: bytes) -> threading.Event:
        with self._lock:
            return self._events.setdefault(token, threading.Event())

    def complete(self, token: bytes, outcome: dict) -> None:
        with self._lock:
            self.calls.append(token)
            self.reported.setdefault(token, outcome)
            self.outcomes.setdefault(token, as_sent(outcome))
        self._event(token).set()

    def heartbeat(self, token: bytes, details: list) -> None:
        with self._lock:
            self.heartbeats.setdefault(token, []).append(details)

    def wait(self, token: bytes, timeout: float = TIMEOUT) -> dict:
        assert self._event(token).wait(timeout), f"no outcome for {token!r}"
        return self.outcomes[token]

    def count(self, token: bytes) -> int:
        with self._lock:
            return self.calls.count(token)


_tokens = itertools.count()


def new_token() -> bytes:
    return f"token-{next(_tokens)}".encode()


def make_info(activity_type: str, **overrides: Any) -> dict:
    info = {
        "activity_id": "act-1",
        "activity_type": activity_type,
        "attempt": 3,
        "workflow_id": "wf-1",
        "workflow_run_id": "run-1",
        "workflow_type": "MyWorkflow",
        "workflow_namespace": "default",
        "task_queue": "cpu-task-queue",
        "heartbeat_timeout": 30.0,
        "schedule_to_close_timeout": None,
        "start_to_close_timeout": 60.0,
        "scheduled_time": 1_700_000_000.0,
        "current_attempt_scheduled_time": 1_700_000_010.0,
        "started_time": 1_700_000_011.5,
        "heartbeat_details": [],
        "is_local": False,
        "retry_policy": {
            "initial_interval": 1.0,
            "backoff_coefficient": 2.0,
            "maximum_interval": 10.0,
            "maximum_attempts": 5,
            "non_retryable_error_types": ["Fatal"],
        },
    }
    info.update(overrides)
    return info


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def bridge_factory(recorder: Recorder) -> Iterator[Callable[..., ActivityBridge]]:
    bridges: list[ActivityBridge] = []

    def make(activities: list[Callable], **kwargs: Any) -> ActivityBridge:
        bridge = ActivityBridge(
            activities,
            namespace="default",
            task_queue="cpu-task-queue",
            complete=recorder.complete,
            heartbeat=recorder.heartbeat,
            **kwargs,
        )
        bridges.append(bridge)
        return bridge

    yield make
    for bridge in bridges:
        bridge.close()


def run(
    bridge: ActivityBridge, recorder: Recorder, activity_type: str, args: list, **info: Any
) -> dict:
    token = new_token()
    bridge.start(token, activity_type, args, make_info(activity_type, **info))
    outcome = recorder.wait(token)
    assert recorder.count(token) == 1
    return outcome


def converter_json(value: Any) -> Any:
    """What temporalio's Pydantic converter puts in the json/plain payload, decoded."""
    [payload] = pydantic_data_converter.payload_converter.to_payloads([value])
    assert payload.metadata["encoding"] == b"json/plain"
    return json.loads(payload.data)


def failure_of(outcome: dict, key: str = "failure") -> Failure:
    assert set(outcome) == {key}, outcome
    return Failure.FromString(outcome[key])


# --------------------------------------------------------------------------- activities


def _check_args(user: User, outer: Outer, n: int, d: dict[str, float]) -> dict:
    assert isinstance(user, User)
    assert user.password.get_secret_value() == "s3cret"
    assert isinstance(outer, Outer) and isinstance(outer.inner, Inner)
    assert isinstance(outer.items[0], Inner) and outer.items[0].label == "two"
    assert isinstance(n, int) and isinstance(d["a"], float)
    return {"user": user, "outer": outer, "n": n * 2, "d": d}


@activity.defn
async def echo_async(user: User, outer: Outer, n: int, d: dict[str, float]) -> dict:
    return _check_args(user, outer, n, d)


@activity.defn
def echo_sync(user: User, outer: Outer, n: int, d: dict[str, float]) -> dict:
    return _check_args(user, outer, n, d)


@activity.defn
async def user_async(user: User) -> User:
    return user


@activity.defn
def revealed_sync(user: RevealedUser) -> RevealedUser:
    return user


@activity.defn
def untyped_sync(a, b):  # deliberately unannotated: raw values pass through
    return {"a_type": type(a).__name__, "b": b}


@activity.defn
async def optional_async(value: Inner | None, items: list[int]) -> list[int]:
    return [value.x if value else -1, *items]


# --------------------------------------------------------------------------- 1. conversion


@pytest.mark.parametrize("name", ["echo_async", "echo_sync"])
def test_model_dataclass_primitive_dict_args(
    bridge_factory: Callable[..., ActivityBridge], recorder: Recorder, name: str
) -> None:
    bridge = bridge_factory([echo_async, echo_sync])
    outcome = run(bridge, recorder, name, [USER_IN, OUTER_IN, 21, {"a": 1}])
    expected = _check_args(User(**USER_IN), Outer(Inner(1), [Inner(2, "two")]), 21, {"a": 1.0})
    assert outcome == {"result": converter_json(expected)}
    # The Pydantic converter masks SecretStr on output; so do we.
    assert outcome["result"]["user"]["password"] == "**********"


def test_result_json_is_byte_identical_to_pydantic_converter(
    bridge_factory: Callable[..., ActivityBridge], recorder: Recorder
) -> None:
    bridge = bridge_factory([user_async, revealed_sync])
    outcome = run(bridge, recorder, "user_async", [{**USER_IN, "name": "Ünïcode"}])
    [payload] = pydantic_data_converter.payload_converter.to_payloads(
        [User(**{**USER_IN, "name": "Ünïcode"})]
    )
    compact = json.dumps(outcome["result"], separators=(",", ":"), ensure_ascii=False)
    assert compact.encode() == payload.data

    outcome = run(bridge, recorder, "revealed_sync", [{"name": "x", "password": "pw"}])
    assert outcome == {"result": {"name": "x", "password": "pw"}}
    assert outcome["result"] == converter_json(RevealedUser(name="x", password="pw"))


def text(value: Any) -> bytes:
    """A `json/plain` argument as Rust hands it over: the payload's JSON text."""
    return pydantic_core.to_json(value)


@pytest.mark.parametrize("name", ["echo_async", "echo_sync"])
def test_json_text_args_parse_straight_into_the_types(
    bridge_factory: Callable[..., ActivityBridge], recorder: Recorder, name: str
) -> None:
    bridge = bridge_factory([echo_async, echo_sync])
    token = new_token()
    args = [text(USER_IN), text(OUTER_IN), text(21), b'{"a": 1}']
    bridge.start(token, name, args, make_info(name))
    expected = _check_args(User(**USER_IN), Outer(Inner(1), [Inner(2, "two")]), 21, {"a": 1.0})
    assert recorder.wait(token) == {"result": converter_json(expected)}
    # The result goes back as the JSON text the Pydantic converter writes, byte for byte.
    [payload] = pydantic_data_converter.payload_converter.to_payloads([expected])
    reported = recorder.reported[token]
    assert reported["result_json"] == payload.data and reported["result_value"] == expected

    failure = failure_of(run(bridge, recorder, name, [text(USER_IN), b"{}", text(21), b"{}"]))
    assert failure.message == "Failed decoding arguments"


def test_json_text_args_without_hints_are_plain_values(
    bridge_factory: Callable[..., ActivityBridge], recorder: Recorder
) -> None:
    @activity.defn
    def with_default(a: Inner, b: int = 2) -> str:
        return type(a).__name__

    bridge = bridge_factory([untyped_sync, with_default, dynamic_sync])
    assert run(bridge, recorder, "untyped_sync", [b'{"k": 1}', b"[1, 2.5]"]) == {
        "result": {"a_type": "dict", "b": [1, 2.5]}
    }
    # A count mismatch leaves every argument untyped, as in temporalio.
    assert run(bridge, recorder, "with_default", [b'{"x": 1}']) == {"result": "dict"}
    assert run(bridge, recorder, "with_default", [b'{"x": 1}', b"3"]) == {"result": "Inner"}
    token = new_token()
    data = rb'{"k": [1, 2.5], "z": "\u00c5"}'
    bridge.start(token, "anything", [data, None, "s"], make_info("anything"))
    assert recorder.wait(token) == {
        "result": {"type": "anything", "args": [{"k": [1, 2.5], "z": "Å"}, None, "s"]}
    }


def test_results_without_json_text_fail_as_before(
    bridge_factory: Callable[..., ActivityBridge], recorder: Recorder
) -> None:
    @activity.defn
    def opaque() -> Any:
        return object()

    @activity.defn
    def nothing() -> None:
        return None

    bridge = bridge_factory([opaque, nothing])
    with pytest.raises(pydantic_core.PydanticSerializationError) as err:
        pydantic_core.to_jsonable_python(object())
    assert failure_of(run(bridge, recorder, "opaque", [])).message == str(err.value)
    # None stays binary/null (Rust writes it for {"result": None}).
    assert run(bridge, recorder, "nothing", []) == {"result": None}


def test_unannotated_optional_and_bytes(
    bridge_factory: Callable[..., ActivityBridge], recorder: Recorder
) -> None:
    @activity.defn
    def raw_bytes() -> bytes:
        return b"\x00raw"

    bridge = bridge_factory([untyped_sync, optional_async, raw_bytes])
    assert run(bridge, recorder, "untyped_sync", [{"k": 1}, [1]]) == {
        "result": {"a_type": "dict", "b": [1]}
    }
    assert run(bridge, recorder, "optional_async", [None, [1, 2]]) == {"result": [-1, 1, 2]}
    assert run(bridge, recorder, "optional_async", [{"x": 5}, []]) == {"result": [5]}
    outcome = run(bridge, recorder, "raw_bytes", [])
    payload = temporalio.api.common.v1.Payload.FromString(outcome["result_payload"])
    assert payload.metadata["encoding"] == b"binary/plain" and payload.data == b"\x00raw"


def test_bad_argument_is_a_failure(
    bridge_factory: Callable[..., ActivityBridge], recorder: Recorder
) -> None:
    bridge = bridge_factory([user_async])
    failure = failure_of(run(bridge, recorder, "user_async", [{"name": "no password"}]))
    assert failure.message == "Failed decoding arguments"
    assert "password" in failure.cause.message


# --------------------------------------------------------------------------- 2. context


def _context_snapshot() -> dict:
    info = activity.info()
    return {
        "in_activity": activity.in_activity(),
        "activity_id": info.activity_id,
        "workflow_id": info.workflow_id,
        "workflow_run_id": info.workflow_run_id,
        "attempt": info.attempt,
        "task_token": info.task_token.decode(),
        "namespace": info.namespace,
        "heartbeat_timeout": info.heartbeat_timeout.total_seconds(),
        "started": info.started_time.timestamp(),
        "max_attempts": info.retry_policy.maximum_attempts,
        "details": list(info.heartbeat_details),
        "cancelled": activity.is_cancelled(),
        "shutdown": activity.is_worker_shutdown(),
        "converter": type(activity.payload_converter()).__name__,
    }


@activity.defn
async def info_async(n: int) -> dict:
    for i in range(n):
        activity.heartbeat(f"step-{i}", {"i": i})
    activity.logger.info("hello from async")
    return _context_snapshot()


@activity.defn
def info_sync(n: int) -> dict:
    for i in range(n):
        activity.heartbeat(f"step-{i}", {"i": i})
    activity.logger.info("hello from sync")
    return _context_snapshot()


@pytest.mark.parametrize("name", ["info_async", "info_sync"])
def test_info_heartbeat_and_logger(
    bridge_factory: Callable[..., ActivityBridge],
    recorder: Recorder,
    caplog: pytest.LogCaptureFixture,
    name: str,
) -> None:
    caplog.set_level(logging.INFO, logger="temporalio.activity")
    bridge = bridge_factory([info_async, info_sync])
    token = new_token()
    bridge.start(token, name, [5], make_info(name, heartbeat_details=["prev"]))
    result = recorder.wait(token)["result"]
    assert result == {
        "in_activity": True,
        "activity_id": "act-1",
        "workflow_id": "wf-1",
        "workflow_run_id": "run-1",
        "attempt": 3,
        "task_token": token.decode(),
        "namespace": "default",
        "heartbeat_timeout": 30.0,
        "started": 1_700_000_011.5,
        "max_attempts": 5,
        "details": ["prev"],
        "cancelled": False,
        "shutdown": False,
        "converter": "_TemporalTransferTypePayloadConverter",
    }
    assert recorder.heartbeats[token] == [[f"step-{i}", {"i": i}] for i in range(5)]
    assert not activity.in_activity()
    [record] = [r for r in caplog.records if r.getMessage().startswith("hello from")]
    assert record.temporal_activity["activity_id"] == "act-1"  # type: ignore[attr-defined]
    assert record.temporal_activity["workflow_id"] == "wf-1"  # type: ignore[attr-defined]


def test_client_only_in_async_activities(
    bridge_factory: Callable[..., ActivityBridge], recorder: Recorder
) -> None:
    sentinel = object()

    @activity.defn
    async def client_async() -> bool:
        return activity.client() is sentinel

    @activity.defn
    def client_sync() -> str:
        with pytest.raises(RuntimeError, match="only available in `async def`"):
            activity.client()
        return "ok"

    bridge = bridge_factory([client_async, client_sync], client=sentinel)
    assert run(bridge, recorder, "client_async", []) == {"result": True}
    assert run(bridge, recorder, "client_sync", []) == {"result": "ok"}


def test_complete_async(bridge_factory: Callable[..., ActivityBridge], recorder: Recorder) -> None:
    @activity.defn
    async def later() -> None:
        activity.raise_complete_async()

    bridge = bridge_factory([later])
    assert run(bridge, recorder, "later", []) == {"will_complete_async": True}


# --------------------------------------------------------------------------- 3. failures


class MyBoom(Exception):
    pass


@activity.defn
async def boom_async() -> None:
    raise MyBoom("boom async")


@activity.defn
def boom_sync() -> None:
    raise MyBoom("boom sync")


@activity.defn
def fatal_sync() -> None:
    raise temporalio.exceptions.ApplicationError("x", {"why": 1}, type="MyType", non_retryable=True)


@activity.defn
async def fatal_async() -> None:
    raise temporalio.exceptions.ApplicationError("x", type="MyType", non_retryable=True)


@pytest.mark.parametrize("name", ["boom_async", "boom_sync"])
def test_exception_becomes_failure(
    bridge_factory: Callable[..., ActivityBridge], recorder: Recorder, name: str
) -> None:
    bridge = bridge_factory([boom_async, boom_sync])
    failure = failure_of(run(bridge, recorder, name, []))
    assert failure.message == f"boom {name.split('_')[1]}"
    assert failure.stack_trace and name in failure.stack_trace
    assert failure.application_failure_info.type == "MyBoom"
    assert not failure.application_failure_info.non_retryable


@pytest.mark.parametrize("name", ["fatal_async", "fatal_sync"])
def test_application_error_non_retryable(
    bridge_factory: Callable[..., ActivityBridge], recorder: Recorder, name: str
) -> None:
    bridge = bridge_factory([fatal_async, fatal_sync])
    failure = failure_of(run(bridge, recorder, name, []))
    assert failure.message == "x"
    assert failure.application_failure_info.type == "MyType"
    assert failure.application_failure_info.non_retryable
    if name == "fatal_sync":
        details = failure.application_failure_info.details.payloads
        assert json.loads(details[0].data) == {"why": 1}


# --------------------------------------------------------------------------- 4. cancellation


class Probe:
    """Lets a test wait until an activity runs and see what it observed."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.seen: list[str] = []


def test_cancel_heartbeating_async_activity(
    bridge_factory: Callable[..., ActivityBridge], recorder: Recorder
) -> None:
    probe = Probe()

    @activity.defn
    async def beating() -> None:
        try:
            for i in itertools.count():
                activity.heartbeat(i)
                probe.started.set()
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            probe.seen.append(f"CancelledError cancelled={activity.is_cancelled()}")
            raise

    bridge = bridge_factory([beating])
    token = new_token()
    bridge.start(token, "beating", [], make_info("beating"))
    assert probe.started.wait(TIMEOUT)
    bridge.cancel(token, CANCEL)
    failure = failure_of(recorder.wait(token), "cancelled")
    assert failure.HasField("canceled_failure_info")
    assert probe.seen == ["CancelledError cancelled=True"]
    assert bridge.running_count() == 0
    bridge.cancel(token, CANCEL)  # finished token: ignored
    bridge.cancel(b"unknown", CANCEL)
    time.sleep(0.05)
    assert recorder.count(token) == 1


def test_cancel_sync_activity_raises_in_thread(
    bridge_factory: Callable[..., ActivityBridge], recorder: Recorder
) -> None:
    """Default sync activities get CancelledError raised in their thread, like temporalio."""
    probe = Probe()

    @activity.defn
    def spinning() -> str:
        try:
            while True:
                probe.started.set()
                activity.heartbeat()
                time.sleep(0.005)
        except temporalio.exceptions.CancelledError:
            probe.seen.append(f"CancelledError cancelled={activity.is_cancelled()}")
            raise

    bridge = bridge_factory([spinning])
    token = new_token()
    bridge.start(token, "spinning", [], make_info("spinning"))
    assert probe.started.wait(TIMEOUT)
    bridge.cancel(token, CANCEL)
    assert failure_of(recorder.wait(token), "cancelled").HasField("canceled_failure_info")
    assert probe.seen == ["CancelledError cancelled=True"]


def test_cancel_sync_activity_polling_is_cancelled(
    bridge_factory: Callable[..., ActivityBridge], recorder: Recorder
) -> None:
    """With no_thread_cancel_exception the activity decides: raise (cancelled) or return."""
    probe = Probe()

    @activity.defn(no_thread_cancel_exception=True)
    def polling(mode: str) -> str:
        probe.started.set()
        while not activity.is_cancelled():
            time.sleep(0.005)
        probe.seen.append(mode)
        if mode == "raise":
            raise temporalio.exceptions.CancelledError("stopping")
        return "stopped cleanly"

    bridge = bridge_factory([polling])
    for mode, expected_key in [("raise", "cancelled"), ("return", "result")]:
        probe.started.clear()
        token = new_token()
        bridge.start(token, "polling", [mode], make_info("polling"))
        assert probe.started.wait(TIMEOUT)
        bridge.cancel(token, CANCEL)
        outcome = recorder.wait(token)
        assert set(outcome) == {expected_key}
    assert probe.seen == ["raise", "return"]
    assert outcome == {"result": "stopped cleanly"}


def test_shielded_sync_activity_is_cancelled_after_the_shield(
    bridge_factory: Callable[..., ActivityBridge], recorder: Recorder
) -> None:
    probe = Probe()

    @activity.defn
    def shielded() -> str:
        with activity.shield_thread_cancel_exception():
            probe.started.set()
            activity.wait_for_cancelled_sync(TIMEOUT)
            time.sleep(0.02)
            probe.seen.append("shield finished")
        probe.seen.append("after shield")  # never reached
        return "unreachable"

    bridge = bridge_factory([shielded])
    token = new_token()
    bridge.start(token, "shielded", [], make_info("shielded"))
    assert probe.started.wait(TIMEOUT)
    bridge.cancel(token, CANCEL)
    failure_of(recorder.wait(token), "cancelled")
    assert probe.seen == ["shield finished"]


def test_cancel_reasons_follow_temporalio(
    bridge_factory: Callable[..., ActivityBridge], recorder: Recorder
) -> None:
    probe = Probe()

    @activity.defn
    async def waiting() -> None:
        probe.started.set()
        await activity.wait_for_cancelled()

    bridge = bridge_factory([waiting])
    results = {}
    flags = {
        "PAUSED": {"paused": True},
        "TIMED_OUT": {"timed_out": True},
        "WorkerShutdown": {"worker_shutdown": True},
    }
    for reason in ["PAUSED", "TIMED_OUT", "WorkerShutdown"]:
        probe.started.clear()
        token = new_token()
        bridge.start(token, "waiting", [], make_info("waiting"))
        assert probe.started.wait(TIMEOUT)
        bridge.cancel(token, flags[reason])
        results[reason] = recorder.wait(token)
    assert failure_of(results["PAUSED"]).application_failure_info.type == "ActivityPause"
    # Not a cancel request: the asyncio.CancelledError is reported as a plain failure.
    assert failure_of(results["TIMED_OUT"]).application_failure_info.type == "CancelledError"
    assert failure_of(results["WorkerShutdown"], "cancelled").HasField("canceled_failure_info")


def test_cancel_races_complete_exactly_once(
    bridge_factory: Callable[..., ActivityBridge], recorder: Recorder
) -> None:
    @activity.defn
    async def quick_async(i: int) -> int:
        await asyncio.sleep(0)
        return i

    @activity.defn
    def quick_sync(i: int) -> int:
        return i

    bridge = bridge_factory([quick_async, quick_sync], max_threads=4)
    tokens = []
    for i in range(200):
        token = new_token()
        name = "quick_async" if i % 2 else "quick_sync"
        bridge.start(token, name, [i], make_info(name))
        if i % 3:
            bridge.cancel(token, CANCEL)
        tokens.append(token)
    for token in tokens:
        assert set(recorder.wait(token)) & {"result", "cancelled"}
    time.sleep(0.1)
    assert sorted(recorder.calls) == sorted(tokens)
    assert bridge.running_count() == 0


def test_heartbeat_error_fails_the_activity(
    bridge_factory: Callable[..., ActivityBridge], recorder: Recorder
) -> None:
    @activity.defn
    async def bad_heartbeat() -> None:
        activity.heartbeat(object())  # not JSON-serializable
        await asyncio.sleep(TIMEOUT)

    bridge = bridge_factory([bad_heartbeat])
    failure = failure_of(run(bridge, recorder, "bad_heartbeat", []))
    assert failure.application_failure_info.type == "PydanticSerializationError"


# --------------------------------------------------------------------------- 5. unknown type


def test_unknown_activity_type(
    bridge_factory: Callable[..., ActivityBridge], recorder: Recorder
) -> None:
    bridge = bridge_factory([echo_async, echo_sync])
    assert bridge.activity_types == ["echo_async", "echo_sync"]
    failure = failure_of(run(bridge, recorder, "nope", []))
    assert "Activity function nope for workflow wf-1 is not registered" in failure.message
    assert failure.message.endswith("available activities: echo_async, echo_sync")
    assert failure.application_failure_info.type == "NotFoundError"


@activity.defn(dynamic=True)
def dynamic_sync(args: Sequence[temporalio.common.RawValue]) -> dict:
    converter = activity.payload_converter()
    return {
        "type": activity.info().activity_type,
        "args": [converter.from_payload(a.payload) for a in args],
    }


def test_dynamic_activity_gets_unknown_types(
    bridge_factory: Callable[..., ActivityBridge], recorder: Recorder
) -> None:
    bridge = bridge_factory([echo_sync, dynamic_sync])
    assert bridge.activity_types == ["echo_sync"]
    assert run(bridge, recorder, "anything", [{"k": [1]}, "s", None]) == {
        "result": {"type": "anything", "args": [{"k": [1]}, "s", None]}
    }


def test_registration_errors() -> None:
    def plain() -> None: ...

    kwargs: dict[str, Any] = {
        "namespace": "default",
        "task_queue": "q",
        "complete": lambda *a: None,
        "heartbeat": lambda *a: None,
    }
    with pytest.raises(TypeError, match="missing attributes"):
        ActivityBridge([plain], **kwargs)
    with pytest.raises(ValueError, match="More than one activity named echo_sync"):
        ActivityBridge([echo_sync, echo_sync], **kwargs)


# --------------------------------------------------------------------------- 6. shutdown


def test_shutdown_waits_for_short_activities(
    bridge_factory: Callable[..., ActivityBridge], recorder: Recorder
) -> None:
    """`begin_shutdown` (Rust's first step) sets the worker-shutdown events and lets
    running activities finish; tasks started after it fail at once."""
    probe = Probe()

    @activity.defn
    async def short_async() -> bool:
        probe.started.set()
        await activity.wait_for_worker_shutdown()
        await asyncio.sleep(0.2)
        return activity.is_worker_shutdown()

    @activity.defn
    def short_sync() -> bool:
        activity.wait_for_worker_shutdown_sync(TIMEOUT)
        time.sleep(0.2)
        return activity.is_worker_shutdown()

    bridge = bridge_factory([short_async, short_sync])
    tokens = [new_token(), new_token()]
    bridge.start(tokens[0], "short_async", [], make_info("short_async"))
    bridge.start(tokens[1], "short_sync", [], make_info("short_sync"))
    assert probe.started.wait(TIMEOUT)
    began = time.monotonic()
    bridge.begin_shutdown()
    for token in tokens:
        recorder.wait(token)
    assert time.monotonic() - began < 4.0
    assert [recorder.outcomes.get(t) for t in tokens] == [{"result": True}] * 2
    late = new_token()
    bridge.start(late, "short_async", [], make_info("short_async"))
    assert failure_of(recorder.wait(late)).message == "Worker shutting down"


def test_shutdown_cancel_reports_long_activities_cancelled(
    bridge_factory: Callable[..., ActivityBridge], recorder: Recorder
) -> None:
    """After its grace period Rust cancels what still runs with `worker_shutdown` (the
    timing is Rust's, tested by `drain_*` in activities.rs): reported as cancelled."""
    probe = Probe()

    @activity.defn
    async def long_async() -> None:
        probe.started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            probe.seen.append(f"async shutdown={activity.is_worker_shutdown()}")
            raise

    @activity.defn
    def long_sync() -> None:
        while True:
            probe.seen.append(f"sync shutdown={activity.is_worker_shutdown()}")
            time.sleep(0.02)

    bridge = bridge_factory([long_async, long_sync])
    tokens = [new_token(), new_token()]
    bridge.start(tokens[0], "long_async", [], make_info("long_async"))
    bridge.start(tokens[1], "long_sync", [], make_info("long_sync"))
    assert probe.started.wait(TIMEOUT)
    bridge.begin_shutdown()
    time.sleep(0.3)
    for token in tokens:
        bridge.cancel(token, {"worker_shutdown": True})
    for token in tokens:
        failure_of(recorder.wait(token), "cancelled")
    assert "async shutdown=True" in probe.seen and "sync shutdown=True" in probe.seen
    assert bridge.running_count() == 0


def test_a_refused_reply_is_dropped_once(
    bridge_factory: Callable[..., ActivityBridge], recorder: Recorder
) -> None:
    """An activity that ignored its cancel, failed by Rust meanwhile: its late outcome is
    offered once to the reply, which refuses it (`ActivityReply` returns False)."""
    release = threading.Event()
    answers: list[dict] = []

    def refusing_reply(outcome: dict) -> bool:
        answers.append(as_sent(outcome))
        return False

    @activity.defn(no_thread_cancel_exception=True)
    def stubborn() -> str:
        release.wait(TIMEOUT)
        return "too late"

    bridge = bridge_factory([stubborn])
    token = new_token()
    bridge.start(token, "stubborn", [], make_info("stubborn"), refusing_reply)
    bridge.begin_shutdown()
    bridge.cancel(token, {"worker_shutdown": True})
    release.set()
    deadline = time.monotonic() + TIMEOUT
    while bridge.running_count() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert answers == [{"result": "too late"}]
    assert recorder.count(token) == 0


# --------------------------------------------------------------------------- 7. bounded pool


def test_sync_pool_is_bounded(
    bridge_factory: Callable[..., ActivityBridge], recorder: Recorder
) -> None:
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    @activity.defn
    def blocking(i: int) -> int:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.15)
        with lock:
            state["now"] -= 1
        return i

    bridge = bridge_factory([blocking], max_threads=2)
    tokens = [new_token() for _ in range(4)]
    began = time.monotonic()
    for i, token in enumerate(tokens):
        bridge.start(token, "blocking", [i], make_info("blocking"))
    assert time.monotonic() - began < 0.1  # start() never waits for the pool
    assert [recorder.wait(t) for t in tokens] == [{"result": i} for i in range(4)]
    assert state["max"] == 2


# --------------------------------------------------------------------------- custom converter


class MarkerCodec(temporalio.converter.PayloadCodec):
    """Wraps each payload in a `binary/marked` payload, like an encryption codec would."""

    async def encode(self, payloads: Any) -> list[temporalio.api.common.v1.Payload]:
        return [
            temporalio.api.common.v1.Payload(
                metadata={"encoding": b"binary/marked"}, data=p.SerializeToString()
            )
            for p in payloads
        ]

    async def decode(self, payloads: Any) -> list[temporalio.api.common.v1.Payload]:
        return [
            temporalio.api.common.v1.Payload.FromString(p.data)
            if p.metadata.get("encoding") == b"binary/marked"
            else p
            for p in payloads
        ]


MARKED = dataclasses.replace(pydantic_data_converter, payload_codec=MarkerCodec())


def encode_args(*values: Any) -> list[bytes]:
    async def go() -> list[bytes]:
        return [p.SerializeToString() for p in await MARKED.encode(list(values))]

    return asyncio.run(go())


def decode_payload(data: bytes) -> Any:
    async def go() -> Any:
        payload = temporalio.api.common.v1.Payload.FromString(data)
        assert payload.metadata["encoding"] == b"binary/marked"
        return (await MARKED.decode([payload]))[0]

    return asyncio.run(go())


@pytest.mark.parametrize("name", ["echo_async", "echo_sync"])
def test_custom_converter_path(
    bridge_factory: Callable[..., ActivityBridge], recorder: Recorder, name: str
) -> None:
    bridge = bridge_factory([echo_async, echo_sync, info_sync, boom_sync], data_converter=MARKED)
    # A plain dict carries the secret: a SecretStr model encoded by the Pydantic converter
    # arrives as "**********" (temporalio masks it on the way out).
    args = encode_args(USER_IN, Outer(Inner(1), [Inner(2, "two")]), 21, {"a": 1})
    outcome = run(bridge, recorder, name, args)
    expected = converter_json(
        _check_args(User(**USER_IN), Outer(Inner(1), [Inner(2, "two")]), 21, {"a": 1.0})
    )
    assert decode_payload(outcome["result_payload"]) == expected

    token = new_token()
    info = make_info("info_sync", heartbeat_details=encode_args("prev"))
    bridge.start(token, "info_sync", encode_args(2), info)
    result = decode_payload(recorder.wait(token)["result_payload"])
    assert result["details"] == ["prev"]
    sent = [[decode_payload(d) for d in beat] for beat in recorder.heartbeats[token]]
    assert sent[-1] == ["step-1", {"i": 1}]

    failure = failure_of(run(bridge, recorder, "boom_sync", []))
    assert failure.application_failure_info.type == "MyBoom"

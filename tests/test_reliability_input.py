"""Bad input, thrown at one worker process: random JSON, wrong types, huge and deeply nested
payloads, integers beyond 64 bits, lone surrogates and invalid UTF-8 - at `start_action`, at
`signal_action` and at an activity's payload decoding (raw payloads injected with the official
temporalio client).

Every case ends in a clear error (ActionInputError, PayloadError, another ValueError naming
the problem, Temporal's size limits, or a failed activity whose message is about decoding) or
in an exact round trip: never a crash, a hang or a silently changed value. After the barrage
the same worker process still runs a normal action.

Property-based (hypothesis), bounded: tens of examples per property, no deadlines.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydantic_core
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.common import RawValue

from nomad_actions import (
    ActionFailedError,
    ActionInputError,
    PayloadError,
    RPCError,
    configure,
    get_action_result,
    get_action_result_async,
    signal_action,
    start_action,
)
from nomad_actions.config import reset_config
from nomad_actions.testing import DevServer

from .test_reliability_helpers import (
    FAULT_QUEUE,
    WorkerProcess,
    Workers,
    fault_action,
    history,
    poll,
    workers_for,
)

ECHO = fault_action("echo_action")
RESULT_TIMEOUT = 180.0
#: Most containers a value may nest (serde_json's decoding limit, see src/payload.rs); the
#: echo input wraps the payload in one dict.
MAX_DEPTH = 127

pytestmark = pytest.mark.timeout(600)

# Hypothesis caches what it learns under ./.hypothesis; keep the working tree clean.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "nomad-actions-hypothesis")

PROPERTY = settings(
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def input_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    log = tmp_path_factory.mktemp("input-server") / "temporal.log"
    with DevServer(log_path=log) as server:
        configure(host=server.host, port=server.port)
        try:
            yield server
        finally:
            reset_config()


@pytest.fixture(scope="module")
def pool(input_server: DevServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    yield from workers_for(input_server, tmp_path_factory.mktemp("input-workers"))


@pytest.fixture(scope="module")
def worker(pool: Workers) -> WorkerProcess:
    """The one worker process that takes the whole barrage."""
    return pool.start()


@pytest.fixture(autouse=True)
def _worker_survives(worker: WorkerProcess) -> Iterator[None]:
    yield
    assert worker.alive(), worker.report()
    assert "panicked" not in worker.log(), worker.report()


def _user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def _deep(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = [value]
    return value


def _results(wids: list[str]) -> list[Any]:
    """The results of many actions, fetched concurrently."""

    async def gather() -> list[Any]:
        return await asyncio.gather(
            *(get_action_result_async(wid, timeout=RESULT_TIMEOUT) for wid in wids)
        )

    return asyncio.run(gather())


# ---------------------------------------------------------------------- strategies

#: JSON values that every part of the engine must carry unchanged.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)

#: Values with no (exact) JSON form, each alone or inside JSON.
wild_scalars = (
    st.integers(min_value=2**64, max_value=2**300)
    | st.integers(min_value=-(2**300), max_value=-(2**63) - 1)
    | st.text(alphabet=st.characters(categories=["Cs"]), min_size=1, max_size=3)
    | st.binary(min_size=1, max_size=8)
    | st.just(float("nan"))
    | st.just(object())
    | st.sets(st.integers(-5, 5), max_size=3)
    | st.integers(min_value=MAX_DEPTH - 3, max_value=MAX_DEPTH + 3).map(_deep)
    | st.sampled_from([1000, 100_000]).map(_deep)
)
wild_values = st.recursive(
    wild_scalars | json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)


def _as_json(value: Any) -> Any:
    """`value` as JSON, read back: what the client sends (a set becomes a list; NaN has no
    JSON form, and becomes null, as in Pydantic's JSON mode)."""
    return json.loads(pydantic_core.to_json(value, inf_nan_mode="null"))


def _clear(err: BaseException) -> str:
    """An error's message, asserting it is a clear one."""
    message = str(err)
    assert message.strip(), repr(err)
    assert "failed to extract" not in message, message  # pyo3's wrapper, hiding the reason
    return message


# ---------------------------------------------------------------------- start_action


def test_start_action_with_random_payloads() -> None:
    """Valid JSON always starts and comes back unchanged; anything else is refused with a
    clear ValueError (PayloadError from the engine, or Pydantic's serializer) before anything
    is sent."""
    started: list[tuple[str, Any]] = []
    refused: list[str] = []

    @PROPERTY
    @example(kind_value=("json", {"a": [1, 2.5, None, True, "x"]}))
    @example(kind_value=("wild", {"a": [2**70]}))
    @given(
        kind_value=st.tuples(st.just("json"), json_values) | st.tuples(st.just("wild"), wild_values)
    )
    def start(kind_value: tuple[str, Any]) -> None:
        kind, payload = kind_value
        begin = time.monotonic()
        try:
            wid = start_action(ECHO, {"user_id": _user(), "payload": payload})
        except ValueError as err:  # PayloadError, ActionInputError, Pydantic's errors
            assert kind == "wild", f"valid JSON refused: {payload!r}: {err}"
            refused.append(_clear(err))
        else:
            started.append((wid, payload))
        assert time.monotonic() - begin < 60

    start()
    assert started and refused
    results = _results([wid for wid, _ in started])
    for (wid, payload), result in zip(started, results, strict=True):
        # Exactly what temporalio's Pydantic converter would carry (a set as a list, NaN
        # as null, as its JSON has it).
        assert result.payload == _as_json(payload), wid
        assert result.pushed == []


def test_start_action_with_wrong_types(pool: Workers) -> None:
    """Input of the wrong shape or types is an ActionInputError naming the action."""
    keys = st.sampled_from(["user_id", "payload", "signals", "other"])
    refused = 0

    @PROPERTY
    @example(data=None)
    @example(data={"user_id": 7, "payload": 1})
    @given(data=json_values | st.dictionaries(keys, json_values, max_size=4))
    def start(data: Any) -> None:
        nonlocal refused
        try:
            wid = start_action(ECHO, data)
        except ActionInputError as err:
            assert ECHO in _clear(err)
            refused += 1
        else:  # the random data happened to be valid input; teardown ends it
            pool.track(wid)

    start()
    assert refused


@pytest.mark.parametrize(
    ("payload", "error", "message"),
    [
        ("x" * (5 * 1024 * 1024), RPCError, "larger than max"),
        ("x" * (3 * 1024 * 1024), RPCError, "Blob data size exceeds limit"),
        (_deep(MAX_DEPTH), PayloadError, f"nests deeper than {MAX_DEPTH} levels"),
        (_deep(1000), ValueError, "depth"),
        (_deep(100_000), ValueError, "depth"),
        (2**70, PayloadError, "integer of 71 bits is out of range"),
        ("\ud800", PayloadError, "lone surrogate"),
        (b"\xff\xfe", ValueError, "utf-8"),
    ],
    ids=[
        "5MB",
        "3MB",
        "depth-127",
        "depth-1000",
        "depth-100000",
        "int-71-bits",
        "surrogate",
        "bytes",
    ],
)
def test_start_and_signal_refuse_oversized_and_unencodable_payloads(
    payload: Any, error: type[BaseException], message: str
) -> None:
    begin = time.monotonic()
    with pytest.raises(error) as info:
        start_action(ECHO, {"user_id": _user(), "payload": payload})
    assert message in _clear(info.value)
    wid = start_action(ECHO, {"user_id": _user(), "signals": 1})
    with pytest.raises(error) as info:
        signal_action(wid, "push", payload if error is not PayloadError else [payload])
    assert message in _clear(info.value)
    assert time.monotonic() - begin < 120  # a clear error, never a hang
    signal_action(wid, "push", "fine")
    assert get_action_result(wid, timeout=RESULT_TIMEOUT).pushed == ["fine"]


def test_deepest_payload_that_fits_round_trips() -> None:
    payload = _deep(MAX_DEPTH - 1)  # inside the input dict: exactly MAX_DEPTH containers
    wid = start_action(ECHO, {"user_id": _user(), "payload": payload})
    assert get_action_result(wid, timeout=RESULT_TIMEOUT).payload == payload


# ---------------------------------------------------------------------- signal_action


def _depth(value: Any) -> int:
    """How many lists and dicts nest in the JSON value `value` (a scalar: 0)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, level + 1)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


def test_signal_action_with_random_payloads() -> None:
    """Every signal the client accepts reaches the workflow unchanged and in order; the
    others are refused on the client with a clear error.

    The echo activity gets the signals inside `{"pushed": [...]}`, two levels deeper: values
    that the client accepts but that nest more than MAX_DEPTH - 2 levels go to a second
    workflow, whose activity must then fail with a clear decoding error."""
    shallow = start_action(ECHO, {"user_id": _user(), "signals": -1})
    deep = start_action(ECHO, {"user_id": _user(), "signals": -1})
    sent: dict[str, list[Any]] = {shallow: [], deep: []}

    @PROPERTY
    @example(value={"k": [1, "two", 3.0]})
    @example(value=_deep(MAX_DEPTH - 1))
    @given(value=(json_values | wild_values).filter(lambda v: v is not None))
    def push(value: Any) -> None:
        try:
            as_json = _as_json(value)
        except ValueError:  # no JSON form at all; the client must refuse it too
            as_json = None
        wid = shallow if as_json is None or _depth(as_json) <= MAX_DEPTH - 2 else deep
        try:
            signal_action(wid, "push", value)
        except ValueError as err:
            _clear(err)
        else:
            sent[wid].append(as_json)

    push()
    for wid in (shallow, deep):
        signal_action(wid, "finish")
    assert (
        sent[shallow] and get_action_result(shallow, timeout=RESULT_TIMEOUT).pushed == sent[shallow]
    )
    assert sent[deep]
    with pytest.raises(ActionFailedError) as info:
        get_action_result(deep, timeout=RESULT_TIMEOUT)
    message = " ".join(info.value.causes)
    assert "Failed decoding arguments of activity" in message and "recursion limit" in message


# ---------------------------------------------------------------------- raw payloads


def _messages(err: BaseException | None) -> str:
    parts = []
    while err is not None:
        parts.append(str(err))
        err = err.__cause__
    return " <- ".join(parts)


def _invalid_utf8_in_string(value: str, junk: bytes) -> bytes:
    return b'{"text": "' + value.encode() + junk + b'"}'


raw_data = (
    st.binary(max_size=48)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.builds(
        _invalid_utf8_in_string,
        st.text(alphabet="abc", max_size=5),
        st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]),
    )
    | st.integers(min_value=2**64, max_value=2**200).map(lambda n: b'{"n": %d}' % n)
    | st.sampled_from([b'"\\ud800"', b"NaN", b"1e400", b'{"a": 1, "a": 2}', b"[1,2,]"])
    | st.integers(min_value=MAX_DEPTH - 2, max_value=MAX_DEPTH + 2).map(
        lambda d: b"[" * d + b"]" * d
    )
)
encodings = st.sampled_from([b"json/plain"] * 6 + [b"json/unknown", b""])


def test_activity_decodes_raw_payloads_or_fails_clearly(input_server: DevServer) -> None:
    """Raw payloads (random bytes, invalid UTF-8, 65-bit integers, deep nesting, unknown
    encodings) reach an activity undecoded by the workflow: the activity either gets exactly
    the JSON value, or fails with a message about decoding its arguments."""
    loop = asyncio.new_event_loop()
    client = loop.run_until_complete(Client.connect(input_server.address))
    runs: list[tuple[WorkflowHandle[Any, Any], bytes, bytes]] = []

    @PROPERTY
    @example(data=b'{"ok": [1, 2.5, "x", null]}', encoding=b"json/plain")
    @example(data=b'"\xff"', encoding=b"json/plain")
    @example(data=b'{"n": 36893488147419103232}', encoding=b"json/plain")
    @example(data=b"[]", encoding=b"binary/encrypted")
    @given(data=raw_data, encoding=encodings)
    def inject(data: bytes, encoding: bytes) -> None:
        metadata = {"encoding": encoding} if encoding else {}
        handle = loop.run_until_complete(
            client.start_workflow(
                "FaultRawEchoWorkflow",
                RawValue(Payload(metadata=metadata, data=data)),
                id=f"raw-{uuid.uuid4()}",
                task_queue=FAULT_QUEUE,
            )
        )
        runs.append((handle, data, encoding))

    try:
        inject()

        async def outcome(handle: WorkflowHandle[Any, Any]) -> tuple[bool, Any]:
            try:
                return True, await asyncio.wait_for(handle.result(), RESULT_TIMEOUT)
            except WorkflowFailureError as err:
                return False, _messages(err)

        async def outcomes_of_all() -> list[tuple[bool, Any]]:
            return await asyncio.gather(*(outcome(h) for h, _, _ in runs))

        outcomes = loop.run_until_complete(outcomes_of_all())
    finally:
        loop.close()
    decoded = 0
    failures: dict[bytes, str] = {}
    for (handle, data, encoding), (ok, value) in zip(runs, outcomes, strict=True):
        if ok:
            assert encoding == b"json/plain", (handle.id, data, encoding)
            assert value == json.loads(data.decode()), (handle.id, data, value)
            decoded += 1
        else:
            assert "Failed decoding arguments of activity" in value, (handle.id, data, value)
            failures[encoding + b" " + data] = value
    assert 0 < decoded < len(runs)
    # A 65-bit integer is refused, not rounded to a float; each failure says why.
    assert (
        "36893488147419103232, out of range" in failures[b'json/plain {"n": 36893488147419103232}']
    )
    assert "unsupported encoding" in failures[b"binary/encrypted []"]
    assert "not valid JSON" in failures[b'json/plain "\xff"']


def test_invalid_utf8_workflow_input_fails_the_workflow_task(
    input_server: DevServer, pool: Workers
) -> None:
    """Invalid UTF-8 in the workflow's own (typed) input: temporalio's converter cannot decode
    it, so the workflow task fails, visibly in the history, and the worker goes on."""

    async def start() -> str:
        client = await Client.connect(input_server.address)
        handle = await client.start_workflow(
            "FaultEchoWorkflow",
            RawValue(Payload(metadata={"encoding": b"json/plain"}, data=b'{"user_id": "\xff"}')),
            id=f"bad-utf8-{uuid.uuid4()}",
            task_queue=FAULT_QUEUE,
        )
        return handle.id

    wid = pool.track(asyncio.run(start()))

    def failed() -> list[str]:
        return [
            e.workflow_task_failed_event_attributes.failure.message
            for e in history(input_server.address, wid)
            if e.HasField("workflow_task_failed_event_attributes")
        ]

    [message, *_] = poll(failed, RESULT_TIMEOUT, "the workflow task to fail", pool.reports)
    assert "Failed decoding arguments" in message, message


def test_invalid_utf8_signal_is_dropped_and_the_workflow_goes_on(input_server: DevServer) -> None:
    """A signal whose payload is not UTF-8 is dropped (temporalio logs it); the workflow
    still takes the next signals and finishes."""
    wid = start_action(ECHO, {"user_id": _user(), "signals": -1})

    async def bad_signal() -> None:
        client = await Client.connect(input_server.address)
        handle = client.get_workflow_handle(wid)
        bad = RawValue(Payload(metadata={"encoding": b"json/plain"}, data=b'"\xff\xfe"'))
        await handle.signal("push", bad)

    asyncio.run(bad_signal())
    signal_action(wid, "push", "after")
    signal_action(wid, "finish")
    assert get_action_result(wid, timeout=RESULT_TIMEOUT).pushed == ["after"]


# ---------------------------------------------------------------------- afterwards


def test_the_same_worker_still_runs_a_normal_action(worker: WorkerProcess, tmp_path: Path) -> None:
    pid = worker.pid
    wid = start_action(ECHO, {"user_id": _user(), "payload": {"after": "the barrage"}})
    assert get_action_result(wid, timeout=RESULT_TIMEOUT).payload == {"after": "the barrage"}
    assert worker.pid == pid and worker.alive()

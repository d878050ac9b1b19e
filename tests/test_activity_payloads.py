"""Activity payloads on the fast path, end to end: JSON text handed to pydantic as bytes.

Our worker serves the activities below on a real dev server; temporalio's official worker
runs the workflow that calls them (unsandboxed, Pydantic converter), so the payloads on both
sides are the ones temporalio writes and reads. What the tests prove: typed arguments are
parsed straight into their types (JSON mode, as temporalio's converter does: strict models
take ISO datetimes and enum values), unannotated and dynamic activities get what they got
before, results are sent as the JSON text `pydantic_core.to_json` writes, and refused input
or output (a 65-bit integer) fails with the same messages as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from enum import Enum
from pathlib import Path
from typing import Any

import pydantic_core
import pytest
import temporalio.worker
from pydantic import BaseModel, ConfigDict
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RawValue, RetryPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ActivityError

from nomad_actions import configure, get_config
from nomad_actions.config import reset_config
from nomad_actions.testing import DevServer
from nomad_actions.worker import Worker

ACTIVITY_QUEUE = "payload-bytes-activities"
WORKFLOW_QUEUE = "payload-bytes-workflows"
TIMEOUT = 120.0

pytestmark = pytest.mark.timeout(300)


class Color(Enum):
    RED = "red"
    GREEN = "green"


class StrictReading(BaseModel):
    """Strict: Python-mode validation refuses strings for these fields; JSON mode reads
    the datetime from its ISO string and the enum from its value."""

    model_config = ConfigDict(strict=True)
    when: datetime
    color: Color
    count: int


class Sample(BaseModel):
    name: str
    energy: float
    tags: list[str]
    measured: datetime
    extra: dict[str, int] = {}


@activity.defn
async def scale_sample(sample: Sample, factor: int) -> Sample:
    assert isinstance(sample, Sample) and isinstance(sample.measured, datetime)
    return sample.model_copy(update={"energy": sample.energy * factor, "name": sample.name * 2})


@activity.defn
def read_strict(reading: StrictReading) -> dict:
    assert isinstance(reading.when, datetime) and isinstance(reading.color, Color)
    return {"when": reading.when, "color": reading.color, "count": reading.count}


@activity.defn
def describe_untyped(a, b):  # deliberately unannotated: plain values, as before
    return {
        "a": a,
        "b": b,
        "types": [type(a).__name__, type(b).__name__],
        "keys": list(a) if isinstance(a, dict) else None,
    }


@activity.defn
def increment(n: int) -> int:
    return n + 1


@activity.defn
def not_json(kind: str) -> Any:
    return {"big": 2**65, "nan": float("nan"), "none": None}[kind]


@activity.defn(dynamic=True)
def anything(args: Sequence[RawValue]) -> dict:
    converter = activity.payload_converter()
    return {
        "type": activity.info().activity_type,
        "encodings": [a.payload.metadata["encoding"].decode() for a in args],
        "values": [converter.from_payload(a.payload) for a in args],
    }


ACTIVITIES = [scale_sample, read_strict, describe_untyped, increment, not_json, anything]


@workflow.defn(sandboxed=False)
class CallActivity:
    """Calls one activity by name once; returns its result or its failure's message."""

    @workflow.run
    async def run(self, name: str, args: list[Any]) -> dict:
        try:
            result = await workflow.execute_activity(
                name,
                args=args,
                task_queue=ACTIVITY_QUEUE,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=1),
            )
        except ActivityError as err:
            return {"error": getattr(err.cause, "message", str(err.cause))}
        return {"result": result}


class Peers:
    """Our worker (activities) and temporalio's worker (the workflow), both running."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.client: Client | None = None
        self.stop: asyncio.Event | None = None
        self.official: Any = None

    def __enter__(self) -> Peers:
        self.thread.start()
        self.submit(self._start(), 60)
        return self

    async def _start(self) -> None:
        self.client = await Client.connect(self.address, data_converter=pydantic_data_converter)
        self.stop = asyncio.Event()
        ready = asyncio.Event()

        async def serve() -> None:
            async with temporalio.worker.Worker(
                self.client, task_queue=WORKFLOW_QUEUE, workflows=[CallActivity]
            ):
                ready.set()
                await self.stop.wait()  # type: ignore[union-attr]

        self.official = asyncio.ensure_future(serve())
        await asyncio.wait_for(ready.wait(), 60)

    def submit(self, coro: Any, timeout: float = TIMEOUT) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, name: str, *args: Any) -> tuple[dict, bytes | None]:
        """The workflow's answer, and the activity's result payload data from the history."""

        async def go() -> tuple[dict, bytes | None]:
            assert self.client is not None
            handle = await self.client.start_workflow(
                CallActivity.run,
                args=[name, list(args)],
                id=f"payload-bytes-{uuid.uuid4()}",
                task_queue=WORKFLOW_QUEUE,
                execution_timeout=timedelta(seconds=TIMEOUT),
            )
            answer = await handle.result()
            data = None
            async for event in handle.fetch_history_events():
                if event.HasField("activity_task_completed_event_attributes"):
                    [payload] = event.activity_task_completed_event_attributes.result.payloads
                    data = payload.data if payload.metadata["encoding"] == b"json/plain" else b""
            return answer, data

        return self.submit(go())

    def __exit__(self, *exc: object) -> None:
        async def finish() -> None:
            assert self.stop is not None
            self.stop.set()
            await asyncio.wait_for(self.official, 30)

        try:
            self.submit(finish(), 60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(30)
            self.loop.close()


@contextlib.contextmanager
def running_peers(log: Path) -> Iterator[Peers]:
    """A dev server (logging to `log`) with our worker serving ACTIVITIES and temporalio's
    worker running CallActivity."""
    with DevServer(log_path=log) as server:
        configure(host=server.host, port=server.port)
        try:
            with (
                Worker(ACTIVITY_QUEUE, actions=[], activities=ACTIVITIES, config=get_config()),
                Peers(server.address) as running,
            ):
                yield running
        finally:
            reset_config()


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    with running_peers(tmp_path_factory.mktemp("payload-bytes-server") / "temporal.log") as running:
        yield running


def test_typed_pydantic_argument_and_result_round_trip(peers: Peers) -> None:
    sample = Sample(
        name="Åsa 🙂",
        energy=-1234.5678,
        tags=["dft", "pbe"],
        measured=datetime(2024, 5, 17, 12, 30, tzinfo=timezone.utc),
        extra={"z": 1, "a": 2**63 - 1},
    )
    answer, data = peers.call("scale_sample", sample, 3)
    expected = sample.model_copy(update={"energy": sample.energy * 3, "name": sample.name * 2})
    # The result payload is the JSON text temporalio's Pydantic converter writes, byte for byte.
    assert data == pydantic_core.to_json(expected)
    assert Sample.model_validate(answer["result"]) == expected
    assert list(answer["result"]["extra"]) == ["z", "a"]


def test_strict_model_is_validated_in_json_mode(peers: Peers) -> None:
    when = "2024-05-17T12:30:00Z"
    answer, data = peers.call("read_strict", {"when": when, "color": "green", "count": 7})
    assert answer == {"result": {"when": "2024-05-17T12:30:00Z", "color": "green", "count": 7}}, (
        answer
    )
    assert data == b'{"when":"2024-05-17T12:30:00Z","color":"green","count":7}'
    # JSON mode is strict where it should be: a string for an int is refused.
    answer, _ = peers.call("read_strict", {"when": when, "color": "green", "count": "7"})
    assert answer == {"error": "Failed decoding arguments"}, answer


def test_unannotated_activity_gets_plain_values(peers: Peers) -> None:
    a = {"z": 1, "y": [1.5, 2**64 - 1, -(2**63), None, True], "x": "Ünïcode 🙂", "w": 1e300}
    answer, _ = peers.call("describe_untyped", a, [0.1, "s"])
    result = answer["result"]
    assert result["types"] == ["dict", "list"]
    assert result["keys"] == ["z", "y", "x", "w"]  # key order kept
    assert result["a"] == a and result["b"] == [0.1, "s"]
    assert isinstance(result["a"]["y"][1], int) and isinstance(result["a"]["w"], float)


def test_dynamic_activity_gets_json_payloads(peers: Peers) -> None:
    answer, _ = peers.call("no_such_activity", {"k": [1, 2.5]}, None, "text")
    assert answer == {
        "result": {
            "type": "no_such_activity",
            "encodings": ["json/plain", "binary/null", "json/plain"],
            "values": [{"k": [1, 2.5]}, None, "text"],
        }
    }, answer


def test_65_bit_integer_argument_is_refused_as_before(peers: Peers) -> None:
    answer, _ = peers.call("increment", 2**65)
    assert answer == {
        "error": 'Failed decoding arguments of activity "increment": payload holds the '
        "integer 36893488147419103232, out of range (JSON payloads hold 64-bit integers)"
    }, answer
    assert peers.call("increment", 2**64 - 2) == ({"result": 2**64 - 1}, b"18446744073709551615")


def test_results_without_json_text_keep_their_old_outcomes(peers: Peers) -> None:
    answer, data = peers.call("not_json", "big")
    assert data is None
    assert answer == {
        "error": "Failed encoding the activity's outcome: PayloadError: cannot encode a JSON "
        "payload: value at $ cannot be sent as JSON: integer of 66 bits is out of range (JSON "
        "payloads hold 64-bit integers)"
    }, answer
    # NaN has no JSON form: it was sent as null (binary/null), and still is.
    assert peers.call("not_json", "nan") == ({"result": None}, b"")
    assert peers.call("not_json", "none") == ({"result": None}, b"")

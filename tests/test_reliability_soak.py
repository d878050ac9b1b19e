"""Load and soak: 2,000 actions through one worker process, with bounded concurrency; and
again with payload encryption on and the worker's connections reset at random every few
seconds (through the loopback proxy of tests/netproxy.py): nothing lost, nothing completed
twice (checked in every history), memory growth under the same bound.

Every action must finish with the right result, and the worker's memory must not grow with
the number of actions it has run: its resident set size (VmRSS) after the last action is
within 20% of what it was after the first 200. The numbers are printed and written to
`RSS_REPORT` (JSON).

Marked `soak` (select or deselect it with `-m`), but part of the default run and of CI.
"""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nomad_actions import configure, get_action_result_async, start_action_async
from nomad_actions.config import reset_config
from nomad_actions.testing import DevServer

from .netproxy import FaultProxy
from .test_reliability_helpers import WorkerProcess, Workers, fault_action, history, workers_for

pytestmark = [pytest.mark.soak, pytest.mark.timeout(900)]

SOAK = fault_action("soak_action")
TOTAL = 2000
FIRST = 200
#: Actions in flight at once (started and not yet finished), from this client.
IN_FLIGHT = 100
MAX_CONCURRENT_ACTIVITIES = 50
#: Allowed RSS growth from after the first `FIRST` actions to the end.
MAX_GROWTH = 1.20
RSS_REPORT = Path(tempfile.gettempdir()) / "nomad-actions-soak-rss.json"
FAULT_REPORT = Path(tempfile.gettempdir()) / "nomad-actions-soak-faults.json"


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    with DevServer(log_path=tmp_path / "temporal.log") as server:
        configure(host=server.host, port=server.port)
        try:
            yield from workers_for(server, tmp_path)
        finally:
            reset_config()


async def _run(numbers: range, failures: list[str], wids: list[str] | None = None) -> None:
    """Start an action per number and check its result, at most IN_FLIGHT at a time;
    the workflow ids go to `wids` when given."""
    slots = asyncio.Semaphore(IN_FLIGHT)
    user = f"soak-{uuid.uuid4().hex[:8]}"

    async def one(n: int) -> None:
        async with slots:
            try:
                wid = await start_action_async(SOAK, {"user_id": user, "n": n})
                if wids is not None:
                    wids.append(wid)
                result = await get_action_result_async(wid, timeout=600)
                if (result.n, result.square) != (n, n * n):
                    failures.append(f"{wid}: {result!r}")
            except Exception as err:
                failures.append(f"action {n}: {type(err).__name__}: {err}")

    await asyncio.gather(*(one(n) for n in numbers))


def _sample(worker: WorkerProcess) -> int:
    # Let the worker settle (completions reported, buffers freed) before reading RSS.
    time.sleep(2.0)
    return worker.rss_kib()


def test_soak_2000_actions_through_one_worker(
    workers: Workers, capsys: pytest.CaptureFixture[str]
) -> None:
    worker = workers.start("--max-concurrent-activities", str(MAX_CONCURRENT_ACTIVITIES))
    rss_start = _sample(worker)
    failures: list[str] = []

    began = time.monotonic()
    asyncio.run(_run(range(FIRST), failures))
    first_seconds = time.monotonic() - began
    assert not failures, failures[:10]
    rss_first = _sample(worker)

    asyncio.run(_run(range(FIRST, TOTAL), failures))
    seconds = time.monotonic() - began
    assert not failures, failures[:10]
    rss_end = _sample(worker)
    assert worker.alive(), worker.report()

    report = {
        "actions": TOTAL,
        "max_concurrent_activities": MAX_CONCURRENT_ACTIVITIES,
        "in_flight": IN_FLIGHT,
        "worker_pid": worker.pid,
        "rss_kib_at_start": rss_start,
        f"rss_kib_after_{FIRST}": rss_first,
        "rss_kib_at_end": rss_end,
        "growth_after_first_to_end": round(rss_end / rss_first, 4),
        f"seconds_first_{FIRST}": round(first_seconds, 1),
        "seconds_total": round(seconds, 1),
        "actions_per_second": round(TOTAL / seconds, 1),
    }
    RSS_REPORT.write_text(json.dumps(report, indent=2) + "\n")
    with capsys.disabled():
        print(f"\nsoak: {json.dumps(report)} (also in {RSS_REPORT})")
    assert rss_end <= rss_first * MAX_GROWTH, report


# ---------------------------------------------------------------------- soak with faults

SECRET = "soak-secret-for-fernet"
#: Connections between worker and server are reset at random intervals in this range (s).
RESET_EVERY = (2.0, 5.0)


@pytest.fixture
def faulty_workers(tmp_path: Path) -> Iterator[tuple[Workers, FaultProxy]]:
    """A dev server; the client talks to it directly and encrypts payloads (Fernet, the
    NOMAD API secret); workers reach it through a proxy that resets their connections."""
    with DevServer(log_path=tmp_path / "temporal.log") as server:
        configure(host=server.host, port=server.port, api_secret=SECRET, development=False)
        try:
            with FaultProxy(server.host, server.port) as proxy:
                for pool in workers_for(server, tmp_path):
                    yield pool, proxy
        finally:
            reset_config()


def _resetter(proxy: FaultProxy, stop: threading.Event, log: list[float]) -> None:
    rng = random.Random(14)
    while not stop.wait(rng.uniform(*RESET_EVERY)):
        if proxy.reset_connections():
            log.append(time.monotonic())


async def _duplicates(address: str, wids: list[str]) -> list[str]:
    """Workflows whose history completed an activity or the workflow more than once, or
    that are not completed."""
    from temporalio.client import Client

    client = await Client.connect(address)
    slots = asyncio.Semaphore(32)
    bad: list[str] = []

    async def check(wid: str) -> None:
        async with slots:
            events = [e async for e in client.get_workflow_handle(wid).fetch_history_events()]
        completed = sum(e.HasField("activity_task_completed_event_attributes") for e in events)
        closed = sum(e.HasField("workflow_execution_completed_event_attributes") for e in events)
        if (completed, closed) != (1, 1):
            bad.append(f"{wid}: {completed} activity completions, {closed} workflow completions")

    await asyncio.gather(*(check(w) for w in wids))
    return bad


def test_soak_2000_encrypted_actions_with_connection_resets(
    faulty_workers: tuple[Workers, FaultProxy], capsys: pytest.CaptureFixture[str]
) -> None:
    workers, proxy = faulty_workers
    worker = workers.start(
        "--max-concurrent-activities",
        str(MAX_CONCURRENT_ACTIVITIES),
        port=proxy.port,
        env={"NOMAD_SERVICES_API_SECRET": SECRET, "NOMAD_SERVICES_MODE": "production"},
    )
    stop = threading.Event()
    resets: list[float] = []
    resetter = threading.Thread(target=_resetter, args=(proxy, stop, resets), daemon=True)
    failures: list[str] = []
    wids: list[str] = []
    began = time.monotonic()
    resetter.start()
    try:
        asyncio.run(_run(range(FIRST), failures, wids))
        assert not failures, failures[:10]
        rss_first = _sample(worker)
        asyncio.run(_run(range(FIRST, TOTAL), failures, wids))
        assert not failures, failures[:10]
    finally:
        stop.set()
        resetter.join()
    seconds = time.monotonic() - began
    rss_end = _sample(worker)
    assert worker.alive(), worker.report()
    assert len(wids) == TOTAL and len(set(wids)) == TOTAL
    duplicated = asyncio.run(_duplicates(workers.server.address, wids))
    report = {
        "actions": TOTAL,
        "encrypted": True,
        "connection_resets": len(resets),
        "connections_reset": proxy.resets,
        f"rss_kib_after_{FIRST}": rss_first,
        "rss_kib_at_end": rss_end,
        "growth_after_first_to_end": round(rss_end / rss_first, 4),
        "seconds_total": round(seconds, 1),
        "actions_per_second": round(TOTAL / seconds, 1),
    }
    FAULT_REPORT.write_text(json.dumps(report, indent=2) + "\n")
    with capsys.disabled():
        print(f"\nsoak with faults: {json.dumps(report)} (also in {FAULT_REPORT})")
    assert not duplicated, duplicated[:10]
    started = history(workers.server.address, wids[0])[0]
    payload = started.workflow_execution_started_event_attributes.input.payloads[0]
    assert payload.metadata["encoding"] == b"binary/encrypted"  # encryption was really on
    assert len(resets) >= 3, report  # the faults really happened
    assert rss_end <= rss_first * MAX_GROWTH, report

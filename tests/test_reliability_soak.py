"""Load and soak: 2,000 actions through one worker process, with bounded concurrency.

Every action must finish with the right result, and the worker's memory must not grow with
the number of actions it has run: its resident set size (VmRSS) after the last action is
within 20% of what it was after the first 200. The numbers are printed and written to
`RSS_REPORT` (JSON).

Marked `soak` (select or deselect it with `-m`), but part of the default run and of CI.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nomad_actions import configure, get_action_result_async, start_action_async
from nomad_actions.config import reset_config
from nomad_actions.testing import DevServer

from .test_reliability_helpers import WorkerProcess, Workers, fault_action, workers_for

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


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    with DevServer(log_path=tmp_path / "temporal.log") as server:
        configure(host=server.host, port=server.port)
        try:
            yield from workers_for(server, tmp_path)
        finally:
            reset_config()


async def _run(numbers: range, failures: list[str]) -> None:
    """Start an action per number and check its result, at most IN_FLIGHT at a time."""
    slots = asyncio.Semaphore(IN_FLIGHT)
    user = f"soak-{uuid.uuid4().hex[:8]}"

    async def one(n: int) -> None:
        async with slots:
            try:
                wid = await start_action_async(SOAK, {"user_id": user, "n": n})
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

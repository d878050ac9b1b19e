"""Listing one user's actions while the namespace fills up with other executions.

Starts one in-memory dev server (with the engine's search attributes), starts 5 actions of
one user, then grows the namespace to 100, 10,000 and 50,000 *other* executions (started on
a queue no worker polls, so they stay open). At each size it times

- `list_actions(user_id=...)`: the server filters by `NomadUserId` (search attributes);
- the memo scan that `list_actions` falls back to in a namespace without them (and that it
  was before): every execution is paged through and filtered on the client.

Usage: .venv/bin/python benches/list_search.py [--sizes 100,10000,50000] [--reps 10]
       [--scan-reps 3] [--json PATH]
Prints one line per size and the ratios to the smallest size; `--json` writes them too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

from nomad_actions import (
    TemporalConnectionError,
    WorkflowAlreadyStartedError,
    configure,
    list_actions,
    start_action_async,
)
from nomad_actions.client import MEMO_USER_ID, _client_for
from nomad_actions.config import get_config
from nomad_actions.testing import DevServer

GREET = "nomad_actions_testplugin.actions:greet_action"
USER_ACTIONS = 5
#: Starts in flight at once while filling the namespace.
FILL_CONCURRENCY = 32


async def _fill(count: int, start_index: int) -> None:
    slots = asyncio.Semaphore(FILL_CONCURRENCY)

    async def one(i: int) -> None:
        async with slots:
            for attempt in range(20):
                try:
                    await start_action_async(
                        GREET,
                        {"user_id": f"other-{i % 1000}", "name": "x"},
                        workflow_id=f"other-{i}",
                    )
                    return
                except WorkflowAlreadyStartedError:
                    return  # an earlier attempt got through before its answer was lost
                except TemporalConnectionError:
                    # The dev server under this load drops a connection now and then.
                    await asyncio.sleep(0.5 * (attempt + 1))
            raise RuntimeError(f"could not start other-{i}")

    await asyncio.gather(*(one(i) for i in range(start_index, start_index + count)))


def _timed(fn, reps: int) -> float:
    samples = []
    for _ in range(reps):
        began = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,10000,50000")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--scan-reps", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with DevServer() as server:
        configure(host=server.host, port=server.port, rpc_timeout=120)
        user = f"bench-{uuid.uuid4().hex[:8]}"

        async def mine() -> None:
            for _ in range(USER_ACTIONS):
                await start_action_async(GREET, {"user_id": user, "name": "me"})

        asyncio.run(mine())
        native = _client_for(get_config())
        others = 0
        for size in sizes:
            began = time.monotonic()
            asyncio.run(_fill(size - others, others))
            others = size
            fill_seconds = time.monotonic() - began
            # Visibility is eventually consistent: wait until every execution is counted.
            while native.count("", True) < size + USER_ACTIONS:
                time.sleep(0.5)
            found = list_actions(user_id=user)
            assert len(found) == USER_ACTIONS, found
            query = _timed(lambda: list_actions(user_id=user), args.reps)
            scanned = native.list("", {MEMO_USER_ID: user}, 100, True)
            assert len(scanned) == USER_ACTIONS
            scan = _timed(lambda: native.list("", {MEMO_USER_ID: user}, 100, True), args.scan_reps)
            row = {
                "other_executions": size,
                "query_seconds": round(query, 4),
                "scan_seconds": round(scan, 4),
                "fill_seconds": round(fill_seconds, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    base = rows[0]
    for row in rows:
        row["query_ratio"] = round(row["query_seconds"] / base["query_seconds"], 2)
        row["scan_ratio"] = round(row["scan_seconds"] / base["scan_seconds"], 2)
    print("\nother executions | query by search attribute | memo scan")
    for row in rows:
        query = f"{row['query_seconds'] * 1000:8.1f} ms (x{row['query_ratio']:<6})"
        scan = f"{row['scan_seconds'] * 1000:9.1f} ms (x{row['scan_ratio']})"
        print(f"{row['other_executions']:>16} | {query} | {scan}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

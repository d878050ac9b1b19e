"""Client latency: `start_action` and `get_action_status` from synchronous code.

Three variants, on the same workflow type, input and task queue (no worker polls it, so
started workflows just stay open):

- `ours`: `nomad_actions.start_action` / `get_action_status`, called from plain sync code.
- `upstream (connect per call)`: upstream NOMAD's manager: a new
  `temporalio.client.Client.connect` per call, run with `asyncio.run` in a fresh
  `ThreadPoolExecutor` (`with ThreadPoolExecutor() as ex: ex.submit(asyncio.run, coro)`).
- `temporalio cached async`: one connected temporalio client; calls awaited one after the
  other in one running event loop, each timed inside the loop.

The calls run one after the other, interleaved per call (ours, upstream, cached, then the
next round starting one variant later), after a short warm-up of each variant. Prints one
JSON line with p50/p99/mean in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import time
import uuid
from typing import Any

# A local dev server without payload encryption: NOMAD's development mode (outside it our
# client refuses to send unencrypted payloads without an API secret).
os.environ.setdefault("NOMAD_SERVICES_MODE", "development")

from bench_plugin.models import GreetInput
from bench_plugin.workflows import SingleWorkflow
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

TASK_QUEUE = "bench-client-no-worker"
DATA = {"user_id": "bench-user", "upload_id": "bench-upload", "name": "Ada"}
WARMUP = 5


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


class Ours:
    name = "ours"

    def __init__(self, address: str) -> None:
        from bench_plugin.action import ACTION_ID, entry_point

        import nomad_actions

        host, port = address.rsplit(":", 1)
        nomad_actions.configure(host=host, port=int(port))
        nomad_actions.register_action(entry_point(TASK_QUEUE), id=ACTION_ID)
        self._na = nomad_actions
        self._action_id = ACTION_ID

    def call(self, what: str, workflow_id: str) -> float:
        t0 = time.perf_counter()
        if what == "start":
            self._na.start_action(self._action_id, DATA)
        else:
            self._na.get_action_status(workflow_id)
        return time.perf_counter() - t0

    def start(self) -> str:
        return self._na.start_action(self._action_id, DATA)


class Upstream:
    """Upstream NOMAD's manager functions: connect per call, asyncio.run in a thread pool."""

    name = "upstream (connect per call)"

    def __init__(self, address: str) -> None:
        self._address = address

    async def _client(self) -> Client:
        return await Client.connect(
            self._address, namespace="default", data_converter=pydantic_data_converter
        )

    def _run(self, coro: Any) -> Any:
        with concurrent.futures.ThreadPoolExecutor() as executor:
            return executor.submit(asyncio.run, coro).result()

    def start_action(self, action_id: str, data: dict[str, Any]) -> str:
        async def start() -> str:
            client = await self._client()
            workflow_id = f"{action_id}-{data['user_id']}-{uuid.uuid4()}"
            await client.start_workflow(
                SingleWorkflow.run,
                GreetInput.model_validate(data),
                id=workflow_id,
                task_queue=TASK_QUEUE,
            )
            return workflow_id

        return self._run(start())

    def get_action_status(self, workflow_id: str) -> Any:
        async def status() -> Any:
            client = await self._client()
            description = await client.get_workflow_handle(workflow_id).describe()
            return description.status

        return self._run(status())

    def call(self, what: str, workflow_id: str) -> float:
        t0 = time.perf_counter()
        if what == "start":
            self.start_action("bench_plugin.action:bench_action", DATA)
        else:
            self.get_action_status(workflow_id)
        return time.perf_counter() - t0


class CachedAsync:
    """One temporalio client, calls awaited in one running loop (kept between blocks)."""

    name = "temporalio cached async"

    def __init__(self, address: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = self._loop.run_until_complete(
            Client.connect(address, data_converter=pydantic_data_converter)
        )

    async def _timed(self, what: str, workflow_id: str) -> float:
        t0 = time.perf_counter()
        if what == "start":
            await self._client.start_workflow(
                SingleWorkflow.run,
                GreetInput.model_validate(DATA),
                id=f"bench_plugin.action:bench_action-bench-user-{uuid.uuid4()}",
                task_queue=TASK_QUEUE,
            )
        else:
            await self._client.get_workflow_handle(workflow_id).describe()
        return time.perf_counter() - t0

    def call(self, what: str, workflow_id: str) -> float:
        # The loop (and the client bound to it) lives across calls; timing is inside it.
        return self._loop.run_until_complete(self._timed(what, workflow_id))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True)
    parser.add_argument("--calls", type=int, default=300, help="calls per variant and function")
    args = parser.parse_args()

    ours = Ours(args.address)
    variants: list[Any] = [ours, Upstream(args.address), CachedAsync(args.address)]
    workflow_id = ours.start()
    samples: dict[str, dict[str, list[float]]] = {
        what: {v.name: [] for v in variants} for what in ("start", "status")
    }
    for what in ("start", "status"):
        for v in variants:
            for _ in range(WARMUP):
                v.call(what, workflow_id)
    # A/B/C per call, rotating which variant goes first.
    for what in ("start", "status"):
        for i in range(args.calls):
            for k in range(len(variants)):
                v = variants[(i + k) % len(variants)]
                samples[what][v.name].append(v.call(what, workflow_id))

    def stats(values: list[float]) -> dict[str, float]:
        ms = [1000 * v for v in values]
        return {
            "calls": len(ms),
            "p50_ms": percentile(ms, 50),
            "p99_ms": percentile(ms, 99),
            "mean_ms": sum(ms) / len(ms),
        }

    names = {"start": "start_action", "status": "get_action_status"}
    result = {
        names[what]: {name: stats(values) for name, values in samples[what].items()}
        for what in ("start", "status")
    }
    print(json.dumps(result), flush=True)
    # temporalio 1.35's Rust runtime threads sometimes crash a finalizing interpreter
    # (PyGILState_Release: SIGABRT/SIGSEGV in ~15% of exits, plain temporalio clients
    # included); skip finalization, the results are out.
    os._exit(0)


if __name__ == "__main__":
    main()

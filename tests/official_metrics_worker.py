"""The official temporalio worker with Prometheus metrics, as upstream NOMAD runs it, in a
process of its own (its `Runtime` and exporter are per process); for test_metrics.py.

Usage: python tests/official_metrics_worker.py ADDRESS TASK_QUEUE METRICS_BIND ACTION_ID...
Prints "ready" once polling; stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import sys

import temporalio.worker
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from nomad_actions import load_action


async def main(address: str, queue: str, metrics: str, action_ids: list[str]) -> None:
    runtime = Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=metrics)))
    client = await Client.connect(address, data_converter=pydantic_data_converter, runtime=runtime)
    actions = [load_action(a) for a in action_ids]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        async with temporalio.worker.Worker(
            client,
            task_queue=queue,
            workflows=[a.workflow for a in actions],
            activities=[f for a in actions for f in a.activities],
            activity_executor=pool,
        ):
            print("ready", flush=True)
            await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]))

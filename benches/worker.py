"""One benchmark worker process: nomad-actions' worker or the official temporalio worker.

Both serve the same plugin code (`bench_plugin`) on one task queue. The official worker is
set up as upstream NOMAD sets it up: a `temporalio.client.Client` with
`pydantic_data_converter`, a `ThreadPoolExecutor` as `activity_executor`, and the
`SandboxedWorkflowRunner` (or `UnsandboxedWorkflowRunner` with `--unsandboxed`).

Prints `READY` on stdout once it polls; on SIGUSR1 prints `USAGE <user s> <sys s> <maxrss KiB>`
from `getrusage(RUSAGE_SELF)` (every thread, live or ended, at microsecond resolution); drains
and exits on SIGTERM or SIGINT.

Usage: python benches/worker.py {ours,official} --address HOST:PORT --task-queue Q
       [--unsandboxed] [--max-concurrent-activities N] [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import resource
import signal
import sys

# The bench runs against a local dev server without payload encryption: NOMAD's development
# mode (outside it our worker refuses to start without an API secret).
os.environ.setdefault("NOMAD_SERVICES_MODE", "development")

from bench_plugin.workflows import ACTIVITIES, WORKFLOWS


def _ready() -> None:
    sys.stdout.write("READY\n")
    sys.stdout.flush()


def _usage() -> None:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    sys.stdout.write(f"USAGE {ru.ru_utime} {ru.ru_stime} {ru.ru_maxrss}\n")
    sys.stdout.flush()


def run_ours(args: argparse.Namespace) -> None:
    # The worker runs in background threads; the main thread waits for the signals. Block
    # them before any thread exists (threads inherit the mask), so only sigwait sees them.
    signals = {signal.SIGTERM, signal.SIGINT, signal.SIGUSR1}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)

    from bench_plugin.action import entry_point

    import nomad_actions
    from nomad_actions.worker import Worker

    host, port = args.address.rsplit(":", 1)
    nomad_actions.configure(host=host, port=int(port))
    action = entry_point(args.task_queue).load()
    options = {}
    if args.max_concurrent_activities is not None:
        options["max_concurrent_activities"] = args.max_concurrent_activities
    if args.threads is not None:
        options["activity_threads"] = args.threads
    worker = Worker(
        args.task_queue,
        actions=[action],
        workflows=WORKFLOWS,
        sandboxed=not args.unsandboxed,
        **options,
    )
    with worker:
        _ready()
        while signal.sigwait(signals) == signal.SIGUSR1:
            _usage()


async def run_official(args: argparse.Namespace) -> None:
    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.worker import UnsandboxedWorkflowRunner, Worker
    from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

    client = await Client.connect(args.address, data_converter=pydantic_data_converter)
    runner = UnsandboxedWorkflowRunner() if args.unsandboxed else SandboxedWorkflowRunner()
    options = {}
    if args.max_concurrent_activities is not None:
        options["max_concurrent_activities"] = args.max_concurrent_activities
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, _usage)
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.threads) as executor:
        worker = Worker(
            client,
            task_queue=args.task_queue,
            workflows=WORKFLOWS,
            activities=ACTIVITIES,
            activity_executor=executor,
            workflow_runner=runner,
            **options,
        )
        async with worker:
            _ready()
            await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("impl", choices=["ours", "official"])
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--unsandboxed", action="store_true")
    parser.add_argument("--max-concurrent-activities", type=int)
    parser.add_argument("--threads", type=int, help="thread pool for sync activities")
    args = parser.parse_args()
    if args.impl == "ours":
        run_ours(args)
    else:
        asyncio.run(run_official(args))
        # temporalio 1.35's Rust runtime threads sometimes crash a finalizing interpreter;
        # the worker has shut down cleanly by now.
        sys.stdout.flush()
        os._exit(0)


if __name__ == "__main__":
    main()

"""Side-by-side benchmarks: nomad-actions' worker and client against the official temporalio
worker and upstream NOMAD's client code, on one in-memory Temporal dev server.

For each runner mode (sandboxed, unsandboxed) and workload, one worker process of each kind
is started (`benches/worker.py`, each on its own task queue) and kept up for that workload's
repetitions. After one unmeasured warm-up load each, the repetitions alternate: ours,
official, ours, official, ... The load is driven from this process with one temporalio
client, the same for both sides. Per repetition we record throughput (units from the first
start call to the last workflow close), the worker's CPU time (user+sys from its own
getrusage, sampled right before the first start and right after the last result) and
per-workflow latency (start call to close); the peak RSS is the worker's VmHWM after its
last repetition (warm-up included). Medians over the repetitions are reported, with the
ratio ours/official.

Then `benches/client.py` runs the client comparison in a fresh process.

Usage: python benches/run.py [--quick] [--reps N] [--only single,fanout,sync,client]
           [--modes sandboxed,unsandboxed] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
IMPLS = ("ours", "official")
MODES = ("sandboxed", "unsandboxed")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
LOGS = HERE / "results" / "logs"
PLURAL = {"workflow": "workflows", "activity": "activities"}


@dataclass(frozen=True)
class Workload:
    """One load shape. `units` is what throughput and CPU are counted in."""

    key: str
    title: str
    unit: str
    workflow: str
    full: int
    quick: int
    warmup: int
    worker_args: tuple[str, ...] = ()
    sleep_ms: int = 0


WORKLOADS = {
    w.key: w
    for w in (
        Workload(
            "single",
            "N workflows x 1 Pydantic activity, started concurrently",
            "workflow",
            "BenchSingle",
            full=200,
            quick=30,
            warmup=20,
        ),
        Workload(
            "fanout",
            "1 workflow fanning out M short Pydantic activities (asyncio.gather)",
            "activity",
            "BenchFanOut",
            full=200,
            quick=30,
            warmup=20,
        ),
        Workload(
            "sync",
            "1 workflow, M sync activities of 20 ms time.sleep, 20 slots and 20 threads",
            "activity",
            "BenchSyncSleep",
            full=100,
            quick=40,
            warmup=20,
            worker_args=("--max-concurrent-activities", "20", "--threads", "20"),
            sleep_ms=20,
        ),
    )
}


def compile_plugin() -> None:
    """Writes bench_plugin's .pyc files, as `pip install` does for a real plugin.

    The sandbox re-imports the workflow module for every workflow run; without bytecode
    (e.g. with PYTHONDONTWRITEBYTECODE=1 set) it would compile the source each time.
    """
    compileall.compile_dir(HERE / "bench_plugin", quiet=1)


# -- process measurements (Linux /proc) ---------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- worker processes ----------------------------------------------------------------------


class WorkerProcess:
    """`benches/worker.py` in its own process, on its own task queue."""

    def __init__(self, impl: str, mode: str, workload: Workload, address: str) -> None:
        self.impl = impl
        self.task_queue = f"bench-{impl}-{mode}-{workload.key}-{uuid.uuid4().hex[:8]}"
        cmd = [
            sys.executable,
            str(HERE / "worker.py"),
            impl,
            "--address",
            address,
            "--task-queue",
            self.task_queue,
            *workload.worker_args,
        ]
        if mode == "unsandboxed":
            cmd.append("--unsandboxed")
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log_path = LOGS / f"{self.task_queue}.log"
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=log, text=True, cwd=HERE
            )
        self.pid = self.proc.pid

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.strip() == "READY":
                return
            if not line and self.proc.poll() is not None:
                raise RuntimeError(f"{self.impl} worker exited with {self.proc.returncode}")
        raise TimeoutError(f"{self.impl} worker not ready after {timeout}s")

    def usage(self) -> tuple[float, int]:
        """CPU seconds (user + sys) and peak RSS (KiB) from the worker's own getrusage."""
        assert self.proc.stdout is not None
        self.proc.send_signal(signal.SIGUSR1)
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.impl} worker exited with {self.proc.poll()}")
            if line.startswith("USAGE "):
                user, system, maxrss = line.split()[1:]
                return float(user) + float(system), int(maxrss)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.returncode != 0:
            tail = self.log_path.read_text()[-2000:]
            print(f"  warning: {self.impl} worker exited with {self.proc.returncode}:\n{tail}")


# -- load ----------------------------------------------------------------------------------


@dataclass
class Rep:
    """One measured repetition of one workload on one worker."""

    units: int
    seconds: float
    cpu_s: float
    cpu_s_proc: float
    server_cpu_s: float
    latencies_ms: list[float] = field(repr=False)
    result_lag_ms: float = 0.0

    def summary(self) -> dict[str, float]:
        return {
            "units": self.units,
            "seconds": self.seconds,
            "throughput_per_s": self.units / self.seconds,
            "cpu_s": self.cpu_s,
            "cpu_ms_per_unit": 1000 * self.cpu_s / self.units,
            "cpu_s_proc": self.cpu_s_proc,
            "server_cpu_s": self.server_cpu_s,
            "p50_ms": percentile(self.latencies_ms, 50),
            "p99_ms": percentile(self.latencies_ms, 99),
            "result_lag_ms_max": self.result_lag_ms,
        }


async def drive(
    client: Any, workload: Workload, worker: WorkerProcess, size: int, server_pid: int
) -> Rep:
    """Runs one load of `size` units against the worker on `task_queue`."""
    from bench_plugin.models import FanOutInput, GreetInput

    if workload.key == "single":
        args = [GreetInput(user_id="bench", name=f"w{i}", index=i) for i in range(size)]
    else:
        args = [FanOutInput(user_id="bench", count=size, sleep_ms=workload.sleep_ms)]

    async def one(arg: Any) -> tuple[Any, float, float]:
        t0 = time.time()
        handle = await client.start_workflow(
            workload.workflow, arg, id=f"bench-{uuid.uuid4()}", task_queue=worker.task_queue
        )
        await handle.result()
        return handle, t0, time.time()

    # The worker's getrusage (µs resolution) is the measure; /proc ticks are a cross-check.
    (cpu0, _), proc0, server0 = worker.usage(), cpu_seconds(worker.pid), cpu_seconds(server_pid)
    runs = await asyncio.gather(*(one(a) for a in args))
    (cpu1, _), proc1, server1 = worker.usage(), cpu_seconds(worker.pid), cpu_seconds(server_pid)
    # Completion = the server's close time (same machine, same clock). The driver's
    # `result()` long poll now and then misses the close and only returns when the server
    # expires it after 20 s, which says nothing about the worker; its lag is kept aside.
    descriptions = await asyncio.gather(*(handle.describe() for handle, _, _ in runs))
    starts = [t0 for _, t0, _ in runs]
    closes = [d.close_time.timestamp() for d in descriptions]
    return Rep(
        units=size,
        seconds=max(closes) - min(starts),
        cpu_s=cpu1 - cpu0,
        cpu_s_proc=proc1 - proc0,
        server_cpu_s=server1 - server0,
        latencies_ms=[1000 * (c - t0) for c, t0 in zip(closes, starts, strict=True)],
        result_lag_ms=max(1000 * (t1 - c) for (_, _, t1), c in zip(runs, closes, strict=True)),
    )


async def bench_workload(
    client: Any, address: str, server_pid: int, mode: str, workload: Workload, opts: Any
) -> dict[str, Any]:
    size = workload.quick if opts.quick else workload.full
    workers = {impl: WorkerProcess(impl, mode, workload, address) for impl in IMPLS}
    try:
        for w in workers.values():
            w.wait_ready()
        after_warmup: dict[str, dict[str, int]] = {}
        for impl, w in workers.items():
            await drive(client, workload, w, workload.warmup, server_pid)
            after_warmup[impl] = memory_kib(w.pid)
        reps: dict[str, list[Rep]] = {impl: [] for impl in IMPLS}
        for i in range(opts.reps):
            for impl, w in workers.items():
                await asyncio.sleep(0.5)
                rep = await drive(client, workload, w, size, server_pid)
                reps[impl].append(rep)
                s = rep.summary()
                print(
                    f"  {mode:<11} {workload.key:<6} rep {i + 1}/{opts.reps} {impl:<8} "
                    f"{s['throughput_per_s']:8.1f}/s  cpu {s['cpu_ms_per_unit']:6.2f} ms/"
                    f"{workload.unit}  p50 {s['p50_ms']:7.1f} ms  p99 {s['p99_ms']:7.1f} ms",
                    flush=True,
                )
        peak = {impl: memory_kib(w.pid) for impl, w in workers.items()}
    finally:
        for w in workers.values():
            w.stop()
    result: dict[str, Any] = {"mode": mode, "workload": workload.key, "size": size}
    for impl in IMPLS:
        summaries = [r.summary() for r in reps[impl]]
        result[impl] = {
            "reps": summaries,
            **{key: median([s[key] for s in summaries]) for key in summaries[0]},
            "peak_rss_mib": peak[impl]["VmHWM"] / 1024,
            "rss_after_warmup_mib": after_warmup[impl]["VmRSS"] / 1024,
            "rss_at_end_mib": peak[impl]["VmRSS"] / 1024,
        }
    result["ratio"] = {
        key: result["ours"][key] / result["official"][key]
        for key in ("throughput_per_s", "cpu_ms_per_unit", "peak_rss_mib", "p50_ms", "p99_ms")
        if result["official"][key]
    }
    return result


async def bench_workers(address: str, server_pid: int, opts: Any) -> list[dict[str, Any]]:
    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter

    client = await Client.connect(address, data_converter=pydantic_data_converter)
    results = []
    for mode in opts.modes:
        for key in opts.workloads:
            workload = WORKLOADS[key]
            print(f"== {mode}: {workload.title}", flush=True)
            results.append(await bench_workload(client, address, server_pid, mode, workload, opts))
    return results


def bench_client(address: str, opts: Any) -> dict[str, Any]:
    calls = 30 if opts.quick else opts.client_calls
    print(f"== client: start_action / get_action_status, {calls} calls each", flush=True)
    cmd = [sys.executable, str(HERE / "client.py"), "--address", address, "--calls", str(calls)]
    out = subprocess.run(cmd, cwd=HERE, stdout=subprocess.PIPE, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# -- report --------------------------------------------------------------------------------


def _fmt(value: float, digits: int = 1) -> str:
    return f"{value:.{digits}f}"


def worker_table(results: list[dict[str, Any]]) -> str:
    head = (
        "| mode | workload | worker | throughput /s | CPU ms/unit | peak RSS MiB "
        "| p50 ms | p99 ms |\n|---|---|---|---:|---:|---:|---:|---:|"
    )
    rows = [head]
    for r in results:
        unit = WORKLOADS[r["workload"]].unit
        label = f"{r['workload']} ({r['size']} {PLURAL[unit]})"
        for impl in IMPLS:
            m = r[impl]
            rows.append(
                f"| {r['mode']} | {label} | {impl} | {_fmt(m['throughput_per_s'])} "
                f"| {_fmt(m['cpu_ms_per_unit'], 2)} | {_fmt(m['peak_rss_mib'])} "
                f"| {_fmt(m['p50_ms'])} | {_fmt(m['p99_ms'])} |"
            )
        q = r["ratio"]
        rows.append(
            f"| {r['mode']} | {label} | **ours/official** | "
            + " | ".join(
                f"**{q[k]:.2f}x**" if k in q else "-"
                for k in ("throughput_per_s", "cpu_ms_per_unit", "peak_rss_mib", "p50_ms", "p99_ms")
            )
            + " |"
        )
    return "\n".join(rows)


def client_table(result: dict[str, Any]) -> str:
    rows = [
        "| call | variant | p50 ms | p99 ms | mean ms | p50 vs ours |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for call in ("start_action", "get_action_status"):
        ours = result[call]["ours"]["p50_ms"]
        for variant, m in result[call].items():
            rows.append(
                f"| {call} | {variant} | {_fmt(m['p50_ms'], 2)} | {_fmt(m['p99_ms'], 2)} "
                f"| {_fmt(m['mean_ms'], 2)} | {m['p50_ms'] / ours:.2f}x |"
            )
    return "\n".join(rows)


def targets(results: list[dict[str, Any]], client: dict[str, Any] | None) -> list[str]:
    """The issue's targets, each with its measured ratio and met / MISSED."""
    lines = []

    def check(name: str, value: float, ok: bool) -> None:
        lines.append(f"- {'met   ' if ok else 'MISSED'} {name}: {value:.2f}")

    # Issue 15: CPU per unit <= 0.35x sandboxed and <= 0.5x unsandboxed, peak RSS <= 0.8x,
    # throughput >= 1.3x, on every workload.
    for r in results:
        q, tag = r["ratio"], f"{r['mode']}/{r['workload']}"
        cpu_bound = 0.35 if r["mode"] == "sandboxed" else 0.5
        check(
            f"{tag} CPU/unit ours/official <= {cpu_bound}",
            q["cpu_ms_per_unit"],
            q["cpu_ms_per_unit"] <= cpu_bound,
        )
        check(f"{tag} peak RSS ours/official <= 0.8", q["peak_rss_mib"], q["peak_rss_mib"] <= 0.8)
        check(
            f"{tag} throughput ours/official >= 1.3",
            q["throughput_per_s"],
            q["throughput_per_s"] >= 1.3,
        )
    if client:
        for call in ("start_action", "get_action_status"):
            c = client[call]
            ours = c["ours"]["p50_ms"]
            cached = c["temporalio cached async"]["p50_ms"]
            upstream = c["upstream (connect per call)"]["p50_ms"]
            check(f"{call} p50 ours/cached-async <= 1", ours / cached, ours <= cached)
            check(f"{call} p50 upstream/ours >= 1.5", upstream / ours, upstream / ours >= 1.5)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (sizes, 2 reps)")
    parser.add_argument("--reps", type=int, help="repetitions per side (default 5, quick 2)")
    parser.add_argument(
        "--only", default="single,fanout,sync,client", help="comma list of workloads/client"
    )
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--client-calls", type=int, default=300)
    parser.add_argument("--json", default=str(HERE / "results" / "latest.json"))
    opts = parser.parse_args()
    opts.reps = opts.reps or (2 if opts.quick else 5)
    only = [s for s in opts.only.split(",") if s]
    unknown = set(only) - {*WORKLOADS, "client"}
    if unknown:
        parser.error(f"unknown --only entries: {', '.join(sorted(unknown))}")
    opts.workloads = [k for k in WORKLOADS if k in only]
    opts.modes = [m for m in opts.modes.split(",") if m]

    sys.path.insert(0, str(HERE))
    compile_plugin()
    from nomad_actions.testing import DevServer

    started = time.time()
    with DevServer() as server:
        assert server.process is not None
        address = server.address
        results = (
            asyncio.run(bench_workers(address, server.process.pid, opts)) if opts.workloads else []
        )
        client = bench_client(address, opts) if "client" in only else None

    report = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": round(time.time() - started, 1),
        "quick": opts.quick,
        "reps": opts.reps,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_at_end": os.getloadavg(),
        },
        "workers": results,
        "client": client,
        "targets": targets(results, client),
    }
    path = Path(opts.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")

    print()
    if results:
        print(worker_table(results))
        print()
    if client:
        print(client_table(client))
        print()
    print("\n".join(report["targets"]))
    print(f"\n{report['seconds']} s; results written to {path}", flush=True)
    # See client.py: temporalio's runtime threads may crash the interpreter at exit.
    os._exit(0)


if __name__ == "__main__":
    main()

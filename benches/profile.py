"""Where a benchmark worker's CPU goes: per-thread CPU and a py-spy profile by component.

Starts one worker (`benches/worker.py`) on a fresh dev server, warms it up, then runs the
workload `--loads` times while `py-spy record` samples it. Prints:

- CPU per unit, split by OS thread name (Rust `tokio-runtime-w` threads vs Python threads;
  Python < 3.14 does not name its threads, so they all show as `python`);
- how long the GIL was held per unit (py-spy `--gil` samples only the thread holding it),
  split by Python threads vs native threads running Python code, and by component
  (temporalio's sandbox, its workflow instance, nomad-actions' bridges, pydantic, protobuf,
  asyncio, ...): self = innermost frame of a known component, incl = any frame in it.

It also counts the context switches of every thread (`/proc/<pid>/task/*/status`) per unit:
voluntary switches are a thread blocking to wait for another (each hand-off of work between
threads costs one on the waiting side, and a GIL wait costs one), involuntary ones are
preemptions. `--switches-only` skips the sampler (no py-spy needed).

Needs py-spy (`pip install py-spy` into the bench venv) unless `--switches-only`. Writes
the collapsed stacks to benches/results/profile-<impl>-<mode>-<workload>.txt (open with any
flamegraph viewer).
With `--perf`, samples every thread with Linux `perf` instead and prints the share of CPU
per shared object (our Rust `_core`, temporalio's Rust bridge, libpython, the kernel, ...).
With `--gil-count`, counts GIL acquisitions instead: `perf stat` of a uprobe on libpython's
`take_gil` (every thread that takes the GIL, after a release or a forced switch, passes
through it; CPython 3.11 has no counter of its own). Needs root and uprobes.

Usage: python benches/profile.py {ours,official} [--unsandboxed] [--workload single]
           [--size 200] [--loads 3] [--rate 200] [--perf | --switches-only | --gil-count]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from run import CLOCK_TICKS, HERE, WORKLOADS, WorkerProcess, compile_plugin, drive

PERF_HZ = 999

# (component, path fragment), first match from the innermost frame outwards wins.
COMPONENTS = [
    ("temporalio sandbox", "temporalio/worker/workflow_sandbox/"),
    ("temporalio workflow instance", "temporalio/worker/_workflow_instance.py"),
    ("temporalio worker (official loop)", "temporalio/worker/"),
    ("temporalio bridge (official)", "temporalio/bridge/"),
    ("temporalio converter", "temporalio/converter"),
    ("temporalio other", "temporalio/"),
    ("nomad-actions workflow bridge", "nomad_actions/workflow_bridge.py"),
    ("nomad-actions activity bridge", "nomad_actions/activity_bridge.py"),
    ("nomad-actions other", "nomad_actions/"),
    ("pydantic", "pydantic"),
    ("protobuf", "google/protobuf"),
    ("plugin code", "bench_plugin/"),
    ("asyncio", "asyncio/"),
    ("threading / queue", "threading.py"),
    ("threading / queue", "queue.py"),
    ("concurrent.futures", "concurrent/futures"),
    ("import machinery", "importlib"),
]


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread name (live threads only)."""
    out: dict[str, float] = collections.defaultdict(float)
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                text = f.read()
        except FileNotFoundError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        out[name] += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return out


def thread_switches(pid: int) -> dict[str, list[int]]:
    """[voluntary, involuntary] context switches per thread name (live threads only)."""
    out: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                status = f.read()
        except FileNotFoundError:
            continue
        for line in status.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                out[name][0] += int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches:"):
                out[name][1] += int(line.split()[1])
    return out


def component(stack: str) -> str:
    frames = stack.split(";")
    for frame in reversed(frames):
        for name, fragment in COMPONENTS:
            if fragment in frame:
                return name
    return "other"


def gil_probe() -> str:
    """The perf event of a uprobe on `take_gil` in this interpreter's libpython (added once;
    needs root and uprobes). Every GIL acquisition of every thread passes through it."""
    import sysconfig

    lib = Path(sysconfig.get_config_var("LIBDIR")) / str(sysconfig.get_config_var("LDLIBRARY"))
    listed = subprocess.run(["perf", "probe", "-l"], capture_output=True, text=True).stdout
    for line in listed.splitlines():
        if "take_gil" in line and str(lib) in line:
            return line.split()[0]
    added = subprocess.run(
        ["perf", "probe", "-x", str(lib), "take_gil"], capture_output=True, text=True
    )
    for line in (added.stdout + added.stderr).splitlines():
        if "-e " in line and "take_gil" in line:
            return line.split("-e ", 1)[1].split()[0]
    sys.exit(f"cannot add a perf uprobe on take_gil in {lib}: {added.stderr.strip()}")


def gil_count(stat_file: Path) -> int:
    """The event count `perf stat -x ,` wrote."""
    for line in stat_file.read_text().splitlines():
        fields = line.split(",")
        if len(fields) > 2 and "take_gil" in fields[2] and fields[0].strip().isdigit():
            return int(fields[0])
    sys.exit(f"no take_gil count in {stat_file}: {stat_file.read_text()!r}")


def perf_report(perf_data: Path, units: int, unit: str) -> None:
    """CPU per unit by thread name and shared object, from perf's cpu-clock samples."""
    cmd = ["perf", "report", "-i", str(perf_data), "--stdio", "--no-children", "-g", "none"]
    report = subprocess.run(
        [*cmd, "-n", "--sort", "comm,dso", "--percent-limit", "0.3"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    print(f"perf (cpu-clock at {PERF_HZ} Hz, every thread): ms per {unit} by thread, object")
    for line in report.splitlines():
        parts = line.split()
        if len(parts) >= 4 and not line.startswith("#") and parts[0].endswith("%"):
            ms = 1000 * int(parts[1]) / PERF_HZ / units
            print(f"  {ms:7.3f} ms  {parts[0]:>7}  {parts[2]:<16} {' '.join(parts[3:])}")
    print(f"perf data: {perf_data} (perf report -i ... --sort dso,sym)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("impl", choices=["ours", "official"])
    parser.add_argument("--unsandboxed", action="store_true")
    parser.add_argument("--workload", default="single", choices=list(WORKLOADS))
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--loads", type=int, default=3)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument(
        "--perf", action="store_true", help="sample with `perf record` instead of py-spy"
    )
    parser.add_argument(
        "--switches-only", action="store_true", help="only CPU and context switches, no sampler"
    )
    parser.add_argument(
        "--gil-count",
        action="store_true",
        help="count GIL acquisitions (a perf uprobe on libpython's take_gil), no sampler",
    )
    opts = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    no_sampler = opts.switches_only or opts.gil_count
    gil_event = gil_probe() if opts.gil_count else ""
    gil_stat = HERE / "results" / "gil-count.csv"
    if not opts.perf and not no_sampler and not Path(py_spy).exists():
        sys.exit("py-spy not found: pip install py-spy")

    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter

    from nomad_actions.testing import DevServer

    compile_plugin()
    mode = "unsandboxed" if opts.unsandboxed else "sandboxed"
    workload = WORKLOADS[opts.workload]
    out = HERE / "results" / f"profile-{opts.impl}-{mode}-{workload.key}.txt"
    perf_data = out.with_suffix(".perf.data")

    async def go(address: str, server_pid: int) -> None:
        client = await Client.connect(address, data_converter=pydantic_data_converter)
        worker = WorkerProcess(opts.impl, mode, workload, address)
        try:
            worker.wait_ready()
            await drive(client, workload, worker, workload.warmup, server_pid)
            if opts.gil_count:
                cmd = ["perf", "stat", "-x", ",", "-e", gil_event, "-p", str(worker.pid)]
                cmd += ["-o", str(gil_stat)]
            elif opts.perf:
                cmd = ["perf", "record", "-e", "cpu-clock", "-F", str(PERF_HZ), "-g"]
                cmd += ["-p", str(worker.pid), "-o", str(perf_data)]
            else:
                cmd = [py_spy, "record", "--pid", str(worker.pid), "--rate", str(opts.rate)]
                cmd += ["--format", "raw", "--output", str(out), "--nonblocking", "--gil"]
            spy = (
                None
                if opts.switches_only
                else subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
            time.sleep(1.0)
            before = thread_cpu(worker.pid)
            switches_before = thread_switches(worker.pid)
            cpu, units = 0.0, 0
            for _ in range(opts.loads):
                rep = await drive(client, workload, worker, opts.size, server_pid)
                cpu += rep.cpu_s
                units += rep.units
                print(f"  {rep.units / rep.seconds:.1f} {workload.unit}s/s", flush=True)
            after = thread_cpu(worker.pid)
            switches_after = thread_switches(worker.pid)
            if spy is not None:
                spy.send_signal(2)
                spy.wait(60)
        finally:
            worker.stop()
        print(
            f"\n{opts.impl} {mode} {workload.key}: {1000 * cpu / units:.2f} ms CPU/{workload.unit}"
        )
        print("CPU per thread name (live threads; ms per unit):")
        for name in sorted(after, key=lambda n: after[n] - before.get(n, 0), reverse=True):
            delta = after[name] - before.get(name, 0)
            if delta > 0:
                print(f"  {name:<20} {1000 * delta / units:7.3f}")
        print(f"context switches per {workload.unit} (voluntary / involuntary, live threads):")
        total = [0, 0]
        for name, (vol, invol) in sorted(
            switches_after.items(),
            key=lambda kv: kv[1][0] - switches_before[kv[0]][0],
            reverse=True,
        ):
            dv, di = vol - switches_before[name][0], invol - switches_before[name][1]
            total[0] += dv
            total[1] += di
            if dv or di:
                print(f"  {name:<20} {dv / units:8.1f} {di / units:8.1f}")
        print(f"  {'all threads':<20} {total[0] / units:8.1f} {total[1] / units:8.1f}")
        if opts.gil_count:
            count = gil_count(gil_stat)
            print(f"GIL acquisitions (take_gil calls) per {workload.unit}: {count / units:.1f}")
            return
        if opts.switches_only:
            return
        if opts.perf:
            perf_report(perf_data, units, workload.unit)
            return
        own: dict[str, int] = collections.Counter()
        inclusive: dict[str, int] = collections.Counter()
        roots: dict[str, int] = collections.Counter()
        for line in out.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            own[component(stack)] += int(count)
            for name in {name for name, fragment in COMPONENTS if fragment in stack}:
                inclusive[name] += int(count)
            # Python threads start in Thread._bootstrap (or <module>: the main thread); any
            # other root is Python code that a native thread runs (e.g. our bridges called
            # from tokio's blocking pool, or temporalio's Rust bridge completing futures).
            python = stack.startswith(("Thread._bootstrap", "<module>"))
            root = "Python threads" if python else "native (Rust) threads"
            roots[root] += int(count)
        total = sum(own.values()) or 1
        print(
            f"GIL held (py-spy --gil, {total} samples at {opts.rate} Hz): "
            f"~{1000 * total / opts.rate / units:.2f} ms per {workload.unit}"
        )
        for root, count in roots.most_common():
            print(f"  on {root:<34} {100 * count / total:5.1f} %")
        print("by component (self = innermost known frame, incl = any frame in it):")
        for name, count in own.most_common():
            incl = 100 * inclusive[name] / total
            print(f"  {name:<36} self {100 * count / total:5.1f} %  incl {incl:5.1f} %")
        print(f"collapsed stacks: {out}")

    with DevServer() as server:
        assert server.process is not None
        asyncio.run(go(server.address, server.process.pid))


if __name__ == "__main__":
    main()

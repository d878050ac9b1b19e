"""Prometheus metrics of `nomad-actions worker` (sdk-core's own exporter) compared with the
official temporalio worker's on the same workload, checked by promtool and scraped by a real
Prometheus; and the resource-based tuner's activity slots, seen in those metrics.

Prometheus and promtool come from Debian's `prometheus` package (scripts/test.sh installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from nomad_actions import configure, get_action_result, start_action, terminate_action
from nomad_actions.config import reset_config
from nomad_actions.testing import DevServer, free_port

from .polling import poll
from .worker_processes import START_TIMEOUT, WorkerProcess, worker_environment

SLEEPER = "nomad_actions_procplugin.actions:sleeper_action"
PROC_QUEUE = "nomad-proc-queue"
OFFICIAL_SCRIPT = Path(__file__).with_name("official_metrics_worker.py")
RUNS = 3


@pytest.fixture
def client(temporal_server: DevServer) -> Iterator[DevServer]:
    configure(host=temporal_server.host, port=temporal_server.port)
    yield temporal_server
    reset_config()


@pytest.fixture
def processes() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for proc in started:
        proc.kill()
    print("\n".join(p.report() for p in started))


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def metric_names(text: str) -> set[str]:
    """The metric families an exposition declares (`# TYPE name kind`)."""
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def samples(text: str, name: str, **labels: str) -> list[float]:
    """The values of the samples of `name` whose labels include `labels`."""
    values = []
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            values.append(float(value))
    return values


def run_workload(tmp_path: Path, tag: str) -> None:
    ids = [
        start_action(
            SLEEPER,
            {
                "user_id": "metrics",
                "tag": f"{tag}{i}",
                "marker_dir": str(tmp_path),
                "seconds": 0.05,
            },
        )
        for i in range(RUNS)
    ]
    for wid in ids:
        assert get_action_result(wid, timeout=120) == "slept "


def our_worker(
    server: DevServer, tmp_path: Path, name: str, *options: str, cwd: Path | None = None
) -> WorkerProcess:
    argv = [
        sys.executable, "-m", "nomad_actions", "worker", "--task-queue", PROC_QUEUE,
        "--host", server.host, "--port", str(server.port), *options,
    ]  # fmt: skip
    here = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        return WorkerProcess(argv, tmp_path / f"{name}.log", worker_environment())
    finally:
        os.chdir(here)


def test_metric_names_match_the_official_workers_and_pass_promtool(
    client: DevServer, tmp_path: Path, processes: list[WorkerProcess]
) -> None:
    official_port = free_port()
    official = WorkerProcess(
        [sys.executable, str(OFFICIAL_SCRIPT), client.address, PROC_QUEUE,
         f"127.0.0.1:{official_port}", SLEEPER],
        tmp_path / "official.log",
        worker_environment(),
    )  # fmt: skip
    processes.append(official)
    official.wait_log("ready")
    run_workload(tmp_path, "official")
    theirs = scrape(official_port)
    os.kill(official.pid, signal.SIGTERM)
    official.wait_exit(60)

    ours_port = free_port()
    ours = our_worker(
        client, tmp_path, "ours", "--metrics-bind-address", f"127.0.0.1:{ours_port}"
    ).wait_ready()
    processes.append(ours)
    run_workload(tmp_path, "ours")
    mine = scrape(ours_port)

    official_names = metric_names(theirs)
    assert len(official_names) >= 10, theirs
    missing = official_names - metric_names(mine)
    assert not missing, f"the official worker exposes these, ours does not: {sorted(missing)}"
    assert samples(mine, "temporal_workflow_completed", task_queue=PROC_QUEUE) == [float(RUNS)]

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed (scripts/test.sh installs Debian's prometheus)")
    # Lint problems (e.g. counters without `_total`, as temporalio names them) are reported;
    # a malformed exposition fails the parse, which is what this checks.
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=mine, capture_output=True, text=True, timeout=60
    )
    assert "error while linting" not in checked.stderr + checked.stdout, checked.stderr
    assert checked.returncode in (0, 3), (checked.returncode, checked.stdout, checked.stderr)


def test_a_real_prometheus_scrapes_the_worker(
    client: DevServer, tmp_path: Path, processes: list[WorkerProcess]
) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed (scripts/test.sh installs Debian's prometheus)")
    metrics_port = free_port()
    ours = our_worker(
        client, tmp_path, "ours", "--metrics-bind-address", f"127.0.0.1:{metrics_port}"
    ).wait_ready()
    processes.append(ours)
    run_workload(tmp_path, "scraped")

    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n  - job_name: nomad-actions\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n"
    )
    prometheus = WorkerProcess(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        tmp_path / "prometheus.log",
        dict(os.environ),
    )  # fmt: skip
    processes.append(prometheus)

    def query(expr: str) -> list[dict[str, object]]:
        url = f"http://127.0.0.1:{prom_port}/api/v1/query?query={expr}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                data = json.load(response)
        except OSError:
            return []
        return list(data["data"]["result"])

    up = poll(lambda: query("up") and query("up")[0]["value"][1] == "1", 90, "up == 1",
              prometheus.report)  # fmt: skip
    assert up
    completed = poll(
        lambda: query("temporal_workflow_completed"), 60, "the scraped metric", prometheus.report
    )
    assert float(completed[0]["value"][1]) == RUNS  # type: ignore[index]


def saturate(tmp_path: Path, tag: str, count: int, seconds: float) -> list[str]:
    return [
        start_action(
            SLEEPER,
            {
                "user_id": "tuner",
                "tag": f"{tag}{i}",
                "marker_dir": str(tmp_path),
                "seconds": seconds,
            },
        )
        for i in range(count)
    ]


def started_markers(tmp_path: Path, tag: str) -> int:
    return len(list(tmp_path.glob(f"{tag}*.attempt1.started")))


@pytest.mark.parametrize(
    ("block", "least", "most"),
    [
        # min_activity_slots defaults to pool_size, as upstream: 2 of 2.
        ("pool_size: 2\n    max_activity_slots: 2", 2, 2),
        ("pool_size: 3\n    max_activity_slots: 4\n    activity_ramp_throttle: 0", 3, 4),
    ],
)
def test_tuner_slots_follow_the_worker_block(
    client: DevServer,
    tmp_path: Path,
    processes: list[WorkerProcess],
    block: str,
    least: int,
    most: int,
) -> None:
    (tmp_path / "nomad.yaml").write_text(
        "temporal:\n  cpu_worker:\n    " + block + "\n"
    )  # max_concurrent_activities is unset: the resource-based tuner decides
    metrics_port = free_port()
    ours = our_worker(
        client,
        tmp_path,
        "tuned",
        "--metrics-bind-address",
        f"127.0.0.1:{metrics_port}",
        cwd=tmp_path,
    ).wait_ready()
    processes.append(ours)
    ids = saturate(tmp_path, "slot", most + 2, seconds=20)
    try:
        poll(lambda: started_markers(tmp_path, "slot") >= least, START_TIMEOUT,
             f"{least} activities running", ours.report)  # fmt: skip

        def used() -> float | None:
            values = samples(
                scrape(metrics_port),
                "temporal_worker_task_slots_used",
                worker_type="ActivityWorker",
            )
            return values[0] if values and values[0] >= least else None

        in_use = poll(used, 60, "activity slots in use in the metrics", ours.report)
        assert least <= in_use <= most
        assert least <= started_markers(tmp_path, "slot") <= most, "never more than the max"
    finally:
        for wid in ids:
            terminate_action(wid, reason="test done")

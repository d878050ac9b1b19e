"""`nomad-actions worker` in a NOMAD 2.0 distro's place: configured by nomad.yaml alone, probed
by the distro's health check (`curl --fail http://localhost:8080/health`), refusing unsafe or
broken settings. Real dev server, real worker processes, real curl."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import nomad_actions
from nomad_actions import configure, get_action_result, start_action
from nomad_actions.config import reset_config
from nomad_actions.testing import DevServer, find_temporal_cli, free_port

from .polling import poll
from .worker_processes import START_TIMEOUT, WorkerProcess

SLEEPER = "nomad_actions_procplugin.actions:sleeper_action"
PROC_QUEUE = "nomad-proc-queue"
SECRET = "distro-test-api-secret"

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def plain_environment() -> dict[str, str]:
    """This process's environment without any NOMAD_* variable: nomad.yaml says it all."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOMAD_")}
    env["NOMAD_ACTIONS_CORE_LOG"] = "warn"
    return env


def nomad_yaml(server: DevServer, *, health_port: int | None = None, extra: str = "") -> str:
    lines = [
        "temporal:",
        f"  host: {server.host}",
        f"  port: {server.port}",
        "  cpu_worker:",
        "    max_concurrent_activities: 4",
        "    healthcheck_host: 127.0.0.1",
        f"    healthcheck_port: {health_port or free_port()}",
        "services:",
        f"  api_secret: {SECRET}",
    ]
    return "\n".join(lines) + "\n" + extra


class Distro:
    """A directory with a nomad.yaml, and the worker processes started in it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.workers: list[WorkerProcess] = []

    def write(self, text: str) -> Path:
        path = self.root / "nomad.yaml"
        path.write_text(text)
        return path

    def worker(self, *options: str, env: dict[str, str] | None = None) -> WorkerProcess:
        argv = [sys.executable, "-m", "nomad_actions", "worker", "--task-queue", PROC_QUEUE]
        log = self.root / f"worker-{len(self.workers)}.log"
        # The working directory is the distro's: that is where nomad.yaml is found.
        cwd = os.getcwd()
        os.chdir(self.root)
        try:
            worker = WorkerProcess([*argv, *options], log, env or plain_environment())
        finally:
            os.chdir(cwd)
        self.workers.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.workers:
            if worker.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGCONT)
            worker.kill()
        print("\n".join(w.report() for w in self.workers))


@pytest.fixture
def distro(tmp_path: Path) -> Iterator[Distro]:
    d = Distro(tmp_path)
    yield d
    d.close()


@pytest.fixture
def production_client(temporal_server: DevServer) -> Iterator[None]:
    """The test's own client, configured like the distro (encrypted payloads)."""
    configure(
        host=temporal_server.host, port=temporal_server.port, api_secret=SECRET, development=False
    )
    yield
    reset_config()


def curl(port: int, timeout: float = 5.0) -> tuple[int, str]:
    """`curl --fail` the health endpoint: (curl's exit code, body)."""
    done = subprocess.run(
        ["curl", "--fail", "--silent", "--show-error", "--max-time", str(timeout),
         f"http://127.0.0.1:{port}/health"],
        capture_output=True,
        text=True,
        timeout=timeout + 10,
    )  # fmt: skip
    return done.returncode, done.stdout


def status_code(port: int) -> str:
    """The HTTP status curl sees (000 when nothing answered in time)."""
    done = subprocess.run(
        ["curl", "--silent", "--output", "/dev/null", "--write-out", "%{http_code}",
         "--max-time", "3", f"http://127.0.0.1:{port}/health"],
        capture_output=True,
        text=True,
        timeout=15,
    )  # fmt: skip
    return done.stdout.strip()


def sleeper_input(tmp_path: Path, tag: str, seconds: float, **extra: object) -> dict[str, object]:
    return {
        "user_id": "distro",
        "tag": tag,
        "marker_dir": str(tmp_path),
        "seconds": seconds,
        **extra,
    }


def wait_started(tmp_path: Path, tag: str, worker: WorkerProcess) -> None:
    poll(
        lambda: (tmp_path / f"{tag}.attempt1.started").exists(),
        START_TIMEOUT,
        f"activity {tag} to start",
        worker.report,
    )


def test_worker_configured_by_nomad_yaml_alone_runs_an_action_and_answers_health(
    distro: Distro, temporal_server: DevServer, production_client: None, tmp_path: Path
) -> None:
    health_port = free_port()
    distro.write(nomad_yaml(temporal_server, health_port=health_port))
    worker = distro.worker().wait_ready()
    assert f"{temporal_server.host}:{temporal_server.port}" in worker.log()
    assert curl(health_port) == (0, "OK")
    wid = start_action(SLEEPER, sleeper_input(tmp_path, "yaml", 0.1, value="from nomad.yaml"))
    assert get_action_result(wid, timeout=120) == "slept from nomad.yaml"
    history = subprocess.run(
        [find_temporal_cli(), "workflow", "show", "--address", temporal_server.address,
         "--workflow-id", wid, "--output", "json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert history.returncode == 0, history.stderr
    assert "from nomad.yaml" not in history.stdout, "payloads are encrypted in production mode"
    assert "YmluYXJ5L2VuY3J5cHRlZA==" in history.stdout  # base64 of binary/encrypted


def test_environment_overrides_the_file(distro: Distro, temporal_server: DevServer) -> None:
    # The file names a port nothing listens on; the distro's environment corrects it.
    text = nomad_yaml(temporal_server).replace(f"port: {temporal_server.port}", "port: 1")
    distro.write(text)
    env = plain_environment()
    env["NOMAD_TEMPORAL_PORT"] = str(temporal_server.port)
    env["NOMAD_TEMPORAL_CPU_WORKER"] = '{"healthcheck_enabled": false}'
    worker = distro.worker(env=env).wait_ready()
    assert f"at {temporal_server.host}:{temporal_server.port}" in worker.log()
    assert "Health check at" not in worker.log()


def test_a_broken_file_stops_the_worker_naming_file_and_key(
    distro: Distro, temporal_server: DevServer
) -> None:
    distro.write(
        nomad_yaml(temporal_server).replace(
            "max_concurrent_activities: 4", "max_concurrent_activities: lots"
        )
    )
    worker = distro.worker()
    assert worker.wait_exit(START_TIMEOUT) == 2
    log = worker.log()
    assert "nomad.yaml" in log and "temporal.cpu_worker.max_concurrent_activities" in log


def test_production_mode_without_a_secret_refuses_to_start(
    distro: Distro, temporal_server: DevServer
) -> None:
    distro.write(nomad_yaml(temporal_server).replace(f"  api_secret: {SECRET}\n", ""))
    worker = distro.worker()
    assert worker.wait_exit(START_TIMEOUT) == 2
    assert "services.api_secret" in worker.log()


def test_health_port_taken_is_a_clear_error(distro: Distro, temporal_server: DevServer) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        distro.write(nomad_yaml(temporal_server, health_port=port))
        worker = distro.worker()
        assert worker.wait_exit(START_TIMEOUT) == 2
    assert f"cannot serve the health check at 127.0.0.1:{port}" in worker.log()


def test_no_health_endpoint_in_development_mode_unless_asked(
    distro: Distro, temporal_server: DevServer
) -> None:
    health_port = free_port()
    distro.write(
        nomad_yaml(temporal_server, health_port=health_port).replace(
            "services:\n", "services:\n  mode: development\n"
        )
    )
    worker = distro.worker().wait_ready()
    assert status_code(health_port) == "000", "development mode serves no health check"
    worker.kill()
    other = free_port()
    distro.worker("--health-port", str(other)).wait_ready()
    assert curl(other) == (0, "OK")


def test_health_is_503_while_draining(
    distro: Distro, temporal_server: DevServer, production_client: None, tmp_path: Path
) -> None:
    health_port = free_port()
    distro.write(nomad_yaml(temporal_server, health_port=health_port))
    worker = distro.worker("--graceful-shutdown-timeout", "60").wait_ready()
    wid = start_action(SLEEPER, sleeper_input(tmp_path, "drain", 8))
    wait_started(tmp_path, "drain", worker)
    assert curl(health_port) == (0, "OK")
    os.kill(worker.pid, signal.SIGTERM)
    poll(lambda: status_code(health_port) == "503", 30, "503 while draining", worker.report)
    code, _ = curl(health_port)
    assert code == 22, "curl --fail fails on 503"
    assert worker.alive(), "still draining the running activity"
    assert worker.wait_exit(90) == 0
    assert (tmp_path / "drain.attempt1.finished").exists(), "the activity was let finish"
    nomad_actions.terminate_action(wid, reason="no worker is left to finish the workflow")


def test_health_is_not_ok_while_python_holds_the_gil(
    distro: Distro, temporal_server: DevServer, production_client: None, tmp_path: Path
) -> None:
    health_port = free_port()
    distro.write(nomad_yaml(temporal_server, health_port=health_port))
    worker = distro.worker().wait_ready()
    assert curl(health_port) == (0, "OK")
    wid = start_action(SLEEPER, sleeper_input(tmp_path, "gil", 12, hold_gil=True))
    wait_started(tmp_path, "gil", worker)
    seen = poll(
        lambda: (code := status_code(health_port)) != "200" and code,
        20,
        "the health check to fail while the GIL is held",
        worker.report,
    )
    assert seen == "503", "Rust answers, and says the Python side is stuck"
    poll(lambda: status_code(health_port) == "200", 60, "200 once released", worker.report)
    assert get_action_result(wid, timeout=60) == "slept "


def test_health_probe_times_out_while_the_process_is_stopped(
    distro: Distro, temporal_server: DevServer
) -> None:
    health_port = free_port()
    distro.write(nomad_yaml(temporal_server, health_port=health_port))
    worker = distro.worker().wait_ready()
    assert curl(health_port) == (0, "OK")
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        code, body = curl(health_port, timeout=2)
        assert code == 28, "curl gives up after --max-time: the probe fails"
        assert body == "" and time.monotonic() - started >= 1.5
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    poll(lambda: curl(health_port)[0] == 0, 30, "OK again after SIGCONT", worker.report)


def test_health_is_503_once_a_poll_loop_has_died(temporal_server: DevServer) -> None:
    """The server refuses a poll for good (a reserved task queue name, InvalidArgument). The
    client retries "fatal" long-poll errors for a minute, then core gives up and the activity
    loop dies: the endpoint says 503 from then on, and the worker stops within its grace
    period instead of hanging in core's shutdown."""
    from nomad_actions.worker import Worker
    from nomad_actions_procplugin.activities import sleep_work

    config = configure(host=temporal_server.host, port=temporal_server.port, development=True)
    port = free_port()
    try:
        worker = Worker(
            "/_sys/reserved-by-temporal",
            activities=[sleep_work],
            config=config,
            health_address=f"127.0.0.1:{port}",
            graceful_shutdown_timeout=1,
        )
        with pytest.raises(nomad_actions.RPCError, match="reserved prefix") as info, worker:
            assert worker.health_address == f"127.0.0.1:{port}"
            assert curl(port) == (0, "OK")
            poll(lambda: status_code(port) == "503", 150, "503 after the loop died")
            assert worker._finished.wait(60), "the worker stops instead of hanging"
            assert curl(port)[0] == 22, "still 503 while the worker object lives"
        assert info.value.code == 3  # INVALID_ARGUMENT
    finally:
        reset_config()

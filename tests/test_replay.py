"""`nomad-actions replay`: running actions' histories replayed against installed plugin
code. A waiting action (a signal-waiting workflow, run by a real worker) replays clean
against the plugin as installed, and fails, naming its workflow id, against a copy of the
plugin whose workflow code changed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from temporalio.client import WorkflowExecutionStatus

import nomad_actions_testplugin
from nomad_actions import get_action_progress, signal_action, start_action, terminate_action
from nomad_actions.testing import DevServer

from .conftest import WAITER
from .polling import wait_until

pytestmark = pytest.mark.usefixtures("official_worker")


def replay(
    server: DevServer, *args: str, plugin_path: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOMAD_")}
    env["NOMAD_SERVICES_MODE"] = "development"  # plain payloads, as the test worker sends
    if plugin_path is not None:
        # The changed copy comes first on the path, ahead of the installed plugin.
        env["PYTHONPATH"] = os.pathsep.join([str(plugin_path), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "nomad_actions", "replay", "--host", server.host,
         "--port", str(server.port), *args],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def changed_plugin(tmp_path: Path) -> Path:
    """A copy of the test plugin whose WaiterWorkflow now runs an activity before it
    waits: a change that is not replay-safe (a new command before the timer)."""
    source = Path(nomad_actions_testplugin.__file__).parent
    root = tmp_path / "changed"
    shutil.copytree(source, root / "nomad_actions_testplugin")
    workflows = root / "nomad_actions_testplugin" / "workflows.py"
    text = workflows.read_text()
    marker = "    async def run(self, data: WaitInput) -> str:\n        try:\n"
    assert marker in text
    text = text.replace(
        marker,
        "    async def run(self, data: WaitInput) -> str:\n"
        '        await workflow.execute_activity("make_greeting", start_to_close_timeout='
        "timedelta(seconds=5))\n"
        "        try:\n",
    )
    workflows.write_text(text)
    return root


@pytest.fixture
def waiting(temporal: DevServer) -> str:
    wid = start_action(WAITER, {"user_id": f"replay-{uuid.uuid4().hex[:8]}", "seconds": 300})
    # The worker has run the first workflow task (its timer is in the history).
    wait_until(
        lambda: (
            get_action_progress(wid).status == WorkflowExecutionStatus.RUNNING
            and "EVENT_TYPE_TIMER_STARTED" in _event_types(temporal, wid)
        ),
        "the waiter to wait",
        timeout=60,
    )
    yield wid
    if get_action_progress(wid).status == WorkflowExecutionStatus.RUNNING:
        terminate_action(wid)


def _event_types(server: DevServer, wid: str) -> str:
    from temporalio.api.enums.v1 import EventType

    from .test_reliability_helpers import history

    return " ".join(EventType.Name(e.event_type) for e in history(server.address, wid))


def test_unchanged_code_replays_clean(temporal: DevServer, waiting: str) -> None:
    out = replay(temporal, "--action", WAITER, "--json")
    assert out.returncode == 0, out.stderr
    outcomes = {o["workflow_id"]: o for o in json.loads(out.stdout)}
    assert outcomes[waiting]["ok"] is True
    assert outcomes[waiting]["workflow_type"] == "WaiterWorkflow"


def test_changed_code_fails_naming_the_workflow(
    temporal: DevServer, waiting: str, tmp_path: Path
) -> None:
    out = replay(temporal, "--workflow-id", waiting, plugin_path=changed_plugin(tmp_path))
    assert out.returncode == 1, out.stdout + out.stderr
    line = next(line for line in out.stderr.splitlines() if waiting in line)
    assert line.startswith(f"FAIL  {waiting} (WaiterWorkflow): non-determinism:")
    assert "Nondeterminism" in line
    # Only running actions by default: once it has ended, a plain run finds nothing to do.
    signal_action(waiting, "finish", "done")
    wait_until(
        lambda: get_action_progress(waiting).status == WorkflowExecutionStatus.COMPLETED,
        "the waiter to finish",
    )
    again = replay(
        temporal, "--action", WAITER, "--since", "1h", plugin_path=changed_plugin(tmp_path / "x")
    )
    assert again.returncode == 1 and waiting in again.stderr


def test_since_and_bad_since(temporal: DevServer) -> None:
    out = replay(temporal, "--since", "soon")
    assert out.returncode == 2
    assert "expected an age like 30m, 2h, 7d or an ISO time" in out.stderr


def test_encrypted_history_is_decrypted_with_the_api_secret(temporal: DevServer) -> None:
    """A waiter started with upstream NOMAD's Fernet codec and run by our worker with the
    same secret: replay decrypts its history with the secret (and fails, naming the codec,
    with another one)."""
    import asyncio
    import dataclasses

    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter

    from nomad_actions.config import ConnectionConfig
    from nomad_actions.worker import Worker

    from .test_encryption import ReferenceCodec

    secret, other_secret = "replay-test-secret", "another-deployment-secret"

    queue = f"replay-encrypted-{uuid.uuid4().hex[:6]}"
    config = ConnectionConfig(host=temporal.host, port=temporal.port, api_secret=secret)
    wid = f"replay-encrypted-{uuid.uuid4()}"

    async def start() -> None:
        converter = dataclasses.replace(
            pydantic_data_converter, payload_codec=ReferenceCodec(secret)
        )
        client = await Client.connect(temporal.address, data_converter=converter)
        await client.start_workflow(
            "WaiterWorkflow", {"user_id": "enc", "seconds": 300}, id=wid, task_queue=queue
        )

    def run(secret: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NOMAD_")}
        env.update(NOMAD_SERVICES_MODE="production", NOMAD_SERVICES_API_SECRET=secret)
        return subprocess.run(
            [sys.executable, "-m", "nomad_actions", "replay", "--host", temporal.host,
             "--port", str(temporal.port), "-w", wid],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    with Worker(queue, actions=[WAITER], config=config):
        asyncio.run(start())
        try:
            wait_until(
                lambda: "EVENT_TYPE_TIMER_STARTED" in _event_types(temporal, wid),
                "the encrypted waiter to wait",
                timeout=60,
            )
            ok = run(secret)
            assert ok.returncode == 0, ok.stdout + ok.stderr
            assert f"ok    {wid} (WaiterWorkflow)" in ok.stdout
            wrong = run(other_secret)
            assert wrong.returncode == 1, wrong.stdout + wrong.stderr
            assert wid in wrong.stderr and "could not decrypt" in wrong.stderr
        finally:
            terminate_action(wid)

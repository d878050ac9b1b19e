"""A plugin written with nomad-lab 2.0.0's own ``ActionEntryPoint``/``Action`` (users, groups,
priority, ``nexus_service_handlers=[]``) on our worker, started by upstream's own client code
configured by a ``nomad.yaml`` with a payload codec key and key id; and the reverse: our
client against the official temporalio worker with upstream's codec. Plus the NOMAD worker
set-up: its failure path (no MongoDB here) and ``--no-nomad-setup``.

Upstream's code runs in its own processes (``upstream.py``): nomad reads ``NOMAD_CONFIG`` once
at import.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus

import nomad_actions
from nomad_actions import configure, get_action_result, start_action
from nomad_actions.config import reset_config
from nomad_actions.testing import DevServer, free_port

from ..polling import poll, wait_until
from ..worker_processes import WorkerPool, worker_environment

SAMPLE = "nomad_actions_nomad20plugin.entry_points:sample_action"
REVERSE = "nomad_actions_nomad20plugin.entry_points:reverse_action"
ASK = "nomad_actions_nomad20plugin.entry_points:ask_action"
API_SECRET = "nomad20-test-api-secret-at-least-32-chars"
CODEC_KEY = "nomad20-payload-codec-key-at-least-32-chars"
KEY_ID = "k-2026-12"
UPSTREAM = Path(__file__).with_name("upstream.py")


@pytest.fixture(scope="module")
def server() -> Iterator[DevServer]:
    with DevServer() as dev:
        yield dev


@pytest.fixture
def nomad_env(server: DevServer, tmp_path: Path) -> dict[str, str]:
    """A nomad.yaml as an Oasis would have it, and the environment both sides read."""
    fs = tmp_path / "fs"
    config = {
        "services": {"api_secret": API_SECRET},
        "temporal": {
            "host": server.host,
            "port": server.port,
            "payload_codec_key": CODEC_KEY,
            "payload_codec_key_id": KEY_ID,
        },
        "fs": {name: str(fs / name) for name in ("actions", "public", "staging", "tmp")},
        "mongo": {"host": "127.0.0.1", "port": free_port()},  # nothing listens there
    }
    path = tmp_path / "nomad.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    # Our side reads the same settings from the environment (nomad.yaml support: issue 12).
    return worker_environment(
        {
            "NOMAD_CONFIG": str(path),
            "NOMAD_SERVICES_API_SECRET": API_SECRET,
            "NOMAD_TEMPORAL_PAYLOAD_CODEC_KEY": CODEC_KEY,
            "NOMAD_TEMPORAL_PAYLOAD_CODEC_KEY_ID": KEY_ID,
            "NOMAD_FS_ACTIONS": str(fs / "actions"),
        }
    )


@pytest.fixture
def pool(server: DevServer, tmp_path: Path) -> Iterator[WorkerPool]:
    configure(
        host=server.host,
        port=server.port,
        api_secret=API_SECRET,
        payload_codec_key=CODEC_KEY,
        payload_codec_key_id=KEY_ID,
    )
    workers = WorkerPool(server, tmp_path, "cpu-task-queue")
    yield workers
    workers.close()
    reset_config()


def _upstream(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(UPSTREAM), *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )


def _history(server: DevServer, workflow_id: str) -> tuple[list[Any], Any]:
    async def fetch() -> tuple[list[Any], Any]:
        client = await Client.connect(server.address)  # no codec: what the server stores
        handle = client.get_workflow_handle(workflow_id)
        events = [e async for e in handle.fetch_history_events()]
        return events, (await handle.describe()).raw_description.workflow_execution_info

    return asyncio.run(fetch())


def test_upstream_client_starts_a_2_0_plugin_on_our_worker(
    server: DevServer, nomad_env: dict[str, str], pool: WorkerPool, tmp_path: Path
) -> None:
    worker = pool.launch(("--no-nomad-setup",), env=nomad_env)
    assert "Skipping NOMAD's worker setup" in worker.log()
    done = _upstream(nomad_env, "start", SAMPLE, "nomad20-user", "TiO2")
    assert done.returncode == 0, done.stderr + pool.reports()
    answer = json.loads(done.stdout.splitlines()[-1])
    wid = pool.track(answer["workflow_id"])
    # upstream's get_result: the serialized dict
    assert answer["result"] == {"message": "TiO2 looks fine", "sample_upper": "TIO2"}
    assert nomad_actions.manager.get_action_result(wid, "nomad20-user") == answer["result"]

    events, info = _history(server, wid)
    payloads = [
        *events[0].workflow_execution_started_event_attributes.input.payloads,
        *[
            p
            for e in events
            if e.HasField("workflow_execution_completed_event_attributes")
            for p in e.workflow_execution_completed_event_attributes.result.payloads
        ],
    ]
    assert len(payloads) == 2
    for payload in payloads:
        assert payload.metadata["encoding"] == b"binary/encrypted"
        assert payload.metadata["encryption-key-id"] == KEY_ID.encode()
    assert (info.priority.priority_key, info.priority.fairness_key) == (2, "nomad20-user")

    # upstream's WorkflowRoutingHandler wrote the activity's line to upstream's path
    log = tmp_path / "fs" / "actions" / wid / "nomad_system" / "logs" / f"{wid}.log"
    wait_until(log.exists, "the action log")
    assert "Describing sample TiO2 for nomad20-user" in log.read_text()


def test_our_client_against_the_official_worker_with_upstreams_codec(
    server: DevServer, nomad_env: dict[str, str], pool: WorkerPool, tmp_path: Path
) -> None:
    queue = "nomad20-reverse-queue"
    with open(tmp_path / "official.log", "w") as log:
        official = subprocess.Popen(
            [sys.executable, str(UPSTREAM), "official-worker", queue, REVERSE],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=nomad_env,
        )
    try:
        assert official.stdout is not None
        seen = []
        for line in official.stdout:  # nomad logs to stdout too; "ready" comes last
            seen.append(line)
            if line.strip() == "ready":
                break
        assert seen and seen[-1].strip() == "ready", (
            "".join(seen) + (tmp_path / "official.log").read_text()
        )
        wid = pool.track(start_action(REVERSE, {"user_id": "someone", "sample": "NaCl"}))
        result = get_action_result(wid, timeout=60)
        assert (result.message, result.sample_upper) == ("NaCl looks fine", "NACL")
        _, info = _history(server, wid)
        assert info.priority.priority_key == 4
    finally:
        official.terminate()
        official.communicate(timeout=30)  # also closes its stdout pipe


def test_upstreams_signal_input_activity_is_served(
    nomad_env: dict[str, str], pool: WorkerPool
) -> None:
    """Upstream's request_signal_input runs an activity; our worker registers it (as
    upstream's workers), so it runs (and fails: no MongoDB here) instead of waiting forever."""
    pool.launch(("--no-nomad-setup",), env=nomad_env)
    wid = pool.track(start_action(ASK, {"user_id": "asker"}))

    def ended() -> bool:
        return nomad_actions.get_action_status(wid) != WorkflowExecutionStatus.RUNNING

    # Upstream's activity needs MongoDB (not here): it fails its 3 attempts, then the action.
    poll(ended, 90, "the action to end", pool.reports)
    with pytest.raises(nomad_actions.ActionFailedError) as failed:
        get_action_result(wid, timeout=30)
    detail = " ".join([failed.value.failure_message, *failed.value.causes])
    assert "CollectionWasNotInitialized" in detail or "Activity task failed" in detail, detail
    assert "not registered" not in detail
    assert "request_signal_input_activity" in pool.reports()


def test_nomad_setup_failure_names_what_it_could_not_reach(
    nomad_env: dict[str, str], pool: WorkerPool
) -> None:
    config = json.loads(Path(nomad_env["NOMAD_CONFIG"]).read_text())
    mongo_port = config["mongo"]["port"]
    # A short server-selection timeout: the failure takes seconds, not pymongo's 30 s.
    config["mongo"]["host"] = f"mongodb://127.0.0.1:{mongo_port}/?serverSelectionTimeoutMS=1500"
    Path(nomad_env["NOMAD_CONFIG"]).write_text(json.dumps(config))
    worker = pool.launch((), env=nomad_env, ready=False)
    code = worker.wait_exit(120)
    assert code == 1, worker.report()
    log = worker.log()
    assert "NOMAD worker setup failed" in log and f"127.0.0.1:{mongo_port}" in log
    assert "--no-nomad-setup" in log and "Traceback" not in log

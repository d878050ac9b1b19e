"""The nomad-actions worker, end to end: real plugin actions on a real dev server.

The actions come from the worker plugin (tests/plugins/nomad_actions_workerplugin, task
queue 'nomad-worker-queue'), written with plain temporalio decorators as for upstream NOMAD.
This module starts its own dev server (the session one has the official worker of the client
tests on another queue) and runs `nomad_actions.worker.Worker` in this process. Actions are
started and followed with our client; a few tests use temporalio's official client and worker
as peers. A local HTTP server stands in for PubChem.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import temporalio.worker
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter

import nomad_actions
from nomad_actions import (
    Action,
    ActionFailedError,
    configure,
    get_action_progress,
    get_action_result,
    get_action_result_async,
    get_action_status,
    get_config,
    list_actions,
    query_action,
    register_action,
    signal_action,
    start_action,
    start_action_async,
    stop_action,
    terminate_action,
    unregister_action,
)
from nomad_actions.config import reset_config
from nomad_actions.testing import DevServer
from nomad_actions.worker import Worker
from nomad_actions_workerplugin import ACTIVITIES_QUEUE, OFFICIAL_QUEUE, WORKER_QUEUE
from nomad_actions_workerplugin.activities import (
    PUBCHEM_BASE_URL_ENV,
    get_cid,
    get_request,
    inspect_secret,
    scale,
    shout,
    summarize_batch,
    where_am_i,
)
from nomad_actions_workerplugin.models import (
    BatchInput,
    BatchSummary,
    CancelInput,
    CollectorInput,
    CollectorOutput,
    CounterInput,
    Credentials,
    FanOutInput,
    InfoInput,
    MaskedCredentials,
    Point,
    PubChemInput,
    RemoteInput,
    RetryInput,
    Sample,
    SecretInput,
    SecretReport,
    ThreadsInput,
    TimeoutInput,
)
from nomad_actions_workerplugin.workflows import (
    BatchWorkflow,
    PrimitivesWorkflow,
    PubChemWorkflow,
    RemoteCallerWorkflow,
    SecretWorkflow,
)

from .polling import wait_until

PLUGIN = "nomad_actions_workerplugin.actions"
PUBCHEM = f"{PLUGIN}:pubchem_action"
SECRETS = f"{PLUGIN}:secret_action"
BATCH = f"{PLUGIN}:batch_action"
PRIMITIVES = f"{PLUGIN}:primitives_action"
FANOUT = f"{PLUGIN}:fanout_action"
INFO = f"{PLUGIN}:info_action"
COLLECTOR = f"{PLUGIN}:collector_action"
COUNTER = f"{PLUGIN}:counter_action"
THREADS = f"{PLUGIN}:threads_action"
RETRY = f"{PLUGIN}:retry_action"
TIMEOUT = f"{PLUGIN}:timeout_action"
CANCELLABLE = f"{PLUGIN}:cancellable_action"

# Generous: a loaded 2-core machine may take seconds for what usually takes milliseconds.
RESULT_TIMEOUT = 60.0

Status = WorkflowExecutionStatus


# -- helpers ----------------------------------------------------------------------------------


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def status_is(workflow_id: str, status: WorkflowExecutionStatus) -> Callable[[], bool]:
    return lambda: get_action_status(workflow_id) == status


def make_batch(user_id: str) -> BatchInput:
    return BatchInput(
        user_id=user_id,
        upload_id="upload-batch",
        lab="Lab Ω",
        samples=[
            Sample("quartz", "SiO2", 60.08, Point(0.0, 1.0), ["oxide", "mineral"]),
            Sample("rutile", "TiO2", 79.87, Point(2.0, 3.0), ["oxide"]),
            Sample("halite", "NaCl", 58.44, Point(4.0, -1.0)),
        ],
    )


def make_secret_input(user_id: str) -> SecretInput:
    return SecretInput(
        user_id=user_id,
        upload_id="upload-secret",
        credentials=Credentials(username="ada", api_key="s3cr3t-key"),
        masked=MaskedCredentials(username="bob", api_key="never-leaves"),
        requested_at=datetime(2024, 5, 17, 12, 30, tzinfo=timezone.utc),
    )


def run_official_client(address: str, fn: Callable[[Client], Any]) -> Any:
    """Runs `await fn(client)` with an official temporalio client (Pydantic converter)."""

    async def main() -> Any:
        client = await Client.connect(address, data_converter=pydantic_data_converter)
        return await fn(client)

    return asyncio.run(main())


# -- a local stand-in for PubChem ---------------------------------------------------------------


#: What the fake PubChem knows: name -> (CID, title, SMILES).
COMPOUNDS = {
    "water": (962, "Water", "O"),
    "ethanol": (702, "Ethanol", "CCO"),
    "caffeine": (2519, "Caffeine", "CN1C=NC2=C1C(=O)N(C(=O)N2C)C"),
}


class FakePubChem:
    """Answers the two PUG REST calls of the PubChem action, and records every request."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.unavailable: dict[str, int] = {}  # path -> how many 503 answers before success
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = fake.answer(self.path)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="fake-pubchem", daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/rest/pug"

    def answer(self, path: str) -> tuple[int, Any]:
        with self.lock:
            self.requests.append(path)
            if self.unavailable.get(path, 0) > 0:
                self.unavailable[path] -= 1
                return 503, {"Fault": {"Code": "PUGREST.ServerBusy"}}
        parts = path.split("/")
        # /rest/pug/compound/name/<name>/cids/JSON
        if parts[3:5] == ["compound", "name"] and parts[6:] == ["cids", "JSON"]:
            compound = COMPOUNDS.get(parts[5].lower())
            if compound:
                return 200, {"IdentifierList": {"CID": [compound[0]]}}
        # /rest/pug/compound/cid/<cid>/property/Title,SMILES/JSON
        if parts[3:5] == ["compound", "cid"] and parts[6:] == ["property", "Title,SMILES", "JSON"]:
            for cid, title, smiles in COMPOUNDS.values():
                if parts[5] == str(cid):
                    row = {"CID": cid, "Title": title, "SMILES": smiles}
                    return 200, {"PropertyTable": {"Properties": [row]}}
        return 404, {"Fault": {"Code": "PUGREST.NotFound", "Message": "No CID found"}}

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def worker_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """This module's own dev server."""
    log = tmp_path_factory.mktemp("worker-server") / "temporal.log"
    with DevServer(log_path=log) as server:
        yield server


@pytest.fixture(scope="module")
def worker(worker_server: DevServer) -> Iterator[Worker]:
    """Our worker, in this process, serving every action of the worker plugin."""
    configure(host=worker_server.host, port=worker_server.port)
    try:
        with Worker(WORKER_QUEUE, config=get_config(), graceful_shutdown_timeout=2.0) as w:
            yield w
    finally:
        reset_config()


@pytest.fixture(scope="module")
def fake_pubchem_server() -> Iterator[FakePubChem]:
    fake = FakePubChem()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def pubchem(fake_pubchem_server: FakePubChem, monkeypatch: pytest.MonkeyPatch) -> FakePubChem:
    """Points the PubChem activities (run by this process's worker) at the fake server."""
    monkeypatch.setenv(PUBCHEM_BASE_URL_ENV, fake_pubchem_server.base_url)
    with fake_pubchem_server.lock:
        fake_pubchem_server.requests.clear()
        fake_pubchem_server.unavailable.clear()
    return fake_pubchem_server


@pytest.fixture
def extra_action() -> Iterator[Callable[[str, Action], str]]:
    """Registers actions on other queues for one test (for workers besides the module's)."""
    ids: list[str] = []

    def register(action_id: str, action: Action) -> str:
        ids.append(register_action(action, id=action_id))
        return action_id

    yield register
    for action_id in ids:
        unregister_action(action_id)


pytestmark = pytest.mark.usefixtures("worker")


def test_worker_serves_every_plugin_action(worker: Worker) -> None:
    assert worker.task_queue == WORKER_QUEUE
    served = {a.workflow_name for a in worker.actions}
    assert served == {
        "PubChemWorkflow",
        "SecretWorkflow",
        "BatchWorkflow",
        "PrimitivesWorkflow",
        "FanOutWorkflow",
        "InfoWorkflow",
        "CollectorWorkflow",
        "CounterWorkflow",
        "ThreadsWorkflow",
        "RetryWorkflow",
        "TimeoutWorkflow",
        "CancellableWorkflow",
    }
    workflow_names = {w.__name__ for w in worker.workflows}
    assert "ChildWorkflow" in workflow_names  # registered through Action(child_workflows=...)
    assert "RemoteCallerWorkflow" not in workflow_names  # not an action


# -- the docs' PubChem example --------------------------------------------------------------------


def test_pubchem_seed_example_by_name(pubchem: FakePubChem) -> None:
    uid = new_user()
    data = PubChemInput(user_id=uid, upload_id="upload-1", compound="water")
    wid = start_action(action_name=PUBCHEM, data=data)
    result = get_action_result(wid, timeout=RESULT_TIMEOUT)
    assert result == {
        "cid": 962,
        "title": "Water",
        "smiles": "O",
        "upload_id": "upload-1",
        "in_sandbox": True,
    }
    assert pubchem.requests == [
        "/rest/pug/compound/name/water/cids/JSON",
        "/rest/pug/compound/cid/962/property/Title,SMILES/JSON",
    ]
    assert get_action_status(wid) == Status.COMPLETED


def test_pubchem_seed_example_retries_a_busy_server(pubchem: FakePubChem) -> None:
    """The docs' RetryPolicy at work: two 503 answers, then success on attempt 3."""
    path = "/rest/pug/compound/cid/702/property/Title,SMILES/JSON"
    pubchem.unavailable[path] = 2
    wid = start_action(PUBCHEM, {"user_id": new_user(), "upload_id": "u", "cid": 702})
    result = get_action_result(wid, timeout=RESULT_TIMEOUT)
    assert (result["cid"], result["title"], result["smiles"]) == (702, "Ethanol", "CCO")
    assert pubchem.requests == [path, path, path]


def test_application_error_from_activity_fails_the_action(pubchem: FakePubChem) -> None:
    """A 404 becomes a non-retryable ApplicationError: no retry, the action FAILED."""
    data = PubChemInput(user_id=new_user(), upload_id="u", compound="unobtainium")
    wid = start_action(PUBCHEM, data)
    with pytest.raises(ActionFailedError) as info:
        get_action_result(wid, timeout=RESULT_TIMEOUT)
    err = info.value
    assert err.status == Status.FAILED
    assert "PubChem answered HTTP 404" in str(err)
    assert "compound/name/unobtainium/cids/JSON" in str(err)
    assert pubchem.requests == ["/rest/pug/compound/name/unobtainium/cids/JSON"]  # not retried
    assert get_action_status(wid) == Status.FAILED


def test_pubchem_seed_example_unsandboxed(
    pubchem: FakePubChem, extra_action: Callable[[str, Action], str]
) -> None:
    queue = "nomad-worker-unsandboxed"
    action = Action(task_queue=queue, workflow=PubChemWorkflow, activities=[get_cid, get_request])
    action_id = extra_action("workerplugin-tests:pubchem-unsandboxed", action)
    with Worker(queue, actions=[action], sandboxed=False, config=get_config()):
        wid = start_action(
            action_id, PubChemInput(user_id=new_user(), upload_id="u2", compound="Caffeine")
        )
        result = get_action_result(wid, timeout=RESULT_TIMEOUT)
    assert result["in_sandbox"] is False
    assert (result["cid"], result["title"]) == (2519, "Caffeine")
    assert result["smiles"] == COMPOUNDS["caffeine"][2]


# -- payload types ------------------------------------------------------------------------------


def test_pydantic_with_secret_str_both_clients(worker_server: DevServer) -> None:
    """A `SecretStr` with a revealing JSON serializer reaches the activity; a plain one
    arrives as the mask '**********' (see the plugin's models.py). Same with either client."""
    uid = new_user()
    data = make_secret_input(uid)
    wid = start_action(SECRETS, data)
    ours = get_action_result(wid, timeout=RESULT_TIMEOUT)

    async def official(client: Client) -> SecretReport:
        return await client.execute_workflow(
            SecretWorkflow.run,
            data,
            id=f"official-secret-{uuid.uuid4()}",
            task_queue=WORKER_QUEUE,
            execution_timeout=timedelta(seconds=RESULT_TIMEOUT),
        )

    theirs = run_official_client(worker_server.address, official)
    for report in (ours, theirs):
        assert isinstance(report, SecretReport)
        assert report.username == "ada"
        assert report.api_key_sha256 == hashlib.sha256(b"s3cr3t-key").hexdigest()
        assert report.api_key_length == len("s3cr3t-key")
        assert report.masked_api_key == "**********"  # the documented loss
        assert report.token.get_secret_value() == "token-for-ada-10"
        assert "token-for-ada" not in repr(report)
        assert report.requested_at == data.requested_at
    assert ours == theirs


def test_nested_dataclasses(worker_server: DevServer) -> None:
    batch = make_batch(new_user())
    expected = BatchSummary(
        lab="Lab Ω",
        count=3,
        total_mass=198.39,
        heaviest=batch.samples[1],
        centroid=Point(2.0, 1.0),
        tags=["mineral", "oxide"],
    )
    wid = start_action(BATCH, batch)
    result = get_action_result(wid, timeout=RESULT_TIMEOUT)
    assert isinstance(result, BatchSummary)
    assert isinstance(result.heaviest, Sample)
    assert isinstance(result.heaviest.position, Point)
    assert result == expected
    # A dict input validates into the dataclass too.
    wid = start_action(BATCH, asdict(batch))
    assert get_action_result(wid, timeout=RESULT_TIMEOUT) == expected


def test_official_client_runs_workflow_on_our_worker(worker_server: DevServer) -> None:
    """Started by temporalio's own client, typed result decoded by temporalio."""
    batch = make_batch(new_user())

    async def official(client: Client) -> BatchSummary:
        return await client.execute_workflow(
            BatchWorkflow.run,
            batch,
            id=f"official-batch-{uuid.uuid4()}",
            task_queue=WORKER_QUEUE,
            execution_timeout=timedelta(seconds=RESULT_TIMEOUT),
        )

    result = run_official_client(worker_server.address, official)
    assert isinstance(result, BatchSummary)
    assert result == summarize_batch(batch)


def test_primitives_both_clients(worker_server: DevServer) -> None:
    data = {
        "user_id": new_user(),
        "text": "héllo wörld",
        "value": 2.5,
        "factor": 4,
        "words": ["a", "b", "a", "c", "a"],
        "mapping": {"one": 1, "two": 2},
    }
    expected = {
        "user_id": data["user_id"],
        "shouted": "HÉLLO WÖRLD!",
        "scaled": 10.0,
        "scaled_type": "float",
        "counts": {"a": 3, "b": 1, "c": 1},
        "inverted": {"1": "one", "2": "two"},  # JSON object keys are strings
        "inverted_key_types": ["int"],  # the workflow saw dict[int, str], as hinted
        "even": True,
        "nothing": None,
    }
    wid = start_action(PRIMITIVES, data)
    assert get_action_result(wid, timeout=RESULT_TIMEOUT) == expected

    async def official(client: Client) -> dict:
        return await client.execute_workflow(
            PrimitivesWorkflow.run,
            data,
            id=f"official-primitives-{uuid.uuid4()}",
            task_queue=WORKER_QUEUE,
            execution_timeout=timedelta(seconds=RESULT_TIMEOUT),
        )

    assert run_official_client(worker_server.address, official) == expected


# -- orchestration --------------------------------------------------------------------------------


def test_gather_and_child_workflow() -> None:
    uid = new_user()
    wid = start_action(FANOUT, FanOutInput(user_id=uid, upload_id="u", values=[1, 2, 3, 4, 5]))
    result = get_action_result(wid, timeout=RESULT_TIMEOUT)
    assert result.squares == [1, 4, 9, 16, 25]
    assert result.total == 55
    assert result.child.label == f"CHILD OF {uid.upper()}"
    assert result.child.workflow_id == f"{wid}-child"
    assert result.child.parent_workflow_id == wid
    assert result.child.parent_run_id
    assert get_action_status(f"{wid}-child") == Status.COMPLETED


def test_child_is_terminated_with_its_parent() -> None:
    """ParentClosePolicy.TERMINATE reached the server: ending the parent ends the child."""
    data = FanOutInput(user_id=new_user(), upload_id="u", values=[2], child_sleep_seconds=300)
    wid = start_action(FANOUT, data)
    child = f"{wid}-child"
    wait_until(status_is(child, Status.RUNNING), "the child workflow to run")
    terminate_action(wid, reason="test")
    wait_until(status_is(child, Status.TERMINATED), "the child to be terminated")
    assert get_action_status(wid) == Status.TERMINATED


def test_info_time_sleep_and_logger(caplog: pytest.LogCaptureFixture) -> None:
    uid = new_user()
    before = datetime.now(timezone.utc)
    with caplog.at_level(logging.INFO, logger="temporalio.workflow"):
        wid = start_action(INFO, InfoInput(user_id=uid, upload_id="u", sleep_seconds=1.0))
        result = get_action_result(wid, timeout=RESULT_TIMEOUT)
    after = datetime.now(timezone.utc)

    assert result.workflow_id == wid
    assert result.workflow_type == "InfoWorkflow"
    assert result.task_queue == WORKER_QUEUE
    assert result.namespace == "default"
    assert result.attempt == 1
    slack = timedelta(seconds=5)
    assert before - slack <= result.start_time <= after + slack
    assert result.time_after_sleep - result.time_before_sleep >= 0.95  # workflow.sleep(1.0)
    assert result.start_time <= result.now <= after + slack
    listed = wait_until(
        lambda: [a for a in list_actions(user_id=uid) if a.workflow_id == wid],
        "the action to be listed",
    )
    assert listed[0].run_id == result.run_id

    logged = [r for r in caplog.records if r.name == "temporalio.workflow"]
    messages = [r.getMessage() for r in logged]
    assert any(m.startswith(f"Info action started by {uid}") for m in messages), messages
    assert any(m.startswith("Info action slept") for m in messages), messages
    for record in logged:
        if f"started by {uid}" in record.getMessage():
            assert record.temporal_workflow["workflow_id"] == wid  # type: ignore[attr-defined]
            assert record.temporal_workflow["workflow_type"] == "InfoWorkflow"  # type: ignore[attr-defined]


def test_signals_and_queries() -> None:
    uid = new_user()
    wid = start_action(COLLECTOR, CollectorInput(user_id=uid, upload_id="u"))
    assert wait_until(lambda: query_action(wid, "items") == [], "the first query answer")
    signal_action(wid, "add", "alpha")
    signal_action(wid, "add_many", ["beta", "gamma"])
    wait_until(
        lambda: query_action(wid, "items") == ["alpha", "beta", "gamma"], "the signals to land"
    )
    assert query_action(wid, "summary", "items: ") == "items: 3"
    assert get_action_status(wid) == Status.RUNNING
    signal_action(wid, "close")
    result = get_action_result(wid, timeout=RESULT_TIMEOUT)
    assert result == CollectorOutput(items=["alpha", "beta", "gamma"], signals=3)


def test_continue_as_new_counts_across_three_runs() -> None:
    wid = start_action(COUNTER, CounterInput(user_id=new_user(), upload_id="u", target=3))
    result = get_action_result(wid, timeout=RESULT_TIMEOUT)
    assert result.count == 3
    assert len(result.run_ids) == 3
    assert len(set(result.run_ids)) == 3
    assert result.continued_from == result.run_ids[1]
    assert get_action_status(wid) == Status.COMPLETED


def test_sync_activities_run_in_worker_threads(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="temporalio.activity"):
        wid = start_action(THREADS, ThreadsInput(user_id=new_user(), upload_id="u", activities=3))
        result = get_action_result(wid, timeout=RESULT_TIMEOUT)
    assert [r.index for r in result.reports] == [0, 1, 2]
    for report in result.reports:
        assert report.is_main_thread is False
        assert report.thread_name != threading.main_thread().name
        assert report.thread_name.startswith("nomad-activity")
        assert report.activity_type == "where_am_i"
    # activity.logger carries the activity's context, as under the official worker.
    logged = [
        r
        for r in caplog.records
        if r.name == "temporalio.activity"
        and r.getMessage().startswith("Sync activity")
        and getattr(r, "temporal_activity", {}).get("workflow_id") == wid
    ]
    assert len(logged) == 3
    contexts = [getattr(r, "temporal_activity", {}) for r in logged]
    assert {c["activity_type"] for c in contexts} == {"where_am_i"}


# -- retries, timeouts, cancellation --------------------------------------------------------------


def test_retry_policy_succeeds_on_third_attempt() -> None:
    wid = start_action(RETRY, RetryInput(user_id=new_user(), upload_id="u", succeed_on=3))
    result = get_action_result(wid, timeout=RESULT_TIMEOUT)
    assert result.attempt == 3


def test_start_to_close_timeout_exhausts_retries() -> None:
    data = TimeoutInput(user_id=new_user(), upload_id="u", sleep_seconds=5, timeout_seconds=1)
    wid = start_action(TIMEOUT, data)
    with pytest.raises(ActionFailedError) as info:
        get_action_result(wid, timeout=RESULT_TIMEOUT)
    assert info.value.status == Status.FAILED
    assert "timeout" in str(info.value).lower()
    assert "StartToClose" in str(info.value) or "start_to_close" in str(info.value).lower()
    assert get_action_status(wid) == Status.FAILED


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
def test_stop_action_cancels_heartbeating_activity(sync: bool, tmp_path: Path) -> None:
    data = CancelInput(user_id=new_user(), upload_id="u", marker_dir=str(tmp_path), sync=sync)
    wid = start_action(CANCELLABLE, data)
    started = tmp_path / "started"
    thread = wait_until(lambda: started.exists() and started.read_text(), "the activity to start")
    # Sync activities run in the worker's thread pool, async ones on its event loop thread.
    assert thread.startswith("nomad-activity" if sync else "nomad-activity-loop")

    def heartbeats() -> list[Any]:
        return [d for a in get_action_progress(wid).activities for d in a["heartbeat_details"]]

    beats = wait_until(heartbeats, "a heartbeat to reach the server")
    assert all(isinstance(b, int) and b >= 1 for b in beats)

    stop_action(wid, reason="stopped by the test")
    with pytest.raises(ActionFailedError) as info:
        get_action_result(wid, timeout=RESULT_TIMEOUT)
    assert info.value.status == Status.CANCELED
    assert get_action_status(wid) == Status.CANCELED
    # WAIT_CANCELLATION_COMPLETED: the workflow ended only after the activity saw the cancel.
    assert (tmp_path / "cancelled").read_text().startswith("CancelledError after ")


# -- the other direction, and the async API ----------------------------------------------------


class OfficialWorkflowWorker:
    """An official `temporalio.worker.Worker` running `RemoteCallerWorkflow` only, in a
    background thread with its own event loop."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_event: asyncio.Event | None = None
        self.ready = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name="official-worker", daemon=True)

    async def _main(self) -> None:
        client = await Client.connect(self.address, data_converter=pydantic_data_converter)
        self.loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        async with temporalio.worker.Worker(
            client, task_queue=OFFICIAL_QUEUE, workflows=[RemoteCallerWorkflow]
        ):
            self.ready.set()
            await self.stop_event.wait()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as err:
            self.errors.append(err)
            self.ready.set()

    def __enter__(self) -> OfficialWorkflowWorker:
        self.thread.start()
        assert self.ready.wait(60), "the official worker did not start"
        if self.errors:
            raise self.errors[0]
        return self

    def __exit__(self, *exc: object) -> None:
        if self.loop is not None and self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(30)


def test_our_activities_serve_an_official_worker_workflow(worker_server: DevServer) -> None:
    """temporalio's worker runs the workflow; its activities go to our worker's queue."""
    uid = new_user()
    data = RemoteInput(
        batch=make_batch(uid),
        credentials=Credentials(username="cy", api_key="pa55"),
        masked=MaskedCredentials(username="dee", api_key="hidden"),
        text="remote call",
        value=1.25,
    )
    activities = [summarize_batch, inspect_secret, shout, scale, where_am_i]
    with (
        Worker(ACTIVITIES_QUEUE, actions=[], activities=activities, config=get_config()) as ours,
        OfficialWorkflowWorker(worker_server.address),
    ):
        assert ours.workflows == []

        async def official(client: Client) -> Any:
            return await client.execute_workflow(
                RemoteCallerWorkflow.run,
                data,
                id=f"official-remote-{uuid.uuid4()}",
                task_queue=OFFICIAL_QUEUE,
                execution_timeout=timedelta(seconds=RESULT_TIMEOUT),
            )

        result = run_official_client(worker_server.address, official)
    assert result.summary == summarize_batch(data.batch)
    assert isinstance(result.summary.heaviest.position, Point)
    assert result.report.username == "cy"
    assert result.report.api_key_sha256 == hashlib.sha256(b"pa55").hexdigest()
    assert result.report.masked_api_key == "**********"
    assert result.report.token.get_secret_value() == "token-for-cy-4"
    assert result.shouted == "REMOTE CALL!"
    assert result.scaled == 3.75
    assert result.thread.thread_name.startswith("nomad-activity")  # our pool ran it
    assert result.thread.activity_type == "where_am_i"
    assert result.thread.index == 7


def test_run_async_and_shutdown(extra_action: Callable[[str, Action], str]) -> None:
    queue = "nomad-worker-async"
    action = Action(task_queue=queue, workflow=BatchWorkflow, activities=[summarize_batch])
    action_id = extra_action("workerplugin-tests:batch-async", action)
    batch = make_batch(new_user())

    async def main() -> tuple[Any, bool]:
        worker = Worker(queue, actions=[action], config=get_config())
        running = asyncio.ensure_future(worker.run_async())
        wid = await start_action_async(action_id, batch)
        result = await get_action_result_async(wid, timeout=RESULT_TIMEOUT)
        still_running = not running.done()
        worker.shutdown()
        await asyncio.wait_for(running, timeout=RESULT_TIMEOUT)
        return result, still_running

    result, was_running = asyncio.run(main())
    assert was_running
    assert result == summarize_batch(batch)


def test_module_uses_its_own_server(worker_server: DevServer) -> None:
    assert nomad_actions.get_config().port == worker_server.port

"""Network faults between the engine and the server, injected by a loopback TCP proxy
(tests/netproxy.py): a partition (blackhole), a proxy that resets connections, a slow
link. Client calls fail within their timeout naming the address and work again once the
network heals; a worker cut off for longer than a long poll resumes by itself and loses
or repeats nothing; heartbeating activities survive a short partition."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.client import WorkflowExecutionStatus

from nomad_actions import (
    TemporalConnectionError,
    configure,
    get_action_progress,
    get_action_result,
    get_action_status,
    list_actions,
    start_action,
)
from nomad_actions.config import get_config, reset_config
from nomad_actions.testing import DevServer
from nomad_actions.worker import Worker

from .conftest import GREET
from .netproxy import FaultProxy
from .test_reliability_helpers import (
    FAULT_QUEUE,
    Workers,
    activity_records,
    fault_action,
    history,
    poll,
    workers_for,
)

pytestmark = pytest.mark.timeout(600)

STEPS = fault_action("steps_action")
RPC_TIMEOUT = 2.0
#: Longer than a long poll's server-side wait (the dev server answers empty after ~20 s).
PARTITION_SECONDS = 30.0
RESULT_TIMEOUT = 240.0


def user() -> str:
    return f"net-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def proxy(temporal_server: DevServer) -> Iterator[FaultProxy]:
    """The session's server behind a fault proxy; the client configured to use the proxy."""
    with FaultProxy(temporal_server.host, temporal_server.port) as p:
        configure(host=p.host, port=p.port, connect_timeout=RPC_TIMEOUT, rpc_timeout=RPC_TIMEOUT)
        try:
            yield p
        finally:
            reset_config()


def _fails_in_time(call: object, proxy: FaultProxy, bound: float) -> TemporalConnectionError:
    began = time.monotonic()
    with pytest.raises(TemporalConnectionError) as caught:
        call()  # type: ignore[operator]
    took = time.monotonic() - began
    assert took < bound, f"took {took:.1f} s"
    assert proxy.address in str(caught.value)
    return caught.value


@pytest.mark.usefixtures("official_worker")
def test_client_through_a_blackhole_fails_in_time_then_heals(proxy: FaultProxy) -> None:
    wid = start_action(GREET, {"user_id": user(), "name": "net"})
    assert get_action_result(wid, timeout=60).message == "Hello, net!"
    with proxy.fault("blackhole"):
        err = _fails_in_time(lambda: get_action_status(wid), proxy, RPC_TIMEOUT + 3)
        assert "no answer within 2000 ms" in str(err)
        _fails_in_time(lambda: list_actions(limit=1), proxy, RPC_TIMEOUT + 3)
    # Healed: the same cached connection serves again.
    assert get_action_status(wid) == WorkflowExecutionStatus.COMPLETED
    again = start_action(GREET, {"user_id": user(), "name": "healed"})
    assert get_action_result(again, timeout=60).message == "Hello, healed!"


@pytest.mark.usefixtures("official_worker")
def test_client_through_resets_fails_then_reconnects(proxy: FaultProxy) -> None:
    wid = start_action(GREET, {"user_id": user(), "name": "reset"})
    assert get_action_result(wid, timeout=60).message == "Hello, reset!"
    with proxy.fault("reset"):
        _fails_in_time(lambda: get_action_status(wid), proxy, RPC_TIMEOUT + 5)
    assert proxy.resets >= 1
    # The connection was reset under the client: the next call reconnects by itself.
    assert get_action_status(wid) == WorkflowExecutionStatus.COMPLETED
    proxy.reset_connections()
    assert get_action_status(wid) == WorkflowExecutionStatus.COMPLETED


@pytest.mark.usefixtures("official_worker")
def test_client_over_a_slow_link_works(proxy: FaultProxy) -> None:
    # Each chunk 0.2 s late: a call takes several round trips, so allow it more time.
    configure(rpc_timeout=15)
    with proxy.fault("delay", delay=0.2):
        began = time.monotonic()
        wid = start_action(GREET, {"user_id": user(), "name": "slow"})
        assert get_action_result(wid, timeout=60).message == "Hello, slow!"
        assert time.monotonic() - began >= 0.4  # the delay was really there (two calls)


# ---------------------------------------------------------------------- worker partitions


@pytest.fixture
def fault_server(tmp_path: Path) -> Iterator[DevServer]:
    with DevServer(log_path=tmp_path / "temporal.log") as server:
        configure(host=server.host, port=server.port)  # the client goes direct
        try:
            yield server
        finally:
            reset_config()


@pytest.fixture
def workers(fault_server: DevServer, tmp_path: Path) -> Iterator[Workers]:
    yield from workers_for(fault_server, tmp_path)


def _check_exactly_once(server: DevServer, wids: list[str], steps: int) -> None:
    """Every action completed with the right total, and in its history every activity was
    scheduled once and completed once."""
    from nomad_actions_faultplugin.models import step_value

    expected = sum(step_value(i) for i in range(steps))
    for wid in wids:
        result = get_action_result(wid, timeout=RESULT_TIMEOUT)
        assert (result.total, result.steps) == (expected, steps), wid
        events = history(server.address, wid)
        records = activity_records(events)
        assert sorted(records) == [f"step-{i}" for i in range(steps)], wid
        assert all(r.completed == 1 for r in records.values()), (wid, records)
        completions = [
            e for e in events if e.HasField("workflow_execution_completed_event_attributes")
        ]
        assert len(completions) == 1, wid


def test_worker_cut_off_longer_than_a_long_poll_resumes_by_itself(
    fault_server: DevServer, workers: Workers, tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    steps = 3
    data = {"marker_dir": str(markers), "steps": steps, "seconds": 0.2}
    with FaultProxy(fault_server.host, fault_server.port) as proxy:
        worker = workers.start(port=proxy.port)

        def start_batch() -> list[str]:
            return [
                workers.track(start_action(STEPS, {"user_id": user(), **data})) for _ in range(3)
            ]

        before = start_batch()
        poll(lambda: len(list(markers.iterdir())) >= 1, 60, "work to begin", workers.reports)
        with proxy.fault("blackhole"):
            during = start_batch()
            time.sleep(PARTITION_SECONDS)
            # Nothing reaches the server meanwhile: the actions started now have not moved.
            for wid in during:
                assert get_action_status(wid) == WorkflowExecutionStatus.RUNNING
        after = start_batch()
        _check_exactly_once(fault_server, before + during + after, steps)
        assert worker.alive(), worker.report()
        assert worker.pid == workers.started[0].pid  # the same process: no restart


def test_heartbeating_activity_survives_a_short_partition(
    fault_server: DevServer, tmp_path: Path
) -> None:
    """A 12 s activity that heartbeats every second (heartbeat timeout 8 s, heartbeats sent
    at most every second) goes through a 4 s partition between worker and server: its
    heartbeats wait and flow on, it is not timed out, and it completes on its first attempt."""
    markers = tmp_path / "markers"
    markers.mkdir()
    action = fault_action("heartbeat_action")
    with FaultProxy(fault_server.host, fault_server.port) as proxy:
        config = dataclasses.replace(get_config(), port=proxy.port)
        with Worker(
            FAULT_QUEUE,
            actions=[action],
            config=config,
            max_heartbeat_throttle_interval=1.0,
            default_heartbeat_throttle_interval=1.0,
        ):
            wid = start_action(
                action, {"user_id": user(), "marker_dir": str(markers), "seconds": 12}
            )
            poll(
                lambda: any(a["state"] == 2 for a in get_action_progress(wid).activities),
                60,
                "the activity to start",
            )
            time.sleep(2)
            with proxy.fault("blackhole"):
                time.sleep(4)
            assert get_action_result(wid, timeout=RESULT_TIMEOUT) == 12
    records = activity_records(history(fault_server.address, wid))
    (record,) = records.values()
    assert (record.attempt, record.completed) == (1, 1), record
    assert [p.name.split("~")[2] for p in markers.iterdir()] == ["a1"]

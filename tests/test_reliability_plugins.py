"""Broken plugin code: an entry point that fails to import, a `load()` that raises, a workflow
that is not a `@workflow.defn` class, an activity that is not an `@activity.defn` function.

A worker refuses to start while an action entry point for its queue is broken, naming each
one and why, or skips them with `--skip-broken` / `Worker(skip_broken=True)`, logging each.
Broken actions on other queues do not concern it. Starting a broken action fails on the
client with an error that names the entry point.
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio import activity, workflow

from nomad_actions import (
    Action,
    ActionLoadError,
    configure,
    get_action_result,
    load_action,
    start_action,
)
from nomad_actions import registry as registry_module
from nomad_actions.config import get_config, reset_config
from nomad_actions.registry import (
    get_action_entry_point,
    get_broken_entry_points,
    refresh_actions,
    resolve_action_id,
)
from nomad_actions.testing import DevServer
from nomad_actions.worker import Worker
from nomad_actions_faultplugin import BREAK_IMPORT_ENV, BROKEN_QUEUE, FAULT_QUEUE

from .test_reliability_helpers import Workers, fault_action, workers_for

BROKEN_LOAD = fault_action("broken_load_action")
BAD_WORKFLOW = fault_action("bad_workflow_action")
BAD_ACTIVITY = fault_action("bad_activity_action")
OK = fault_action("ok_action")
IMPORT_BROKEN = "nomad_actions_faultplugin.importbroken:import_broken_action"
MISSING_MODULE = "nomad_actions_faultplugin_missing_dependency"

#: Entry point -> what the worker's error must say about it.
BROKEN_REASONS = {
    BROKEN_LOAD: "RuntimeError: the plugin's configuration file is missing",
    BAD_WORKFLOW: "workflow NotAWorkflow must be a class decorated with @workflow.defn",
    BAD_ACTIVITY: "activity not_an_activity must be a function decorated with @activity.defn",
}


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    refresh_actions()
    yield
    refresh_actions()


@pytest.fixture
def broken_import(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The `importbroken` entry point's module fails to import (a missing dependency)."""
    monkeypatch.setenv(BREAK_IMPORT_ENV, "1")
    monkeypatch.delitem(sys.modules, "nomad_actions_faultplugin.importbroken", raising=False)
    refresh_actions()
    yield
    monkeypatch.undo()
    sys.modules.pop("nomad_actions_faultplugin.importbroken", None)
    refresh_actions()


# ---------------------------------------------------------------------- Action() checks


@activity.defn
async def decorated(x: int) -> int:
    return x


def undecorated(x: int) -> int:
    return x


@workflow.defn
class SomeWorkflow:
    @workflow.run
    async def run(self, x: int) -> int:
        return x


def test_action_rejects_an_undecorated_activity_naming_it() -> None:
    with pytest.raises(TypeError, match=r"activity undecorated must be .*@activity\.defn"):
        Action(task_queue="q", activities=[decorated, undecorated], workflow=SomeWorkflow)
    with pytest.raises(
        TypeError, match=r"activity undecorated \(for task queue other\) must be .*@activity\.defn"
    ):
        Action(
            task_queue="q",
            activities=[decorated],
            workflow=SomeWorkflow,
            task_queue_activities={"other": [undecorated]},
        )
    assert Action(task_queue="q", activities=[decorated], workflow=SomeWorkflow).activities


# ---------------------------------------------------------------------- in-process worker


def test_worker_refuses_to_start_naming_every_broken_entry_point() -> None:
    with pytest.raises(ActionLoadError) as info:
        Worker(BROKEN_QUEUE, config=get_config())
    message = str(info.value)
    assert f'task queue "{BROKEN_QUEUE}"' in message
    assert "3 broken action entry points" in message
    for entry_point, reason in BROKEN_REASONS.items():
        [line] = [line for line in message.splitlines() if entry_point in line]
        assert reason in line, line
    assert "--skip-broken" in message
    assert info.value.broken_entry_points.keys() == BROKEN_REASONS.keys()  # type: ignore[attr-defined]


def test_worker_skips_broken_entry_points_when_told(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="nomad_actions.worker"):
        worker = Worker(BROKEN_QUEUE, config=get_config(), skip_broken=True)
    assert [a.workflow_name for a in worker.actions] == ["FaultOkWorkflow", "FaultOkWorkflow"]
    skipped = [r.getMessage() for r in caplog.records if "Skipping broken" in r.getMessage()]
    assert len(skipped) == 3, skipped
    for entry_point, reason in BROKEN_REASONS.items():
        assert any(entry_point in line and reason in line for line in skipped), skipped


def test_broken_actions_on_other_queues_do_not_stop_a_worker() -> None:
    worker = Worker(FAULT_QUEUE, config=get_config())
    assert "FaultStepsWorkflow" in {a.workflow_name for a in worker.actions}


def test_explicit_broken_actions_refuse_or_skip() -> None:
    with pytest.raises(ActionLoadError, match=BAD_ACTIVITY):
        Worker(BROKEN_QUEUE, actions=[OK, BAD_ACTIVITY], config=get_config())
    worker = Worker(BROKEN_QUEUE, actions=[OK, BAD_ACTIVITY], config=get_config(), skip_broken=True)
    assert [a.workflow_name for a in worker.actions] == ["FaultOkWorkflow"]


@pytest.mark.usefixtures("broken_import")
def test_entry_point_that_fails_to_import_stops_every_worker_unless_skipped() -> None:
    """Its task queue is unknown, so it concerns every worker."""
    broken = get_broken_entry_points()
    assert broken[IMPORT_BROKEN] == f"ModuleNotFoundError: No module named '{MISSING_MODULE}'"
    assert IMPORT_BROKEN not in registry_module.get_actions()
    for queue in (FAULT_QUEUE, BROKEN_QUEUE):
        with pytest.raises(ActionLoadError) as info:
            Worker(queue, config=get_config())
        [line] = [line for line in str(info.value).splitlines() if IMPORT_BROKEN in line]
        assert "failed to import" in line and MISSING_MODULE in line, line
        assert "task queue is unknown" in line, line
    worker = Worker(FAULT_QUEUE, config=get_config(), skip_broken=True)
    assert worker.actions


# ---------------------------------------------------------------------- client side


@pytest.mark.parametrize(
    ("action_id", "reason"),
    [
        (BROKEN_LOAD, None),
        (BAD_WORKFLOW, BROKEN_REASONS[BAD_WORKFLOW]),
        (BAD_ACTIVITY, BROKEN_REASONS[BAD_ACTIVITY]),
    ],
)
def test_start_action_of_a_broken_action_names_the_entry_point(
    action_id: str, reason: str | None
) -> None:
    with pytest.raises(ActionLoadError) as info:
        start_action(action_id, {"user_id": "u"})
    assert f'entry point "{action_id}"' in str(info.value)
    if reason is None:  # load() raised: upstream NOMAD's message, the error as the cause
        assert isinstance(info.value.__cause__, RuntimeError)
    else:
        assert reason in str(info.value)
        assert isinstance(info.value.__cause__, TypeError)


@pytest.mark.usefixtures("broken_import")
def test_start_action_of_an_entry_point_that_fails_to_import_names_it() -> None:
    for call in (
        lambda: start_action(IMPORT_BROKEN, {"user_id": "u"}),
        lambda: load_action(IMPORT_BROKEN),
        lambda: get_action_entry_point(IMPORT_BROKEN),
        lambda: resolve_action_id(IMPORT_BROKEN),
    ):
        with pytest.raises(ActionLoadError) as info:
            call()
        message = str(info.value)
        assert f'entry point "{IMPORT_BROKEN}"' in message, message
        assert f"No module named '{MISSING_MODULE}'" in message, message
        assert isinstance(info.value.__cause__, ModuleNotFoundError)


# ---------------------------------------------------------------------- worker processes


@pytest.fixture(scope="module")
def plugin_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    log = tmp_path_factory.mktemp("plugin-server") / "temporal.log"
    with DevServer(log_path=log) as server:
        yield server


@pytest.fixture
def workers(plugin_server: DevServer, tmp_path: Path) -> Iterator[Workers]:
    configure(host=plugin_server.host, port=plugin_server.port)
    try:
        yield from workers_for(plugin_server, tmp_path)
    finally:
        reset_config()


def test_cli_worker_refuses_broken_plugins_with_exit_2(workers: Workers) -> None:
    worker = workers.start(queue=BROKEN_QUEUE, ready=False)
    assert worker.wait_exit(90) == 2, worker.report()
    log = worker.log()
    assert "Traceback" not in log, log
    assert f'Refusing to start the worker on task queue "{BROKEN_QUEUE}"' in log
    for entry_point, reason in BROKEN_REASONS.items():
        assert any(entry_point in line and reason in line for line in log.splitlines()), log


def test_cli_worker_skip_broken_runs_the_good_actions(workers: Workers) -> None:
    worker = workers.start("--skip-broken", queue=BROKEN_QUEUE)
    log = worker.log()
    for entry_point, reason in BROKEN_REASONS.items():
        assert any(
            "Skipping broken action entry point" in line and entry_point in line and reason in line
            for line in log.splitlines()
        ), log
    wid = workers.track(start_action(OK, {"user_id": f"u-{uuid.uuid4().hex[:6]}", "name": "x"}))
    assert get_action_result(wid, timeout=120) == "ok:x"


def test_cli_worker_refuses_an_entry_point_that_fails_to_import(workers: Workers) -> None:
    env = {BREAK_IMPORT_ENV: "1"}
    refused = workers.start(queue=FAULT_QUEUE, env=env, ready=False)
    assert refused.wait_exit(90) == 2, refused.report()
    # The registry logs the import error with its traceback (where the import failed); the
    # error the worker exits with is one message naming the entry point and the reason.
    [error] = [line for line in refused.log().splitlines() if "nomad-actions: error:" in line]
    assert "1 broken action entry point" in error, refused.report()
    [line] = [
        line for line in refused.log().splitlines() if line.startswith(f'  - "{IMPORT_BROKEN}"')
    ]
    assert f"No module named '{MISSING_MODULE}'" in line, refused.report()
    skipping = workers.start("--skip-broken", queue=FAULT_QUEUE, env=env)
    assert IMPORT_BROKEN in skipping.log()
    assert skipping.alive()

"""nomad_actions.sandbox.SandboxRunner, the worker's default sandbox: no run sees another
run's module state (also while runs interleave on the workflow cache), restricted access
fails with temporalio's own error, passthrough and unrestricted blocks work, and every
installed plugin's workflows run on its copy path (none falls back to temporalio's)."""

from __future__ import annotations

import asyncio
import builtins
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from temporalio.client import Client
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox._importer import (
    _get_thread_local_builtin,
    _thread_local_import,
    _thread_local_sys_modules,
)

from nomad_actions.sandbox import SandboxRunner
from nomad_actions.temporal import Worker
from nomad_actions.testing import DevServer

from .sandbox_workflows.stateful import LeakWorkflow, RestrictedWorkflow


@pytest.fixture(scope="module")
def server() -> Iterator[DevServer]:
    with DevServer() as s:
        yield s


def _pristine(tag: str) -> dict:
    return {
        "counter": 0,
        "items": [],
        "table": {},
        "closure": [tag],
        "config_level": 0,
        "config_tags": [],
        "default_arg": [tag],
        "class_attr": None,
        "registry": [],
        "settings": [],
        "counter_after": 1,
        "items_after": [tag, f"{tag}-helper"],
    }


def test_no_run_sees_another_runs_module_state(server: DevServer) -> None:
    async def main() -> None:
        client = await Client.connect(server.address)
        tq = f"sandbox-{uuid.uuid4().hex[:8]}"
        runner = SandboxRunner()
        async with Worker(client, task_queue=tq, workflows=[LeakWorkflow], workflow_runner=runner):
            # Four runs open at once: each mutates the module, then waits (cached).
            tags = [f"run{i}" for i in range(4)]
            handles = [
                await client.start_workflow(
                    LeakWorkflow.run, tag, id=f"leak-{uuid.uuid4()}", task_queue=tq
                )
                for tag in tags
            ]
            await asyncio.sleep(0.5)
            for handle in reversed(handles):
                await handle.signal(LeakWorkflow.go)
            results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 60)
            for tag, result in zip(tags, results, strict=True):
                assert result == _pristine(tag)
            # And one after all of them, from the same template.
            handle = await client.start_workflow(
                LeakWorkflow.run, "later", id=f"leak-{uuid.uuid4()}", task_queue=tq
            )
            await handle.signal(LeakWorkflow.go)
            assert await asyncio.wait_for(handle.result(), 30) == _pristine("later")
        # The copy path ran (not temporalio's sandbox as a fallback).
        assert runner.fallback_reasons == {}
        # Every activation undid its overrides: the host's modules and builtins are back.
        assert type(sys.modules) is dict
        assert builtins.__import__ is _thread_local_import.orig
        assert builtins.isinstance is _get_thread_local_builtin("isinstance").orig
        assert _thread_local_sys_modules.applied_counter == 0
        assert _thread_local_import.applied_counter == 0

    asyncio.run(main())


@pytest.mark.parametrize("mode", ["restricted", "passthrough", "unrestricted"])
def test_restrictions_passthrough_and_unrestricted_as_temporalio(
    server: DevServer, mode: str
) -> None:
    async def run_with(runner) -> str:
        client = await Client.connect(server.address)
        tq = f"sandbox-{uuid.uuid4().hex[:8]}"
        async with Worker(
            client, task_queue=tq, workflows=[RestrictedWorkflow], workflow_runner=runner
        ):
            return await asyncio.wait_for(
                client.execute_workflow(
                    RestrictedWorkflow.run, mode, id=f"restricted-{uuid.uuid4()}", task_queue=tq
                ),
                30,
            )

    ours = asyncio.run(run_with(SandboxRunner()))
    theirs = asyncio.run(run_with(SandboxedWorkflowRunner()))
    assert ours == theirs
    expected = {
        "restricted": "temporalio.worker.workflow_sandbox._restrictions."
        "RestrictedWorkflowAccessError: Cannot access os.getcwd.__call__ from inside a workflow.",
        "passthrough": "42",
        "unrestricted": "True",
    }[mode]
    assert ours.startswith(expected)


_PLUGIN_CHECK = """
import asyncio, json, temporalio.workflow
from nomad_actions.registry import get_actions, load_action
from nomad_actions.sandbox import SandboxRunner

async def main():
    runner, prepared = SandboxRunner(), []
    for name in get_actions():
        try:
            action = load_action(name)
        except Exception:
            continue  # the deliberately broken entry points of the test plugins
        for cls in [action.workflow, *(getattr(action, "workflows", None) or [])]:
            defn = temporalio.workflow._Definition.from_class(cls) if cls else None
            if defn is not None and defn.sandboxed:
                runner.prepare_workflow(defn)
                prepared.append(defn.name)
    # What the templates keep of the discovery's id sets once proven (release()).
    held = sum(
        len(t.cloner._host) + len(t.cloner._template_ids)
        for t in runner._templates.values() if t is not None
    )
    print(json.dumps({"prepared": prepared, "fallbacks": runner.fallback_reasons, "held": held}))

asyncio.run(main())
"""


def test_every_installed_plugin_workflow_runs_on_the_copy_path() -> None:
    # In a fresh interpreter, as a worker loads plugins (in this one pytest's own modules
    # would be imported into the sandbox along with them).
    out = subprocess.run(
        [sys.executable, "-c", _PLUGIN_CHECK], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["prepared"], "no plugin workflows (are the example and test plugins installed?)"
    assert report["fallbacks"] == {}, report["fallbacks"]
    # Each template keeps only its plans: the ids of every host object (tens of thousands,
    # megabytes per workflow class) are dropped after the proof.
    assert report["held"] == 0

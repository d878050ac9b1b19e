"""Shared fixtures: a real Temporal dev server, and an official temporalio worker as a
peer for the client tests (our client starts workflows, their worker runs them)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter

from nomad_actions import configure, load_action
from nomad_actions.config import reset_config
from nomad_actions.testing import DevServer

from .official_worker import OfficialWorker

# The suite runs in NOMAD's development mode (plain payloads) unless a test says otherwise:
# outside it the engine refuses to run without an API secret, as upstream NOMAD does. Worker
# processes the tests start inherit it.
os.environ.setdefault("NOMAD_SERVICES_MODE", "development")

GREET = "nomad_actions_testplugin.actions:greet_action"
WAITER = "nomad_actions_testplugin.actions:waiter_action"
FAILS = "nomad_actions_testplugin.actions:fails_action"
TEST_QUEUE = "nomad-test-queue"

# The nomad-lab 2.0.0 group runs in its own venv (scripts/test.sh); the main suite never
# imports nomad.
collect_ignore = [] if importlib.util.find_spec("nomad") else ["nomad20"]


@pytest.fixture(scope="session")
def temporal_server() -> Iterator[DevServer]:
    """One dev server (in memory, free ports) for the whole session."""
    with DevServer() as server:
        yield server


@pytest.fixture
def temporal(temporal_server: DevServer) -> Iterator[DevServer]:
    """Point nomad_actions at the session's dev server for one test."""
    configure(host=temporal_server.host, port=temporal_server.port)
    yield temporal_server
    reset_config()


@pytest.fixture(scope="session")
def official_worker(temporal_server: DevServer) -> Iterator[OfficialWorker]:
    """The official temporalio worker serving the test plugin's actions."""
    actions = [load_action(i) for i in (GREET, WAITER, FAILS)]
    with OfficialWorker(
        temporal_server.address,
        TEST_QUEUE,
        workflows=[a.workflow for a in actions],
        activities=[f for a in actions for f in a.activities],
        data_converter=pydantic_data_converter,
    ) as worker:
        yield worker

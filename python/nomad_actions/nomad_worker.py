"""What ``nomad-actions worker`` adds in a NOMAD installation, as upstream's workers do.

With nomad-lab importable (``nomad.actions``), upstream's CPU/GPU worker
(``nomad/actions/workers/cpu.py``) does four things besides running the actions; this module
does the same for our worker:

1. logging: ``WorkflowRoutingHandler`` on the root logger and ``WorkflowLoggingInterceptor``
   on the worker, so an action's activity logs land in its log file;
2. ``request_signal_input_activity`` registered on every queue but the internal one;
3. ``worker_process_initializer()`` (infrastructure setup: MongoDB, Elasticsearch, parser
   imports) before the worker starts, and
4. ``init_async_mongo()`` on the event loop the activities run on.

Without nomad-lab, (1) is our own equivalent (:mod:`nomad_actions.action_logs`) and the
rest does not apply.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nomad_actions.action_logs import install_action_logging
from nomad_actions.config import ConnectionConfig, TaskQueue

__all__ = ["NomadSetupError", "WorkerSetup", "nomad_available", "prepare_worker"]

logger = logging.getLogger(__name__)


class NomadSetupError(RuntimeError):
    """The NOMAD infrastructure a worker needs could not be set up; says what and where."""


def nomad_available() -> bool:
    """Whether nomad-lab (``nomad.actions``) is importable."""
    try:
        return importlib.util.find_spec("nomad.actions") is not None
    except ModuleNotFoundError:
        return False


@dataclass
class WorkerSetup:
    """What to give the worker.

    Attributes:
        upstream: nomad-lab's own classes are in use.
        interceptors: Worker interceptors (the action-log one).
        activities: Extra activities (upstream's signal-input activity).
        on_activity_loop: Coroutine functions to run once on the activities' event loop
            before the worker polls (upstream's async Mongo init).
    """

    upstream: bool
    interceptors: list[Any] = field(default_factory=list)
    activities: list[Callable[..., Any]] = field(default_factory=list)
    on_activity_loop: list[Callable[[], Any]] = field(default_factory=list)


def _where() -> str:
    """The MongoDB and Elasticsearch addresses of NOMAD's configuration, for errors."""
    try:
        from nomad.config import config

        return (
            f"MongoDB at {config.mongo.host}:{config.mongo.port}, "
            f"Elasticsearch at {config.elastic.host}:{config.elastic.port}"
        )
    except Exception:  # the configuration itself may be what failed
        return "MongoDB and Elasticsearch as configured in nomad.yaml"


def prepare_worker(
    task_queue: str, *, nomad_setup: bool = True, config: ConnectionConfig | None = None
) -> WorkerSetup:
    """Sets up logging (and, in a NOMAD install, NOMAD's infrastructure) for a worker.

    Args:
        task_queue: The worker's queue (the internal queue gets no signal-input activity).
        nomad_setup: Run upstream's ``worker_process_initializer()`` and, later,
            ``init_async_mongo()``; False skips both (``--no-nomad-setup``).
        config: The worker's connection, for looking up child workflows' roots.

    Returns:
        What to add to the worker.

    Raises:
        NomadSetupError: nomad-lab is installed and its setup failed; the message names
            the services it tried to reach and the error.
    """
    if not nomad_available():
        return WorkerSetup(upstream=False, interceptors=[install_action_logging(config)])

    from nomad.actions.action_logging import (
        WorkflowLoggingInterceptor,
        WorkflowRoutingHandler,
    )
    from nomad.actions.manager import request_signal_input_activity

    root = logging.getLogger()
    if not any(isinstance(h, WorkflowRoutingHandler) for h in root.handlers):
        root.addHandler(WorkflowRoutingHandler())
    setup = WorkerSetup(upstream=True, interceptors=[WorkflowLoggingInterceptor()])
    if task_queue != TaskQueue.NOMAD_INTERNAL_WORKFLOWS.value:
        setup.activities.append(request_signal_input_activity)
    if not nomad_setup:
        logger.warning("Skipping NOMAD's worker setup (MongoDB, Elasticsearch, parsers)")
        return setup
    logger.info("NOMAD worker setup: %s", _where())
    try:
        from nomad.actions.workers.utils import worker_process_initializer

        worker_process_initializer()
    except Exception as err:
        raise NomadSetupError(
            f"NOMAD worker setup failed ({_where()}): {type(err).__name__}: {err}. Start "
            "those services or fix nomad.yaml, or run the worker with --no-nomad-setup"
        ) from err

    async def init_mongo() -> None:
        from nomad.infrastructure import init_async_mongo

        try:
            await init_async_mongo()
        except Exception as err:
            raise NomadSetupError(
                f"NOMAD async MongoDB setup failed ({_where()}): {type(err).__name__}: {err}. "
                "Start MongoDB or fix nomad.yaml, or run the worker with --no-nomad-setup"
            ) from err

    setup.on_activity_loop.append(init_mongo)
    return setup

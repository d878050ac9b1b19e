"""Per-action log files, as upstream NOMAD 2.0 writes them, without nomad-lab.

Upstream's CPU/GPU workers add an activity interceptor that binds the action's root
workflow id to the activity's context, and a root-logger handler that writes every record
logged under such a context to ``action_log_file_path(<root workflow id>)``:
``<fs.actions>/<id>/nomad_system/logs/<id>.log``, one JSON object a line with
``timestamp``, ``level`` and ``event``. The NOMAD GUI shows that file. ``nomad-actions
worker`` installs upstream's own classes when nomad-lab is importable, else these, which
write the same file (as real JSON: upstream's format string does not escape quotes).

Child workflows log into their root action's file, as upstream.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import threading
import time
from typing import Any

import temporalio.activity
import temporalio.worker

from nomad_actions import _core
from nomad_actions.config import ConnectionConfig, get_config

__all__ = [
    "ENV_ACTIONS_LOG_LEVEL",
    "ActionLogHandler",
    "ActionLogInterceptor",
    "current_action_instance_id",
    "install_action_logging",
]

#: Upstream's ``services.actions_log_level``: the least level written to action logs.
ENV_ACTIONS_LOG_LEVEL = "NOMAD_SERVICES_ACTIONS_LOG_LEVEL"
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

_action_instance_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "nomad_action_instance_id", default=None
)


def current_action_instance_id() -> str | None:
    """The root workflow id of the action whose activity runs in this context, or None."""
    return _action_instance_id.get()


def _log_level() -> int:
    raw = os.environ.get(ENV_ACTIONS_LOG_LEVEL) or "INFO"
    if raw.strip().lstrip("-").isdigit():
        return int(raw)
    level = logging.getLevelName(raw.strip().upper())
    if not isinstance(level, int):
        raise ValueError(f"{ENV_ACTIONS_LOG_LEVEL}: not a log level: {raw!r}")
    return level


class ActionLogHandler(logging.Handler):
    """Writes records logged inside an action's activity to that action's log file.

    Records outside an activity (no bound action id) are left to the other handlers.

    Args:
        level: The least level written; default ``$NOMAD_SERVICES_ACTIONS_LOG_LEVEL`` or INFO.
    """

    def __init__(self, level: int | None = None) -> None:
        super().__init__(_log_level() if level is None else level)
        self._files: dict[str, Any] = {}
        self._files_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        action_instance_id = _action_instance_id.get()
        if not action_instance_id:
            return
        try:
            from nomad_actions.manager import action_log_file_path

            line = json.dumps(
                {
                    "timestamp": time.strftime(_TIME_FORMAT, time.gmtime(record.created)),
                    "level": record.levelname,
                    "event": record.getMessage(),
                }
            )
            with self._files_lock:
                handle = self._files.get(action_instance_id)
                if handle is None:
                    path = action_log_file_path(action_instance_id)
                    handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open
                    self._files[action_instance_id] = handle
                handle.write(line + "\n")
                handle.flush()
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        with self._files_lock:
            for handle in self._files.values():
                handle.close()
            self._files.clear()
        super().close()


class _Inbound(temporalio.worker.ActivityInboundInterceptor):
    def __init__(
        self, next: temporalio.worker.ActivityInboundInterceptor, owner: ActionLogInterceptor
    ) -> None:
        super().__init__(next)
        self._owner = owner

    async def execute_activity(self, input: temporalio.worker.ExecuteActivityInput) -> Any:
        workflow_id = temporalio.activity.info().workflow_id
        if workflow_id:
            _action_instance_id.set(await self._owner.root_of(workflow_id))
        return await super().execute_activity(input)


class ActionLogInterceptor(temporalio.worker.Interceptor):
    """Binds the root workflow id of each activity's action for :class:`ActionLogHandler`.

    Args:
        config: Where to look up a child workflow's root; default ``get_config()``.
    """

    def __init__(self, config: ConnectionConfig | None = None) -> None:
        self._config = config
        self._roots: dict[str, str] = {}

    async def root_of(self, workflow_id: str) -> str:
        """The root workflow id of ``workflow_id`` (itself if that cannot be looked up)."""
        root = self._roots.get(workflow_id)
        if root is None:
            try:
                client = _core.ClientRef(self._config or get_config())
                root = (await client.describe(workflow_id, False))["root_workflow_id"]
            except Exception:
                root = workflow_id
            self._roots[workflow_id] = root or workflow_id
        return self._roots[workflow_id]

    def intercept_activity(
        self, next: temporalio.worker.ActivityInboundInterceptor
    ) -> temporalio.worker.ActivityInboundInterceptor:
        return _Inbound(next, self)


def install_action_logging(config: ConnectionConfig | None = None) -> ActionLogInterceptor:
    """Adds an :class:`ActionLogHandler` to the root logger (once) and returns the
    interceptor to give the worker."""
    root = logging.getLogger()
    if not any(isinstance(h, ActionLogHandler) for h in root.handlers):
        root.addHandler(ActionLogHandler())
    return ActionLogInterceptor(config)

"""Upstream NOMAD's `nomad.actions.manager` path: starting and following actions."""

from nomad_actions.client import (
    get_action_result,
    get_action_result_async,
    get_action_status,
    get_action_status_async,
    list_actions,
    list_actions_async,
    signal_action,
    signal_action_async,
    start_action,
    start_action_async,
    stop_action,
    stop_action_async,
)
from nomad_actions.config import TaskQueue
from nomad_actions.registry import get_actions

__all__ = [
    "TaskQueue",
    "get_action_result",
    "get_action_result_async",
    "get_action_status",
    "get_action_status_async",
    "get_actions",
    "list_actions",
    "list_actions_async",
    "signal_action",
    "signal_action_async",
    "start_action",
    "start_action_async",
    "stop_action",
    "stop_action_async",
]

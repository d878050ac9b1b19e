"""Upstream NOMAD's `nomad.actions.manager` path: starting and following actions."""

from nomad_actions.artifacts import action_artifacts_dir, action_instance_artifacts_dir
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
from nomad_actions.heartbeat import heartbeat
from nomad_actions.registry import get_actions
from nomad_actions.schemas import get_action_schema, get_all_action_schemas, validate_action_arg

__all__ = [
    "TaskQueue",
    "action_artifacts_dir",
    "action_instance_artifacts_dir",
    "get_action_result",
    "get_action_result_async",
    "get_action_schema",
    "get_action_status",
    "get_action_status_async",
    "get_actions",
    "get_all_action_schemas",
    "heartbeat",
    "list_actions",
    "list_actions_async",
    "signal_action",
    "signal_action_async",
    "start_action",
    "start_action_async",
    "stop_action",
    "stop_action_async",
    "validate_action_arg",
]

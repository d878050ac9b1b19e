"""Upstream NOMAD's `nomad.actions.utils` path: the action classes, discovery, the
helpers activities use (artifacts directories, heartbeats), and `start_action` /
`get_action_status`, which the NOMAD docs import from here (the typed top-level ones)."""

from nomad_actions.action import Action, ActionEntryPoint
from nomad_actions.artifacts import action_artifacts_dir, action_instance_artifacts_dir
from nomad_actions.client import get_action_status, start_action
from nomad_actions.config import TaskQueue
from nomad_actions.heartbeat import heartbeat
from nomad_actions.registry import get_actions, load_action, register_action

__all__ = [
    "Action",
    "ActionEntryPoint",
    "TaskQueue",
    "action_artifacts_dir",
    "action_instance_artifacts_dir",
    "get_action_status",
    "get_actions",
    "heartbeat",
    "load_action",
    "register_action",
    "start_action",
]

"""Upstream NOMAD's `nomad.actions.utils` path: the action classes and discovery."""

from nomad_actions.action import Action, ActionEntryPoint
from nomad_actions.config import TaskQueue
from nomad_actions.registry import get_actions, load_action, register_action

__all__ = [
    "Action",
    "ActionEntryPoint",
    "TaskQueue",
    "get_actions",
    "load_action",
    "register_action",
]

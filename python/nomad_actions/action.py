"""Actions and their plugin entry points, compatible with NOMAD's ``nomad.actions``.

A plugin exposes an :class:`ActionEntryPoint` under the ``nomad.plugin`` entry-point group; its
``load()`` returns an :class:`Action`, which names the task queue, the activities and the
``@workflow.defn`` classes. The engine recognises entry points and actions by shape, so the
classes from upstream ``nomad-lab`` work too.

This module also owns how actions map onto task queues: :func:`resolve_task_queue` (the
``cpu``/``gpu`` aliases) and :func:`group_by_task_queue`, which the worker, ``nomad-actions
dev`` and the test helpers use to decide which worker runs what.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import temporalio.activity
from pydantic import BaseModel, ConfigDict, Field
from temporalio.workflow import _Definition

from .config import TaskQueue
from .config import task_queue_name as _queue_name

__all__ = [
    "Action",
    "ActionEntryPoint",
    "QueueWork",
    "as_action",
    "group_by_task_queue",
    "is_action",
    "is_action_entry_point",
    "resolve_task_queue",
]

_QUEUE_ALIASES = {"cpu": TaskQueue.CPU.value, "gpu": TaskQueue.GPU.value}


def resolve_task_queue(task_queue: TaskQueue | str) -> str:
    """Map 'cpu'/'gpu' (any case) to the NOMAD queue names; other names pass through."""
    name = _queue_name(task_queue)
    return _QUEUE_ALIASES.get(name.lower(), name)


def _definition(cls: Any, argument: str) -> _Definition:
    defn = _Definition.from_class(cls) if isinstance(cls, type) else None
    if defn is None:
        name = getattr(cls, "__qualname__", None) or repr(cls)
        raise TypeError(f"{argument} {name} must be a class decorated with @workflow.defn")
    return defn


def _check_activities(activities: list[Callable[..., Any]], where: str = "") -> None:
    for fn in activities:
        if temporalio.activity._Definition.from_callable(fn) is None:
            name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
            raise TypeError(
                f"activity {name}{where} must be a function decorated with @activity.defn"
            )


class Action:
    """A set of activities and workflows that run on one task queue.

    Attributes:
        task_queue: The queue the workflow and ``activities`` run on.
        activities: The activity functions, registered on ``task_queue``.
        workflow: The main ``@workflow.defn`` class; starting the action starts it.
        child_workflows: Further ``@workflow.defn`` classes the main workflow starts.
        task_queue_activities: Activities to register on other queues, by queue.
        nexus_service_handlers: Nexus service handler instances for ``task_queue``
            (upstream NOMAD 2.0). Stored; a nomad-actions worker refuses to start an action
            that has any, naming it, since the engine does not run Nexus tasks.
    """

    task_queue: TaskQueue | str
    activities: list[Callable[..., Any]]
    workflow: type
    child_workflows: list[type]
    task_queue_activities: dict[TaskQueue | str, list[Callable[..., Any]]]
    nexus_service_handlers: list[Any]

    def __init__(
        self,
        task_queue: TaskQueue | str,
        activities: list[Callable[..., Any]],
        workflow: type,
        child_workflows: list[type] | None = None,
        task_queue_activities: dict[TaskQueue | str, list[Callable[..., Any]]] | None = None,
        nexus_service_handlers: list[Any] | None = None,
    ) -> None:
        """Creates the action.

        Args:
            task_queue: The queue for the workflows and ``activities``.
            activities: The activity functions.
            workflow: The main workflow class, decorated with ``@workflow.defn``.
            child_workflows: Child workflow classes, each decorated with ``@workflow.defn``.
            task_queue_activities: Activities to register on other queues, by queue.
            nexus_service_handlers: Nexus service handler instances (a list).

        Raises:
            TypeError: ``activities`` is not a list of callables, ``child_workflows`` is not a
                list, ``task_queue_activities`` is not a dict of such lists, an activity lacks
                ``@activity.defn``, or a workflow class lacks ``@workflow.defn`` (or the main
                workflow is dynamic), or ``nexus_service_handlers`` is not a list. The message
                names the offending function or class.
        """
        if not isinstance(activities, list) or not all(callable(a) for a in activities):
            raise TypeError("activities must be a list of callable functions")
        child_workflows = child_workflows if child_workflows is not None else []
        if not isinstance(child_workflows, list):
            raise TypeError("child_workflows must be a list")
        task_queue_activities = task_queue_activities if task_queue_activities is not None else {}
        if not isinstance(task_queue_activities, dict):
            raise TypeError("task_queue_activities must be a dict")
        if not all(
            isinstance(queue_activities, list) and all(callable(a) for a in queue_activities)
            for queue_activities in task_queue_activities.values()
        ):
            raise TypeError("task_queue_activities values must be lists of callable functions")
        nexus_service_handlers = (
            nexus_service_handlers if nexus_service_handlers is not None else []
        )
        if not isinstance(nexus_service_handlers, list):
            raise TypeError("nexus_service_handlers must be a list")
        _check_activities(activities)
        for queue, queue_activities in task_queue_activities.items():
            _check_activities(queue_activities, f" (for task queue {_queue_name(queue)})")
        if not _queue_name(task_queue):
            raise TypeError("task_queue must be a TaskQueue or a non-empty string")
        if _definition(workflow, "workflow").name is None:
            raise TypeError(
                f"workflow {workflow.__qualname__} is a dynamic workflow; an action needs a "
                "named @workflow.defn class"
            )
        for child in child_workflows:
            _definition(child, "child workflow")

        self.task_queue = task_queue
        self.activities = activities
        self.workflow = workflow
        self.child_workflows = child_workflows
        self.task_queue_activities = task_queue_activities
        self.nexus_service_handlers = nexus_service_handlers

    def __repr__(self) -> str:
        return (
            f"Action(task_queue={_queue_name(self.task_queue)!r}, "
            f"workflow={self.workflow_name!r}, activities={len(self.activities)})"
        )

    @property
    def task_queue_name(self) -> str:
        """The plain name of ``task_queue``, e.g. ``'cpu-task-queue'``."""
        return _queue_name(self.task_queue)

    @property
    def workflow_name(self) -> str:
        """The workflow type name: the ``@workflow.defn`` name, the class name by default."""
        name = _Definition.must_from_class(self.workflow).name
        assert name is not None  # dynamic workflows are rejected in __init__
        return name

    @property
    def run_arg_type(self) -> Any:
        """The type hint of the main workflow's run argument (after self), or None."""
        return _run_hints(self.workflow)[0]

    @property
    def run_return_type(self) -> Any:
        """The return type hint of the main workflow's run method, or None."""
        return _run_hints(self.workflow)[1]

    def all_workflows(self) -> list[type]:
        """Returns the main workflow followed by the child workflows."""
        return [self.workflow, *self.child_workflows]


def _run_hints(cls: type) -> tuple[Any, Any]:
    """Returns (first argument type, return type) of a workflow's run method, None if unset."""
    defn = _Definition.must_from_class(cls)
    run_fn = defn.run_fn
    params = [
        p
        for p in list(inspect.signature(run_fn).parameters.values())[1:]
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    try:
        hints = typing.get_type_hints(run_fn)
    except (NameError, TypeError, AttributeError):
        # A hint that only resolves under TYPE_CHECKING; temporalio may still know the types.
        arg_types = defn.arg_types or []
        return (arg_types[0] if params and arg_types else None, defn.ret_type)
    arg_type = hints.get(params[0].name) if params else None
    return arg_type, hints.get("return")


class ActionEntryPoint(BaseModel):
    """The ``nomad.plugin`` entry point of an action.

    Plugins subclass it and override :meth:`load`, importing the action lazily::

        class MyActionEntryPoint(ActionEntryPoint):
            def load(self):
                from .myaction import my_action

                return my_action

        my_action = MyActionEntryPoint(name="My action", task_queue=TaskQueue.CPU)

    Attributes:
        id: The entry point's value, e.g. ``'nomad_example.actions.myaction:my_action'``;
            set on discovery.
        name: Display name; ``start_action(action_name=...)`` also matches it.
        description: What the action does.
        plugin_package: The distribution that provides it; set on discovery.
        entry_point_type: Always ``'action'``.
        task_queue: The queue the action runs on.
        users: User ids allowed to run it, or None for everyone.
        groups: Group ids allowed to run it, or None for everyone.
        priority_key: Temporal priority of its runs, 1 (highest) to 5; None for the
            server's default (3).
        priority_fairness_key: ``'user_id'`` to share the queue fairly between users
            (Temporal's fairness key = the starting user's id); None for no fairness key.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="allow")

    id: str | None = None
    name: str | None = None
    description: str | None = None
    plugin_package: str | None = None
    entry_point_type: Literal["action"] = "action"
    task_queue: TaskQueue | str = TaskQueue.CPU
    users: list[str] | None = None
    groups: list[str] | None = None
    priority_key: int | None = Field(default=None, ge=1, le=5)
    priority_fairness_key: Literal["user_id"] | None = None

    def load(self) -> Action:
        """Returns the action; subclasses override this.

        Raises:
            NotImplementedError: Always, in this base class.
        """
        raise NotImplementedError(f"{type(self).__name__} must override load() to return an Action")


def is_action_entry_point(obj: object) -> bool:
    """Tells whether ``obj`` looks like an action entry point.

    Decided by shape, not class, so upstream ``nomad-lab`` entry points count: a callable
    ``load`` and ``entry_point_type == 'action'``.

    Args:
        obj: Any object, e.g. a loaded ``nomad.plugin`` entry point.

    Returns:
        True for an action entry point instance.
    """
    if isinstance(obj, type):
        return False
    return callable(getattr(obj, "load", None)) and getattr(obj, "entry_point_type", None) == (
        "action"
    )


def as_action(obj: Any) -> Action:
    """Checks an action and returns it as an :class:`Action`.

    Upstream NOMAD's ``Action`` (or any object of that shape) checks little; this applies
    :class:`Action`'s checks to it, so a missing ``@workflow.defn`` or ``@activity.defn`` is
    found when the action is loaded, not when a worker first runs it.

    Args:
        obj: An object for which :func:`is_action` is true.

    Returns:
        ``obj`` itself if it is an :class:`Action`, else a new :class:`Action` with its
        attributes.

    Raises:
        TypeError: The action is invalid; the message names the offending function or class.
    """
    checked = Action(
        task_queue=obj.task_queue,
        activities=obj.activities,
        workflow=obj.workflow,
        child_workflows=getattr(obj, "child_workflows", None),
        task_queue_activities=getattr(obj, "task_queue_activities", None),
        nexus_service_handlers=getattr(obj, "nexus_service_handlers", None),
    )
    return obj if isinstance(obj, Action) else checked


def is_action(obj: object) -> bool:
    """Tells whether ``obj`` looks like an action (``task_queue``, ``activities``, ``workflow``).

    Args:
        obj: Any object, e.g. what an entry point's ``load()`` returned.

    Returns:
        True for an action instance, ours or upstream's.
    """
    if isinstance(obj, type):
        return False
    return all(hasattr(obj, name) for name in ("task_queue", "activities", "workflow"))


@dataclass
class QueueWork:
    """What a worker on one task queue runs, as :func:`group_by_task_queue` finds it.

    Attributes:
        actions: The actions whose ``task_queue`` is this queue, in the order given.
        activities: Activities that actions register on this queue through
            ``task_queue_activities`` (the actions themselves may live on other queues).
    """

    actions: list[Action] = field(default_factory=list)
    activities: list[Callable[..., Any]] = field(default_factory=list)


def group_by_task_queue(actions: Iterable[Action]) -> dict[str, QueueWork]:
    """Group actions by the task queue (name resolved by :func:`resolve_task_queue`) they run
    on, with the activities every action registers on other queues.

    Args:
        actions: Loaded actions.

    Returns:
        Queue name -> :class:`QueueWork`, queues in the order they are first met; a queue
        that only receives ``task_queue_activities`` has no actions.
    """
    groups: dict[str, QueueWork] = {}
    for action in actions:
        groups.setdefault(resolve_task_queue(action.task_queue), QueueWork()).actions.append(action)
        for queue, activities in (action.task_queue_activities or {}).items():
            groups.setdefault(resolve_task_queue(queue), QueueWork()).activities.extend(activities)
    return groups

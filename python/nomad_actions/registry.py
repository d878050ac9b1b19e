"""Finds actions: action id -> entry point -> :class:`~nomad_actions.action.Action`.

Actions come from two places. Installed plugins expose entry points in the ``nomad.plugin``
group; those that look like action entry points (see
:func:`~nomad_actions.action.is_action_entry_point`) are kept, with the entry point's value
(``'package.module:attribute'``) as their id, as in NOMAD. Tests and notebooks can add more with
:func:`register_action`; a registered action hides a discovered one with the same id.

Broken plugins are reported, never silently dropped: an entry point whose module fails to import
is listed by :func:`get_broken_entry_points` (looking it up raises :class:`ActionLoadError`
with the import error), and :func:`load_action` checks what ``load()`` returns (an action whose
workflow lacks ``@workflow.defn`` or whose activity lacks ``@activity.defn`` is refused, naming
the entry point and the function or class).
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from pydantic import PrivateAttr

from .action import Action, ActionEntryPoint, as_action, is_action, is_action_entry_point
from .errors import (
    ActionLoadError,
    AmbiguousActionError,
    NomadActionsError,
    UnknownActionError,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "clear_registered_actions",
    "get_action_entry_point",
    "get_actions",
    "get_broken_entry_points",
    "load_action",
    "refresh_actions",
    "register_action",
    "resolve_action_id",
    "unregister_action",
]

ENTRY_POINT_GROUP = "nomad.plugin"

logger = logging.getLogger(__name__)

# Loading user code can import anything, so the lock is reentrant and never held by callers.
_lock = threading.RLock()
_discovered: dict[str, Any] | None = None
# Entry points of the group whose module failed to import: value -> the import error.
_import_errors: dict[str, BaseException] = {}
_registered: dict[str, Any] = {}
_loaded: dict[str, Any] = {}


class _StaticActionEntryPoint(ActionEntryPoint):
    """Wraps an :class:`Action` passed to :func:`register_action` directly."""

    _action: Any = PrivateAttr(default=None)

    def load(self) -> Action:
        return self._action


def _copy_with(obj: Any, **updates: Any) -> Any:
    """Returns a copy of ``obj`` with ``updates`` set; ``obj`` itself if it cannot be copied."""
    if callable(getattr(obj, "model_copy", None)):
        return obj.model_copy(update=updates)
    try:
        new = copy.copy(obj)
        for key, value in updates.items():
            setattr(new, key, value)
    except Exception:
        logger.debug("Cannot copy entry point %r; using it unchanged", obj, exc_info=True)
        return obj
    return new


def _with_defaults(obj: Any, **values: Any) -> Any:
    """Returns ``obj``, or a copy with those of ``values`` set whose fields are None."""
    updates = {k: v for k, v in values.items() if getattr(obj, k, None) is None}
    return _copy_with(obj, **updates) if updates else obj


def _discover() -> dict[str, Any]:
    found: dict[str, Any] = {}
    _import_errors.clear()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as err:
            logger.warning(
                'Skipping %s entry point "%s": it failed to import',
                ENTRY_POINT_GROUP,
                ep.value,
                exc_info=True,
            )
            _import_errors[ep.value] = err
            continue
        if not is_action_entry_point(obj):
            continue
        package = ep.value.split(":", 1)[0].split(".", 1)[0].strip()
        found[ep.value] = _with_defaults(obj, id=ep.value, plugin_package=package or None)
    return found


def _all_entry_points() -> dict[str, Any]:
    global _discovered
    with _lock:
        if _discovered is None:
            _discovered = _discover()
        return {**_discovered, **_registered}


def refresh_actions() -> None:
    """Forgets discovered entry points and loaded actions, so the next call looks again."""
    global _discovered
    with _lock:
        _discovered = None
        _loaded.clear()


def register_action(entry_point: Any, id: str | None = None) -> str:
    """Adds an action by hand, e.g. in tests or notebooks.

    Args:
        entry_point: An action entry point (ours, upstream NOMAD's, or anything of that shape)
            or an :class:`Action`, which is wrapped in an :class:`ActionEntryPoint` on the
            action's task queue.
        id: The action id; defaults to ``entry_point.id``.

    Returns:
        The id it was registered under. It hides a discovered action with the same id.

    Raises:
        ValueError: No id was given and the entry point has none.
        TypeError: ``entry_point`` is neither an action entry point nor an action.
    """
    if is_action_entry_point(entry_point):
        action_id = id if id is not None else getattr(entry_point, "id", None)
        if not action_id:
            raise ValueError("register_action needs an id: pass id= or set entry_point.id")
        if getattr(entry_point, "id", None) != action_id:
            entry_point = _copy_with(entry_point, id=action_id)
    elif is_action(entry_point):
        if not id:
            raise ValueError("register_action needs an id= when given an Action")
        action_id = id
        action = entry_point
        entry_point = _StaticActionEntryPoint(id=action_id, task_queue=action.task_queue)
        entry_point._action = action
    else:
        raise TypeError(
            "register_action expects an action entry point or an Action, "
            f"got {type(entry_point).__name__}"
        )
    with _lock:
        _registered[action_id] = entry_point
        _loaded.pop(action_id, None)
    return action_id


def unregister_action(id: str) -> None:
    """Removes an action added with :func:`register_action`; unknown ids are ignored.

    Args:
        id: The id it was registered under.
    """
    with _lock:
        _registered.pop(id, None)
        _loaded.pop(id, None)


def clear_registered_actions() -> None:
    """Removes every action added with :func:`register_action`."""
    with _lock:
        for action_id in _registered:
            _loaded.pop(action_id, None)
        _registered.clear()


def get_broken_entry_points() -> dict[str, str]:
    """Returns the ``nomad.plugin`` entry points whose module failed to import.

    Such an entry point may or may not be an action (the group also holds parsers, schemas and
    apps): nothing about it, its task queue included, is known. :func:`get_actions` leaves them
    out; a worker refuses to start while there are any, unless told to skip broken ones.

    Returns:
        A new dict of entry point value (what would be the action id) -> the import error,
        as ``'<ExceptionType>: <message>'``.
    """
    with _lock:
        _all_entry_points()
        errors = dict(_import_errors)
    return {ep_id: f"{type(err).__name__}: {err}" for ep_id, err in errors.items()}


def _import_failure(action_id: str) -> ActionLoadError | None:
    """The error to raise for an id whose entry point failed to import, if it did."""
    with _lock:
        err = None if action_id in _registered else _import_errors.get(action_id)
    if err is None:
        return None
    error = ActionLoadError(
        f'Failed to load action from entry point "{action_id}": its module failed to import '
        f"({type(err).__name__}: {err})"
    )
    error.__cause__ = err
    return error


def get_actions() -> dict[str, ActionEntryPoint]:
    """Returns the entry points of all known actions, by id.

    Installed plugins are scanned once, then cached until :func:`refresh_actions`; registered
    actions are added on top.

    Returns:
        A new dict of id -> entry point.
    """
    return _all_entry_points()


def _unknown(action_id: str, known: dict[str, Any]) -> NomadActionsError:
    broken = _import_failure(action_id)
    if broken is not None:
        return broken
    ids = sorted(known)
    listing = f"Known actions: {', '.join(ids)}" if ids else "no actions are installed"
    sep = "." if ids else ":"
    return UnknownActionError(f'Unknown action "{action_id}"{sep} {listing}', action_id, ids)


def get_action_entry_point(action_id: str) -> ActionEntryPoint:
    """Returns the entry point of an action.

    Args:
        action_id: The action id, e.g. ``'nomad_example.actions.myaction:my_action'``.

    Returns:
        The entry point.

    Raises:
        UnknownActionError: No action has this id; the message lists the known ids.
        ActionLoadError: The entry point with this id failed to import (the message names it
            and gives the import error).
    """
    known = _all_entry_points()
    if action_id not in known:
        raise _unknown(action_id, known)
    return known[action_id]


def load_action(action_id: str) -> Action:
    """Loads an action through its entry point's ``load()``, once per id.

    Args:
        action_id: The action id.

    Returns:
        The action.

    Raises:
        UnknownActionError: No action has this id.
        ActionLoadError: ``load()`` raised (the original error is the ``__cause__``), did not
            return an action, or returned an invalid one (a workflow without
            ``@workflow.defn``, an activity without ``@activity.defn``; the message names it),
            or the entry point failed to import.
    """
    with _lock:
        if action_id in _loaded:
            return _loaded[action_id]
    entry_point = get_action_entry_point(action_id)
    load: Callable[[], Any] = entry_point.load
    try:
        action = load()
    except Exception as e:
        raise ActionLoadError(f'Failed to load action from entry point "{action_id}"') from e
    if not is_action(action):
        raise ActionLoadError(f'The following entry point did not return an Action: "{action_id}"')
    try:
        action = as_action(action)
    except TypeError as e:
        raise ActionLoadError(f'Invalid action from entry point "{action_id}": {e}') from e
    with _lock:
        # Keep whichever load won a race, so every caller sees the same object.
        return _loaded.setdefault(action_id, action)


def resolve_action_id(action_id: str | None = None, action_name: str | None = None) -> str:
    """Turns an action id or name into a known action id.

    Args:
        action_id: An action id.
        action_name: An action id, or else the ``name`` of exactly one entry point (NOMAD
            2.x documents ``start_action(action_name=...)``).

    Returns:
        The action id.

    Raises:
        TypeError: Neither or both arguments were given.
        UnknownActionError: No action matches.
        ActionLoadError: The entry point with this id failed to import.
        AmbiguousActionError: ``action_name`` is the name of several actions; the message
            lists their ids.
    """
    if (action_id is None) == (action_name is None):
        raise TypeError("give exactly one of action_id and action_name")
    known = _all_entry_points()
    if action_id is not None:
        if action_id not in known:
            raise _unknown(action_id, known)
        return action_id
    assert action_name is not None
    if action_name in known:
        return action_name
    matches = sorted(i for i, ep in known.items() if getattr(ep, "name", None) == action_name)
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise AmbiguousActionError(
            f'Action name "{action_name}" matches several actions: {", ".join(matches)}. '
            "Use the action id instead.",
            action_name,
            matches,
        )
    raise _unknown(action_name, known)

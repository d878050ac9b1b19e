"""Input schemas of actions, for forms and API validation (upstream NOMAD 2.x).

The input type of an action is the type hint of its workflow's run argument. Its JSON Schema
comes from Pydantic (``TypeAdapter(tp).json_schema()``) without ``user_id``: NOMAD fills that
in from the logged-in user, so a form must not ask for it.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from nomad_actions.client import _adapter, _validate_input
from nomad_actions.errors import ActionInputError, UnknownActionError
from nomad_actions.registry import get_actions, load_action, resolve_action_id

__all__ = ["get_action_schema", "get_all_action_schemas", "validate_action_arg"]

logger = logging.getLogger(__name__)

#: The field NOMAD sets itself; left out of input schemas.
USER_ID_FIELD = "user_id"


class UnknownActionInputError(UnknownActionError, ActionInputError):
    """``validate_action_arg`` got an unknown action id.

    Both an :class:`UnknownActionError` (a ``LookupError``) and an :class:`ActionInputError`
    (a ``ValueError``, which upstream NOMAD raises here).
    """


def _without_user_id(schema: dict[str, Any]) -> dict[str, Any]:
    properties = schema.get("properties")
    if isinstance(properties, dict):
        properties.pop(USER_ID_FIELD, None)
    required = schema.get("required")
    if isinstance(required, list):
        remaining = [name for name in required if name != USER_ID_FIELD]
        if remaining:
            schema["required"] = remaining
        else:
            del schema["required"]
    return schema


def get_action_schema(action_id: str) -> dict[str, Any]:
    """Returns the JSON Schema of an action's input, without ``user_id``.

    Args:
        action_id: The action id (an entry point ``name`` works too).

    Returns:
        A new JSON Schema dict (Pydantic's, draft 2020-12, with ``$defs`` for nested models)
        whose ``properties`` and ``required`` leave out ``user_id``. An action whose run
        argument has no type hint accepts anything: ``{}``.

    Raises:
        UnknownActionError: No such action.
        ActionLoadError: The action's entry point fails to load.
    """
    aid = resolve_action_id(action_name=action_id)
    tp = load_action(aid).run_arg_type
    if tp is None:
        return {}
    return _without_user_id(copy.deepcopy(_adapter(tp).json_schema()))


def get_all_action_schemas() -> dict[str, dict[str, Any]]:
    """Returns the input schemas of all known actions, by action id.

    Actions whose entry point fails to load, or whose input type has no JSON Schema, are
    skipped (and logged), so one broken plugin does not hide the others.

    Returns:
        action id -> schema, as :func:`get_action_schema` gives it.
    """
    schemas: dict[str, dict[str, Any]] = {}
    for action_id in sorted(get_actions()):
        try:
            schemas[action_id] = get_action_schema(action_id)
        except Exception as err:
            logger.warning("No input schema for action %s: %s", action_id, err)
    return schemas


def validate_action_arg(action_id: str, data: Any) -> Any:
    """Validates input data for an action, exactly as ``start_action`` does.

    Args:
        action_id: The action id (an entry point ``name`` works too).
        data: A dict, Pydantic model or dataclass for the workflow's run argument.

    Returns:
        The validated value, of the run argument's type (``data`` unchanged when the
        argument has no type hint).

    Raises:
        ActionInputError: The data does not fit; the message names the field and the
            action, word for word as ``start_action`` words it.
        UnknownActionInputError: No such action (a ``LookupError`` and a ``ValueError``).
        ActionLoadError: The action's entry point fails to load.
    """
    try:
        aid = resolve_action_id(action_name=action_id)
    except UnknownActionError as err:
        raise UnknownActionInputError(str(err), err.action_id, err.known_ids) from None
    return _validate_input(aid, load_action(aid).run_arg_type, data)

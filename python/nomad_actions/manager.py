"""Upstream NOMAD 2.0's ``nomad.actions.manager``, on Temporal alone.

Every function that ``nomad.actions.manager`` of nomad-lab 2.0.0 has is here with the same
name, arguments, keyword spellings, return shapes and errors, so code written against
upstream's module runs unchanged with ``from nomad_actions.manager import ...``:

- ``start_action(action_id=None, data=None, *, action_name=None) -> str``;
- ``get_action_status(id, user_id=None)``: an id Temporal does not know reads TERMINATED;
- ``get_action_result(id, user_id)``: waits, returns the result as plain (JSON) data;
- ``stop_action(id, user_id)``: "Action is not running." for a closed action;
- ``get_user_action`` / ``list_user_actions`` (async; pages with a cursor) return records
  shaped like upstream's ``ActionRecord`` / ``ActionRecordPage``;
- ``get_all_action_schemas() -> list[ActionSchemaInfo]``;
- ``request_signal_input`` (in workflows) / ``submit_signal_input`` (async);
- the per-run directories under ``fs.actions`` (``NOMAD_FS_ACTIONS``), as ``str`` paths.

Upstream keeps a MongoDB record per action; here Temporal is the record (the owner, action
and upload ids travel in the workflow memo), so no database is needed. Ownership is checked
against that memo; an action of another user reads as not found, as upstream.

The top-level ``nomad_actions`` functions differ on purpose (typed results, richer errors,
``WorkflowNotFoundError`` for unknown ids); see the README.
"""

from __future__ import annotations

import base64
import inspect
import logging
import os
import typing
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, Field, TypeAdapter
from temporalio.client import WorkflowExecutionStatus

from nomad_actions import client as _client_mod
from nomad_actions.client import (
    MEMO_ACTION_ID,
    MEMO_UPLOAD_ID,
    Op,
    _async,
    _sync,
    list_actions,
    list_actions_async,
    signal_action,
    signal_action_async,
    to_jsonable,
)
from nomad_actions.client import start_action as _start_action
from nomad_actions.client import start_action_async as _start_action_async
from nomad_actions.config import TaskQueue, actions_dir
from nomad_actions.errors import (
    ActionFailedError,
    ActionNotFoundError,
    ActionNotRunningError,
    ActionPermissionError,
    SignalInputNotFoundError,
    WorkflowNotFoundError,
)
from nomad_actions.heartbeat import heartbeat
from nomad_actions.registry import get_actions, load_action
from nomad_actions.schemas import get_action_schema
from nomad_actions.schemas import validate_action_arg as _validate_action_arg
from nomad_actions.signal_input import (
    PENDING_QUERY,
    SUBMITTED_SIGNAL,
    request_signal_input,
    signal_name_of,
)

__all__ = [
    "ACTION_INSTANCE_ARTIFACTS_DIRNAME",
    "ACTION_INSTANCE_ASSETS_DIRNAME",
    "ACTION_INSTANCE_NOMAD_SYSTEM_DIRNAME",
    "ActionRecord",
    "ActionRecordPage",
    "ActionSchemaInfo",
    "ActionSummaryRecord",
    "TaskQueue",
    "action_artifacts_dir",
    "action_instance_artifacts_dir",
    "action_instance_assets_dir",
    "action_log_file_path",
    "get_action_result",
    "get_action_result_async",
    "get_action_schema",
    "get_action_status",
    "get_action_status_async",
    "get_actions",
    "get_all_action_schemas",
    "get_user_action",
    "heartbeat",
    "list_actions",
    "list_actions_async",
    "list_user_actions",
    "request_signal_input",
    "signal_action",
    "signal_action_async",
    "start_action",
    "start_action_async",
    "stop_action",
    "stop_action_async",
    "submit_signal_input",
    "validate_action_arg",
]

logger = logging.getLogger(__name__)

ACTION_INSTANCE_ASSETS_DIRNAME = "assets"
ACTION_INSTANCE_ARTIFACTS_DIRNAME = "artifacts"
ACTION_INSTANCE_NOMAD_SYSTEM_DIRNAME = "nomad_system"

_NOT_FOUND = "The action was not registered in the DB or was registered under a different user."
_NOT_RUNNING = "Action is not running."
_ACTIVE = (WorkflowExecutionStatus.RUNNING,)
_CURSOR_FORMAT = "%Y-%m-%dT%H:%M:%S.%f+00:00"
_MAX_LISTED = 100_000


# ---------------------------------------------------------------------------- records


class ActionSchemaInfo(BaseModel):
    """An action's input schema and description, as upstream's ``ActionSchemaInfo``."""

    action_id: str
    json_schema: dict[str, Any]
    name: str | None = None
    plugin_package: str | None = None
    description: str | None = None
    task_queue: str | None = None
    groups: list[str] | None = None
    users: list[str] | None = None
    signals: list[dict[str, Any]] | None = None


class ActionRecord(BaseModel):
    """One action run, shaped as upstream's ``ActionRecord``.

    ``input_data`` is empty (the input lives in the workflow history, not in a database);
    ``signal_input_requests`` are the pending requests of a running action.
    """

    action_id: str
    action_instance_id: str
    user_id: str
    upload_id: str | None = None
    status: str
    input_data: dict[str, Any] = Field(default_factory=dict)
    signal_input_requests: list[dict[str, Any]] = Field(default_factory=list)
    signal_inputs_submitted: list[dict[str, Any]] = Field(default_factory=list)
    results: Any = None
    created_at: datetime
    updated_at: datetime
    priority_key: int | None = None
    priority_fairness_key: Literal["user_id"] | None = None


class ActionSummaryRecord(BaseModel):
    """One row of :func:`list_user_actions`, as upstream's ``ActionSummaryRecord``."""

    action_id: str
    action_instance_id: str
    upload_id: str | None = None
    signal_input_requests: list[dict[str, str | None]] = Field(default_factory=list)
    status: str
    created_at: datetime
    updated_at: datetime


class ActionRecordPage(BaseModel):
    """A page of :func:`list_user_actions`; pass ``next_cursor`` to get the next one."""

    items: list[ActionSummaryRecord]
    next_cursor: str | None = None
    total: int


# ---------------------------------------------------------------------------- directories


def _instance_dir(action_instance_id: str, *parts: str) -> str:
    if not action_instance_id or action_instance_id in (".", "..") or "/" in action_instance_id:
        raise ValueError(f"Not an action instance id: {action_instance_id!r}")
    path = os.path.join(str(actions_dir()), action_instance_id, *parts)
    os.makedirs(path, exist_ok=True)
    return path


def action_artifacts_dir() -> str:
    """Returns ``<fs.actions>/artifacts``, created if needed: files several actions share
    (trained models, global configuration, reference data sets)."""
    path = os.path.join(str(actions_dir()), "artifacts")
    os.makedirs(path, exist_ok=True)
    return path


def action_instance_assets_dir(action_instance_id: str) -> str:
    """Returns ``<fs.actions>/<id>/assets``, created if needed: a run's uploaded assets.

    Raises:
        ValueError: The id is empty or contains ``/``.
    """
    return _instance_dir(action_instance_id, ACTION_INSTANCE_ASSETS_DIRNAME)


def action_instance_artifacts_dir(action_instance_id: str) -> str:
    """Returns ``<fs.actions>/<id>/artifacts``, created if needed: a run's outputs.

    Raises:
        ValueError: The id is empty or contains ``/``.
    """
    return _instance_dir(action_instance_id, ACTION_INSTANCE_ARTIFACTS_DIRNAME)


def action_log_file_path(action_instance_id: str) -> str:
    """Returns ``<fs.actions>/<id>/nomad_system/logs/<id>.log``, the run's log file (its
    directory is created), which the worker writes and ``nomad-actions logs`` reads.

    Raises:
        ValueError: The id is empty or contains ``/``.
    """
    log_dir = _instance_dir(action_instance_id, ACTION_INSTANCE_NOMAD_SYSTEM_DIRNAME, "logs")
    return os.path.join(log_dir, f"{action_instance_id}.log")


# ---------------------------------------------------------------------------- schemas


def _signal_schema(fn: Any) -> dict[str, Any]:
    params = [p for p in inspect.signature(fn).parameters.values() if p.name != "self"]
    if len(params) > 1:
        raise ValueError(
            f"Signal {getattr(fn, '__name__', fn)} has more than one argument. Only zero or "
            "one arguments are supported."
        )
    if not params:
        return {}
    try:
        hint = typing.get_type_hints(fn).get(params[0].name, Any)
    except Exception:
        hint = Any
    if isinstance(hint, type) and issubclass(hint, BaseModel):
        return hint.model_json_schema(by_alias=True)
    return TypeAdapter(hint).json_schema()


def _signals(workflow_cls: type) -> list[dict[str, Any]]:
    signals = []
    for attr_name in dir(workflow_cls):
        if attr_name.startswith("__"):
            continue
        attr = getattr(workflow_cls, attr_name, None)
        defn = getattr(attr, "__temporal_signal_definition", None)
        if defn is not None:
            signals.append({attr_name: _signal_schema(getattr(defn, "fn", None) or attr)})
    return signals


def get_all_action_schemas() -> list[ActionSchemaInfo]:
    """Returns the input schema (without ``user_id``), description, queue, access lists and
    signals of every known action, as upstream 2.0's list of ``ActionSchemaInfo``.

    Actions that fail to load are left out (and logged), so one broken plugin does not hide
    the others.
    """
    infos: list[ActionSchemaInfo] = []
    for action_id, entry_point in sorted(get_actions().items()):
        try:
            action = load_action(action_id)
            queue = entry_point.task_queue
            infos.append(
                ActionSchemaInfo(
                    action_id=action_id,
                    json_schema=get_action_schema(action_id),
                    name=entry_point.name,
                    plugin_package=entry_point.plugin_package,
                    description=entry_point.description,
                    task_queue=getattr(queue, "value", queue),
                    groups=getattr(entry_point, "groups", None),
                    users=getattr(entry_point, "users", None),
                    signals=_signals(action.workflow),
                )
            )
        except Exception as err:
            logger.warning("No schema for action %s: %s", action_id, err)
    return infos


def validate_action_arg(action_id: str, arg: Any) -> Any:
    """Validates ``arg`` for the action's workflow run argument, as ``start_action`` does;
    returns the validated value (upstream's argument name ``arg``).

    Raises:
        ValueError: Unknown action or invalid input (``ActionInputError``, naming the field).
    """
    return _validate_action_arg(action_id, arg)


# ---------------------------------------------------------------------------- starting


def _same_action(action_id: str | None, action_name: str | None) -> None:
    if action_id is not None and action_name is not None and action_id != action_name:
        raise ValueError("action_id and action_name must identify the same action.")
    if not (action_id or action_name):
        raise ValueError("An action_id or action_name is required.")


def start_action(
    action_id: str | None = None, data: Any = None, *, action_name: str | None = None
) -> str:
    """Starts an action; returns its instance (workflow) id, ``f'{id}-{user_id}-{uuid4()}'``.

    Raises:
        ValueError: Neither or two different ids given; the input is invalid
            (``ActionInputError``) or the action unknown (``UnknownActionError``).
    """
    _same_action(action_id, action_name)
    if action_id is not None:
        return _start_action(action_id, data)
    return _start_action(action_name=action_name, data=data)


async def start_action_async(
    action_id: str | None = None, data: Any = None, *, action_name: str | None = None
) -> str:
    """Async twin of :func:`start_action`."""
    _same_action(action_id, action_name)
    if action_id is not None:
        return await _start_action_async(action_id, data)
    return await _start_action_async(action_name=action_name, data=data)


# ---------------------------------------------------------------------------- following


def _owned(action_instance_id: str, user_id: str) -> Op[dict[str, Any]]:
    """Describe an action of ``user_id``; ActionNotFoundError if absent or someone else's."""
    try:
        return (yield from _client_mod._describe(action_instance_id, user_id))
    except (WorkflowNotFoundError, ActionPermissionError):
        raise ActionNotFoundError(_NOT_FOUND) from None


def _status(action_instance_id: str, user_id: str | None) -> Op[WorkflowExecutionStatus]:
    if user_id is not None:
        description = yield from _owned(action_instance_id, user_id)
    else:
        try:
            description = yield from _client_mod._describe(action_instance_id, None)
        except WorkflowNotFoundError:
            return WorkflowExecutionStatus.TERMINATED
    return WorkflowExecutionStatus(description["status"])


def get_action_status(
    action_instance_id: str, user_id: str | None = None
) -> WorkflowExecutionStatus:
    """Returns the action's ``WorkflowExecutionStatus``; TERMINATED for an id Temporal does
    not know.

    Raises:
        ActionNotFoundError: ``user_id`` is given and the action is not theirs (or unknown).
    """
    return _sync(_status(action_instance_id, user_id))


async def get_action_status_async(
    action_instance_id: str, user_id: str | None = None
) -> WorkflowExecutionStatus:
    """Async twin of :func:`get_action_status`."""
    return await _async(_status(action_instance_id, user_id))


def _result(action_instance_id: str, user_id: str) -> Op[Any]:
    yield from _owned(action_instance_id, user_id)
    native = _client_mod._client()
    outcome = yield lambda blocking: native.result(action_instance_id, None, None, blocking)
    status = WorkflowExecutionStatus(outcome["status"])
    if status != WorkflowExecutionStatus.COMPLETED:
        failure = outcome["failure"] or {}
        message = failure.get("message") or status.name
        raise ActionFailedError(
            f'Action "{action_instance_id}" ended {status.name}: {message}',
            workflow_id=action_instance_id,
            status=status,
            failure_message=message,
            failure_type=failure.get("failure_type") or None,
            causes=failure.get("causes") or [],
        )
    return to_jsonable(outcome["result"])


def get_action_result(action_instance_id: str, user_id: str) -> Any:
    """Waits for the action to finish; returns its result as plain data (a dict for a
    model or dataclass), as upstream's serialized result.

    Raises:
        ActionNotFoundError: The action is unknown or not ``user_id``'s.
        ActionFailedError: It failed, was canceled, terminated or timed out.
    """
    return _sync(_result(action_instance_id, user_id))


async def get_action_result_async(action_instance_id: str, user_id: str) -> Any:
    """Async twin of :func:`get_action_result`."""
    return await _async(_result(action_instance_id, user_id))


def _stop(action_instance_id: str, user_id: str) -> Op[None]:
    description = yield from _owned(action_instance_id, user_id)
    if WorkflowExecutionStatus(description["status"]) not in _ACTIVE:
        raise ActionNotRunningError(_NOT_RUNNING)
    native = _client_mod._client()
    yield lambda blocking: native.cancel(action_instance_id, "", blocking)


def stop_action(action_instance_id: str, user_id: str) -> None:
    """Requests cancellation of a running action of ``user_id``.

    Raises:
        ActionNotFoundError: The action is unknown or not ``user_id``'s.
        ActionNotRunningError: It has already ended ("Action is not running.").
    """
    _sync(_stop(action_instance_id, user_id))


async def stop_action_async(action_instance_id: str, user_id: str) -> None:
    """Async twin of :func:`stop_action`."""
    await _async(_stop(action_instance_id, user_id))


def _time(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, tz=timezone.utc)


def _memo_str(memo: dict[str, Any], key: str) -> str | None:
    value = memo.get(key)
    return None if value is None else str(value)


def _priority_of(action_id: str | None) -> tuple[int | None, str | None]:
    entry_point = get_actions().get(action_id) if action_id else None
    return (
        getattr(entry_point, "priority_key", None),
        getattr(entry_point, "priority_fairness_key", None),
    )


def _pending_requests(action_instance_id: str) -> Op[list[dict[str, Any]]]:
    native = _client_mod._client()
    try:
        answer = yield lambda blocking: native.query(
            action_instance_id, PENDING_QUERY, [], blocking
        )
    except Exception:
        # The workflow never asked for input (no such query), or it cannot answer now.
        return []
    return list(answer or [])


def _record(action_instance_id: str, user_id: str) -> Op[ActionRecord | None]:
    try:
        d = yield from _owned(action_instance_id, user_id)
    except ActionNotFoundError:
        return None
    memo = d["memo"]
    status = WorkflowExecutionStatus(d["status"])
    action_id = _memo_str(memo, MEMO_ACTION_ID) or action_instance_id.rsplit(f"-{user_id}-", 1)[0]
    results = None
    requests: list[dict[str, Any]] = []
    if status == WorkflowExecutionStatus.COMPLETED:
        results = yield from _result(action_instance_id, user_id)
    elif status in _ACTIVE:
        requests = yield from _pending_requests(action_instance_id)
    created = _time(d["start_time"]) or datetime.now(timezone.utc)
    priority_key, fairness = _priority_of(action_id)
    return ActionRecord(
        action_id=action_id,
        action_instance_id=action_instance_id,
        user_id=str(user_id),
        upload_id=_memo_str(memo, MEMO_UPLOAD_ID),
        status=status.name,
        signal_input_requests=requests,
        results=results,
        created_at=created,
        updated_at=_time(d["close_time"]) or created,
        priority_key=priority_key,
        priority_fairness_key=fairness,
    )


async def get_user_action(action_instance_id: str, user_id: str) -> ActionRecord | None:
    """Returns the record of one action of ``user_id`` (with its result once completed and
    its pending input requests while running), or None if unknown or someone else's."""
    return await _async(_record(action_instance_id, user_id))


def _encode_cursor(dt: datetime) -> str:
    return base64.urlsafe_b64encode(
        dt.astimezone(timezone.utc).strftime(_CURSOR_FORMAT).encode()
    ).decode()


def _decode_cursor(cursor: str) -> datetime:
    try:
        token = base64.urlsafe_b64decode(cursor.encode()).decode()
        return datetime.strptime(token, _CURSOR_FORMAT).replace(tzinfo=timezone.utc)
    except Exception as exc:
        raise ValueError(f"Invalid pagination cursor: {cursor!r}") from exc


def _list_owned(
    user_id: str, page_size: int, cursor: str | None, upload_id: str | None
) -> Op[ActionRecordPage]:
    if not 1 <= page_size <= 100:
        raise ValueError("page_size must be between 1 and 100.")
    before = _decode_cursor(cursor) if cursor is not None else None
    # All of the user's rows (found by the search attributes, so the cost follows the
    # user's own runs, not the namespace), sorted here: the server's list order is not by
    # start time on every visibility store, and the cursor is a start time, as upstream's
    # created_at.
    rows = yield from _client_mod._matching_rows(str(user_id), None, None, _MAX_LISTED, upload_id)
    rows = sorted(rows, key=lambda r: r["start_time"] or 0.0, reverse=True)
    total = len(rows)
    if before is not None:
        limit = before.timestamp()
        rows = [r for r in rows if (r["start_time"] or 0.0) < limit]
    page = rows[:page_size]
    items = []
    for row in page:
        memo = row["memo"]
        created = _time(row["start_time"]) or datetime.now(timezone.utc)
        items.append(
            ActionSummaryRecord(
                action_id=_memo_str(memo, MEMO_ACTION_ID) or "",
                action_instance_id=row["workflow_id"],
                upload_id=_memo_str(memo, MEMO_UPLOAD_ID),
                status=WorkflowExecutionStatus(row["status"]).name,
                created_at=created,
                updated_at=_time(row["close_time"]) or created,
            )
        )
    next_cursor = None
    if len(rows) > page_size:
        last = page[-1]["start_time"] or 0.0
        # Floor to microseconds, the cursor's precision, so the last row is not repeated.
        next_cursor = _encode_cursor(
            datetime.fromtimestamp(int(last * 1_000_000) / 1_000_000, tz=timezone.utc)
        )
    return ActionRecordPage(items=items, next_cursor=next_cursor, total=total)


async def list_user_actions(
    user_id: str,
    page_size: int = 20,
    cursor: str | None = None,
    upload_id: str | None = None,
) -> ActionRecordPage:
    """Lists the actions of ``user_id``, newest first, ``page_size`` (1-100) at a time.

    Args:
        user_id: The owner.
        page_size: Rows per page.
        cursor: ``next_cursor`` of the previous page; None for the first page.
        upload_id: Only actions started with this ``upload_id`` in their input.

    Returns:
        The page; ``total`` counts all of the user's (matching) actions.

    Raises:
        ValueError: ``page_size`` is out of range or the cursor is not one of ours.
    """
    return await _async(_list_owned(user_id, page_size, cursor, upload_id))


# ---------------------------------------------------------------------------- signal input


def _submit(action_instance_id: str, user_id: str, signal_fn_name: str, data: Any) -> Op[None]:
    d = yield from _owned(action_instance_id, user_id)
    if WorkflowExecutionStatus(d["status"]) not in _ACTIVE:
        raise ActionNotRunningError(_NOT_RUNNING)
    pending = yield from _pending_requests(action_instance_id)
    if not any(r.get("signal_fn_name") == signal_fn_name for r in pending):
        raise SignalInputNotFoundError(
            f"No pending signal input request found for signal '{signal_fn_name}'."
        )
    action_id = _memo_str(d["memo"], MEMO_ACTION_ID)
    workflow_cls = load_action(action_id).workflow if action_id else None
    signal = signal_name_of(workflow_cls, signal_fn_name)
    native = _client_mod._client()
    # The request is closed first, so a second submit for it is refused.
    yield lambda blocking: native.signal(
        action_instance_id, SUBMITTED_SIGNAL, [signal_fn_name], blocking
    )
    args = [] if data is None else [to_jsonable(data)]
    yield lambda blocking: native.signal(action_instance_id, signal, args, blocking)


async def submit_signal_input(
    action_instance_id: str, user_id: str, signal_fn_name: str, data: Any
) -> None:
    """Answers a pending :func:`request_signal_input` of a running action: sends the
    workflow's signal ``signal_fn_name`` (its Python method name) with ``data``.

    Raises:
        ActionNotFoundError: The action is unknown or not ``user_id``'s.
        ActionNotRunningError: It has ended.
        SignalInputNotFoundError: It has no pending request for this signal.
    """
    await _async(_submit(action_instance_id, user_id, signal_fn_name, data))

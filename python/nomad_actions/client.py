"""Start and follow actions: `start_action`, `get_action_status` and friends.

Every function has a synchronous form, for ELN `normalize()` code, and an `_async`
twin that returns an awaitable. The synchronous forms block the calling thread on
the Rust runtime with the GIL released; they never call `asyncio.run`, so they work
in plain threads and inside a running event loop's thread alike.

Both forms share one implementation: each operation is a generator that yields the
native calls it needs (`lambda blocking: ...`) and returns the final value; `_sync`
and `_async` drive it.
"""

from __future__ import annotations

import base64
import dataclasses
import sys
import uuid
from collections.abc import Callable, Generator, Sequence
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, TypeVar

import pydantic
import pydantic_core
from temporalio.client import WorkflowExecutionStatus

from nomad_actions import _core
from nomad_actions import search_attributes as sa
from nomad_actions.config import ConnectionConfig, get_config
from nomad_actions.errors import (
    ActionFailedError,
    ActionInputError,
    ActionPermissionError,
    RPCError,
)
from nomad_actions.native_types import Execution, PendingActivity, StartRequest
from nomad_actions.progress import ProgressReport, progress_reports
from nomad_actions.registry import (
    get_action_entry_point,
    load_action,
    resolve_action_id,
)

__all__ = [
    "ActionExecution",
    "ActionPage",
    "ActionProgress",
    "count_actions",
    "count_actions_async",
    "get_action_progress",
    "get_action_progress_async",
    "get_action_result",
    "get_action_result_async",
    "get_action_status",
    "get_action_status_async",
    "list_actions",
    "list_actions_async",
    "list_actions_page",
    "list_actions_page_async",
    "query_action",
    "query_action_async",
    "signal_action",
    "signal_action_async",
    "start_action",
    "start_action_async",
    "stop_action",
    "stop_action_async",
    "terminate_action",
    "terminate_action_async",
]

#: Memo keys under which the owner and the action are recorded on each workflow.
MEMO_USER_ID = "nomad_user_id"
MEMO_ACTION_ID = "nomad_action_id"
#: Memo key of the input's ``upload_id``, when it has one (``manager.list_user_actions``).
MEMO_UPLOAD_ID = "nomad_upload_id"

T = TypeVar("T")
# A native call: given `blocking`, returns the value (True) or an awaitable (False).
NativeCall = Callable[[bool], Any]
Op = Generator[NativeCall, Any, T]


def _sync(op: Op[T]) -> T:
    # A native call's error is thrown into the op, so an op can handle it (manager.py does).
    try:
        call = next(op)
        while True:
            try:
                value = call(True)
            except Exception as err:
                call = op.throw(err)
            else:
                call = op.send(value)
    except StopIteration as stop:
        return stop.value


async def _async(op: Op[T]) -> T:
    try:
        call = next(op)
        while True:
            try:
                value = await call(False)
            except Exception as err:
                call = op.throw(err)
            else:
                call = op.send(value)
    except StopIteration as stop:
        return stop.value


@lru_cache(maxsize=8)
def _client_for(config: ConnectionConfig) -> _core.ClientRef:
    # The Rust side keeps one connection per configuration; this only saves re-creating
    # the small handle object.
    return _core.ClientRef(config)


def _client() -> _core.ClientRef:
    config = get_config()
    config.require_payload_security()
    return _client_for(config)


@lru_cache(maxsize=256)
def _adapter(tp: Any) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(tp)


def to_jsonable(value: Any, tp: Any = None) -> Any:
    """Turn a Pydantic model, dataclass or plain value into JSON-compatible data, as
    temporalio's Pydantic payload converter would serialise it."""
    if tp is not None:
        return _adapter(tp).dump_python(value, mode="json")
    return pydantic_core.to_jsonable_python(value)


def _field_errors(err: pydantic.ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(input)"
        parts.append(f'field "{loc}": {e["msg"]}')
    return "; ".join(parts)


def _validate_input(action_id: str, tp: Any, data: Any) -> Any:
    if tp is None:
        return data
    if data is None:
        raise ActionInputError(f'Action "{action_id}" needs input data, got None')
    if dataclasses.is_dataclass(data) and not isinstance(data, type) and not isinstance(data, tp):
        data = dataclasses.asdict(data)
    elif isinstance(data, pydantic.BaseModel) and not isinstance(data, tp):
        data = data.model_dump()
    try:
        return _adapter(tp).validate_python(data)
    except pydantic.ValidationError as err:
        fields = [str(e["loc"][0]) for e in err.errors() if e["loc"]]
        raise ActionInputError(
            f'Invalid input for action "{action_id}": {_field_errors(err)}',
            action_id=action_id,
            fields=dict.fromkeys(fields),
        ) from None


def _field_of(data: Any, name: str) -> str | None:
    value = data.get(name) if isinstance(data, dict) else getattr(data, name, None)
    return None if value is None else str(value)


def _user_id_of(data: Any) -> str | None:
    return _field_of(data, "user_id")


def _check_may_start(
    action_id: str, entry_point: Any, user_id: str, user_groups: Sequence[str] | None
) -> None:
    """Upstream NOMAD 2.x: an entry point with ``users`` or ``groups`` admits only the
    users listed in ``users`` and the members of one of ``groups``; without either, anyone."""
    users = getattr(entry_point, "users", None) or []
    groups = getattr(entry_point, "groups", None) or []
    if not users and not groups:
        return
    if user_id in {str(u) for u in users}:
        return
    if {str(g) for g in user_groups or ()} & {str(g) for g in groups}:
        return
    raise ActionPermissionError(
        f'User "{user_id}" may not start action "{action_id}": only the users and groups '
        "listed in its entry point (users/groups) may run it"
    )


def _prepare_start(
    action_id: str | None,
    data: Any,
    action_name: str | None,
    workflow_id: str | None,
    user_groups: Sequence[str] | None = None,
) -> StartRequest:
    if isinstance(user_groups, str):
        raise TypeError("user_groups must be a list of group ids, not a string")
    aid = resolve_action_id(action_id=action_id, action_name=action_name)
    action = load_action(aid)
    entry_point = get_action_entry_point(aid)  # raises UnknownActionError for vanished ids
    tp = action.run_arg_type
    validated = _validate_input(aid, tp, data)
    user_id = _user_id_of(validated)
    if not user_id:
        raise ActionInputError(
            f'Input for action "{aid}" must carry a user_id', action_id=aid, field="user_id"
        )
    _check_may_start(aid, entry_point, user_id, user_groups)
    queue = action.task_queue
    try:
        args = [to_jsonable(validated, tp)]
    except (ValueError, TypeError) as err:
        # Pydantic refuses values with no JSON form (too deep, undecodable bytes, ...).
        raise ActionInputError(f'Input for action "{aid}" cannot be sent as JSON: {err}') from None
    memo = {MEMO_USER_ID: user_id, MEMO_ACTION_ID: aid}
    upload_id = _field_of(validated, "upload_id")
    if upload_id:
        memo[MEMO_UPLOAD_ID] = upload_id
    request: StartRequest = {
        "workflow_id": workflow_id or f"{aid}-{user_id}-{uuid.uuid4()}",
        "workflow_type": action.workflow_name,
        "task_queue": getattr(queue, "value", queue),
        "args": args,
        "memo": memo,
        "priority": _priority(entry_point, user_id),
    }
    return request


def _fallback(first: NativeCall, on_error: Callable[[Exception], NativeCall | None]) -> NativeCall:
    """A native call that runs `on_error(err)`'s call instead when `first` fails and
    `on_error` offers one (else the error propagates); sync and async alike."""

    def call(blocking: bool) -> Any:
        if blocking:
            try:
                return first(True)
            except Exception as err:
                alternative = on_error(err)
                if alternative is None:
                    raise
                return alternative(True)

        async def run() -> Any:
            try:
                return await first(False)
            except Exception as err:
                alternative = on_error(err)
                if alternative is None:
                    raise
                return await alternative(False)

        return run()

    return call


def _constant(value: Any) -> NativeCall:
    async def later() -> Any:
        return value

    return lambda blocking: value if blocking else later()


def _search_attributes_available(
    client: _core.ClientRef, config: ConnectionConfig
) -> Op[bool | None]:
    """Whether the namespace has our search attributes: True, False, or None when it
    cannot tell (the credentials may not list them; then a start tries them)."""
    known = sa.known_available(config)
    if known is not None:
        return known
    registered = yield _fallback(
        lambda blocking: client.search_attributes(blocking),
        lambda err: _constant(None) if isinstance(err, RPCError) else None,
    )
    if registered is None:
        return None
    available = not sa.missing_from(registered)
    sa.remember(config, available)
    return available


def _search_attribute_values(request: StartRequest) -> dict[str, str]:
    memo = request["memo"]
    values = {sa.USER_ID: str(memo[MEMO_USER_ID]), sa.ACTION_ID: str(memo[MEMO_ACTION_ID])}
    upload_id = memo.get(MEMO_UPLOAD_ID)
    if upload_id:
        values[sa.UPLOAD_ID] = str(upload_id)
    return values


def _upload_id_of(request: StartRequest) -> str | None:
    arg = request["args"][0] if request["args"] else None
    value = arg.get("upload_id") if isinstance(arg, dict) else None
    return None if value is None else str(value)


def _priority(entry_point: Any, user_id: str) -> tuple[int, str] | None:
    """Temporal's Priority from the entry point, as upstream NOMAD 2.0 sends it: the
    entry point's ``priority_key`` (1 highest .. 5), and the user id as fairness key when
    ``priority_fairness_key == 'user_id'``; None when the entry point sets neither."""
    key = getattr(entry_point, "priority_key", None)
    fairness = getattr(entry_point, "priority_fairness_key", None)
    if key is None and fairness is None:
        return None
    return int(key or 0), user_id if fairness == "user_id" else ""


def _start(
    action_id: Any, data: Any, action_name: Any, workflow_id: Any, user_groups: Any
) -> Op[str]:
    request = _prepare_start(action_id, data, action_name, workflow_id, user_groups)
    upload_id = _upload_id_of(request)
    if upload_id:
        request["memo"].setdefault(MEMO_UPLOAD_ID, upload_id)
    client = _client()
    config = get_config()
    available = yield from _search_attributes_available(client, config)
    if available is False:
        sa.warn_missing(config, "actions are started with the memo only")
        yield lambda blocking: client.start_workflow(request, blocking)
        return request["workflow_id"]
    with_attributes = request.copy()
    with_attributes["search_attributes"] = _search_attribute_values(request)

    def without_attributes(err: Exception) -> NativeCall | None:
        # Only when we could not check first: a namespace without them refuses the start.
        if available is not None or not sa.is_unknown_attribute_error(err):
            return None
        sa.remember(config, False)
        sa.warn_missing(config, "actions are started with the memo only")
        return lambda blocking: client.start_workflow(request, blocking)

    yield _fallback(
        lambda blocking: client.start_workflow(with_attributes, blocking), without_attributes
    )
    return request["workflow_id"]


def start_action(
    action_id: str | None = None,
    data: Any = None,
    *,
    action_name: str | None = None,
    workflow_id: str | None = None,
    user_groups: Sequence[str] | None = None,
) -> str:
    """Start an action and return its workflow id.

    Args:
        action_id: the action's id, its entry point value ('pkg.module:attr').
        data: the workflow input: a Pydantic model, dataclass or dict, validated against
            the type of the workflow's run argument before anything is sent. Must carry
            `user_id`.
        action_name: upstream NOMAD 2.x spelling; an id or an entry point `name`.
        workflow_id: use this id instead of `f'{action_id}-{user_id}-{uuid4()}'`.
        user_groups: the group ids of the user, checked against the entry point's
            `groups` (upstream NOMAD 2.x access control).

    Returns:
        The workflow id.

    Raises:
        UnknownActionError: no such action (the message lists the known ids).
        ActionInputError: the data does not fit the input type (names the field).
        ActionPermissionError: the entry point lists `users` or `groups`, and the user is
            neither listed nor in one of the groups (a `PermissionError`).
        TemporalConnectionError: the server cannot be reached.
        WorkflowAlreadyStartedError: `workflow_id` is already running.
    """
    return _sync(_start(action_id, data, action_name, workflow_id, user_groups))


async def start_action_async(
    action_id: str | None = None,
    data: Any = None,
    *,
    action_name: str | None = None,
    workflow_id: str | None = None,
    user_groups: Sequence[str] | None = None,
) -> str:
    """Async twin of `start_action`."""
    return await _async(_start(action_id, data, action_name, workflow_id, user_groups))


def _check_owner(workflow_id: str, description: Execution, user_id: str | None) -> None:
    if user_id is None:
        return
    owner = description["memo"].get(MEMO_USER_ID)
    if owner is None:
        # Started without our memo (e.g. by upstream NOMAD): its id still names the owner.
        allowed = f"-{user_id}-" in workflow_id
    else:
        allowed = str(owner) == str(user_id)
    if not allowed:
        raise ActionPermissionError(
            f'User "{user_id}" may not access action "{workflow_id}": it belongs to another user'
        )


def _describe(workflow_id: str, user_id: str | None) -> Op[Execution]:
    client = _client()
    description = yield lambda blocking: client.describe(workflow_id, blocking)
    _check_owner(workflow_id, description, user_id)
    return description


def _check_access(workflow_id: str, user_id: str | None) -> Op[None]:
    """The owner check of a call that needs nothing else from the description: without a
    user there is nothing to check, so no `describe` round trip (the call itself reports
    an unknown workflow id as `WorkflowNotFoundError`)."""
    if user_id is not None:
        yield from _describe(workflow_id, user_id)


def _status(workflow_id: str, user_id: str | None) -> Op[WorkflowExecutionStatus]:
    description = yield from _describe(workflow_id, user_id)
    return WorkflowExecutionStatus(description["status"])


def get_action_status(workflow_id: str, user_id: str | None = None) -> WorkflowExecutionStatus:
    """Return the status of an action (RUNNING, COMPLETED, FAILED, CANCELED, ...).

    Args:
        workflow_id: as returned by `start_action`.
        user_id: when given, the action must belong to this user.

    Raises:
        WorkflowNotFoundError: Temporal does not know the id (a `LookupError`).
        ActionPermissionError: the action belongs to someone else (a `PermissionError`).
    """
    return _sync(_status(workflow_id, user_id))


async def get_action_status_async(
    workflow_id: str, user_id: str | None = None
) -> WorkflowExecutionStatus:
    """Async twin of `get_action_status`."""
    return await _async(_status(workflow_id, user_id))


def _return_type(action_id: Any) -> Any:
    if not action_id:
        return None
    try:
        return load_action(str(action_id)).run_return_type
    except Exception:
        return None


def _result(workflow_id: str, user_id: str | None, timeout: float | None) -> Op[Any]:
    description = yield from _describe(workflow_id, user_id)
    client = _client()
    outcome = yield lambda blocking: client.result(workflow_id, None, timeout, blocking)
    status = WorkflowExecutionStatus(outcome["status"])
    if status != WorkflowExecutionStatus.COMPLETED:
        failure = outcome["failure"] or {}
        message = failure.get("message") or status.name
        causes = failure.get("causes") or []
        detail = ": ".join([message, *causes])
        raise ActionFailedError(
            f'Action "{workflow_id}" ended {status.name}: {detail}',
            workflow_id=workflow_id,
            status=status,
            failure_message=message,
            failure_type=failure.get("failure_type") or None,
            causes=causes,
        )
    tp = _return_type(description["memo"].get(MEMO_ACTION_ID))
    value = outcome["result"]
    if tp is None:
        return value
    return _adapter(tp).validate_python(value)


def get_action_result(
    workflow_id: str, user_id: str | None = None, timeout: float | None = None
) -> Any:
    """Wait for an action to finish and return its result.

    The result is converted to the workflow run method's return type when it is
    annotated (Pydantic model, dataclass, ...), else returned as plain JSON data.

    Args:
        workflow_id: as returned by `start_action`.
        user_id: when given, the action must belong to this user.
        timeout: seconds to wait at most; None waits until it ends.

    Raises:
        ActionFailedError: the action FAILED, was CANCELED, TERMINATED or TIMED_OUT;
            carries Temporal's failure message.
        ActionTimeoutError: `timeout` passed first (a `TimeoutError`).
        WorkflowNotFoundError, ActionPermissionError: as for `get_action_status`.
    """
    return _sync(_result(workflow_id, user_id, timeout))


async def get_action_result_async(
    workflow_id: str, user_id: str | None = None, timeout: float | None = None
) -> Any:
    """Async twin of `get_action_result`."""
    return await _async(_result(workflow_id, user_id, timeout))


def _stop(workflow_id: str, user_id: str | None, reason: str) -> Op[None]:
    yield from _check_access(workflow_id, user_id)
    client = _client()
    yield lambda blocking: client.cancel(workflow_id, reason, blocking)


def stop_action(workflow_id: str, user_id: str | None = None, reason: str = "") -> None:
    """Request cancellation of an action. Its activities see the cancellation at their
    next heartbeat; the status becomes CANCELED once the workflow has cleaned up."""
    _sync(_stop(workflow_id, user_id, reason))


async def stop_action_async(workflow_id: str, user_id: str | None = None, reason: str = "") -> None:
    """Async twin of `stop_action`."""
    await _async(_stop(workflow_id, user_id, reason))


def _terminate(workflow_id: str, user_id: str | None, reason: str) -> Op[None]:
    yield from _check_access(workflow_id, user_id)
    client = _client()
    yield lambda blocking: client.terminate(workflow_id, reason, blocking)


def terminate_action(workflow_id: str, user_id: str | None = None, reason: str = "") -> None:
    """End an action at once, without letting it clean up (status TERMINATED)."""
    _sync(_terminate(workflow_id, user_id, reason))


async def terminate_action_async(
    workflow_id: str, user_id: str | None = None, reason: str = ""
) -> None:
    """Async twin of `terminate_action`."""
    await _async(_terminate(workflow_id, user_id, reason))


def _signal(workflow_id: str, signal: str, data: Any, user_id: str | None) -> Op[None]:
    yield from _check_access(workflow_id, user_id)
    client = _client()
    args = [] if data is None else [to_jsonable(data)]
    yield lambda blocking: client.signal(workflow_id, signal, args, blocking)


def signal_action(
    workflow_id: str, signal: str, data: Any = None, user_id: str | None = None
) -> None:
    """Send the signal `signal` (a `@workflow.signal` name) with optional data."""
    _sync(_signal(workflow_id, signal, data, user_id))


async def signal_action_async(
    workflow_id: str, signal: str, data: Any = None, user_id: str | None = None
) -> None:
    """Async twin of `signal_action`."""
    await _async(_signal(workflow_id, signal, data, user_id))


def _query(workflow_id: str, query: str, data: Any, user_id: str | None) -> Op[Any]:
    yield from _check_access(workflow_id, user_id)
    client = _client()
    args = [] if data is None else [to_jsonable(data)]
    return (yield lambda blocking: client.query(workflow_id, query, args, blocking))


def query_action(workflow_id: str, query: str, data: Any = None, user_id: str | None = None) -> Any:
    """Run the `@workflow.query` handler `query` of a running action; returns its answer."""
    return _sync(_query(workflow_id, query, data, user_id))


async def query_action_async(
    workflow_id: str, query: str, data: Any = None, user_id: str | None = None
) -> Any:
    """Async twin of `query_action`."""
    return await _async(_query(workflow_id, query, data, user_id))


def _time(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, tz=timezone.utc)


@dataclasses.dataclass(frozen=True)
class ActionExecution:
    """One action run, as listed by `list_actions`."""

    workflow_id: str
    run_id: str
    action_id: str | None
    user_id: str | None
    status: WorkflowExecutionStatus
    workflow_type: str
    task_queue: str
    start_time: datetime | None
    close_time: datetime | None

    @classmethod
    def _from_native(cls, d: Execution) -> ActionExecution:
        memo = d["memo"]
        action_id, user_id = memo.get(MEMO_ACTION_ID), memo.get(MEMO_USER_ID)
        return cls(
            workflow_id=d["workflow_id"],
            run_id=d["run_id"],
            action_id=None if action_id is None else str(action_id),
            user_id=None if user_id is None else str(user_id),
            status=WorkflowExecutionStatus(d["status"]),
            workflow_type=d["workflow_type"],
            task_queue=d["task_queue"],
            start_time=_time(d["start_time"]),
            close_time=_time(d["close_time"]),
        )


_STATUS_QUERY_NAMES = {
    WorkflowExecutionStatus.RUNNING: "Running",
    WorkflowExecutionStatus.COMPLETED: "Completed",
    WorkflowExecutionStatus.FAILED: "Failed",
    WorkflowExecutionStatus.CANCELED: "Canceled",
    WorkflowExecutionStatus.TERMINATED: "Terminated",
    WorkflowExecutionStatus.CONTINUED_AS_NEW: "ContinuedAsNew",
    WorkflowExecutionStatus.TIMED_OUT: "TimedOut",
}


def _status_filter(status: WorkflowExecutionStatus | str | int) -> str:
    if isinstance(status, str) and not isinstance(status, WorkflowExecutionStatus):
        try:
            status = WorkflowExecutionStatus[status.upper()]
        except KeyError:
            names = ", ".join(s.name for s in _STATUS_QUERY_NAMES)
            raise ValueError(f"Unknown status {status!r}; use one of {names}") from None
    return f'ExecutionStatus="{_STATUS_QUERY_NAMES[WorkflowExecutionStatus(status)]}"'


def _visibility_query(
    user_id: str | None, action_id: str | None, upload_id: str | None, status: Any
) -> str | None:
    """The server-side filter over our search attributes; None when a value cannot be
    written in the filter language (see `search_attributes.query_value`)."""
    terms = []
    filters = ((sa.USER_ID, user_id), (sa.ACTION_ID, action_id), (sa.UPLOAD_ID, upload_id))
    for name, value in filters:
        if value is None:
            continue
        literal = sa.query_value(value)
        if literal is None:
            return None
        terms.append(f"{name} = {literal}")
    if status is not None:
        terms.append(_status_filter(status))
    if not terms:
        # Every action run carries its action id; other workflows of the namespace do not.
        terms.append(f"{sa.ACTION_ID} IS NOT NULL")
    return " AND ".join(terms)


def _scan_reason(config: ConnectionConfig, available: bool | None, what: str) -> None:
    """Say why a listing scans: only a namespace without the attributes is worth a warning
    (a value the filter cannot express is a rare, correct, slower path)."""
    if available is False:
        sa.warn_missing(config, what)


def _memo_filter(
    user_id: str | None, action_id: str | None, upload_id: str | None
) -> dict[str, Any]:
    memo_filter: dict[str, Any] = {}
    if user_id is not None:
        memo_filter[MEMO_USER_ID] = str(user_id)
    if action_id is not None:
        memo_filter[MEMO_ACTION_ID] = action_id
    if upload_id is not None:
        memo_filter[MEMO_UPLOAD_ID] = upload_id
    return memo_filter


@dataclasses.dataclass(frozen=True)
class ActionPage:
    """One page of `list_actions_page`.

    Attributes:
        executions: the runs of this page, newest first.
        next_cursor: pass it as `cursor` for the next page; None on the last one.
        total: how many runs match in all (every page together).
    """

    executions: list[ActionExecution]
    next_cursor: str | None
    total: int


# A cursor names how the page was made: "q:" + the server's page token (query by search
# attributes) or "s:" + an offset (the scan of a namespace without them).
_QUERY_CURSOR = "q:"
_SCAN_CURSOR = "s:"


def _decode_cursor(cursor: str | None) -> tuple[str, bytes | int]:
    if not cursor:
        return "", b""
    try:
        if cursor.startswith(_QUERY_CURSOR):
            return _QUERY_CURSOR, base64.urlsafe_b64decode(cursor[len(_QUERY_CURSOR) :])
        if cursor.startswith(_SCAN_CURSOR):
            return _SCAN_CURSOR, int(cursor[len(_SCAN_CURSOR) :])
    except ValueError:
        pass
    raise ValueError(f"Invalid list cursor {cursor!r}: pass the next_cursor of a previous page")


def _scan_rows(
    client: _core.ClientRef, status: Any, memo_filter: dict[str, Any], limit: int
) -> NativeCall:
    query = "" if status is None else _status_filter(status)
    return lambda blocking: client.list(query, memo_filter, limit, blocking)


def _unknown_attribute_to(value: Any) -> Callable[[Exception], NativeCall | None]:
    """on_error for `_fallback`: a query naming an unregistered attribute yields `value`."""
    return lambda err: _constant(value) if sa.is_unknown_attribute_error(err) else None


_MISSING = object()


def _list_page(
    user_id: str | None,
    action_id: str | None,
    upload_id: str | None,
    status: Any,
    page_size: int,
    cursor: str | None,
) -> Op[ActionPage]:
    if not 1 <= page_size <= 1000:
        raise ValueError(f"page_size must be between 1 and 1000, got {page_size}")
    kind, position = _decode_cursor(cursor)
    client = _client()
    config = get_config()
    available = (
        None if kind == _SCAN_CURSOR else (yield from _search_attributes_available(client, config))
    )
    query = _visibility_query(user_id, action_id, upload_id, status)
    if available is not False and kind != _SCAN_CURSOR and query is not None:
        token = position if isinstance(position, bytes) else b""
        page = yield _fallback(
            lambda blocking: client.list_page(query, page_size, token, blocking),
            _unknown_attribute_to(_MISSING),
        )
        if page is not _MISSING:
            total = yield lambda blocking: client.count(query, blocking)
            next_token = page["next_page_token"]
            return ActionPage(
                executions=[ActionExecution._from_native(r) for r in page["executions"]],
                next_cursor=(
                    _QUERY_CURSOR + base64.urlsafe_b64encode(next_token).decode()
                    if next_token
                    else None
                ),
                total=int(total),
            )
        sa.remember(config, False)
        available = False
    _scan_reason(config, available, "listing scans every execution of the namespace")
    offset = position if isinstance(position, int) else 0
    memo_filter = _memo_filter(user_id, action_id, upload_id)
    # The scan reads everything anyway; the whole match gives the total.
    rows = yield _scan_rows(client, status, memo_filter, sys.maxsize)
    page_rows = rows[offset : offset + page_size]
    end = offset + len(page_rows)
    return ActionPage(
        executions=[ActionExecution._from_native(r) for r in page_rows],
        next_cursor=f"{_SCAN_CURSOR}{end}" if end < len(rows) else None,
        total=len(rows),
    )


def _matching_rows(
    user_id: str | None,
    action_id: str | None,
    status: Any,
    limit: int,
    upload_id: str | None = None,
) -> Op[list[Execution]]:
    """The native rows of the matching runs (at most `limit`): by the search attributes
    where the namespace has them, else by the memo scan. `manager` pages over these."""
    client = _client()
    config = get_config()
    available = yield from _search_attributes_available(client, config)
    query = _visibility_query(user_id, action_id, upload_id, status)
    if available is not False and query is not None:
        rows: list[Any] = []
        token = b""
        while True:
            size = min(limit - len(rows), 1000)
            page = yield _fallback(
                lambda blocking, size=size, token=token: client.list_page(
                    query, size, token, blocking
                ),
                _unknown_attribute_to(_MISSING),
            )
            if page is _MISSING:
                break
            rows += page["executions"]
            token = page["next_page_token"]
            if not token or len(rows) >= limit:
                return rows[:limit]
        sa.remember(config, False)
        available = False
    _scan_reason(config, available, "listing scans every execution of the namespace")
    memo_filter = _memo_filter(user_id, action_id, upload_id)
    return (yield _scan_rows(client, status, memo_filter, limit))


def _list(
    user_id: str | None,
    action_id: str | None,
    status: Any,
    limit: int,
    upload_id: str | None = None,
) -> Op[list[ActionExecution]]:
    rows = yield from _matching_rows(user_id, action_id, status, limit, upload_id)
    return [ActionExecution._from_native(row) for row in rows]


def list_actions(
    user_id: str | None = None,
    action_id: str | None = None,
    status: WorkflowExecutionStatus | str | None = None,
    limit: int = 100,
    upload_id: str | None = None,
) -> list[ActionExecution]:
    """List action runs, newest first.

    The server filters by the search attributes recorded at start (see
    `nomad_actions.search_attributes`); a namespace without them is scanned instead,
    with a warning in the log.

    Args:
        user_id: only this user's actions.
        action_id: only runs of this action.
        status: only runs in this status (enum or its name, e.g. 'RUNNING').
        limit: at most this many.
        upload_id: only runs started with this `upload_id` in their input.

    Note: Temporal's list is eventually consistent; a just-started action can take a
    moment to appear.
    """
    return _sync(_list(user_id, action_id, status, limit, upload_id))


async def list_actions_async(
    user_id: str | None = None,
    action_id: str | None = None,
    status: WorkflowExecutionStatus | str | None = None,
    limit: int = 100,
    upload_id: str | None = None,
) -> list[ActionExecution]:
    """Async twin of `list_actions`."""
    return await _async(_list(user_id, action_id, status, limit, upload_id))


def list_actions_page(
    user_id: str | None = None,
    action_id: str | None = None,
    upload_id: str | None = None,
    status: WorkflowExecutionStatus | str | None = None,
    page_size: int = 20,
    cursor: str | None = None,
) -> ActionPage:
    """One page of action runs, newest first, with the total count of matches.

    Args:
        user_id, action_id, upload_id, status: filters, as for `list_actions`.
        page_size: runs per page (1-1000).
        cursor: the `next_cursor` of the previous page; None for the first.

    Raises:
        ValueError: `page_size` is out of range, or the cursor is not one of ours.
    """
    return _sync(_list_page(user_id, action_id, upload_id, status, page_size, cursor))


async def list_actions_page_async(
    user_id: str | None = None,
    action_id: str | None = None,
    upload_id: str | None = None,
    status: WorkflowExecutionStatus | str | None = None,
    page_size: int = 20,
    cursor: str | None = None,
) -> ActionPage:
    """Async twin of `list_actions_page`."""
    return await _async(_list_page(user_id, action_id, upload_id, status, page_size, cursor))


def _count(
    user_id: str | None, action_id: str | None, upload_id: str | None, status: Any
) -> Op[int]:
    client = _client()
    config = get_config()
    available = yield from _search_attributes_available(client, config)
    query = _visibility_query(user_id, action_id, upload_id, status)
    if available is not False and query is not None:
        total = yield _fallback(
            lambda blocking: client.count(query, blocking), _unknown_attribute_to(_MISSING)
        )
        if total is not _MISSING:
            return int(total)
        sa.remember(config, False)
        available = False
    _scan_reason(config, available, "counting scans every execution of the namespace")
    rows = yield _scan_rows(
        client, status, _memo_filter(user_id, action_id, upload_id), sys.maxsize
    )
    return len(rows)


def count_actions(
    user_id: str | None = None,
    action_id: str | None = None,
    upload_id: str | None = None,
    status: WorkflowExecutionStatus | str | None = None,
) -> int:
    """How many action runs match the filters (as for `list_actions`)."""
    return _sync(_count(user_id, action_id, upload_id, status))


async def count_actions_async(
    user_id: str | None = None,
    action_id: str | None = None,
    upload_id: str | None = None,
    status: WorkflowExecutionStatus | str | None = None,
) -> int:
    """Async twin of `count_actions`."""
    return await _async(_count(user_id, action_id, upload_id, status))


@dataclasses.dataclass(frozen=True)
class ActionProgress:
    """Status of an action with the last heartbeat details of its pending activities.

    `fraction`, `message` and `activity_type` give the progress reported with
    `nomad_actions.report_progress` by the most recently scheduled pending activity that
    reported any (None when none did, e.g. once the action has ended).

    Attributes:
        status: the workflow's status.
        activities: pending activities: activity_id, activity_type, attempt, state,
            heartbeat_details (list), last_failure.
        workflow_id, action_id, user_id, workflow_type: the action run (the ids from its memo).
        start_time, close_time: when it started and ended (None while running).
    """

    status: WorkflowExecutionStatus
    activities: list[PendingActivity]
    workflow_id: str | None = None
    action_id: str | None = None
    user_id: str | None = None
    workflow_type: str | None = None
    start_time: datetime | None = None
    close_time: datetime | None = None

    @property
    def reports(self) -> list[ProgressReport]:
        """Progress reports of the pending activities, oldest scheduled first."""
        return progress_reports(self.activities)

    @property
    def latest(self) -> ProgressReport | None:
        """The report of the most recently scheduled activity that reported progress."""
        reports = self.reports
        return reports[-1] if reports else None

    @property
    def fraction(self) -> float | None:
        """Reported progress from 0.0 to 1.0, or None."""
        latest = self.latest
        return None if latest is None else latest.fraction

    @property
    def message(self) -> str | None:
        """The message of the latest progress report, or None."""
        latest = self.latest
        return None if latest is None else latest.message

    @property
    def activity_type(self) -> str | None:
        """The activity type that made the latest progress report, or None."""
        latest = self.latest
        return None if latest is None else latest.activity_type


def _progress(workflow_id: str, user_id: str | None) -> Op[ActionProgress]:
    d = yield from _describe(workflow_id, user_id)
    memo = d["memo"]
    action_id, owner = memo.get(MEMO_ACTION_ID), memo.get(MEMO_USER_ID)
    return ActionProgress(
        WorkflowExecutionStatus(d["status"]),
        d["pending_activities"],
        workflow_id=d["workflow_id"] or workflow_id,
        action_id=None if action_id is None else str(action_id),
        user_id=None if owner is None else str(owner),
        workflow_type=d["workflow_type"] or None,
        start_time=_time(d["start_time"]),
        close_time=_time(d["close_time"]),
    )


def get_action_progress(workflow_id: str, user_id: str | None = None) -> ActionProgress:
    """Status plus pending activities (id, type, attempt, heartbeat details), and the
    progress they reported with `report_progress` (`.fraction`, `.message`)."""
    return _sync(_progress(workflow_id, user_id))


async def get_action_progress_async(workflow_id: str, user_id: str | None = None) -> ActionProgress:
    """Async twin of `get_action_progress`."""
    return await _async(_progress(workflow_id, user_id))

"""Exceptions raised by nomad-actions.

Every exception shares the base :class:`NomadActionsError`. The Rust extension raises these
classes by name, so their names are part of the API. Each constructor takes the message first,
so ``Cls("text")`` always works (that is how Rust builds them, setting attributes afterwards);
the extra attributes are optional keywords. Pickling keeps the attributes.
"""

from __future__ import annotations

from collections.abc import Iterable

from temporalio.client import WorkflowExecutionStatus

__all__ = [
    "ActionFailedError",
    "ActionInputError",
    "ActionLoadError",
    "ActionNotFoundError",
    "ActionNotRunningError",
    "ActionPermissionError",
    "ActionTimeoutError",
    "AmbiguousActionError",
    "ConfigurationError",
    "NomadActionsError",
    "NothingToRunError",
    "PayloadError",
    "RPCError",
    "SignalInputNotFoundError",
    "TemporalConnectionError",
    "UnknownActionError",
    "WorkflowAlreadyStartedError",
    "WorkerForkedError",
    "WorkflowNotFoundError",
]


class NomadActionsError(Exception):
    """Base class of every nomad-actions error."""


class ActionLoadError(NomadActionsError):
    """An action entry point failed to load or did not return an Action."""


class UnknownActionError(NomadActionsError, LookupError):
    """No installed or registered action has the requested id or name.

    Attributes:
        action_id: The id or name that was looked up, if known.
        known_ids: The ids that are available, sorted.
    """

    def __init__(
        self, message: str, action_id: str | None = None, known_ids: Iterable[str] = ()
    ) -> None:
        super().__init__(message)
        self.action_id = action_id
        self.known_ids = sorted(known_ids)


class AmbiguousActionError(UnknownActionError):
    """An action name matches more than one action; ``known_ids`` lists the candidates."""


class ActionInputError(NomadActionsError, ValueError):
    """The input data of an action is invalid; the message names the action and the field.

    Attributes:
        action_id: The action whose input was rejected.
        field: The (first) offending field (for example ``user_id``), if known.
        fields: Every offending top-level field, in the order reported.
    """

    def __init__(
        self,
        message: str,
        action_id: str | None = None,
        field: str | None = None,
        fields: Iterable[str] = (),
    ) -> None:
        super().__init__(message)
        self.action_id = action_id
        self.fields = list(fields) or ([field] if field is not None else [])
        self.field = field if field is not None else (self.fields[0] if self.fields else None)


class WorkflowNotFoundError(NomadActionsError, LookupError):
    """Temporal does not know the workflow.

    Attributes:
        workflow_id: The workflow id that was not found.
    """

    def __init__(self, message: str, workflow_id: str | None = None) -> None:
        super().__init__(message)
        self.workflow_id = workflow_id


class WorkflowAlreadyStartedError(NomadActionsError):
    """A workflow with this id is already running.

    Attributes:
        workflow_id: The workflow id in use.
    """

    def __init__(self, message: str, workflow_id: str | None = None) -> None:
        super().__init__(message)
        self.workflow_id = workflow_id


class PayloadError(NomadActionsError, ValueError):
    """A payload could not be encoded or decoded (bad JSON, unknown encoding, bad key).

    Attributes:
        encoding: The payload's encoding when that was the problem (e.g.
            ``"binary/encrypted"`` met by a client without the secret), else None.
    """

    encoding: str | None = None

    def __init__(self, message: str, encoding: str | None = None) -> None:
        super().__init__(message)
        self.encoding = encoding


class ActionPermissionError(NomadActionsError, PermissionError):
    """The user may not run or see this action or workflow."""


class ConfigurationError(NomadActionsError, ValueError):
    """A setting is missing, malformed or unsafe (nomad.yaml, a NOMAD_* variable, a flag).

    Attributes:
        key: The setting concerned, e.g. ``temporal.port``, ``services.api_secret`` or the
            file's path; None when not one setting.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class ActionNotFoundError(NomadActionsError, LookupError):
    """``nomad_actions.manager``: the action does not exist or belongs to another user.

    Upstream NOMAD 2.0 does not tell the two apart either.
    """


class ActionNotRunningError(NomadActionsError):
    """``nomad_actions.manager``: the operation needs a running action ("Action is not
    running.", as upstream NOMAD 2.0)."""


class SignalInputNotFoundError(NomadActionsError, LookupError):
    """``submit_signal_input``: the action has no pending input request for that signal."""


class NothingToRunError(NomadActionsError, ValueError):
    """A worker was asked to serve a task queue on which no action, workflow or activity is
    registered. A ``ValueError`` too, as before this class existed.

    Attributes:
        task_queue: The task queue, if known.
    """

    def __init__(self, message: str, task_queue: str | None = None) -> None:
        super().__init__(message)
        self.task_queue = task_queue


class TemporalConnectionError(NomadActionsError, ConnectionError):
    """The Temporal server could not be reached.

    Attributes:
        address: The server's address as dialled (``http://host:port``), if known.
        kind: What went wrong, decided from the error's types in Rust (never its text):
            ``"refused"``, ``"unknown_host"``, ``"timed_out"``, ``"tls"``, ``"lost"`` (the
            connection broke under a call), ``"unavailable"`` (the server answered
            UNAVAILABLE) or ``"other"``; None when not known.
        rpc: The RPC that failed, when the connection was up and a call failed.
        reason: The detail, without the "cannot connect to Temporal at ..." prefix.
    """

    address: str | None = None
    kind: str | None = None
    rpc: str | None = None
    reason: str | None = None

    def __init__(
        self,
        message: str,
        address: str | None = None,
        kind: str | None = None,
        rpc: str | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.address = address
        self.kind = kind
        self.rpc = rpc
        self.reason = reason


class ActionTimeoutError(NomadActionsError, TimeoutError):
    """Waiting for an action's result took longer than the caller allowed.

    The action itself goes on running. A ``TimeoutError``, so existing ``except
    TimeoutError`` clauses keep working.

    Attributes:
        workflow_id: The workflow that was waited for.
        timeout: The time waited, in seconds.
    """

    workflow_id: str | None = None
    timeout: float | None = None

    def __init__(
        self, message: str, workflow_id: str | None = None, timeout: float | None = None
    ) -> None:
        super().__init__(message)
        self.workflow_id = workflow_id
        self.timeout = timeout


class WorkerForkedError(NomadActionsError, RuntimeError):
    """A `Worker` created before `os.fork()` was run in the child process.

    Its threads and connections stay behind in the parent; create the worker in the child.
    The client functions (`start_action`, ...) need no such care: they notice the fork and
    open a fresh runtime and connection in the child.
    """


class ActionFailedError(NomadActionsError):
    """A workflow ended without a result (failed, cancelled, terminated or timed out).

    Attributes:
        message: The whole error text, as ``str(error)``.
        workflow_id: The workflow id.
        status: The final status, or None when unknown. An ``int`` is converted to
            ``WorkflowExecutionStatus``.
        failure_type: The failure's type, e.g. the ``ApplicationError`` type name.
        failure_message: The workflow failure's own message (``message`` if not given).
        causes: The messages of the failure's causes, outermost first.
    """

    def __init__(
        self,
        message: str,
        workflow_id: str | None = None,
        status: WorkflowExecutionStatus | int | None = None,
        failure_type: str | None = None,
        *,
        failure_message: str | None = None,
        causes: Iterable[str] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.workflow_id = workflow_id
        self.status = WorkflowExecutionStatus(status) if status is not None else None
        self.failure_type = failure_type
        self.failure_message = failure_message if failure_message is not None else message
        self.causes = list(causes)


class RPCError(NomadActionsError):
    """A Temporal gRPC call failed.

    Attributes:
        message: The error text, as ``str(error)``.
        code: The gRPC status code (0 to 16); 2 (UNKNOWN) unless set.
        rpc: The failed RPC's name (e.g. ``"StartWorkflowExecution"``), if known.
        rpc_message: The server's own message, if known.
    """

    rpc: str | None = None
    rpc_message: str | None = None

    def __init__(
        self,
        message: str,
        code: int = 2,
        rpc: str | None = None,
        rpc_message: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = int(code)
        self.rpc = rpc
        self.rpc_message = rpc_message

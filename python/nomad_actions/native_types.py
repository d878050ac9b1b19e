"""The types that cross the Rust/Python boundary (`nomad_actions._core`), in one place.

The native module returns plain dicts; these `TypedDict`s say what is in them (they are the
twins of the Rust structs with `#[derive(IntoPyObject)]` in `src/client.rs`). The two
`Protocol`s are what the Rust worker loop calls in Python: the workflow bridge's `activate`
and the activity bridge. `_core.pyi` uses them, and so do the wrappers that receive the
values (`client.py`, `manager.py`, the CLI), so a type checker follows the data across.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, TypedDict

if TYPE_CHECKING:
    from nomad_actions import _core

__all__ = [
    "ActivityBridge",
    "Execution",
    "ExecutionPage",
    "FailureDetails",
    "JsonValue",
    "Outcome",
    "PendingActivity",
    "StartRequest",
    "WorkflowActivate",
]

#: JSON data: what a `json/plain` payload holds once decoded.
JsonValue = Any

# ----------------------------------------------------------------------------- crossing types


class FailureDetails(TypedDict):
    """A failure as Temporal reports it, flattened."""

    message: str
    #: `ApplicationError` type, or the failure kind (`TimeoutError`, `CanceledError`, ...).
    failure_type: str
    non_retryable: bool
    stack_trace: str
    #: Messages of the causes, outermost first.
    causes: list[str]


class Outcome(TypedDict):
    """The final outcome of a workflow, after following continue-as-new and retries."""

    run_id: str
    #: `WorkflowExecutionStatus` value (2 completed, 3 failed, 4 canceled, 5 terminated,
    #: 7 timed out).
    status: int
    result: JsonValue | None
    failure: FailureDetails | None


class PendingActivity(TypedDict):
    """One pending activity of a running workflow, with its last heartbeat details."""

    activity_id: str
    activity_type: str
    attempt: int
    #: `PendingActivityState` value.
    state: int
    heartbeat_details: list[JsonValue]
    last_failure: str | None


class Execution(TypedDict):
    """What `describe`, `list` and `list_page` return for one workflow execution."""

    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    #: `WorkflowExecutionStatus` value.
    status: int
    #: Seconds since the epoch.
    start_time: float | None
    close_time: float | None
    history_length: int
    memo: dict[str, JsonValue]
    pending_activities: list[PendingActivity]
    #: The workflow id of the root of its parent chain (itself without a parent).
    root_workflow_id: str


class ExecutionPage(TypedDict):
    """One page of a visibility query."""

    executions: list[Execution]
    #: Empty on the last page.
    next_page_token: bytes


class _StartRequestRequired(TypedDict):
    workflow_id: str
    workflow_type: str
    task_queue: str
    args: list[JsonValue]
    memo: dict[str, JsonValue]


class StartRequest(_StartRequestRequired, total=False):
    """What `ClientRef.start_workflow` needs (built by `client.py`)."""

    #: Keyword search attributes (owner, action, upload); absent or None without them.
    search_attributes: dict[str, str] | None
    #: Temporal's `Priority`: (priority key 1-5, fairness key); None: the server's default.
    priority: tuple[int, str] | None


# ---------------------------------------------------------------------- what Rust calls


class WorkflowActivate(Protocol):
    """What `WorkerRef.run` calls for each workflow activation (`WorkflowBridge.activate`):
    on one of the worker's Python threads, with the serialized coresdk
    `WorkflowActivation`; it answers through `reply`, exactly once."""

    def __call__(self, activation: bytes, reply: _core.Reply, /) -> object: ...


class ActivityBridge(Protocol):
    """What `WorkerRef.run` calls for activity tasks (`ActivityBridge`), from the worker's
    Python threads, each returning at once: `start` for each task (decoded in Rust), with the
    `ActivityReply` that takes its outcome exactly once; `cancel` with the cancellation's
    flags (the fields of temporalio's `ActivityCancellationDetails`); `begin_shutdown` when
    the worker starts to drain (Rust keeps the grace-period timer). Optionally
    `attach_lane`, called once: the bridge registers the `LoopLane` with its event loop and
    says which activity types start there (those starts, and their cancels, then run on the
    loop's thread, in order)."""

    def start(
        self,
        task_token: bytes,
        activity_type: str,
        args: list[JsonValue],
        info: dict[str, Any],
        reply: _core.ActivityReply,
        /,
    ) -> object: ...
    def cancel(self, task_token: bytes, flags: dict[str, bool], /) -> object: ...
    def begin_shutdown(self) -> object: ...

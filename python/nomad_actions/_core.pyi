"""The native engine of nomad-actions (Rust, pyo3): the Temporal client, the worker loop, the
payload codec and the runtime they share.

Only the wrapper modules import it (`client.py`, `worker.py`, `workflow_bridge.py`,
`activity_bridge.py`, `codec_server.py`, ...). What crosses the boundary is bytes (serialized
protobuf), plain values (str, int, float, bool, JSON data) and the typed dicts below; the
Python side of every `FromPyObject` struct is a dataclass in `config.py` or `worker.py`.

Every client method takes `blocking`: with `True` it runs to completion on the calling thread
(the GIL released, Ctrl-C still handled) and returns the value; with `False` it returns an
awaitable of the value, resolved on the engine's tokio runtime. Errors are the classes of
`nomad_actions.errors`, raised with their attributes set (see each class).

This file is checked against the module by `python -m mypy.stubtest nomad_actions._core`
(`scripts/test.sh`).
"""

import builtins
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal, final, overload

from nomad_actions.config import ConnectionConfig
from nomad_actions.native_types import (
    ActivityBridge,
    Execution,
    ExecutionPage,
    JsonValue,
    Outcome,
    StartRequest,
    WorkflowActivate,
)
from nomad_actions.worker import WorkerOptions

__all__ = [
    "ActivityReply",
    "ClientRef",
    "LoopLane",
    "PayloadCodecRef",
    "Reply",
    "StartCancel",
    "WorkerRef",
    "__version__",
    "connection_count",
    "interrupt_thread",
    "runtime_generations",
    "start_metrics_exporter",
    "unix_time",
]

__version__: str

# ----------------------------------------------------------------------------- client

@final
class ClientRef:
    """The Temporal client for one connection configuration.

    Cheap to create: equal configurations share one lazily opened connection per process
    (a forked child opens its own). Every call is bounded by the configuration's RPC
    timeout; a stalled connection raises `TemporalConnectionError(kind="timed_out")`.
    """

    def __new__(cls, config: ConnectionConfig) -> ClientRef: ...
    @property
    def target(self) -> str:
        """The URL dialled, `http(s)://host:port`."""

    @overload
    def connect(self, blocking: Literal[True]) -> None:
        """Open (or reuse) the connection now.

        Raises:
            TemporalConnectionError: The server cannot be reached (`kind` says why).
        """
    @overload
    def connect(self, blocking: Literal[False]) -> Awaitable[None]: ...
    @overload
    def connect(self, blocking: bool) -> Awaitable[None] | None: ...
    @overload
    def start_workflow(self, request: StartRequest, blocking: Literal[True]) -> str:
        """Start a workflow; returns its run id.

        Raises:
            WorkflowAlreadyStartedError: One with this workflow id is running.
            PayloadError: An argument or memo value has no JSON form.
        """
    @overload
    def start_workflow(self, request: StartRequest, blocking: Literal[False]) -> Awaitable[str]: ...
    @overload
    def start_workflow(self, request: StartRequest, blocking: bool) -> str | Awaitable[str]: ...
    @overload
    def describe(self, workflow_id: str, blocking: Literal[True]) -> Execution:
        """Describe the latest run of `workflow_id`, with its pending activities.

        Raises:
            WorkflowNotFoundError: The namespace has no such workflow.
        """
    @overload
    def describe(self, workflow_id: str, blocking: Literal[False]) -> Awaitable[Execution]: ...
    @overload
    def describe(self, workflow_id: str, blocking: bool) -> Execution | Awaitable[Execution]: ...
    @overload
    def result(
        self, workflow_id: str, run_id: str | None, timeout: float | None, blocking: Literal[True]
    ) -> Outcome:
        """Wait for the workflow's final outcome (following continue-as-new and retries).

        Raises:
            ActionTimeoutError: `timeout` seconds passed first (a `TimeoutError`).
            WorkflowNotFoundError: The namespace has no such workflow.
        """
    @overload
    def result(
        self,
        workflow_id: str,
        run_id: str | None,
        timeout: float | None,
        blocking: Literal[False],
    ) -> Awaitable[Outcome]: ...
    @overload
    def result(
        self,
        workflow_id: str,
        run_id: str | None,
        timeout: float | None,
        blocking: bool,
    ) -> Outcome | Awaitable[Outcome]: ...
    @overload
    def cancel(self, workflow_id: str, reason: str, blocking: Literal[True]) -> None:
        """Request cancellation of the workflow."""
    @overload
    def cancel(
        self, workflow_id: str, reason: str, blocking: Literal[False]
    ) -> Awaitable[None]: ...
    @overload
    def cancel(self, workflow_id: str, reason: str, blocking: bool) -> Awaitable[None] | None: ...
    @overload
    def terminate(self, workflow_id: str, reason: str, blocking: Literal[True]) -> None:
        """Terminate the workflow at once."""
    @overload
    def terminate(
        self, workflow_id: str, reason: str, blocking: Literal[False]
    ) -> Awaitable[None]: ...
    @overload
    def terminate(
        self, workflow_id: str, reason: str, blocking: bool
    ) -> Awaitable[None] | None: ...
    @overload
    def signal(
        self,
        workflow_id: str,
        signal_name: str,
        args: Sequence[JsonValue],
        blocking: Literal[True],
    ) -> None:
        """Send a signal with JSON arguments."""
    @overload
    def signal(
        self,
        workflow_id: str,
        signal_name: str,
        args: Sequence[JsonValue],
        blocking: Literal[False],
    ) -> Awaitable[None]: ...
    @overload
    def signal(
        self,
        workflow_id: str,
        signal_name: str,
        args: Sequence[JsonValue],
        blocking: bool,
    ) -> Awaitable[None] | None: ...
    @overload
    def query(
        self,
        workflow_id: str,
        query_type: str,
        args: Sequence[JsonValue],
        blocking: Literal[True],
    ) -> JsonValue:
        """Query the workflow; returns the decoded answer."""
    @overload
    def query(
        self,
        workflow_id: str,
        query_type: str,
        args: Sequence[JsonValue],
        blocking: Literal[False],
    ) -> Awaitable[JsonValue]: ...
    @overload
    def query(
        self,
        workflow_id: str,
        query_type: str,
        args: Sequence[JsonValue],
        blocking: bool,
    ) -> JsonValue | Awaitable[JsonValue]: ...
    @overload
    def list(
        self,
        query: str,
        memo_filter: Mapping[str, JsonValue],
        limit: int,
        blocking: Literal[True],
    ) -> builtins.list[Execution]:
        """Executions matching a visibility `query` whose memo has every `memo_filter`
        entry, newest first, at most `limit` (0: no limit)."""
    @overload
    def list(
        self,
        query: str,
        memo_filter: Mapping[str, JsonValue],
        limit: int,
        blocking: Literal[False],
    ) -> Awaitable[builtins.list[Execution]]: ...
    @overload
    def list(
        self,
        query: str,
        memo_filter: Mapping[str, JsonValue],
        limit: int,
        blocking: bool,
    ) -> builtins.list[Execution] | Awaitable[builtins.list[Execution]]: ...
    @overload
    def list_page(
        self, query: str, page_size: int, page_token: bytes, blocking: Literal[True]
    ) -> ExecutionPage:
        """One page of a visibility query; pass `next_page_token` back for the next."""
    @overload
    def list_page(
        self, query: str, page_size: int, page_token: bytes, blocking: Literal[False]
    ) -> Awaitable[ExecutionPage]: ...
    @overload
    def list_page(
        self, query: str, page_size: int, page_token: bytes, blocking: bool
    ) -> ExecutionPage | Awaitable[ExecutionPage]: ...
    @overload
    def count(self, query: str, blocking: Literal[True]) -> int:
        """How many executions match a visibility query."""
    @overload
    def count(self, query: str, blocking: Literal[False]) -> Awaitable[int]: ...
    @overload
    def count(self, query: str, blocking: bool) -> int | Awaitable[int]: ...
    @overload
    def search_attributes(self, blocking: Literal[True]) -> dict[str, int]:
        """The namespace's custom search attributes: name to `IndexedValueType` value."""
    @overload
    def search_attributes(self, blocking: Literal[False]) -> Awaitable[dict[str, int]]: ...
    @overload
    def search_attributes(self, blocking: bool) -> dict[str, int] | Awaitable[dict[str, int]]: ...
    @overload
    def add_search_attributes(self, attributes: Mapping[str, int], blocking: Literal[True]) -> None:
        """Register custom search attributes (operator service)."""
    @overload
    def add_search_attributes(
        self, attributes: Mapping[str, int], blocking: Literal[False]
    ) -> Awaitable[None]: ...
    @overload
    def add_search_attributes(
        self, attributes: Mapping[str, int], blocking: bool
    ) -> Awaitable[None] | None: ...
    def decode_payloads(self, payloads: Sequence[bytes]) -> builtins.list[bytes]:
        """Decrypt serialized `Payload`s with this configuration's codec; payloads that are
        not encrypted (or without a codec) come back as they are.

        Raises:
            PayloadError: A payload cannot be decrypted (the message says which key).
        """

@final
class PayloadCodecRef:
    """The payload codec of a configuration (upstream NOMAD's Fernet), for the codec server:
    serialized `Payload` bytes in, serialized `Payload` bytes out."""

    def __new__(cls, config: ConnectionConfig) -> PayloadCodecRef: ...
    @property
    def enabled(self) -> bool:
        """Whether the configuration encrypts payloads at all."""

    def encode(self, payloads: Sequence[bytes]) -> list[bytes]:
        """Encrypt serialized payloads (unchanged without a codec)."""

    def decode(self, payloads: Sequence[bytes]) -> list[bytes]:
        """Decrypt serialized payloads.

        Raises:
            PayloadError: A payload cannot be decrypted (wrong secret, unknown key id).
        """

# ----------------------------------------------------------------------------- worker

@final
class Reply:
    """The way back for one workflow activation, and its deadlock timer.

    Rust creates one per activation and passes it to `WorkflowActivate`; Python may create
    one with a callable `sink` (tests, evictions at shutdown). The first call delivers the
    completion; later ones are ignored.
    """

    def __new__(cls, sink: Callable[[bytes], object]) -> Reply: ...
    def __call__(self, completion: bytes, /) -> bool:
        """Deliver the serialized `WorkflowActivationCompletion`. Returns True if this call
        delivered it, False if an answer had been delivered already."""

    def watch(
        self,
        timeout: float,
        run_id: str,
        workflow_type: str,
        eviction: bool,
        on_deadlock: Callable[[str, str, int, bool], str],
        interrupt: type[BaseException],
    ) -> None:
        """Start the deadlock timeout for the activation running on the calling thread.

        Should it pass before `close`, the timer calls `on_deadlock(run_id, workflow_type,
        thread_ident, eviction)` (which forgets the run and returns the thread's stack),
        delivers the failed completion (TMPRL1101, with that stack; a successful one for an
        eviction) and raises `interrupt` in the thread.

        Raises:
            ValueError: `timeout` is not a positive number of seconds.
        """

    def close(self) -> bool:
        """The activation's code returned (or was interrupted). Returns True if the timer
        gave up on it meanwhile (it has answered); clears an interrupt not yet raised."""

@final
class ActivityReply:
    """The way back for one activity task, handed to `ActivityBridge.start` (created by Rust
    only). The first answer completes the task with core; Rust's registry knows the task is
    outstanding until then, and its shutdown drain may answer first (a later answer is
    refused)."""

    def __call__(self, outcome: Mapping[str, Any], /) -> bool:
        """Report the outcome, one of the dicts `activity_bridge` lists:
        `{"result_json": bytes, "result_value": value}` (JSON text, sent as the `json/plain`
        payload once checked; `value` is encoded instead where the check refuses it),
        `{"result": value}`, `{"result_payload": bytes}`, `{"failure": bytes}`,
        `{"cancelled": bytes}` or `{"will_complete_async": True}`. An outcome that cannot
        be encoded fails the task, naming why. Returns True if this call completed the task,
        False if it had been answered already."""

    @property
    def task_token(self) -> bytes:
        """The task's token."""

    @property
    def answered(self) -> bool:
        """Whether the task has been answered (by this reply or the shutdown drain)."""

@final
class LoopLane:
    """Jobs of the Rust worker for the activity bridge's event loop (created by Rust only,
    handed to `ActivityBridge.attach_lane`). The loop registers `run_pending` as the
    reader of `fileno()`; Rust queues a job and writes one byte when the queue was empty."""

    def fileno(self) -> int:
        """The descriptor that turns readable when jobs wait."""

    def run_pending(self) -> None:
        """Consume the wake-ups and run every queued job, in order, on this thread."""

    def close(self) -> None:
        """The loop stops: run the jobs still queued; later ones go to the worker's
        threads."""

@final
class StartCancel:
    """Cancels `WorkerRef.create` while it waits for the server (`Worker.shutdown()`)."""

    def __new__(cls) -> StartCancel: ...
    def cancel(self) -> None:
        """Cancel the start; a waiting `create` returns None. Cannot be undone."""

    @property
    def cancelled(self) -> bool:
        """Whether `cancel` was called."""

@final
class WorkerRef:
    """A sdk-core worker for one task queue, driven by the Rust poll loops."""

    @overload
    @staticmethod
    def create(
        config: ConnectionConfig,
        options: WorkerOptions,
        cancel: StartCancel,
        blocking: Literal[True],
    ) -> WorkerRef | None:
        """Connect and create the worker. While the server cannot be reached, retry with a
        doubling delay (1 s to 30 s), logging each attempt on `nomad_actions.worker`.

        Returns:
            The worker, or None when `cancel` was set first.

        Raises:
            ConfigurationError: Bad options, an unknown namespace, a taken health port.
            WorkerForkedError: Not raised here; see `run`.
        """
    @overload
    @staticmethod
    def create(
        config: ConnectionConfig,
        options: WorkerOptions,
        cancel: StartCancel,
        blocking: Literal[False],
    ) -> Awaitable[WorkerRef | None]: ...
    @overload
    @staticmethod
    def create(
        config: ConnectionConfig,
        options: WorkerOptions,
        cancel: StartCancel,
        blocking: bool,
    ) -> WorkerRef | Awaitable[WorkerRef | None] | None: ...
    @overload
    def run(
        self,
        workflow_bridge: WorkflowActivate | None,
        activity_bridge: ActivityBridge | None,
        blocking: Literal[True],
    ) -> None:
        """Poll and dispatch until shut down, then finalize the core worker.

        Raises:
            WorkerForkedError: The worker was created in another process (before a fork).
            RPCError: A poll loop failed for good (the other is shut down too).
        """
    @overload
    def run(
        self,
        workflow_bridge: WorkflowActivate | None,
        activity_bridge: ActivityBridge | None,
        blocking: Literal[False],
    ) -> Awaitable[None]: ...
    @overload
    def run(
        self,
        workflow_bridge: WorkflowActivate | None,
        activity_bridge: ActivityBridge | None,
        blocking: bool,
    ) -> Awaitable[None] | None: ...
    def initiate_shutdown(self) -> None:
        """Stop polling; running tasks finish (activities get the grace period, then a
        cancel) and `run` returns when all are done. Also turns /health to 503."""

    def record_heartbeat(self, task_token: bytes, details: Sequence[JsonValue]) -> None:
        """Record a heartbeat with JSON details (throttled by core)."""

    def request_eviction(self, run_id: str) -> None:
        """Ask core to evict a cached workflow run."""

    @property
    def task_queue(self) -> str:
        """The task queue it polls."""

    @property
    def namespace(self) -> str:
        """The namespace it polls."""

    @property
    def health_address(self) -> str | None:
        """`host:port` of its /health endpoint, or None without one."""

# ----------------------------------------------------------------------------- functions

def interrupt_thread(thread_id: int, exc: type[BaseException] | None) -> bool:
    """Raise `exc` in the Python thread `thread_id` (`threading.get_ident()`) at its next
    bytecode, or clear one sent but not raised yet with None. Returns whether the thread was
    found.

    Raises:
        TypeError: `exc` is not an exception class, or the id is out of range.
    """

def connection_count() -> int:
    """How many configurations currently hold an open connection (tests of the cache)."""

def unix_time() -> float:
    """Seconds since the epoch (memos stamped consistently with Rust)."""

def runtime_generations() -> int:
    """How many runtimes this address space has built: 1 in a process that never forked,
    one more in each forked child that used the engine."""

def start_metrics_exporter(bind_address: str) -> str:
    """Serve sdk-core's Prometheus metrics at `bind_address` (`host:port`; port 0 picks a
    free one) for every worker of this process; returns the address bound.

    Raises:
        ConfigurationError: The address is bad or taken, or a worker already started.
    """

"""The nomad-actions worker: runs every action of a task queue on the Rust engine.

The poll loops, activity dispatch, heartbeats, cancellation and shutdown run in Rust
(`_core.WorkerRef`); the plugin's workflow code runs through temporalio's
`WorkflowRunner` (`workflow_bridge.py`) and its activities through `activity_bridge.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import temporalio.converter
import temporalio.worker
from temporalio.contrib.pydantic import pydantic_data_converter

from nomad_actions import _core
from nomad_actions.action import (
    Action,
    QueueWork,
    as_action,
    group_by_task_queue,
    resolve_task_queue,
)
from nomad_actions.activity_bridge import ActivityBridge
from nomad_actions.config import ConnectionConfig, TaskQueue, get_config
from nomad_actions.errors import ActionLoadError, NothingToRunError, WorkerForkedError
from nomad_actions.registry import get_actions, get_broken_entry_points, load_action
from nomad_actions.workflow_bridge import WorkflowBridge

__all__ = ["TunerOptions", "Worker", "WorkerOptions", "resolve_task_queue"]

logger = logging.getLogger("nomad_actions.worker")


@dataclass(frozen=True)
class TunerOptions:
    """Resource-based activity slots (sdk-core's tuner), as upstream NOMAD's workers use them
    when ``max_concurrent_activities`` is not set. Python twin of the Rust ``TunerOptions``.

    Attributes:
        target_memory_usage: Fraction of the machine's memory to stay below (0 to 1].
        target_cpu_usage: Fraction of the machine's CPU to stay below (0 to 1].
        min_activity_slots: Slots handed out whatever the resource use.
        max_activity_slots: Slots never exceeded.
        activity_ramp_throttle_millis: Least time between two slots above the minimum.
    """

    target_memory_usage: float = 0.8
    target_cpu_usage: float = 0.8
    min_activity_slots: int = 1
    max_activity_slots: int = 20
    activity_ramp_throttle_millis: int = 200


@dataclass(frozen=True)
class WorkerOptions:
    """Python twin of the Rust `WorkerOptions` struct (durations in milliseconds)."""

    task_queue: str
    enable_workflows: bool
    enable_activities: bool
    max_concurrent_workflow_tasks: int
    max_concurrent_activities: int
    max_cached_workflows: int
    graceful_shutdown_millis: int
    max_heartbeat_throttle_millis: int = 60_000
    default_heartbeat_throttle_millis: int = 30_000
    raw_payloads: bool = False
    #: False: activities run only as local activities (temporalio's no_remote_activities).
    enable_remote_activities: bool = True
    build_id: str = field(default_factory=lambda: f"nomad-actions-{_core.__version__}")
    health_address: str | None = None
    tuner: TunerOptions | None = None


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _is_fast_converter(converter: temporalio.converter.DataConverter | None) -> bool:
    # JSON payloads without a codec are decoded in Rust; anything else goes through Python.
    if converter is None:
        return True
    plain = converter.payload_codec is None and type(converter.failure_converter) is type(
        temporalio.converter.DataConverter.default.failure_converter
    )
    return plain and converter.payload_converter_class in (
        pydantic_data_converter.payload_converter_class,
        temporalio.converter.DataConverter.default.payload_converter_class,
    )


def _reason(err: BaseException) -> str:
    """An error's message, with its cause when the message does not already carry it."""
    message = str(err) or type(err).__name__
    cause = err.__cause__
    if cause is not None and str(cause) not in message:
        message += f" ({type(cause).__name__}: {cause})"
    return message


def _entry_point_queue(entry_point: Any) -> str | None:
    """The task queue an entry point declares, read without loading it; None if unreadable."""
    try:
        queue = entry_point.task_queue
        return resolve_task_queue(queue) if queue else None
    except Exception:
        return None


def _actions_for_queue(
    queue: str,
) -> tuple[list[Action], list[Callable[..., Any]], dict[str, str]]:
    """Discovered actions on `queue`, activities other actions register on it, and the
    broken entry points that concern this queue (id -> reason).

    An entry point's own `task_queue` decides whether it concerns this worker, before it is
    loaded: a broken action on another queue is no reason to stop this one. Actions on other
    queues are still loaded for the activities they register here (`task_queue_activities`);
    if that fails it is only logged. An entry point that failed to import has an unknown queue,
    so it concerns every worker.
    """
    broken = {
        ep_id: f"its module failed to import ({error}), so its task queue is unknown"
        for ep_id, error in get_broken_entry_points().items()
    }
    loaded: list[tuple[str, Action]] = []
    for action_id, entry_point in sorted(get_actions().items()):
        declared = _entry_point_queue(entry_point)
        concerns_us = declared is None or declared == queue
        try:
            loaded.append((action_id, load_action(action_id)))
        except Exception as err:
            if concerns_us:
                broken[action_id] = _reason(err)
            else:
                logger.info(
                    "Ignoring action %s (task queue %s), which does not load: %s",
                    action_id,
                    declared,
                    _reason(err),
                )
            continue
    work = group_by_task_queue(action for _, action in loaded).get(queue, QueueWork())
    on_queue = {id(action) for action in work.actions}
    actions: list[Action] = []
    for action_id, action in loaded:
        if id(action) not in on_queue:
            continue
        refusal = _nexus_refusal(action)
        if refusal:
            broken[action_id] = refusal
        else:
            actions.append(action)
    return actions, work.activities, broken


def _given_actions(actions: Sequence[Action | str]) -> tuple[list[Action], dict[str, str]]:
    """The actions passed to the worker, loaded and checked; broken ones (label -> reason)."""
    loaded: list[Action] = []
    broken: dict[str, str] = {}
    for item in actions:
        label = item if isinstance(item, str) else repr(item)
        try:
            action = load_action(item) if isinstance(item, str) else as_action(item)
        except Exception as err:
            broken[label] = _reason(err)
            continue
        refusal = _nexus_refusal(action)
        if refusal:
            broken[label] = refusal
        else:
            loaded.append(action)
    return loaded, broken


def _nexus_refusal(action: Action) -> str | None:
    """Why the worker cannot run ``action``, when it has Nexus service handlers: sdk-core
    0.10.1 can poll Nexus tasks, but this engine has no Nexus handler bridge, and serving the
    action without them would leave its Nexus operations unanswered."""
    handlers = getattr(action, "nexus_service_handlers", None) or []
    if not handlers:
        return None
    names = ", ".join(sorted({type(h).__name__ for h in handlers}))
    return (
        f"it has nexus_service_handlers ({names}), which nomad-actions' worker does not run; "
        "run this action on the official temporalio worker"
    )


def _handle_broken(queue: str, broken: dict[str, str], skip_broken: bool) -> None:
    """Refuse to start (ActionLoadError naming every broken entry point), or log and go on."""
    if not broken:
        return
    if skip_broken:
        for ep_id, reason in sorted(broken.items()):
            logger.error('Skipping broken action entry point "%s": %s', ep_id, reason)
        return
    # Loader messages name the entry point already; the others get it in front.
    lines = "\n".join(
        f"  - {reason}" if f'"{ep_id}"' in reason else f'  - "{ep_id}": {reason}'
        for ep_id, reason in sorted(broken.items())
    )
    count = f"{len(broken)} broken action entry point" + ("s" if len(broken) > 1 else "")
    error = ActionLoadError(
        f'Refusing to start the worker on task queue "{queue}": {count}:\n{lines}\n'
        "Fix or uninstall the plugin, or skip broken actions with --skip-broken "
        "(Worker(skip_broken=True))."
    )
    error.broken_entry_points = dict(broken)  # type: ignore[attr-defined]
    raise error


def _unique(items: Sequence[Any], key: Callable[[Any], Any]) -> list[Any]:
    seen: dict[Any, Any] = {}
    for item in items:
        seen.setdefault(key(item), item)
    return list(seen.values())


class Worker:
    """Runs the workflows and activities of the actions on one task queue.

    Args:
        task_queue: `TaskQueue.CPU`, `TaskQueue.GPU`, 'cpu', 'gpu' or any queue name.
        actions: actions (or action ids) to serve; default every discovered action whose
            task queue is this one, plus activities other actions register on it through
            `task_queue_activities`.
        max_concurrent_activities: activity tasks run at once; None for sdk-core's
            resource-based tuner (`tuner`, default `TunerOptions()`), as upstream NOMAD's
            workers do when their `max_concurrent_activities` is unset.
        max_concurrent_workflow_tasks: workflow tasks processed at once.
        activity_threads: thread pool size for plain `def` activities.
        max_cached_workflows: workflow runs kept in memory (sticky cache); 0 replays every
            task from history.
        graceful_shutdown_timeout: on shutdown, how long running activities may finish
            before they are cancelled (seconds or timedelta).
        sandboxed: run workflow code sandboxed (upstream's default), in
            `nomad_actions.sandbox.SandboxRunner`: temporalio's restrictions, the workflow
            module imported once per workflow class.
        config: where to connect; default `nomad_actions.get_config()`.
        data_converter: a custom temporalio `DataConverter` (Python path); default the
            Pydantic JSON converter, decoded in Rust.
        interceptors: temporalio worker interceptors: their workflow interceptor classes
            and their ``intercept_activity`` chains, run for every activity.
        deadlock_timeout: seconds a workflow activation may run without yielding; None
            disables detection.
        workflows, activities: extra workflow classes / activity functions to register.
        workflow_runner, unsandboxed_workflow_runner: temporalio runners to use instead of
            the default sandboxed / unsandboxed ones.
        max_heartbeat_throttle_interval, default_heartbeat_throttle_interval: how often at
            most heartbeats reach the server (core throttles them in Rust).
        client: a temporalio `Client` that activities get from `activity.client()`.
        skip_broken: log and skip broken action entry points (failing to import or to load,
            or an invalid workflow or activity) instead of refusing to start. Only entry points
            on this task queue count, and those that fail to import (their queue is unknown).
        no_remote_activities: poll no activity tasks from the server; the activities run
            only as local activities of this worker's workflows.
        tuner: settings of the resource-based activity slots, used when
            `max_concurrent_activities` is None.
        health_address: `host:port` to serve `GET /health` at while running (200 `OK` while
            both poll loops run and Python answers within 3 s, else 503 `UNHEALTHY`); None
            for no endpoint.
        metrics_bind_address: `host:port` to serve sdk-core's Prometheus metrics at (the
            official worker's `temporal_*` names), for every worker of this process; set it
            on the first worker a process starts.

    Raises:
        ActionLoadError: an action entry point for this queue is broken (and not
            `skip_broken`); the message names every broken entry point and why.
        ConfigurationError: not in development mode and no API secret is set (with the
            default data converter; payloads would travel unencrypted), or bad tuner or
            metrics settings.
        NothingToRunError: nothing to run on this queue (a `ValueError`).

    `run()` and `run_async()` wait for the server if it cannot be reached at startup: they
    retry with a growing delay (1 s doubling to 30 s), logging each attempt with the address,
    until it answers or `shutdown()` is called. Once running, a lost server is sdk-core's to
    handle: its pollers retry until the server is back, and the worker carries on.

    `run()` blocks until SIGTERM/SIGINT or `shutdown()`; `await run_async()` is the async
    form; `with Worker(...):` runs it in a background thread. A worker belongs to the
    process that created it: run in a forked child, it raises `WorkerForkedError`.
    """

    def __init__(
        self,
        task_queue: TaskQueue | str,
        actions: Sequence[Action | str] | None = None,
        *,
        max_concurrent_activities: int | None = 100,
        max_concurrent_workflow_tasks: int = 100,
        activity_threads: int | None = None,
        max_cached_workflows: int = 1000,
        graceful_shutdown_timeout: float | timedelta = 10.0,
        sandboxed: bool = True,
        config: ConnectionConfig | None = None,
        data_converter: temporalio.converter.DataConverter | None = None,
        interceptors: Sequence[temporalio.worker.Interceptor] = (),
        deadlock_timeout: float | None = 2.0,
        workflows: Sequence[type] = (),
        activities: Sequence[Callable[..., Any]] = (),
        workflow_runner: temporalio.worker.WorkflowRunner | None = None,
        unsandboxed_workflow_runner: temporalio.worker.WorkflowRunner | None = None,
        max_heartbeat_throttle_interval: float | timedelta = 60.0,
        default_heartbeat_throttle_interval: float | timedelta = 30.0,
        client: Any = None,
        skip_broken: bool = False,
        no_remote_activities: bool = False,
        tuner: TunerOptions | None = None,
        health_address: str | None = None,
        metrics_bind_address: str | None = None,
    ) -> None:
        self.task_queue = resolve_task_queue(task_queue)
        extra: list[Callable[..., Any]] = []
        if actions is None:
            self.actions, extra, broken = _actions_for_queue(self.task_queue)
        else:
            self.actions, broken = _given_actions(actions)
        _handle_broken(self.task_queue, broken, skip_broken)
        wf_classes = [w for a in self.actions for w in a.all_workflows()] + list(workflows)
        act_fns = [f for a in self.actions for f in a.activities] + extra + list(activities)
        self.workflows = _unique(wf_classes, key=lambda c: c)
        self.activities = _unique(act_fns, key=lambda f: f)
        if not self.workflows and not self.activities:
            raise NothingToRunError(
                f'Nothing to run on task queue "{self.task_queue}": no action, workflow or '
                "activity is registered for it",
                task_queue=self.task_queue,
            )
        self.config = config or get_config()
        if data_converter is None:
            # NOMAD's payloads: encrypted by the engine, or refused (a custom converter brings
            # its own codec, as with temporalio's Worker).
            self.config.require_payload_security()
        if metrics_bind_address is not None:
            self.metrics_address: str | None = _core.start_metrics_exporter(metrics_bind_address)
            logger.info("Prometheus metrics at http://%s/metrics", self.metrics_address)
        else:
            self.metrics_address = None
        self.data_converter = data_converter
        self.graceful_shutdown_timeout = _seconds(graceful_shutdown_timeout)
        self.options = WorkerOptions(
            task_queue=self.task_queue,
            enable_workflows=bool(self.workflows),
            enable_activities=bool(self.activities),
            max_concurrent_workflow_tasks=max_concurrent_workflow_tasks,
            max_concurrent_activities=max_concurrent_activities or 0,
            max_cached_workflows=max_cached_workflows,
            graceful_shutdown_millis=int(self.graceful_shutdown_timeout * 1000),
            max_heartbeat_throttle_millis=int(_seconds(max_heartbeat_throttle_interval) * 1000),
            default_heartbeat_throttle_millis=int(
                _seconds(default_heartbeat_throttle_interval) * 1000
            ),
            raw_payloads=not _is_fast_converter(data_converter),
            enable_remote_activities=not no_remote_activities,
            health_address=health_address,
            tuner=(tuner or TunerOptions()) if max_concurrent_activities is None else None,
        )
        runner = workflow_runner
        if runner is None and not sandboxed:
            runner = temporalio.worker.UnsandboxedWorkflowRunner()
        self._workflow_bridge = (
            WorkflowBridge(
                self.workflows,
                namespace=self.config.namespace,
                task_queue=self.task_queue,
                runner=runner,
                unsandboxed_runner=unsandboxed_workflow_runner,
                data_converter=data_converter,
                interceptors=interceptors,
                deadlock_timeout=deadlock_timeout,
            )
            if self.workflows
            else None
        )
        bridge_kwargs: dict[str, Any] = {}
        if activity_threads is not None:
            bridge_kwargs["max_threads"] = activity_threads
        self._activity_bridge = (
            ActivityBridge(
                self.activities,
                namespace=self.config.namespace,
                task_queue=self.task_queue,
                heartbeat=self._record_heartbeat,
                data_converter=None if not self.options.raw_payloads else data_converter,
                client=client,
                interceptors=interceptors,
                **bridge_kwargs,
            )
            if self.activities
            else None
        )
        self._ref: _core.WorkerRef | None = None
        # Its bridges' threads and pools belong to this process (see _check_process).
        self._pid = os.getpid()
        self._started = threading.Event()
        self._stopping = threading.Event()
        # Ends the connect retry of a worker whose server never answered.
        self._start_cancel = _core.StartCancel()
        self._finished = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def run_on_activity_loop(self, fn: Callable[[], Any], timeout: float = 60.0) -> Any:
        """Runs ``fn()`` (a coroutine function) on the activities' event loop before
        `run()`, for clients that bind to it (upstream NOMAD's ``init_async_mongo``).

        Returns None without running it when the worker has no activities.

        Raises:
            TimeoutError: It took longer than ``timeout`` seconds.
        """
        if self._activity_bridge is None:
            return None
        return self._activity_bridge.run_coroutine(fn(), timeout)

    # -- callbacks from the activity bridge (any thread) --------------------------------

    def _record_heartbeat(self, token: bytes, details: list[Any]) -> None:
        self._ref.record_heartbeat(token, details)

    # -- lifecycle --------------------------------------------------------------------

    def _check_process(self) -> None:
        """Refuse to run in a forked child: the activity thread pool, the workflow
        bridge's threads and any native worker stay behind in the parent, so the worker
        would hang there instead of failing."""
        if os.getpid() != self._pid:
            raise WorkerForkedError(
                f'The Worker for task queue "{self.task_queue}" was created in process '
                f"{self._pid} and cannot run in process {os.getpid()}, a fork of it: "
                "create the Worker in the child process"
            )

    @property
    def health_address(self) -> str | None:
        """The address `GET /health` is served at once running (`host:port`), or None."""
        return self._ref.health_address if self._ref is not None else None

    def _log_start(self) -> None:
        for action in self.actions:
            logger.info(
                "Registered action workflow %s on %s (%d activities)",
                action.workflow_name,
                self.task_queue,
                len(action.activities),
            )
        logger.info(
            "Worker polling %s at %s (namespace %s): %d workflows, %d activities",
            self.task_queue,
            self.config.address,
            self.config.namespace,
            len(self.workflows),
            len(self.activities),
        )

    def _bridges(self) -> tuple[Any, Any]:
        wf = self._workflow_bridge.activate if self._workflow_bridge else None
        return wf, self._activity_bridge

    def _after_run(self) -> None:
        if self._activity_bridge is not None:
            self._activity_bridge.close()
        if self._workflow_bridge is not None:
            self._workflow_bridge.evict_all()
        self._finished.set()
        logger.info("Worker on %s stopped", self.task_queue)

    def _register_search_attributes(self) -> None:
        """Register the engine's search attributes on the namespace where permitted (so
        listing queries them instead of scanning); log what to run where not. Never fails
        the worker: actions run without them too."""
        from nomad_actions.search_attributes import ensure_search_attributes

        try:
            outcome = ensure_search_attributes(self.config)
        except Exception as err:
            logger.warning(
                "Could not check the search attributes of %s: %s", self.config.address, err
            )
            return
        if outcome.added:
            logger.info(
                "Registered search attributes %s on namespace %s",
                ", ".join(outcome.added),
                self.config.namespace,
            )
        if not outcome.ok:
            logger.warning(
                "Namespace %s lacks the search attributes %s (%s); listing actions scans the "
                "namespace until an operator runs: %s",
                self.config.namespace,
                ", ".join(outcome.missing),
                outcome.error or "not registered",
                outcome.command,
            )

    def _connect(self) -> _core.WorkerRef | None:
        """Create the native worker; the Rust side retries while the server cannot be
        reached (logging each attempt) until `shutdown()`. Returns None if that came first."""
        ref = _core.WorkerRef.create(self.config, self.options, self._start_cancel, True)
        if ref is None:
            logger.info("Worker on %s stopped before reaching the server", self.task_queue)
        return ref

    async def _connect_async(self) -> _core.WorkerRef | None:
        """`_connect` for `run_async`: the waits do not block the event loop."""
        ref = await _core.WorkerRef.create(self.config, self.options, self._start_cancel, False)
        if ref is None:
            logger.info("Worker on %s stopped before reaching the server", self.task_queue)
        return ref

    def run(self) -> None:
        """Run until SIGTERM/SIGINT (in the main thread) or `shutdown()`; then drain.

        Waits for the server if it cannot be reached (see the class docstring). Running
        activities get `graceful_shutdown_timeout` to finish before they are cancelled;
        every task is completed before this returns.
        """
        self._check_process()
        restore = self._install_signal_handlers()
        try:
            self._ref = self._connect()
            if self._ref is None:
                return
            self._register_search_attributes()
            self._log_start()
            self._started.set()
            if self._stopping.is_set():
                self._ref.initiate_shutdown()
            wf, act = self._bridges()
            self._ref.run(wf, act, True)
        except BaseException as err:
            self._error = err
            raise
        finally:
            self._started.set()
            restore()
            self._after_run()

    async def run_async(self) -> None:
        """Async form of `run()` (no signal handlers are installed)."""
        self._check_process()
        try:
            self._ref = await self._connect_async()
            if self._ref is None:
                return
            await asyncio.get_running_loop().run_in_executor(None, self._register_search_attributes)
            self._log_start()
            self._started.set()
            if self._stopping.is_set():
                self._ref.initiate_shutdown()
            wf, act = self._bridges()
            await self._ref.run(wf, act, False)
        finally:
            self._started.set()
            await asyncio.get_running_loop().run_in_executor(None, self._after_run)

    def shutdown(self) -> None:
        """Stop polling; running activities get `graceful_shutdown_timeout` to finish,
        then are cancelled. Returns at once; `run()` returns when all is drained."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._start_cancel.cancel()
        logger.info("Worker on %s shutting down", self.task_queue)
        if self._ref is not None:
            # Rust drains the activities: activity.is_worker_shutdown(), the grace period,
            # then a cancel, then a failure for those that ignore it.
            self._ref.initiate_shutdown()

    def _install_signal_handlers(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {}

        def handler(signum: int, frame: Any) -> None:
            logger.info("Received %s", signal.Signals(signum).name)
            if self._stopping.is_set():
                # A second signal while draining: stop waiting for activities.
                signal.signal(signum, previous[signum])
            self.shutdown()

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)

        def restore() -> None:
            for sig, old in previous.items():
                signal.signal(sig, old)

        return restore

    def __enter__(self) -> Worker:
        self._check_process()

        def target() -> None:
            # The error is kept in self._error and re-raised by __enter__ / __exit__.
            with contextlib.suppress(BaseException):
                self.run()

        self._thread = threading.Thread(target=target, name="nomad-actions-worker", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        if self._thread is not None:
            self._thread.join()
        if self._error is not None and not isinstance(self._error, KeyboardInterrupt):
            raise self._error

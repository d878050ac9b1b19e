"""Runs plugin workflow code for the Rust worker loop: activation bytes in, completion bytes out.

The Rust side polls sdk-core for workflow activations and hands each one, serialized, to
`WorkflowBridge.activate` on a plain (non-asyncio) blocking thread, which runs the workflow
code itself. The bridge keeps one `temporalio.worker.WorkflowInstance` per cached run,
created through temporalio's public `WorkflowRunner` API (sandboxed by default, as upstream
NOMAD), and replies with the serialized `WorkflowActivationCompletion` through the native
`Reply` it was given. The deadlock timeout (temporalio's TMPRL1101) belongs to that `Reply`,
in Rust: the bridge starts it once the workflow code is about to run, and when it fires the
Rust side answers with the failed completion and interrupts the thread, calling back here
only to capture the stuck thread's stack and forget the run. No other thread is involved:
each hand-off between threads costs CPU and latency on every activation.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import traceback
import weakref
from collections.abc import Callable, Coroutine, Sequence
from datetime import timezone
from typing import Any, TypeVar

import temporalio.bridge.worker
import temporalio.common
import temporalio.converter
import temporalio.exceptions
import temporalio.workflow
from temporalio.bridge.proto.workflow_activation import (
    InitializeWorkflow,
    RemoveFromCache,
    WorkflowActivation,
    WorkflowActivationJob,
)
from temporalio.bridge.proto.workflow_completion import WorkflowActivationCompletion
from temporalio.contrib.pydantic import PydanticPayloadConverter, pydantic_data_converter
from temporalio.worker import (
    Interceptor,
    UnsandboxedWorkflowRunner,
    WorkflowInstance,
    WorkflowInstanceDetails,
    WorkflowInterceptorClassInput,
    WorkflowRunner,
)

from nomad_actions._core import Reply
from nomad_actions.sandbox import SandboxRunner

__all__ = ["WorkflowBridge"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class WorkflowBridge:
    """Runs registered workflow classes for serialized sdk-core activations.

    Every method is thread-safe. `activate` may be called concurrently for different runs;
    core never sends two activations of the same run at once.
    """

    def __init__(
        self,
        workflows: Sequence[type],
        *,
        namespace: str,
        task_queue: str,
        runner: WorkflowRunner | None = None,
        unsandboxed_runner: WorkflowRunner | None = None,
        data_converter: temporalio.converter.DataConverter | None = None,
        interceptors: Sequence[Interceptor] = (),
        deadlock_timeout: float | None = 2.0,
    ) -> None:
        """Validates the workflow classes and prepares them with their runner.

        Args:
            workflows: Classes decorated with `@workflow.defn`; at most one dynamic.
            namespace: Namespace of the worker, reported in `workflow.info()`.
            task_queue: Task queue of the worker, reported in `workflow.info()`.
            runner: Runner for sandboxed workflows. Defaults to
                `nomad_actions.sandbox.SandboxRunner()` (temporalio's restrictions, built once
                per workflow class); temporalio's `SandboxedWorkflowRunner()` is selectable.
            unsandboxed_runner: Runner for `@workflow.defn(sandboxed=False)` workflows.
                Defaults to `UnsandboxedWorkflowRunner()`.
            data_converter: Converter for workflow payloads and failures. Defaults to
                `temporalio.contrib.pydantic.pydantic_data_converter`. Its payload codec, if
                any, is applied to every activation and completion.
            interceptors: Worker interceptors; their workflow interceptor classes are used.
            deadlock_timeout: Seconds an activation may run before the workflow task fails
                as a potential deadlock. `None` disables the check (for debuggers), as does a
                truthy `TEMPORAL_DEBUG` environment variable.

        Raises:
            ValueError: A class is not a workflow, or two share a name.
            TypeError: More than one dynamic workflow.
            RuntimeError: A workflow failed validation by its runner (e.g. the sandbox).
        """
        self._namespace = namespace
        self._task_queue = task_queue
        self._runner = runner or SandboxRunner()
        self._unsandboxed_runner = unsandboxed_runner or UnsandboxedWorkflowRunner()
        self._converter = data_converter or pydantic_data_converter
        if self._converter.external_storage is not None:
            raise ValueError("external payload storage is not supported by nomad-actions")
        # Creating these once also validates the converter classes.
        self._payload_converter = self._converter.payload_converter
        self._failure_converter = self._converter.failure_converter
        shared = _shared_payload_converter(self._converter)
        self._shared_converter_factory: (
            Callable[[], temporalio.converter.PayloadConverter] | None
        ) = None if shared is None else (lambda: shared)
        timeout = None if os.environ.get("TEMPORAL_DEBUG") else deadlock_timeout
        self._deadlock_timeout = timeout

        self._extern_functions: dict[str, Callable[..., Any]] = {}
        class_input = WorkflowInterceptorClassInput(unsafe_extern_functions=self._extern_functions)
        self._interceptor_classes = [
            cls for i in interceptors if (cls := i.workflow_interceptor_class(class_input))
        ]
        # The instance calls these (metrics, local activity check); we have no worker-side
        # metric meter and let core validate local activities.
        self._extern_functions["__temporal_get_metric_meter"] = lambda: (
            temporalio.common.MetricMeter.noop
        )
        self._extern_functions["__temporal_assert_local_activity_valid"] = lambda _name: None

        # Activations run on the caller's thread (a Rust blocking thread); the Rust `Reply`
        # times them. Its callback holds the bridge weakly, and is made once (not a fresh
        # bound method per activation). A Python payload codec is async and gets a private
        # loop, started only when there is one.
        deadlocked = weakref.WeakMethod(self._deadlocked)
        self._on_deadlock: Callable[[str, str, int, bool], str] = (
            lambda run_id, workflow_type, thread, eviction: (
                m(run_id, workflow_type, thread, eviction)
                if (m := deadlocked()) is not None
                else ""
            )
        )
        self._codec_loop = _LoopThread() if self._converter.payload_codec is not None else None
        weakref.finalize(self, _release, self._codec_loop)

        self._runner.set_worker_level_failure_exception_types([])
        self._unsandboxed_runner.set_worker_level_failure_exception_types([])
        self._defns: dict[str, temporalio.workflow._Definition] = {}
        self._dynamic: temporalio.workflow._Definition | None = None
        for cls in workflows:
            defn = temporalio.workflow._Definition.must_from_class(cls)
            if defn.name is not None and defn.name in self._defns:
                raise ValueError(f"More than one workflow named {defn.name}")
            if defn.name is None and self._dynamic is not None:
                raise TypeError("More than one dynamic workflow")
            try:
                _with_loop(self._runner_for(defn).prepare_workflow, defn)
            except Exception as err:
                raise RuntimeError(f"Failed validating workflow {defn.name}") from err
            if defn.name is None:
                self._dynamic = defn
            else:
                self._defns[defn.name] = defn

        self._runs: dict[str, _Run] = {}
        self._create_lock = threading.Lock()
        # Instances whose eviction failed: kept alive so their coroutines are never
        # garbage-collected (and resumed) on an arbitrary thread.
        self._unevictable: set[_Run] = set()

    @property
    def workflow_types(self) -> list[str]:
        """Names of the registered workflows, sorted (a dynamic workflow has none)."""
        return sorted(self._defns)

    @property
    def deadlock_timeout(self) -> float | None:
        """Seconds an activation may run before it is reported as a deadlock, or `None`."""
        return self._deadlock_timeout

    def running_count(self) -> int:
        """Returns the number of runs whose instance is cached."""
        return len(self._runs)

    def activate(self, activation: bytes, reply: Reply) -> None:
        """Runs one activation of a workflow run on the calling thread.

        The serialized `WorkflowActivationCompletion` is passed to `reply`, exactly once and
        always with the activation's `run_id`; errors of the workflow or of the bridge are
        reported in it, not raised. Normally the calling thread replies before returning.
        If the workflow code does not yield within the deadlock timeout, `reply`'s timer
        answers instead (a failed completion naming the deadlock, or a successful one for an
        eviction), drops the run from the cache (through `_deadlocked`) and interrupts the
        workflow code; the calling thread then tears the instance down when the code lets
        go, and returns without replying.

        Args:
            activation: A serialized coresdk `WorkflowActivation`.
            reply: The native reply: called with the serialized completion, from this thread
                or its deadlock timer.

        Raises:
            google.protobuf.message.DecodeError: `activation` is not a `WorkflowActivation`
                (nothing is replied).
        """
        act = WorkflowActivation.FromString(activation)
        watch = _Watch(act.run_id, reply)
        completion: WorkflowActivationCompletion | None = None
        try:
            completion = self._activate(act, watch)
        except _InterruptDeadlockError:
            pass  # the timer answered; only an abandoned activation is interrupted
        finally:
            abandoned = self._finish(watch)
        if abandoned:
            self._teardown(watch)
        elif completion is not None:
            reply(completion.SerializeToString())

    def evict_all(self) -> None:
        """Tears down every cached instance (worker shutdown)."""
        for run_id in list(self._runs):
            self.activate(_eviction(run_id).SerializeToString(), Reply(_ignore))

    def _runner_for(self, defn: temporalio.workflow._Definition) -> WorkflowRunner:
        return self._runner if defn.sandboxed else self._unsandboxed_runner

    def _activate(self, act: WorkflowActivation, watch: _Watch) -> WorkflowActivationCompletion:
        run_id = act.run_id
        # Core sends an eviction alone in its activation.
        if any(job.HasField("remove_from_cache") for job in act.jobs):
            watch.eviction = True
            run = self._runs.pop(run_id, None)
            if run is not None:
                logger.debug("Evicting workflow %s run %s", run.workflow_type, run_id)
                watch.run = run
                watch.workflow_type = run.workflow_type
                self._watch(watch)
                self._evict_instance(run, act)
            completion = WorkflowActivationCompletion(run_id=run_id)
            completion.successful.SetInParent()
            return completion

        run = self._runs.get(run_id)
        workflow_id = run.workflow_id if run else ""
        watch.run = run
        watch.workflow_type = run.workflow_type if run else ""
        init: InitializeWorkflow | None = None
        try:
            if run is None:
                init = next(
                    (j.initialize_workflow for j in act.jobs if j.HasField("initialize_workflow")),
                    None,
                )
                if init is None:
                    raise RuntimeError(
                        f"Workflow run {run_id} is not in cache and the activation has no "
                        "initialize_workflow job; it must be evicted and replayed"
                    )
                workflow_id = init.workflow_id
                watch.workflow_type = init.workflow_type
            if self._codec_loop is not None:
                self._codec_loop.run(
                    temporalio.bridge.worker.decode_activation(
                        act,
                        self._context_converter(workflow_id),
                        decode_headers=False,
                        storage_concurrency_limit=1,
                    )
                )
            if init is not None:
                # One creation at a time, as upstream does on its event loop: the sandbox
                # swaps `sys.modules` while it imports the workflow module, and two
                # concurrent sandboxed imports deadlock on the import locks.
                with self._create_lock:
                    instance = _with_loop(self._create_instance, act, init)
                run = _Run(instance, run_id, workflow_id, init.workflow_type)
                watch.run = run
                self._runs[run_id] = run
            assert run is not None
            self._watch(watch)
            completion = run.instance.activate(act)
        except _InterruptDeadlockError:
            raise
        except Exception as err:
            completion = self._failure_completion(err)
        completion.run_id = run_id

        if self._codec_loop is not None:
            try:
                self._codec_loop.run(
                    temporalio.bridge.worker.encode_completion(
                        completion,
                        self._context_converter(workflow_id),
                        encode_headers=False,
                        storage_concurrency_limit=1,
                    )
                )
            except Exception as err:
                completion.failed.Clear()
                completion.failed.failure.message = f"Failed encoding completion: {err}"
        return completion

    def _watch(self, watch: _Watch) -> None:
        """Starts the deadlock timeout (in Rust, on the reply). Instance creation (importing
        the workflow module into a fresh sandbox, slow the first time) is not timed, as
        upstream does not time it."""
        if self._deadlock_timeout is not None:
            watch.reply.watch(
                self._deadlock_timeout,
                watch.run_id,
                watch.workflow_type,
                watch.eviction,
                self._on_deadlock,
                _InterruptDeadlockError,
            )

    def _finish(self, watch: _Watch) -> bool:
        """Ends the watch of an activation whose code returned (or was interrupted).

        Returns:
            True if the timer gave up on it meanwhile (it has replied), else False.
        """
        # An interrupt sent just before the code returned may still be pending: it can
        # fire at any bytecode until `close` clears it, so call again until it returns.
        while True:
            try:
                return watch.reply.close()
            except _InterruptDeadlockError:
                continue

    def _deadlocked(self, run_id: str, workflow_type: str, thread: int, eviction: bool) -> str:
        """Called by the reply's deadlock timer once it gave up on an activation (before it
        answers and interrupts the thread): forgets the run and returns the stack of the
        stuck thread, for the failure."""
        # Core fails the task and evicts the run; a later activation re-creates it.
        self._runs.pop(run_id, None)
        if eviction:
            logger.error(
                "Eviction of workflow %s run %s did not finish within %ss, interrupting it",
                workflow_type or "?",
                run_id,
                self._deadlock_timeout,
            )
        return _stack_of(thread)

    def _teardown(self, watch: _Watch) -> None:
        """Evicts an abandoned instance, on the thread that ran it, once it let go."""
        if watch.run is not None:
            self._evict_instance(watch.run)

    def _evict_instance(self, run: _Run, act: WorkflowActivation | None = None) -> None:
        """Lets the instance process an eviction: it cancels the workflow's tasks, so that
        no coroutine is left to be garbage-collected (and resumed) on another thread."""
        if run.evicted:
            return
        try:
            completion = run.instance.activate(act or _eviction(run.run_id))
        except _InterruptDeadlockError:
            raise
        except Exception:
            run.evicted = True
            logger.exception("Eviction of workflow %s run %s failed", run.workflow_type, run.run_id)
            self._unevictable.add(run)
            return
        run.evicted = True
        if completion.HasField("failed"):
            logger.error(
                "Eviction of workflow %s run %s failed: %s",
                run.workflow_type,
                run.run_id,
                completion.failed.failure.message,
            )
            self._unevictable.add(run)

    def _context_converter(self, workflow_id: str) -> temporalio.converter.DataConverter:
        return self._converter.with_context(
            temporalio.converter.WorkflowSerializationContext(
                namespace=self._namespace, workflow_id=workflow_id
            )
        )

    def _failure_completion(self, err: BaseException) -> WorkflowActivationCompletion:
        completion = WorkflowActivationCompletion()
        if isinstance(err, temporalio.exceptions.ApplicationError) and err.non_retryable:
            # Fail the workflow execution rather than retrying the task forever.
            failure = completion.successful.commands.add().fail_workflow_execution.failure
        else:
            failure = completion.failed.failure
        failure.SetInParent()
        try:
            self._failure_converter.to_failure(err, self._payload_converter, failure)
        except Exception as inner:
            failure.Clear()
            failure.message = f"Failed converting activation exception: {inner}"
        return completion

    def _create_instance(
        self, act: WorkflowActivation, init: InitializeWorkflow
    ) -> WorkflowInstance:
        defn = self._defns.get(init.workflow_type, self._dynamic)
        if defn is None:
            raise temporalio.exceptions.ApplicationError(
                f"Workflow class {init.workflow_type} is not registered on this worker, "
                f"available workflows: {', '.join(sorted(self._defns))}",
                type="NotFoundError",
            )
        parent = root = None
        if init.HasField("parent_workflow_info"):
            parent = temporalio.workflow.ParentInfo(
                namespace=init.parent_workflow_info.namespace,
                run_id=init.parent_workflow_info.run_id,
                workflow_id=init.parent_workflow_info.workflow_id,
            )
        if init.HasField("root_workflow"):
            root = temporalio.workflow.RootInfo(
                run_id=init.root_workflow.run_id, workflow_id=init.root_workflow.workflow_id
            )
        info = temporalio.workflow.Info(
            attempt=init.attempt,
            continued_run_id=init.continued_from_execution_run_id or None,
            cron_schedule=init.cron_schedule or None,
            execution_timeout=_duration(init, "workflow_execution_timeout"),
            first_execution_run_id=init.first_execution_run_id,
            headers=dict(init.headers),
            namespace=self._namespace,
            original_execution_run_id=init.original_execution_run_id or act.run_id,
            parent=parent,
            root=root,
            priority=temporalio.common.Priority._from_proto(init.priority),
            raw_memo=dict(init.memo.fields),
            retry_policy=temporalio.common.RetryPolicy.from_proto(init.retry_policy)
            if init.HasField("retry_policy")
            else None,
            run_id=act.run_id,
            run_timeout=_duration(init, "workflow_run_timeout"),
            search_attributes=temporalio.converter.decode_search_attributes(init.search_attributes),
            start_time=act.timestamp.ToDatetime().replace(tzinfo=timezone.utc),
            task_queue=self._task_queue,
            task_timeout=init.workflow_task_timeout.ToTimedelta(),
            typed_search_attributes=temporalio.converter.decode_typed_search_attributes(
                init.search_attributes
            ),
            workflow_id=init.workflow_id,
            workflow_start_time=init.start_time.ToDatetime().replace(tzinfo=timezone.utc),
            workflow_type=init.workflow_type,
        )
        runner = self._runner_for(defn)
        details = WorkflowInstanceDetails(
            payload_converter_factory=self._payload_converter_factory(runner),
            failure_converter_class=self._converter.failure_converter_class,
            interceptor_classes=self._interceptor_classes,
            defn=defn,
            info=info,
            randomness_seed=init.randomness_seed,
            extern_functions=self._extern_functions,
            disable_eager_activity_execution=False,
            worker_level_failure_exception_types=(),
            patch_activation_callback=None,
            last_completion_result=init.last_completion_result,
            last_failure=init.continued_failure if init.HasField("continued_failure") else None,
        )
        return runner.create_instance(details)

    def _payload_converter_factory(
        self, runner: WorkflowRunner
    ) -> Callable[[], temporalio.converter.PayloadConverter]:
        """What an instance makes its payload converter with.

        temporalio makes a new converter for every instance, so the Pydantic one starts
        with an empty cache and builds a `TypeAdapter` for every payload it decodes
        (with the converter itself, a fifth of an unsandboxed workflow's Python time in
        the worker). Outside a sandbox, temporalio's stock converters, which hold no
        state of their own and are thread-safe (the official worker's activities share
        one), are made once per bridge. A sandboxed run keeps its own: its types are
        per-run copies, which a shared cache would keep alive.
        """
        shared = self._shared_converter_factory
        if shared is not None and type(runner) is UnsandboxedWorkflowRunner:
            return shared
        return self._converter._new_payload_converter


def _shared_payload_converter(
    converter: temporalio.converter.DataConverter,
) -> temporalio.converter.PayloadConverter | None:
    """One payload converter for every unsandboxed instance, for temporalio's stock
    converter classes only (a subclass or another class may keep state per instance)."""
    if converter.payload_converter_class in _STATELESS_PAYLOAD_CONVERTERS:
        return converter._new_payload_converter()
    return None


_STATELESS_PAYLOAD_CONVERTERS = (
    temporalio.converter.DefaultPayloadConverter,
    PydanticPayloadConverter,
)


def _release(loop: _LoopThread | None) -> None:
    """Stops the codec thread of a garbage-collected bridge."""
    if loop is not None:
        loop.stop()


def _duration(init: InitializeWorkflow, field: str) -> Any:
    return getattr(init, field).ToTimedelta() if init.HasField(field) else None


def _eviction(run_id: str) -> WorkflowActivation:
    """A synthetic eviction, to tear an instance down outside core's own evictions."""
    return WorkflowActivation(
        run_id=run_id,
        jobs=[
            WorkflowActivationJob(
                remove_from_cache=RemoveFromCache(
                    message="Evicted by nomad-actions",
                    reason=RemoveFromCache.EvictionReason.LANG_REQUESTED,
                )
            )
        ],
    )


class _InterruptDeadlockError(BaseException):
    """Raised asynchronously in a thread stuck in workflow code to get it out."""


def _ignore(_: bytes) -> None:
    """A reply nobody waits for (evictions at shutdown)."""


def _stack_of(thread: int) -> str:
    frame = sys._current_frames().get(thread)
    return "".join(traceback.format_stack(frame)) if frame else ""


class _CreationLoop(asyncio.AbstractEventLoop):
    """Stands in as the running loop while an instance is created.

    `WorkflowInstance.__init__` registers itself on the running loop for the interceptors'
    `init` (upstream creates instances on the worker's loop). A fresh inert object per call
    keeps concurrent creations on different threads apart, at no cost; nothing is ever
    scheduled on it.
    """


def _with_loop(fn: Callable[..., _T], *args: Any) -> _T:
    """Calls `fn` on this thread with a private stand-in loop set as the running loop."""
    previous = asyncio.events._get_running_loop()
    asyncio.events._set_running_loop(_CreationLoop())
    try:
        return fn(*args)
    finally:
        asyncio.events._set_running_loop(previous)


class _Run:
    """A cached workflow instance."""

    __slots__ = ("evicted", "instance", "run_id", "workflow_id", "workflow_type")

    def __init__(
        self, instance: WorkflowInstance, run_id: str, workflow_id: str, workflow_type: str
    ) -> None:
        self.instance = instance
        self.run_id = run_id
        self.workflow_id = workflow_id
        self.workflow_type = workflow_type
        self.evicted = False


class _Watch:
    """One activation in progress, as its thread sees it: the reply, and the run it drives
    (to tear down should the reply's timer give up on it)."""

    __slots__ = ("eviction", "reply", "run", "run_id", "workflow_type")

    def __init__(self, run_id: str, reply: Reply) -> None:
        self.run_id = run_id
        self.reply = reply
        self.run: _Run | None = None
        self.workflow_type = ""
        self.eviction = False


class _LoopThread:
    """A private event loop on a daemon thread, for an async Python payload codec."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._serve, name="nomad_workflow_codec", daemon=True).start()

    def _serve(self) -> None:
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Runs a coroutine on the loop and waits for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

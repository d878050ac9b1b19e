"""Runs plugin workflow code for the Rust worker loop: activation bytes in, completion bytes out.

The Rust side polls sdk-core for workflow activations and hands each one, serialized, to
`WorkflowBridge.activate` from a plain (non-asyncio) thread. The bridge keeps one
`temporalio.worker.WorkflowInstance` per cached run, created through temporalio's public
`WorkflowRunner` API (sandboxed by default, as upstream NOMAD), and returns the serialized
`WorkflowActivationCompletion`.

This module must stay importable without the native `nomad_actions._core` module.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import itertools
import logging
import os
import queue
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
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import (
    Interceptor,
    UnsandboxedWorkflowRunner,
    WorkflowInstance,
    WorkflowInstanceDetails,
    WorkflowInterceptorClassInput,
    WorkflowRunner,
)
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

__all__ = ["WorkflowBridge"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

_DEFAULT_MAX_THREADS = max(4, (os.cpu_count() or 1) * 2)


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
        max_threads: int = _DEFAULT_MAX_THREADS,
    ) -> None:
        """Validates the workflow classes and prepares them with their runner.

        Args:
            workflows: Classes decorated with `@workflow.defn`; at most one dynamic.
            namespace: Namespace of the worker, reported in `workflow.info()`.
            task_queue: Task queue of the worker, reported in `workflow.info()`.
            runner: Runner for sandboxed workflows. Defaults to `SandboxedWorkflowRunner()`.
            unsandboxed_runner: Runner for `@workflow.defn(sandboxed=False)` workflows.
                Defaults to `UnsandboxedWorkflowRunner()`.
            data_converter: Converter for workflow payloads and failures. Defaults to
                `temporalio.contrib.pydantic.pydantic_data_converter`. Its payload codec, if
                any, is applied to every activation and completion.
            interceptors: Worker interceptors; their workflow interceptor classes are used.
            deadlock_timeout: Seconds an activation may run before the workflow task fails
                as a potential deadlock. `None` disables the check and runs activations on
                the calling thread (for debuggers), as does a truthy `TEMPORAL_DEBUG`
                environment variable.
            max_threads: Idle activation threads kept for reuse. Activations never queue:
                a thread is started when none is idle, and a thread stuck in a deadlocked
                workflow is never handed new work.

        Raises:
            ValueError: A class is not a workflow, or two share a name.
            TypeError: More than one dynamic workflow.
            RuntimeError: A workflow failed validation by its runner (e.g. the sandbox).
        """
        self._namespace = namespace
        self._task_queue = task_queue
        self._runner = runner or SandboxedWorkflowRunner()
        self._unsandboxed_runner = unsandboxed_runner or UnsandboxedWorkflowRunner()
        self._converter = data_converter or pydantic_data_converter
        if self._converter.external_storage is not None:
            raise ValueError("external payload storage is not supported by nomad-actions")
        # Creating these once also validates the converter classes.
        self._payload_converter = self._converter.payload_converter
        self._failure_converter = self._converter.failure_converter
        self._deadlock_timeout = None if os.environ.get("TEMPORAL_DEBUG") else deadlock_timeout

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

        # WorkflowInstance.__init__ needs a running event loop (upstream creates instances on
        # the worker's loop), and the payload codec is async: both run on this private loop.
        self._loop = _LoopThread()
        self._pool = _ThreadPool(max_threads)
        weakref.finalize(self, _release, self._loop, self._pool)

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
                self._loop.call(self._runner_for(defn).prepare_workflow, defn)
            except Exception as err:
                raise RuntimeError(f"Failed validating workflow {defn.name}") from err
            if defn.name is None:
                self._dynamic = defn
            else:
                self._defns[defn.name] = defn

        self._runs: dict[str, _Run] = {}
        # Instances whose eviction failed: kept alive so their coroutines are never
        # garbage-collected (and resumed) on an arbitrary thread.
        self._unevictable: set[_Run] = set()
        self._codec = self._converter.payload_codec is not None

    @property
    def workflow_types(self) -> list[str]:
        """Names of the registered workflows, sorted (a dynamic workflow has none)."""
        return sorted(self._defns)

    def running_count(self) -> int:
        """Returns the number of runs whose instance is cached."""
        return len(self._runs)

    def activate(self, activation: bytes) -> bytes:
        """Runs one activation of a workflow run.

        Args:
            activation: A serialized coresdk `WorkflowActivation`.

        Returns:
            The serialized `WorkflowActivationCompletion`. It always carries the activation's
            `run_id`; errors of the workflow or of the bridge are reported in it, not raised.

        Raises:
            google.protobuf.message.DecodeError: `activation` is not a `WorkflowActivation`.
        """
        act = WorkflowActivation.FromString(activation)
        return self._activate(act).SerializeToString()

    def evict_all(self) -> None:
        """Tears down every cached instance (worker shutdown)."""
        runs = list(self._runs.values())
        self._runs.clear()
        jobs = [self._pool.submit(run.activate, _eviction(run.run_id)) for run in runs]
        for run, job in zip(runs, jobs, strict=True):
            self._settle_eviction(run, job)
        self._pool.release_idle()

    def _runner_for(self, defn: temporalio.workflow._Definition) -> WorkflowRunner:
        return self._runner if defn.sandboxed else self._unsandboxed_runner

    def _activate(self, act: WorkflowActivation) -> WorkflowActivationCompletion:
        run_id = act.run_id
        # Core sends an eviction alone in its activation.
        if any(job.HasField("remove_from_cache") for job in act.jobs):
            return self._evict(act)

        run = self._runs.get(run_id)
        workflow_id = run.workflow_id if run else ""
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
            if self._codec:
                self._loop.run(
                    temporalio.bridge.worker.decode_activation(
                        act,
                        self._context_converter(workflow_id),
                        decode_headers=False,
                        storage_concurrency_limit=1,
                    )
                )
            if init is not None:
                instance = self._loop.call(self._create_instance, act, init)
                run = _Run(instance, run_id, workflow_id, init.workflow_type)
                self._runs[run_id] = run
            completion = self._run_activation(run, act)
        except Exception as err:
            completion = self._failure_completion(err)
        completion.run_id = run_id

        if self._codec:
            try:
                self._loop.run(
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

    def _run_activation(self, run: _Run, act: WorkflowActivation) -> WorkflowActivationCompletion:
        if self._deadlock_timeout is None:
            return run.activate(act)
        job = self._pool.submit(run.activate, act)
        try:
            return job.future.result(self._deadlock_timeout)
        except concurrent.futures.TimeoutError:
            pass
        # Build the error before interrupting so it shows where the workflow is stuck.
        err = _DeadlockError(
            f"[TMPRL1101] Potential deadlock detected: workflow {run.workflow_type} "
            f"didn't yield within {self._deadlock_timeout:g} second(s)."
        )
        stack = run.stack()
        if not self._abandon(run, job):
            return job.future.result()
        # Core fails the task and evicts the run; a later activation re-creates it.
        if self._runs.get(act.run_id) is run:
            del self._runs[act.run_id]
        completion = self._failure_completion(err)
        if stack:
            completion.failed.failure.stack_trace = stack
        return completion

    def _evict(self, act: WorkflowActivation) -> WorkflowActivationCompletion:
        run = self._runs.pop(act.run_id, None)
        if run is not None:
            logger.debug("Evicting workflow %s run %s", run.workflow_type, act.run_id)
            # The instance must process the eviction: it cancels the workflow's tasks so that
            # no coroutine is left to be garbage-collected (and resumed) on another thread.
            self._settle_eviction(run, self._pool.submit(run.activate, act))
        completion = WorkflowActivationCompletion(run_id=act.run_id)
        completion.successful.SetInParent()
        return completion

    def _settle_eviction(self, run: _Run, job: _Job) -> None:
        try:
            completion = job.future.result(self._deadlock_timeout)
        except concurrent.futures.TimeoutError:
            if self._abandon(run, job):
                logger.error(
                    "Eviction of workflow %s run %s did not finish within %ss, interrupting it",
                    run.workflow_type,
                    run.run_id,
                    self._deadlock_timeout,
                )
                return
            completion = job.future.result()
        except BaseException:
            logger.exception("Eviction of workflow %s run %s failed", run.workflow_type, run.run_id)
            self._unevictable.add(run)
            return
        if completion.HasField("failed"):
            logger.error(
                "Eviction of workflow %s run %s failed: %s",
                run.workflow_type,
                run.run_id,
                completion.failed.failure.message,
            )
            self._unevictable.add(run)

    def _abandon(self, run: _Run, job: _Job) -> bool:
        """Gives up on a stuck activation; its thread tears the instance down when it ends.

        Returns:
            False if the job finished meanwhile (its result is then ready), else True.
        """
        if not self._pool.abandon(job, lambda: self._teardown(run)):
            return False
        run.interrupt()
        return True

    def _teardown(self, run: _Run) -> None:
        """Evicts an abandoned instance, on the thread that ran it, once it returned."""
        self._unevictable.add(run)
        completion = run.instance.activate(_eviction(run.run_id))
        if completion.HasField("failed"):
            logger.error(
                "Eviction of abandoned workflow %s run %s failed: %s",
                run.workflow_type,
                run.run_id,
                completion.failed.failure.message,
            )
        else:
            self._unevictable.discard(run)

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
        details = WorkflowInstanceDetails(
            payload_converter_factory=self._converter._new_payload_converter,
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
        return self._runner_for(defn).create_instance(details)


def _release(loop: _LoopThread, pool: _ThreadPool) -> None:
    """Stops the threads of a garbage-collected bridge."""
    loop.stop()
    pool.release_idle()


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


class _DeadlockError(Exception):
    """A workflow did not yield within the deadlock timeout."""


class _InterruptDeadlockError(BaseException):
    """Raised asynchronously in a thread stuck in workflow code to get it out."""


class _Run:
    """A cached workflow instance; tracks which thread, if any, is inside its `activate`."""

    __slots__ = (
        "_interrupted",
        "_lock",
        "_thread",
        "instance",
        "run_id",
        "workflow_id",
        "workflow_type",
    )

    def __init__(
        self, instance: WorkflowInstance, run_id: str, workflow_id: str, workflow_type: str
    ) -> None:
        self.instance = instance
        self.run_id = run_id
        self.workflow_id = workflow_id
        self.workflow_type = workflow_type
        self._lock = threading.Lock()
        self._thread: int | None = None
        self._interrupted = False

    def activate(self, act: WorkflowActivation) -> WorkflowActivationCompletion:
        with self._lock:
            self._thread = threading.get_ident()
        try:
            return self.instance.activate(act)
        finally:
            with self._lock:
                self._thread = None

    def stack(self) -> str:
        """The current stack of the thread inside `activate`, if any."""
        tid = self._thread
        frame = sys._current_frames().get(tid) if tid is not None else None
        return "".join(traceback.format_stack(frame)) if frame else ""

    def interrupt(self) -> None:
        """Raises `_InterruptDeadlockError` once in the thread if it is still in `activate`."""
        with self._lock:
            if self._thread is not None and not self._interrupted:
                self._interrupted = True
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(self._thread), ctypes.py_object(_InterruptDeadlockError)
                )


class _Job:
    __slots__ = ("arg", "finished", "fn", "future", "on_abandoned")

    def __init__(self, fn: Callable[[Any], Any], arg: Any) -> None:
        self.fn = fn
        self.arg = arg
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.finished = False
        # Set when the caller gave up waiting; run by the job's thread once the job ends.
        self.on_abandoned: Callable[[], None] | None = None


class _ThreadPool:
    """Activation threads that never queue work.

    Each thread has its own inbox and takes a job only when idle, so a thread stuck in a
    deadlocked workflow holds no one else's work. A thread whose job was abandoned (and maybe
    interrupted by an asynchronous exception) finishes that job's cleanup and exits.
    """

    def __init__(self, max_idle: int) -> None:
        self._max_idle = max_idle
        self._idle: list[queue.SimpleQueue[_Job | None]] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def submit(self, fn: Callable[[Any], Any], arg: Any) -> _Job:
        job = _Job(fn, arg)
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
        if inbox is None:
            inbox = queue.SimpleQueue()
            threading.Thread(
                target=self._work,
                args=(inbox,),
                name=f"nomad_workflow_{next(self._ids)}",
                daemon=True,
            ).start()
        inbox.put(job)
        return job

    def release_idle(self) -> None:
        """Ends the idle threads; later jobs start new ones."""
        with self._lock:
            idle, self._idle = self._idle, []
        for inbox in idle:
            inbox.put(None)

    def abandon(self, job: _Job, on_abandoned: Callable[[], None]) -> bool:
        """Marks a job abandoned; its thread runs `on_abandoned` after it, then exits.

        Returns:
            False if the job already finished (nothing is marked), else True.
        """
        with self._lock:
            if job.finished:
                return False
            job.on_abandoned = on_abandoned
            return True

    def _work(self, inbox: queue.SimpleQueue[_Job | None]) -> None:
        job: _Job | None = None
        try:
            while True:
                job = inbox.get()
                if job is None:
                    return
                try:
                    job.future.set_result(job.fn(job.arg))
                except BaseException as err:
                    job.future.set_exception(err)
                with self._lock:
                    job.finished = True
                    if job.on_abandoned is not None:
                        break
                    if len(self._idle) >= self._max_idle:
                        return
                    self._idle.append(inbox)
        except BaseException:
            # Only an interrupt aimed at an abandoned job gets here.
            pass
        # At most one interrupt is sent per job, so a single retry absorbs a late one.
        for _ in range(2):
            try:
                if job is not None and job.on_abandoned is not None:
                    job.on_abandoned()
                return
            except _InterruptDeadlockError:
                continue
            except BaseException:
                logger.exception("Tearing down an abandoned workflow failed")
                return


class _LoopThread:
    """A private event loop on a daemon thread: instance creation and the payload codec."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._serve, name="nomad_workflow_loop", daemon=True).start()

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

    def call(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Calls `fn` on the loop thread (where a loop is running) and waits for its result."""
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def call() -> None:
            try:
                future.set_result(fn(*args))
            except BaseException as err:
                future.set_exception(err)

        self._loop.call_soon_threadsafe(call)
        return future.result()

"""Runs plugin activities for the Rust worker loop.

The Rust side polls activity tasks from sdk-core, checks ``json/plain`` payloads (handed
over as their JSON text, ``bytes``), decodes the others to plain Python values and hands
each task to :class:`ActivityBridge` with a reply object. The bridge converts the values to
the activity's parameter types, runs the unchanged ``temporalio`` activity (``async def`` on
one event loop thread, ``def`` on a bounded thread pool) with temporalio's activity context
set, and reports exactly one outcome per started task through that reply
(``reply(outcome) -> bool``; Rust refuses a second answer, or one for a task it already
failed at shutdown). Rust owns the registry of running tasks and the shutdown timer: it calls
:meth:`ActivityBridge.begin_shutdown`, later :meth:`ActivityBridge.cancel` with
``worker_shutdown``, and fails what still does not answer.

Where ``start`` runs: for activities whose start goes through the event loop (``async def``,
or any with interceptors or a custom converter) Rust queues it on the loop's own thread
through the ``LoopLane`` given to :meth:`ActivityBridge.attach_lane`, their cancels behind
them; a ``def`` activity's start comes from one of the worker's Python threads and goes
straight to its pool thread.

How values are converted is one strategy per bridge (``activity_conversion.Conversion``):
the JSON fast path, where Rust decoded the payloads, or a custom ``DataConverter`` (codec
included). The execution is one path; ``async def`` and ``def`` differ only in how the
body is called.

Outcome dicts:

- ``{"result_json": bytes, "result_value": value}``: success on the JSON fast path; the
  bytes are the JSON text temporalio's Pydantic converter writes for ``value``
  (``pydantic_core.to_json``), sent as the ``json/plain`` payload's data. Rust encodes
  ``value`` the old way where it refuses the text (an integer beyond 64 bits).
- ``{"result": value}``: success on the JSON fast path for ``None`` and where ``to_json``
  fails; ``value`` is JSON-compatible (``pydantic_core.to_jsonable_python``).
- ``{"result_payload": bytes}``: success as a serialized ``temporalio.api.common.v1.Payload``.
  Used on the custom converter path (codec applied), and on the fast path for results that
  the Pydantic converter does not write as ``json/plain`` (``bytes``, protobuf messages,
  ``RawValue``).
- ``{"failure": bytes}``: a serialized ``temporalio.api.failure.v1.Failure``.
- ``{"cancelled": bytes}``: a serialized ``Failure`` with ``canceled_failure_info``.
- ``{"will_complete_async": True}``: the activity called ``activity.raise_complete_async()``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import inspect
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import temporalio.activity
import temporalio.client
import temporalio.common
import temporalio.converter
import temporalio.exceptions
import temporalio.worker

from nomad_actions import _core
from nomad_actions.activity_conversion import (
    Conversion,
    CustomConversion,
    Entry,
    FastConversion,
    Hooks,
    Reply,
    Run,
    cancellation_details,
)

__all__ = ["DEFAULT_MAX_THREADS", "ActivityBridge"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_THREADS = min(32, (os.cpu_count() or 1) + 4)
"""Default size of the pool for ``def`` activities: the stdlib ThreadPoolExecutor default.

Sync activities beyond this many wait in the pool's queue (their start-to-close timer is
already running), so keep sdk-core's ``max_outstanding_activities`` in line with it.
"""


class _ThreadCanceller:
    """Raises ``temporalio.exceptions.CancelledError`` inside a pool thread, as temporalio does.

    temporalio's worker raises the error asynchronously (``PyThreadState_SetAsyncExc``, here
    through ``_core.interrupt_thread``) as soon as the cancel arrives, unless the activity is
    inside ``shield_thread_cancel_exception()``, in which case it is raised when the
    outermost shield exits. The error is delivered when the thread next runs Python
    bytecode, so a blocking C call (``time.sleep``) finishes first. At most one error is
    ever sent per activity.
    """

    __slots__ = ("_fired", "_lock", "_pending", "_shield_depth", "_thread_id")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread_id: int | None = None
        self._pending = False
        self._fired = False
        self._shield_depth = 0

    def arm(self) -> None:
        with self._lock:
            self._thread_id = threading.get_ident()
            self._fire_unlocked()

    def disarm(self) -> None:
        with self._lock:
            thread_id, self._thread_id = self._thread_id, None
            if self._fired and thread_id is not None:
                # Drop an error that was sent but not yet raised, so it cannot escape into
                # the bridge's own code or into the next task on this pool thread.
                _core.interrupt_thread(thread_id, None)

    def raise_in_thread(self) -> None:
        with self._lock:
            self._pending = True
            self._fire_unlocked()

    @contextlib.contextmanager
    def shielded(self) -> Iterator[None]:
        with self._lock:
            self._shield_depth += 1
        try:
            yield None
        finally:
            with self._lock:
                self._shield_depth -= 1
                self._fire_unlocked()

    def _fire_unlocked(self) -> None:
        if self._thread_id is None or self._shield_depth or not self._pending or self._fired:
            return
        self._pending = False
        self._fired = True
        _core.interrupt_thread(self._thread_id, temporalio.exceptions.CancelledError)


# ---------------------------------------------------------------------- the bridge


class ActivityBridge:
    """Runs ``@activity.defn`` functions for activity tasks polled by the Rust worker.

    ``async def`` activities run on one asyncio event loop owned by the bridge (a daemon
    thread); ``def`` activities run on a ``ThreadPoolExecutor`` with ``max_threads`` threads.
    Inside both, temporalio's activity API works as under the official worker.

    Args:
        activities: Functions (or callable instances) decorated with ``@activity.defn``.
        namespace: Namespace of the worker, used when a task does not name one.
        task_queue: Task queue of the worker, reported in ``activity.info()``.
        heartbeat: ``heartbeat(task_token, details)``, called for each
            ``activity.heartbeat(*details)``, in order. On the fast path ``details`` are
            JSON-compatible values; with a ``data_converter`` they are serialized, encoded
            ``Payload`` bytes (and only the newest pending heartbeat is sent, as temporalio
            does). Must not block.
        complete: ``complete(task_token, outcome)``, for tasks started without a reply
            (the bridge used on its own); the Rust worker passes a reply with each task.
        max_threads: Threads for ``def`` activities; defaults to :data:`DEFAULT_MAX_THREADS`.
        data_converter: ``None`` for the JSON fast path, where the Rust side passes decoded
            JSON values and gets JSON values back (same JSON as temporalio's Pydantic
            converter). Otherwise task arguments (and heartbeat details in ``info``) are
            serialized ``Payload`` bytes, decoded and encoded with this converter and codec.
        client: Returned by ``activity.client()`` in ``async def`` activities.
        interceptors: temporalio worker interceptors; their ``intercept_activity`` chain
            wraps every activity, ``async def`` and ``def``, as in the official worker: the
            chain runs on the bridge's event loop with ``activity.info()`` set, and a ``def``
            activity then runs on the pool in a copy of the chain's contextvars.

    Raises:
        TypeError: An activity is not decorated, is a class, or there is more than one
            dynamic activity.
        ValueError: Two activities share a name.
    """

    def __init__(
        self,
        activities: Sequence[Callable],
        *,
        namespace: str,
        task_queue: str,
        heartbeat: Callable[[bytes, list], None],
        complete: Callable[[bytes, dict], object] | None = None,
        max_threads: int = DEFAULT_MAX_THREADS,
        data_converter: temporalio.converter.DataConverter | None = None,
        client: temporalio.client.Client | None = None,
        interceptors: Sequence[temporalio.worker.Interceptor] = (),
    ) -> None:
        if max_threads < 1:
            raise ValueError("max_threads must be at least 1")
        self._complete = complete
        self._client = client
        self._interceptors = list(interceptors)
        self._entries: dict[str, Entry] = {}
        self._dynamic: Entry | None = None
        for fn in activities:
            defn = temporalio.activity._Definition.must_from_callable(fn)
            if inspect.isclass(fn):
                raise TypeError(f"Activity named {defn.name} is a class instead of an instance")
            if defn.name is None:
                if self._dynamic is not None:
                    raise TypeError("More than one dynamic activity")
                self._dynamic = Entry(defn)
            elif defn.name in self._entries:
                raise ValueError(f"More than one activity named {defn.name}")
            else:
                self._entries[defn.name] = Entry(defn)

        self._lock = threading.Lock()
        self._running: dict[bytes, Run] = {}
        self._closing = False
        self._closed = False

        self._shutdown_thread_event = threading.Event()
        self._shutdown_async_event = asyncio.Event()
        self._async_shutdown_event = temporalio.common._CompositeEvent(
            thread_event=self._shutdown_thread_event, async_event=self._shutdown_async_event
        )
        self._sync_shutdown_event = temporalio.common._CompositeEvent(
            thread_event=self._shutdown_thread_event, async_event=None
        )

        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_threads, thread_name_prefix="nomad-activity"
        )
        # Made only once the arguments are checked: a refused bridge leaves no loop open.
        self._loop = asyncio.new_event_loop()
        hooks = Hooks(
            namespace=namespace,
            task_queue=task_queue,
            loop=self._loop,
            send_heartbeat=heartbeat,
            heartbeat_failed=self._heartbeat_failed,
        )
        # Chosen once: every activity of this bridge converts the same way.
        self._conversion: Conversion = (
            FastConversion(hooks)
            if data_converter is None
            else CustomConversion(hooks, data_converter)
        )

        self._lane: _core.LoopLane | None = None
        self._loop_ident: int | None = None
        self._loop_thread = threading.Thread(
            target=self._run_loop, name="nomad-activity-loop", daemon=True
        )
        self._loop_thread.start()

    # ------------------------------------------------------------------ public API

    @property
    def activity_types(self) -> list[str]:
        """Names of the registered activities, sorted (a dynamic activity has none)."""
        return sorted(self._entries)

    def running_count(self) -> int:
        """Number of started tasks whose outcome has not been reported yet."""
        with self._lock:
            return len(self._running)

    def start(
        self,
        task_token: bytes,
        activity_type: str,
        args: list,
        info: dict,
        reply: Reply | None = None,
    ) -> None:
        """Start one activity task; returns at once, the outcome goes to ``reply``.

        Args:
            task_token: The task token from sdk-core.
            activity_type: The activity's registered name.
            args: On the fast path, per argument the JSON text (``bytes``) of a ``json/plain``
                payload or the decoded value of another; serialized ``Payload`` bytes with a
                ``data_converter``.
            info: Task fields decoded from the coresdk ``ActivityTask.start``: activity_id,
                activity_type, attempt, workflow_id, workflow_run_id, workflow_type,
                workflow_namespace, task_queue, heartbeat_timeout, schedule_to_close_timeout,
                start_to_close_timeout (seconds or None), scheduled_time,
                current_attempt_scheduled_time, started_time (epoch seconds),
                heartbeat_details, is_local, retry_policy (dict or None). Missing keys get
                defaults; the worker's own task queue is what ``activity.info()`` shows.
            reply: Called once with the outcome dict (the Rust worker's ``ActivityReply``);
                None reports through the ``complete`` callback instead.

        Raises:
            ValueError: The token is already running, or there is neither a ``reply`` nor
                a ``complete`` callback to report to.
        """
        if reply is None and self._complete is None:
            raise ValueError(
                "ActivityBridge.start needs a reply, or a complete callback on the bridge"
            )
        entry = self._entries.get(activity_type, self._dynamic)
        run = Run(task_token, entry, args, info, reply)
        if entry is not None:
            # Events exist before the run is visible to cancel(), so no cancel is lost.
            run.cancelled_event = temporalio.common._CompositeEvent(
                thread_event=threading.Event(),
                async_event=asyncio.Event() if entry.is_async else None,
            )
            if not entry.is_async and not entry.defn.no_thread_cancel_exception:
                run.raiser = _ThreadCanceller()
        with self._lock:
            if task_token in self._running:
                raise ValueError(f"Activity task {task_token!r} is already running")
            self._running[task_token] = run
            closing = self._closing
        if closing:
            self._fail_now(
                run, temporalio.exceptions.ApplicationError("Worker shutting down"), codec=False
            )
            return
        if entry is None:
            names = ", ".join(sorted(self._entries))
            err = temporalio.exceptions.ApplicationError(
                f"Activity function {activity_type} for workflow {info.get('workflow_id')} "
                f"is not registered on this worker, available activities: {names}",
                type="NotFoundError",
            )
            self._fail_now(run, err)
            return
        self._conversion.prepare(run)
        try:
            if not self._starts_on_loop(entry):
                # Nothing here needs the event loop: the whole task runs on its pool thread.
                self._pool.submit(contextvars.Context().run, self._run_inline, run)
            elif threading.get_ident() == self._loop_ident:
                self._spawn(run)  # called from the lane, on the loop itself
            else:
                self._loop.call_soon_threadsafe(self._spawn, run)
        except RuntimeError as err:  # loop closed or pool shut down
            self._fail_now(run, err, codec=False)

    def attach_lane(self, lane: _core.LoopLane) -> tuple[set[str], set[str], bool]:
        """Lets Rust start activities on the event loop's own thread (called once, by the
        Rust worker): the loop runs ``lane``'s jobs when its descriptor turns readable, which
        saves each ``async def`` start a hand-off through another Python thread.

        Returns:
            The activity types whose start runs on the loop, those whose start does not
            (a ``def`` activity goes straight to its pool thread), and whether the dynamic
            activity's does.
        """

        def register() -> None:
            if not self._loop.is_closed():
                self._loop.add_reader(lane.fileno(), lane.run_pending)

        self._lane = lane
        try:
            self._loop.call_soon_threadsafe(register)
        except RuntimeError:  # the loop has closed: the lane stays unused
            lane.close()
        on_loop = {name for name, entry in self._entries.items() if self._starts_on_loop(entry)}
        dynamic = self._dynamic is not None and self._starts_on_loop(self._dynamic)
        return on_loop, set(self._entries) - on_loop, dynamic

    def _starts_on_loop(self, entry: Entry) -> bool:
        """Whether a start of this activity goes through the event loop."""
        return not (self._conversion.inline and not entry.is_async and not self._interceptors)

    def run_coroutine(self, coro: Any, timeout: float) -> Any:
        """Runs a coroutine on the event loop ``async def`` activities run on, and waits.

        For set-up whose clients bind to the loop they are made on (NOMAD's async MongoDB).

        Raises:
            TimeoutError: It did not finish within ``timeout`` seconds (it is cancelled).
        """
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"did not finish within {timeout:g} s") from None

    def cancel(self, task_token: bytes, flags: Mapping[str, bool]) -> None:
        """Cancel a running activity; unknown or finished tokens are ignored.

        ``async def`` activities get their asyncio task cancelled. ``def`` activities see
        ``activity.is_cancelled()`` turn True and, unless declared with
        ``@activity.defn(no_thread_cancel_exception=True)``, get
        ``temporalio.exceptions.CancelledError`` raised in their thread, as the official
        worker does.

        Args:
            task_token: The task token from sdk-core.
            flags: Why, as the fields of ``activity.ActivityCancellationDetails`` (Rust's
                ``CancelFlags``): ``cancel_requested``, ``timed_out``, ``not_found``,
                ``worker_shutdown``, ``paused``, ``reset``; several may be set.

        Raises:
            ValueError: A flag that ``ActivityCancellationDetails`` does not have.
        """
        details = cancellation_details(flags)
        with self._lock:
            run = self._running.get(task_token)
        if run is None:
            logger.debug("Ignoring cancel for unknown activity task %r", task_token)
            return
        self._request_cancel(run, details)

    def begin_shutdown(self) -> None:
        """The worker is shutting down: ``activity.is_worker_shutdown()`` turns True,
        ``activity.wait_for_worker_shutdown()`` returns, and tasks started from now on fail
        at once. Running tasks go on: Rust decides, after its grace period, to cancel them
        (and fails those that ignore the cancel). Idempotent."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
        self._shutdown_thread_event.set()
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._shutdown_async_event.set)

    def close(self) -> None:
        """Stop the event loop and the thread pool (once the worker stopped).

        Waits for the pool only when no task is still running: one that ignored its
        cancel at shutdown (and that Rust failed) keeps its thread until it lets go.
        Idempotent.
        """
        self.begin_shutdown()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            clean = not self._running
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(5.0 if clean else 1.0)
        self._pool.shutdown(wait=clean, cancel_futures=True)

    # ------------------------------------------------------------------ execution

    def _run_loop(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        self._loop_ident = threading.get_ident()
        try:
            loop.run_forever()
            # Jobs still queued run now, while the loop can still run what they schedule
            # (the bridge is closing: a start among them fails at once).
            if self._lane is not None:
                with contextlib.suppress(ValueError, OSError):
                    loop.remove_reader(self._lane.fileno())
                self._lane.close()
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()

    def _run_inline(self, run: Run) -> None:
        """A ``def`` activity with an inline conversion, start to end on its pool thread."""
        conversion = self._conversion
        try:
            args = conversion.decode_now(run)
            self._set_context(run, conversion.payload_converter(run))
            ok, value = self._call_sync(run, args)
        except BaseException as err:
            ok, value = False, err
        run.done = True
        self._finish(run, conversion.encode_now(run, ok, value))

    def _spawn(self, run: Run) -> None:
        """On the loop: the task runs :meth:`_body`; its end reports the outcome."""
        run.task = self._loop.create_task(self._body(run))
        run.task.add_done_callback(functools.partial(self._body_done, run))
        if run.cancel_requested and run.entry.is_async:  # type: ignore[union-attr]
            run.task.cancel("Activity cancelled")

    async def _body(self, run: Run) -> tuple[bool, Any]:
        # Runs in the task's own copy of the loop's context, so the activity context (and
        # what interceptors bind in contextvars) stays with this activity.
        try:
            args = await self._conversion.decode(run)
            self._set_context(run, self._conversion.payload_converter(run))
            if self._interceptors:
                return True, await self._intercepted(run, args)
            return True, await self._call(run, run.entry.defn.fn, args)  # type: ignore[union-attr]
        except BaseException as err:
            return False, err

    async def _call(self, run: Run, fn: Callable, args: Sequence[Any], executor: Any = None) -> Any:
        """The one difference between ``async def`` and ``def``: how the body is called."""
        if run.entry.is_async:  # type: ignore[union-attr]
            return await fn(*args)
        # The task's contextvars (temporalio's activity context among them) go with the
        # call, as the official worker passes them to its thread pool.
        ctx = contextvars.copy_context()
        ok, value = await asyncio.wrap_future(
            (executor or self._pool).submit(ctx.run, self._call_sync, run, args, fn)
        )
        if not ok:
            raise value
        return value

    async def _intercepted(self, run: Run, args: list) -> Any:
        entry: Entry = run.entry  # type: ignore[assignment]
        impl: temporalio.worker.ActivityInboundInterceptor = _InboundImpl(self, run)
        for interceptor in reversed(self._interceptors):
            impl = interceptor.intercept_activity(impl)
        impl.init(_OutboundImpl(self, run))
        return await impl.execute_activity(
            temporalio.worker.ExecuteActivityInput(
                fn=entry.defn.fn,
                args=args,
                executor=None if entry.is_async else self._pool,
                headers={},
            )
        )

    def _body_done(self, run: Run, task: asyncio.Task) -> None:
        run.done = True
        if task.cancelled():  # cancelled before the body ran
            ok, value = False, asyncio.CancelledError()
        else:
            ok, value = task.result()
        if self._conversion.inline:
            self._finish(run, self._conversion.encode_now(run, ok, value))
        elif not self._closed:  # after a forced shutdown there is nothing left to report
            self._loop.create_task(self._report(run, ok, value))

    async def _report(self, run: Run, ok: bool, value: Any) -> None:
        self._finish(run, await self._conversion.encode(run, ok, value))

    def _call_sync(self, run: Run, args: Sequence[Any], fn: Any = None) -> tuple[bool, Any]:
        fn = fn or run.entry.defn.fn  # type: ignore[union-attr]
        raiser = run.raiser
        try:
            if raiser is None:
                return True, fn(*args)
            if run.cancel_requested:  # cancelled while queued: do not start it at all
                return False, temporalio.exceptions.CancelledError("Cancelled")
            raiser.arm()
            try:
                value = fn(*args)
            finally:
                raiser.disarm()
        except BaseException as err:
            return False, err
        return True, value

    # ------------------------------------------------------------------ bookkeeping

    def _finish(self, run: Run, outcome: dict) -> None:
        """Report ``outcome`` unless this run was already reported (exactly once)."""
        with self._lock:
            if self._running.get(run.token) is not run:
                return
            del self._running[run.token]
            run.done = True
        try:
            if run.reply is None:
                self._complete(run.token, outcome)  # type: ignore[misc]
            elif not run.reply(outcome):
                # Rust failed it at shutdown (it ignored its cancel): this answer is late.
                logger.info(
                    "Activity %s finished after the worker gave up on it; outcome dropped",
                    run.raw_info.get("activity_type"),
                )
        except Exception:
            logger.exception("reporting the outcome of activity task %r failed", run.token)

    def _fail_now(self, run: Run, err: BaseException, *, codec: bool = True) -> None:
        """Report a failure built outside the activity (unknown type, shutdown)."""
        if codec and not self._conversion.inline:
            try:
                self._loop.call_soon_threadsafe(
                    lambda: self._loop.create_task(self._report(run, False, err))
                )
                return
            except RuntimeError:
                pass
        self._finish(run, {"failure": self._conversion.failure_bytes(err)})

    def _request_cancel(
        self,
        run: Run,
        details: temporalio.activity.ActivityCancellationDetails | None,
        heartbeat_error: BaseException | None = None,
    ) -> None:
        with self._lock:
            if run.done or run.cancel_requested:
                return
            run.cancel_requested = True
            if details is not None:
                run.details.details = details
                run.cancelled_by_request = details.cancel_requested or details.worker_shutdown
            run.heartbeat_error = heartbeat_error
        if run.cancelled_event is None:
            return
        run.cancelled_event.thread_event.set()  # type: ignore[union-attr]
        if run.cancelled_event.async_event is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._cancel_on_loop, run)
        elif run.raiser is not None:
            # Last: when the caller is the activity's own thread, the error fires right here.
            run.raiser.raise_in_thread()

    def _cancel_on_loop(self, run: Run) -> None:
        run.cancelled_event.async_event.set()  # type: ignore[union-attr]
        if run.task is not None and not run.done:
            run.task.cancel("Activity cancelled")

    # ------------------------------------------------------------------ activity context

    def _set_context(self, run: Run, payload_converter: Any) -> None:
        info = run.info
        is_async = run.cancelled_event.async_event is not None  # type: ignore[union-attr]
        temporalio.activity._Context.set(
            temporalio.activity._Context(
                info=lambda: info,  # type: ignore[arg-type,return-value]
                heartbeat=lambda *details: self._heartbeat(run, details),
                cancelled_event=run.cancelled_event,  # type: ignore[arg-type]
                worker_shutdown_event=(
                    self._async_shutdown_event if is_async else self._sync_shutdown_event
                ),
                shield_thread_cancel_exception=None if run.raiser is None else run.raiser.shielded,
                payload_converter_class_or_instance=payload_converter,
                runtime_metric_meter=temporalio.common.MetricMeter.noop,
                # As temporalio: the client is only offered to `async def` activities.
                client=self._client if is_async else None,
                cancellation_details=run.details,
            )
        )

    def _heartbeat(self, run: Run, details: tuple) -> None:
        if not run.done:
            self._conversion.heartbeat(run, details)

    def _heartbeat_failed(self, run: Run, err: BaseException) -> None:
        logger.warning("Cancelling activity because recording a heartbeat failed", exc_info=err)
        self._request_cancel(run, None, heartbeat_error=err)


class _InboundImpl(temporalio.worker.ActivityInboundInterceptor):
    """The end of the interceptor chain: runs the activity function."""

    def __init__(self, bridge: ActivityBridge, run: Run) -> None:
        # As temporalio's own end of the chain: there is no next interceptor to keep.
        self._bridge = bridge
        self._run = run

    def init(self, outbound: temporalio.worker.ActivityOutboundInterceptor) -> None:
        context = temporalio.activity._Context.current()
        context.info = outbound.info
        context.heartbeat = outbound.heartbeat

    async def execute_activity(self, input: temporalio.worker.ExecuteActivityInput) -> Any:
        return await self._bridge._call(self._run, input.fn, input.args, input.executor)


class _OutboundImpl(temporalio.worker.ActivityOutboundInterceptor):
    """The end of the outbound chain: the run's info and heartbeat."""

    def __init__(self, bridge: ActivityBridge, run: Run) -> None:
        self._bridge = bridge
        self._run = run

    def info(self) -> temporalio.activity.Info:
        assert self._run.info is not None
        return self._run.info

    def heartbeat(self, *details: Any) -> None:
        self._bridge._heartbeat(self._run, details)

"""Runs plugin activities for the Rust worker loop.

The Rust side polls activity tasks from sdk-core, decodes ``json/plain`` payloads to plain
Python values and hands each task to :class:`ActivityBridge` with a reply object. The bridge
converts the values to the activity's parameter types, runs the unchanged ``temporalio``
activity (``async def`` on one event loop thread, ``def`` on a bounded thread pool) with
temporalio's activity context set, and reports exactly one outcome per started task through
that reply (``reply(outcome) -> bool``; Rust refuses a second answer, or one for a task it
already failed at shutdown). Rust owns the registry of running tasks and the shutdown
timer: it calls :meth:`ActivityBridge.begin_shutdown`, later :meth:`ActivityBridge.cancel`
with ``worker_shutdown``, and fails what still does not answer.

How values are converted is one strategy per bridge (:class:`_Conversion`): the JSON fast
path, where Rust decoded the payloads, or a custom ``DataConverter`` (codec included). The
execution is one path; ``async def`` and ``def`` differ only in how the body is called.

Outcome dicts:

- ``{"result": value}``: success on the JSON fast path; ``value`` is JSON-compatible and is
  exactly what temporalio's Pydantic converter would put in the ``json/plain`` payload.
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
import dataclasses
import functools
import inspect
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import google.protobuf.message
import pydantic
import pydantic_core
import temporalio.activity
import temporalio.api.common.v1
import temporalio.api.failure.v1
import temporalio.client
import temporalio.common
import temporalio.converter
import temporalio.exceptions
import temporalio.worker
from temporalio.contrib.pydantic import pydantic_data_converter

from nomad_actions import _core

__all__ = ["DEFAULT_MAX_THREADS", "ActivityBridge"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_THREADS = min(32, (os.cpu_count() or 1) + 4)
"""Default size of the pool for ``def`` activities: the stdlib ThreadPoolExecutor default.

Sync activities beyond this many wait in the pool's queue (their start-to-close timer is
already running), so keep sdk-core's ``max_outstanding_activities`` in line with it.
"""

_CANCELLED_ERRORS = (asyncio.CancelledError, temporalio.exceptions.CancelledError)
_FAST_CONVERTER = pydantic_data_converter

# The flags Rust passes with a cancel are these fields, by name.
_CANCEL_FLAGS = frozenset(
    f.name for f in dataclasses.fields(temporalio.activity.ActivityCancellationDetails)
)

Reply = Callable[[dict], bool]
"""``reply(outcome) -> bool``: reports a task's outcome; False when it was refused."""


def cancellation_details(
    flags: Mapping[str, bool],
) -> temporalio.activity.ActivityCancellationDetails:
    """temporalio's details for the cancel flags Rust sends (``CancelFlags`` in activities.rs).

    No flag set counts as a cancel request, as an unknown reason does in Rust.

    Raises:
        ValueError: A flag that ``ActivityCancellationDetails`` does not have.
    """
    unknown = set(flags) - _CANCEL_FLAGS
    if unknown:
        raise ValueError(
            f"unknown activity cancel flags {sorted(unknown)}; expected some of "
            f"{sorted(_CANCEL_FLAGS)}"
        )
    set_flags = {name: True for name, value in flags.items() if value}
    return temporalio.activity.ActivityCancellationDetails(
        **(set_flags or {"cancel_requested": True})
    )


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


class _Entry:
    """A registered activity with its lazily built argument adapters."""

    __slots__ = ("adapters", "defn", "is_async")

    def __init__(self, defn: temporalio.activity._Definition) -> None:
        self.defn = defn
        self.is_async = defn.is_async
        self.adapters: list[pydantic.TypeAdapter | None] | None = None

    def arg_adapters(self) -> list[pydantic.TypeAdapter | None]:
        adapters = self.adapters
        if adapters is None:
            adapters = [
                None
                if hint is None or hint is Any or hint is object
                else pydantic.TypeAdapter(hint)
                for hint in self.defn.arg_types or ()
            ]
            self.adapters = adapters
        return adapters


class _Run:
    """State of one started activity task."""

    __slots__ = (
        "cancel_requested",
        "cancelled_by_request",
        "cancelled_event",
        "converter",
        "details",
        "done",
        "entry",
        "hb_lock",
        "hb_pending",
        "hb_task",
        "heartbeat_error",
        "info",
        "raiser",
        "raw_args",
        "raw_info",
        "reply",
        "task",
        "token",
    )

    def __init__(
        self,
        token: bytes,
        entry: _Entry | None,
        raw_args: list,
        raw_info: dict,
        reply: Reply | None,
    ) -> None:
        self.token = token
        self.entry = entry
        self.raw_args = raw_args
        self.raw_info = raw_info
        self.reply = reply
        self.info: temporalio.activity.Info | None = None
        # The custom converter with this task's serialization context (custom path only).
        self.converter: temporalio.converter.DataConverter | None = None
        self.task: asyncio.Task | None = None
        self.raiser: _ThreadCanceller | None = None
        self.cancelled_event: temporalio.common._CompositeEvent | None = None
        self.details = temporalio.activity._ActivityCancellationDetailsHolder()
        self.cancel_requested = False
        self.cancelled_by_request = False
        self.heartbeat_error: BaseException | None = None
        self.done = False
        self.hb_pending: Sequence[Any] | None = None
        self.hb_task: asyncio.Task | None = None
        self.hb_lock: asyncio.Lock | None = None


# ---------------------------------------------------------------------- conversion strategy


class _Conversion:
    """How one bridge turns task inputs into arguments and outcomes into outcome dicts.

    ``inline`` conversions are plain calls that may run on any thread (a ``def`` activity
    then runs start to end on its pool thread); the others need the bridge's event loop.
    """

    inline: bool

    def __init__(self, bridge: ActivityBridge) -> None:
        self._bridge = bridge

    def prepare(self, run: _Run) -> None:
        """Per-task set-up, before the task runs anywhere."""

    def payload_converter(self, run: _Run) -> Any:
        """The payload converter ``activity.payload_converter()`` returns."""
        raise NotImplementedError

    def decode_now(self, run: _Run) -> list:
        """Set ``run.info`` and return the arguments (``inline`` conversions only)."""
        raise NotImplementedError

    async def decode(self, run: _Run) -> list:
        """Set ``run.info`` and return the arguments."""
        return self.decode_now(run)

    def encode_now(self, run: _Run, ok: bool, value: Any) -> dict:
        """The outcome dict for a result (``ok``) or an exception (``inline`` only)."""
        raise NotImplementedError

    async def encode(self, run: _Run, ok: bool, value: Any) -> dict:
        """The outcome dict for a result (``ok``) or an exception."""
        return self.encode_now(run, ok, value)

    def heartbeat(self, run: _Run, details: tuple) -> None:
        """Send one ``activity.heartbeat(*details)``; must not block."""
        raise NotImplementedError

    def failure_bytes(self, err: BaseException) -> bytes:
        """A failure built outside the activity, without a codec."""
        return _failure_bytes(self._bridge._data_converter or _FAST_CONVERTER, err)


class _FastConversion(_Conversion):
    """The JSON fast path: Rust decoded the payloads; pydantic adapts values to the hints."""

    inline = True

    def __init__(self, bridge: ActivityBridge) -> None:
        super().__init__(bridge)
        self._payload_converter = _FAST_CONVERTER.payload_converter

    def payload_converter(self, run: _Run) -> Any:
        return self._payload_converter

    def decode_now(self, run: _Run) -> list:
        run.info = self._bridge._build_info(run, run.raw_info.get("heartbeat_details") or ())
        entry: _Entry = run.entry  # type: ignore[assignment]
        values = run.raw_args
        defn = entry.defn
        if defn.name is None:
            return [_raw_values(values)]
        # As temporalio: hints apply only when the counts match; unannotated params stay raw.
        if not defn.arg_types or len(defn.arg_types) != len(values):
            return values
        try:
            return [
                value if adapter is None else _validate(adapter, value)
                for adapter, value in zip(entry.arg_adapters(), values, strict=True)
            ]
        except Exception as err:
            raise temporalio.exceptions.ApplicationError("Failed decoding arguments") from err

    def encode_now(self, run: _Run, ok: bool, value: Any) -> dict:
        try:
            if ok:
                if isinstance(
                    value, (bytes, google.protobuf.message.Message, temporalio.common.RawValue)
                ):
                    [payload] = self._payload_converter.to_payloads([value])
                    return {"result_payload": payload.SerializeToString()}
                return {"result": pydantic_core.to_jsonable_python(value)}
            kind, err = self._bridge._classify(run, value)
            if kind == "will_complete_async":
                return {kind: True}
            return {kind: _failure_bytes(_FAST_CONVERTER, err)}
        except Exception as err:
            if ok:  # the result could not be serialized: a failure, as in temporalio
                return self.encode_now(run, False, err)
            return {"failure": _fallback_failure(err)}

    def heartbeat(self, run: _Run, details: tuple) -> None:
        try:
            values = [pydantic_core.to_jsonable_python(d) for d in details]
            self._bridge._heartbeat_cb(run.token, values)
        except Exception as err:
            self._bridge._heartbeat_failed(run, err)


class _CustomConversion(_Conversion):
    """A custom ``DataConverter``: inputs and heartbeat details arrive as serialized
    ``Payload`` bytes; decoding and encoding (codec included) run on the event loop."""

    inline = False

    def __init__(
        self, bridge: ActivityBridge, converter: temporalio.converter.DataConverter
    ) -> None:
        super().__init__(bridge)
        self._converter = converter

    def prepare(self, run: _Run) -> None:
        raw = run.raw_info
        context = temporalio.converter.ActivitySerializationContext(
            namespace=raw.get("workflow_namespace") or self._bridge._namespace,
            activity_id=raw.get("activity_id"),
            activity_type=raw.get("activity_type"),
            activity_task_queue=self._bridge._task_queue,
            workflow_id=raw.get("workflow_id") or None,
            workflow_type=raw.get("workflow_type") or None,
            is_local=bool(raw.get("is_local", False)),
        )
        run.converter = self._converter.with_context(context)

    def _of(self, run: _Run) -> temporalio.converter.DataConverter:
        return run.converter or self._converter

    def payload_converter(self, run: _Run) -> Any:
        return self._of(run).payload_converter

    async def decode(self, run: _Run) -> list:
        converter = self._of(run)
        defn = run.entry.defn  # type: ignore[union-attr]
        raw_details = run.raw_info.get("heartbeat_details") or ()
        try:
            details = await converter.decode([_payload(d) for d in raw_details])
        except Exception as err:
            raise temporalio.exceptions.ApplicationError(
                "Failed decoding heartbeat details", non_retryable=True
            ) from err
        run.info = self._bridge._build_info(run, details)
        payloads = [_payload(a) for a in run.raw_args]
        if defn.name is None:
            return [[temporalio.common.RawValue(p) for p in payloads]]
        hints = defn.arg_types
        if hints is not None and len(hints) != len(payloads):
            hints = None
        try:
            return await converter.decode(payloads, type_hints=hints) if payloads else []
        except Exception as err:
            raise temporalio.exceptions.ApplicationError("Failed decoding arguments") from err

    async def encode(self, run: _Run, ok: bool, value: Any) -> dict:
        converter = self._of(run)
        if run.hb_task is not None:  # the last heartbeat goes out before the outcome
            with contextlib.suppress(BaseException):
                await run.hb_task
        try:
            if ok:
                try:
                    [payload] = await converter.encode([value])
                    return {"result_payload": payload.SerializeToString()}
                except Exception as err:
                    value = err
            kind, err = self._bridge._classify(run, value)
            if kind == "will_complete_async":
                return {kind: True}
            failure = temporalio.api.failure.v1.Failure()
            await converter.encode_failure(err, failure)
            return {kind: failure.SerializeToString()}
        except Exception as err:
            return {"failure": _fallback_failure(err)}

    def heartbeat(self, run: _Run, details: tuple) -> None:
        with contextlib.suppress(RuntimeError):
            self._bridge._loop.call_soon_threadsafe(self._queue_heartbeat, run, details)

    def _queue_heartbeat(self, run: _Run, details: tuple) -> None:
        # The newest heartbeat replaces one not yet sent; one send at a time keeps order.
        run.hb_pending = details
        run.hb_task = self._bridge._loop.create_task(self._send_heartbeat(run))

    async def _send_heartbeat(self, run: _Run) -> None:
        if run.hb_lock is None:
            run.hb_lock = asyncio.Lock()
        async with run.hb_lock:
            details, run.hb_pending = run.hb_pending, None
            if details is None:
                return
            try:
                payloads = await self._of(run).encode(list(details)) if details else []
                self._bridge._heartbeat_cb(run.token, [p.SerializeToString() for p in payloads])
            except Exception as err:
                if not run.done:
                    self._bridge._heartbeat_failed(run, err)


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
        self._namespace = namespace
        self._task_queue = task_queue
        self._complete = complete
        self._heartbeat_cb = heartbeat
        self._data_converter = data_converter
        self._client = client
        self._interceptors = list(interceptors)
        # Chosen once: every activity of this bridge converts the same way.
        self._conversion: _Conversion = (
            _FastConversion(self)
            if data_converter is None
            else _CustomConversion(self, data_converter)
        )

        self._entries: dict[str, _Entry] = {}
        self._dynamic: _Entry | None = None
        for fn in activities:
            defn = temporalio.activity._Definition.must_from_callable(fn)
            if inspect.isclass(fn):
                raise TypeError(f"Activity named {defn.name} is a class instead of an instance")
            if defn.name is None:
                if self._dynamic is not None:
                    raise TypeError("More than one dynamic activity")
                self._dynamic = _Entry(defn)
            elif defn.name in self._entries:
                raise ValueError(f"More than one activity named {defn.name}")
            else:
                self._entries[defn.name] = _Entry(defn)

        self._lock = threading.Lock()
        self._running: dict[bytes, _Run] = {}
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
        self._loop = asyncio.new_event_loop()
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
            args: Decoded JSON values (fast path) or serialized ``Payload`` bytes (with a
                ``data_converter``).
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
        run = _Run(task_token, entry, args, info, reply)
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
            if self._conversion.inline and not entry.is_async and not self._interceptors:
                # Nothing here needs the event loop: the whole task runs on its pool thread.
                self._pool.submit(contextvars.Context().run, self._run_inline, run)
            else:
                self._loop.call_soon_threadsafe(self._spawn, run)
        except RuntimeError as err:  # loop closed or pool shut down
            self._fail_now(run, err, codec=False)

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
        try:
            loop.run_forever()
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()

    def _run_inline(self, run: _Run) -> None:
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

    def _spawn(self, run: _Run) -> None:
        """On the loop: the task runs :meth:`_body`; its end reports the outcome."""
        run.task = self._loop.create_task(self._body(run))
        run.task.add_done_callback(functools.partial(self._body_done, run))
        if run.cancel_requested and run.entry.is_async:  # type: ignore[union-attr]
            run.task.cancel("Activity cancelled")

    async def _body(self, run: _Run) -> tuple[bool, Any]:
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

    async def _call(
        self, run: _Run, fn: Callable, args: Sequence[Any], executor: Any = None
    ) -> Any:
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

    async def _intercepted(self, run: _Run, args: list) -> Any:
        entry: _Entry = run.entry  # type: ignore[assignment]
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

    def _body_done(self, run: _Run, task: asyncio.Task) -> None:
        run.done = True
        if task.cancelled():  # cancelled before the body ran
            ok, value = False, asyncio.CancelledError()
        else:
            ok, value = task.result()
        if self._conversion.inline:
            self._finish(run, self._conversion.encode_now(run, ok, value))
        elif not self._closed:  # after a forced shutdown there is nothing left to report
            self._loop.create_task(self._report(run, ok, value))

    async def _report(self, run: _Run, ok: bool, value: Any) -> None:
        self._finish(run, await self._conversion.encode(run, ok, value))

    def _call_sync(self, run: _Run, args: Sequence[Any], fn: Any = None) -> tuple[bool, Any]:
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

    def _classify(self, run: _Run, err: BaseException) -> tuple[str, BaseException]:
        """Map an activity's exception to an outcome kind, as temporalio's worker does."""
        if isinstance(err, temporalio.activity._CompleteAsyncError):
            return "will_complete_async", err
        if isinstance(err, _CANCELLED_ERRORS) and run.cancel_requested:
            details = run.details.details
            if run.heartbeat_error is not None:
                return "failure", run.heartbeat_error
            if details is not None and details.paused:
                return "failure", temporalio.exceptions.ApplicationError(
                    "Unhandled activity cancel error produced by activity pause",
                    type="ActivityPause",
                )
            if details is not None and details.reset:
                return "failure", temporalio.exceptions.ApplicationError(
                    "Unhandled activity cancel error produced by activity reset",
                    type="ActivityReset",
                )
            if run.cancelled_by_request:
                return "cancelled", temporalio.exceptions.CancelledError("Cancelled")
        if (
            isinstance(err, temporalio.exceptions.ApplicationError)
            and err.category == temporalio.exceptions.ApplicationErrorCategory.BENIGN
        ):
            logger.debug("Completing activity as failed", exc_info=err)
        else:
            logger.warning(
                "Completing activity as failed",
                exc_info=err,
                extra={"temporal_activity": run.info._logger_details() if run.info else {}},
            )
        return "failure", err

    # ------------------------------------------------------------------ bookkeeping

    def _finish(self, run: _Run, outcome: dict) -> None:
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

    def _fail_now(self, run: _Run, err: BaseException, *, codec: bool = True) -> None:
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
        run: _Run,
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

    def _cancel_on_loop(self, run: _Run) -> None:
        run.cancelled_event.async_event.set()  # type: ignore[union-attr]
        if run.task is not None and not run.done:
            run.task.cancel("Activity cancelled")

    # ------------------------------------------------------------------ activity context

    def _build_info(self, run: _Run, heartbeat_details: Sequence[Any]) -> temporalio.activity.Info:
        raw = run.raw_info
        started = _to_datetime(raw.get("started_time")) or datetime.now(timezone.utc)
        scheduled = _to_datetime(raw.get("scheduled_time")) or started
        workflow_id = raw.get("workflow_id") or None
        workflow_namespace = raw.get("workflow_namespace") or None
        priority = raw.get("priority")
        return temporalio.activity.Info(
            activity_id=raw.get("activity_id") or "",
            activity_type=raw.get("activity_type") or run.entry.defn.name or "",  # type: ignore[union-attr]
            attempt=int(raw.get("attempt") or 1),
            current_attempt_scheduled_time=(
                _to_datetime(raw.get("current_attempt_scheduled_time")) or scheduled
            ),
            heartbeat_details=list(heartbeat_details),
            heartbeat_timeout=_to_timedelta(raw.get("heartbeat_timeout")),
            is_local=bool(raw.get("is_local", False)),
            namespace=workflow_namespace or self._namespace,
            schedule_to_close_timeout=_to_timedelta(raw.get("schedule_to_close_timeout")),
            scheduled_time=scheduled,
            start_to_close_timeout=_to_timedelta(raw.get("start_to_close_timeout")),
            started_time=started,
            task_queue=self._task_queue,
            task_token=run.token,
            workflow_id=workflow_id,
            workflow_namespace=workflow_namespace,
            workflow_run_id=raw.get("workflow_run_id") or None,
            workflow_type=raw.get("workflow_type") or None,
            priority=(
                temporalio.common.Priority(
                    priority_key=priority.get("priority_key") or None,
                    fairness_key=priority.get("fairness_key") or None,
                    fairness_weight=priority.get("fairness_weight") or None,
                )
                if isinstance(priority, dict)
                else temporalio.common.Priority.default
            ),
            retry_policy=_to_retry_policy(raw.get("retry_policy")),
            activity_run_id=None if workflow_id else (raw.get("activity_run_id") or None),
        )

    def _set_context(self, run: _Run, payload_converter: Any) -> None:
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

    def _heartbeat(self, run: _Run, details: tuple) -> None:
        if not run.done:
            self._conversion.heartbeat(run, details)

    def _heartbeat_failed(self, run: _Run, err: BaseException) -> None:
        logger.warning("Cancelling activity because recording a heartbeat failed", exc_info=err)
        self._request_cancel(run, None, heartbeat_error=err)


class _InboundImpl(temporalio.worker.ActivityInboundInterceptor):
    """The end of the interceptor chain: runs the activity function."""

    def __init__(self, bridge: ActivityBridge, run: _Run) -> None:
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

    def __init__(self, bridge: ActivityBridge, run: _Run) -> None:
        self._bridge = bridge
        self._run = run

    def info(self) -> temporalio.activity.Info:
        assert self._run.info is not None
        return self._run.info

    def heartbeat(self, *details: Any) -> None:
        self._bridge._heartbeat(self._run, details)


# ---------------------------------------------------------------------- helpers


def _validate(adapter: pydantic.TypeAdapter, value: Any) -> Any:
    try:
        return adapter.validate_python(value)
    except pydantic.ValidationError:
        # temporalio validates the JSON text; JSON mode is laxer for strict models
        # (e.g. ISO strings for datetime, values for enums), so retry that way.
        return adapter.validate_json(pydantic_core.to_json(value))


def _raw_values(values: list) -> list[temporalio.common.RawValue]:
    payloads = _FAST_CONVERTER.payload_converter.to_payloads(values)
    return [temporalio.common.RawValue(p) for p in payloads]


def _payload(data: Any) -> temporalio.api.common.v1.Payload:
    if isinstance(data, temporalio.api.common.v1.Payload):
        return data
    return temporalio.api.common.v1.Payload.FromString(bytes(data))


def _failure_bytes(converter: temporalio.converter.DataConverter, err: BaseException) -> bytes:
    failure = temporalio.api.failure.v1.Failure()
    try:
        converter.failure_converter.to_failure(err, converter.payload_converter, failure)
    except Exception as inner:
        return _fallback_failure(inner)
    return failure.SerializeToString()


def _fallback_failure(err: BaseException) -> bytes:
    failure = temporalio.api.failure.v1.Failure(message=f"Failed building exception result: {err}")
    failure.application_failure_info.SetInParent()
    return failure.SerializeToString()


def _to_datetime(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return datetime.fromtimestamp(float(value), tz=timezone.utc)


def _to_timedelta(value: Any) -> timedelta | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value or None
    return timedelta(seconds=float(value)) or None


def _to_retry_policy(value: Any) -> temporalio.common.RetryPolicy | None:
    if not isinstance(value, dict):
        return None
    errors = value.get("non_retryable_error_types")
    return temporalio.common.RetryPolicy(
        initial_interval=_to_timedelta(value.get("initial_interval")) or timedelta(seconds=1),
        backoff_coefficient=float(value.get("backoff_coefficient") or 2.0),
        maximum_interval=_to_timedelta(value.get("maximum_interval")),
        maximum_attempts=int(value.get("maximum_attempts") or 0),
        non_retryable_error_types=list(errors) if errors is not None else None,
    )

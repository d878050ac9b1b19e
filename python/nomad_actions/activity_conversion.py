"""How the activity bridge converts values, and the state of one activity task.

One :class:`Conversion` strategy per bridge, chosen once: :class:`FastConversion` (the JSON
fast path: Rust checked the ``json/plain`` payloads and hands over their text as ``bytes``,
pydantic parses it into the parameter types, results go back as JSON text) or
:class:`CustomConversion` (a custom ``DataConverter``: serialized payloads, decoded and
encoded with it and its codec on the bridge's event loop). Each decodes arguments (and
``activity.info()``), encodes the outcome dict and sends heartbeats. Also here: the mapping
of an activity's exception to an outcome kind (:func:`classify`) and of Rust's cancel flags
to temporalio's details.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import google.protobuf.message
import pydantic
import pydantic_core
import temporalio.activity
import temporalio.api.common.v1
import temporalio.api.failure.v1
import temporalio.common
import temporalio.converter
import temporalio.exceptions
from temporalio.contrib.pydantic import pydantic_data_converter

# The bridge's logger: what it logs about an activity's outcome stays where it was.
logger = logging.getLogger("nomad_actions.activity_bridge")

_CANCELLED_ERRORS = (asyncio.CancelledError, temporalio.exceptions.CancelledError)
_FAST_CONVERTER = pydantic_data_converter

# The flags Rust passes with a cancel are these fields, by name.
_CANCEL_FLAGS = frozenset(
    f.name for f in dataclasses.fields(temporalio.activity.ActivityCancellationDetails)
)

Reply = Callable[[dict], bool]
"""``reply(outcome) -> bool``: reports a task's outcome; False when it was refused."""


@dataclasses.dataclass(frozen=True)
class Hooks:
    """What a conversion needs from its bridge."""

    namespace: str
    task_queue: str
    loop: asyncio.AbstractEventLoop
    send_heartbeat: Callable[[bytes, list], None]
    """The bridge's ``heartbeat(task_token, details)`` callback."""
    heartbeat_failed: Callable[[Run, BaseException], None]
    """Cancels the task whose heartbeat could not be sent."""


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


class Entry:
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


class Run:
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
        entry: Entry | None,
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
        self.raiser: Any = None  # the bridge's thread canceller, for `def` activities
        self.cancelled_event: temporalio.common._CompositeEvent | None = None
        self.details = temporalio.activity._ActivityCancellationDetailsHolder()
        self.cancel_requested = False
        self.cancelled_by_request = False
        self.heartbeat_error: BaseException | None = None
        self.done = False
        self.hb_pending: Sequence[Any] | None = None
        self.hb_task: asyncio.Task | None = None
        self.hb_lock: asyncio.Lock | None = None


class Conversion:
    """How one bridge turns task inputs into arguments and outcomes into outcome dicts.

    ``inline`` conversions are plain calls that may run on any thread (a ``def`` activity
    then runs start to end on its pool thread); the others need the bridge's event loop.
    """

    inline: bool

    def __init__(self, hooks: Hooks) -> None:
        self._hooks = hooks

    def prepare(self, run: Run) -> None:
        """Per-task set-up, before the task runs anywhere."""

    def payload_converter(self, run: Run) -> Any:
        """The payload converter ``activity.payload_converter()`` returns."""
        raise NotImplementedError

    def decode_now(self, run: Run) -> list:
        """Set ``run.info`` and return the arguments (``inline`` conversions only)."""
        raise NotImplementedError

    async def decode(self, run: Run) -> list:
        """Set ``run.info`` and return the arguments."""
        return self.decode_now(run)

    def encode_now(self, run: Run, ok: bool, value: Any) -> dict:
        """The outcome dict for a result (``ok``) or an exception (``inline`` only)."""
        raise NotImplementedError

    async def encode(self, run: Run, ok: bool, value: Any) -> dict:
        """The outcome dict for a result (``ok``) or an exception."""
        return self.encode_now(run, ok, value)

    def heartbeat(self, run: Run, details: tuple) -> None:
        """Send one ``activity.heartbeat(*details)``; must not block."""
        raise NotImplementedError

    def failure_bytes(self, err: BaseException) -> bytes:
        """A failure built outside the activity, without a codec."""
        return failure_bytes(_FAST_CONVERTER, err)

    def _info(self, run: Run, heartbeat_details: Sequence[Any]) -> temporalio.activity.Info:
        return build_info(run, heartbeat_details, self._hooks.namespace, self._hooks.task_queue)


class FastConversion(Conversion):
    """The JSON fast path, as temporalio's Pydantic converter converts.

    Arguments: a ``json/plain`` payload arrives as its JSON text (``bytes``, already checked
    by Rust: valid, within 64-bit integers), any other as its plain value (``binary/null``
    as None, ``binary/plain`` as str; never ``bytes``, so ``bytes`` marks JSON text).
    pydantic parses the text straight into the parameter type (``validate_json``); without
    a hint it becomes plain values (``pydantic_core.from_json``).

    Results: the JSON text ``pydantic_core.to_json`` writes, which Rust sends as it is.
    """

    inline = True

    def __init__(self, hooks: Hooks) -> None:
        super().__init__(hooks)
        self._payload_converter = _FAST_CONVERTER.payload_converter

    def payload_converter(self, run: Run) -> Any:
        return self._payload_converter

    def decode_now(self, run: Run) -> list:
        run.info = self._info(run, run.raw_info.get("heartbeat_details") or ())
        entry: Entry = run.entry  # type: ignore[assignment]
        values = run.raw_args
        defn = entry.defn
        if defn.name is None:
            return [_raw_values(values)]
        # As temporalio: hints apply only when the counts match; unannotated params stay raw.
        if not defn.arg_types or len(defn.arg_types) != len(values):
            return [_plain(value) for value in values]
        try:
            return [
                _plain(value) if adapter is None else _validate(adapter, value)
                for adapter, value in zip(entry.arg_adapters(), values, strict=True)
            ]
        except Exception as err:
            raise temporalio.exceptions.ApplicationError("Failed decoding arguments") from err

    def encode_now(self, run: Run, ok: bool, value: Any) -> dict:
        try:
            if ok:
                if isinstance(
                    value, (bytes, google.protobuf.message.Message, temporalio.common.RawValue)
                ):
                    [payload] = self._payload_converter.to_payloads([value])
                    return {"result_payload": payload.SerializeToString()}
                return _json_result(value)
            kind, err = classify(run, value)
            if kind == "will_complete_async":
                return {kind: True}
            return {kind: failure_bytes(_FAST_CONVERTER, err)}
        except Exception as err:
            if ok:  # the result could not be serialized: a failure, as in temporalio
                return self.encode_now(run, False, err)
            return {"failure": fallback_failure(err)}

    def heartbeat(self, run: Run, details: tuple) -> None:
        try:
            values = [pydantic_core.to_jsonable_python(d) for d in details]
            self._hooks.send_heartbeat(run.token, values)
        except Exception as err:
            self._hooks.heartbeat_failed(run, err)


class CustomConversion(Conversion):
    """A custom ``DataConverter``: inputs and heartbeat details arrive as serialized
    ``Payload`` bytes; decoding and encoding (codec included) run on the event loop."""

    inline = False

    def __init__(self, hooks: Hooks, converter: temporalio.converter.DataConverter) -> None:
        super().__init__(hooks)
        self._converter = converter

    def prepare(self, run: Run) -> None:
        raw = run.raw_info
        context = temporalio.converter.ActivitySerializationContext(
            namespace=raw.get("workflow_namespace") or self._hooks.namespace,
            activity_id=raw.get("activity_id"),
            activity_type=raw.get("activity_type"),
            activity_task_queue=self._hooks.task_queue,
            workflow_id=raw.get("workflow_id") or None,
            workflow_type=raw.get("workflow_type") or None,
            is_local=bool(raw.get("is_local", False)),
        )
        run.converter = self._converter.with_context(context)

    def failure_bytes(self, err: BaseException) -> bytes:
        return failure_bytes(self._converter, err)

    def _of(self, run: Run) -> temporalio.converter.DataConverter:
        return run.converter or self._converter

    def payload_converter(self, run: Run) -> Any:
        return self._of(run).payload_converter

    async def decode(self, run: Run) -> list:
        converter = self._of(run)
        defn = run.entry.defn  # type: ignore[union-attr]
        raw_details = run.raw_info.get("heartbeat_details") or ()
        try:
            details = await converter.decode([_payload(d) for d in raw_details])
        except Exception as err:
            raise temporalio.exceptions.ApplicationError(
                "Failed decoding heartbeat details", non_retryable=True
            ) from err
        run.info = self._info(run, details)
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

    async def encode(self, run: Run, ok: bool, value: Any) -> dict:
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
            kind, err = classify(run, value)
            if kind == "will_complete_async":
                return {kind: True}
            failure = temporalio.api.failure.v1.Failure()
            await converter.encode_failure(err, failure)
            return {kind: failure.SerializeToString()}
        except Exception as err:
            return {"failure": fallback_failure(err)}

    def heartbeat(self, run: Run, details: tuple) -> None:
        with contextlib.suppress(RuntimeError):
            self._hooks.loop.call_soon_threadsafe(self._queue_heartbeat, run, details)

    def _queue_heartbeat(self, run: Run, details: tuple) -> None:
        # The newest heartbeat replaces one not yet sent; one send at a time keeps order.
        run.hb_pending = details
        run.hb_task = self._hooks.loop.create_task(self._send_heartbeat(run))

    async def _send_heartbeat(self, run: Run) -> None:
        if run.hb_lock is None:
            run.hb_lock = asyncio.Lock()
        async with run.hb_lock:
            details, run.hb_pending = run.hb_pending, None
            if details is None:
                return
            try:
                payloads = await self._of(run).encode(list(details)) if details else []
                self._hooks.send_heartbeat(run.token, [p.SerializeToString() for p in payloads])
            except Exception as err:
                if not run.done:
                    self._hooks.heartbeat_failed(run, err)


def classify(run: Run, err: BaseException) -> tuple[str, BaseException]:
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


def build_info(
    run: Run, heartbeat_details: Sequence[Any], namespace: str, task_queue: str
) -> temporalio.activity.Info:
    """temporalio's ``activity.info()`` from the task fields Rust passes (see ``Info`` in
    activities.rs); the worker's own namespace and task queue where the task names none."""
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
        namespace=workflow_namespace or namespace,
        schedule_to_close_timeout=_to_timedelta(raw.get("schedule_to_close_timeout")),
        scheduled_time=scheduled,
        start_to_close_timeout=_to_timedelta(raw.get("start_to_close_timeout")),
        started_time=started,
        task_queue=task_queue,
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


def _json_result(value: Any) -> dict:
    """The outcome for a result on the fast path: its JSON text, as the Pydantic converter
    writes it (``pydantic_core.to_json``: by the value's runtime type, as without a return
    hint, so a workflow decodes what it would from temporalio's worker).

    ``result_value`` goes along for the rare text Rust refuses (an integer beyond 64 bits):
    Rust then encodes ``to_jsonable_python(value)`` as before, so that outcome and its error
    message stay as they were without a second check on every result. Where ``to_json``
    itself fails, the old conversion runs here and raises what it always raised.
    """
    if value is None:
        return {"result": None}
    try:
        text = pydantic_core.to_json(value)
    except Exception:
        return {"result": pydantic_core.to_jsonable_python(value)}
    return {"result_json": text, "result_value": value}


def _plain(value: Any) -> Any:
    """An argument without a type hint: JSON text (``bytes``) as plain values, as the
    Pydantic converter reads it (dicts keep key order, integers are exact)."""
    return pydantic_core.from_json(value) if isinstance(value, bytes) else value


def _validate(adapter: pydantic.TypeAdapter, value: Any) -> Any:
    if isinstance(value, bytes):
        # JSON text, parsed straight into the type in JSON mode, as temporalio does.
        return adapter.validate_json(value)
    try:
        return adapter.validate_python(value)
    except pydantic.ValidationError:
        # temporalio validates the JSON text; JSON mode is laxer for strict models
        # (e.g. ISO strings for datetime, values for enums), so retry that way.
        return adapter.validate_json(pydantic_core.to_json(value))


def _raw_values(values: list) -> list[temporalio.common.RawValue]:
    """A dynamic activity's arguments: JSON text becomes its ``json/plain`` payload again,
    plain values are encoded as the Pydantic converter encodes them."""
    converter = _FAST_CONVERTER.payload_converter
    return [
        temporalio.common.RawValue(
            temporalio.api.common.v1.Payload(metadata={"encoding": b"json/plain"}, data=value)
            if isinstance(value, bytes)
            else converter.to_payloads([value])[0]
        )
        for value in values
    ]


def _payload(data: Any) -> temporalio.api.common.v1.Payload:
    if isinstance(data, temporalio.api.common.v1.Payload):
        return data
    return temporalio.api.common.v1.Payload.FromString(bytes(data))


def failure_bytes(converter: temporalio.converter.DataConverter, err: BaseException) -> bytes:
    """``err`` as a serialized ``Failure`` (no codec); a fallback failure if it cannot be."""
    failure = temporalio.api.failure.v1.Failure()
    try:
        converter.failure_converter.to_failure(err, converter.payload_converter, failure)
    except Exception as inner:
        return fallback_failure(inner)
    return failure.SerializeToString()


def fallback_failure(err: BaseException) -> bytes:
    """The failure reported when building the real one failed."""
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

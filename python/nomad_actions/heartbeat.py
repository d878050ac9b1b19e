"""Keep an activity alive while it runs long blocking code.

Temporal declares an activity lost when no heartbeat arrives within its
``heartbeat_timeout``. Code that blocks for a long time (a simulation, a large file
transfer, a C extension) cannot call ``activity.heartbeat()`` itself, so
:func:`heartbeat` calls it from a background thread while the block runs::

    from nomad_actions import heartbeat

    @activity.defn
    def run_simulation(data: SimulationInput) -> SimulationOutput:
        with heartbeat(interval=10.0, details="simulating"):
            result = blocking_simulation(data)  # may take hours
        return result

It works in ``def`` activities and in ``async def`` activities that block their event loop.
On the nomad-actions worker the heartbeat is recorded directly from the thread. On the
official temporalio worker an ``async def`` activity only records heartbeats from its event
loop, so there they are handed to that loop and reach the server whenever it is free; use
``await asyncio.to_thread(...)`` around the blocking call to keep it free.

A cancellation (``stop_action``) still reaches a ``def`` activity while it heartbeats: the
worker raises ``CancelledError`` in the activity's thread as soon as it runs Python code.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
from collections.abc import Iterator
from typing import Any

import temporalio.activity

__all__ = ["heartbeat"]

logger = logging.getLogger(__name__)

_NO_DETAILS = object()


def _details_of(details: Any) -> tuple[Any, ...]:
    if details is _NO_DETAILS:
        return ()
    value = details() if callable(details) else details
    return () if value is _NO_DETAILS else (value,)


@contextlib.contextmanager
def heartbeat(interval: float = 10.0, details: Any = _NO_DETAILS) -> Iterator[None]:
    """Heartbeats every ``interval`` seconds from a background thread while the block runs.

    One heartbeat is sent when the block is entered, then one every ``interval`` seconds
    until it is left (normally or by an exception, which propagates unchanged). Choose
    ``interval`` well below the activity's ``heartbeat_timeout``; the worker throttles what
    actually reaches the server.

    Args:
        interval: Seconds between heartbeats; must be positive.
        details: The heartbeat details (progress), as for ``activity.heartbeat(details)``; a
            callable is called before each heartbeat and its return value sent, so the
            details can follow progress. Left out, heartbeats carry no details.

    Yields:
        None.

    Raises:
        ValueError: ``interval`` is not positive.
        RuntimeError: Not called inside an activity.
    """
    if not interval > 0:
        raise ValueError(f"heartbeat interval must be positive seconds, got {interval!r}")
    if not temporalio.activity.in_activity():
        raise RuntimeError("heartbeat() must be used inside an activity")
    context = contextvars.copy_context()
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    # The official worker records the heartbeats of async activities on their loop only.
    on_loop = loop is not None and not _records_from_any_thread()
    stop = threading.Event()

    def beat() -> None:
        args = _details_of(details)
        if not on_loop:
            temporalio.activity.heartbeat(*args)
        elif loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(temporalio.activity.heartbeat, *args, context=context.copy())

    def run() -> None:
        while True:
            try:
                context.run(beat)
            except Exception:
                logger.warning("Recording a heartbeat failed", exc_info=True)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=run, name="nomad-actions-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _records_from_any_thread() -> bool:
    """Whether this activity's heartbeat function may be called from any thread: true on the
    nomad-actions worker, true on the official one for ``def`` activities only."""
    record = getattr(temporalio.activity._Context.current(), "heartbeat", None)
    return str(getattr(record, "__module__", "")).startswith("nomad_actions.")

"""Progress of running actions: reported by activities, read by clients.

An activity reports how far it got with :func:`report_progress`; the report travels as the
activity's heartbeat details (``{"progress": fraction, "message": message}``), so it works on
the nomad-actions worker and on the official temporalio worker alike::

    from nomad_actions import report_progress

    @activity.defn
    def analyse(data: AnalysisInput) -> AnalysisOutput:
        for i, item in enumerate(data.items, start=1):
            work_on(item)
            report_progress(i / len(data.items), f"analysed {item.name}")
        ...

Clients read it with ``get_action_progress(workflow_id)``, whose ``fraction``, ``message``
and ``activity_type`` come from :func:`progress_reports`; ``nomad-actions status`` and
``nomad-actions start --wait`` draw it as a progress bar.

How often progress reaches the server: the worker throttles heartbeats and sends the newest
one every 0.8 x the activity's ``heartbeat_timeout``, or every 30 s when it has none. Give
activities that report progress a short ``heartbeat_timeout`` (2 to 5 s) in
``workflow.execute_activity(...)`` so clients see updates every couple of seconds; the
activity must then report (or heartbeat) at least that often, or Temporal retries it as lost.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import temporalio.activity

__all__ = ["ProgressReport", "progress_from_details", "progress_reports", "report_progress"]

#: Keys of the heartbeat details dict that carries a progress report.
PROGRESS_KEY = "progress"
MESSAGE_KEY = "message"


def _fraction(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"progress fraction must be a number, got {type(value).__name__}")
    fraction = float(value)
    if not (math.isfinite(fraction) and 0.0 <= fraction <= 1.0):
        raise ValueError(f"progress fraction must be from 0 to 1, got {value!r}")
    return fraction


def report_progress(fraction: float, message: str | None = None) -> None:
    """Record the progress of the running activity (``def`` or ``async def``).

    Sends one heartbeat with the details ``{"progress": fraction, "message": message}``;
    the newest report replaces the previous one. Reporting also keeps the activity alive
    against its ``heartbeat_timeout``, and is where a cancellation (``stop_action``)
    reaches it.

    Clients see a report once the worker sends it: the newest one every 0.8 x the
    activity's ``heartbeat_timeout``, or every 30 s when it has none, so give such activities a
    ``heartbeat_timeout`` of a few seconds (and report at least that often)::

        await workflow.execute_activity(
            analyse, data,
            start_to_close_timeout=timedelta(hours=1),
            heartbeat_timeout=timedelta(seconds=3),
        )

    Args:
        fraction: How much is done, from 0.0 to 1.0.
        message: What is happening now, shown next to the progress bar.

    Raises:
        ValueError: ``fraction`` is outside 0 to 1 (or not finite).
        TypeError: ``fraction`` is not a number or ``message`` is not a string.
        RuntimeError: Called outside an activity (e.g. in workflow code or a script).
    """
    value = _fraction(fraction)
    if message is not None and not isinstance(message, str):
        raise TypeError(f"progress message must be a string or None, got {type(message).__name__}")
    if not temporalio.activity.in_activity():
        raise RuntimeError(
            "report_progress() must be called inside an activity (a function decorated with "
            "@activity.defn and run by a worker); workflows report progress through the "
            "activities they run"
        )
    temporalio.activity.heartbeat({PROGRESS_KEY: value, MESSAGE_KEY: message})


@dataclass(frozen=True)
class ProgressReport:
    """The last progress one pending activity reported.

    Attributes:
        fraction: How much is done, from 0.0 to 1.0.
        message: The message that came with it, or None.
        activity_type: The activity's type (its function name unless ``@activity.defn(name=)``).
        activity_id: The activity's id within the workflow.
        attempt: The attempt that reported it (1 unless the activity was retried).
    """

    fraction: float
    message: str | None
    activity_type: str
    activity_id: str
    attempt: int = 1


def progress_from_details(details: Iterable[Any]) -> tuple[float, str | None] | None:
    """(fraction, message) of the newest progress report in heartbeat details, or None.

    Details that are not a :func:`report_progress` dict (other heartbeats) are skipped; a
    fraction out of range is clamped to 0 to 1.
    """
    for detail in reversed(list(details)):
        if not isinstance(detail, Mapping):
            continue
        value = detail.get(PROGRESS_KEY)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not math.isfinite(value):
            continue
        message = detail.get(MESSAGE_KEY)
        return min(max(float(value), 0.0), 1.0), None if message is None else str(message)
    return None


def _order(report: ProgressReport) -> tuple[int, str]:
    # Temporal numbers the activities a workflow schedules 1, 2, 3, ...: a higher id was
    # scheduled later. Ids set by hand sort before numbered ones.
    aid = report.activity_id
    return (int(aid), "") if aid.isdigit() else (-1, aid)


def progress_reports(activities: Iterable[Mapping[str, Any]]) -> list[ProgressReport]:
    """Progress reports of pending activities (as ``ActionProgress.activities`` lists them),
    oldest scheduled first; activities that reported no progress are left out."""
    reports = []
    for activity in activities:
        found = progress_from_details(activity.get("heartbeat_details") or ())
        if found is None:
            continue
        reports.append(
            ProgressReport(
                fraction=found[0],
                message=found[1],
                activity_type=str(activity.get("activity_type") or ""),
                activity_id=str(activity.get("activity_id") or ""),
                attempt=int(activity.get("attempt") or 1),
            )
        )
    return sorted(reports, key=_order)

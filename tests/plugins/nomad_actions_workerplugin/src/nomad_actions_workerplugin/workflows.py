"""Workflows of the worker plugin, written with plain ``temporalio`` decorators.

Sandbox-safe: the plugin's other modules are imported as passed through, as the NOMAD docs do.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.workflow import ActivityCancellationType, ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from . import ACTIVITIES_QUEUE
    from .activities import (
        count_words,
        flaky,
        get_cid,
        get_request,
        heartbeat_until_cancelled,
        heartbeat_until_cancelled_sync,
        inspect_secret,
        invert,
        is_even,
        noop,
        scale,
        shout,
        square,
        summarize_batch,
        too_slow,
        where_am_i,
    )
    from .models import (
        BatchInput,
        BatchSummary,
        CancelInput,
        ChildInput,
        ChildOutput,
        CollectorInput,
        CollectorOutput,
        CounterInput,
        CounterOutput,
        FanOutInput,
        FanOutOutput,
        GetRequestInput,
        InfoInput,
        InfoOutput,
        PubChemInput,
        RemoteInput,
        RemoteOutput,
        RetryInput,
        RetryOutput,
        SecretInput,
        SecretReport,
        ThreadsInput,
        ThreadsOutput,
        TimeoutInput,
    )

_TIMEOUT = timedelta(seconds=30)
_RETRY = RetryPolicy(
    maximum_attempts=3,
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=2),
)


@workflow.defn
class PubChemWorkflow:
    """The NOMAD docs' example: fetch a compound's title and SMILES from PubChem."""

    @workflow.run
    async def run(self, data: PubChemInput) -> dict:
        retry_policy = RetryPolicy(
            maximum_attempts=3,
            initial_interval=timedelta(milliseconds=200),
            backoff_coefficient=2.0,
            maximum_interval=timedelta(seconds=2),
        )
        cid = data.cid
        if cid is None:
            cid = await workflow.execute_activity(
                get_cid,
                data.compound,
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=retry_policy,
            )
        result = await workflow.execute_activity(
            get_request,
            GetRequestInput(url=f"compound/cid/{cid}/property/Title,SMILES/JSON", timeout=10),
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=retry_policy,
        )
        [properties] = result["PropertyTable"]["Properties"]
        return {
            "cid": cid,
            "title": properties["Title"],
            "smiles": properties["SMILES"],
            "upload_id": data.upload_id,
            "in_sandbox": workflow.unsafe.in_sandbox(),
        }


@workflow.defn
class SecretWorkflow:
    """Passes a revealed and a masked ``SecretStr`` to an activity."""

    @workflow.run
    async def run(self, data: SecretInput) -> SecretReport:
        report = await workflow.execute_activity(
            inspect_secret,
            args=[data.credentials, data.masked],
            start_to_close_timeout=_TIMEOUT,
            retry_policy=_RETRY,
        )
        # The workflow sees the typed model, with the secret intact.
        report.requested_at = data.requested_at
        return report


@workflow.defn
class BatchWorkflow:
    """Nested dataclasses in and out."""

    @workflow.run
    async def run(self, data: BatchInput) -> BatchSummary:
        summary = await workflow.execute_activity(
            summarize_batch, data, start_to_close_timeout=_TIMEOUT, retry_policy=_RETRY
        )
        if not isinstance(summary, BatchSummary):
            raise TypeError(f"activity result is a {type(summary).__name__}")
        return summary


@workflow.defn
class PrimitivesWorkflow:
    """``dict`` in and out; str, int, float, bool, list, dict and None through activities."""

    @workflow.run
    async def run(self, data: dict) -> dict:
        def options() -> dict[str, Any]:
            return {"start_to_close_timeout": _TIMEOUT, "retry_policy": _RETRY}

        shouted = await workflow.execute_activity(shout, data["text"], **options())
        scaled = await workflow.execute_activity(
            scale, args=[data["value"], data["factor"]], **options()
        )
        counts = await workflow.execute_activity(count_words, data["words"], **options())
        inverted = await workflow.execute_activity(invert, data["mapping"], **options())
        even = await workflow.execute_activity(is_even, data["factor"], **options())
        nothing = await workflow.execute_activity(noop, **options())
        return {
            "user_id": data["user_id"],
            "shouted": shouted,
            "scaled": scaled,
            "scaled_type": type(scaled).__name__,
            "counts": counts,
            "inverted": inverted,
            "inverted_key_types": sorted({type(k).__name__ for k in inverted}),
            "even": even,
            "nothing": nothing,
        }


@workflow.defn
class ChildWorkflow:
    """Started by ``FanOutWorkflow``; reports its parent."""

    @workflow.run
    async def run(self, data: ChildInput) -> ChildOutput:
        if data.sleep_seconds:
            await workflow.sleep(data.sleep_seconds)
        info = workflow.info()
        return ChildOutput(
            label=data.label.upper(),
            workflow_id=info.workflow_id,
            parent_workflow_id=info.parent.workflow_id if info.parent else None,
            parent_run_id=info.parent.run_id if info.parent else None,
        )


@workflow.defn
class FanOutWorkflow:
    """``asyncio.gather`` over activities, then a child workflow."""

    @workflow.run
    async def run(self, data: FanOutInput) -> FanOutOutput:
        squares = await asyncio.gather(
            *(
                workflow.execute_activity(
                    square, value, start_to_close_timeout=_TIMEOUT, retry_policy=_RETRY
                )
                for value in data.values
            )
        )
        child = await workflow.execute_child_workflow(
            ChildWorkflow.run,
            ChildInput(label=f"child of {data.user_id}", sleep_seconds=data.child_sleep_seconds),
            id=f"{workflow.info().workflow_id}-child",
            parent_close_policy=ParentClosePolicy.TERMINATE,
        )
        return FanOutOutput(squares=list(squares), total=sum(squares), child=child)


@workflow.defn
class InfoWorkflow:
    """``workflow.info()``, ``workflow.time()``, ``workflow.sleep`` and ``workflow.logger``."""

    @workflow.run
    async def run(self, data: InfoInput) -> InfoOutput:
        info = workflow.info()
        workflow.logger.info("Info action started by %s", data.user_id)
        before = workflow.time()
        await workflow.sleep(data.sleep_seconds)
        after = workflow.time()
        workflow.logger.info("Info action slept %.1f s", after - before)
        return InfoOutput(
            workflow_id=info.workflow_id,
            run_id=info.run_id,
            workflow_type=info.workflow_type,
            task_queue=info.task_queue,
            namespace=info.namespace,
            attempt=info.attempt,
            start_time=info.start_time,
            time_before_sleep=before,
            time_after_sleep=after,
            now=workflow.now(),
        )


@workflow.defn
class CollectorWorkflow:
    """Collects items sent by signals until closed; queries show the progress."""

    def __init__(self) -> None:
        self._items: list[str] = []
        self._signals = 0
        self._closed = False

    @workflow.run
    async def run(self, data: CollectorInput) -> CollectorOutput:
        await workflow.wait_condition(
            lambda: self._closed, timeout=timedelta(seconds=data.timeout_seconds)
        )
        return CollectorOutput(items=self._items, signals=self._signals)

    @workflow.signal
    def add(self, item: str) -> None:
        self._signals += 1
        self._items.append(item)

    @workflow.signal
    def add_many(self, items: list[str]) -> None:
        self._signals += 1
        self._items.extend(items)

    @workflow.signal
    def close(self) -> None:
        self._signals += 1
        self._closed = True

    @workflow.query
    def items(self) -> list[str]:
        return list(self._items)

    @workflow.query
    def summary(self, prefix: str) -> str:
        return f"{prefix}{len(self._items)}"


@workflow.defn
class CounterWorkflow:
    """Counts up by one per run with ``continue_as_new`` until ``target``."""

    @workflow.run
    async def run(self, data: CounterInput) -> CounterOutput:
        info = workflow.info()
        run_ids = [*data.run_ids, info.run_id]
        count = data.count + 1
        if count < data.target:
            workflow.continue_as_new(data.model_copy(update={"count": count, "run_ids": run_ids}))
        return CounterOutput(count=count, run_ids=run_ids, continued_from=info.continued_run_id)


@workflow.defn
class ThreadsWorkflow:
    """Sync activities, gathered."""

    @workflow.run
    async def run(self, data: ThreadsInput) -> ThreadsOutput:
        reports = await asyncio.gather(
            *(
                workflow.execute_activity(
                    where_am_i, index, start_to_close_timeout=_TIMEOUT, retry_policy=_RETRY
                )
                for index in range(data.activities)
            )
        )
        return ThreadsOutput(reports=list(reports))


@workflow.defn
class RetryWorkflow:
    """An activity that succeeds on its third attempt."""

    @workflow.run
    async def run(self, data: RetryInput) -> RetryOutput:
        attempt = await workflow.execute_activity(
            flaky,
            data.succeed_on,
            start_to_close_timeout=_TIMEOUT,
            retry_policy=RetryPolicy(
                maximum_attempts=data.succeed_on + 2,
                initial_interval=timedelta(milliseconds=100),
                backoff_coefficient=1.5,
                maximum_interval=timedelta(milliseconds=500),
            ),
        )
        return RetryOutput(attempt=attempt)


@workflow.defn
class TimeoutWorkflow:
    """An activity slower than its start-to-close timeout, twice."""

    @workflow.run
    async def run(self, data: TimeoutInput) -> str:
        return await workflow.execute_activity(
            too_slow,
            data.sleep_seconds,
            start_to_close_timeout=timedelta(seconds=data.timeout_seconds),
            retry_policy=RetryPolicy(
                maximum_attempts=2, initial_interval=timedelta(milliseconds=100)
            ),
        )


@workflow.defn
class CancellableWorkflow:
    """A heartbeating activity; cancelling the action cancels it and waits for it."""

    @workflow.run
    async def run(self, data: CancelInput) -> str:
        # No try/except: the cancellation propagates and the action ends CANCELED.
        return await workflow.execute_activity(
            heartbeat_until_cancelled_sync if data.sync else heartbeat_until_cancelled,
            data.marker_dir,
            start_to_close_timeout=timedelta(seconds=120),
            heartbeat_timeout=timedelta(seconds=2),
            retry_policy=RetryPolicy(maximum_attempts=1),
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )


@workflow.defn
class RemoteCallerWorkflow:
    """Not an action: run by an official temporalio worker, it routes this plugin's
    activities to ``ACTIVITIES_QUEUE``, where a nomad-actions worker serves them."""

    @workflow.run
    async def run(self, data: RemoteInput) -> RemoteOutput:
        def options() -> dict[str, Any]:
            return {
                "task_queue": ACTIVITIES_QUEUE,
                "start_to_close_timeout": _TIMEOUT,
                "retry_policy": _RETRY,
            }

        summary = await workflow.execute_activity(summarize_batch, data.batch, **options())
        report = await workflow.execute_activity(
            inspect_secret, args=[data.credentials, data.masked], **options()
        )
        shouted = await workflow.execute_activity(shout, data.text, **options())
        scaled = await workflow.execute_activity(scale, args=[data.value, 3], **options())
        thread = await workflow.execute_activity(where_am_i, 7, **options())
        return RemoteOutput(
            summary=summary, report=report, shouted=shouted, scaled=scaled, thread=thread
        )

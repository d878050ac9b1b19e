"""Models, activity and workflows of the nomad 2.0 test plugin."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    from nomad.actions.manager import request_signal_input


class SampleInput(BaseModel):
    user_id: str
    upload_id: str | None = None
    sample: str


class SampleOutput(BaseModel):
    message: str
    sample_upper: str


@activity.defn
async def describe_sample(data: SampleInput) -> SampleOutput:
    activity.logger.info("Describing sample %s for %s", data.sample, data.user_id)
    return SampleOutput(message=f"{data.sample} looks fine", sample_upper=data.sample.upper())


@workflow.defn
class SampleWorkflow:
    @workflow.run
    async def run(self, data: SampleInput) -> SampleOutput:
        return await workflow.execute_activity(
            describe_sample, data, start_to_close_timeout=timedelta(seconds=30)
        )


class AskInput(BaseModel):
    user_id: str


@workflow.defn
class AskWorkflow:
    def __init__(self) -> None:
        self.answer: str | None = None

    @workflow.signal
    def answer_it(self, value: str) -> None:
        self.answer = value

    @workflow.run
    async def run(self, data: AskInput) -> str:
        await request_signal_input(
            workflow.info().workflow_id,
            data.user_id,
            "answer_it",
            title="Answer",
            timeout=timedelta(seconds=20),
        )
        await workflow.wait_condition(lambda: self.answer is not None)
        return self.answer or ""

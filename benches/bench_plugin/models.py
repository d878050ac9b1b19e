"""Inputs and outputs of the benchmark workflows."""

from __future__ import annotations

from pydantic import BaseModel


class GreetInput(BaseModel):
    """Input of `SingleWorkflow` and of each `greet` activity."""

    user_id: str
    upload_id: str | None = None
    name: str
    index: int = 0


class GreetOutput(BaseModel):
    """Output of `greet` and `SingleWorkflow`."""

    message: str
    index: int


class FanOutInput(BaseModel):
    """Input of `FanOutWorkflow` and `SyncSleepWorkflow`."""

    user_id: str
    count: int
    sleep_ms: int = 0

"""Inputs and outputs of the process-test workflows."""

from __future__ import annotations

from pydantic import BaseModel, Field


class WorkInput(BaseModel):
    """Input of ``HeartbeatWorkflow``."""

    user_id: str
    tag: str
    marker_dir: str
    values: list[int] = Field(default_factory=list)
    seconds: float = 0.0


class WorkOutput(BaseModel):
    """Output of ``HeartbeatWorkflow``: the sum, and who computed it on which attempt."""

    total: int
    pid: int
    attempt: int


class SleepInput(BaseModel):
    """Input of ``SleeperWorkflow``."""

    user_id: str
    tag: str
    marker_dir: str
    seconds: float
    value: str = ""
    #: Sleep in one C call that keeps the GIL (no other Python thread runs meanwhile).
    hold_gil: bool = False

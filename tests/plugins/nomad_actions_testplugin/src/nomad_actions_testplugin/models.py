"""Inputs and outputs of the test workflows."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, Field


class GreetInput(BaseModel):
    """Input of ``GreetWorkflow``."""

    user_id: str
    upload_id: str | None = None
    name: str
    times: int = Field(default=1, ge=1)


class GreetOutput(BaseModel):
    """Output of ``GreetWorkflow``."""

    message: str
    count: int


@dataclass
class WaitInput:
    """Input of ``WaiterWorkflow``."""

    user_id: str
    seconds: float = 60.0


class FailsInput(BaseModel):
    """Input of ``FailsWorkflow``."""

    user_id: str
    reason: str

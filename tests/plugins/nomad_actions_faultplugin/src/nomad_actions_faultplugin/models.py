"""Inputs and outputs of the fault-plugin workflows."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class StepsInput(BaseModel):
    """Input of ``StepsWorkflow``: ``steps`` activities, ``parallel`` at a time."""

    user_id: str
    marker_dir: str
    steps: int = 5
    parallel: int = 1
    seconds: float = 0.1
    #: CPU work (loop iterations) the workflow does in each activation.
    spin: int = 0


class StepInput(BaseModel):
    """Input of the ``fault_step`` activity."""

    marker_dir: str
    index: int
    seconds: float


class StepsOutput(BaseModel):
    total: int
    steps: int


def step_value(index: int) -> int:
    """What ``fault_step`` returns for ``index``."""
    return index * index + 1


class EchoInput(BaseModel):
    """Input of ``EchoWorkflow``: any JSON payload, and how many ``push`` signals to wait
    for (negative: wait for the ``finish`` signal)."""

    user_id: str
    payload: Any = None
    signals: int = 0


class EchoOutput(BaseModel):
    """What ``fault_echo`` returns: the payload and the signalled values, unchanged."""

    payload: Any = None
    pushed: list[Any] = Field(default_factory=list)


class VersionedInput(BaseModel):
    user_id: str
    tag: str = ""


class BadResultInput(BaseModel):
    """Input of ``BadResultWorkflow``: which unserializable value the activity returns."""

    user_id: str
    kind: str


class HeartbeatInput(BaseModel):
    """Input of ``HeartbeatWorkflow``: one activity that runs ``seconds`` and heartbeats
    every second."""

    user_id: str
    marker_dir: str
    seconds: int = 10


class SoakInput(BaseModel):
    user_id: str
    n: int


class SoakOutput(BaseModel):
    n: int
    square: int


class OkInput(BaseModel):
    user_id: str
    name: str = "ok"

"""Inputs and outputs of the worker plugin's workflows and activities.

Covers the payload shapes real plugins use: Pydantic models (with ``SecretStr`` and
``datetime``), nested dataclasses, and primitives.

``SecretStr`` and temporalio's Pydantic converter
    temporalio's ``pydantic_data_converter`` writes a model with ``pydantic_core.to_json``,
    and ``nomad_actions.start_action`` with ``model_dump(mode="json")``; both serialise a
    ``SecretStr`` as the mask ``'**********'``. A plain ``SecretStr`` field therefore reaches the
    workflow and its activities as ``SecretStr('**********')``: the secret is lost, silently
    (see ``MaskedCredentials``). A model whose secret must travel adds a
    ``field_serializer(..., when_used="json")`` that reveals it in JSON only (see
    ``Credentials``): the value then crosses Temporal in clear text (encrypt payloads in
    production), while ``repr()``, ``str()`` and ``model_dump()`` in Python mode keep it masked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, SecretStr, field_serializer, model_validator


class BaseWorkflowInput(BaseModel):
    """Fields every NOMAD action input carries (as in the plugin template)."""

    upload_id: str = Field(..., description="Upload the action works on.")
    user_id: str = Field(..., description="User who started the action.")


# -- the docs' PubChem example ----------------------------------------------------------------


class PubChemInput(BaseWorkflowInput):
    """Input of ``PubChemWorkflow``: a PubChem compound id, or a compound name to look up."""

    cid: int | None = Field(None, description="PubChem compound identifier.")
    compound: str | None = Field(None, description="Compound name, resolved to a CID first.")

    @model_validator(mode="after")
    def _cid_or_compound(self) -> PubChemInput:
        if self.cid is None and not self.compound:
            raise ValueError("give a cid or a compound name")
        return self


class GetRequestInput(BaseModel):
    """Input of the ``get_request`` activity."""

    url: str = Field(..., description="Absolute URL, or a path below the PubChem base URL.")
    timeout: int = Field(..., description="Timeout of the request in seconds.")


# -- SecretStr --------------------------------------------------------------------------------


class Credentials(BaseModel):
    """Credentials whose secret survives serialisation (revealed in JSON only)."""

    username: str
    api_key: SecretStr

    @field_serializer("api_key", when_used="json")
    def _reveal_api_key(self, value: SecretStr) -> str:
        return value.get_secret_value()


class MaskedCredentials(BaseModel):
    """Credentials with a plain ``SecretStr``: JSON carries ``'**********'`` instead."""

    username: str
    api_key: SecretStr


class SecretInput(BaseWorkflowInput):
    """Input of ``SecretWorkflow``."""

    credentials: Credentials
    masked: MaskedCredentials
    requested_at: datetime


class SecretReport(BaseModel):
    """What the ``inspect_secret`` activity received, and a secret token it hands back."""

    username: str
    api_key_sha256: str
    api_key_length: int
    masked_api_key: str
    token: SecretStr
    requested_at: datetime | None = None

    @field_serializer("token", when_used="json")
    def _reveal_token(self, value: SecretStr) -> str:
        return value.get_secret_value()


# -- nested dataclasses -----------------------------------------------------------------------


@dataclass
class Point:
    x: float
    y: float


@dataclass
class Sample:
    name: str
    formula: str
    mass: float
    position: Point
    tags: list[str] = field(default_factory=list)


@dataclass
class BatchInput:
    """Input of ``BatchWorkflow`` (a dataclass, as some plugins use)."""

    user_id: str
    upload_id: str
    lab: str
    samples: list[Sample]


@dataclass
class BatchSummary:
    lab: str
    count: int
    total_mass: float
    heaviest: Sample
    centroid: Point
    tags: list[str]


# -- orchestration ----------------------------------------------------------------------------


class FanOutInput(BaseWorkflowInput):
    values: list[int]
    child_sleep_seconds: float = 0.0


class ChildInput(BaseModel):
    label: str
    sleep_seconds: float = 0.0


class ChildOutput(BaseModel):
    label: str
    workflow_id: str
    parent_workflow_id: str | None
    parent_run_id: str | None


class FanOutOutput(BaseModel):
    squares: list[int]
    total: int
    child: ChildOutput


class InfoInput(BaseWorkflowInput):
    sleep_seconds: float = 1.0


class InfoOutput(BaseModel):
    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    namespace: str
    attempt: int
    start_time: datetime
    time_before_sleep: float
    time_after_sleep: float
    now: datetime


class CollectorInput(BaseWorkflowInput):
    timeout_seconds: float = 60.0


class CollectorOutput(BaseModel):
    items: list[str]
    signals: int


class CounterInput(BaseWorkflowInput):
    count: int = 0
    target: int = 3
    run_ids: list[str] = Field(default_factory=list)


class CounterOutput(BaseModel):
    count: int
    run_ids: list[str]
    continued_from: str | None


class ThreadsInput(BaseWorkflowInput):
    activities: int = 3


class ThreadReport(BaseModel):
    index: int
    thread_name: str
    is_main_thread: bool
    activity_type: str


class ThreadsOutput(BaseModel):
    reports: list[ThreadReport]


class RetryInput(BaseWorkflowInput):
    succeed_on: int = 3


class RetryOutput(BaseModel):
    attempt: int


class TimeoutInput(BaseWorkflowInput):
    sleep_seconds: float = 5.0
    timeout_seconds: float = 1.0


class CancelInput(BaseWorkflowInput):
    marker_dir: str
    sync: bool = False


# -- a workflow run by an official temporalio worker, calling this plugin's activities --------


class RemoteInput(BaseModel):
    batch: BatchInput
    credentials: Credentials
    masked: MaskedCredentials
    text: str
    value: float


class RemoteOutput(BaseModel):
    summary: BatchSummary
    report: SecretReport
    shouted: str
    scaled: float
    thread: ThreadReport
    extra: dict[str, Any] = Field(default_factory=dict)

"""Tests for nomad_actions.errors."""

from __future__ import annotations

import pickle

import pytest
from temporalio.client import WorkflowExecutionStatus

from nomad_actions import errors
from nomad_actions.errors import (
    ActionFailedError,
    ActionInputError,
    ActionLoadError,
    ActionPermissionError,
    ActionTimeoutError,
    ConfigurationError,
    NomadActionsError,
    NothingToRunError,
    PayloadError,
    RPCError,
    TemporalConnectionError,
    UnknownActionError,
    WorkflowAlreadyStartedError,
    WorkflowNotFoundError,
)


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (ActionLoadError, None),
        (UnknownActionError, LookupError),
        (ActionInputError, ValueError),
        (WorkflowNotFoundError, LookupError),
        (WorkflowAlreadyStartedError, None),
        (PayloadError, ValueError),
        (ActionPermissionError, PermissionError),
        (TemporalConnectionError, ConnectionError),
        (ActionFailedError, None),
        (RPCError, None),
        (NothingToRunError, ValueError),
        (ActionTimeoutError, TimeoutError),
        (ConfigurationError, ValueError),
    ],
)
def test_hierarchy_and_message_only_constructor(cls: type[Exception], builtin: type | None) -> None:
    # The Rust side builds every class as cls(message), then sets attributes.
    exc = cls("text")
    assert isinstance(exc, NomadActionsError)
    if builtin is not None:
        assert isinstance(exc, builtin)
    assert str(exc) == "text"
    assert cls.__name__ in errors.__all__


def test_action_failed_error_attributes() -> None:
    exc = ActionFailedError(
        "it failed", workflow_id="wf", status=3, failure_type="ApplicationError"
    )
    assert exc.message == "it failed"
    assert exc.workflow_id == "wf"
    assert exc.status is WorkflowExecutionStatus.FAILED
    assert exc.failure_type == "ApplicationError"
    assert exc.failure_message == "it failed"
    assert exc.causes == []
    bare = ActionFailedError("x")
    assert (bare.workflow_id, bare.status, bare.failure_type) == (None, None, None)


def test_rpc_error_attributes() -> None:
    exc = RPCError("denied", 7)
    assert (exc.message, exc.code) == ("denied", 7)
    assert RPCError("x").code == 2


def test_pickle_keeps_attributes() -> None:
    exc = ActionFailedError(
        "failed", "wf", WorkflowExecutionStatus.TIMED_OUT, "TimeoutError", causes=["c"]
    )
    copy = pickle.loads(pickle.dumps(exc))
    assert (copy.workflow_id, copy.status, copy.failure_type, copy.causes) == (
        "wf",
        WorkflowExecutionStatus.TIMED_OUT,
        "TimeoutError",
        ["c"],
    )
    rpc = RPCError("m", 5)
    rpc.rpc_message = "raw"  # set by Rust after construction
    rpc_copy = pickle.loads(pickle.dumps(rpc))
    assert (rpc_copy.code, rpc_copy.rpc_message) == (5, "raw")
    unknown = pickle.loads(pickle.dumps(UnknownActionError("u", "x", ["b", "a"])))
    assert (unknown.action_id, unknown.known_ids) == ("x", ["a", "b"])
    missing = pickle.loads(pickle.dumps(WorkflowNotFoundError("n", "wf")))
    assert missing.workflow_id == "wf"


def test_connection_error_attributes_default_to_none() -> None:
    # The engine sets them; one built from a message alone has them all None.
    exc = TemporalConnectionError("text")
    assert (exc.address, exc.kind, exc.rpc, exc.reason) == (None, None, None, None)


def test_nothing_to_run_error_keeps_its_queue() -> None:
    exc = pickle.loads(pickle.dumps(NothingToRunError("nothing", task_queue="q")))
    assert (str(exc), exc.task_queue) == ("nothing", "q")

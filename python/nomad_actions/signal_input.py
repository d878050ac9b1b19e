"""Asking the user for input while an action runs, on Temporal alone (upstream NOMAD 2.0's
``request_signal_input`` / ``submit_signal_input`` pair).

Upstream records pending requests in MongoDB through an activity. Here the workflow keeps
them itself: :func:`request_signal_input` registers, on first use, a query
(:data:`PENDING_QUERY`) that answers the pending requests and an internal signal
(:data:`SUBMITTED_SIGNAL`) that moves one to the submitted list. :func:`submit_signal_input`
reads the query, refuses a signal nobody asked for, then sends the internal signal and the
workflow's own signal, so a request is answered at most once.

In a workflow::

    with workflow.unsafe.imports_passed_through():
        from nomad_actions.manager import request_signal_input

    @workflow.signal
    def approve(self, data: Approval) -> None:
        self.approval = data

    @workflow.run
    async def run(self, data: MyInput) -> str:
        await request_signal_input(workflow.info().workflow_id, data.user_id, "approve",
                                   title="Approve the run")
        await workflow.wait_condition(lambda: self.approval is not None)
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

__all__ = ["PENDING_QUERY", "SUBMITTED_SIGNAL", "request_signal_input", "signal_name_of"]

#: Query answering the pending requests of a workflow (a list of request dicts).
PENDING_QUERY = "__nomad_signal_input_requests"
#: Internal signal, argument the signal function name: that request was answered.
SUBMITTED_SIGNAL = "__nomad_signal_input_submitted"


class _Requests:
    """The requests of one workflow run; lives in its query handler."""

    def __init__(self) -> None:
        self.pending: dict[str, dict[str, Any]] = {}
        self.submitted: list[dict[str, Any]] = []

    def __call__(self) -> list[dict[str, Any]]:
        return list(self.pending.values())

    def answered(self, signal_fn_name: str) -> None:
        request = self.pending.pop(signal_fn_name, None)
        if request is not None:
            self.submitted.append(request)


def _requests() -> _Requests:
    handler = workflow.get_query_handler(PENDING_QUERY)
    if isinstance(handler, _Requests):
        return handler
    requests = _Requests()
    workflow.set_query_handler(PENDING_QUERY, requests)
    workflow.set_signal_handler(SUBMITTED_SIGNAL, requests.answered)
    return requests


async def request_signal_input(
    action_instance_id: str,
    user_id: str,
    signal_fn_name: str,
    title: str | None = None,
    description: str | None = None,
    content: str | None = None,
    initial_data: dict[str, Any] | None = None,
    timeout: timedelta = timedelta(hours=1),
) -> None:
    """Records, in the running workflow, that it waits for input through a signal.

    Same arguments as upstream NOMAD 2.0's ``nomad.actions.manager.request_signal_input``.
    It does not wait for the signal: follow it with ``workflow.wait_condition``.

    Args:
        action_instance_id: The action's workflow id (recorded with the request).
        user_id: The owner of the action (recorded with the request).
        signal_fn_name: The Python name of the ``@workflow.signal`` method to send.
        title: Title of the input form.
        description: Description of the input form.
        content: Markdown content of the input form.
        initial_data: Data to prefill the form with.
        timeout: Accepted for upstream's signature; upstream's activity timeout, unused here.

    Raises:
        ApplicationError: Called outside a workflow, or a request for this signal is
            already pending (the message names the signal, as upstream's).
    """
    del timeout  # no activity runs here
    if not workflow.in_workflow():
        raise ApplicationError("request_signal_input must be called inside a workflow")
    requests = _requests()
    if signal_fn_name in requests.pending:
        raise ApplicationError(
            f"Action already has a pending signal input request for signal '{signal_fn_name}'.",
            non_retryable=True,
        )
    request: dict[str, Any] = {"signal_fn_name": signal_fn_name}
    for key, value in (
        ("title", title),
        ("description", description),
        ("content", content),
        ("initial_data", initial_data),
    ):
        if value is not None:
            request[key] = value
    requests.pending[signal_fn_name] = request


def signal_name_of(workflow_cls: type | None, signal_fn_name: str) -> str:
    """The Temporal signal name of a workflow's ``@workflow.signal`` method.

    Args:
        workflow_cls: The workflow class, or None when unknown.
        signal_fn_name: The method's Python name.

    Returns:
        The name given to ``@workflow.signal(name=...)``, else the method name.

    Raises:
        ValueError: The class has no such signal method (names the signal and the class).
    """
    if workflow_cls is None:
        return signal_fn_name
    attr = getattr(workflow_cls, signal_fn_name, None)
    defn = getattr(attr, "__temporal_signal_definition", None)
    if defn is None:
        raise ValueError(f"Signal '{signal_fn_name}' not found on workflow {workflow_cls.__name__}")
    return defn.name or signal_fn_name

"""The ``nomad.plugin`` entry points of the worker plugin; every action runs on
``WORKER_QUEUE``. ``load()`` imports the workflows and activities lazily, as real plugins do."""

from __future__ import annotations

from pydantic import Field

from nomad_actions.action import Action, ActionEntryPoint

from . import WORKER_QUEUE

__all__ = [
    "WORKER_QUEUE",
    "batch_action",
    "cancellable_action",
    "collector_action",
    "counter_action",
    "fanout_action",
    "info_action",
    "primitives_action",
    "pubchem_action",
    "retry_action",
    "secret_action",
    "threads_action",
    "timeout_action",
]


class PubChemActionEntryPoint(ActionEntryPoint):
    """The docs' example entry point."""

    task_queue: str = Field(
        default=WORKER_QUEUE, description="Determines the task queue for this action"
    )

    def load(self) -> Action:
        from .activities import get_cid, get_request
        from .workflows import PubChemWorkflow

        return Action(
            task_queue=self.task_queue,
            workflow=PubChemWorkflow,
            activities=[get_cid, get_request],
        )


class WorkerPluginEntryPoint(ActionEntryPoint):
    """One entry point class for the other actions, naming the workflow class, the activity
    functions and the child workflow classes (names differ from ``Action``'s attributes so an
    entry point never looks like an action)."""

    task_queue: str = WORKER_QUEUE
    workflow_class: str
    activity_names: list[str] = Field(default_factory=list)
    child_workflow_classes: list[str] = Field(default_factory=list)

    def load(self) -> Action:
        from . import activities, workflows

        return Action(
            task_queue=self.task_queue,
            workflow=getattr(workflows, self.workflow_class),
            activities=[getattr(activities, name) for name in self.activity_names],
            child_workflows=[getattr(workflows, name) for name in self.child_workflow_classes],
        )


pubchem_action = PubChemActionEntryPoint(
    name="PubChem", description="Fetches a compound's title and SMILES from PubChem."
)
secret_action = WorkerPluginEntryPoint(
    name="Secrets", workflow_class="SecretWorkflow", activity_names=["inspect_secret"]
)
batch_action = WorkerPluginEntryPoint(
    name="Batch", workflow_class="BatchWorkflow", activity_names=["summarize_batch"]
)
primitives_action = WorkerPluginEntryPoint(
    name="Primitives",
    workflow_class="PrimitivesWorkflow",
    activity_names=["shout", "scale", "count_words", "invert", "is_even", "noop"],
)
fanout_action = WorkerPluginEntryPoint(
    name="Fan-out",
    workflow_class="FanOutWorkflow",
    activity_names=["square"],
    child_workflow_classes=["ChildWorkflow"],
)
info_action = WorkerPluginEntryPoint(name="Info", workflow_class="InfoWorkflow")
collector_action = WorkerPluginEntryPoint(name="Collector", workflow_class="CollectorWorkflow")
counter_action = WorkerPluginEntryPoint(name="Counter", workflow_class="CounterWorkflow")
threads_action = WorkerPluginEntryPoint(
    name="Threads", workflow_class="ThreadsWorkflow", activity_names=["where_am_i"]
)
retry_action = WorkerPluginEntryPoint(
    name="Retry", workflow_class="RetryWorkflow", activity_names=["flaky"]
)
timeout_action = WorkerPluginEntryPoint(
    name="Timeout", workflow_class="TimeoutWorkflow", activity_names=["too_slow"]
)
cancellable_action = WorkerPluginEntryPoint(
    name="Cancellable",
    workflow_class="CancellableWorkflow",
    activity_names=["heartbeat_until_cancelled", "heartbeat_until_cancelled_sync"],
)

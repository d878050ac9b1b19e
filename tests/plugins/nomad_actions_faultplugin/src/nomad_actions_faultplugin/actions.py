"""The ``nomad.plugin`` entry points of the fault plugin.

The working actions run on ``FAULT_QUEUE`` (and ``ok_action`` on ``BROKEN_QUEUE``). The
broken ones, all on ``BROKEN_QUEUE``, fail the ways real plugins do: ``load()`` raises, or
it returns an action (shaped like upstream NOMAD's, which checks nothing) whose workflow is
not a ``@workflow.defn`` class or whose activity is not an ``@activity.defn`` function.
"""

from __future__ import annotations

from typing import Any

from nomad_actions.action import Action, ActionEntryPoint

from . import BROKEN_QUEUE, FAULT_QUEUE


class ShapedAction:
    """An action object by shape only, as upstream NOMAD's ``Action`` (no checks)."""

    def __init__(self, task_queue: str, activities: list[Any], workflow: Any) -> None:
        self.task_queue = task_queue
        self.activities = activities
        self.workflow = workflow
        self.child_workflows: list[Any] = []


class StepsActionEntryPoint(ActionEntryPoint):
    def load(self) -> Action:
        from .activities import fault_step
        from .workflows import StepsWorkflow

        return Action(task_queue=self.task_queue, activities=[fault_step], workflow=StepsWorkflow)


class HeartbeatActionEntryPoint(ActionEntryPoint):
    def load(self) -> Action:
        from .activities import fault_heartbeat
        from .workflows import HeartbeatWorkflow

        return Action(
            task_queue=self.task_queue, activities=[fault_heartbeat], workflow=HeartbeatWorkflow
        )


class EchoActionEntryPoint(ActionEntryPoint):
    def load(self) -> Action:
        from .activities import fault_echo
        from .workflows import EchoWorkflow

        return Action(task_queue=self.task_queue, activities=[fault_echo], workflow=EchoWorkflow)


class RawEchoActionEntryPoint(ActionEntryPoint):
    def load(self) -> Action:
        from .activities import fault_echo_any
        from .workflows import RawEchoWorkflow

        return Action(
            task_queue=self.task_queue, activities=[fault_echo_any], workflow=RawEchoWorkflow
        )


class VersionedActionEntryPoint(ActionEntryPoint):
    def load(self) -> Action:
        from .activities import fault_step_a, fault_step_b
        from .workflows import VersionedWorkflow

        return Action(
            task_queue=self.task_queue,
            activities=[fault_step_a, fault_step_b],
            workflow=VersionedWorkflow,
        )


class BadResultActionEntryPoint(ActionEntryPoint):
    def load(self) -> Action:
        from .activities import fault_bad_result
        from .workflows import BadResultWorkflow

        return Action(
            task_queue=self.task_queue, activities=[fault_bad_result], workflow=BadResultWorkflow
        )


class SoakActionEntryPoint(ActionEntryPoint):
    def load(self) -> Action:
        from .activities import fault_square
        from .workflows import SoakWorkflow

        return Action(task_queue=self.task_queue, activities=[fault_square], workflow=SoakWorkflow)


class OkActionEntryPoint(ActionEntryPoint):
    def load(self) -> Action:
        from .activities import fault_ok
        from .workflows import OkWorkflow

        return Action(task_queue=self.task_queue, activities=[fault_ok], workflow=OkWorkflow)


class BrokenLoadActionEntryPoint(ActionEntryPoint):
    def load(self) -> Action:
        raise RuntimeError("the plugin's configuration file is missing")


class BadWorkflowActionEntryPoint(ActionEntryPoint):
    def load(self) -> Any:
        from .activities import fault_ok
        from .workflows import NotAWorkflow

        return ShapedAction(self.task_queue, [fault_ok], NotAWorkflow)


class BadActivityActionEntryPoint(ActionEntryPoint):
    def load(self) -> Any:
        from .activities import not_an_activity
        from .workflows import OkWorkflow

        return ShapedAction(self.task_queue, [not_an_activity], OkWorkflow)


steps_action = StepsActionEntryPoint(name="Fault steps", task_queue=FAULT_QUEUE)
echo_action = EchoActionEntryPoint(name="Fault echo", task_queue=FAULT_QUEUE)
raw_echo_action = RawEchoActionEntryPoint(name="Fault raw echo", task_queue=FAULT_QUEUE)
versioned_action = VersionedActionEntryPoint(name="Fault versioned", task_queue=FAULT_QUEUE)
bad_result_action = BadResultActionEntryPoint(name="Fault bad result", task_queue=FAULT_QUEUE)
soak_action = SoakActionEntryPoint(name="Fault soak", task_queue=FAULT_QUEUE)
heartbeat_action = HeartbeatActionEntryPoint(name="Fault heartbeat", task_queue=FAULT_QUEUE)
ok_action = OkActionEntryPoint(name="Fault ok", task_queue=BROKEN_QUEUE)
broken_load_action = BrokenLoadActionEntryPoint(name="Fault broken load", task_queue=BROKEN_QUEUE)
bad_workflow_action = BadWorkflowActionEntryPoint(
    name="Fault bad workflow", task_queue=BROKEN_QUEUE
)
bad_activity_action = BadActivityActionEntryPoint(
    name="Fault bad activity", task_queue=BROKEN_QUEUE
)

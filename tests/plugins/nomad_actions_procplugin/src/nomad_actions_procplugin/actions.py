"""The ``nomad.plugin`` entry points of the process-test plugin, on 'nomad-proc-queue'."""

from __future__ import annotations

from nomad_actions.action import Action, ActionEntryPoint

PROC_QUEUE = "nomad-proc-queue"


class HeartbeatActionEntryPoint(ActionEntryPoint):
    def load(self) -> Action:
        from .activities import heartbeat_work
        from .workflows import HeartbeatWorkflow

        return Action(
            task_queue=self.task_queue, activities=[heartbeat_work], workflow=HeartbeatWorkflow
        )


class SleeperActionEntryPoint(ActionEntryPoint):
    def load(self) -> Action:
        from .activities import sleep_work
        from .workflows import SleeperWorkflow

        return Action(task_queue=self.task_queue, activities=[sleep_work], workflow=SleeperWorkflow)


heartbeat_action = HeartbeatActionEntryPoint(
    name="Proc heartbeat",
    description="Sums numbers in a heartbeating activity; records the worker's pid.",
    task_queue=PROC_QUEUE,
)
sleeper_action = SleeperActionEntryPoint(
    name="Proc sleeper",
    description="Sleeps in a plain def activity; records start and finish markers.",
    task_queue=PROC_QUEUE,
)

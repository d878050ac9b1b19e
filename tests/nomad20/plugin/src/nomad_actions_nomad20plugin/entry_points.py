"""Entry points made with nomad-lab 2.0.0's own classes, as a plugin for NOMAD 2.0 is written."""

from nomad.actions import TaskQueue
from nomad.config.models.plugins import ActionEntryPoint

REVERSE_QUEUE = "nomad20-reverse-queue"


class SampleEntryPoint(ActionEntryPoint):
    def load(self):
        from nomad.actions import Action

        from .action import SampleWorkflow, describe_sample

        return Action(
            task_queue=self.task_queue,
            activities=[describe_sample],
            workflow=SampleWorkflow,
            nexus_service_handlers=[],
        )


class AskEntryPoint(ActionEntryPoint):
    def load(self):
        from nomad.actions import Action

        from .action import AskWorkflow

        return Action(task_queue=self.task_queue, activities=[], workflow=AskWorkflow)


sample_action = SampleEntryPoint(
    name="Sample (nomad 2.0)",
    description="Describes a sample in an activity that logs.",
    task_queue=TaskQueue.CPU,
    users=["nomad20-user"],
    groups=["nomad20-group"],
    priority_key=2,
    priority_fairness_key="user_id",
)
reverse_action = SampleEntryPoint(
    name="Sample on the official worker", task_queue=REVERSE_QUEUE, priority_key=4
)
ask_action = AskEntryPoint(name="Asks for input (nomad 2.0)", task_queue=TaskQueue.CPU)

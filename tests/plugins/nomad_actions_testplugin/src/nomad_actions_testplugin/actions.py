"""The ``nomad.plugin`` entry points of the test plugin.

Shaped like a real NOMAD plugin: entry points are instances of ``ActionEntryPoint`` subclasses
whose ``load()`` imports the action lazily.
"""

from __future__ import annotations

from typing import Any

from nomad_actions.action import Action, ActionEntryPoint

TEST_QUEUE = "nomad-test-queue"


class GreetActionEntryPoint(ActionEntryPoint):
    def load(self) -> Action:
        from .activities import make_greeting
        from .workflows import GreetWorkflow

        return Action(
            task_queue=self.task_queue, activities=[make_greeting], workflow=GreetWorkflow
        )


class WaiterActionEntryPoint(ActionEntryPoint):
    def load(self) -> Action:
        from .workflows import WaiterWorkflow

        return Action(task_queue=self.task_queue, activities=[], workflow=WaiterWorkflow)


class FailsActionEntryPoint(ActionEntryPoint):
    def load(self) -> Action:
        from .workflows import FailsWorkflow

        return Action(task_queue=self.task_queue, activities=[], workflow=FailsWorkflow)


class BrokenActionEntryPoint(ActionEntryPoint):
    def load(self) -> Action:
        raise ImportError("missing dependency")


class NotAnActionEntryPoint(ActionEntryPoint):
    def load(self) -> Any:
        return "oops"


class ParserEntryPoint:
    """Stands in for a NOMAD parser entry point, which action discovery must ignore."""

    entry_point_type = "parser"
    name = "Test parser"

    def load(self) -> Any:
        return object()


greet_action = GreetActionEntryPoint(
    name="Greet", description="Greets someone via an activity.", task_queue=TEST_QUEUE
)
waiter_action = WaiterActionEntryPoint(
    name="Waiter", description="Waits for a signal or a timeout.", task_queue=TEST_QUEUE
)
fails_action = FailsActionEntryPoint(
    name="Fails", description="Always fails.", task_queue=TEST_QUEUE
)
broken_action = BrokenActionEntryPoint(name="Broken", task_queue=TEST_QUEUE)
not_an_action = NotAnActionEntryPoint(name="Not an action", task_queue=TEST_QUEUE)
some_parser = ParserEntryPoint()

"""The nomad-actions entry point of the benchmark action (our side only)."""

from __future__ import annotations

from nomad_actions import Action, ActionEntryPoint

ACTION_ID = "bench_plugin.action:bench_action"


class BenchEntryPoint(ActionEntryPoint):
    """Loads the benchmark workflows; `SingleWorkflow` is the action's own workflow."""

    def load(self) -> Action:
        from .workflows import ACTIVITIES, SingleWorkflow

        return Action(task_queue=self.task_queue, workflow=SingleWorkflow, activities=ACTIVITIES)


def entry_point(task_queue: str) -> BenchEntryPoint:
    """The entry point with the action on `task_queue`."""
    return BenchEntryPoint(name="Benchmark action", task_queue=task_queue)

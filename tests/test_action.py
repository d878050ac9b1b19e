"""Tests for nomad_actions.action: Action, ActionEntryPoint and the shape checks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.common import RawValue

from nomad_actions.action import (
    Action,
    ActionEntryPoint,
    group_by_task_queue,
    is_action,
    is_action_entry_point,
    resolve_task_queue,
)
from nomad_actions.config import TaskQueue


class Args(BaseModel):
    user_id: str
    value: int = 0


@dataclass
class Result:
    total: int


@activity.defn
async def add_one(args: Args) -> Result:
    return Result(total=args.value + 1)


@activity.defn
def plain_activity() -> None:
    pass


@workflow.defn
class DefaultNameWorkflow:
    @workflow.run
    async def run(self, args: Args) -> Result:
        return Result(total=args.value)


@workflow.defn(name="custom-name")
class CustomNameWorkflow:
    @workflow.run
    async def run(self) -> None:
        pass


@workflow.defn
class UnhintedWorkflow:
    @workflow.run
    async def run(self, args):  # deliberately without type hints
        return args


@workflow.defn(dynamic=True)
class DynamicWorkflow:
    @workflow.run
    async def run(self, args: Sequence[RawValue]) -> Any:
        return None


class NotAWorkflow:
    async def run(self, args: Args) -> Result:
        return Result(total=0)


def make_action(**kwargs: Any) -> Action:
    values: dict[str, Any] = {
        "task_queue": TaskQueue.CPU,
        "activities": [add_one],
        "workflow": DefaultNameWorkflow,
    }
    values.update(kwargs)
    return Action(**values)


class TestAction:
    def test_stores_arguments(self) -> None:
        action = make_action(
            child_workflows=[CustomNameWorkflow],
            task_queue_activities={TaskQueue.GPU: [plain_activity]},
        )
        assert action.task_queue is TaskQueue.CPU
        assert action.activities == [add_one]
        assert action.workflow is DefaultNameWorkflow
        assert action.child_workflows == [CustomNameWorkflow]
        assert action.task_queue_activities == {TaskQueue.GPU: [plain_activity]}

    def test_defaults(self) -> None:
        action = make_action()
        assert action.child_workflows == []
        assert action.task_queue_activities == {}

    def test_positional_arguments_like_upstream(self) -> None:
        action = Action(TaskQueue.GPU, [add_one], DefaultNameWorkflow, [CustomNameWorkflow])
        assert action.task_queue is TaskQueue.GPU
        assert action.child_workflows == [CustomNameWorkflow]

    @pytest.mark.parametrize("activities", [add_one, (add_one,), None, "add_one", [add_one, 1]])
    def test_activities_must_be_list_of_callables(self, activities: Any) -> None:
        with pytest.raises(TypeError, match="activities must be a list"):
            make_action(activities=activities)

    @pytest.mark.parametrize("children", [CustomNameWorkflow, (CustomNameWorkflow,), "x"])
    def test_child_workflows_must_be_list(self, children: Any) -> None:
        with pytest.raises(TypeError, match="child_workflows must be a list"):
            make_action(child_workflows=children)

    def test_task_queue_activities_must_be_dict_of_lists(self) -> None:
        with pytest.raises(TypeError, match="task_queue_activities must be a dict"):
            make_action(task_queue_activities=[plain_activity])
        with pytest.raises(TypeError, match="values must be lists of callable"):
            make_action(task_queue_activities={"q": plain_activity})

    def test_workflow_must_be_decorated(self) -> None:
        with pytest.raises(TypeError, match=r"NotAWorkflow.*@workflow\.defn"):
            make_action(workflow=NotAWorkflow)
        with pytest.raises(TypeError, match=r"@workflow\.defn"):
            make_action(workflow=DefaultNameWorkflow())

    def test_child_workflow_must_be_decorated(self) -> None:
        with pytest.raises(TypeError, match="NotAWorkflow"):
            make_action(child_workflows=[NotAWorkflow])

    def test_dynamic_main_workflow_rejected(self) -> None:
        with pytest.raises(TypeError, match="dynamic"):
            make_action(workflow=DynamicWorkflow)

    def test_workflow_name(self) -> None:
        assert make_action().workflow_name == "DefaultNameWorkflow"
        assert make_action(workflow=CustomNameWorkflow).workflow_name == "custom-name"

    def test_run_types(self) -> None:
        action = make_action()
        assert action.run_arg_type is Args
        assert action.run_return_type is Result

    def test_run_types_without_argument_or_hints(self) -> None:
        no_arg = make_action(workflow=CustomNameWorkflow)
        assert no_arg.run_arg_type is None
        assert no_arg.run_return_type is type(None)
        unhinted = make_action(workflow=UnhintedWorkflow)
        assert unhinted.run_arg_type is None
        assert unhinted.run_return_type is None

    def test_all_workflows(self) -> None:
        action = make_action(child_workflows=[CustomNameWorkflow])
        assert action.all_workflows() == [DefaultNameWorkflow, CustomNameWorkflow]

    def test_task_queue_name(self) -> None:
        assert make_action().task_queue_name == "cpu-task-queue"
        assert make_action(task_queue="my-queue").task_queue_name == "my-queue"
        assert "cpu-task-queue" in repr(make_action())


class TestActionEntryPoint:
    def test_defaults(self) -> None:
        ep = ActionEntryPoint()
        assert ep.id is None
        assert ep.name is None
        assert ep.entry_point_type == "action"
        assert ep.task_queue == TaskQueue.CPU
        assert ep.users is None
        assert ep.groups is None

    def test_fields(self) -> None:
        ep = ActionEntryPoint(
            id="pkg.mod:ep",
            name="My action",
            description="d",
            plugin_package="pkg",
            task_queue="other-queue",
            users=["u1"],
            groups=["g1"],
        )
        assert ep.model_dump()["task_queue"] == "other-queue"
        assert ep.users == ["u1"]
        assert ep.groups == ["g1"]

    def test_entry_point_type_is_fixed(self) -> None:
        with pytest.raises(ValueError, match="entry_point_type"):
            ActionEntryPoint(entry_point_type="parser")

    def test_base_load_not_implemented(self) -> None:
        with pytest.raises(NotImplementedError, match="load"):
            ActionEntryPoint().load()

    def test_subclass_load(self) -> None:
        class MyEntryPoint(ActionEntryPoint):
            def load(self) -> Action:
                return make_action(task_queue=self.task_queue)

        action = MyEntryPoint(task_queue=TaskQueue.GPU).load()
        assert action.task_queue is TaskQueue.GPU


class UpstreamShapedEntryPoint:
    """Looks like nomad-lab's ActionEntryPoint without being ours."""

    entry_point_type = "action"
    id = None

    def load(self) -> Action:
        return make_action()


class TestShapeChecks:
    def test_is_action_entry_point(self) -> None:
        assert is_action_entry_point(ActionEntryPoint())
        assert is_action_entry_point(UpstreamShapedEntryPoint())

    @pytest.mark.parametrize(
        "obj",
        [
            ActionEntryPoint,
            UpstreamShapedEntryPoint,
            "action",
            None,
            type("Parser", (), {"entry_point_type": "parser", "load": lambda self: None})(),
            type("NoLoad", (), {"entry_point_type": "action", "load": None})(),
        ],
    )
    def test_is_not_action_entry_point(self, obj: Any) -> None:
        assert not is_action_entry_point(obj)

    def test_is_action(self) -> None:
        assert is_action(make_action())
        upstream_like = type(
            "UpstreamAction", (), {"task_queue": "q", "activities": [], "workflow": object}
        )()
        assert is_action(upstream_like)
        assert not is_action(Action)
        assert not is_action("oops")
        assert not is_action(ActionEntryPoint())


class EchoService:
    """Stands in for a Nexus service handler instance (upstream 2.0 stores any object)."""


class TestNexusServiceHandlers:
    """Upstream 2.0's ``Action(..., nexus_service_handlers=...)``: accepted and stored; our
    worker refuses an action with handlers, naming it, instead of ignoring them."""

    def test_accepted_and_stored(self) -> None:
        assert Action("q", [add_one], DefaultNameWorkflow).nexus_service_handlers == []
        service = EchoService()
        action = Action("q", [add_one], DefaultNameWorkflow, nexus_service_handlers=[service])
        assert action.nexus_service_handlers == [service]
        with pytest.raises(TypeError, match="nexus_service_handlers must be a list"):
            Action("q", [add_one], DefaultNameWorkflow, nexus_service_handlers=service)  # type: ignore[arg-type]

    def test_worker_refuses_them_naming_the_action(self) -> None:
        from nomad_actions import register_action, unregister_action
        from nomad_actions.errors import ActionLoadError
        from nomad_actions.worker import Worker

        action = Action(
            "nexus-q", [add_one], DefaultNameWorkflow, nexus_service_handlers=[EchoService()]
        )
        action_id = register_action(action, id="test_action:with-nexus")
        try:
            for given in ([action_id], None):
                with pytest.raises(ActionLoadError) as refused:
                    Worker("nexus-q", actions=given)
                message = str(refused.value)
                assert '"test_action:with-nexus"' in message
                assert "nexus_service_handlers (EchoService)" in message
            # Empty handlers (what upstream plugins pass by default) are fine.
            plain = Action("nexus-q", [add_one], DefaultNameWorkflow, nexus_service_handlers=[])
            worker = Worker("nexus-q", actions=[plain])
            assert worker.actions[0] is plain
            worker._activity_bridge.close()  # never run: stop its threads
        finally:
            unregister_action(action_id)


# ---------------------------------------------------------------------- task queues


@pytest.mark.parametrize(
    ("given", "name"),
    [
        ("cpu", TaskQueue.CPU.value),
        ("GPU", TaskQueue.GPU.value),
        (TaskQueue.CPU, TaskQueue.CPU.value),
        ("my-queue", "my-queue"),
    ],
)
def test_resolve_task_queue(given: Any, name: str) -> None:
    assert resolve_task_queue(given) == name


def test_group_by_task_queue() -> None:
    on_cpu = Action(task_queue="cpu", activities=[add_one], workflow=DefaultNameWorkflow)
    also_cpu = Action(
        task_queue=TaskQueue.CPU,
        activities=[],
        workflow=CustomNameWorkflow,
        task_queue_activities={"gpu": [plain_activity]},
    )
    elsewhere = Action(
        task_queue="other",
        activities=[],
        workflow=UnhintedWorkflow,
        task_queue_activities={TaskQueue.CPU: [add_one]},
    )
    groups = group_by_task_queue([on_cpu, also_cpu, elsewhere])
    # Queues in the order first met; aliases and enum members resolve to one name.
    assert list(groups) == [TaskQueue.CPU.value, TaskQueue.GPU.value, "other"]
    cpu = groups[TaskQueue.CPU.value]
    assert cpu.actions == [on_cpu, also_cpu]
    assert cpu.activities == [add_one]  # registered there by `elsewhere`
    gpu = groups[TaskQueue.GPU.value]
    assert (gpu.actions, gpu.activities) == ([], [plain_activity])
    assert groups["other"].actions == [elsewhere] and groups["other"].activities == []
    assert group_by_task_queue([]) == {}

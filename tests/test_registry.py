"""Tests for nomad_actions.registry, against the installed test plugin.

The plugin lives in tests/plugins/nomad_actions_testplugin and must be installed
(``pip install -e tests/plugins/nomad_actions_testplugin``); discovery goes through the real
``nomad.plugin`` entry points.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from temporalio import workflow

from nomad_actions import registry
from nomad_actions.action import Action, ActionEntryPoint
from nomad_actions.config import TaskQueue
from nomad_actions.errors import (
    ActionLoadError,
    AmbiguousActionError,
    NomadActionsError,
    UnknownActionError,
)

PLUGIN = "nomad_actions_testplugin.actions"
GREET = f"{PLUGIN}:greet_action"
WAITER = f"{PLUGIN}:waiter_action"
FAILS = f"{PLUGIN}:fails_action"
BROKEN = f"{PLUGIN}:broken_action"
NOT_AN_ACTION = f"{PLUGIN}:not_an_action"
PARSER = f"{PLUGIN}:some_parser"


@pytest.fixture(autouse=True, scope="module")
def _plugin_installed() -> None:
    try:
        importlib.metadata.distribution("nomad-actions-testplugin")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(
            "the test plugin is not installed: "
            "pip install -e tests/plugins/nomad_actions_testplugin"
        )


@pytest.fixture(autouse=True)
def _clean_registry() -> Iterator[None]:
    registry.clear_registered_actions()
    registry.refresh_actions()
    yield
    registry.clear_registered_actions()
    registry.refresh_actions()


@workflow.defn(name="LocalWorkflow")
class LocalWorkflow:
    @workflow.run
    async def run(self, value: int) -> int:
        return value


def local_action() -> Action:
    return Action(task_queue=TaskQueue.CPU, activities=[], workflow=LocalWorkflow)


class UpstreamShapedEntryPoint:
    """Shaped like nomad-lab's ActionEntryPoint (a pydantic model there), not a subclass."""

    entry_point_type = "action"

    def __init__(self, name: str | None = None, id: str | None = None) -> None:
        self.id = id
        self.name = name
        self.task_queue = TaskQueue.CPU

    def load(self) -> Action:
        return local_action()


class TestDiscovery:
    def test_finds_plugin_actions_by_entry_point_value(self) -> None:
        actions = registry.get_actions()
        for action_id in (GREET, WAITER, FAILS, BROKEN, NOT_AN_ACTION):
            assert action_id in actions
        assert PARSER not in actions

    def test_sets_id_and_plugin_package(self) -> None:
        ep = registry.get_actions()[GREET]
        assert ep.id == GREET
        assert ep.name == "Greet"
        assert ep.plugin_package == "nomad_actions_testplugin"
        assert ep.task_queue == "nomad-test-queue"

    def test_does_not_mutate_the_module_object(self) -> None:
        from nomad_actions_testplugin import actions

        registry.get_actions()
        assert actions.greet_action.id is None

    def test_get_actions_returns_a_copy(self) -> None:
        registry.get_actions().clear()
        assert GREET in registry.get_actions()

    def test_load_plugin_actions(self) -> None:
        from nomad_actions_testplugin.models import GreetInput, GreetOutput, WaitInput

        greet = registry.load_action(GREET)
        assert greet.workflow_name == "GreetWorkflow"
        assert greet.task_queue == "nomad-test-queue"
        assert [a.__name__ for a in greet.activities] == ["make_greeting"]
        assert greet.run_arg_type is GreetInput
        assert greet.run_return_type is GreetOutput

        waiter = registry.load_action(WAITER)
        assert waiter.workflow_name == "WaiterWorkflow"
        assert waiter.run_arg_type is WaitInput
        assert waiter.run_return_type is str
        assert registry.load_action(FAILS).workflow_name == "FailsWorkflow"

    def test_load_is_cached(self) -> None:
        assert registry.load_action(GREET) is registry.load_action(GREET)

    def test_refresh_rediscovers(self) -> None:
        first = registry.load_action(GREET)
        registry.refresh_actions()
        assert registry.load_action(GREET) is not first

    def test_load_failure_upstream_message(self) -> None:
        with pytest.raises(ActionLoadError) as info:
            registry.load_action(BROKEN)
        assert str(info.value) == f'Failed to load action from entry point "{BROKEN}"'
        assert isinstance(info.value.__cause__, ImportError)
        assert str(info.value.__cause__) == "missing dependency"

    def test_not_an_action_upstream_message(self) -> None:
        with pytest.raises(ActionLoadError) as info:
            registry.load_action(NOT_AN_ACTION)
        assert str(info.value) == (
            f'The following entry point did not return an Action: "{NOT_AN_ACTION}"'
        )

    def test_entry_point_that_fails_to_import_is_skipped(
        self, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        group = registry.ENTRY_POINT_GROUP
        fake = [
            importlib.metadata.EntryPoint("missing", "no_such_module_xyz:thing", group),
            importlib.metadata.EntryPoint("greet", GREET, group),
        ]
        monkeypatch.setattr(registry, "entry_points", lambda group: fake)
        registry.refresh_actions()
        with caplog.at_level(logging.WARNING, logger=registry.__name__):
            actions = registry.get_actions()
        assert list(actions) == [GREET]
        assert "no_such_module_xyz:thing" in caplog.text


class TestUnknown:
    def test_unknown_action_lists_known_ids(self) -> None:
        with pytest.raises(UnknownActionError) as info:
            registry.load_action("nope")
        known = sorted(registry.get_actions())
        assert str(info.value) == f'Unknown action "nope". Known actions: {", ".join(known)}'
        assert info.value.known_ids == known
        assert info.value.action_id == "nope"
        assert isinstance(info.value, LookupError)
        assert isinstance(info.value, NomadActionsError)

    def test_unknown_when_nothing_installed(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(registry, "entry_points", lambda group: [])
        registry.refresh_actions()
        with pytest.raises(UnknownActionError, match="no actions are installed"):
            registry.get_action_entry_point("nope")


class TestRegister:
    def test_register_entry_point(self) -> None:
        ep = ActionEntryPoint(id="local:ep")
        with pytest.raises(NotImplementedError):
            ep.load()

        class LocalEntryPoint(ActionEntryPoint):
            def load(self) -> Action:
                return local_action()

        assert registry.register_action(LocalEntryPoint(id="local:ep")) == "local:ep"
        assert registry.get_action_entry_point("local:ep").id == "local:ep"
        assert registry.load_action("local:ep").workflow_name == "LocalWorkflow"
        assert GREET in registry.get_actions()

    def test_register_with_explicit_id_copies(self) -> None:
        ep = UpstreamShapedEntryPoint(name="Upstream")
        assert registry.register_action(ep, id="local:upstream") == "local:upstream"
        assert ep.id is None
        assert registry.get_action_entry_point("local:upstream").id == "local:upstream"

    def test_upstream_shaped_entry_point(self) -> None:
        registry.register_action(UpstreamShapedEntryPoint(id="local:upstream"))
        action = registry.load_action("local:upstream")
        assert action.workflow is LocalWorkflow
        assert action.run_arg_type is int

    def test_register_action_directly(self) -> None:
        action = Action(task_queue="direct-queue", activities=[], workflow=LocalWorkflow)
        registry.register_action(action, id="local:direct")
        ep = registry.get_action_entry_point("local:direct")
        assert ep.task_queue == "direct-queue"
        assert ep.entry_point_type == "action"
        assert registry.load_action("local:direct") is action

    def test_register_needs_an_id(self) -> None:
        with pytest.raises(ValueError, match="id"):
            registry.register_action(UpstreamShapedEntryPoint())
        with pytest.raises(ValueError, match="id"):
            registry.register_action(local_action())

    def test_register_rejects_other_objects(self) -> None:
        with pytest.raises(TypeError, match="str"):
            registry.register_action("oops", id="x")

    def test_registered_overrides_discovered(self) -> None:
        registry.load_action(GREET)
        registry.register_action(UpstreamShapedEntryPoint(), id=GREET)
        assert registry.load_action(GREET).workflow is LocalWorkflow
        registry.unregister_action(GREET)
        assert registry.load_action(GREET).workflow_name == "GreetWorkflow"

    def test_unregister_and_clear(self) -> None:
        registry.register_action(UpstreamShapedEntryPoint(), id="a")
        registry.register_action(UpstreamShapedEntryPoint(), id="b")
        registry.unregister_action("a")
        registry.unregister_action("never-registered")
        assert "a" not in registry.get_actions()
        assert "b" in registry.get_actions()
        registry.clear_registered_actions()
        assert "b" not in registry.get_actions()

    def test_registered_load_errors(self) -> None:
        class Broken(UpstreamShapedEntryPoint):
            def load(self) -> Any:
                raise RuntimeError("kaput")

        registry.register_action(Broken(), id="local:broken")
        with pytest.raises(ActionLoadError, match='"local:broken"') as info:
            registry.load_action("local:broken")
        assert isinstance(info.value.__cause__, RuntimeError)


class TestResolve:
    def test_by_id(self) -> None:
        assert registry.resolve_action_id(GREET) == GREET
        assert registry.resolve_action_id(action_id=GREET) == GREET

    def test_unknown_id(self) -> None:
        with pytest.raises(UnknownActionError, match="Greet"):
            registry.resolve_action_id(action_id="Greet")

    def test_action_name_matches_id(self) -> None:
        assert registry.resolve_action_id(action_name=WAITER) == WAITER

    def test_action_name_matches_name(self) -> None:
        assert registry.resolve_action_id(action_name="Greet") == GREET
        assert registry.resolve_action_id(action_name="Waiter") == WAITER

    def test_action_name_unknown(self) -> None:
        with pytest.raises(UnknownActionError, match='Unknown action "Nobody"'):
            registry.resolve_action_id(action_name="Nobody")

    def test_ambiguous_name(self) -> None:
        registry.register_action(UpstreamShapedEntryPoint(name="Greet"), id="local:greet")
        with pytest.raises(AmbiguousActionError) as info:
            registry.resolve_action_id(action_name="Greet")
        assert info.value.known_ids == sorted([GREET, "local:greet"])
        assert GREET in str(info.value)
        assert "local:greet" in str(info.value)

    @pytest.mark.parametrize(
        "kwargs", [{}, {"action_id": GREET, "action_name": "Greet"}], ids=["none", "both"]
    )
    def test_exactly_one_argument(self, kwargs: dict[str, str]) -> None:
        with pytest.raises(TypeError, match="exactly one"):
            registry.resolve_action_id(**kwargs)

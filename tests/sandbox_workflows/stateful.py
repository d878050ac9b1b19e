"""A workflow module with module-level state of every kind a run could leak.

Each run records what it saw at start, then mutates all of it; a later run (or an
interleaved one) must see the pristine values again.
"""

from __future__ import annotations

import dataclasses
import os
from typing import ClassVar

from temporalio import workflow
from temporalio.worker.workflow_sandbox import RestrictedWorkflowAccessError

COUNTER = 0
ITEMS: list[str] = []
TABLE: dict[str, int] = {}


def _helper_state() -> list[str]:
    return ITEMS


def _make_closure():
    seen: list[str] = []

    def remember(value: str) -> list[str]:
        seen.append(value)
        return list(seen)

    return remember


REMEMBER = _make_closure()


class Config:
    """A plain class whose attributes a run assigns and mutates."""

    level = 0
    tags: ClassVar[list[str]] = []


class Registry:
    """A plain class whose module-level instance holds run state in its `__dict__`."""

    def __init__(self) -> None:
        self.entries: list[str] = []


REGISTRY = Registry()


@dataclasses.dataclass
class Settings:
    """A dataclass instance at module level, with a mutable field."""

    names: list[str] = dataclasses.field(default_factory=list)


SETTINGS = Settings()


def default_arg(value: str, acc: list[str] = []) -> list[str]:  # noqa: B006
    acc.append(value)
    return list(acc)


@workflow.defn(name="SandboxLeakWorkflow")
class LeakWorkflow:
    """Reports the module state it finds, then changes all of it."""

    def __init__(self) -> None:
        self._go = False

    @workflow.run
    async def run(self, tag: str) -> dict:
        global COUNTER
        seen = {
            "counter": COUNTER,
            "items": list(ITEMS),
            "table": dict(TABLE),
            "closure": REMEMBER(tag),
            "config_level": Config.level,
            "config_tags": list(Config.tags),
            "default_arg": default_arg(tag),
            "class_attr": getattr(LeakWorkflow, "marker", None),
            "registry": list(REGISTRY.entries),
            "settings": list(SETTINGS.names),
        }
        COUNTER += 1
        ITEMS.append(tag)
        _helper_state().append(tag + "-helper")
        TABLE[tag] = COUNTER
        Config.level += 1
        Config.tags.append(tag)
        LeakWorkflow.marker = tag
        REGISTRY.entries.append(tag)
        SETTINGS.names.append(tag)
        # Wait, so that several runs are open at once (interleaving on the cache).
        await workflow.wait_condition(lambda: self._go)
        seen["counter_after"] = COUNTER
        seen["items_after"] = list(ITEMS)
        return seen

    @workflow.signal
    def go(self) -> None:
        self._go = True


@workflow.defn(name="SandboxRestrictedWorkflow")
class RestrictedWorkflow:
    """Touches a restricted call (os.getcwd) unless passed through / unrestricted."""

    @workflow.run
    async def run(self, mode: str) -> str:
        if mode == "unrestricted":
            with workflow.unsafe.sandbox_unrestricted():
                return str(bool(os.getcwd()))
        if mode == "passthrough":
            with workflow.unsafe.imports_passed_through():
                import tests.sandbox_workflows.passed as passed
            return str(passed.VALUE)
        try:
            os.getcwd()
        except RestrictedWorkflowAccessError as err:
            return f"{type(err).__module__}.{type(err).__qualname__}: {err}"
        return "not restricted"

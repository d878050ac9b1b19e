"""Input schemas and validation of actions (``nomad_actions.schemas``); no server needed."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest
from pydantic import BaseModel, Field
from temporalio import workflow

import nomad_actions
import nomad_actions.manager
from nomad_actions import (
    Action,
    ActionInputError,
    UnknownActionError,
    get_action_schema,
    get_all_action_schemas,
    register_action,
    start_action,
    unregister_action,
    validate_action_arg,
)
from nomad_actions_testplugin.models import GreetInput, WaitInput

from .conftest import FAILS, GREET, WAITER

BROKEN = "nomad_actions_testplugin.actions:broken_action"
NOT_AN_ACTION = "nomad_actions_testplugin.actions:not_an_action"


class Sample(BaseModel):
    formula: str
    mass: float = Field(gt=0)


class Batch(BaseModel):
    user_id: str
    samples: list[Sample]
    note: str | None = None


class OnlyUser(BaseModel):
    user_id: str


@workflow.defn(name="SchemaBatchWorkflow")
class BatchWorkflow:
    @workflow.run
    async def run(self, data: Batch) -> int:
        return len(data.samples)


@workflow.defn(name="SchemaOnlyUserWorkflow")
class OnlyUserWorkflow:
    @workflow.run
    async def run(self, data: OnlyUser) -> None:
        return None


@workflow.defn(name="SchemaUntypedWorkflow")
class UntypedWorkflow:
    @workflow.run
    async def run(self, data):  # type: ignore[no-untyped-def]
        return data


def register(workflow_cls: type) -> Iterator[str]:
    action_id = f"test_schemas:{workflow_cls.__name__}-{uuid.uuid4().hex[:6]}"
    register_action(
        Action(task_queue="schema-queue", activities=[], workflow=workflow_cls), id=action_id
    )
    try:
        yield action_id
    finally:
        unregister_action(action_id)


@pytest.fixture
def batch_action() -> Iterator[str]:
    yield from register(BatchWorkflow)


def test_schema_is_pydantics_without_user_id() -> None:
    schema = get_action_schema(GREET)
    reference = pydantic.TypeAdapter(GreetInput).json_schema()
    assert "user_id" in reference["properties"] and "user_id" in reference["required"]
    del reference["properties"]["user_id"]
    reference["required"].remove("user_id")
    assert schema == reference
    assert set(schema["properties"]) == {"upload_id", "name", "times"}
    assert schema["required"] == ["name"]
    assert schema["properties"]["times"]["minimum"] == 1
    json.dumps(schema)  # plain JSON


def test_dataclass_input_and_an_empty_required_list() -> None:
    schema = get_action_schema(WAITER)
    assert schema["title"] == WaitInput.__name__
    assert set(schema["properties"]) == {"seconds"}
    assert "required" not in schema, "a required list without user_id is left out when empty"
    for action_id in register(OnlyUserWorkflow):
        only = get_action_schema(action_id)
        assert only["properties"] == {} and "required" not in only


def test_nested_models_keep_their_definitions(batch_action: str) -> None:
    schema = get_action_schema(batch_action)
    assert set(schema["properties"]) == {"samples", "note"}
    assert schema["required"] == ["samples"]
    assert schema["properties"]["samples"]["items"] == {"$ref": "#/$defs/Sample"}
    assert schema["$defs"]["Sample"]["properties"]["mass"]["exclusiveMinimum"] == 0


def test_untyped_input_accepts_anything() -> None:
    for action_id in register(UntypedWorkflow):
        assert get_action_schema(action_id) == {}
        assert validate_action_arg(action_id, {"anything": 1}) == {"anything": 1}


def test_schema_by_entry_point_name_and_unknown_ids() -> None:
    assert get_action_schema("Greet") == get_action_schema(GREET)
    with pytest.raises(UnknownActionError, match="no-such-action"):
        get_action_schema("no-such-action")


def test_schemas_are_copies() -> None:
    get_action_schema(GREET)["properties"].clear()
    assert "name" in get_action_schema(GREET)["properties"]


def test_all_schemas_skip_broken_entry_points(batch_action: str) -> None:
    schemas = get_all_action_schemas()
    for action_id in (GREET, WAITER, FAILS, batch_action):
        assert schemas[action_id] == get_action_schema(action_id)
    assert BROKEN not in schemas and NOT_AN_ACTION not in schemas
    assert all("user_id" not in s.get("properties", {}) for s in schemas.values())


def test_validate_returns_the_typed_value() -> None:
    value = validate_action_arg(GREET, {"user_id": "u1", "name": "Ada", "times": "2"})
    assert value == GreetInput(user_id="u1", name="Ada", times=2)
    wait = validate_action_arg(WAITER, {"user_id": "u2"})
    assert wait == WaitInput(user_id="u2", seconds=60.0)


def test_validation_errors_are_start_actions_word_for_word(batch_action: str) -> None:
    bad: list[tuple[str, Any]] = [
        (GREET, {"user_id": "u", "times": 0}),
        (batch_action, {"user_id": "u", "samples": [{"formula": "H2O", "mass": -1}]}),
        (GREET, None),
    ]
    for action_id, data in bad:
        with pytest.raises(ActionInputError) as validated:
            validate_action_arg(action_id, data)
        with pytest.raises(ActionInputError) as started:
            start_action(action_id, data)  # fails before anything is sent
        assert str(validated.value) == str(started.value)
        assert action_id in str(validated.value)
    with pytest.raises(ActionInputError, match=r'field "samples\.0\.mass"'):
        validate_action_arg(batch_action, bad[1][1])


def test_validating_an_unknown_action_is_a_lookup_and_a_value_error() -> None:
    with pytest.raises(UnknownActionError) as info:
        validate_action_arg("no-such-action", {})
    assert isinstance(info.value, ValueError) and isinstance(info.value, LookupError)
    assert info.value.action_id == "no-such-action"
    assert GREET in info.value.known_ids


def test_exported_where_upstream_has_them() -> None:
    for module in (nomad_actions, nomad_actions.manager):
        names = ("get_action_schema", "get_all_action_schemas", "validate_action_arg")
        for name in names:
            assert name in module.__all__
        # manager's get_all_action_schemas returns upstream 2.0's ActionSchemaInfo rows and
        # its validate_action_arg takes upstream's argument name (tests/test_manager.py).
        for name in names if module is nomad_actions else names[:1]:
            assert getattr(module, name) is getattr(nomad_actions.schemas, name)

"""``nomad-actions actions`` and ``schema``: what the installed plugins offer (ids, task
queues, workflow types, input fields and schemas, broken entry points). Needs no server.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import typing
from typing import Any

from nomad_actions.cli.common import (
    EXIT_OK,
    OneLineFormatter,
    add_json_option,
    add_parser,
    load_error_text,
    out,
    print_json,
    setup_logging,
    table,
    type_name,
)


def _input_fields(tp: Any) -> list[dict[str, Any]] | None:
    """Fields of a Pydantic model or dataclass input type; None for other types."""
    import pydantic

    if isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
        return [
            {"name": name, "type": type_name(f.annotation), "required": f.is_required()}
            for name, f in tp.model_fields.items()
        ]
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        try:
            hints = typing.get_type_hints(tp)
        except Exception:
            hints = {}
        return [
            {
                "name": f.name,
                "type": type_name(hints.get(f.name, f.type)),
                "required": f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING,
            }
            for f in dataclasses.fields(tp)
            if f.init
        ]
    return None


def _input_summary(tp: Any) -> str:
    if tp is None:
        return "(any)"
    fields = _input_fields(tp)
    if fields is None:
        return type_name(tp)
    names = ", ".join(f["name"] + ("" if f["required"] else "?") for f in fields)
    return f"{type_name(tp)}({names})"


# ---------------------------------------------------------------------- actions


def _discover_actions() -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Entry points by id, and (entry point, error) of those that failed to import."""
    from nomad_actions.registry import get_actions

    class Collect(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.WARNING)
            self.records: list[logging.LogRecord] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.records.append(record)

    registry_logger = logging.getLogger("nomad_actions.registry")
    collect, propagate = Collect(), registry_logger.propagate
    registry_logger.addHandler(collect)
    registry_logger.propagate = False
    try:
        entry_points = get_actions()
    finally:
        registry_logger.removeHandler(collect)
        registry_logger.propagate = propagate
    failed = []
    for record in collect.records:
        name = str(record.args[-1]) if isinstance(record.args, tuple) and record.args else ""
        err = record.exc_info[1] if record.exc_info else None
        failed.append((name, f"{type(err).__name__}: {err}" if err else record.getMessage()))
    return entry_points, failed


def add_actions(subparsers: Any) -> None:
    """Register the `actions` command on the subparsers."""
    parser = add_parser(
        subparsers,
        "actions",
        help="list the installed actions",
        description=(
            "List the actions found in the installed plugins ('nomad.plugin' entry points): "
            "id, task queue, workflow type and input fields (? marks optional fields), and "
            "the entry points that fail to load, with their error. Needs no server."
        ),
    )
    add_json_option(parser)
    parser.set_defaults(handler=_run_actions)


def _run_actions(args: argparse.Namespace) -> int:
    from nomad_actions.registry import load_action

    setup_logging("WARNING", OneLineFormatter())
    entry_points, broken = _discover_actions()
    found = []
    for action_id, entry_point in sorted(entry_points.items()):
        try:
            action = load_action(action_id)
        except Exception as err:
            broken.append((action_id, load_error_text(err)))
            continue
        tp = action.run_arg_type
        found.append(
            {
                "id": action_id,
                "name": getattr(entry_point, "name", None),
                "description": getattr(entry_point, "description", None),
                "task_queue": action.task_queue_name,
                "workflow_type": action.workflow_name,
                "input_type": None if tp is None else type_name(tp),
                "input_fields": _input_fields(tp) if tp is not None else None,
                "_summary": _input_summary(tp),
            }
        )
    broken.sort()
    if args.json:
        actions = [{k: v for k, v in a.items() if not k.startswith("_")} for a in found]
        print_json({"actions": actions, "broken": [{"id": i, "error": e} for i, e in broken]})
        return EXIT_OK
    if found:
        rows = [[a["id"], a["task_queue"], a["workflow_type"], a["_summary"]] for a in found]
        out(table(["ID", "TASK QUEUE", "WORKFLOW", "INPUT"], rows))
        out()
        out("? = optional field. `nomad-actions schema ID` prints an action's input schema.")
    else:
        out("No actions are installed (plugins expose them as 'nomad.plugin' entry points).")
    if broken:
        out()
        out(f"Entry points that failed to load ({len(broken)}):")
        for action_id, error in broken:
            out(f"  {action_id}: {error}")
    return EXIT_OK


# ---------------------------------------------------------------------- schema


def add_schema(subparsers: Any) -> None:
    """Register the `schema` command on the subparsers."""
    parser = add_parser(
        subparsers,
        "schema",
        help="print the JSON schema of an action's input",
        description=(
            "Print the JSON schema of an action's input (the type of its workflow's run "
            "argument), without user_id, which `start --user` fills in. Needs no server."
        ),
    )
    parser.add_argument("action", metavar="ACTION", help="action id (or the action's name)")
    add_json_option(parser)
    parser.set_defaults(handler=_run_schema)


def _run_schema(args: argparse.Namespace) -> int:
    from nomad_actions.schemas import get_action_schema

    setup_logging("WARNING", OneLineFormatter())
    schema = get_action_schema(args.action)
    out(json.dumps(schema, indent=None if args.json else 2, ensure_ascii=False))
    return EXIT_OK

"""The ``nomad-actions`` command line.

One function per subcommand, each registered on the subparsers by an ``_add_<name>``
function listed in :data:`_COMMANDS`; the parser stores the handler as ``args.handler``,
which returns the exit code. Expected errors (unknown action, invalid input, unknown
workflow id, server unreachable, ...) become one line on stderr, never a traceback.

Exit codes: 0 success; 1 the action failed, or a runtime error (server unreachable,
unknown workflow id, broken plugin, timeout); 2 usage or input error (bad option, unknown
action, invalid JSON, input that fails validation, nothing to run); 130 interrupted.

Where the server is: ``--host/--port``, else ``NOMAD_TEMPORAL_HOST/PORT``, else the server of
a running ``nomad-actions dev`` (found through ``<data dir>/dev.json``), else localhost:7233.

Run it as ``nomad-actions ...`` (console script) or ``python -m nomad_actions ...``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import json
import logging
import os
import re
import shutil
import signal
import sys
import threading
import time
import typing
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from nomad_actions import __version__
from nomad_actions.config import (
    ENV_API_SECRET,
    ENV_HOST,
    ENV_MODE,
    ENV_PORT,
    configure,
    get_config,
)

__all__ = ["default_data_dir", "find_dev_server", "main"]

PROG = "nomad-actions"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

#: Where `nomad-actions dev` keeps its database, log and dev.json, unless --data-dir says.
ENV_DATA_DIR = "NOMAD_ACTIONS_DATA_DIR"
DEV_INFO_FILE = "dev.json"
DEV_DB_FILE = "temporal.db"
DEV_LOG_FILE = "temporal.log"

#: How often `start --wait` looks at the progress while it waits for the result.
POLL_INTERVAL = 1.0

EXIT_CODES_EPILOG = """exit codes:
  0    success
  1    the action failed, or a runtime error: server unreachable, unknown workflow id,
       broken plugin, timeout
  2    usage or input error: bad option, unknown action, invalid JSON, input that fails
       validation
  130  interrupted (Ctrl-C)"""

logger = logging.getLogger("nomad_actions.cli")


class CommandError(Exception):
    """An error to report as one line on stderr, with an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


class _HelpFormatter(argparse.HelpFormatter):
    """Fills paragraphs like the default formatter, but keeps blocks whose lines are
    indented (examples, the exit code table) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for para in text.split("\n\n"):
            lines = para.splitlines()
            if any(line.startswith("  ") for line in lines):
                paragraphs.append("\n".join(indent + line for line in lines))
            else:
                paragraphs.append(super()._fill_text(para, width, indent))
        return "\n\n".join(paragraphs)


def _add_parser(subparsers: Any, name: str, help: str, description: str) -> Any:
    return subparsers.add_parser(
        name,
        help=help,
        description=description,
        epilog=EXIT_CODES_EPILOG,
        formatter_class=_HelpFormatter,
    )


# ---------------------------------------------------------------------- option helpers


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _non_negative_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds (a number), got {text!r}") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def _positive_seconds(text: str) -> float:
    value = _non_negative_seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be from 1 to 65535, got {value}")
    return value


def _log_level(text: str) -> str:
    level = text.upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"expected one of {', '.join(LOG_LEVELS)} (any case), got {text!r}"
        )
    return level


def _status_name(text: str) -> str:
    from temporalio.client import WorkflowExecutionStatus

    name = text.strip().upper().replace("-", "_")
    name = {"CANCELLED": "CANCELED", "TIMEDOUT": "TIMED_OUT"}.get(name, name)
    names = [s.name for s in WorkflowExecutionStatus]
    if name not in names:
        raise argparse.ArgumentTypeError(
            f"expected one of {', '.join(names)} (any case), got {text!r}"
        )
    return name


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "connection",
        "Where the Temporal server is. Options not given come from the environment "
        "(NOMAD_TEMPORAL_HOST, NOMAD_TEMPORAL_PORT, NOMAD_TEMPORAL_NAMESPACE, "
        "NOMAD_TEMPORAL_API_KEY), then nomad.yaml (or the files in NOMAD_CONFIG), section "
        "temporal; without host and port there, a running `nomad-actions dev` "
        f"(found through <data dir>/{DEV_INFO_FILE}, data dir ${ENV_DATA_DIR} or "
        "~/.local/share/nomad-actions), else localhost:7233, namespace 'default'.",
    )
    group.add_argument("--host", help="Temporal server host name")
    group.add_argument("--port", type=_port, help="Temporal server gRPC port")
    group.add_argument("--namespace", help="Temporal namespace")
    group.add_argument(
        "--connect-timeout",
        type=_positive_seconds,
        metavar="SECONDS",
        help="give up connecting after this many seconds (default 5)",
    )


def _connection_from_environment() -> bool:
    """Whether the host or port is set by `configure()`, nomad.yaml or the environment."""
    from nomad_actions import config

    explicit = getattr(config, "_configured", None) is not None
    sources = config.settings().sources
    return explicit or "temporal.host" in sources or "temporal.port" in sources


def _apply_connection_options(args: argparse.Namespace) -> None:
    """Make the connection options the settings for this process (see `configure`).

    Without --host/--port and without NOMAD_TEMPORAL_HOST/PORT, a running
    `nomad-actions dev` is used when its dev.json is found.
    """
    dev: dict[str, Any] | None = None
    if args.host is None and args.port is None and not _connection_from_environment():
        dev = find_dev_server()
    try:
        if dev is not None:
            logger.debug(
                "Using the dev server at %s:%s (pid %s)", dev["host"], dev["port"], dev["pid"]
            )
            configure(
                host=dev["host"],
                port=dev["port"],
                namespace=args.namespace or dev.get("namespace") or None,
                connect_timeout=args.connect_timeout,
                development=True,  # `nomad-actions dev` runs its workers without encryption
            )
            return
        configure(
            host=args.host,
            port=args.port,
            namespace=args.namespace,
            connect_timeout=args.connect_timeout,
        )
    except ValueError as err:  # e.g. NOMAD_TEMPORAL_PORT is not a number
        raise CommandError(str(err), EXIT_USAGE) from None


def _add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        action="store_true",
        help="print machine-readable JSON instead of text (errors still go to stderr)",
    )


def _add_user_option(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--user", "-u", metavar="USER", help=help)


def _add_log_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level",
        type=_log_level,
        default="INFO",
        metavar="LEVEL",
        help=f"log threshold: {', '.join(LOG_LEVELS)} (default INFO); logs go to stderr",
    )


class _CliLogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The stderr handler this module installs (so a second `main()` call replaces it)."""


class _OneLineFormatter(logging.Formatter):
    """`nomad-actions: warning: message: ExcType: exc` - no tracebacks for client commands."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{PROG}: {record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            err = record.exc_info[1]
            text += f": {type(err).__name__}: {err}"
        return text


def _setup_logging(level: str, formatter: logging.Formatter | None = None) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _CliLogHandler):
            root.removeHandler(handler)
    handler = _CliLogHandler(sys.stderr)
    handler.setFormatter(formatter or logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)


def _client_command(args: argparse.Namespace) -> None:
    """Common set-up of the commands that talk to the server."""
    _setup_logging("WARNING", _OneLineFormatter())
    _apply_connection_options(args)


# ---------------------------------------------------------------------- input and output


def _read_json_argument(text: str, option: str) -> Any:
    """Parse `--data` style values: JSON text, `@file.json`, or `@-` for stdin."""
    source = "the value"
    if text.startswith("@"):
        path = text[1:]
        try:
            if path == "-":
                source, text = "stdin", sys.stdin.read()
            else:
                source, text = path, Path(path).expanduser().read_text(encoding="utf-8")
        except OSError as err:
            raise CommandError(
                f"{option}: cannot read {path}: {err.strerror}", EXIT_USAGE
            ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise CommandError(
            f"{option}: {source} is not valid JSON: {err.msg} at line {err.lineno} "
            f"column {err.colno}",
            EXIT_USAGE,
        ) from None


def _out(text: str = "") -> None:
    print(text, file=sys.stdout, flush=True)


def _jsonable(value: Any) -> Any:
    from nomad_actions.client import to_jsonable

    return to_jsonable(value)


def _print_json(value: Any) -> None:
    _out(json.dumps(_jsonable(value), indent=2, ensure_ascii=False))


def _format_value(value: Any) -> str:
    """A result for people: strings as they are, everything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(_jsonable(value), indent=2, ensure_ascii=False)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _local(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(headers), *(line(row) for row in rows)])


def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    text = str(tp).replace("typing.", "")
    return re.sub(r"\b(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*)", r"\1", text)


def _input_fields(tp: Any) -> list[dict[str, Any]] | None:
    """Fields of a Pydantic model or dataclass input type; None for other types."""
    import pydantic

    if isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
        return [
            {"name": name, "type": _type_name(f.annotation), "required": f.is_required()}
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
                "type": _type_name(hints.get(f.name, f.type)),
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
        return _type_name(tp)
    names = ", ".join(f["name"] + ("" if f["required"] else "?") for f in fields)
    return f"{_type_name(tp)}({names})"


def _load_error_text(err: BaseException) -> str:
    """Why an entry point failed to load: the underlying error when there is one."""
    cause = err.__cause__
    return f"{type(cause).__name__}: {cause}" if cause is not None else str(err)


def _connection_reason(text: str) -> str:
    lowered = text.lower()
    if "connection refused" in lowered:
        return "connection refused"
    if "dns error" in lowered or "failed to lookup address" in lowered:
        return "unknown host"
    if "timed out" in lowered or "deadline" in lowered or "timeout" in lowered:
        return "timed out"
    return re.sub(r"^cannot connect to Temporal at \S+: ", "", text)


def _unknown_action_message(err: Any) -> str:
    """`unknown action "x"; did you mean ...?` instead of the list of every known id."""
    wanted = str(err.action_id or "")
    known = list(err.known_ids)
    if not known:
        return (
            f'unknown action "{wanted}": no actions are installed (plugins expose them as '
            "'nomad.plugin' entry points)"
        )
    lowered = wanted.lower()
    hints = [k for k in known if k.lower().rsplit(":", 1)[-1] == lowered]
    with contextlib.suppress(Exception):
        from nomad_actions.registry import get_actions

        hints += [
            i for i, ep in get_actions().items() if str(getattr(ep, "name", "")).lower() == lowered
        ]
    hints += difflib.get_close_matches(wanted, known, n=3, cutoff=0.6)
    hints = list(dict.fromkeys(hints))[:3]
    text = f'unknown action "{wanted}"'
    if hints:
        text += f"; did you mean {' or '.join(hints)}?"
    return text + f" (`{PROG} actions` lists the {len(known)} installed actions)"


def _expected_error(err: BaseException) -> CommandError | None:
    """The one-line message and exit code of an error a command may expect; None for bugs."""
    from nomad_actions import errors

    if isinstance(err, errors.UnknownActionError) and not isinstance(
        err, errors.AmbiguousActionError
    ):
        return CommandError(_unknown_action_message(err), EXIT_USAGE)
    if isinstance(err, (errors.UnknownActionError, errors.ActionInputError)):
        return CommandError(str(err), EXIT_USAGE)
    if isinstance(err, errors.ConfigurationError):
        return CommandError(str(err), EXIT_USAGE)
    if isinstance(err, errors.ActionLoadError):
        cause = err.__cause__
        suffix = f": {type(cause).__name__}: {cause}" if cause is not None else ""
        return CommandError(f"{err}{suffix}", EXIT_FAILURE)
    if isinstance(err, errors.TemporalConnectionError):
        try:
            address = get_config().address
        except ValueError:
            address = "the server"
        return CommandError(
            f"cannot connect to Temporal at {address} ({_connection_reason(str(err))}); "
            "start a local server with `nomad-actions dev`, or pass --host/--port "
            "(or set NOMAD_TEMPORAL_HOST/NOMAD_TEMPORAL_PORT)",
            EXIT_FAILURE,
        )
    if isinstance(err, (errors.NomadActionsError, TimeoutError)):
        return CommandError(str(err), EXIT_FAILURE)
    return None


# ---------------------------------------------------------------------- progress display


def _bar(fraction: float | None, width: int = 24) -> str:
    if fraction is None:
        return "[" + "." * width + "]"
    filled = round(fraction * width)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def _progress_text(progress: Any) -> str | None:
    """`42%  message  (activity)` of an ActionProgress, or None when nothing was reported."""
    latest = progress.latest
    if latest is None:
        return None
    text = f"{latest.fraction * 100:3.0f}%"
    if latest.message:
        text += f"  {latest.message}"
    if latest.activity_type:
        others = len(progress.reports) - 1
        more = f", +{others} more running" if others > 0 else ""
        text += f"  ({latest.activity_type}{more})"
    return text


class _ProgressView:
    """Shows the progress of a running action while a command waits for it.

    Modes: 'bar' (stdout is a terminal: one line redrawn in place with \\r), 'lines' (a
    plain line whenever the progress changes) and 'off' (--json).
    """

    def __init__(self, stream: TextIO, mode: str) -> None:
        self.stream = stream
        self.mode = mode
        self._drawn = False
        self._last: tuple[Any, ...] | None = None

    @classmethod
    def for_stdout(cls, json_output: bool) -> _ProgressView:
        if json_output:
            return cls(sys.stdout, "off")
        try:
            tty = sys.stdout.isatty()
        except (AttributeError, ValueError):
            tty = False
        return cls(sys.stdout, "bar" if tty else "lines")

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def show(self, progress: Any, elapsed: float) -> None:
        text = _progress_text(progress)
        if self.mode == "lines":
            latest = progress.latest
            key = None if latest is None else (latest.fraction, latest.message)
            if text is not None and key != self._last:
                self._last = key
                self.stream.write(f"progress: {text}\n")
                self.stream.flush()
        elif self.mode == "bar":
            fraction = None if progress.latest is None else progress.latest.fraction
            line = f"{_bar(fraction)} {text or f'running {elapsed:.0f} s'}"
            width = shutil.get_terminal_size((80, 24)).columns
            line = line[: max(width - 1, 10)]
            self.stream.write(f"\r{line}\x1b[K")
            self.stream.flush()
            self._drawn = True

    def close(self) -> None:
        """End the bar's line, so what follows starts on a new one."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


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


def _add_actions(subparsers: Any) -> None:
    parser = _add_parser(
        subparsers,
        "actions",
        help="list the installed actions",
        description=(
            "List the actions found in the installed plugins ('nomad.plugin' entry points): "
            "id, task queue, workflow type and input fields (? marks optional fields), and "
            "the entry points that fail to load, with their error. Needs no server."
        ),
    )
    _add_json_option(parser)
    parser.set_defaults(handler=_run_actions)


def _run_actions(args: argparse.Namespace) -> int:
    from nomad_actions.registry import load_action

    _setup_logging("WARNING", _OneLineFormatter())
    entry_points, broken = _discover_actions()
    found = []
    for action_id, entry_point in sorted(entry_points.items()):
        try:
            action = load_action(action_id)
        except Exception as err:
            broken.append((action_id, _load_error_text(err)))
            continue
        tp = action.run_arg_type
        found.append(
            {
                "id": action_id,
                "name": getattr(entry_point, "name", None),
                "description": getattr(entry_point, "description", None),
                "task_queue": action.task_queue_name,
                "workflow_type": action.workflow_name,
                "input_type": None if tp is None else _type_name(tp),
                "input_fields": _input_fields(tp) if tp is not None else None,
                "_summary": _input_summary(tp),
            }
        )
    broken.sort()
    if args.json:
        actions = [{k: v for k, v in a.items() if not k.startswith("_")} for a in found]
        _print_json({"actions": actions, "broken": [{"id": i, "error": e} for i, e in broken]})
        return EXIT_OK
    if found:
        rows = [[a["id"], a["task_queue"], a["workflow_type"], a["_summary"]] for a in found]
        _out(_table(["ID", "TASK QUEUE", "WORKFLOW", "INPUT"], rows))
        _out()
        _out("? = optional field. `nomad-actions schema ID` prints an action's input schema.")
    else:
        _out("No actions are installed (plugins expose them as 'nomad.plugin' entry points).")
    if broken:
        _out()
        _out(f"Entry points that failed to load ({len(broken)}):")
        for action_id, error in broken:
            _out(f"  {action_id}: {error}")
    return EXIT_OK


# ---------------------------------------------------------------------- schema


def _add_schema(subparsers: Any) -> None:
    parser = _add_parser(
        subparsers,
        "schema",
        help="print the JSON schema of an action's input",
        description=(
            "Print the JSON schema of an action's input (the type of its workflow's run "
            "argument), without user_id, which `start --user` fills in. Needs no server."
        ),
    )
    parser.add_argument("action", metavar="ACTION", help="action id (or the action's name)")
    _add_json_option(parser)
    parser.set_defaults(handler=_run_schema)


def _run_schema(args: argparse.Namespace) -> int:
    from nomad_actions.schemas import get_action_schema

    _setup_logging("WARNING", _OneLineFormatter())
    schema = get_action_schema(args.action)
    _out(json.dumps(schema, indent=None if args.json else 2, ensure_ascii=False))
    return EXIT_OK


# ---------------------------------------------------------------------- start


def _add_start(subparsers: Any) -> None:
    parser = _add_parser(
        subparsers,
        "start",
        help="start an action",
        description=(
            "Start an action and print its workflow id. The input is validated before "
            "anything is sent; errors name the field. With --wait, show its progress while "
            "it runs and print its result.\n\n"
            "example:\n"
            "  nomad-actions start my_plugin.actions:my_action --user me \\\n"
            '      --data \'{"upload_id": "abc", "name": "Ada"}\' --wait'
        ),
    )
    parser.add_argument("action", metavar="ACTION", help="action id (or the action's name)")
    parser.add_argument(
        "--data",
        "-d",
        metavar="JSON",
        help="the input as JSON, or @FILE to read it from a file (@- for stdin); default {}",
    )
    _add_user_option(parser, "owner of the action: fills user_id when the input lacks it")
    parser.add_argument(
        "--wait",
        "-w",
        action="store_true",
        help="wait for the result, showing progress; exit 1 if the action fails",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_seconds,
        metavar="SECONDS",
        help="with --wait, give up waiting after this many seconds (the action keeps running)",
    )
    parser.add_argument("--workflow-id", metavar="ID", help="use this workflow id")
    _add_json_option(parser)
    _add_connection_options(parser)
    parser.set_defaults(handler=_run_start)


def _start_data(args: argparse.Namespace) -> Any:
    data = {} if args.data is None else _read_json_argument(args.data, "--data")
    if args.user is None:
        return data
    if not isinstance(data, dict):
        raise CommandError("--user needs --data to be a JSON object", EXIT_USAGE)
    current = data.get("user_id")
    if current is None:
        return {**data, "user_id": args.user}
    if str(current) != args.user:
        raise CommandError(
            f'--user "{args.user}" contradicts "user_id": "{current}" in --data', EXIT_USAGE
        )
    return data


def _run_start(args: argparse.Namespace) -> int:
    from nomad_actions.client import start_action
    from nomad_actions.errors import ActionInputError

    if args.timeout is not None and not args.wait:
        raise CommandError("--timeout only applies with --wait", EXIT_USAGE)
    _client_command(args)
    data = _start_data(args)
    try:
        workflow_id = start_action(action_name=args.action, data=data, workflow_id=args.workflow_id)
    except ActionInputError as err:
        message = str(err)
        if "user_id" in message and args.user is None:
            message += " (pass --user USER to fill in user_id)"
        raise CommandError(message, EXIT_USAGE) from None
    if not args.wait:
        if args.json:
            _print_json({"workflow_id": workflow_id})
        else:
            _out(f"Started {workflow_id}")
            _out(f"Follow it with: {PROG} status {workflow_id}")
        return EXIT_OK
    if not args.json:
        _out(f"Started {workflow_id}")
    return _wait_and_print(workflow_id, args.timeout, args.json, started=True)


def _wait_for_result(workflow_id: str, timeout: float | None, view: _ProgressView) -> Any:
    """The action's result; meanwhile its progress, once per POLL_INTERVAL, on `view`."""
    from nomad_actions.client import get_action_progress, get_action_result

    def timed_out() -> CommandError:
        return CommandError(
            f'timed out after {timeout:g} s waiting for "{workflow_id}"; it is still '
            f"running (`{PROG} result {workflow_id}` waits again)",
            EXIT_FAILURE,
        )

    if not view.enabled:  # one long poll
        try:
            return get_action_result(workflow_id, timeout=timeout)
        except TimeoutError:
            raise timed_out() from None
    begin = time.monotonic()
    deadline = None if timeout is None else begin + timeout
    while True:
        wait = POLL_INTERVAL
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise timed_out()
            wait = max(min(wait, left), 0.05)
        try:
            return get_action_result(workflow_id, timeout=wait)
        except TimeoutError:
            pass
        view.show(get_action_progress(workflow_id), time.monotonic() - begin)


def _wait_and_print(
    workflow_id: str, timeout: float | None, json_output: bool, started: bool
) -> int:
    from nomad_actions.errors import ActionFailedError

    view = _ProgressView.for_stdout(json_output) if started else _ProgressView(sys.stdout, "off")
    try:
        result = _wait_for_result(workflow_id, timeout, view)
    except ActionFailedError as err:
        view.close()
        if json_output:
            status = err.status.name if err.status is not None else None
            _print_json({"workflow_id": workflow_id, "status": status, "error": str(err)})
        raise CommandError(str(err), EXIT_FAILURE) from None
    except KeyboardInterrupt:
        view.close()
        raise CommandError(
            f'stopped waiting; action "{workflow_id}" keeps running '
            f"(`{PROG} cancel {workflow_id}` cancels it)",
            EXIT_INTERRUPTED,
        ) from None
    finally:
        view.close()
    if json_output:
        _print_json({"workflow_id": workflow_id, "status": "COMPLETED", "result": result})
    elif started:
        _out("Completed. Result:")
        _out(_format_value(result))
    else:
        _out(_format_value(result))
    return EXIT_OK


# ---------------------------------------------------------------------- status


def _add_status(subparsers: Any) -> None:
    parser = _add_parser(
        subparsers,
        "status",
        help="show the status and progress of an action",
        description=(
            "Show an action's status (RUNNING, COMPLETED, FAILED, CANCELED, TERMINATED, "
            "TIMED_OUT), owner and start time, and the progress its activities reported "
            "with nomad_actions.report_progress()."
        ),
    )
    parser.add_argument("workflow_id", metavar="WORKFLOW_ID", help="as printed by `start`")
    _add_user_option(parser, "fail unless the action belongs to this user")
    _add_json_option(parser)
    _add_connection_options(parser)
    parser.set_defaults(handler=_run_status)


def _run_status(args: argparse.Namespace) -> int:
    from nomad_actions.client import get_action_progress

    _client_command(args)
    progress = get_action_progress(args.workflow_id, args.user)
    latest = progress.latest
    if args.json:
        _print_json(
            {
                "workflow_id": progress.workflow_id or args.workflow_id,
                "action_id": progress.action_id,
                "user_id": progress.user_id,
                "workflow_type": progress.workflow_type,
                "status": progress.status.name,
                "start_time": _iso(progress.start_time),
                "close_time": _iso(progress.close_time),
                "progress": None
                if latest is None
                else {
                    "fraction": latest.fraction,
                    "message": latest.message,
                    "activity_type": latest.activity_type,
                },
                "pending_activities": [
                    {
                        "activity_id": a.get("activity_id"),
                        "activity_type": a.get("activity_type"),
                        "attempt": a.get("attempt"),
                        "last_failure": a.get("last_failure"),
                    }
                    for a in progress.activities
                ],
            }
        )
        return EXIT_OK
    lines = [
        ("Workflow", progress.workflow_id or args.workflow_id),
        ("Action", progress.action_id or "-"),
        ("User", progress.user_id or "-"),
        ("Status", progress.status.name),
        ("Started", _local(progress.start_time)),
    ]
    if progress.close_time is not None:
        lines.append(("Ended", _local(progress.close_time)))
    if latest is not None:
        lines.append(("Progress", f"{_bar(latest.fraction)} {_progress_text(progress)}"))
    for activity in progress.activities:
        text = f"{activity.get('activity_type')} (attempt {activity.get('attempt')})"
        if activity.get("last_failure"):
            text += f", last failure: {activity['last_failure']}"
        lines.append(("Activity", text))
    for label, value in lines:
        _out(f"{label + ':':<10} {value}")
    return EXIT_OK


# ---------------------------------------------------------------------- result


def _add_result(subparsers: Any) -> None:
    parser = _add_parser(
        subparsers,
        "result",
        help="wait for an action and print its result",
        description=(
            "Wait until an action ends and print its result (JSON for models and "
            "dataclasses). Exit 1 if it failed, was canceled or terminated, or timed out."
        ),
    )
    parser.add_argument("workflow_id", metavar="WORKFLOW_ID", help="as printed by `start`")
    parser.add_argument(
        "--timeout",
        type=_positive_seconds,
        metavar="SECONDS",
        help="give up waiting after this many seconds (the action keeps running)",
    )
    _add_user_option(parser, "fail unless the action belongs to this user")
    _add_json_option(parser)
    _add_connection_options(parser)
    parser.set_defaults(handler=_run_result)


def _run_result(args: argparse.Namespace) -> int:
    from nomad_actions.client import get_action_status

    _client_command(args)
    get_action_status(args.workflow_id, args.user)  # unknown id / other owner: fail early
    return _wait_and_print(args.workflow_id, args.timeout, args.json, started=False)


# ---------------------------------------------------------------------- cancel, signal


def _ensure_running(workflow_id: str, user: str | None, what: str) -> None:
    from temporalio.client import WorkflowExecutionStatus

    from nomad_actions.client import get_action_status

    status = get_action_status(workflow_id, user)
    if status != WorkflowExecutionStatus.RUNNING:
        raise CommandError(f'action "{workflow_id}" has already ended ({status.name}); {what}')


def _add_cancel(subparsers: Any) -> None:
    parser = _add_parser(
        subparsers,
        "cancel",
        help="cancel a running action",
        description=(
            "Request cancellation of a running action. Its activities see it at their next "
            "heartbeat (or report_progress); the status becomes CANCELED once the workflow "
            "has cleaned up."
        ),
    )
    parser.add_argument("workflow_id", metavar="WORKFLOW_ID", help="as printed by `start`")
    parser.add_argument("--reason", default="", help="recorded with the cancellation request")
    _add_user_option(parser, "fail unless the action belongs to this user")
    _add_json_option(parser)
    _add_connection_options(parser)
    parser.set_defaults(handler=_run_cancel)


def _run_cancel(args: argparse.Namespace) -> int:
    from nomad_actions.client import stop_action

    _client_command(args)
    _ensure_running(args.workflow_id, args.user, "nothing to cancel")
    stop_action(args.workflow_id, args.user, args.reason)
    if args.json:
        _print_json({"workflow_id": args.workflow_id, "cancel_requested": True})
    else:
        _out(f"Cancellation requested for {args.workflow_id}")
    return EXIT_OK


def _check_signal_name(workflow_id: str, name: str) -> None:
    """Refuse a signal the action's workflow does not define (when the action is known)."""
    from temporalio.workflow import _Definition

    from nomad_actions.client import get_action_progress
    from nomad_actions.registry import load_action

    action_id = get_action_progress(workflow_id).action_id
    if not action_id:
        return
    try:
        defn = _Definition.must_from_class(load_action(action_id).workflow)
    except Exception:  # not installed here: let the server take it
        return
    if None in defn.signals or name in defn.signals:
        return
    known = ", ".join(sorted(str(s) for s in defn.signals)) or "none"
    raise CommandError(
        f'workflow {defn.name} of "{workflow_id}" has no signal "{name}" (its signals: {known})',
        EXIT_USAGE,
    )


def _add_signal(subparsers: Any) -> None:
    parser = _add_parser(
        subparsers,
        "signal",
        help="send a signal to a running action",
        description="Send a signal (a @workflow.signal method) to a running action.",
    )
    parser.add_argument("workflow_id", metavar="WORKFLOW_ID", help="as printed by `start`")
    parser.add_argument("signal", metavar="NAME", help="the signal's name")
    parser.add_argument(
        "--data",
        "-d",
        metavar="JSON",
        help="the signal's argument as JSON, or @FILE (@- for stdin); default: no argument",
    )
    _add_user_option(parser, "fail unless the action belongs to this user")
    _add_json_option(parser)
    _add_connection_options(parser)
    parser.set_defaults(handler=_run_signal)


def _run_signal(args: argparse.Namespace) -> int:
    from nomad_actions.client import signal_action

    data = None if args.data is None else _read_json_argument(args.data, "--data")
    _client_command(args)
    _ensure_running(args.workflow_id, args.user, "it cannot receive signals")
    _check_signal_name(args.workflow_id, args.signal)
    signal_action(args.workflow_id, args.signal, data, args.user)
    if args.json:
        _print_json({"workflow_id": args.workflow_id, "signal": args.signal, "sent": True})
    else:
        _out(f'Sent signal "{args.signal}" to {args.workflow_id}')
    return EXIT_OK


# ---------------------------------------------------------------------- list


def _add_list(subparsers: Any) -> None:
    parser = _add_parser(
        subparsers,
        "list",
        help="list action runs, newest first",
        description=(
            "List action runs, newest first, one page at a time, with the number of all "
            "matches. The server filters by the search attributes NomadUserId, NomadActionId "
            "and NomadUploadId (see `setup`); a namespace without them is scanned, with a "
            "warning. Temporal's list is eventually consistent: a run started a moment ago "
            "may take a second to appear."
        ),
    )
    _add_user_option(parser, "only this user's actions")
    parser.add_argument("--action", "-a", metavar="ACTION", help="only runs of this action id")
    parser.add_argument("--upload", metavar="UPLOAD_ID", help="only runs for this upload id")
    parser.add_argument(
        "--status",
        "-s",
        type=_status_name,
        metavar="STATUS",
        help="only runs in this status: RUNNING, COMPLETED, FAILED, CANCELED, TERMINATED, "
        "TIMED_OUT, CONTINUED_AS_NEW (any case)",
    )
    parser.add_argument(
        "--limit",
        "-n",
        type=_positive_int,
        default=20,
        metavar="N",
        help="page size: at most N (default 20)",
    )
    parser.add_argument(
        "--cursor", metavar="CURSOR", help="show the page after this one (the printed cursor)"
    )
    parser.add_argument(
        "--count", action="store_true", help="print only how many runs match, in all"
    )
    _add_json_option(parser)
    _add_connection_options(parser)
    parser.set_defaults(handler=_run_list)


def _run_list(args: argparse.Namespace) -> int:
    from nomad_actions.client import list_actions_page

    _client_command(args)
    try:
        page = list_actions_page(
            user_id=args.user,
            action_id=args.action,
            upload_id=args.upload,
            status=args.status,
            page_size=min(args.limit, 1000),
            cursor=args.cursor,
        )
    except ValueError as err:
        raise CommandError(str(err), EXIT_USAGE) from None
    runs = page.executions
    if args.count:
        if args.json:
            _print_json({"total": page.total})
        else:
            _out(str(page.total))
        return EXIT_OK
    if args.json:
        _print_json(
            [
                {
                    "workflow_id": r.workflow_id,
                    "run_id": r.run_id,
                    "action_id": r.action_id,
                    "user_id": r.user_id,
                    "status": r.status.name,
                    "workflow_type": r.workflow_type,
                    "task_queue": r.task_queue,
                    "start_time": _iso(r.start_time),
                    "close_time": _iso(r.close_time),
                }
                for r in runs
            ]
        )
        if page.next_cursor:
            # stdout stays a JSON list (scripts parse it); the cursor is for people.
            print(f"next page: --cursor {page.next_cursor}", file=sys.stderr)
        return EXIT_OK
    if not runs:
        _out("No action runs found.")
        return EXIT_OK
    rows = [
        [r.workflow_id, r.action_id or "-", r.user_id or "-", r.status.name, _local(r.start_time)]
        for r in runs
    ]
    _out(_table(["WORKFLOW ID", "ACTION", "USER", "STATUS", "STARTED"], rows))
    _out(f"{len(runs)} of {page.total} action runs")
    if page.next_cursor:
        _out(f"next page: --cursor {page.next_cursor}")
    return EXIT_OK


# ---------------------------------------------------------------------- replay

_SINCE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _since(text: str) -> datetime:
    """`--since`: an age (`30m`, `2h`, `7d`) or an ISO 8601 time (UTC unless it says)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if match:
        seconds = float(match.group(1)) * _SINCE_UNITS[match.group(2)]
        return datetime.fromtimestamp(time.time() - seconds, tz=timezone.utc)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an age like 30m, 2h, 7d or an ISO time, got {text!r}"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _add_replay(subparsers: Any) -> None:
    parser = _add_parser(
        subparsers,
        "replay",
        help="check installed plugin code against running actions (non-determinism)",
        description=(
            "Fetch the histories of running actions (or, with --since, of those started since "
            "then) from the server, decrypt them with the NOMAD API secret when one is set, "
            "and replay them against the plugin code installed here with temporalio's "
            "Replayer. Run it before deploying a plugin upgrade: it exits 1 naming each "
            "workflow id that would fail with non-determinism, and why."
        ),
    )
    parser.add_argument("--action", "-a", metavar="ACTION", help="only runs of this action id")
    parser.add_argument(
        "--since",
        type=_since,
        metavar="AGE|TIME",
        help="replay runs started since then (30m, 2h, 7d or an ISO time), in any status; "
        "default: the running ones",
    )
    parser.add_argument(
        "--limit", "-n", type=_positive_int, default=100, metavar="N", help="at most N (100)"
    )
    parser.add_argument(
        "--workflow-id",
        "-w",
        action="append",
        default=[],
        metavar="WORKFLOW_ID",
        help="replay this run (repeatable) instead of selecting by --action/--since",
    )
    parser.add_argument(
        "--unsandboxed", action="store_true", help="replay outside temporalio's sandbox"
    )
    _add_json_option(parser)
    _add_connection_options(parser)
    parser.set_defaults(handler=_run_replay)


def _run_replay(args: argparse.Namespace) -> int:
    from nomad_actions.replay import replay_actions

    _client_command(args)
    outcomes = replay_actions(
        action_id=args.action,
        since=args.since,
        limit=args.limit,
        workflow_ids=args.workflow_id,
        sandboxed=not args.unsandboxed,
    )
    failed = [o for o in outcomes if not o.ok]
    if args.json:
        _print_json([dataclasses.asdict(o) for o in outcomes])
        return EXIT_FAILURE if failed else EXIT_OK
    if not outcomes:
        _out("No action runs to replay.")
        return EXIT_OK
    for o in outcomes:
        if o.ok:
            _out(f"ok    {o.workflow_id} ({o.workflow_type})")
    for o in failed:
        kind = "non-determinism" if o.nondeterministic else "failed"
        print(f"FAIL  {o.workflow_id} ({o.workflow_type}): {kind}: {o.error}", file=sys.stderr)
    _out(f"{len(outcomes) - len(failed)} of {len(outcomes)} runs replay with the installed code")
    return EXIT_FAILURE if failed else EXIT_OK


# ---------------------------------------------------------------------- setup


def _add_setup(subparsers: Any) -> None:
    parser = _add_parser(
        subparsers,
        "setup",
        help="register the search attributes actions are listed by",
        description=(
            "Register the Keyword search attributes NomadUserId, NomadActionId and "
            "NomadUploadId on the namespace through Temporal's operator service, so that "
            "listing actions queries them instead of scanning the namespace. Where the "
            "credentials may not do that (Temporal Cloud, a restricted API key), it prints "
            "the command an operator runs and exits 1."
        ),
    )
    _add_json_option(parser)
    _add_connection_options(parser)
    parser.set_defaults(handler=_run_setup)


def _run_setup(args: argparse.Namespace) -> int:
    from nomad_actions.search_attributes import ensure_search_attributes

    _client_command(args)
    config = get_config()
    outcome = ensure_search_attributes(config)
    if args.json:
        _print_json({**dataclasses.asdict(outcome), "ok": outcome.ok})
        return EXIT_OK if outcome.ok else EXIT_FAILURE
    where = f"namespace {config.namespace} at {config.address}"
    if outcome.added:
        _out(f"Registered {', '.join(outcome.added)} on {where}")
    if outcome.present:
        _out(f"Already registered on {where}: {', '.join(outcome.present)}")
    if outcome.ok:
        return EXIT_OK
    raise CommandError(
        f"could not register {', '.join(outcome.missing)} on {where}"
        f" ({outcome.error or 'not permitted'}); run: {outcome.command}"
    )


# ---------------------------------------------------------------------- dev


def default_data_dir() -> Path:
    """Where `nomad-actions dev` keeps its state: `$NOMAD_ACTIONS_DATA_DIR`, else
    `$XDG_DATA_HOME/nomad-actions`, else `~/.local/share/nomad-actions`."""
    value = os.environ.get(ENV_DATA_DIR)
    if value:
        return Path(value).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or "~/.local/share"
    return Path(base).expanduser() / "nomad-actions"


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    try:  # a zombie has exited; it only waits for its parent to collect it
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def _read_dev_file(data_dir: Path) -> dict[str, Any] | None:
    try:
        info = json.loads((data_dir / DEV_INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict):
        return None
    if not isinstance(info.get("host"), str) or not isinstance(info.get("port"), int):
        return None
    return info


def find_dev_server(data_dir: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """The dev.json of a running `nomad-actions dev`, or None.

    Args:
        data_dir: its data directory; default :func:`default_data_dir`.

    Returns:
        The recorded settings (host, port, namespace, ui_url, pid, server_pid, ...) when
        the file exists and the `dev` process that wrote it is still alive.
    """
    info = _read_dev_file(Path(data_dir) if data_dir is not None else default_data_dir())
    if info is None or not _pid_alive(info.get("pid")):
        return None
    return info


def _write_dev_file(data_dir: Path, info: dict[str, Any]) -> None:
    path = data_dir / DEV_INFO_FILE
    tmp = path.with_name(f".{DEV_INFO_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _remove_dev_file(data_dir: Path) -> None:
    """Remove dev.json if this process wrote it."""
    info = _read_dev_file(data_dir)
    if info is not None and info.get("pid") == os.getpid():
        with contextlib.suppress(OSError):
            (data_dir / DEV_INFO_FILE).unlink()


def _is_dev_server_of(pid: int, db_filename: Path) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"start-dev" in argv and os.fsencode(str(db_filename)) in argv


def _stop_leftover_server(data_dir: Path) -> None:
    """Stop a dev server that a killed `nomad-actions dev` left running on this data dir.

    Only a process whose command line is `temporal server start-dev ... <our db file>` is
    stopped; it holds the database and would make the new server fail.
    """
    info = _read_dev_file(data_dir)
    if info is None:
        return
    pid = info.get("server_pid")
    if _pid_alive(pid) and _is_dev_server_of(pid, data_dir / DEV_DB_FILE):
        logger.warning(
            "Stopping the Temporal dev server (pid %d) left behind by an earlier run", pid
        )
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        (data_dir / DEV_INFO_FILE).unlink()


class _StopSignals:
    """SIGINT, SIGTERM and SIGHUP ask `dev` to stop; a second one stops waiting for the
    workers to drain (the server is still stopped)."""

    SIGNALS = tuple(
        s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s
    )

    def __init__(self) -> None:
        self.requested = threading.Event()
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested.is_set():
            raise KeyboardInterrupt
        logger.info("Received %s, stopping", signal.Signals(signum).name)
        self.requested.set()

    @contextlib.contextmanager
    def installed(self) -> Iterator[_StopSignals]:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        try:
            yield self
        finally:
            for sig, previous in self._previous.items():
                signal.signal(sig, previous)
            self._previous.clear()


def _plan_dev_workers() -> tuple[dict[str, tuple[list[Any], list[Any]]], list[tuple[str, str]]]:
    """Task queue -> (actions, activities of other actions registered on it), and the
    (id, error) of the actions that fail to load."""
    from nomad_actions.registry import get_actions, load_action
    from nomad_actions.worker import resolve_task_queue

    actions: dict[str, list[Any]] = {}
    extra: dict[str, list[Any]] = {}
    broken = []
    for action_id in sorted(get_actions()):
        try:
            action = load_action(action_id)
        except Exception as err:
            broken.append((action_id, _load_error_text(err)))
            continue
        actions.setdefault(resolve_task_queue(action.task_queue), []).append(action)
        for queue, activities in (action.task_queue_activities or {}).items():
            extra.setdefault(resolve_task_queue(queue), []).extend(activities)
    plan = {q: (actions.get(q, []), extra.get(q, [])) for q in sorted(set(actions) | set(extra))}
    return plan, broken


def _add_dev(subparsers: Any) -> None:
    parser = _add_parser(
        subparsers,
        "dev",
        help="run a local Temporal server with the Web UI and workers for every action",
        description=(
            "Run a local Temporal dev server (with its Web UI) and, in this process, one "
            "worker per task queue of the installed actions, until Ctrl-C. State is kept in "
            f"DATA_DIR/{DEV_DB_FILE}, so actions survive a restart. Payloads are not "
            "encrypted (NOMAD development mode).\n\n"
            f"Other {PROG} commands, in another shell, find this server by themselves "
            f"through DATA_DIR/{DEV_INFO_FILE} (as long as --host/--port and "
            "NOMAD_TEMPORAL_HOST/PORT are not set); other programs use the printed "
            "`export NOMAD_TEMPORAL_HOST=... NOMAD_TEMPORAL_PORT=...` line.\n\n"
            "Progress from report_progress() reaches the server once every 0.8 x the "
            "activity's heartbeat_timeout (every 30 s without one): give such activities a "
            "heartbeat_timeout of a few seconds.\n\n"
            "example:\n"
            "  nomad-actions dev                      # this shell: server + workers\n"
            "  nomad-actions actions                  # another shell\n"
            "  nomad-actions start ACTION --user me --data '{...}' --wait"
        ),
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help=f"where the database, server log and {DEV_INFO_FILE} go (default "
        f"${ENV_DATA_DIR}, else ~/.local/share/nomad-actions)",
    )
    parser.add_argument("--port", type=_port, help="gRPC port (default: a free one)")
    parser.add_argument(
        "--ui-port", type=_port, metavar="PORT", help="Web UI port (default: a free one)"
    )
    parser.add_argument("--no-worker", action="store_true", help="run only the server, no workers")
    parser.add_argument(
        "--start-timeout",
        type=_positive_seconds,
        default=60.0,
        metavar="SECONDS",
        help="give up if the server does not listen within this time (default 60)",
    )
    _add_log_option(parser)
    parser.set_defaults(handler=_run_dev)


def _port_free(port: int) -> bool:
    # The dev server's readiness check only connects, so a port some other server holds
    # would look ready: refuse it up front.
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _server_error(err: RuntimeError, log_path: Path) -> CommandError:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    last = f" (last log line: {lines[-1][:200]})" if len(lines) > 1 else ""
    return CommandError(f"{lines[0] if lines else err}{last}; server log: {log_path}")


def _run_dev(args: argparse.Namespace) -> int:
    from nomad_actions import testing

    _setup_logging(args.log_level)
    data_dir = Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()
    try:
        testing.find_temporal_cli()
    except FileNotFoundError as err:
        raise CommandError(str(err), EXIT_FAILURE) from None
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CommandError(f"cannot create the data directory {data_dir}: {err.strerror}") from None
    data_dir = data_dir.resolve()
    running = find_dev_server(data_dir)
    if running is not None:
        raise CommandError(
            f"`{PROG} dev` is already running for {data_dir} (pid {running['pid']}, server at "
            f"{running['host']}:{running['port']}); stop it first or use another --data-dir"
        )
    _stop_leftover_server(data_dir)
    for option, port in (("--port", args.port), ("--ui-port", args.ui_port)):
        if port is not None and not _port_free(port):
            raise CommandError(f"{option} {port}: the port is in use on 127.0.0.1")

    stop = _StopSignals()
    with stop.installed():
        server = testing.DevServer(
            port=args.port,
            ui_port=args.ui_port,
            db_filename=data_dir / DEV_DB_FILE,
            log_path=data_dir / DEV_LOG_FILE,
            headless=False,
        )
        codec = _dev_codec_server(server.ui_url)
        if codec is not None:
            server.extra_args += ["--ui-codec-endpoint", codec.url]
        workers: list[Any] = []
        try:
            try:
                server.start(timeout=args.start_timeout)
            except RuntimeError as err:
                raise _server_error(err, data_dir / DEV_LOG_FILE) from None
            if stop.requested.is_set():
                return EXIT_OK
            config = configure(host=server.host, port=server.port, development=True)
            broken: list[tuple[str, str]] = []
            if not args.no_worker and not stop.requested.is_set():
                workers, broken = _start_dev_workers(config)
            info = {
                "pid": os.getpid(),
                "server_pid": server.process.pid if server.process else None,
                "host": server.host,
                "port": server.port,
                "namespace": config.namespace,
                "address": server.address,
                "ui_url": server.ui_url,
                "data_dir": str(data_dir),
                "db_filename": str(data_dir / DEV_DB_FILE),
                "log_path": server.log_path,
                "task_queues": [w.task_queue for w in workers],
                "development": True,
                "codec_url": codec.url if codec is not None else None,
                "started": datetime.now(timezone.utc).isoformat(),
            }
            _print_dev_banner(info, workers, broken)
            _write_dev_file(data_dir, info)  # last: other commands may use it at once
            _wait_for_stop(stop, server, workers)
            return EXIT_OK
        finally:
            try:
                _stop_dev(server, workers, data_dir)
            finally:
                if codec is not None:
                    codec.stop()


def _dev_codec_server(ui_url: str) -> Any:
    """A codec server for the dev Web UI when a NOMAD secret or payload codec key is set
    (payloads other NOMAD processes encrypt show decoded there), else None."""
    from nomad_actions.codec_server import CodecServer

    config = get_config()
    if not (config.api_secret or config.payload_codec_key):
        return None
    try:
        # The dev workers send plain payloads; the codec server is for everyone else's.
        keyed = dataclasses.replace(config, development=False)
        return CodecServer(keyed, cors_origins=[ui_url]).start()
    except (ValueError, OSError) as err:
        logger.warning("No codec server for the Web UI: %s", err)
        return None


def _start_dev_workers(config: Any) -> tuple[list[Any], list[tuple[str, str]]]:
    from nomad_actions.worker import Worker

    plan, broken = _plan_dev_workers()
    for action_id, error in broken:
        logger.warning("Skipping action %s: %s", action_id, error)
    workers = []
    failed = []
    for queue, (actions, activities) in plan.items():
        try:
            worker = Worker(queue, actions=actions, activities=activities, config=config)
            worker.__enter__()
        except Exception as err:
            # One plugin's bad workflow must not keep the others from running.
            logger.error("No worker for task queue %s: %s", queue, err)
            failed.append((f"task queue {queue}", f"{type(err).__name__}: {err}"))
            continue
        workers.append(worker)
    if failed and not workers:
        raise CommandError(f"no worker started; the first error: {failed[0][1]}")
    return workers, broken + failed


def _print_dev_banner(
    info: dict[str, Any], workers: list[Any], broken: list[tuple[str, str]]
) -> None:
    _out(f"Temporal dev server running (pid {info['server_pid']}), state in {info['db_filename']}")
    _out(f"  gRPC address: {info['address']}")
    _out(f"  Web UI:       {info['ui_url']}")
    _out(f"  Server log:   {info['log_path']}")
    if workers:
        for worker in workers:
            names = dict.fromkeys(a.workflow_name for a in worker.actions)
            ids = ", ".join(names) or "activities only"
            _out(f"  Worker:       {worker.task_queue} ({ids})")
    else:
        _out("  Workers:      none")
    for action_id, error in broken:
        _out(f"  Skipped:      {action_id}: {error}")
    if info.get("codec_url"):
        _out(f"  Codec server: {info['codec_url']} (the Web UI decodes encrypted payloads)")
    _out(f"Other {PROG} commands find this server through {info['data_dir']}/{DEV_INFO_FILE}.")
    _out("For other programs (e.g. NOMAD itself), in another shell:")
    _out(f"  export {ENV_HOST}={info['host']} {ENV_PORT}={info['port']}")
    if os.environ.get(ENV_API_SECRET):
        # These workers read plain payloads; a client with the secret would encrypt them.
        _out(f"  export {ENV_MODE}=development   # {ENV_API_SECRET} is set")
    _out("Press Ctrl-C to stop.")


def _wait_for_stop(stop: _StopSignals, server: Any, workers: list[Any]) -> None:
    while not stop.requested.wait(0.5):
        if server.process is None or server.process.poll() is not None:
            code = None if server.process is None else server.process.returncode
            tail = server.log_tail(1).strip()[:200]
            raise CommandError(
                f"the Temporal dev server exited unexpectedly (code {code}"
                + (f", last log line: {tail}" if tail else "")
                + f"); server log: {server.log_path}"
            )
        for worker in workers:
            thread = worker._thread  # the Worker context manager's thread
            if thread is not None and not thread.is_alive():
                raise CommandError(
                    f"the worker for task queue {worker.task_queue} stopped: "
                    f"{worker._error or 'no error recorded'}"
                )


def _stop_workers(workers: list[Any]) -> None:
    for worker in workers:  # all start draining at once; then wait for each
        worker.shutdown()
    for worker in workers:
        try:
            worker.__exit__(None, None, None)
        except Exception as err:
            logger.warning("The worker for %s stopped with an error: %s", worker.task_queue, err)


def _stop_dev(server: Any, workers: list[Any], data_dir: Path) -> None:
    try:
        if workers:
            _out("Stopping workers ...")
            _stop_workers(workers)
    finally:
        if server.process is not None:
            _out("Stopping the Temporal dev server ...")
        server.stop()
        _remove_dev_file(data_dir)
    _out("Stopped.")


# ---------------------------------------------------------------------- worker


def _add_worker(subparsers: Any) -> None:
    parser = _add_parser(
        subparsers,
        "worker",
        help="run a worker for the actions on one task queue",
        description=(
            "Run the workflows and activities of every installed action on one task queue, "
            "until SIGTERM or SIGINT (Ctrl-C). On that signal the worker stops polling, lets "
            "running activities finish for --graceful-shutdown-timeout seconds, cancels the "
            "rest, reports every outcome to the server and exits 0. While the server cannot be "
            "reached the worker keeps retrying (with a growing delay, logged); a broken action "
            "entry point on this queue makes it refuse to start (exit 2) unless --skip-broken."
        ),
    )
    parser.add_argument(
        "--task-queue",
        "-q",
        required=True,
        metavar="QUEUE",
        help="'cpu' (cpu-task-queue), 'gpu' (gpu-task-queue) or any task queue name",
    )
    parser.add_argument(
        "--max-concurrent-activities",
        type=_positive_int,
        default=None,
        metavar="N",
        help="activity tasks run at once (default: the worker block's max_concurrent_activities "
        "in nomad.yaml; when unset there, sdk-core's resource-based tuner with the block's "
        "target_memory_usage, target_cpu_usage, min/max_activity_slots, activity_ramp_throttle)",
    )
    parser.add_argument(
        "--max-concurrent-workflow-tasks",
        type=_positive_int,
        default=100,
        metavar="N",
        help="workflow tasks processed at once (default 100)",
    )
    parser.add_argument(
        "--activity-threads",
        type=_positive_int,
        default=None,
        metavar="N",
        help="threads for plain `def` activities (default: the worker block's pool_size)",
    )
    parser.add_argument(
        "--max-cached-workflows",
        type=_non_negative_int,
        default=1000,
        metavar="N",
        help="workflow runs kept in memory; 0 replays every task from history (default 1000)",
    )
    parser.add_argument(
        "--graceful-shutdown-timeout",
        type=_non_negative_seconds,
        default=None,
        metavar="SECONDS",
        help="on shutdown, how long running activities may finish before they are "
        "cancelled (default: temporal.graceful_shutdown_timeout when set, else 10)",
    )
    health = parser.add_argument_group(
        "health and metrics",
        "The worker block of nomad.yaml (temporal.cpu_worker for the CPU queue and plugin "
        "queues, temporal.gpu_worker for the GPU queue) sets healthcheck_enabled, "
        "healthcheck_host (0.0.0.0) and healthcheck_port (8080); the endpoint is off in "
        "development mode unless --health-port is given.",
    )
    health.add_argument(
        "--health-port",
        type=_port,
        default=None,
        metavar="PORT",
        help="serve GET /health on this port (200 OK while working, 503 UNHEALTHY otherwise)",
    )
    health.add_argument("--no-health", action="store_true", help="serve no health endpoint")
    health.add_argument(
        "--metrics-bind-address",
        default=None,
        metavar="HOST:PORT",
        help="serve Prometheus metrics here (default temporal.prometheus_bind_address)",
    )
    parser.add_argument(
        "--unsandboxed",
        action="store_true",
        help="run workflow code without temporalio's sandbox (faster, less checking)",
    )
    parser.add_argument(
        "--deadlock-timeout",
        type=_non_negative_seconds,
        default=2.0,
        metavar="SECONDS",
        help="fail a workflow task that runs this long without yielding; 0 disables (default 2)",
    )
    parser.add_argument(
        "--skip-broken",
        action="store_true",
        help="log and skip broken action entry points (failing to import or load, or with an "
        "invalid workflow or activity) instead of refusing to start",
    )
    parser.add_argument(
        "--no-nomad-setup",
        action="store_true",
        help="with nomad-lab installed, skip NOMAD's worker setup (MongoDB, Elasticsearch, "
        "parser imports, async MongoDB), which upstream's workers run before polling",
    )
    _add_connection_options(parser)
    _add_log_option(parser)
    parser.set_defaults(handler=_run_worker)


def _queues_with_actions() -> dict[str, int]:
    """Task queue name -> number of installed actions on it (without loading them)."""
    from nomad_actions.registry import get_actions
    from nomad_actions.worker import resolve_task_queue

    counts: dict[str, int] = {}
    for entry_point in get_actions().values():
        queue = getattr(entry_point, "task_queue", None)
        if queue is None:
            continue
        name = resolve_task_queue(queue)
        counts[name] = counts.get(name, 0) + 1
    return counts


def _nothing_to_run(queue: str) -> CommandError:
    try:
        counts = _queues_with_actions()
    except Exception:  # the hint is optional; the error itself must still be reported
        counts = {}
    if counts:
        listing = ", ".join(f"{q} ({n})" for q, n in sorted(counts.items()))
        hint = f"Installed actions are on these task queues: {listing}"
    else:
        hint = "No actions are installed (plugins expose them as 'nomad.plugin' entry points)"
    return CommandError(f'no action is registered on task queue "{queue}". {hint}', EXIT_USAGE)


def _worker_settings(args: argparse.Namespace, queue: str) -> dict[str, Any]:
    """The Worker options that follow nomad.yaml's worker block as upstream's CPU/GPU workers
    read it, each overridden by its flag."""
    from nomad_actions.config import settings
    from nomad_actions.worker import TunerOptions

    nomad = settings()
    block = nomad.worker(queue)
    key = f"temporal.{nomad.worker_key(queue)}"
    options: dict[str, Any] = {
        "activity_threads": args.activity_threads or block.pool_size,
        "max_concurrent_activities": args.max_concurrent_activities
        or block.max_concurrent_activities,
        "tuner": TunerOptions(
            target_memory_usage=block.target_memory_usage,
            target_cpu_usage=block.target_cpu_usage,
            min_activity_slots=min(block.activity_slots_minimum, block.max_activity_slots),
            max_activity_slots=block.max_activity_slots,
            activity_ramp_throttle_millis=block.activity_ramp_throttle,
        ),
        "metrics_bind_address": args.metrics_bind_address or nomad.temporal.prometheus_bind_address,
    }
    grace = args.graceful_shutdown_timeout
    if grace is None:
        set_in_config = nomad.source("temporal.graceful_shutdown_timeout") != "default"
        grace = nomad.temporal.graceful_shutdown_timeout if set_in_config else 10.0
    options["graceful_shutdown_timeout"] = grace
    health = block.healthcheck_enabled and not nomad.development
    if args.health_port is not None:
        health = True
    if health and not args.no_health:
        port = args.health_port or block.healthcheck_port
        options["health_address"] = f"{block.healthcheck_host}:{port}"
        logger.info("Health check at http://%s/health (%s)", options["health_address"], key)
    return options


def _run_worker(args: argparse.Namespace) -> int:
    _setup_logging(args.log_level)
    _apply_connection_options(args)

    from nomad_actions.errors import ActionLoadError, ConfigurationError, TemporalConnectionError
    from nomad_actions.nomad_worker import NomadSetupError, prepare_worker
    from nomad_actions.worker import Worker, resolve_task_queue

    queue = resolve_task_queue(args.task_queue)
    config = get_config()
    try:
        # Upstream's logging, signal-input activity and infrastructure set-up, as its workers.
        setup = prepare_worker(queue, nomad_setup=not args.no_nomad_setup, config=config)
    except NomadSetupError as err:
        raise CommandError(str(err), EXIT_FAILURE) from None
    # Importing nomad sets every root handler to its console_log_level (WARNING); --log-level
    # governs ours.
    _setup_logging(args.log_level)
    try:
        worker = Worker(
            queue,
            max_concurrent_workflow_tasks=args.max_concurrent_workflow_tasks,
            max_cached_workflows=args.max_cached_workflows,
            sandboxed=not args.unsandboxed,
            deadlock_timeout=args.deadlock_timeout or None,
            config=config,
            skip_broken=args.skip_broken,
            interceptors=setup.interceptors,
            activities=setup.activities,
            **_worker_settings(args, queue),
        )
    except ActionLoadError as err:  # a broken plugin: a configuration error
        raise CommandError(str(err), EXIT_USAGE) from None
    except ValueError as err:
        if str(err).startswith("Nothing to run"):
            raise _nothing_to_run(queue) from None
        raise CommandError(str(err), EXIT_USAGE) from None
    for init in setup.on_activity_loop:
        try:
            worker.run_on_activity_loop(init)
        except (NomadSetupError, TimeoutError) as err:
            worker.shutdown()
            raise CommandError(f"NOMAD worker setup: {err}", EXIT_FAILURE) from None

    try:
        worker.run()
    except ConfigurationError as err:  # e.g. the health port is taken
        raise CommandError(str(err), EXIT_USAGE) from None
    except TemporalConnectionError as err:
        # The engine's message names the address; make sure it is there in any case.
        message = str(err)
        if config.address not in message:
            message = f"cannot connect to Temporal at {config.address}: {message}"
        raise CommandError(message, EXIT_FAILURE) from None
    return EXIT_OK


# ---------------------------------------------------------------------- config


def _add_config(subparsers: Any) -> None:
    parser = _add_parser(
        subparsers,
        "config",
        help="show the effective settings and where each came from",
        description=(
            "Show the settings the client and the workers use: NOMAD's configuration "
            "(nomad.yaml, or the files in NOMAD_CONFIG, then NOMAD_<SECTION>_<FIELD> "
            "variables, as nomad-lab reads it), then this command's connection options. "
            "Each line names where its value came from; secrets are masked."
        ),
    )
    _add_json_option(parser)
    _add_connection_options(parser)
    parser.set_defaults(handler=_run_config)


def _run_config(args: argparse.Namespace) -> int:
    from nomad_actions.config import settings

    nomad = settings()
    flags = {"host": args.host, "port": args.port, "namespace": args.namespace}
    rows = []
    for key, value, source in nomad.items():
        flag = flags.get(key.removeprefix("temporal."))
        if key.startswith("temporal.") and flag is not None:
            value, source = flag, f"--{key.removeprefix('temporal.')}"
        rows.append({"key": key, "value": value, "source": source})
    _apply_connection_options(args)
    connection = get_config()
    summary = {
        "address": connection.address,
        "namespace": connection.namespace,
        "tls": connection.tls is not None,
        "payload_encryption": connection.payload_secret is not None,
        "development": connection.development,
        "files": list(nomad.files),
    }
    if args.json:
        _print_json({"settings": rows, "effective": summary})
        return EXIT_OK
    files = ", ".join(nomad.files) or "none (no nomad.yaml here, NOMAD_CONFIG unset)"
    _out(f"config files: {files}")
    width = max(len(r["key"]) for r in rows)
    for row in rows:
        value = "null" if row["value"] is None else row["value"]
        _out(f"  {row['key']:<{width}}  {value}  ({row['source']})")
    _out(
        f"connection: {summary['address']} namespace {summary['namespace']}, "
        f"TLS {'on' if summary['tls'] else 'off'}, payload encryption "
        f"{'on' if summary['payload_encryption'] else 'off'}"
        f"{' (development mode)' if summary['development'] else ''}"
    )
    return EXIT_OK


# ---------------------------------------------------------------------- logs


def _add_logs(subparsers: Any) -> None:
    parser = _add_parser(
        subparsers,
        "logs",
        help="show an action's log file",
        description=(
            "Print the log an action's activities wrote through the worker (upstream NOMAD's "
            "per-action log, <fs.actions>/<id>/nomad_system/logs/<id>.log; NOMAD_FS_ACTIONS, "
            "default .volumes/fs/actions). With --follow, keep printing new lines until the "
            "action has ended (or Ctrl-C)."
        ),
    )
    parser.add_argument("workflow_id", metavar="WORKFLOW_ID", help="as printed by `start`")
    parser.add_argument(
        "--follow", "-f", action="store_true", help="print new lines as they are written"
    )
    _add_json_option(parser)
    _add_connection_options(parser)
    parser.set_defaults(handler=_run_logs)


def _print_log_line(line: str, as_json: bool) -> None:
    if as_json:
        _out(line)
        return
    try:
        record = json.loads(line)
        _out(f"{record['timestamp']} {record['level']:<8} {record['event']}")
    except (ValueError, KeyError, TypeError):
        _out(line)  # upstream's format does not escape quotes: show such lines as written


def _action_ended(workflow_id: str) -> bool:
    from temporalio.client import WorkflowExecutionStatus

    from nomad_actions.manager import get_action_status

    return get_action_status(workflow_id) != WorkflowExecutionStatus.RUNNING


def _run_logs(args: argparse.Namespace) -> int:
    from nomad_actions.manager import action_log_file_path

    try:
        path = Path(action_log_file_path(args.workflow_id))
    except ValueError as err:
        raise CommandError(str(err), EXIT_USAGE) from None
    if args.follow:
        _client_command(args)
    elif not path.exists():
        raise CommandError(f"no log for action {args.workflow_id!r} (looked in {path})")
    position = 0
    partial = ""
    while True:
        ended = args.follow and _action_ended(args.workflow_id)
        if path.exists():
            with path.open(encoding="utf-8") as handle:
                handle.seek(position)
                chunk = handle.read()
                position = handle.tell()
            lines = (partial + chunk).split("\n")
            partial = lines.pop()
            for line in lines:
                if line.strip():
                    _print_log_line(line, args.json)
        if not args.follow or ended:
            break
        time.sleep(POLL_INTERVAL / 2)
    if partial.strip():
        _print_log_line(partial, args.json)
    return EXIT_OK


# ---------------------------------------------------------------------- codec-server


def _add_codec_server(subparsers: Any) -> None:
    parser = _add_parser(
        subparsers,
        "codec-server",
        help="serve Temporal's codec protocol, so the Web UI and CLI show encrypted payloads",
        description=(
            "Decode (and encode) NOMAD's encrypted payloads for Temporal's Web UI (set its codec "
            "endpoint to the printed URL) and CLI (`temporal workflow show --codec-endpoint "
            "URL`), with the keys of this configuration: the NOMAD API secret "
            "(NOMAD_SERVICES_API_SECRET) and, if set, NOMAD_TEMPORAL_PAYLOAD_CODEC_KEY with "
            "NOMAD_TEMPORAL_PAYLOAD_CODEC_KEY_ID. Runs until SIGTERM or Ctrl-C."
        ),
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument("--port", type=_port, default=8081, help="port to listen on (default 8081)")
    parser.add_argument(
        "--cors-origin",
        action="append",
        metavar="ORIGIN",
        help="a Web UI origin allowed to call it from the browser, e.g. http://localhost:8233 "
        "(repeatable; default any origin)",
    )
    _add_log_option(parser)
    parser.set_defaults(handler=_run_codec_server)


def _run_codec_server(args: argparse.Namespace) -> int:
    _setup_logging(args.log_level)
    from nomad_actions.codec_server import CodecServer

    try:
        server = CodecServer(
            get_config(), host=args.host, port=args.port, cors_origins=args.cors_origin or ["*"]
        )
    except ValueError as err:
        raise CommandError(str(err), EXIT_USAGE) from None
    except OSError as err:
        raise CommandError(
            f"cannot listen on {args.host}:{args.port}: {err.strerror or err}"
        ) from None
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        with server:
            _out(f"Codec server listening on {server.url} (POST /encode, /decode)")
            stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _out("Stopped.")
    return EXIT_OK


# ---------------------------------------------------------------------- main

#: Functions that each add one subcommand to the subparsers (in `--help` order).
_COMMANDS: list[Callable[[Any], None]] = [
    _add_actions,
    _add_schema,
    _add_start,
    _add_status,
    _add_result,
    _add_cancel,
    _add_signal,
    _add_list,
    _add_setup,
    _add_replay,
    _add_dev,
    _add_worker,
    _add_config,
    _add_logs,
    _add_codec_server,
]

MAIN_EPILOG = f"""first steps:
  {PROG} dev                  # shell 1: Temporal server + Web UI + workers
  {PROG} actions              # shell 2: the installed actions
  {PROG} schema ACTION        # what input an action takes
  {PROG} start ACTION --user me --data '{{"name": "Ada"}}' --wait
  {PROG} list --user me       # what ran

`{PROG} COMMAND --help` describes each command; --json makes output machine-readable.

{EXIT_CODES_EPILOG}"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "NOMAD Actions on Temporal: run a local server and workers, start actions and "
            "follow them."
        ),
        epilog=MAIN_EPILOG,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(subparsers)
    return parser


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit code.

    Args:
        argv: The arguments without the program name; default ``sys.argv[1:]``.

    Returns:
        0 on success, 1 when the action or the command failed, 2 on a usage, input or
        configuration error, 130 when interrupted.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exit_:  # --help, --version and usage errors
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else EXIT_USAGE)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(handler(args))
    except CommandError as err:
        _error(str(err))
        return err.code
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `nomad-actions list | head`
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silences the flush at exit
        return EXIT_FAILURE
    except Exception as err:
        expected = _expected_error(err)
        if expected is not None:
            _error(str(expected))
            return expected.code
        logger.debug("Command %s failed", args.command, exc_info=True)
        _error(f"{type(err).__name__}: {err}")
        return EXIT_FAILURE

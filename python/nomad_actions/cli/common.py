"""What every ``nomad-actions`` command shares: the exit codes, :class:`CommandError`, the
parser helpers and option types, the connection options (and how they find a running
``nomad-actions dev``), logging set-up, output helpers (`out`, `print_json`, `table`, ...)
and the mapping of expected exceptions to one line and an exit code (`expected_error`).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import logging
import re
import sys
import typing
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from nomad_actions.cli.devfile import DEV_INFO_FILE, ENV_DATA_DIR, find_dev_server
from nomad_actions.config import configure, get_config

PROG = "nomad-actions"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

#: How often `start --wait` looks at the progress while it waits for the result (and
#: `logs --follow` at the file, twice as often).
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


class HelpFormatter(argparse.HelpFormatter):
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


def add_parser(subparsers: Any, name: str, help: str, description: str) -> Any:
    """A subcommand's parser, with the exit-code table as its epilog."""
    return subparsers.add_parser(
        name,
        help=help,
        description=description,
        epilog=EXIT_CODES_EPILOG,
        formatter_class=HelpFormatter,
    )


# ---------------------------------------------------------------------- option helpers


def positive_int(text: str) -> int:
    """Option type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """Option type: an integer of at least 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def non_negative_seconds(text: str) -> float:
    """Option type: seconds, 0 or more (nan refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds (a number), got {text!r}") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def positive_seconds(text: str) -> float:
    """Option type: seconds, more than 0."""
    value = non_negative_seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def port_number(text: str) -> int:
    """Option type: a TCP port, 1 to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be from 1 to 65535, got {value}")
    return value


def log_level(text: str) -> str:
    """Option type: a logging level name, any case."""
    level = text.upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"expected one of {', '.join(LOG_LEVELS)} (any case), got {text!r}"
        )
    return level


def status_name(text: str) -> str:
    """Option type: a workflow status name, any case (CANCELLED and TIMEDOUT too)."""
    from temporalio.client import WorkflowExecutionStatus

    name = text.strip().upper().replace("-", "_")
    name = {"CANCELLED": "CANCELED", "TIMEDOUT": "TIMED_OUT"}.get(name, name)
    names = [s.name for s in WorkflowExecutionStatus]
    if name not in names:
        raise argparse.ArgumentTypeError(
            f"expected one of {', '.join(names)} (any case), got {text!r}"
        )
    return name


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    """Add --host, --port, --namespace and --connect-timeout."""
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
    group.add_argument("--port", type=port_number, help="Temporal server gRPC port")
    group.add_argument("--namespace", help="Temporal namespace")
    group.add_argument(
        "--connect-timeout",
        type=positive_seconds,
        metavar="SECONDS",
        help="give up connecting after this many seconds (default 5)",
    )


def _connection_from_environment() -> bool:
    """Whether the host or port is set by `configure()`, nomad.yaml or the environment."""
    from nomad_actions import config

    explicit = getattr(config, "_configured", None) is not None
    sources = config.settings().sources
    return explicit or "temporal.host" in sources or "temporal.port" in sources


def apply_connection_options(args: argparse.Namespace) -> None:
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


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """Add --json."""
    parser.add_argument(
        "--json",
        action="store_true",
        help="print machine-readable JSON instead of text (errors still go to stderr)",
    )


def add_user_option(parser: argparse.ArgumentParser, help: str) -> None:
    """Add --user/-u with this help text."""
    parser.add_argument("--user", "-u", metavar="USER", help=help)


def add_log_option(parser: argparse.ArgumentParser) -> None:
    """Add --log-level (default INFO)."""
    parser.add_argument(
        "--log-level",
        type=log_level,
        default="INFO",
        metavar="LEVEL",
        help=f"log threshold: {', '.join(LOG_LEVELS)} (default INFO); logs go to stderr",
    )


class _CliLogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The stderr handler this module installs (so a second `main()` call replaces it)."""


class OneLineFormatter(logging.Formatter):
    """`nomad-actions: warning: message: ExcType: exc` - no tracebacks for client commands."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{PROG}: {record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            err = record.exc_info[1]
            text += f": {type(err).__name__}: {err}"
        return text


def setup_logging(level: str, formatter: logging.Formatter | None = None) -> None:
    """Send log records at `level` and above to stderr, replacing the handler an
    earlier call installed."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _CliLogHandler):
            root.removeHandler(handler)
    handler = _CliLogHandler(sys.stderr)
    handler.setFormatter(formatter or logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)


def client_command(args: argparse.Namespace) -> None:
    """Common set-up of the commands that talk to the server."""
    setup_logging("WARNING", OneLineFormatter())
    apply_connection_options(args)


# ---------------------------------------------------------------------- input and output


def read_json_argument(text: str, option: str) -> Any:
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


def out(text: str = "") -> None:
    """Print a line on stdout, flushed (progress and results interleave with stderr)."""
    print(text, file=sys.stdout, flush=True)


def _jsonable(value: Any) -> Any:
    from nomad_actions.client import to_jsonable

    return to_jsonable(value)


def print_json(value: Any) -> None:
    """Print `value` as indented JSON (models and dataclasses as plain data)."""
    out(json.dumps(_jsonable(value), indent=2, ensure_ascii=False))


def format_value(value: Any) -> str:
    """A result for people: strings as they are, everything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(_jsonable(value), indent=2, ensure_ascii=False)


def iso_time(moment: datetime | None) -> str | None:
    """ISO 8601 text of a moment, or None."""
    return None if moment is None else moment.isoformat()


def local_time(moment: datetime | None) -> str:
    """A moment in local time for people, `-` when None."""
    return "-" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces, the headers first."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(headers), *(line(row) for row in rows)])


def type_name(tp: Any) -> str:
    """A short name of a type hint: `list[Item]` rather than `typing.List[pkg.Item]`."""
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    text = str(tp).replace("typing.", "")
    return re.sub(r"\b(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*)", r"\1", text)


def load_error_text(err: BaseException) -> str:
    """Why an entry point failed to load: the underlying error when there is one."""
    cause = err.__cause__
    return f"{type(cause).__name__}: {cause}" if cause is not None else str(err)


#: The words for the connection failures people meet most; other kinds show the engine's
#: detail text (`TemporalConnectionError.reason`).
_CONNECTION_REASONS = {
    "refused": "connection refused",
    "unknown_host": "unknown host",
    "timed_out": "timed out",
}


def _connection_reason(err: Any) -> str:
    """Why a `TemporalConnectionError` happened, from its structured attributes."""
    label = _CONNECTION_REASONS.get(err.kind or "")
    if label is not None:
        return label
    # An error raised without attributes (not by the engine) has only its message.
    return err.reason if err.reason is not None else str(err)


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


def expected_error(err: BaseException) -> CommandError | None:
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
        # The configured host:port, as people wrote it (the error's own address is the URL
        # as dialled, http://host:port).
        try:
            address = get_config().address
        except ValueError:
            address = "the server"
        return CommandError(
            f"cannot connect to Temporal at {address} ({_connection_reason(err)}); "
            "start a local server with `nomad-actions dev`, or pass --host/--port "
            "(or set NOMAD_TEMPORAL_HOST/NOMAD_TEMPORAL_PORT)",
            EXIT_FAILURE,
        )
    if isinstance(err, (errors.NomadActionsError, TimeoutError)):
        return CommandError(str(err), EXIT_FAILURE)
    return None

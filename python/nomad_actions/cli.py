"""The ``nomad-actions`` command line.

One function per subcommand, each registered on the subparsers by an ``_add_<name>``
function listed in :data:`_COMMANDS`; the parser stores the handler as ``args.handler``,
which returns the exit code. Exit codes: 0 success, 1 runtime failure (e.g. the server
cannot be reached), 2 usage or configuration error (bad option, nothing to run),
130 interrupted.

Run it as ``nomad-actions ...`` (console script) or ``python -m nomad_actions ...``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from nomad_actions import __version__
from nomad_actions.config import configure, get_config

__all__ = ["main"]

PROG = "nomad-actions"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

logger = logging.getLogger("nomad_actions.cli")


class CommandError(Exception):
    """An error to report as one line on stderr, with an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


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


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "connection",
        "Where the Temporal server is. Options not given come from the environment "
        "(NOMAD_TEMPORAL_HOST, NOMAD_TEMPORAL_PORT, NOMAD_TEMPORAL_NAMESPACE, "
        "NOMAD_TEMPORAL_API_KEY), else localhost:7233, namespace 'default'.",
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


def _apply_connection_options(args: argparse.Namespace) -> None:
    """Make the connection options the settings for this process (see `configure`)."""
    try:
        configure(
            host=args.host,
            port=args.port,
            namespace=args.namespace,
            connect_timeout=args.connect_timeout,
        )
    except ValueError as err:  # e.g. NOMAD_TEMPORAL_PORT is not a number
        raise CommandError(str(err), EXIT_USAGE) from None


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


def _setup_logging(level: str) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _CliLogHandler):
            root.removeHandler(handler)
    handler = _CliLogHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)


# ---------------------------------------------------------------------- worker


def _add_worker(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "worker",
        help="run a worker for the actions on one task queue",
        description=(
            "Run the workflows and activities of every installed action on one task queue, "
            "until SIGTERM or SIGINT (Ctrl-C). On that signal the worker stops polling, lets "
            "running activities finish for --graceful-shutdown-timeout seconds, cancels the "
            "rest, reports every outcome to the server and exits 0."
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
        default=100,
        metavar="N",
        help="activity tasks run at once (default 100)",
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
        help="threads for plain `def` activities (default: min(32, CPUs + 4))",
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
        default=10.0,
        metavar="SECONDS",
        help="on shutdown, how long running activities may finish before they are "
        "cancelled (default 10)",
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


def _run_worker(args: argparse.Namespace) -> int:
    _setup_logging(args.log_level)
    _apply_connection_options(args)

    from nomad_actions.errors import TemporalConnectionError
    from nomad_actions.worker import Worker, resolve_task_queue

    queue = resolve_task_queue(args.task_queue)
    config = get_config()
    try:
        worker = Worker(
            queue,
            max_concurrent_activities=args.max_concurrent_activities,
            max_concurrent_workflow_tasks=args.max_concurrent_workflow_tasks,
            activity_threads=args.activity_threads,
            max_cached_workflows=args.max_cached_workflows,
            graceful_shutdown_timeout=args.graceful_shutdown_timeout,
            sandboxed=not args.unsandboxed,
            deadlock_timeout=args.deadlock_timeout or None,
            config=config,
        )
    except ValueError as err:
        if str(err).startswith("Nothing to run"):
            raise _nothing_to_run(queue) from None
        raise CommandError(str(err), EXIT_USAGE) from None

    try:
        worker.run()
    except TemporalConnectionError as err:
        # The engine's message names the address; make sure it is there in any case.
        message = str(err)
        if config.address not in message:
            message = f"cannot connect to Temporal at {config.address}: {message}"
        raise CommandError(message, EXIT_FAILURE) from None
    return EXIT_OK


# ---------------------------------------------------------------------- main

#: Functions that each add one subcommand to the subparsers (in `--help` order).
_COMMANDS: list[Callable[[Any], None]] = [_add_worker]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="NOMAD Actions on Temporal: run workers for plugin actions.",
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
        0 on success, 1 when the command failed, 2 on a usage or configuration error,
        130 when interrupted.
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
    except Exception as err:
        logger.debug("Command %s failed", args.command, exc_info=True)
        _error(f"{type(err).__name__}: {err}")
        return EXIT_FAILURE

"""The ``nomad-actions`` command line.

One function per subcommand, each registered on the subparsers by an ``add_<name>``
function listed in :data:`_COMMANDS`; the parser stores the handler as ``args.handler``,
which returns the exit code. Expected errors (unknown action, invalid input, unknown
workflow id, server unreachable, ...) become one line on stderr, never a traceback.

Exit codes: 0 success; 1 the action failed, or a runtime error (server unreachable,
unknown workflow id, broken plugin, timeout); 2 usage or input error (bad option, unknown
action, invalid JSON, input that fails validation, nothing to run); 130 interrupted.

Where the server is: ``--host/--port``, else ``NOMAD_TEMPORAL_HOST/PORT``, else the server of
a running ``nomad-actions dev`` (found through ``<data dir>/dev.json``), else localhost:7233.

Run it as ``nomad-actions ...`` (console script) or ``python -m nomad_actions ...``.

This package: ``__init__`` assembles the parser and runs a command (:func:`main`);
``common`` holds what the commands share (exit codes, options, output, error mapping);
``catalog`` (actions, schema), ``runs`` (start, status, result, cancel, signal, list; with
``progress_view``), ``tools`` (setup, replay, config, logs, codec-server), ``dev`` (the
dev-server supervisor; ``devfile``: its dev.json) and ``worker`` each hold one group of
commands.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from nomad_actions import __version__
from nomad_actions.cli.catalog import add_actions, add_schema
from nomad_actions.cli.common import (
    EXIT_CODES_EPILOG,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    CommandError,
    HelpFormatter,
    expected_error,
)
from nomad_actions.cli.dev import add_dev
from nomad_actions.cli.devfile import default_data_dir, find_dev_server
from nomad_actions.cli.runs import (
    add_cancel,
    add_list,
    add_result,
    add_signal,
    add_start,
    add_status,
)
from nomad_actions.cli.tools import add_codec_server, add_config, add_logs, add_replay, add_setup
from nomad_actions.cli.worker import add_worker

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CommandError",
    "build_parser",
    "default_data_dir",
    "find_dev_server",
    "main",
]

logger = logging.getLogger("nomad_actions.cli")


# ---------------------------------------------------------------------- main

#: Functions that each add one subcommand to the subparsers (in `--help` order).
_COMMANDS: list[Callable[[Any], None]] = [
    add_actions,
    add_schema,
    add_start,
    add_status,
    add_result,
    add_cancel,
    add_signal,
    add_list,
    add_setup,
    add_replay,
    add_dev,
    add_worker,
    add_config,
    add_logs,
    add_codec_server,
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
        formatter_class=HelpFormatter,
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
        expected = expected_error(err)
        if expected is not None:
            _error(str(expected))
            return expected.code
        logger.debug("Command %s failed", args.command, exc_info=True)
        _error(f"{type(err).__name__}: {err}")
        return EXIT_FAILURE

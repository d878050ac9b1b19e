"""The commands around the runs: ``setup`` (search attributes), ``replay`` (plugin code
against running histories), ``config`` (effective settings), ``logs`` (an action's log file)
and ``codec-server`` (decoding payloads for the Web UI and CLI).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nomad_actions.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    POLL_INTERVAL,
    CommandError,
    add_connection_options,
    add_json_option,
    add_log_option,
    add_parser,
    apply_connection_options,
    client_command,
    out,
    port_number,
    positive_int,
    print_json,
    setup_logging,
)
from nomad_actions.config import get_config

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


def add_replay(subparsers: Any) -> None:
    """Register the `replay` command on the subparsers."""
    parser = add_parser(
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
        "--limit", "-n", type=positive_int, default=100, metavar="N", help="at most N (100)"
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
    add_json_option(parser)
    add_connection_options(parser)
    parser.set_defaults(handler=_run_replay)


def _run_replay(args: argparse.Namespace) -> int:
    from nomad_actions.replay import replay_actions

    client_command(args)
    outcomes = replay_actions(
        action_id=args.action,
        since=args.since,
        limit=args.limit,
        workflow_ids=args.workflow_id,
        sandboxed=not args.unsandboxed,
    )
    failed = [o for o in outcomes if not o.ok]
    if args.json:
        print_json([dataclasses.asdict(o) for o in outcomes])
        return EXIT_FAILURE if failed else EXIT_OK
    if not outcomes:
        out("No action runs to replay.")
        return EXIT_OK
    for o in outcomes:
        if o.ok:
            out(f"ok    {o.workflow_id} ({o.workflow_type})")
    for o in failed:
        kind = "non-determinism" if o.nondeterministic else "failed"
        print(f"FAIL  {o.workflow_id} ({o.workflow_type}): {kind}: {o.error}", file=sys.stderr)
    out(f"{len(outcomes) - len(failed)} of {len(outcomes)} runs replay with the installed code")
    return EXIT_FAILURE if failed else EXIT_OK


# ---------------------------------------------------------------------- setup


def add_setup(subparsers: Any) -> None:
    """Register the `setup` command on the subparsers."""
    parser = add_parser(
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
    add_json_option(parser)
    add_connection_options(parser)
    parser.set_defaults(handler=_run_setup)


def _run_setup(args: argparse.Namespace) -> int:
    from nomad_actions.search_attributes import ensure_search_attributes

    client_command(args)
    config = get_config()
    outcome = ensure_search_attributes(config)
    if args.json:
        print_json({**dataclasses.asdict(outcome), "ok": outcome.ok})
        return EXIT_OK if outcome.ok else EXIT_FAILURE
    where = f"namespace {config.namespace} at {config.address}"
    if outcome.added:
        out(f"Registered {', '.join(outcome.added)} on {where}")
    if outcome.present:
        out(f"Already registered on {where}: {', '.join(outcome.present)}")
    if outcome.ok:
        return EXIT_OK
    raise CommandError(
        f"could not register {', '.join(outcome.missing)} on {where}"
        f" ({outcome.error or 'not permitted'}); run: {outcome.command}"
    )


# ---------------------------------------------------------------------- config


def add_config(subparsers: Any) -> None:
    """Register the `config` command on the subparsers."""
    parser = add_parser(
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
    add_json_option(parser)
    add_connection_options(parser)
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
    apply_connection_options(args)
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
        print_json({"settings": rows, "effective": summary})
        return EXIT_OK
    files = ", ".join(nomad.files) or "none (no nomad.yaml here, NOMAD_CONFIG unset)"
    out(f"config files: {files}")
    width = max(len(r["key"]) for r in rows)
    for row in rows:
        value = "null" if row["value"] is None else row["value"]
        out(f"  {row['key']:<{width}}  {value}  ({row['source']})")
    out(
        f"connection: {summary['address']} namespace {summary['namespace']}, "
        f"TLS {'on' if summary['tls'] else 'off'}, payload encryption "
        f"{'on' if summary['payload_encryption'] else 'off'}"
        f"{' (development mode)' if summary['development'] else ''}"
    )
    return EXIT_OK


# ---------------------------------------------------------------------- logs


def add_logs(subparsers: Any) -> None:
    """Register the `logs` command on the subparsers."""
    parser = add_parser(
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
    add_json_option(parser)
    add_connection_options(parser)
    parser.set_defaults(handler=_run_logs)


def _print_log_line(line: str, as_json: bool) -> None:
    if as_json:
        out(line)
        return
    try:
        record = json.loads(line)
        out(f"{record['timestamp']} {record['level']:<8} {record['event']}")
    except (ValueError, KeyError, TypeError):
        out(line)  # upstream's format does not escape quotes: show such lines as written


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
        client_command(args)
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


def add_codec_server(subparsers: Any) -> None:
    """Register the `codec-server` command on the subparsers."""
    parser = add_parser(
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
    parser.add_argument(
        "--port", type=port_number, default=8081, help="port to listen on (default 8081)"
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        metavar="ORIGIN",
        help="a Web UI origin allowed to call it from the browser, e.g. http://localhost:8233 "
        "(repeatable; default any origin)",
    )
    add_log_option(parser)
    parser.set_defaults(handler=_run_codec_server)


def _run_codec_server(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
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
            out(f"Codec server listening on {server.url} (POST /encode, /decode)")
            stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    out("Stopped.")
    return EXIT_OK

"""The commands about one action run or many: ``start`` (optionally waiting with a progress
view), ``status``, ``result``, ``cancel``, ``signal`` and ``list``.

Each command that looks at one run describes it once and reuses that description (owner
check, status, action id) for the rest of its work.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from nomad_actions.cli.common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    POLL_INTERVAL,
    PROG,
    CommandError,
    add_connection_options,
    add_json_option,
    add_parser,
    add_user_option,
    client_command,
    format_value,
    iso_time,
    local_time,
    out,
    positive_int,
    positive_seconds,
    print_json,
    read_json_argument,
    status_name,
    table,
)
from nomad_actions.cli.progress_view import ProgressView, progress_bar, progress_text

# ---------------------------------------------------------------------- start


def add_start(subparsers: Any) -> None:
    """Register the `start` command on the subparsers."""
    parser = add_parser(
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
    add_user_option(parser, "owner of the action: fills user_id when the input lacks it")
    parser.add_argument(
        "--wait",
        "-w",
        action="store_true",
        help="wait for the result, showing progress; exit 1 if the action fails",
    )
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        metavar="SECONDS",
        help="with --wait, give up waiting after this many seconds (the action keeps running)",
    )
    parser.add_argument("--workflow-id", metavar="ID", help="use this workflow id")
    add_json_option(parser)
    add_connection_options(parser)
    parser.set_defaults(handler=_run_start)


def _start_data(args: argparse.Namespace) -> Any:
    data = {} if args.data is None else read_json_argument(args.data, "--data")
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
    client_command(args)
    data = _start_data(args)
    try:
        workflow_id = start_action(action_name=args.action, data=data, workflow_id=args.workflow_id)
    except ActionInputError as err:
        message = str(err)
        if "user_id" in err.fields and args.user is None:
            message += " (pass --user USER to fill in user_id)"
        raise CommandError(message, EXIT_USAGE) from None
    if not args.wait:
        if args.json:
            print_json({"workflow_id": workflow_id})
        else:
            out(f"Started {workflow_id}")
            out(f"Follow it with: {PROG} status {workflow_id}")
        return EXIT_OK
    if not args.json:
        out(f"Started {workflow_id}")
    return _wait_and_print(workflow_id, args.timeout, args.json, started=True)


def _wait_for_result(workflow_id: str, timeout: float | None, view: ProgressView) -> Any:
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

    view = ProgressView.for_stdout(json_output) if started else ProgressView(sys.stdout, "off")
    try:
        result = _wait_for_result(workflow_id, timeout, view)
    except ActionFailedError as err:
        view.close()
        if json_output:
            status = err.status.name if err.status is not None else None
            print_json({"workflow_id": workflow_id, "status": status, "error": str(err)})
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
        print_json({"workflow_id": workflow_id, "status": "COMPLETED", "result": result})
    elif started:
        out("Completed. Result:")
        out(format_value(result))
    else:
        out(format_value(result))
    return EXIT_OK


# ---------------------------------------------------------------------- status


def add_status(subparsers: Any) -> None:
    """Register the `status` command on the subparsers."""
    parser = add_parser(
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
    add_user_option(parser, "fail unless the action belongs to this user")
    add_json_option(parser)
    add_connection_options(parser)
    parser.set_defaults(handler=_run_status)


def _run_status(args: argparse.Namespace) -> int:
    from nomad_actions.client import get_action_progress

    client_command(args)
    progress = get_action_progress(args.workflow_id, args.user)
    latest = progress.latest
    if args.json:
        print_json(
            {
                "workflow_id": progress.workflow_id or args.workflow_id,
                "action_id": progress.action_id,
                "user_id": progress.user_id,
                "workflow_type": progress.workflow_type,
                "status": progress.status.name,
                "start_time": iso_time(progress.start_time),
                "close_time": iso_time(progress.close_time),
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
        ("Started", local_time(progress.start_time)),
    ]
    if progress.close_time is not None:
        lines.append(("Ended", local_time(progress.close_time)))
    if latest is not None:
        lines.append(("Progress", f"{progress_bar(latest.fraction)} {progress_text(progress)}"))
    for activity in progress.activities:
        text = f"{activity.get('activity_type')} (attempt {activity.get('attempt')})"
        if activity.get("last_failure"):
            text += f", last failure: {activity['last_failure']}"
        lines.append(("Activity", text))
    for label, value in lines:
        out(f"{label + ':':<10} {value}")
    return EXIT_OK


# ---------------------------------------------------------------------- result


def add_result(subparsers: Any) -> None:
    """Register the `result` command on the subparsers."""
    parser = add_parser(
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
        type=positive_seconds,
        metavar="SECONDS",
        help="give up waiting after this many seconds (the action keeps running)",
    )
    add_user_option(parser, "fail unless the action belongs to this user")
    add_json_option(parser)
    add_connection_options(parser)
    parser.set_defaults(handler=_run_result)


def _run_result(args: argparse.Namespace) -> int:
    client_command(args)
    _describe(args.workflow_id, args.user)  # unknown id / other owner: fail early
    return _wait_and_print(args.workflow_id, args.timeout, args.json, started=False)


# ---------------------------------------------------------------------- cancel, signal


def _describe(workflow_id: str, user: str | None) -> Any:
    """The one description (an `ActionProgress`) of the run a command works on.

    It fails on an unknown workflow id, and on another owner when `user` is given; the calls
    that follow rely on that check and pass no user, so they need not describe the run again.
    """
    from nomad_actions.client import get_action_progress

    return get_action_progress(workflow_id, user)


def _ensure_running(workflow_id: str, described: Any, what: str) -> None:
    from temporalio.client import WorkflowExecutionStatus

    status = described.status
    if status != WorkflowExecutionStatus.RUNNING:
        raise CommandError(f'action "{workflow_id}" has already ended ({status.name}); {what}')


def add_cancel(subparsers: Any) -> None:
    """Register the `cancel` command on the subparsers."""
    parser = add_parser(
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
    add_user_option(parser, "fail unless the action belongs to this user")
    add_json_option(parser)
    add_connection_options(parser)
    parser.set_defaults(handler=_run_cancel)


def _run_cancel(args: argparse.Namespace) -> int:
    from nomad_actions.client import stop_action

    client_command(args)
    described = _describe(args.workflow_id, args.user)
    _ensure_running(args.workflow_id, described, "nothing to cancel")
    stop_action(args.workflow_id, None, args.reason)  # the owner is checked: no user
    if args.json:
        print_json({"workflow_id": args.workflow_id, "cancel_requested": True})
    else:
        out(f"Cancellation requested for {args.workflow_id}")
    return EXIT_OK


def _check_signal_name(workflow_id: str, described: Any, name: str) -> None:
    """Refuse a signal the action's workflow does not define (when the action is known)."""
    from temporalio.workflow import _Definition

    from nomad_actions.registry import load_action

    action_id = described.action_id
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


def add_signal(subparsers: Any) -> None:
    """Register the `signal` command on the subparsers."""
    parser = add_parser(
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
    add_user_option(parser, "fail unless the action belongs to this user")
    add_json_option(parser)
    add_connection_options(parser)
    parser.set_defaults(handler=_run_signal)


def _run_signal(args: argparse.Namespace) -> int:
    from nomad_actions.client import signal_action

    data = None if args.data is None else read_json_argument(args.data, "--data")
    client_command(args)
    described = _describe(args.workflow_id, args.user)
    _ensure_running(args.workflow_id, described, "it cannot receive signals")
    _check_signal_name(args.workflow_id, described, args.signal)
    signal_action(args.workflow_id, args.signal, data)  # the owner is checked: no user
    if args.json:
        print_json({"workflow_id": args.workflow_id, "signal": args.signal, "sent": True})
    else:
        out(f'Sent signal "{args.signal}" to {args.workflow_id}')
    return EXIT_OK


# ---------------------------------------------------------------------- list


def add_list(subparsers: Any) -> None:
    """Register the `list` command on the subparsers."""
    parser = add_parser(
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
    add_user_option(parser, "only this user's actions")
    parser.add_argument("--action", "-a", metavar="ACTION", help="only runs of this action id")
    parser.add_argument("--upload", metavar="UPLOAD_ID", help="only runs for this upload id")
    parser.add_argument(
        "--status",
        "-s",
        type=status_name,
        metavar="STATUS",
        help="only runs in this status: RUNNING, COMPLETED, FAILED, CANCELED, TERMINATED, "
        "TIMED_OUT, CONTINUED_AS_NEW (any case)",
    )
    parser.add_argument(
        "--limit",
        "-n",
        type=positive_int,
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
    add_json_option(parser)
    add_connection_options(parser)
    parser.set_defaults(handler=_run_list)


def _run_list(args: argparse.Namespace) -> int:
    from nomad_actions.client import list_actions_page

    client_command(args)
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
            print_json({"total": page.total})
        else:
            out(str(page.total))
        return EXIT_OK
    if args.json:
        print_json(
            [
                {
                    "workflow_id": r.workflow_id,
                    "run_id": r.run_id,
                    "action_id": r.action_id,
                    "user_id": r.user_id,
                    "status": r.status.name,
                    "workflow_type": r.workflow_type,
                    "task_queue": r.task_queue,
                    "start_time": iso_time(r.start_time),
                    "close_time": iso_time(r.close_time),
                }
                for r in runs
            ]
        )
        if page.next_cursor:
            # stdout stays a JSON list (scripts parse it); the cursor is for people.
            print(f"next page: --cursor {page.next_cursor}", file=sys.stderr)
        return EXIT_OK
    if not runs:
        out("No action runs found.")
        return EXIT_OK
    rows = [
        [
            r.workflow_id,
            r.action_id or "-",
            r.user_id or "-",
            r.status.name,
            local_time(r.start_time),
        ]
        for r in runs
    ]
    out(table(["WORKFLOW ID", "ACTION", "USER", "STATUS", "STARTED"], rows))
    out(f"{len(runs)} of {page.total} action runs")
    if page.next_cursor:
        out(f"next page: --cursor {page.next_cursor}")
    return EXIT_OK

"""``nomad-actions dev``: the supervisor of a local Temporal dev server (with its Web UI and,
when keys are set, a codec server) and one in-process worker per task queue of the installed
actions, until Ctrl-C. The server's lifecycle is :class:`nomad_actions.devserver.DevServer`,
the one the test helpers use; dev.json (:mod:`nomad_actions.cli.devfile`) tells the other
commands where it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import signal
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nomad_actions import devserver
from nomad_actions.action import QueueWork
from nomad_actions.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    PROG,
    CommandError,
    add_log_option,
    add_parser,
    load_error_text,
    out,
    port_number,
    positive_seconds,
    setup_logging,
)
from nomad_actions.cli.devfile import (
    DEV_DB_FILE,
    DEV_INFO_FILE,
    DEV_LOG_FILE,
    ENV_DATA_DIR,
    default_data_dir,
    find_dev_server,
    read_dev_file,
    remove_dev_file,
    write_dev_file,
)
from nomad_actions.config import ENV_API_SECRET, ENV_HOST, ENV_MODE, ENV_PORT, configure, get_config
from nomad_actions.devserver import DevServer, DevServerError, port_free

logger = logging.getLogger("nomad_actions.cli")


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


def _plan_dev_workers() -> tuple[dict[str, QueueWork], list[tuple[str, str]]]:
    """Task queue -> what its worker runs (sorted by queue), and the (id, error) of the
    actions that fail to load."""
    from nomad_actions.action import group_by_task_queue
    from nomad_actions.registry import get_actions, load_action

    loaded = []
    broken = []
    for action_id in sorted(get_actions()):
        try:
            loaded.append(load_action(action_id))
        except Exception as err:
            broken.append((action_id, load_error_text(err)))
    groups = group_by_task_queue(loaded)
    return {queue: groups[queue] for queue in sorted(groups)}, broken


def add_dev(subparsers: Any) -> None:
    """Register the `dev` command on the subparsers."""
    parser = add_parser(
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
    parser.add_argument("--port", type=port_number, help="gRPC port (default: a free one)")
    parser.add_argument(
        "--ui-port", type=port_number, metavar="PORT", help="Web UI port (default: a free one)"
    )
    parser.add_argument("--no-worker", action="store_true", help="run only the server, no workers")
    parser.add_argument(
        "--start-timeout",
        type=positive_seconds,
        default=60.0,
        metavar="SECONDS",
        help="give up if the server does not listen within this time (default 60)",
    )
    add_log_option(parser)
    parser.set_defaults(handler=_run_dev)


def _stop_leftover_server(data_dir: Path) -> None:
    """Stop a dev server that a killed `nomad-actions dev` left running on this data dir
    (recorded in its dev.json), and drop that stale dev.json."""
    info = read_dev_file(data_dir)
    if info is None:
        return
    DevServer.stop_leftover(info.get("server_pid"), data_dir / DEV_DB_FILE)
    with contextlib.suppress(OSError):
        (data_dir / DEV_INFO_FILE).unlink()


def _server_error(err: DevServerError, log_path: Path) -> CommandError:
    lines = [line.strip() for line in err.log_tail.splitlines() if line.strip()]
    last = f" (last log line: {lines[-1][:200]})" if lines else ""
    return CommandError(f"{err.summary}{last}; server log: {log_path}")


def _run_dev(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    data_dir = Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()
    try:
        devserver.find_temporal_cli()  # through the module, as DevServer.command() finds it
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
        if port is not None and not port_free(port):
            raise CommandError(f"{option} {port}: the port is in use on 127.0.0.1")

    stop = _StopSignals()
    with stop.installed():
        server = DevServer(
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
            except DevServerError as err:
                raise _server_error(err, data_dir / DEV_LOG_FILE) from None
            if stop.requested.is_set():
                return EXIT_OK
            config = configure(host=server.host, port=server.port, development=True)
            broken: list[tuple[str, str]] = []
            if not args.no_worker and not stop.requested.is_set():
                workers, broken = _start_dev_workers(config)
            info = {
                "pid": os.getpid(),
                "server_pid": server.pid,
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
            write_dev_file(data_dir, info)  # last: other commands may use it at once
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
    for queue, work in plan.items():
        try:
            worker = Worker(queue, actions=work.actions, activities=work.activities, config=config)
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
    out(f"Temporal dev server running (pid {info['server_pid']}), state in {info['db_filename']}")
    out(f"  gRPC address: {info['address']}")
    out(f"  Web UI:       {info['ui_url']}")
    out(f"  Server log:   {info['log_path']}")
    if workers:
        for worker in workers:
            names = dict.fromkeys(a.workflow_name for a in worker.actions)
            ids = ", ".join(names) or "activities only"
            out(f"  Worker:       {worker.task_queue} ({ids})")
    else:
        out("  Workers:      none")
    for action_id, error in broken:
        out(f"  Skipped:      {action_id}: {error}")
    if info.get("codec_url"):
        out(f"  Codec server: {info['codec_url']} (the Web UI decodes encrypted payloads)")
    out(f"Other {PROG} commands find this server through {info['data_dir']}/{DEV_INFO_FILE}.")
    out("For other programs (e.g. NOMAD itself), in another shell:")
    out(f"  export {ENV_HOST}={info['host']} {ENV_PORT}={info['port']}")
    if os.environ.get(ENV_API_SECRET):
        # These workers read plain payloads; a client with the secret would encrypt them.
        out(f"  export {ENV_MODE}=development   # {ENV_API_SECRET} is set")
    out("Press Ctrl-C to stop.")


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
            out("Stopping workers ...")
            _stop_workers(workers)
    finally:
        if server.process is not None:
            out("Stopping the Temporal dev server ...")
        server.stop()
        remove_dev_file(data_dir)
    out("Stopped.")

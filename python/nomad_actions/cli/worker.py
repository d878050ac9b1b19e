"""``nomad-actions worker``: one worker for the actions on one task queue, with the options
of nomad.yaml's worker block (each overridden by its flag), NOMAD's worker set-up, and
one-line errors for a broken plugin, nothing to run, or an unreachable server.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from nomad_actions.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    add_connection_options,
    add_log_option,
    add_parser,
    apply_connection_options,
    non_negative_int,
    non_negative_seconds,
    port_number,
    positive_int,
    setup_logging,
)
from nomad_actions.config import get_config

logger = logging.getLogger("nomad_actions.cli")


# ---------------------------------------------------------------------- worker


def add_worker(subparsers: Any) -> None:
    """Register the `worker` command on the subparsers."""
    parser = add_parser(
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
        type=positive_int,
        default=None,
        metavar="N",
        help="activity tasks run at once (default: the worker block's max_concurrent_activities "
        "in nomad.yaml; when unset there, sdk-core's resource-based tuner with the block's "
        "target_memory_usage, target_cpu_usage, min/max_activity_slots, activity_ramp_throttle)",
    )
    parser.add_argument(
        "--max-concurrent-workflow-tasks",
        type=positive_int,
        default=100,
        metavar="N",
        help="workflow tasks processed at once (default 100)",
    )
    parser.add_argument(
        "--activity-threads",
        type=positive_int,
        default=None,
        metavar="N",
        help="threads for plain `def` activities (default: the worker block's pool_size)",
    )
    parser.add_argument(
        "--max-cached-workflows",
        type=non_negative_int,
        default=1000,
        metavar="N",
        help="workflow runs kept in memory; 0 replays every task from history (default 1000)",
    )
    parser.add_argument(
        "--graceful-shutdown-timeout",
        type=non_negative_seconds,
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
        type=port_number,
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
        type=non_negative_seconds,
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
    add_connection_options(parser)
    add_log_option(parser)
    parser.set_defaults(handler=_run_worker)


def _queues_with_actions() -> dict[str, int]:
    """Task queue name -> number of installed actions on it (without loading them)."""
    from nomad_actions.action import resolve_task_queue
    from nomad_actions.registry import get_actions

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
    setup_logging(args.log_level)
    apply_connection_options(args)

    from nomad_actions.action import resolve_task_queue
    from nomad_actions.errors import (
        ActionLoadError,
        ConfigurationError,
        NothingToRunError,
        TemporalConnectionError,
    )
    from nomad_actions.nomad_worker import NomadSetupError, prepare_worker
    from nomad_actions.worker import Worker

    queue = resolve_task_queue(args.task_queue)
    config = get_config()
    try:
        # Upstream's logging, signal-input activity and infrastructure set-up, as its workers.
        setup = prepare_worker(queue, nomad_setup=not args.no_nomad_setup, config=config)
    except NomadSetupError as err:
        raise CommandError(str(err), EXIT_FAILURE) from None
    # Importing nomad sets every root handler to its console_log_level (WARNING); --log-level
    # governs ours.
    setup_logging(args.log_level)
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
    except NothingToRunError:
        raise _nothing_to_run(queue) from None
    except ValueError as err:
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
        # One line naming the configured address; the detail without the engine's prefix
        # (an error raised without attributes has only its message).
        reason = err.reason if err.reason is not None else str(err)
        message = f"cannot connect to Temporal at {config.address}: {reason}"
        raise CommandError(message, EXIT_FAILURE) from None
    return EXIT_OK

"""A drop-in for `temporalio.worker.Worker` that runs on the nomad-actions engine.

Existing temporalio code switches by changing one import::

    from nomad_actions.temporal import Worker   # was: from temporalio.worker import Worker

    async with Worker(client, task_queue="q", workflows=[MyWorkflow], activities=[act]):
        ...

The address, namespace, TLS, API key, identity and data converter come from the given
temporalio `Client`. Options the engine does not implement raise `UnsupportedOptionError`
naming them, instead of being silently ignored.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import temporalio.client
import temporalio.converter
import temporalio.service
import temporalio.worker

from nomad_actions.config import ConnectionConfig, TlsConfig
from nomad_actions.errors import NomadActionsError
from nomad_actions.worker import Worker as _EngineWorker

__all__ = ["UnsupportedOptionError", "Worker"]


class UnsupportedOptionError(NomadActionsError, TypeError):
    """A `temporalio.worker.Worker` option that nomad-actions does not implement."""


# Options accepted only at these values (the official defaults); anything else is refused.
_DEFAULT_ONLY: dict[str, Any] = {
    "nexus_service_handlers": (),
    "workflow_task_executor": None,
    "nexus_task_executor": None,
    "plugins": (),
    "tuner": None,
    "max_concurrent_nexus_tasks": None,
    "max_activities_per_second": None,
    "max_task_queue_activities_per_second": None,
    "shared_state_manager": None,
    "on_fatal_error": None,
    "use_worker_versioning": False,
    "deployment_config": None,
    "patch_activation_callback": None,
    "workflow_failure_exception_types": (),
    "disable_safe_workflow_eviction": False,
}
# Options accepted and ignored because the engine manages them itself (documented).
_MANAGED = {
    "max_concurrent_workflow_task_polls",
    "max_concurrent_activity_task_polls",
    "nonsticky_to_sticky_poll_ratio",
    "sticky_queue_schedule_to_start_timeout",
    "max_eager_activity_reservations_per_workflow_task",
    "disable_eager_activity_execution",
    "plugin_shutdown_timeout",
    "workflow_task_poller_behavior",
    "activity_task_poller_behavior",
    "nexus_task_poller_behavior",
    "disable_payload_error_limit",
    "max_workflow_task_external_storage_concurrency",
    "max_concurrent_local_activities",
    "build_id",
}


def _is_default(value: Any, default: Any) -> bool:
    if isinstance(default, tuple):
        return value is None or (isinstance(value, Sequence) and len(value) == 0)
    return value == default


def _connection_config(client: temporalio.client.Client, identity: str | None) -> ConnectionConfig:
    svc = client.service_client.config
    host, _, port = svc.target_host.rpartition(":")
    tls: TlsConfig | None = None
    if isinstance(svc.tls, temporalio.service.TLSConfig):
        tls = TlsConfig(
            server_root_ca_cert=svc.tls.server_root_ca_cert,
            client_cert=svc.tls.client_cert,
            client_private_key=svc.tls.client_private_key,
            domain=svc.tls.domain,
        )
    elif svc.tls is True:
        tls = TlsConfig()
    timeout_ms = int(svc.connect_timeout.total_seconds() * 1000) if svc.connect_timeout else 10_000
    return ConnectionConfig(
        host=host or "localhost",
        port=int(port or 7233),
        namespace=client.namespace,
        api_key=svc.api_key,
        tls=tls,
        connect_timeout_millis=timeout_ms,
        identity=identity or client.identity or ConnectionConfig().identity,
        # The client's own choice (temporalio compresses by default).
        grpc_compression=(
            "none" if svc.grpc_compression is temporalio.service.GrpcCompression.NONE else "gzip"
        ),
    )


def _threads_of(executor: concurrent.futures.Executor | None) -> int | None:
    if executor is None:
        return None
    if isinstance(executor, concurrent.futures.ThreadPoolExecutor):
        return executor._max_workers
    raise UnsupportedOptionError(
        "activity_executor: only a ThreadPoolExecutor is supported (its max_workers sizes the "
        f"engine's pool for sync activities); got {type(executor).__name__}"
    )


class Worker:
    """Same constructor meaning as `temporalio.worker.Worker`; see the module docstring."""

    def __init__(
        self,
        client: temporalio.client.Client,
        *,
        task_queue: str,
        activities: Sequence[Callable[..., Any]] = (),
        workflows: Sequence[type] = (),
        activity_executor: concurrent.futures.Executor | None = None,
        workflow_runner: temporalio.worker.WorkflowRunner | None = None,
        unsandboxed_workflow_runner: temporalio.worker.WorkflowRunner | None = None,
        interceptors: Sequence[temporalio.worker.Interceptor] = (),
        identity: str | None = None,
        max_cached_workflows: int = 1000,
        max_concurrent_workflow_tasks: int | None = None,
        max_concurrent_activities: int | None = None,
        no_remote_activities: bool = False,
        max_heartbeat_throttle_interval: timedelta = timedelta(seconds=60),
        default_heartbeat_throttle_interval: timedelta = timedelta(seconds=30),
        graceful_shutdown_timeout: timedelta = timedelta(),
        debug_mode: bool = False,
        **other: Any,
    ) -> None:
        unknown = sorted(set(other) - set(_DEFAULT_ONLY) - _MANAGED)
        if unknown:
            raise TypeError(f"Worker() got unexpected keyword arguments: {', '.join(unknown)}")
        refused = sorted(
            k
            for k, v in other.items()
            if k in _DEFAULT_ONLY and not _is_default(v, _DEFAULT_ONLY[k])
        )
        if refused:
            raise UnsupportedOptionError(
                f"nomad-actions' Worker does not support: {', '.join(refused)}"
            )
        sync_activities = any(not asyncio.iscoroutinefunction(a) for a in activities)
        if sync_activities and activity_executor is None:
            # The official worker requires an executor for sync activities; keep that rule.
            raise ValueError("Activity executor required for synchronous activities")
        self._client = client
        self._engine = _EngineWorker(
            task_queue,
            actions=[],
            workflows=workflows,
            activities=activities,
            config=_connection_config(client, identity),
            data_converter=client.data_converter,
            interceptors=interceptors,
            workflow_runner=workflow_runner,
            unsandboxed_workflow_runner=unsandboxed_workflow_runner,
            max_cached_workflows=max_cached_workflows,
            max_concurrent_workflow_tasks=max_concurrent_workflow_tasks or 100,
            max_concurrent_activities=max_concurrent_activities or 100,
            activity_threads=_threads_of(activity_executor),
            graceful_shutdown_timeout=graceful_shutdown_timeout,
            deadlock_timeout=None if debug_mode else 2.0,
            max_heartbeat_throttle_interval=max_heartbeat_throttle_interval,
            default_heartbeat_throttle_interval=default_heartbeat_throttle_interval,
            client=client,
            no_remote_activities=no_remote_activities,
        )
        self._task: asyncio.Task[None] | None = None

    @property
    def task_queue(self) -> str:
        """The task queue this worker polls."""
        return self._engine.task_queue

    @property
    def client(self) -> temporalio.client.Client:
        """The client this worker was created with."""
        return self._client

    @property
    def is_running(self) -> bool:
        """Whether `run()` is in progress."""
        return self._engine._started.is_set() and not self._engine._finished.is_set()

    @property
    def is_shutdown(self) -> bool:
        """Whether the worker has finished shutting down."""
        return self._engine._finished.is_set()

    async def run(self) -> None:
        """Poll and run tasks until `shutdown()` is called, then drain."""
        await self._engine.run_async()

    async def shutdown(self) -> None:
        """Stop polling, let running activities finish within `graceful_shutdown_timeout`,
        cancel the rest, and wait until `run()` has returned."""
        self._engine.shutdown()
        if self._task is not None:
            await asyncio.shield(self._task)
        else:
            await asyncio.get_running_loop().run_in_executor(None, self._engine._finished.wait)

    async def __aenter__(self) -> Worker:
        self._task = asyncio.create_task(self.run())
        started = asyncio.get_running_loop().run_in_executor(None, self._engine._started.wait)
        done, _ = await asyncio.wait({self._task, started}, return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:
            self._task.result()  # raises the start error
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

"""Safe upgrades: replay the histories of running (or recent) actions against the plugin
code installed here, before deploying it.

A workflow whose code changed incompatibly fails replay with temporalio's
`NondeterminismError`, exactly as it would fail on a worker running the new code. Histories
are fetched from the server, their payloads decrypted with the configured NOMAD API secret
(upstream's Fernet codec, in Rust), and replayed with temporalio's `Replayer`, sandboxed like
the worker runs them. `nomad-actions replay` is the command-line form.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import temporalio.client
import temporalio.converter
import temporalio.service
import temporalio.worker
import temporalio.workflow
from temporalio.api.common.v1 import Payload
from temporalio.client import WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter

from nomad_actions.client import ActionExecution, list_actions
from nomad_actions.config import ConnectionConfig, get_config
from nomad_actions.registry import get_actions, get_broken_entry_points, load_action
from nomad_actions.sandbox import SandboxRunner

__all__ = ["ReplayOutcome", "replay_actions"]


@dataclasses.dataclass(frozen=True)
class ReplayOutcome:
    """The replay of one action run.

    Attributes:
        workflow_id, run_id: the run.
        action_id: its action (from the memo), if known.
        workflow_type: the workflow type in its history.
        ok: replay succeeded: the installed code makes the same decisions.
        nondeterministic: replay failed with a non-determinism error.
        error: why it failed ('' when ok).
    """

    workflow_id: str
    run_id: str
    action_id: str | None
    workflow_type: str
    ok: bool
    nondeterministic: bool = False
    error: str = ""


class _EngineCodec(temporalio.converter.PayloadCodec):
    """Decrypts with the Rust client's codec (the NOMAD API secret); encoding is never
    needed to replay."""

    def __init__(self, native: Any) -> None:
        self._native = native

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        raw = self._native.decode_payloads([p.SerializeToString() for p in payloads])
        return [Payload.FromString(b) for b in raw]


def _data_converter(config: ConnectionConfig) -> temporalio.converter.DataConverter:
    from nomad_actions.client import _client_for

    if config.payload_secret is None:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter, payload_codec=_EngineCodec(_client_for(config))
    )


async def _connect(config: ConnectionConfig) -> temporalio.client.Client:
    tls: bool | temporalio.service.TLSConfig = False
    if config.tls is not None:
        tls = temporalio.service.TLSConfig(
            server_root_ca_cert=config.tls.server_root_ca_cert,
            client_cert=config.tls.client_cert,
            client_private_key=config.tls.client_private_key,
            domain=config.tls.domain,
        )
    return await temporalio.client.Client.connect(
        config.address,
        namespace=config.namespace,
        api_key=config.api_key,
        tls=tls,
        identity=config.identity,
        # Replay decodes in the Replayer; the history itself is fetched as it is stored.
        data_converter=pydantic_data_converter,
    )


def _installed_workflows() -> tuple[dict[str, type], dict[str, str]]:
    """Workflow type name -> class, of every installed action; and action id -> why it
    could not be loaded."""
    by_name: dict[str, type] = {}
    broken: dict[str, str] = {}
    for action_id in sorted(get_actions()):
        try:
            action = load_action(action_id)
        except Exception as err:
            broken[action_id] = f"{type(err).__name__}: {err}"
            continue
        for cls in action.all_workflows():
            defn = temporalio.workflow._Definition.from_class(cls)
            if defn is not None and defn.name:
                by_name.setdefault(defn.name, cls)
    for entry, reason in get_broken_entry_points().items():
        broken.setdefault(entry, str(reason))
    return by_name, broken


def _runs(
    action_id: str | None, since: datetime | None, limit: int, workflow_ids: Sequence[str]
) -> list[ActionExecution]:
    if workflow_ids:
        from nomad_actions.client import get_action_progress

        rows = []
        for wid in workflow_ids:
            progress = get_action_progress(wid)
            rows.append(
                ActionExecution(
                    workflow_id=wid,
                    run_id="",
                    action_id=progress.action_id,
                    user_id=progress.user_id,
                    status=progress.status,
                    workflow_type=progress.workflow_type or "",
                    task_queue="",
                    start_time=progress.start_time,
                    close_time=progress.close_time,
                )
            )
        return rows
    if since is None:
        return list_actions(
            action_id=action_id, status=WorkflowExecutionStatus.RUNNING, limit=limit
        )
    recent = list_actions(action_id=action_id, limit=max(limit * 10, 1000))
    return [r for r in recent if r.start_time is not None and r.start_time >= since][:limit]


async def _replay(
    runs: list[ActionExecution], config: ConnectionConfig, sandboxed: bool
) -> list[ReplayOutcome]:
    workflows, broken = _installed_workflows()
    client = await _connect(config)
    # Sandboxed replays run in the worker's default sandbox (`SandboxRunner`).
    runner: dict[str, Any] = {"workflow_runner": SandboxRunner()}
    if not sandboxed:
        runner["workflow_runner"] = temporalio.worker.UnsandboxedWorkflowRunner()
    replayer = temporalio.worker.Replayer(
        workflows=list(dict.fromkeys(workflows.values())),
        data_converter=_data_converter(config),
        **runner,
    )
    outcomes = []
    for run in runs:
        handle = client.get_workflow_handle(run.workflow_id, run_id=run.run_id or None)
        history = await handle.fetch_history()
        workflow_type = history.events[
            0
        ].workflow_execution_started_event_attributes.workflow_type.name
        base = {
            "workflow_id": run.workflow_id,
            "run_id": history.run_id,
            "action_id": run.action_id,
            "workflow_type": workflow_type,
        }
        if workflow_type not in workflows:
            why = f"no installed action has a workflow named {workflow_type!r}"
            if run.action_id in broken:
                why += f" (action {run.action_id!r} does not load: {broken[run.action_id]})"
            outcomes.append(ReplayOutcome(**base, ok=False, error=why))
            continue
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        failure = result.replay_failure
        if failure is None:
            outcomes.append(ReplayOutcome(**base, ok=True))
            continue
        nondeterministic = isinstance(failure, temporalio.workflow.NondeterminismError)
        outcomes.append(
            ReplayOutcome(
                **base,
                ok=False,
                nondeterministic=nondeterministic,
                error=f"{type(failure).__name__}: {failure}",
            )
        )
    return outcomes


def replay_actions(
    action_id: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
    workflow_ids: Sequence[str] = (),
    config: ConnectionConfig | None = None,
    sandboxed: bool = True,
) -> list[ReplayOutcome]:
    """Replay action runs against the installed plugin code.

    Args:
        action_id: only runs of this action.
        since: replay runs started since then, in any status; default: the running ones.
        limit: at most this many runs.
        workflow_ids: replay exactly these runs instead (the filters above are ignored).
        config: where to connect; default `get_config()`.
        sandboxed: replay in temporalio's sandbox, as the worker runs workflows.

    Returns:
        One outcome per run, in the order listed.
    """
    config = config or get_config()
    runs = _runs(action_id, since, limit, workflow_ids)
    if not runs:
        return []
    return asyncio.run(_replay(runs, config, sandboxed))

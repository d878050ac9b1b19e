"""Upstream NOMAD 2.0's own client code, run as a separate process (nomad reads its
configuration, NOMAD_CONFIG, once at import). No tests here.

    python upstream.py start ACTION_ID USER_ID SAMPLE   # prints {"workflow_id", "result"}
    python upstream.py official-worker QUEUE ACTION_ID  # serves the action until SIGTERM
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys


async def start(action_id: str, user_id: str, sample: str) -> None:
    # Upstream's own start path (the one manager.start_action takes after recording the
    # action in MongoDB): the plugin catalog, get_client() with its codec, and the Priority.
    from nomad.actions.plugin_adapter import PluginActionCatalog
    from nomad.actions.workflow_adapter import TemporalAsyncActionWorkflow
    from nomad_actions_nomad20plugin.action import SampleInput

    definition = PluginActionCatalog().get(action_id)
    workflow_id = f"{action_id}-{user_id}-upstream"
    adapter = TemporalAsyncActionWorkflow()
    await adapter.start(
        definition, SampleInput(user_id=user_id, sample=sample), workflow_id, user_id
    )
    result = await asyncio.wait_for(adapter.get_result(workflow_id), 60)
    print(json.dumps({"workflow_id": workflow_id, "result": result}), flush=True)


async def official_worker(queue: str, action_id: str) -> None:
    import temporalio.worker
    from nomad.actions.client import get_client
    from nomad.actions.plugin_adapter import get_actions

    action = get_actions()[action_id].load()
    client = await get_client()  # upstream's data converter: Pydantic + EncryptionCodec
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with temporalio.worker.Worker(
        client, task_queue=queue, workflows=[action.workflow], activities=action.activities
    ):
        print("ready", flush=True)
        await stop.wait()


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "start":
        asyncio.run(start(*args))
    elif command == "official-worker":
        asyncio.run(official_worker(*args))
    else:
        raise SystemExit(f"unknown command {command!r}")

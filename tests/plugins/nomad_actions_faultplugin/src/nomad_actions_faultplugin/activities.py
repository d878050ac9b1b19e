"""Activities of the fault plugin.

``fault_step`` writes one marker file per completed run in ``marker_dir``, named
``<workflow id>~<activity id>~a<attempt>~p<pid>``: the tests compare them with the
``ActivityTaskCompleted`` events in the workflow histories.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import Any

from temporalio import activity

from .models import EchoOutput, HeartbeatInput, StepInput, step_value


def marker_name(workflow_id: str, activity_id: str, attempt: int, pid: int) -> str:
    return f"{workflow_id}~{activity_id}~a{attempt}~p{pid}"


@activity.defn
async def fault_step(data: StepInput) -> int:
    """Sleep ``data.seconds``, record the completion, return ``step_value(data.index)``."""
    await asyncio.sleep(data.seconds)
    info = activity.info()
    name = marker_name(info.workflow_id, info.activity_id, info.attempt, os.getpid())
    Path(data.marker_dir, name).touch(exist_ok=False)
    return step_value(data.index)


@activity.defn
async def fault_echo(data: EchoOutput) -> EchoOutput:
    """Return the input unchanged."""
    return data


@activity.defn
async def fault_echo_any(data: Any) -> Any:
    """Return the (undecoded by the workflow) input unchanged."""
    return data


@activity.defn
async def fault_step_a(tag: str) -> str:
    return f"a:{tag}"


@activity.defn
async def fault_step_b(tag: str) -> str:
    return f"b:{tag}"


class Opaque:
    """A class of the plugin's own, unknown to any serializer."""


@activity.defn
def fault_bad_result(kind: str) -> Any:
    """Return a value that JSON cannot hold, chosen by ``kind``."""
    if kind == "object":
        return object()
    if kind == "socket":
        # Closed at once: only its type matters, and the worker must not keep it open.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.close()
        return sock
    if kind == "set":
        return {object(), object()}
    if kind == "nested":
        return {"fine": [1, 2, {"deep": Opaque()}]}
    if kind == "bigint":
        return {"count": 2**70}
    if kind == "huge":
        return "x" * (3 * 1024 * 1024)
    return f"fine:{kind}"


@activity.defn
async def fault_square(n: int) -> int:
    return n * n


@activity.defn
async def fault_ok(name: str) -> str:
    return f"ok:{name}"


def not_an_activity(name: str) -> str:
    """A plain function a plugin forgot to decorate with ``@activity.defn``."""
    return name


@activity.defn
async def fault_heartbeat(data: HeartbeatInput) -> int:
    """Heartbeat once a second for ``data.seconds``; record the completion; return the
    number of heartbeats."""
    for beat in range(data.seconds):
        activity.heartbeat(beat)
        await asyncio.sleep(1.0)
    info = activity.info()
    name = marker_name(info.workflow_id, info.activity_id, info.attempt, os.getpid())
    Path(data.marker_dir, name).touch(exist_ok=False)
    return data.seconds

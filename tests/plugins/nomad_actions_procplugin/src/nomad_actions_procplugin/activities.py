"""Activities that record, in marker files, which worker process ran them.

Files in ``marker_dir`` (written atomically: temporary file, then rename):

- ``<tag>.attempt<N>.started``: ``{"pid": ..., "attempt": N}`` when attempt N starts.
- ``<tag>.attempt<N>.finished``: the same when attempt N finishes its work.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import time
from pathlib import Path

from temporalio import activity

from .models import SleepInput, WorkInput, WorkOutput

HEARTBEAT_INTERVAL = 0.2


def write_marker(marker_dir: str, tag: str, stage: str) -> None:
    """Write ``<tag>.attempt<N>.<stage>`` with this process's pid and the attempt."""
    attempt = activity.info().attempt
    record = {"pid": os.getpid(), "attempt": attempt}
    path = Path(marker_dir) / f"{tag}.attempt{attempt}.{stage}"
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)


@activity.defn
async def heartbeat_work(data: WorkInput) -> WorkOutput:
    """Work (sleep) ``data.seconds`` while heartbeating, then sum ``data.values``."""
    write_marker(data.marker_dir, data.tag, "started")
    deadline = time.monotonic() + data.seconds
    while True:
        left = deadline - time.monotonic()
        activity.heartbeat(left)
        if left <= 0:
            break
        await asyncio.sleep(min(HEARTBEAT_INTERVAL, left))
    write_marker(data.marker_dir, data.tag, "finished")
    return WorkOutput(total=sum(data.values), pid=os.getpid(), attempt=activity.info().attempt)


@activity.defn
def sleep_work(data: SleepInput) -> str:
    """Sleep ``data.seconds`` in a pool thread (in short steps, so a cancel gets through)."""
    write_marker(data.marker_dir, data.tag, "started")
    deadline = time.monotonic() + data.seconds
    if data.hold_gil:
        # Through PyDLL, libc's sleep runs without releasing the GIL: a stuck C extension.
        ctypes.PyDLL(None).sleep(round(data.seconds))
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(0.05, left))
    write_marker(data.marker_dir, data.tag, "finished")
    return f"slept {data.value}"

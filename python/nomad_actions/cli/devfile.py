"""dev.json: where a running ``nomad-actions dev`` records its server (host, port, pids, Web
UI, ...) in its data directory, so that the other commands find that server by themselves.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from nomad_actions.devserver import pid_alive

#: Where `nomad-actions dev` keeps its database, log and dev.json, unless --data-dir says.
ENV_DATA_DIR = "NOMAD_ACTIONS_DATA_DIR"
DEV_INFO_FILE = "dev.json"
DEV_DB_FILE = "temporal.db"
DEV_LOG_FILE = "temporal.log"


def default_data_dir() -> Path:
    """Where `nomad-actions dev` keeps its state: `$NOMAD_ACTIONS_DATA_DIR`, else
    `$XDG_DATA_HOME/nomad-actions`, else `~/.local/share/nomad-actions`."""
    value = os.environ.get(ENV_DATA_DIR)
    if value:
        return Path(value).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or "~/.local/share"
    return Path(base).expanduser() / "nomad-actions"


def read_dev_file(data_dir: Path) -> dict[str, Any] | None:
    """The dev.json in `data_dir` when it is readable and names a host and port,
    else None (whether or not its process still runs)."""
    try:
        info = json.loads((data_dir / DEV_INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict):
        return None
    if not isinstance(info.get("host"), str) or not isinstance(info.get("port"), int):
        return None
    return info


def find_dev_server(data_dir: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """The dev.json of a running `nomad-actions dev`, or None.

    Args:
        data_dir: its data directory; default :func:`default_data_dir`.

    Returns:
        The recorded settings (host, port, namespace, ui_url, pid, server_pid, ...) when
        the file exists and the `dev` process that wrote it is still alive.
    """
    info = read_dev_file(Path(data_dir) if data_dir is not None else default_data_dir())
    if info is None or not pid_alive(info.get("pid")):
        return None
    return info


def write_dev_file(data_dir: Path, info: dict[str, Any]) -> None:
    """Write dev.json atomically (a temporary file, then a rename)."""
    path = data_dir / DEV_INFO_FILE
    tmp = path.with_name(f".{DEV_INFO_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def remove_dev_file(data_dir: Path) -> None:
    """Remove dev.json if this process wrote it."""
    info = read_dev_file(data_dir)
    if info is not None and info.get("pid") == os.getpid():
        with contextlib.suppress(OSError):
            (data_dir / DEV_INFO_FILE).unlink()

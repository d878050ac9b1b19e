"""Where activities keep files: a shared artifacts directory and one directory per action run.

The base directory is ``NOMAD_ACTIONS_ARTIFACTS_DIR`` when set, else
``<tempdir>/nomad-actions/artifacts`` (``tempfile.gettempdir()``). In production point it at a
volume that every worker of the deployment mounts at the same path, as upstream NOMAD does
with its ``fs.actions`` directory; the temporary default only suits a single machine.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

import temporalio.activity

__all__ = ["ENV_ARTIFACTS_DIR", "action_artifacts_dir", "action_instance_artifacts_dir"]

ENV_ARTIFACTS_DIR = "NOMAD_ACTIONS_ARTIFACTS_DIR"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_MAX_NAME = 200


def action_artifacts_dir() -> Path:
    """Returns the artifacts directory shared by all actions, creating it if needed.

    Activities keep files here that several action runs use: trained models, global
    configuration, reference data sets.

    Returns:
        ``$NOMAD_ACTIONS_ARTIFACTS_DIR``, or ``<tempdir>/nomad-actions/artifacts``, as an
        absolute path that exists.

    Raises:
        OSError: The directory cannot be created.
    """
    configured = os.environ.get(ENV_ARTIFACTS_DIR)
    base = (
        Path(configured).expanduser()
        if configured
        else Path(tempfile.gettempdir()) / "nomad-actions" / "artifacts"
    )
    base = base.resolve()
    base.mkdir(parents=True, exist_ok=True)
    return base


def _safe_name(workflow_id: str) -> str:
    """Turns a workflow id into one path component: characters other than letters, digits,
    ``.``, ``_`` and ``-`` become ``_``; leading dots are dropped; names longer than 200
    characters are cut and end in a hash of the whole id, so they stay distinct."""
    name = _UNSAFE.sub("_", workflow_id).lstrip(".")
    if len(name) > _MAX_NAME:
        digest = hashlib.sha256(workflow_id.encode()).hexdigest()[:16]
        name = f"{name[: _MAX_NAME - 17]}-{digest}"
    return name or "_"


def action_instance_artifacts_dir(workflow_id: str | None = None) -> Path:
    """Returns the artifacts directory of one action run, creating it if needed.

    Activities keep the files a run produces here (results, logs, intermediate data). The
    directory is ``action_artifacts_dir() / <workflow id>``, with the id made safe for the
    file system: ``'pkg.module:my_action-user-<uuid>'`` becomes
    ``'pkg.module_my_action-user-<uuid>'``.

    Args:
        workflow_id: The action's workflow id, as returned by ``start_action``. Inside an
            activity it defaults to the id of the workflow that runs the activity
            (``activity.info().workflow_id``).

    Returns:
        The absolute path of the run's directory, which exists.

    Raises:
        ValueError: No ``workflow_id`` was given outside an activity, or it is empty.
        OSError: The directory cannot be created.
    """
    if workflow_id is None:
        if not temporalio.activity.in_activity():
            raise ValueError(
                "action_instance_artifacts_dir() needs a workflow_id outside an activity"
            )
        workflow_id = temporalio.activity.info().workflow_id
        if not workflow_id:
            raise ValueError(
                "this activity does not belong to a workflow; pass a workflow_id explicitly"
            )
    if not workflow_id:
        raise ValueError("workflow_id must not be empty")
    path = action_artifacts_dir() / _safe_name(workflow_id)
    path.mkdir(exist_ok=True)
    return path

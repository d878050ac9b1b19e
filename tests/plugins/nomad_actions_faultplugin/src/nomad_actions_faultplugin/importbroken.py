"""An entry point module that fails to import when ``NOMAD_FAULTPLUGIN_BREAK_IMPORT`` is set,
as a plugin whose dependency is missing. Otherwise it offers a working action."""

from __future__ import annotations

import os

from . import BREAK_IMPORT_ENV, BROKEN_QUEUE
from .actions import OkActionEntryPoint

if os.environ.get(BREAK_IMPORT_ENV):
    import nomad_actions_faultplugin_missing_dependency  # noqa: F401  # type: ignore[import-not-found]

import_broken_action = OkActionEntryPoint(name="Fault import broken", task_queue=BROKEN_QUEUE)

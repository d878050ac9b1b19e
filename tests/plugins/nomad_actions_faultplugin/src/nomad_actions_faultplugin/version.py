"""The workflow code version, fixed when the process first imports this module.

Workflows import it through ``workflow.unsafe.imports_passed_through()``, so the sandbox
shares this one module (and its value) instead of re-reading the environment per run.
"""

from __future__ import annotations

import os

from . import VERSION_ENV

WORKFLOW_VERSION = int(os.environ.get(VERSION_ENV) or "1")

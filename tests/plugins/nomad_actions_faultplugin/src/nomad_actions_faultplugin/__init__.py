"""A NOMAD action plugin for the reliability tests (tests/test_reliability_*.py).

Its actions are built to be hurt: activities that record each completion in a marker file
(to count how often work really ran across worker crashes), workflows whose code changes
with an environment variable (non-determinism), results that cannot be serialized, and
entry points that are broken in every way a plugin can be broken.

Two environment variables, read once at import time, change the plugin:

- ``NOMAD_FAULTPLUGIN_WORKFLOW_VERSION`` (default 1): which activity ``VersionedWorkflow``
  schedules first (version 1: ``fault_step_a``, version 2: ``fault_step_b``).
- ``NOMAD_FAULTPLUGIN_BREAK_IMPORT``: when set, the module of the ``importbroken`` entry point
  fails to import (a dependency is missing), as a plugin that is installed but broken.
"""

#: The task queue of the plugin's working actions.
FAULT_QUEUE = "nomad-fault-queue"
#: The task queue of the plugin's broken actions (and of one working action beside them).
BROKEN_QUEUE = "nomad-fault-broken-queue"

VERSION_ENV = "NOMAD_FAULTPLUGIN_WORKFLOW_VERSION"
BREAK_IMPORT_ENV = "NOMAD_FAULTPLUGIN_BREAK_IMPORT"

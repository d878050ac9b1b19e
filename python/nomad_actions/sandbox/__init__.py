"""nomad-actions' workflow sandbox: temporalio's restrictions, built once per workflow class.

`SandboxRunner` is the default runner of `nomad_actions.worker.Worker` for sandboxed
workflows; temporalio's `SandboxedWorkflowRunner` stays selectable (`workflow_runner=`).
"""

from ._clone import CloneUnsupported
from ._runner import SandboxRunner

__all__ = ["CloneUnsupported", "SandboxRunner"]

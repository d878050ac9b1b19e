"""nomad-actions: durable NOMAD Actions on Temporal, with a Rust engine.

Plugins define actions with plain `temporalio` decorators and expose them through an
`ActionEntryPoint`; ELN code starts them with `start_action` and follows them with
`get_action_status`.
"""

from nomad_actions._core import __version__
from nomad_actions.action import Action, ActionEntryPoint
from nomad_actions.artifacts import action_artifacts_dir, action_instance_artifacts_dir
from nomad_actions.client import (
    ActionExecution,
    ActionProgress,
    get_action_progress,
    get_action_progress_async,
    get_action_result,
    get_action_result_async,
    get_action_status,
    get_action_status_async,
    list_actions,
    list_actions_async,
    query_action,
    query_action_async,
    signal_action,
    signal_action_async,
    start_action,
    start_action_async,
    stop_action,
    stop_action_async,
    terminate_action,
    terminate_action_async,
)
from nomad_actions.config import ConnectionConfig, TaskQueue, TlsConfig, configure, get_config
from nomad_actions.errors import (
    ActionFailedError,
    ActionInputError,
    ActionLoadError,
    ActionPermissionError,
    ActionTimeoutError,
    ConfigurationError,
    NomadActionsError,
    PayloadError,
    RPCError,
    TemporalConnectionError,
    UnknownActionError,
    WorkerForkedError,
    WorkflowAlreadyStartedError,
    WorkflowNotFoundError,
)
from nomad_actions.heartbeat import heartbeat
from nomad_actions.progress import ProgressReport, report_progress
from nomad_actions.registry import (
    get_actions,
    load_action,
    refresh_actions,
    register_action,
    unregister_action,
)
from nomad_actions.schemas import get_action_schema, get_all_action_schemas, validate_action_arg

__all__ = [
    "Action",
    "ActionEntryPoint",
    "ActionExecution",
    "ActionFailedError",
    "ActionInputError",
    "ActionLoadError",
    "ActionPermissionError",
    "ActionTimeoutError",
    "ActionProgress",
    "ConfigurationError",
    "ConnectionConfig",
    "NomadActionsError",
    "PayloadError",
    "ProgressReport",
    "RPCError",
    "TaskQueue",
    "TemporalConnectionError",
    "TlsConfig",
    "UnknownActionError",
    "WorkerForkedError",
    "WorkflowAlreadyStartedError",
    "WorkflowNotFoundError",
    "__version__",
    "action_artifacts_dir",
    "action_instance_artifacts_dir",
    "configure",
    "get_action_progress",
    "get_action_progress_async",
    "get_action_result",
    "get_action_result_async",
    "get_action_schema",
    "get_action_status",
    "get_action_status_async",
    "get_actions",
    "get_all_action_schemas",
    "get_config",
    "heartbeat",
    "list_actions",
    "list_actions_async",
    "load_action",
    "query_action",
    "query_action_async",
    "refresh_actions",
    "register_action",
    "report_progress",
    "signal_action",
    "signal_action_async",
    "start_action",
    "start_action_async",
    "stop_action",
    "stop_action_async",
    "terminate_action",
    "terminate_action_async",
    "unregister_action",
    "validate_action_arg",
]

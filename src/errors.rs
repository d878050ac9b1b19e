//! Errors of the engine and their conversion to Python exceptions.
//!
//! Rust code returns [`EngineError`]; it becomes a `PyErr` only here, at the edge.
//! The exception classes live in Python (`nomad_actions.errors`) so that there is one
//! hierarchy, rooted at `NomadActionsError`, that plugin code can catch and subclass.

use pyo3::prelude::*;
use tonic::Code;

use crate::client::ConnectionConfig;
use crate::payload::PayloadError;

/// Everything the client and the worker can fail with.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The Temporal server could not be reached (down, wrong address, TLS mismatch).
    #[error("cannot connect to Temporal at {target}: {reason}")]
    Connect { target: String, reason: String },
    /// The server does not know this workflow id (in this namespace).
    #[error("no action with workflow id {workflow_id:?} in namespace {namespace:?}")]
    WorkflowNotFound {
        workflow_id: String,
        namespace: String,
    },
    /// A workflow with this id is already running.
    #[error("an action with workflow id {0:?} is already running")]
    AlreadyStarted(String),
    /// Any other gRPC failure, with Temporal's own code and message.
    #[error("Temporal RPC {rpc} failed ({code:?}): {message}")]
    Rpc {
        rpc: &'static str,
        code: Code,
        message: String,
    },
    /// A payload could not be encoded or decoded.
    #[error("{context}: {source}")]
    Payload {
        context: String,
        source: PayloadError,
    },
    /// Waiting for a result took longer than the caller allowed.
    #[error("timed out after {0:.1} s waiting for workflow {1:?}")]
    Timeout(f64, String),
    /// A worker created in one process was used in a forked child, where its threads and
    /// connections do not exist.
    #[error(
        "the worker for task queue {task_queue:?} was created in process {created_in} and \
         cannot run in process {pid}, a fork of it: create the Worker in the child process"
    )]
    Forked {
        task_queue: String,
        created_in: u32,
        pid: u32,
    },
    /// Bad configuration (address, TLS material).
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl EngineError {
    /// Classify a gRPC status from `rpc` about `workflow_id`, sent to `config`'s server.
    pub fn from_status(
        rpc: &'static str,
        status: tonic::Status,
        workflow_id: &str,
        config: &ConnectionConfig,
    ) -> Self {
        match status.code() {
            Code::NotFound if !workflow_id.is_empty() => EngineError::WorkflowNotFound {
                workflow_id: workflow_id.to_string(),
                namespace: config.namespace.clone(),
            },
            // The server went away after the connection was made (stopped, restarting): say
            // which server, as a failed first connect does.
            Code::Unavailable => EngineError::Connect {
                target: config.target(),
                reason: format!("{rpc} failed: {}", status.message()),
            },
            // The connection broke under the call (reset, closed by a proxy): as unreachable.
            // tonic says Cancelled when the HTTP/2 connection went away mid-call (the long
            // poll of `result`, which the server may cancel, handles Cancelled before this).
            Code::Unknown | Code::Cancelled
                if code_is_cancelled(&status) || is_transport_failure(&status) =>
            {
                EngineError::Connect {
                    target: config.target(),
                    reason: format!("{rpc} failed: connection lost: {}", source_chain(&status)),
                }
            }
            Code::AlreadyExists => EngineError::AlreadyStarted(workflow_id.to_string()),
            code => EngineError::Rpc {
                rpc,
                code,
                message: status.message().to_string(),
            },
        }
    }
}

/// Whether a status stands for a broken connection rather than an answer of the server:
/// tonic reports those as `Unknown` with the transport error as its source.
fn is_transport_failure(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if err.is::<tonic::transport::Error>() || err.is::<std::io::Error>() {
            return true;
        }
        source = err.source();
    }
    false
}

fn code_is_cancelled(status: &tonic::Status) -> bool {
    status.code() == Code::Cancelled
}

fn source_chain(status: &tonic::Status) -> String {
    let mut parts = vec![status.message().to_string()];
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        let text = err.to_string();
        if !parts.contains(&text) {
            parts.push(text);
        }
        source = err.source();
    }
    parts.join(": ")
}

/// Build an instance of `nomad_actions.errors.<class_name>(message)` and set keyword
/// attributes on it.
fn python_error(
    py: Python<'_>,
    class_name: &str,
    message: String,
    attrs: &[(&str, Bound<'_, PyAny>)],
) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let class = py.import("nomad_actions.errors")?.getattr(class_name)?;
        let exc = class.call1((message.clone(),))?;
        for (name, value) in attrs {
            exc.setattr(*name, value)?;
        }
        Ok(PyErr::from_value(exc))
    };
    // If the Python package is broken we still want the message to reach the user.
    build().unwrap_or_else(|err| err)
}

impl From<EngineError> for PyErr {
    fn from(err: EngineError) -> PyErr {
        Python::attach(|py| {
            let message = err.to_string();
            match err {
                EngineError::Connect { .. } => {
                    python_error(py, "TemporalConnectionError", message, &[])
                }
                EngineError::WorkflowNotFound { workflow_id, .. } => python_error(
                    py,
                    "WorkflowNotFoundError",
                    message,
                    &[(
                        "workflow_id",
                        workflow_id.into_pyobject(py).unwrap().into_any(),
                    )],
                ),
                EngineError::AlreadyStarted(workflow_id) => python_error(
                    py,
                    "WorkflowAlreadyStartedError",
                    message,
                    &[(
                        "workflow_id",
                        workflow_id.into_pyobject(py).unwrap().into_any(),
                    )],
                ),
                EngineError::Rpc {
                    code,
                    message: rpc_message,
                    ..
                } => {
                    // Unavailable means the server went away between calls.
                    let class = if code == Code::Unavailable {
                        "TemporalConnectionError"
                    } else {
                        "RPCError"
                    };
                    let attrs = [
                        ("code", (code as i32).into_pyobject(py).unwrap().into_any()),
                        (
                            "rpc_message",
                            rpc_message.into_pyobject(py).unwrap().into_any(),
                        ),
                    ];
                    python_error(py, class, message, &attrs)
                }
                EngineError::Payload { .. } => python_error(py, "PayloadError", message, &[]),
                EngineError::Timeout(..) => {
                    PyErr::new::<pyo3::exceptions::PyTimeoutError, _>(message)
                }
                EngineError::Forked { .. } => python_error(py, "WorkerForkedError", message, &[]),
                EngineError::Config(_) => python_error(py, "ConfigurationError", message, &[]),
            }
        })
    }
}

//! Errors of the engine and their conversion to Python exceptions.
//!
//! Rust code returns [`EngineError`]; it becomes a `PyErr` only here, at the edge. The
//! exception classes live in Python (`nomad_actions.errors`) so that there is one hierarchy,
//! rooted at `NomadActionsError`, that plugin code can catch and subclass; they are imported
//! once each with `pyo3::import_exception!` and raised with their attributes set (the address,
//! the RPC, the gRPC code, the kind of failure), so Python never reads an error's text to find
//! out what happened. This module converts plain values: it knows no configuration or client.

use pyo3::BoundObject;
use pyo3::prelude::*;
use pyo3::types::IntoPyDict;
use tonic::Code;

use crate::payload::PayloadError;

/// The Python classes, imported once (on first use) from `nomad_actions.errors`.
mod py {
    pyo3::import_exception!(nomad_actions.errors, TemporalConnectionError);
    pyo3::import_exception!(nomad_actions.errors, WorkflowNotFoundError);
    pyo3::import_exception!(nomad_actions.errors, WorkflowAlreadyStartedError);
    pyo3::import_exception!(nomad_actions.errors, RPCError);
    pyo3::import_exception!(nomad_actions.errors, PayloadError);
    pyo3::import_exception!(nomad_actions.errors, ActionTimeoutError);
    pyo3::import_exception!(nomad_actions.errors, WorkerForkedError);
    pyo3::import_exception!(nomad_actions.errors, ConfigurationError);
}

/// What kind of connection failure a [`EngineError::Connect`] is; `TemporalConnectionError.kind`
/// in Python. Decided from the error's types and from where it happened, never from its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectKind {
    /// Nothing listens at the address.
    Refused,
    /// The host name does not resolve.
    UnknownHost,
    /// No answer within the connect or RPC timeout.
    TimedOut,
    /// The TLS handshake failed (wrong CA, plain-text server, ...).
    Tls,
    /// The connection broke under a call (reset, closed by a proxy).
    Lost,
    /// The server answered UNAVAILABLE (stopping, restarting).
    Unavailable,
    /// Anything else.
    Other,
}

impl ConnectKind {
    /// The name Python sees.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectKind::Refused => "refused",
            ConnectKind::UnknownHost => "unknown_host",
            ConnectKind::TimedOut => "timed_out",
            ConnectKind::Tls => "tls",
            ConnectKind::Lost => "lost",
            ConnectKind::Unavailable => "unavailable",
            ConnectKind::Other => "other",
        }
    }

    /// Classify a failed connect by the I/O errors in its source chain. A TLS failure shows as
    /// an `InvalidData` I/O error (rustls reports handshake failures that way through tokio's
    /// stream), a refused or timed-out dial by its own `io::ErrorKind`.
    pub fn of(err: &(dyn std::error::Error + 'static)) -> Self {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
        while let Some(err) = source {
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                match io.kind() {
                    std::io::ErrorKind::ConnectionRefused => return ConnectKind::Refused,
                    std::io::ErrorKind::TimedOut => return ConnectKind::TimedOut,
                    std::io::ErrorKind::InvalidData => return ConnectKind::Tls,
                    std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof => return ConnectKind::Lost,
                    _ => {}
                }
            }
            source = err.source();
        }
        ConnectKind::Other
    }
}

/// Everything the client and the worker can fail with.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The Temporal server could not be reached (down, wrong address, TLS mismatch).
    #[error("cannot connect to Temporal at {target}: {reason}")]
    Connect {
        target: String,
        kind: ConnectKind,
        /// The RPC under which it happened, when a connection had been made.
        rpc: Option<&'static str>,
        reason: String,
    },
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
    #[error("{context}: {source}{}", encrypted_hint(source))]
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

/// What to do about encrypted data met without a codec: the data came from a deployment
/// with a NOMAD API secret, and this process has none.
fn encrypted_hint(source: &PayloadError) -> &'static str {
    match source {
        PayloadError::UnsupportedEncoding(encoding)
            if encoding.as_bytes() == crate::payload::BINARY_ENCRYPTED =>
        {
            "; it was encrypted with a NOMAD API secret (upstream's Fernet codec), so set the \
             same secret (configure(api_secret=...) or NOMAD_SERVICES_API_SECRET) outside \
             development mode"
        }
        _ => "",
    }
}

impl EngineError {
    /// A connection failure at `target`.
    pub fn connect(
        target: &str,
        kind: ConnectKind,
        rpc: Option<&'static str>,
        reason: String,
    ) -> Self {
        EngineError::Connect {
            target: target.to_string(),
            kind,
            rpc,
            reason,
        }
    }

    /// Classify a gRPC status from `rpc` about `workflow_id`, sent to the server at `target`
    /// for `namespace`.
    pub fn from_status(
        rpc: &'static str,
        status: tonic::Status,
        workflow_id: &str,
        target: &str,
        namespace: &str,
    ) -> Self {
        match status.code() {
            Code::NotFound if !workflow_id.is_empty() => EngineError::WorkflowNotFound {
                workflow_id: workflow_id.to_string(),
                namespace: namespace.to_string(),
            },
            // The server went away after the connection was made (stopped, restarting): say
            // which server, as a failed first connect does.
            Code::Unavailable => EngineError::connect(
                target,
                ConnectKind::Unavailable,
                Some(rpc),
                format!("{rpc} failed: {}", status.message()),
            ),
            // The connection broke under the call (reset, closed by a proxy): as unreachable.
            // tonic says Cancelled when the HTTP/2 connection went away mid-call (the long
            // poll of `result`, which the server may cancel, handles Cancelled before this).
            Code::Unknown | Code::Cancelled
                if code_is_cancelled(&status) || is_transport_failure(&status) =>
            {
                EngineError::connect(
                    target,
                    ConnectKind::Lost,
                    Some(rpc),
                    format!("{rpc} failed: connection lost: {}", source_chain(&status)),
                )
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

/// Whether a call failed because the connection broke under it (reset, closed by a proxy),
/// not because the server answered: what [`EngineError::from_status`] reports as
/// `ConnectKind::Lost`.
pub fn connection_lost(status: &tonic::Status) -> bool {
    matches!(status.code(), Code::Unknown | Code::Cancelled)
        && (code_is_cancelled(status) || is_transport_failure(status))
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

/// The Python exception of `err`: the class imported from `nomad_actions.errors`, built with
/// the message and its attributes as keywords.
fn raise<T: pyo3::PyTypeInfo>(
    py: Python<'_>,
    message: String,
    attrs: Vec<(&'static str, Bound<'_, PyAny>)>,
) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let kwargs = attrs.into_py_dict(py)?;
        let exc = T::type_object(py).call((message.clone(),), Some(&kwargs))?;
        Ok(PyErr::from_value(exc))
    };
    // If the Python package is broken we still want the message to reach the user.
    build().unwrap_or_else(|err| err)
}

fn value<'py, V: IntoPyObject<'py>>(py: Python<'py>, v: V) -> Bound<'py, PyAny> {
    match v.into_pyobject(py) {
        Ok(obj) => obj.into_any().into_bound(),
        Err(_) => py.None().into_bound(py),
    }
}

impl From<EngineError> for PyErr {
    fn from(err: EngineError) -> PyErr {
        Python::attach(|py| {
            let message = err.to_string();
            match err {
                EngineError::Connect {
                    target,
                    kind,
                    rpc,
                    reason,
                } => raise::<py::TemporalConnectionError>(
                    py,
                    message,
                    vec![
                        ("address", value(py, target)),
                        ("kind", value(py, kind.as_str())),
                        ("rpc", value(py, rpc)),
                        ("reason", value(py, reason)),
                    ],
                ),
                EngineError::WorkflowNotFound { workflow_id, .. } => {
                    raise::<py::WorkflowNotFoundError>(
                        py,
                        message,
                        vec![("workflow_id", value(py, workflow_id))],
                    )
                }
                EngineError::AlreadyStarted(workflow_id) => {
                    raise::<py::WorkflowAlreadyStartedError>(
                        py,
                        message,
                        vec![("workflow_id", value(py, workflow_id))],
                    )
                }
                EngineError::Rpc {
                    rpc,
                    code,
                    message: rpc_message,
                } => raise::<py::RPCError>(
                    py,
                    message,
                    vec![
                        ("code", value(py, code as i32)),
                        ("rpc", value(py, rpc)),
                        ("rpc_message", value(py, rpc_message)),
                    ],
                ),
                EngineError::Payload { source, .. } => {
                    let encoding = match source {
                        PayloadError::UnsupportedEncoding(encoding) => Some(encoding),
                        _ => None,
                    };
                    raise::<py::PayloadError>(py, message, vec![("encoding", value(py, encoding))])
                }
                EngineError::Timeout(secs, workflow_id) => raise::<py::ActionTimeoutError>(
                    py,
                    message,
                    vec![
                        ("workflow_id", value(py, workflow_id)),
                        ("timeout", value(py, secs)),
                    ],
                ),
                EngineError::Forked { .. } => raise::<py::WorkerForkedError>(py, message, vec![]),
                EngineError::Config(_) => raise::<py::ConfigurationError>(py, message, vec![]),
            }
        })
    }
}

/// A payload that Python code handed to Rust could not be converted (`Json` extraction).
impl From<PayloadError> for PyErr {
    fn from(source: PayloadError) -> PyErr {
        EngineError::Payload {
            context: "cannot encode a JSON payload".into(),
            source,
        }
        .into()
    }
}

//! The values the client's calls take and return, as they cross to Python: the Rust twins of
//! the `TypedDict`s in `nomad_actions.native_types` (`_core.pyi` names them).

use std::collections::HashMap;

use pyo3::prelude::*;
use temporalio_common::protos::temporal::api::failure::v1::{Failure, failure::FailureInfo};

use crate::payload::Json;

/// What `start_workflow` needs; twin of a plain Python dict built by `client.py`.
#[derive(Debug)]
pub struct StartRequest {
    pub workflow_id: String,
    pub workflow_type: String,
    pub task_queue: String,
    pub args: Vec<Json>,
    pub memo: HashMap<String, Json>,
    /// Keyword search attributes (owner, action, upload), see [`keyword_search_attributes`].
    pub search_attributes: HashMap<String, String>,
    /// Temporal's `Priority` (key 1-5, fairness key); None leaves the server's default.
    pub priority: Option<(i32, String)>,
}

// Written out rather than derived: the derive wraps every field error in a TypeError
// ("failed to extract field StartRequest.args"), which would hide the PayloadError that
// says what in the input has no JSON form.
impl<'a, 'py> FromPyObject<'a, 'py> for StartRequest {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> Result<Self, Self::Error> {
        Ok(StartRequest {
            workflow_id: obj.get_item("workflow_id")?.extract()?,
            workflow_type: obj.get_item("workflow_type")?.extract()?,
            task_queue: obj.get_item("task_queue")?.extract()?,
            args: obj.get_item("args")?.extract()?,
            memo: obj.get_item("memo")?.extract()?,
            // Optional: absent when the namespace has no such attributes.
            search_attributes: match obj.get_item("search_attributes") {
                Ok(value) if !value.is_none() => value.extract()?,
                _ => HashMap::new(),
            },
            priority: match obj.get_item("priority") {
                Ok(p) if !p.is_none() => Some(p.extract()?),
                _ => None,
            },
        })
    }
}

/// A failure as Temporal reports it, flattened for Python.
#[derive(IntoPyObject, Debug, Clone, Default)]
pub struct FailureDetails {
    pub message: String,
    /// `ApplicationError` type, or the failure kind (`TimeoutError`, `CanceledError`, ...).
    pub failure_type: String,
    pub non_retryable: bool,
    pub stack_trace: String,
    /// Messages of the causes, outermost first.
    pub causes: Vec<String>,
}

impl FailureDetails {
    pub(crate) fn from_failure(failure: &Failure) -> Self {
        let (failure_type, non_retryable) = match &failure.failure_info {
            Some(FailureInfo::ApplicationFailureInfo(info)) => {
                (info.r#type.clone(), info.non_retryable)
            }
            Some(FailureInfo::TimeoutFailureInfo(_)) => ("TimeoutError".into(), false),
            Some(FailureInfo::CanceledFailureInfo(_)) => ("CancelledError".into(), false),
            Some(FailureInfo::TerminatedFailureInfo(_)) => ("TerminatedError".into(), false),
            Some(FailureInfo::ServerFailureInfo(info)) => {
                ("ServerError".into(), info.non_retryable)
            }
            Some(FailureInfo::ActivityFailureInfo(_)) => ("ActivityError".into(), false),
            Some(FailureInfo::ChildWorkflowExecutionFailureInfo(_)) => {
                ("ChildWorkflowError".into(), false)
            }
            _ => (String::new(), false),
        };
        let mut causes = Vec::new();
        let mut cause = failure.cause.as_deref();
        while let Some(c) = cause {
            causes.push(c.message.clone());
            cause = c.cause.as_deref();
        }
        FailureDetails {
            message: failure.message.clone(),
            failure_type,
            non_retryable,
            stack_trace: failure.stack_trace.clone(),
            causes,
        }
    }
}

/// The final outcome of a workflow (after following continue-as-new and retries).
#[derive(IntoPyObject, Debug)]
pub struct Outcome {
    pub run_id: String,
    /// `WorkflowExecutionStatus` value (2 completed, 3 failed, 4 canceled, 5 terminated, 7 timed out).
    pub status: i32,
    pub result: Option<Json>,
    pub failure: Option<FailureDetails>,
}

/// One pending activity, with its last heartbeat details (progress).
#[derive(IntoPyObject, Debug)]
pub struct PendingActivity {
    pub activity_id: String,
    pub activity_type: String,
    pub attempt: i32,
    pub state: i32,
    pub heartbeat_details: Vec<Json>,
    pub last_failure: Option<String>,
}

/// What `describe` and `list` return for one workflow execution.
#[derive(IntoPyObject, Debug)]
pub struct Execution {
    pub workflow_id: String,
    pub run_id: String,
    pub workflow_type: String,
    pub task_queue: String,
    pub status: i32,
    pub start_time: Option<f64>,
    pub close_time: Option<f64>,
    pub history_length: i64,
    pub memo: HashMap<String, Json>,
    pub pending_activities: Vec<PendingActivity>,
    /// The workflow id of the root of its parent chain (itself when it has no parent).
    pub root_workflow_id: String,
}

/// One page of a visibility query.
#[derive(IntoPyObject, Debug)]
pub struct ExecutionPage {
    pub executions: Vec<Execution>,
    /// Empty on the last page.
    pub next_page_token: Vec<u8>,
}

//! Activity tasks: poll from core, decode inputs in Rust, start them in the Python activity
//! bridge (from one of the worker's Python threads), and turn the outcomes it reports back
//! into core completions.

use std::sync::Arc;

use prost::Message;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use serde_json::Value;
use temporalio_common::protos::coresdk::activity_result::{
    self, ActivityExecutionResult, activity_execution_result,
};
use temporalio_common::protos::coresdk::activity_task::{
    ActivityCancelReason, ActivityTask, Start, activity_task,
};
use temporalio_common::protos::coresdk::{ActivityHeartbeat, ActivityTaskCompletion};
use temporalio_common::protos::temporal::api::common::v1::Payload;
use temporalio_common::protos::temporal::api::failure::v1::{
    ApplicationFailureInfo, Failure, failure,
};
use temporalio_sdk_core::{PollError, Worker as CoreWorker};

use super::Shared;
use super::python_threads::PythonThreads;
use crate::errors::EngineError;
use crate::payload::{self, Json};
use crate::runtime::runtime;

macro_rules! secs {
    ($d:expr) => {
        $d.as_ref()
            .map(|d| d.seconds as f64 + f64::from(d.nanos) / 1e9)
    };
}

/// What the activity sees as `activity.info()`; crosses to Python as a dict.
#[derive(IntoPyObject)]
struct Info {
    activity_id: String,
    activity_type: String,
    attempt: u32,
    workflow_id: String,
    workflow_run_id: String,
    workflow_type: String,
    workflow_namespace: String,
    task_queue: String,
    heartbeat_timeout: Option<f64>,
    schedule_to_close_timeout: Option<f64>,
    start_to_close_timeout: Option<f64>,
    scheduled_time: Option<f64>,
    current_attempt_scheduled_time: Option<f64>,
    started_time: Option<f64>,
    is_local: bool,
    retry_policy: Option<RetryPolicy>,
}

#[derive(IntoPyObject)]
struct RetryPolicy {
    initial_interval: Option<f64>,
    backoff_coefficient: f64,
    maximum_interval: Option<f64>,
    maximum_attempts: i32,
    non_retryable_error_types: Vec<String>,
}

fn info_of(start: &Start, task_queue: &str) -> Info {
    let execution = start.workflow_execution.clone().unwrap_or_default();
    Info {
        activity_id: start.activity_id.clone(),
        activity_type: start.activity_type.clone(),
        attempt: start.attempt,
        workflow_id: execution.workflow_id,
        workflow_run_id: execution.run_id,
        workflow_type: start.workflow_type.clone(),
        workflow_namespace: start.workflow_namespace.clone(),
        task_queue: task_queue.to_string(),
        heartbeat_timeout: secs!(start.heartbeat_timeout),
        schedule_to_close_timeout: secs!(start.schedule_to_close_timeout),
        start_to_close_timeout: secs!(start.start_to_close_timeout),
        scheduled_time: secs!(start.scheduled_time),
        current_attempt_scheduled_time: secs!(start.current_attempt_scheduled_time),
        started_time: secs!(start.started_time),
        is_local: start.is_local,
        retry_policy: start.retry_policy.as_ref().map(|p| RetryPolicy {
            initial_interval: secs!(p.initial_interval),
            backoff_coefficient: p.backoff_coefficient,
            maximum_interval: secs!(p.maximum_interval),
            maximum_attempts: p.maximum_attempts,
            non_retryable_error_types: p.non_retryable_error_types.clone(),
        }),
    }
}

/// A failure that Rust itself reports (undecodable input, a broken bridge).
pub(super) fn rust_failure(
    message: String,
    failure_type: &str,
    non_retryable: bool,
) -> ActivityExecutionResult {
    ActivityExecutionResult {
        status: Some(activity_execution_result::Status::Failed(
            activity_result::Failure {
                failure: Some(Failure {
                    message,
                    source: "nomad-actions".into(),
                    failure_info: Some(failure::FailureInfo::ApplicationFailureInfo(
                        ApplicationFailureInfo {
                            r#type: failure_type.into(),
                            non_retryable,
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )),
    }
}

/// Hand one completion to core without blocking the caller (it may be the asyncio loop).
pub(super) fn complete(shared: &Shared, task_token: Vec<u8>, result: ActivityExecutionResult) {
    let Some(core) = shared.core() else { return };
    let codec = shared.codec.clone();
    runtime().spawn(async move {
        let mut result = result;
        if let Some(codec) = codec
            && let Err(err) = codec.encode_message(&mut result).await
        {
            let message = format!("Failed encoding activity result: {err}");
            result = rust_failure(message, "PayloadError", false);
        }
        let completion = ActivityTaskCompletion {
            task_token,
            result: Some(result),
        };
        if let Err(err) = core.complete_activity_task(completion).await {
            eprintln!("nomad-actions: completing an activity task failed: {err}");
        }
    });
}

/// Parse the outcome dict the Python bridge reports (see `activity_bridge.py`).
pub(super) fn outcome_from_py(outcome: &Bound<'_, PyDict>) -> PyResult<ActivityExecutionResult> {
    use activity_execution_result::Status;
    let failure = |key: &str| -> PyResult<Option<Failure>> {
        match outcome.get_item(key)? {
            Some(bytes) => Failure::decode(bytes.extract::<&[u8]>()?)
                .map(Some)
                .map_err(|e| PyValueError::new_err(format!("malformed {key} failure: {e}"))),
            None => Ok(None),
        }
    };
    let status = if let Some(value) = outcome.get_item("result")? {
        let Json(value) = value.extract()?;
        Status::Completed(activity_result::Success {
            result: Some(payload::to_payload(&value)),
        })
    } else if let Some(bytes) = outcome.get_item("result_payload")? {
        let payload = Payload::decode(bytes.extract::<&[u8]>()?)
            .map_err(|e| PyValueError::new_err(format!("malformed result payload: {e}")))?;
        Status::Completed(activity_result::Success {
            result: Some(payload),
        })
    } else if let Some(f) = failure("failure")? {
        Status::Failed(activity_result::Failure {
            failure: Some(f),
            ..Default::default()
        })
    } else if let Some(f) = failure("cancelled")? {
        Status::Cancelled(activity_result::Cancellation { failure: Some(f) })
    } else if outcome.get_item("will_complete_async")?.is_some() {
        Status::WillCompleteAsync(activity_result::WillCompleteAsync {})
    } else {
        return Err(PyValueError::new_err(format!(
            "unknown activity outcome: {outcome}"
        )));
    };
    Ok(ActivityExecutionResult {
        status: Some(status),
    })
}

/// Record a heartbeat: details are JSON values, or serialized payloads in raw mode.
pub(super) fn heartbeat(
    shared: &Shared,
    task_token: Vec<u8>,
    details: Vec<Bound<'_, PyAny>>,
) -> PyResult<()> {
    let Some(core) = shared.core() else {
        return Ok(());
    };
    let details = details
        .iter()
        .map(|d| -> PyResult<Payload> {
            if shared.options.raw_payloads {
                Payload::decode(d.extract::<&[u8]>()?)
                    .map_err(|e| PyValueError::new_err(format!("malformed heartbeat payload: {e}")))
            } else {
                let Json(value) = d.extract()?;
                Ok(payload::to_payload(&value))
            }
        })
        .map(|p| p.map(|p| shared.codec.as_ref().map_or(p.clone(), |c| c.encode(&p))))
        .collect::<PyResult<Vec<_>>>()?;
    // Core's heartbeat manager spawns timers: it needs the runtime's context.
    let _guard = runtime().enter();
    core.record_activity_heartbeat(ActivityHeartbeat {
        task_token,
        details,
    });
    Ok(())
}

fn cancel_reason(reason: i32) -> &'static str {
    match ActivityCancelReason::try_from(reason) {
        Ok(ActivityCancelReason::NotFound) => "NOT_FOUND",
        Ok(ActivityCancelReason::Cancelled) => "CANCELLED",
        Ok(ActivityCancelReason::TimedOut) => "TIMED_OUT",
        Ok(ActivityCancelReason::WorkerShutdown) => "WORKER_SHUTDOWN",
        Ok(ActivityCancelReason::Paused) => "PAUSED",
        Ok(ActivityCancelReason::Reset) => "RESET",
        Err(_) => "CANCELLED",
    }
}

/// Start one activity in the bridge. Inputs are decoded here (the fast path), so the bridge
/// only converts plain values to the parameter types.
fn start(
    threads: &PythonThreads,
    shared: Arc<Shared>,
    bridge: Arc<Py<PyAny>>,
    task_token: Vec<u8>,
    start: Start,
) {
    let raw = shared.options.raw_payloads;
    let decoded: Result<Vec<Value>, _> = if raw {
        Ok(Vec::new())
    } else {
        start.input.iter().map(payload::from_payload).collect()
    };
    let args = match decoded {
        Ok(args) => args,
        Err(err) => {
            let message = format!(
                "Failed decoding arguments of activity {:?}: {err}",
                start.activity_type
            );
            complete(
                &shared,
                task_token,
                rust_failure(message, "PayloadError", true),
            );
            return;
        }
    };
    let heartbeat_details: Result<Vec<Value>, _> = if raw {
        Ok(Vec::new())
    } else {
        start
            .heartbeat_details
            .iter()
            .map(payload::from_payload)
            .collect()
    };
    let info = info_of(&start, &shared.options.task_queue);
    threads.submit(move |py| {
        let started = (|| -> PyResult<()> {
            let info = info.into_pyobject(py)?;
            let details: Bound<'_, PyAny> = if raw {
                PyList::new(
                    py,
                    start
                        .heartbeat_details
                        .iter()
                        .map(|p| PyBytes::new(py, &p.encode_to_vec())),
                )?
                .into_any()
            } else {
                Json(Value::Array(heartbeat_details.unwrap_or_default())).into_pyobject(py)?
            };
            info.set_item("heartbeat_details", details)?;
            let args: Bound<'_, PyAny> = if raw {
                PyList::new(
                    py,
                    start
                        .input
                        .iter()
                        .map(|p| PyBytes::new(py, &p.encode_to_vec())),
                )?
                .into_any()
            } else {
                Json(Value::Array(args)).into_pyobject(py)?
            };
            bridge.call_method1(
                py,
                "start",
                (
                    PyBytes::new(py, &task_token),
                    &start.activity_type,
                    args,
                    info,
                ),
            )?;
            Ok(())
        })();
        if let Err(err) = started {
            let error = format!("activity bridge could not start the activity: {err}");
            complete(
                &shared,
                task_token,
                rust_failure(error, "WorkerError", false),
            );
        }
    });
}

/// Deliver a cancellation (from the server, a timeout, or worker shutdown) to the bridge.
fn cancel(threads: &PythonThreads, bridge: Arc<Py<PyAny>>, task_token: Vec<u8>, reason: i32) {
    let reason = cancel_reason(reason);
    threads.submit(move |py| {
        if let Err(err) = bridge.call_method1(py, "cancel", (PyBytes::new(py, &task_token), reason))
        {
            err.print(py);
        }
    });
}

/// Poll activity tasks until core is shut down (after all outstanding tasks completed).
pub(super) async fn poll_loop(
    core: Arc<CoreWorker>,
    shared: Arc<Shared>,
    bridge: Arc<Py<PyAny>>,
) -> Result<(), EngineError> {
    // Starting an activity only hands it to the bridge (async ones run on its event loop,
    // sync ones in its thread pool), so one thread serves nearly always.
    let threads = PythonThreads::new("nomad-activities", 4);
    let outcome = loop {
        let mut task = match core.poll_activity_task().await {
            Ok(task) => task,
            Err(PollError::ShutDown) => break Ok(()),
            Err(PollError::TonicError(status)) => {
                break Err(EngineError::Rpc {
                    rpc: "PollActivityTaskQueue",
                    code: status.code(),
                    message: status.message().to_string(),
                });
            }
        };
        if let Some(codec) = &shared.codec
            && let Err(err) = codec.decode_message(&mut task).await
            && let Some(activity_task::Variant::Start(s)) = &task.variant
        {
            let message = format!("Failed decoding activity {:?}: {err}", s.activity_type);
            complete(
                &shared,
                task.task_token,
                rust_failure(message, "PayloadError", true),
            );
            continue;
        }
        let ActivityTask {
            task_token,
            variant,
        } = task;
        match variant {
            Some(activity_task::Variant::Start(s)) => {
                start(&threads, shared.clone(), bridge.clone(), task_token, s);
            }
            Some(activity_task::Variant::Cancel(c)) => {
                cancel(&threads, bridge.clone(), task_token, c.reason);
            }
            None => {}
        }
    };
    threads.close();
    outcome
}

//! Activity tasks: poll from core, decode inputs in Rust, start them in the Python activity
//! bridge (on its event loop's thread for `async def` activities, see [`LoopLane`], else
//! from one of the worker's Python threads), and turn the outcomes it reports back into
//! core completions.
//!
//! Each start registers the task in the worker's registry ([`super::registry`]) and hands
//! the bridge an [`ActivityReply`] that completes it once; cancels cross as [`CancelFlags`].
//! Once shutdown begins, [`shutdown_drain`] runs the registry's drain against the bridge.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use serde_json::Value;
use temporalio_common::protos::coresdk::activity_result::{
    self, ActivityExecutionResult, activity_execution_result,
};
use temporalio_common::protos::coresdk::activity_task::{
    ActivityCancelReason, ActivityCancellationDetails, ActivityTask, Start, activity_task,
};
use temporalio_common::protos::coresdk::{ActivityHeartbeat, ActivityTaskCompletion};
use temporalio_common::protos::temporal::api::common::v1::Payload;
use temporalio_common::protos::temporal::api::failure::v1::{
    ApplicationFailureInfo, Failure, failure,
};
use temporalio_sdk_core::{PollError, Worker as CoreWorker};

use super::Shared;
use super::loop_lane::{LaneHandle, LoopLane};
use super::python_threads::{Job, PythonThreads};
use super::registry::{CANCEL_BOUND, Drained, Slot, drain};
use crate::errors::EngineError;
use crate::payload::{self, Checked, Json};
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

/// Parse the outcome dict the Python bridge reports (see `activity_bridge.py`). A
/// `result_json` (JSON text) becomes the `json/plain` payload as it is, once checked.
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
    let status = if let Some(text) = outcome.get_item("result_json")? {
        let text: Vec<u8> = text.extract()?;
        let payload = match payload::check_json(&text) {
            Ok(()) => payload::json_text_payload(text),
            // Text that `from_payload` would refuse (an integer beyond 64 bits, nesting too
            // deep): encode the value the old way instead, so that the outcome, and the error
            // naming where the value has no JSON form, stay what they were. Done here rather
            // than in Python: the check runs once, and only a refusal pays for the rest.
            Err(_) => {
                let value = outcome.get_item("result_value")?.ok_or_else(|| {
                    PyValueError::new_err("a result_json outcome needs its result_value")
                })?;
                let jsonable = outcome
                    .py()
                    .import("pydantic_core")?
                    .call_method1("to_jsonable_python", (value,))?;
                let Json(value) = jsonable.extract()?;
                payload::to_payload(&value)
            }
        };
        Status::Completed(activity_result::Success {
            result: Some(payload),
        })
    } else if let Some(value) = outcome.get_item("result")? {
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

/// Why an activity is cancelled; crosses to Python as a dict of these flags, named as the
/// fields of temporalio's `activity.ActivityCancellationDetails` (the bridge builds one
/// from it). Several can be set at once.
#[derive(IntoPyObject, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct CancelFlags {
    pub(super) not_found: bool,
    pub(super) cancel_requested: bool,
    pub(super) paused: bool,
    pub(super) timed_out: bool,
    pub(super) worker_shutdown: bool,
    pub(super) reset: bool,
}

impl CancelFlags {
    /// From core's cancel: its details list every reason; without them (older servers),
    /// the primary reason alone, an unknown one counting as a cancel request.
    pub(super) fn of(reason: i32, details: Option<&ActivityCancellationDetails>) -> Self {
        if let Some(d) = details {
            let flags = CancelFlags {
                not_found: d.is_not_found,
                cancel_requested: d.is_cancelled,
                paused: d.is_paused,
                timed_out: d.is_timed_out,
                worker_shutdown: d.is_worker_shutdown,
                reset: d.is_reset,
            };
            if flags != CancelFlags::default() {
                return flags;
            }
        }
        let mut flags = CancelFlags::default();
        match ActivityCancelReason::try_from(reason) {
            Ok(ActivityCancelReason::NotFound) => flags.not_found = true,
            Ok(ActivityCancelReason::TimedOut) => flags.timed_out = true,
            Ok(ActivityCancelReason::WorkerShutdown) => flags.worker_shutdown = true,
            Ok(ActivityCancelReason::Paused) => flags.paused = true,
            Ok(ActivityCancelReason::Reset) => flags.reset = true,
            Ok(ActivityCancelReason::Cancelled) | Err(_) => flags.cancel_requested = true,
        }
        flags
    }

    /// What the shutdown drain sends once the grace period is over.
    pub(super) fn worker_shutdown() -> Self {
        CancelFlags {
            worker_shutdown: true,
            ..Default::default()
        }
    }
}

/// The bridge's way back, passed with each started task: called once with the outcome
/// dict; a second call, or one after Rust failed the task at shutdown, is refused and
/// returns `False`.
#[pyclass(name = "ActivityReply", module = "nomad_actions._core", frozen)]
pub struct ActivityReply {
    shared: Arc<Shared>,
    token: Vec<u8>,
    slot: Arc<Slot>,
}

impl ActivityReply {
    /// Complete the task with `result` unless it was answered already.
    fn answer(&self, result: ActivityExecutionResult) -> bool {
        if !self.shared.activities.claim(&self.token, &self.slot) {
            return false;
        }
        let result = self.slot.shutdown_outcome(result);
        complete(&self.shared, self.token.clone(), result);
        true
    }
}

#[pymethods]
impl ActivityReply {
    /// Report the outcome (see `activity_bridge.py` for its shapes). An outcome that cannot
    /// be encoded (a result with no JSON form) completes the task as failed, naming the
    /// reason: raising instead would leave the task running until its timeout, holding one
    /// of core's slots meanwhile.
    fn __call__(&self, py: Python<'_>, outcome: &Bound<'_, PyDict>) -> bool {
        let result = outcome_from_py(outcome).unwrap_or_else(|err| {
            rust_failure(
                format!("Failed encoding the activity's outcome: {err}"),
                "PayloadError",
                false,
            )
        });
        // Spawning wakes a runtime thread, which can preempt this one: not with the GIL.
        py.detach(|| self.answer(result))
    }

    /// The task token this reply completes.
    #[getter]
    fn task_token<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.token)
    }

    /// Whether the task has been answered (by this reply or by the shutdown drain).
    #[getter]
    fn answered(&self) -> bool {
        self.slot.answered()
    }
}

/// Start one activity in the bridge. On the fast path, inputs are checked or decoded here:
/// `json/plain` arguments cross as their JSON text (`bytes`), others as plain values, and
/// heartbeat details as plain values; the bridge converts them to the parameter types.
fn start(
    dispatch: &Dispatch,
    shared: Arc<Shared>,
    bridge: Arc<Py<PyAny>>,
    task_token: Vec<u8>,
    start: Start,
) {
    let raw = shared.options.raw_payloads;
    // `json/plain` arguments are only checked here and cross as their `bytes`, which
    // pydantic parses once into the parameter type (`FastConversion.decode_now`); building
    // a `Value` and then Python objects from it cost more than that whole parse.
    let decoded: Result<Vec<Checked>, _> = if raw {
        Ok(Vec::new())
    } else {
        start.input.iter().map(payload::check_or_decode).collect()
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
    let on_lane = dispatch.starts_on_lane(&start.activity_type);
    let slot = shared.activities.register_on(task_token.clone(), on_lane);
    dispatch.submit(
        on_lane,
        Box::new(move |py| {
            let reply = ActivityReply {
                shared: shared.clone(),
                token: task_token.clone(),
                slot: slot.clone(),
            };
            let started = (|| -> PyResult<()> {
                let info = info.into_pyobject(py)?;
                let details: Bound<'_, PyAny> = if raw {
                    serialized(py, &start.heartbeat_details)?
                } else {
                    Json(Value::Array(heartbeat_details.unwrap_or_default())).into_pyobject(py)?
                };
                info.set_item("heartbeat_details", details)?;
                let args: Bound<'_, PyAny> = if raw {
                    serialized(py, &start.input)?
                } else {
                    let items = args
                        .into_iter()
                        .zip(&start.input)
                        .map(|(arg, input)| match arg {
                            Checked::JsonText => Ok(PyBytes::new(py, &input.data).into_any()),
                            Checked::Value(value) => Json(value).into_pyobject(py),
                        });
                    PyList::new(py, items.collect::<PyResult<Vec<_>>>()?)?.into_any()
                };
                bridge.call_method1(
                    py,
                    "start",
                    (
                        PyBytes::new(py, &task_token),
                        &start.activity_type,
                        args,
                        info,
                        Bound::new(py, reply)?,
                    ),
                )?;
                Ok(())
            })();
            if let Err(err) = started
                && shared.activities.claim(&task_token, &slot)
            {
                let error = format!("activity bridge could not start the activity: {err}");
                complete(
                    &shared,
                    task_token,
                    rust_failure(error, "WorkerError", false),
                );
            }
        }),
    );
}

/// Payloads as a list of their serialized `Payload` messages (`bytes`), for a bridge with
/// its own data converter (which decodes them, codec included).
fn serialized<'py>(py: Python<'py>, payloads: &[Payload]) -> PyResult<Bound<'py, PyAny>> {
    Ok(PyList::new(
        py,
        payloads
            .iter()
            .map(|p| PyBytes::new(py, &p.encode_to_vec())),
    )?
    .into_any())
}

/// Deliver a cancellation (from the server, a timeout, or worker shutdown) to the bridge,
/// where its start went (behind it, should the start still be queued).
fn cancel(
    dispatch: &Dispatch,
    shared: &Shared,
    bridge: Arc<Py<PyAny>>,
    task_token: Vec<u8>,
    flags: CancelFlags,
) {
    let on_lane = shared.activities.on_lane(&task_token);
    dispatch.submit(
        on_lane,
        Box::new(move |py| {
            if let Err(err) =
                bridge.call_method1(py, "cancel", (PyBytes::new(py, &task_token), flags))
            {
                err.print(py);
            }
        }),
    );
}

/// Where the bridge's calls run: the worker's Python threads, or, for the activity types
/// the bridge runs on its event loop, that loop's own thread ([`LoopLane`]).
#[derive(Clone)]
struct Dispatch {
    threads: PythonThreads,
    lane: Option<Lane>,
}

/// The loop's lane and the starts that go to it, as `ActivityBridge.attach_lane` said.
#[derive(Clone)]
struct Lane {
    handle: LaneHandle,
    /// Registered types whose start runs on the loop (`async def`, or with interceptors).
    on_loop: Arc<HashSet<String>>,
    /// Registered types whose start runs elsewhere (a `def` activity's thread).
    elsewhere: Arc<HashSet<String>>,
    /// Whether an unregistered type (the dynamic activity) starts on the loop.
    dynamic_on_loop: bool,
}

impl Dispatch {
    /// Offer the bridge a lane onto its event loop (a bridge without `attach_lane`, or
    /// one that fails it, is served by the threads alone).
    async fn attach(threads: PythonThreads, bridge: Arc<Py<PyAny>>) -> Self {
        let (tx, rx) = tokio::sync::oneshot::channel();
        threads.submit(move |py| {
            let lane = Self::offer(py, &bridge).unwrap_or_else(|err| {
                err.print(py);
                None
            });
            let _ = tx.send(lane);
        });
        let lane = rx.await.ok().flatten();
        Self { threads, lane }
    }

    fn offer(py: Python<'_>, bridge: &Py<PyAny>) -> PyResult<Option<Lane>> {
        let bridge = bridge.bind(py);
        if !bridge.hasattr("attach_lane")? {
            return Ok(None);
        }
        let lane = LoopLane::new()?;
        let handle = lane.handle();
        let (on_loop, elsewhere, dynamic_on_loop): (HashSet<String>, HashSet<String>, bool) =
            bridge
                .call_method1("attach_lane", (Bound::new(py, lane)?,))?
                .extract()?;
        Ok(Some(Lane {
            handle,
            on_loop: Arc::new(on_loop),
            elsewhere: Arc::new(elsewhere),
            dynamic_on_loop,
        }))
    }

    fn starts_on_lane(&self, activity_type: &str) -> bool {
        self.lane.as_ref().is_some_and(|lane| {
            lane.on_loop.contains(activity_type)
                || (lane.dynamic_on_loop && !lane.elsewhere.contains(activity_type))
        })
    }

    /// Run `job` on the lane if `on_lane` and the loop still runs, else on the threads.
    fn submit(&self, on_lane: bool, job: Job) {
        let job = match (&self.lane, on_lane) {
            (Some(lane), true) => match lane.handle.submit(job) {
                Ok(()) => return,
                Err(job) => job,
            },
            _ => job,
        };
        self.threads.submit(job);
    }
}

/// Once shutdown begins: tell the bridge (`activity.is_worker_shutdown()`, new starts fail),
/// then run the [`drain`] with the worker's grace period.
async fn shutdown_drain(shared: Arc<Shared>, dispatch: Dispatch, bridge: Arc<Py<PyAny>>) {
    shared.activities.shutdown_begun().await;
    let announce = bridge.clone();
    dispatch.threads.submit(move |py| {
        if let Err(err) = announce.call_method0(py, "begin_shutdown") {
            err.print(py);
        }
    });
    let grace = Duration::from_millis(shared.options.graceful_shutdown_millis);
    let drained = drain(
        &shared.activities,
        grace,
        CANCEL_BOUND,
        |token| {
            cancel(
                &dispatch,
                &shared,
                bridge.clone(),
                token,
                CancelFlags::worker_shutdown(),
            )
        },
        |token| {
            complete(
                &shared,
                token,
                rust_failure(
                    "Worker shut down before the activity finished (it ignored the cancel)".into(),
                    "WorkerShutdown",
                    false,
                ),
            )
        },
    )
    .await;
    if let Drained::Failed(n) = drained {
        eprintln!(
            "nomad-actions: {n} activities on {} did not finish after cancellation at worker \
             shutdown; completed them as failed",
            shared.options.task_queue
        );
    }
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
    // `async def` activities start on the bridge's event loop itself.
    let dispatch = Dispatch::attach(threads.clone(), bridge.clone()).await;
    // Beside the polls (which go on delivering cancels), not raced against them: dropping
    // a poll future could lose a task.
    let drainer = runtime().spawn(shutdown_drain(
        shared.clone(),
        dispatch.clone(),
        bridge.clone(),
    ));
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
                start(&dispatch, shared.clone(), bridge.clone(), task_token, s);
            }
            Some(activity_task::Variant::Cancel(c)) => {
                let flags = CancelFlags::of(c.reason, c.details.as_ref());
                cancel(&dispatch, &shared, bridge.clone(), task_token, flags);
            }
            None => {}
        }
    };
    drainer.abort();
    threads.close();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_flags_follow_the_primary_reason_without_details() {
        let of = |reason: ActivityCancelReason| CancelFlags::of(reason as i32, None);
        let only = |set: fn(&mut CancelFlags)| {
            let mut flags = CancelFlags::default();
            set(&mut flags);
            flags
        };
        assert_eq!(
            of(ActivityCancelReason::NotFound),
            only(|f| f.not_found = true)
        );
        assert_eq!(
            of(ActivityCancelReason::Cancelled),
            only(|f| f.cancel_requested = true)
        );
        assert_eq!(
            of(ActivityCancelReason::TimedOut),
            only(|f| f.timed_out = true)
        );
        assert_eq!(
            of(ActivityCancelReason::WorkerShutdown),
            CancelFlags::worker_shutdown()
        );
        assert_eq!(of(ActivityCancelReason::Paused), only(|f| f.paused = true));
        assert_eq!(of(ActivityCancelReason::Reset), only(|f| f.reset = true));
        // A reason this build does not know is a cancel request.
        assert_eq!(
            CancelFlags::of(99, None),
            only(|f| f.cancel_requested = true)
        );
    }

    #[test]
    fn cancel_flags_take_every_reason_from_the_details() {
        let details = ActivityCancellationDetails {
            is_paused: true,
            is_timed_out: true,
            ..Default::default()
        };
        let flags = CancelFlags::of(ActivityCancelReason::Paused as i32, Some(&details));
        assert_eq!(
            flags,
            CancelFlags {
                paused: true,
                timed_out: true,
                ..Default::default()
            }
        );
        // Empty details (an older server) fall back to the primary reason.
        let empty = ActivityCancellationDetails::default();
        assert_eq!(
            CancelFlags::of(ActivityCancelReason::Reset as i32, Some(&empty)),
            CancelFlags {
                reset: true,
                ..Default::default()
            }
        );
    }

    #[test]
    fn cancel_flags_cross_as_a_dict_of_temporalio_field_names() {
        Python::initialize();
        Python::attach(|py| {
            let dict = CancelFlags::worker_shutdown().into_pyobject(py).unwrap();
            let dict = dict.cast::<PyDict>().unwrap();
            let mut keys: Vec<String> = dict.keys().extract().unwrap();
            keys.sort();
            // The fields of temporalio's `activity.ActivityCancellationDetails`.
            assert_eq!(
                keys,
                [
                    "cancel_requested",
                    "not_found",
                    "paused",
                    "reset",
                    "timed_out",
                    "worker_shutdown"
                ]
            );
            let shutdown: bool = dict
                .get_item("worker_shutdown")
                .unwrap()
                .unwrap()
                .extract()
                .unwrap();
            assert!(shutdown);
        });
    }

    #[test]
    fn outcomes_decode_from_the_bridge_dicts() {
        use activity_execution_result::Status;
        Python::initialize();
        Python::attach(|py| {
            let decode = |code: &std::ffi::CStr| {
                let dict = py.eval(code, None, None).unwrap();
                outcome_from_py(dict.cast::<PyDict>().unwrap()).map(|r| r.status.unwrap())
            };
            let Status::Completed(done) = decode(c"{'result': {'a': [1, 2.5, None]}}").unwrap()
            else {
                panic!("not completed")
            };
            let payload = done.result.unwrap();
            assert_eq!(payload.metadata["encoding"], b"json/plain");
            let value: Value = serde_json::from_slice(&payload.data).unwrap();
            assert_eq!(value, serde_json::json!({"a": [1, 2.5, null]}));

            let raw = Payload {
                data: b"xyz".to_vec(),
                ..Default::default()
            };
            let dict = PyDict::new(py);
            dict.set_item("result_payload", PyBytes::new(py, &raw.encode_to_vec()))
                .unwrap();
            let Some(Status::Completed(done)) = outcome_from_py(&dict).unwrap().status else {
                panic!("not completed")
            };
            assert_eq!(done.result.unwrap().data, b"xyz");

            let failure = Failure {
                message: "boom".into(),
                ..Default::default()
            };
            for (key, cancelled) in [("failure", false), ("cancelled", true)] {
                let dict = PyDict::new(py);
                dict.set_item(key, PyBytes::new(py, &failure.encode_to_vec()))
                    .unwrap();
                match outcome_from_py(&dict).unwrap().status.unwrap() {
                    Status::Failed(f) if !cancelled => {
                        assert_eq!(f.failure.unwrap().message, "boom")
                    }
                    Status::Cancelled(c) if cancelled => {
                        assert_eq!(c.failure.unwrap().message, "boom")
                    }
                    other => panic!("{key}: {other:?}"),
                }
            }
            assert!(matches!(
                decode(c"{'will_complete_async': True}").unwrap(),
                Status::WillCompleteAsync(_)
            ));
            let err = decode(c"{'nonsense': 1}").unwrap_err().to_string();
            assert!(err.contains("unknown activity outcome"), "{err}");
            let err = decode(c"{'failure': b'\\xff\\xff'}")
                .unwrap_err()
                .to_string();
            assert!(err.contains("malformed failure failure"), "{err}");
            let err = decode(c"{'result': object()}").unwrap_err().to_string();
            assert!(!err.is_empty());
        });
    }

    #[test]
    fn json_text_results_are_sent_as_they_are_or_encoded_the_old_way() {
        use activity_execution_result::Status;
        Python::initialize();
        Python::attach(|py| {
            let decode = |code: &std::ffi::CStr| {
                let dict = py.eval(code, None, None).unwrap();
                outcome_from_py(dict.cast::<PyDict>().unwrap()).map(|r| r.status.unwrap())
            };
            let payload = |code: &std::ffi::CStr| match decode(code).unwrap() {
                Status::Completed(done) => done.result.unwrap(),
                other => panic!("not completed: {other:?}"),
            };
            // The text is the payload's data, spaces and all; `null` is binary/null.
            let text = payload(c"{'result_json': b'{\"a\": [1, 2.5]}', 'result_value': 0}");
            assert_eq!(text.metadata["encoding"], b"json/plain");
            assert_eq!(text.data, br#"{"a": [1, 2.5]}"#);
            let none = payload(c"{'result_json': b'null', 'result_value': None}");
            assert_eq!(none.metadata["encoding"], b"binary/null");
            // Refused text: the value is encoded as before, with its error where it has none.
            let old = payload(c"{'result_json': b'[1.5, 1e999]', 'result_value': [1.5, 2]}");
            assert_eq!(old.data, b"[1.5,2]");
            let err =
                decode(c"{'result_json': b'[36893488147419103232]', 'result_value': [2**65]}")
                    .unwrap_err()
                    .to_string();
            assert!(
                err.contains("value at $[0] cannot be sent as JSON: integer of 66 bits"),
                "{err}"
            );
            let err = decode(c"{'result_json': b'[1e999]'}")
                .unwrap_err()
                .to_string();
            assert!(err.contains("needs its result_value"), "{err}");
        });
    }
}

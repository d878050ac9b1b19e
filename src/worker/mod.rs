//! The worker: sdk-core's `Worker` driven by two poll loops joined under one shutdown.
//!
//! The workflow loop hands each activation, as protobuf bytes, to the Python workflow
//! bridge (which runs the plugin's workflow code through temporalio's `WorkflowRunner`) and
//! completes it with the bytes that come back. The activity loop decodes activity inputs in
//! Rust and hands plain values to the Python activity bridge, which reports outcomes back
//! through [`WorkerRef::complete_activity`]. Shutdown is a normal path: `initiate_shutdown`
//! makes both polls end with `PollError::ShutDown` once every task has been completed, then
//! the core worker is finalized.

mod activities;
mod python_threads;
mod workflows;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use temporalio_common::worker::WorkerTaskTypes;
use temporalio_sdk_core::{
    PollerBehavior, Worker as CoreWorker, WorkerConfig, WorkerValidationError,
    WorkerVersioningStrategy,
};

use crate::client::{ConnectionConfig, connection};
use crate::codec::FernetCodec;
use crate::errors::EngineError;
use crate::runtime::{call, core_runtime, runtime};

/// Long polls kept open per task type: temporalio's default (5 each). More outstanding polls
/// buy no throughput on one worker and make the server match more pollers.
const MAX_POLLERS: usize = 5;

/// Worker settings; twin of the Python dataclass `worker.WorkerOptions`.
#[derive(FromPyObject, Clone, Debug)]
pub struct WorkerOptions {
    pub task_queue: String,
    pub enable_workflows: bool,
    pub enable_activities: bool,
    pub max_concurrent_workflow_tasks: usize,
    pub max_concurrent_activities: usize,
    pub max_cached_workflows: usize,
    pub graceful_shutdown_millis: u64,
    pub max_heartbeat_throttle_millis: u64,
    pub default_heartbeat_throttle_millis: u64,
    /// Activity inputs and heartbeats cross as serialized `Payload` bytes instead of decoded
    /// JSON values (a custom temporalio `DataConverter` is in use).
    pub raw_payloads: bool,
    pub build_id: String,
}

impl WorkerOptions {
    fn core_config(&self, namespace: &str, identity: &str) -> Result<WorkerConfig, EngineError> {
        let task_types = WorkerTaskTypes {
            enable_workflows: self.enable_workflows,
            enable_local_activities: self.enable_workflows && self.enable_activities,
            enable_remote_activities: self.enable_activities,
            enable_nexus: false,
        };
        // Sticky caching needs at least two outstanding workflow tasks (core refuses fewer).
        let max_wft = if self.max_cached_workflows > 0 {
            self.max_concurrent_workflow_tasks.max(2)
        } else {
            self.max_concurrent_workflow_tasks.max(1)
        };
        WorkerConfig::builder()
            .namespace(namespace)
            .task_queue(self.task_queue.clone())
            .client_identity_override(identity.to_string())
            .task_types(task_types)
            .versioning_strategy(WorkerVersioningStrategy::None {
                build_id: self.build_id.clone(),
            })
            .max_cached_workflows(self.max_cached_workflows)
            .max_outstanding_workflow_tasks(max_wft)
            .max_outstanding_activities(self.max_concurrent_activities.max(1))
            .max_outstanding_local_activities(self.max_concurrent_activities.max(1))
            .workflow_task_poller_behavior(PollerBehavior::SimpleMaximum(
                max_wft.clamp(2, MAX_POLLERS),
            ))
            .activity_task_poller_behavior(PollerBehavior::SimpleMaximum(
                self.max_concurrent_activities.clamp(1, MAX_POLLERS),
            ))
            .graceful_shutdown_period(Duration::from_millis(self.graceful_shutdown_millis))
            .max_heartbeat_throttle_interval(Duration::from_millis(
                self.max_heartbeat_throttle_millis,
            ))
            .default_heartbeat_throttle_interval(Duration::from_millis(
                self.default_heartbeat_throttle_millis,
            ))
            // Several workers may share one cached connection (tests, one process serving
            // several queues); eager workflow start is not used, so the check buys nothing.
            .skip_client_worker_set_check(true)
            .build()
            .map_err(EngineError::Config)
    }
}

/// State shared by the poll loops and the Python handle.
pub(crate) struct Shared {
    /// Taken out (and finalized) when the loops have ended.
    core: Mutex<Option<Arc<CoreWorker>>>,
    pub(crate) options: WorkerOptions,
    pub(crate) namespace: String,
    /// Payload encryption, applied to activations, completions and activity tasks.
    pub(crate) codec: Option<FernetCodec>,
}

impl Shared {
    pub(crate) fn core(&self) -> Option<Arc<CoreWorker>> {
        self.core.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Python handle to a running or runnable worker.
#[pyclass(name = "WorkerRef", module = "nomad_actions._core", frozen)]
pub struct WorkerRef {
    shared: Arc<Shared>,
}

async fn create(
    config: ConnectionConfig,
    options: WorkerOptions,
) -> Result<WorkerRef, EngineError> {
    let conn = connection(&config).await?;
    let core_config = options.core_config(&config.namespace, &config.identity)?;
    let core =
        temporalio_sdk_core::init_worker(core_runtime(), core_config, conn).map_err(|e| {
            EngineError::Config(format!(
                "cannot create worker for task queue {:?}: {e:#}",
                options.task_queue
            ))
        })?;
    // Fails early on an unknown namespace instead of at the first poll. A namespace the
    // server does not know is a configuration error; anything else (the server went away
    // meanwhile) is a connection error, which the Python side retries.
    core.validate().await.map_err(|e| match &e {
        WorkerValidationError::NamespaceDescribeError { source, namespace }
            if source.code() == tonic::Code::NotFound =>
        {
            EngineError::Config(format!(
                "namespace {namespace:?} does not exist on the Temporal server at {}",
                config.target()
            ))
        }
        _ => EngineError::Connect {
            target: config.target(),
            reason: format!("worker validation failed: {e}"),
        },
    })?;
    Ok(WorkerRef {
        shared: Arc::new(Shared {
            core: Mutex::new(Some(Arc::new(core))),
            options,
            codec: FernetCodec::for_config(&config),
            namespace: config.namespace,
        }),
    })
}

/// Run both loops until shutdown, then finalize the core worker.
async fn run(
    shared: Arc<Shared>,
    workflow_bridge: Option<Py<PyAny>>,
    activity_bridge: Option<Py<PyAny>>,
) -> Result<(), EngineError> {
    let core = shared
        .core()
        .ok_or_else(|| EngineError::Config("worker already ran".into()))?;
    let stop_on_error = |core: Arc<CoreWorker>| {
        move |err: EngineError| {
            // One loop failing ends the other too: a half-working worker hides problems.
            core.initiate_shutdown();
            err
        }
    };
    let wf = async {
        match (&workflow_bridge, shared.options.enable_workflows) {
            (Some(bridge), true) => workflows::poll_loop(
                core.clone(),
                shared.codec.clone(),
                Arc::new(bridge_clone(bridge)),
                // Core hands out at most this many activations at once.
                shared.options.max_concurrent_workflow_tasks.max(2),
            )
            .await
            .map_err(stop_on_error(core.clone())),
            _ => Ok(()),
        }
    };
    let act = async {
        match (&activity_bridge, shared.options.enable_activities) {
            (Some(bridge), true) => {
                activities::poll_loop(core.clone(), shared.clone(), Arc::new(bridge_clone(bridge)))
                    .await
                    .map_err(stop_on_error(core.clone()))
            }
            _ => Ok(()),
        }
    };
    let outcome = tokio::try_join!(wf, act);
    core.shutdown().await;
    drop(core);
    let taken = shared.core.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(mut core) = taken {
        // Completions still in flight hold clones for a moment; finalize needs the only one.
        for _ in 0..100 {
            match Arc::try_unwrap(core) {
                Ok(owned) => {
                    owned.finalize_shutdown().await;
                    break;
                }
                Err(again) => {
                    core = again;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
    outcome.map(|_| ())
}

fn bridge_clone(bridge: &Py<PyAny>) -> Py<PyAny> {
    Python::attach(|py| bridge.clone_ref(py))
}

#[pymethods]
impl WorkerRef {
    /// Connect and create a worker (awaitable, or blocking when `blocking`).
    #[staticmethod]
    fn create<'py>(
        py: Python<'py>,
        config: ConnectionConfig,
        options: WorkerOptions,
        blocking: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        call(
            py,
            blocking,
            async move { Ok(create(config, options).await?) },
        )
    }

    /// Poll and dispatch until shut down. `workflow_bridge` is a callable
    /// `activate(bytes) -> bytes`; `activity_bridge` has `start(...)` and `cancel(...)`.
    #[pyo3(signature = (workflow_bridge, activity_bridge, blocking))]
    fn run<'py>(
        &self,
        py: Python<'py>,
        workflow_bridge: Option<Py<PyAny>>,
        activity_bridge: Option<Py<PyAny>>,
        blocking: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let shared = self.shared.clone();
        call(py, blocking, async move {
            Ok(run(shared, workflow_bridge, activity_bridge).await?)
        })
    }

    /// Stop polling for new tasks; running tasks finish (activities get
    /// `graceful_shutdown_millis`, then a cancel), and `run` returns when all are done.
    fn initiate_shutdown(&self) {
        if let Some(core) = self.shared.core() {
            // Core spawns the ShutdownWorker RPC, so this needs the runtime's context.
            let _guard = runtime().enter();
            core.initiate_shutdown();
        }
    }

    /// Report the outcome of an activity (called by the activity bridge, from any thread).
    /// An outcome that cannot be encoded (a result with no JSON form) completes the task as
    /// failed, naming the reason: raising instead would leave the task running until its
    /// timeout, and hold one of core's activity slots meanwhile.
    fn complete_activity(
        &self,
        py: Python<'_>,
        task_token: Vec<u8>,
        outcome: &Bound<'_, PyDict>,
    ) -> PyResult<()> {
        let result = activities::outcome_from_py(outcome).unwrap_or_else(|err| {
            activities::rust_failure(
                format!("Failed encoding the activity's outcome: {err}"),
                "PayloadError",
                false,
            )
        });
        // Spawning wakes a runtime thread, which can preempt this one: not with the GIL.
        py.detach(|| activities::complete(&self.shared, task_token, result));
        Ok(())
    }

    /// Record a heartbeat; core throttles what reaches the server.
    fn record_heartbeat(
        &self,
        task_token: Vec<u8>,
        details: Vec<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        activities::heartbeat(&self.shared, task_token, details)
    }

    /// Ask core to evict a cached workflow run (after a deadlock, say).
    fn request_eviction(&self, run_id: &str) {
        if let Some(core) = self.shared.core() {
            let _guard = runtime().enter();
            core.request_workflow_eviction(run_id);
        }
    }

    #[getter]
    fn task_queue(&self) -> String {
        self.shared.options.task_queue.clone()
    }

    #[getter]
    fn namespace(&self) -> String {
        self.shared.namespace.clone()
    }
}

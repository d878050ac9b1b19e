//! The worker: sdk-core's `Worker` driven by two poll loops joined under one shutdown.
//!
//! The workflow loop hands each activation, as protobuf bytes, to the Python workflow
//! bridge (which runs the plugin's workflow code through temporalio's `WorkflowRunner`) and
//! completes it with the bytes that come back. The activity loop decodes activity inputs in
//! Rust and hands plain values to the Python activity bridge, which reports outcomes back
//! through the per-task `ActivityReply`. Shutdown is a normal path: `initiate_shutdown`
//! makes both polls end with `PollError::ShutDown` once every task has been completed, then
//! the core worker is finalized.

mod activities;
mod deadlines;
mod health;
mod loop_lane;
mod python_threads;
mod registry;
mod start;
mod workflows;

pub use loop_lane::LoopLane;
pub use start::StartCancel;
pub use workflows::Reply;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::prelude::*;
use temporalio_common::worker::WorkerTaskTypes;
use temporalio_sdk_core::{
    FixedSizeSlotSupplier, PollerBehavior, ResourceBasedTuner, ResourceSlotOptions, TunerBuilder,
    Worker as CoreWorker, WorkerConfig, WorkerTuner, WorkerValidationError,
    WorkerVersioningStrategy,
};

pub use self::activities::ActivityReply;
use self::health::{HealthServer, HealthState};

use crate::codec::FernetCodec;
use crate::connection::{ConnectionConfig, connection};
use crate::errors::{ConnectKind, EngineError};
use crate::runtime::{call, core_runtime, runtime};

/// Long polls kept open per task type: temporalio's default (5 each). More outstanding polls
/// buy no throughput on one worker and make the server match more pollers.
const MAX_POLLERS: usize = 5;

/// After a poll loop failed, how much longer than the grace period core's shutdown may take.
const SHUTDOWN_AFTER_ERROR_SLACK: Duration = Duration::from_secs(5);

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
    /// False: activities run only as local activities (no activity task polling).
    pub enable_remote_activities: bool,
    pub build_id: String,
    /// `host:port` to serve `GET /health` at while running, or None for no endpoint.
    pub health_address: Option<String>,
    /// Activity slots from sdk-core's resource-based tuner instead of the fixed
    /// `max_concurrent_activities`, as upstream NOMAD's workers do when that is unset.
    pub tuner: Option<TunerOptions>,
}

/// Settings of the resource-based activity slot tuner; twin of `worker.TunerOptions`
/// (upstream's `WorkerConfig` fields of the same names).
#[derive(FromPyObject, Clone, Debug)]
pub struct TunerOptions {
    /// Fraction of the machine's memory the tuner aims to stay below (0 to 1).
    pub target_memory_usage: f64,
    /// Fraction of the machine's CPU the tuner aims to stay below (0 to 1).
    pub target_cpu_usage: f64,
    /// Slots handed out whatever the resource use.
    pub min_activity_slots: usize,
    /// Slots never exceeded.
    pub max_activity_slots: usize,
    /// Least time between two slots above the minimum.
    pub activity_ramp_throttle_millis: u64,
}

impl TunerOptions {
    /// Workflow task slots stay fixed (`max_wft`): they run no plugin code that needs
    /// resources, and our workflow bridge sizes its threads by them. Activities and local
    /// activities share one resource controller, as in temporalio's resource-based tuner.
    fn build(&self, max_wft: usize) -> Result<Arc<temporalio_sdk_core::TunerHolder>, EngineError> {
        let check_fraction = |name: &str, value: f64| {
            if value > 0.0 && value <= 1.0 {
                Ok(())
            } else {
                Err(EngineError::Config(format!(
                    "{name} must be a fraction above 0 and at most 1, got {value}"
                )))
            }
        };
        check_fraction("target_memory_usage", self.target_memory_usage)?;
        check_fraction("target_cpu_usage", self.target_cpu_usage)?;
        if self.max_activity_slots == 0 || self.min_activity_slots > self.max_activity_slots {
            return Err(EngineError::Config(format!(
                "activity slots: min_activity_slots ({}) must not exceed max_activity_slots \
                 ({}), which must be at least 1",
                self.min_activity_slots, self.max_activity_slots
            )));
        }
        let mut resource_based =
            ResourceBasedTuner::new(self.target_memory_usage, self.target_cpu_usage);
        let slots = ResourceSlotOptions::new(
            self.min_activity_slots,
            self.max_activity_slots,
            Duration::from_millis(self.activity_ramp_throttle_millis),
        );
        resource_based
            .with_activity_slots_options(slots)
            .with_local_activity_slots_options(slots);
        let mut builder = TunerBuilder::default();
        builder
            .workflow_slot_supplier(Arc::new(FixedSizeSlotSupplier::new(max_wft)))
            .activity_slot_supplier(resource_based.activity_task_slot_supplier())
            .local_activity_slot_supplier(resource_based.local_activity_slot_supplier());
        Ok(Arc::new(builder.build()))
    }
}

impl WorkerOptions {
    fn core_config(&self, namespace: &str, identity: &str) -> Result<WorkerConfig, EngineError> {
        let task_types = WorkerTaskTypes {
            enable_workflows: self.enable_workflows,
            enable_local_activities: self.enable_workflows && self.enable_activities,
            enable_remote_activities: self.enable_activities && self.enable_remote_activities,
            enable_nexus: false,
        };
        // Sticky caching needs at least two outstanding workflow tasks (core refuses fewer).
        let max_wft = if self.max_cached_workflows > 0 {
            self.max_concurrent_workflow_tasks.max(2)
        } else {
            self.max_concurrent_workflow_tasks.max(1)
        };
        let (tuner, max_activities) = match &self.tuner {
            Some(tuner) => (Some(tuner.build(max_wft)?), tuner.max_activity_slots),
            None => (None, self.max_concurrent_activities.max(1)),
        };
        // A tuner and the fixed maxima exclude each other in core.
        let tuned = tuner.is_some();
        let fixed = |n: usize| if tuned { None } else { Some(n) };
        WorkerConfig::builder()
            .namespace(namespace)
            .task_queue(self.task_queue.clone())
            .client_identity_override(identity.to_string())
            .task_types(task_types)
            .versioning_strategy(WorkerVersioningStrategy::None {
                build_id: self.build_id.clone(),
            })
            .max_cached_workflows(self.max_cached_workflows)
            .maybe_tuner(tuner.map(|t| t as Arc<dyn WorkerTuner + Send + Sync>))
            .maybe_max_outstanding_workflow_tasks(fixed(max_wft))
            .maybe_max_outstanding_activities(fixed(max_activities))
            .maybe_max_outstanding_local_activities(fixed(max_activities))
            .workflow_task_poller_behavior(PollerBehavior::SimpleMaximum(
                max_wft.clamp(2, MAX_POLLERS),
            ))
            .activity_task_poller_behavior(PollerBehavior::SimpleMaximum(
                max_activities.clamp(1, MAX_POLLERS),
            ))
            // No `graceful_shutdown_period`: the activity drain (activities.rs) is the one
            // timer that decides when running activities are cancelled, then failed.
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
    /// What `GET /health` reports.
    health: Arc<HealthState>,
    /// Running activity tasks and the shutdown drain's signal (see `activities`).
    pub(crate) activities: registry::Outstanding,
    /// The health endpoint, from creation until this worker is dropped (so it reports 503
    /// before the loops run and after they have ended, for as long as the worker lives).
    health_server: Mutex<Option<HealthServer>>,
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
    /// The process that created it: its core worker lives on that process's runtime.
    pid: u32,
}

impl WorkerRef {
    /// Refuse to drive the worker from a forked child (it would hang on a dead runtime).
    fn check_process(&self) -> Result<(), EngineError> {
        let pid = std::process::id();
        if pid == self.pid {
            return Ok(());
        }
        Err(EngineError::Forked {
            task_queue: self.shared.options.task_queue.clone(),
            created_in: self.pid,
            pid,
        })
    }
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
        _ => EngineError::connect(
            &config.target(),
            ConnectKind::of(&e),
            Some("DescribeNamespace"),
            format!("worker validation failed: {e}"),
        ),
    })?;
    // Served from here on (503 until the loops run), so a bad address fails the start.
    let health = HealthState::new();
    let health_server = match &options.health_address {
        Some(address) => Some(health::serve(address, health.clone())?),
        None => None,
    };
    Ok(WorkerRef {
        shared: Arc::new(Shared {
            core: Mutex::new(Some(Arc::new(core))),
            options,
            codec: FernetCodec::for_config(&config),
            namespace: config.namespace,
            health,
            activities: registry::Outstanding::default(),
            health_server: Mutex::new(health_server),
        }),
        pid: std::process::id(),
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
    if shared.options.health_address.is_some() {
        shared.health.start_pinging();
    }
    shared.health.set_polling(true);
    let stop_on_error = |core: Arc<CoreWorker>| {
        let health = shared.health.clone();
        let activities = &shared.activities;
        move |err: EngineError| {
            health.set_polling(false);
            // One loop failing ends the other too: a half-working worker hides problems.
            core.initiate_shutdown();
            // Running activities drain as on a requested shutdown (grace, cancel, fail).
            activities.begin_shutdown();
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
    shared.health.set_polling(false);
    shared.health.stop_pinging();
    if let Err(err) = outcome {
        // After a fatal poll error core's other pollers keep retrying theirs (the client
        // allows long polls a minute of "fatal" errors, again and again): its shutdown may
        // never end. Give it the grace period, then report the error rather than hang.
        let limit = Duration::from_millis(shared.options.graceful_shutdown_millis)
            + SHUTDOWN_AFTER_ERROR_SLACK;
        if tokio::time::timeout(limit, core.shutdown()).await.is_err() {
            return Err(err);
        }
        drop(core);
        finalize(&shared).await;
        return Err(err);
    }
    core.shutdown().await;
    drop(core);
    finalize(&shared).await;
    Ok(())
}

/// Finalize the core worker once the loops are done and core has shut down.
async fn finalize(shared: &Shared) {
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
}

fn bridge_clone(bridge: &Py<PyAny>) -> Py<PyAny> {
    Python::attach(|py| bridge.clone_ref(py))
}

#[pymethods]
impl WorkerRef {
    /// Connect and create a worker (awaitable, or blocking when `blocking`). While the
    /// server cannot be reached, retry with a doubling delay (1 s to 30 s), logging each
    /// attempt; `None` when `cancel` is set first.
    #[staticmethod]
    fn create<'py>(
        py: Python<'py>,
        config: ConnectionConfig,
        options: WorkerOptions,
        cancel: Py<StartCancel>,
        blocking: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let cancel = Arc::new(cancel);
        call(py, blocking, async move {
            let address = format!("{}:{}", config.host, config.port);
            let task_queue = options.task_queue.clone();
            let created = start::with_retry(cancel, &address, &task_queue, || {
                create(config.clone(), options.clone())
            })
            .await?;
            Ok(created)
        })
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
        self.check_process()?;
        let shared = self.shared.clone();
        call(py, blocking, async move {
            Ok(run(shared, workflow_bridge, activity_bridge).await?)
        })
    }

    /// Stop polling for new tasks; running tasks finish (activities get
    /// `graceful_shutdown_millis`, then a cancel), and `run` returns when all are done.
    fn initiate_shutdown(&self) {
        if self.check_process().is_err() {
            // Nothing of it runs in this process, so there is nothing to stop.
            return;
        }
        self.shared.health.set_draining();
        if let Some(core) = self.shared.core() {
            // Core spawns the ShutdownWorker RPC, so this needs the runtime's context.
            let _guard = runtime().enter();
            core.initiate_shutdown();
        }
        self.shared.activities.begin_shutdown();
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

    /// The address the health endpoint is bound to (`host:port`), or None.
    #[getter]
    fn health_address(&self) -> Option<String> {
        let server = self
            .shared
            .health_server
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        server.as_ref().map(|s| s.address.to_string())
    }
}

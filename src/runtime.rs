//! The one process-wide tokio runtime, and the single way async Rust work reaches Python.
//!
//! Every native call that talks to the network goes through [`call`]: it either hands
//! Python an awaitable (the `_async` API) or blocks the calling thread on the runtime with
//! the GIL released (the sync API). The sync path never touches asyncio, so it works from
//! an ELN `normalize()` running inside an event loop's thread as well as from plain threads.

use std::future::Future;
use std::time::Duration;

use pyo3::IntoPyObjectExt;
use pyo3::prelude::*;
use tokio::runtime::Runtime;

/// Worker threads of the runtime unless `NOMAD_ACTIONS_RUNTIME_THREADS` says otherwise.
/// The Rust side of a worker process needs well under one core (Python is the bottleneck)
/// and a client waits on the network; more idle threads than that only add wake-ups.
const DEFAULT_RUNTIME_THREADS: usize = 2;

/// Set how the shared runtime will be built (at import, before anything can start it:
/// pyo3-async-runtimes builds it on first use, also from its own `future_into_py`).
pub fn configure_runtime() {
    let threads = std::env::var("NOMAD_ACTIONS_RUNTIME_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_RUNTIME_THREADS);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().worker_threads(threads);
    pyo3_async_runtimes::tokio::init(builder);
}

/// The shared runtime (created on first use by pyo3-async-runtimes, multi-threaded).
pub fn runtime() -> &'static Runtime {
    pyo3_async_runtimes::tokio::get_runtime()
}

/// How often a blocked sync call wakes to let Ctrl-C (SIGINT) through.
const SIGNAL_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Run `fut` for Python: as an awaitable when `blocking` is false, else to completion on
/// this thread with the GIL released.
pub fn call<'py, F, T>(py: Python<'py>, blocking: bool, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    if !blocking {
        return pyo3_async_runtimes::tokio::future_into_py(py, fut);
    }
    let value = block_on_interruptible(py, fut)?;
    value.into_bound_py_any(py)
}

/// Block on `fut` without holding the GIL; every [`SIGNAL_CHECK_INTERVAL`] re-take it
/// briefly to run Python signal handlers, so a long `get_action_result` stays
/// interruptible with Ctrl-C (the future is dropped, which cancels the RPC).
pub fn block_on_interruptible<F, T>(py: Python<'_>, fut: F) -> PyResult<T>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: Send + 'static,
{
    py.detach(|| {
        runtime().block_on(async move {
            tokio::pin!(fut);
            loop {
                tokio::select! {
                    out = &mut fut => return out,
                    _ = tokio::time::sleep(SIGNAL_CHECK_INTERVAL) => {
                        Python::attach(|py| py.check_signals())?;
                    }
                }
            }
        })
    })
}

/// sdk-core's runtime (telemetry, worker heartbeats), living on our tokio runtime so that one
/// set of threads serves core, the client and the Python futures.
pub fn core_runtime() -> &'static temporalio_sdk_core::CoreRuntime {
    use std::sync::OnceLock;
    use temporalio_common::telemetry::{Logger, TelemetryOptions};
    use temporalio_sdk_core::{CoreRuntime, RuntimeOptions};

    static CORE: OnceLock<CoreRuntime> = OnceLock::new();
    CORE.get_or_init(|| {
        // Core's own logs go to stderr only when asked for (e.g. NOMAD_ACTIONS_CORE_LOG=warn).
        let logging = std::env::var("NOMAD_ACTIONS_CORE_LOG")
            .ok()
            .filter(|f| !f.is_empty())
            .map(|filter| Logger::Console {
                filter,
                format: None,
            });
        let telemetry = TelemetryOptions::builder()
            .maybe_logging(logging)
            .maybe_metrics(crate::telemetry::meter_for_core_runtime())
            .build();
        let options = RuntimeOptions::builder()
            .telemetry_options(telemetry)
            .build()
            .expect("default runtime options are valid");
        let _guard = runtime().enter();
        CoreRuntime::new_assume_tokio(options).expect("sdk-core runtime starts")
    })
}

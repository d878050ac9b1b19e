//! The process-wide tokio runtime, and the single way async Rust work reaches Python.
//!
//! Every native call that talks to the network goes through [`call`]: it either hands
//! Python an awaitable (the `_async` API) or blocks the calling thread on the runtime with
//! the GIL released (the sync API). The sync path never touches asyncio, so it works from
//! an ELN `normalize()` running inside an event loop's thread as well as from plain threads.
//!
//! Fork safety: a forked child inherits the parent's memory but none of its threads, so the
//! parent's runtime (and every connection living on it) is dead there; using it would hang
//! forever. All of that state therefore lives in a [`Generation`] stamped with the pid that
//! built it; the first call in a child sees another pid and builds a fresh generation (new
//! runtime, empty connection cache, new sdk-core runtime). The parent's generation is leaked
//! in the child on purpose: dropping a runtime joins its threads, which do not exist there.
//! pyo3-async-runtimes' own tokio runtime is a global that cannot be replaced, so Python
//! futures go through its `generic` API with our runtime ([`NomadRuntime`]) instead.

use std::any::Any;
use std::cell::OnceCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use pyo3::IntoPyObjectExt;
use pyo3::prelude::*;
use pyo3_async_runtimes::TaskLocals;
use pyo3_async_runtimes::generic::{ContextExt, JoinError, Runtime as GenericRuntime};
use tokio::runtime::Runtime;

/// Worker threads of the runtime unless `NOMAD_ACTIONS_RUNTIME_THREADS` says otherwise.
/// The Rust side of a worker process needs well under one core (Python, one GIL, is the
/// bottleneck) and a client waits on the network. A second thread only adds wake-ups:
/// tokio wakes an idle worker to steal every task spawned, so each hand-off costs a
/// futex wake and a cold cache. Measured (benches/README.md, "Run 15"): one thread halves
/// the worker's context switches and cuts 6-12 % of its CPU per workflow.
/// A worker never takes the GIL on these threads (its calls into Python go to
/// `PythonThreads`); only an async client's completion does, to resolve its future.
const DEFAULT_RUNTIME_THREADS: usize = 1;

/// Everything that is bound to the threads of one process: built on first use in a
/// process, replaced (and leaked) in a forked child.
pub struct Generation {
    /// The process that built it.
    pub pid: u32,
    /// The tokio runtime serving the client, the workers and the Python futures.
    pub runtime: Runtime,
    /// sdk-core's runtime, built on first use by [`core_runtime`].
    core: OnceLock<temporalio_sdk_core::CoreRuntime>,
    /// The connection cache of [`crate::client`]; its type is the client's business.
    pub(crate) connections: Mutex<crate::connection::ConnectionMap>,
}

static CURRENT: AtomicPtr<Generation> = AtomicPtr::new(std::ptr::null_mut());
/// Generations built so far in this address space (1 in a process that never forked).
static GENERATIONS: AtomicUsize = AtomicUsize::new(0);

fn runtime_threads() -> usize {
    std::env::var("NOMAD_ACTIONS_RUNTIME_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_RUNTIME_THREADS)
}

fn build_generation(pid: u32) -> Generation {
    let threads = runtime_threads();
    let started = std::sync::Arc::new((Mutex::new(0usize), std::sync::Condvar::new()));
    let counter = started.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(threads)
        .on_thread_start(move || {
            let (count, ready) = &*counter;
            *count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
            ready.notify_all();
        })
        .build()
        .expect("the tokio runtime starts");
    // Return a runtime whose worker threads run (and carry their names), not one whose
    // threads the OS has yet to schedule; bounded, since nothing depends on it.
    let (count, ready) = &*started;
    let guard = count.lock().unwrap_or_else(|p| p.into_inner());
    let _ = ready.wait_timeout_while(guard, Duration::from_secs(2), |n| *n < threads);
    Generation {
        pid,
        runtime,
        core: OnceLock::new(),
        connections: Mutex::default(),
    }
}

/// The generation of this process, built on first use (also right after a fork).
///
/// Lock-free on purpose: a lock held by a parent thread at the moment of the fork stays
/// locked forever in the child.
pub fn generation() -> &'static Generation {
    let pid = std::process::id();
    let current = CURRENT.load(Ordering::Acquire);
    // SAFETY: generations are leaked, never freed, so any pointer ever stored stays valid.
    if let Some(generation) = unsafe { current.as_ref() }
        && generation.pid == pid
    {
        return generation;
    }
    let fresh = Box::into_raw(Box::new(build_generation(pid)));
    match CURRENT.compare_exchange(current, fresh, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            GENERATIONS.fetch_add(1, Ordering::Relaxed);
            // SAFETY: just stored, and never freed.
            unsafe { &*fresh }
        }
        Err(_) => {
            // Another thread of this process won the race: use its generation. Ours has
            // never run anything; shut it down without waiting, since this may run inside
            // an async context, where a blocking drop of a runtime panics.
            // SAFETY: `fresh` came from Box::into_raw above and was never shared.
            let Generation { runtime, .. } = *unsafe { Box::from_raw(fresh) };
            runtime.shutdown_background();
            generation()
        }
    }
}

/// How many runtimes this address space has built: 1 in a process that never forked, one
/// more in each forked child that used the engine (tests of fork safety read it).
#[pyfunction]
pub fn runtime_generations() -> usize {
    GENERATIONS.load(Ordering::Relaxed)
}

/// The runtime of this process (a fresh one in a forked child).
pub fn runtime() -> &'static Runtime {
    &generation().runtime
}

/// pyo3-async-runtimes' view of our runtime: Python awaitables resolve on the runtime of
/// the current [`Generation`], never on one that a fork left without threads.
pub struct NomadRuntime;

// Task-local asyncio event loop and contextvars of a Rust future awaited from Python.
tokio::task_local! {
    static TASK_LOCALS: OnceCell<TaskLocals>;
}

/// `tokio::task::JoinError` seen through pyo3-async-runtimes' trait (orphan rule).
pub struct NomadJoinError(tokio::task::JoinError);

impl JoinError for NomadJoinError {
    fn is_panic(&self) -> bool {
        self.0.is_panic()
    }

    fn into_panic(self) -> Box<dyn Any + Send + 'static> {
        self.0.into_panic()
    }
}

type Joined = Pin<Box<dyn Future<Output = Result<(), NomadJoinError>> + Send>>;

impl GenericRuntime for NomadRuntime {
    type JoinError = NomadJoinError;
    type JoinHandle = Joined;

    fn spawn<F>(fut: F) -> Self::JoinHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let handle = runtime().spawn(fut);
        Box::pin(async move { handle.await.map_err(NomadJoinError) })
    }

    fn spawn_blocking<F>(f: F) -> Self::JoinHandle
    where
        F: FnOnce() + Send + 'static,
    {
        let handle = runtime().spawn_blocking(f);
        Box::pin(async move { handle.await.map_err(NomadJoinError) })
    }
}

impl ContextExt for NomadRuntime {
    fn scope<F, R>(locals: TaskLocals, fut: F) -> Pin<Box<dyn Future<Output = R> + Send>>
    where
        F: Future<Output = R> + Send + 'static,
    {
        let cell = OnceCell::new();
        let _ = cell.set(locals);
        Box::pin(TASK_LOCALS.scope(cell, fut))
    }

    fn get_task_locals() -> Option<TaskLocals> {
        TASK_LOCALS
            .try_with(|c| c.get().cloned())
            .unwrap_or_default()
    }
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
        return pyo3_async_runtimes::generic::future_into_py::<NomadRuntime, _, _>(py, fut);
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
    use temporalio_common::telemetry::{Logger, TelemetryOptions};
    use temporalio_sdk_core::{CoreRuntime, RuntimeOptions};

    let generation = generation();
    generation.core.get_or_init(|| {
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
        let _guard = generation.runtime.enter();
        CoreRuntime::new_assume_tokio(options).expect("sdk-core runtime starts")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn racing_first_uses_agree_on_one_generation_even_inside_a_runtime() {
        // Some threads ask from inside another runtime's async context, where a loser of
        // the race must not drop its runtime the blocking way.
        let handles: Vec<_> = (0..8)
            .map(|i| {
                std::thread::spawn(move || {
                    if i % 2 == 0 {
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .build()
                            .unwrap();
                        rt.block_on(async { generation() as *const Generation as usize })
                    } else {
                        generation() as *const Generation as usize
                    }
                })
            })
            .collect();
        let seen: std::collections::HashSet<usize> =
            handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(seen.len(), 1);
        let generation = generation();
        assert_eq!(generation.pid, std::process::id());
        assert_eq!(generation.runtime.block_on(async { 40 + 2 }), 42);
    }
}

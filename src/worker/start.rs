//! Starting a worker while its server may not be up yet: the connect retry with a capped,
//! doubling back-off, cancellable by a shutdown that comes first.
//!
//! Once running, a lost server is sdk-core's to handle (its pollers retry); this covers only
//! the first contact, where upstream's worker would exit and leave it to the supervisor.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pyo3::prelude::*;
use tokio::sync::Notify;

use crate::errors::EngineError;

/// The first delay between attempts; it doubles after each one.
pub(crate) const INITIAL_DELAY: Duration = Duration::from_secs(1);
/// The longest delay between attempts.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(30);

/// The delay after failed attempt number `attempt` (1-based): 1 s, 2 s, 4 s, ... capped at
/// [`MAX_DELAY`].
pub(crate) fn backoff(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    INITIAL_DELAY
        .saturating_mul(1u32 << doublings)
        .min(MAX_DELAY)
}

/// Cancels a worker's start: `Worker.shutdown()` before the server answered. Set once,
/// never reset.
#[pyclass(module = "nomad_actions._core", frozen)]
#[derive(Default)]
pub struct StartCancel {
    cancelled: AtomicBool,
    notify: Notify,
}

impl StartCancel {
    /// Resolves once cancelled (at once if already).
    async fn wait(&self) {
        let notified = self.notify.notified();
        if self.cancelled.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }
}

#[pymethods]
impl StartCancel {
    #[new]
    fn py_new() -> Self {
        Self::default()
    }

    /// Cancel the start: a waiting `WorkerRef.create` returns None.
    fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Whether `cancel` was called.
    #[getter]
    fn cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }
}

/// Log a failed attempt the way the Python worker always has (its tests and operators
/// read this line), through Python's `logging` so handlers and levels apply.
fn log_attempt(address: &str, task_queue: &str, attempt: u32, err: &EngineError, delay: Duration) {
    Python::attach(|py| {
        let logged = py
            .import("logging")
            .and_then(|logging| logging.call_method1("getLogger", ("nomad_actions.worker",)))
            .and_then(|logger| {
                logger.call_method1(
                    "warning",
                    (
                        "Cannot reach Temporal at %s for task queue %s (attempt %d): %s; \
                         retrying in %g s",
                        address,
                        task_queue,
                        attempt,
                        err.to_string(),
                        delay.as_secs_f64(),
                    ),
                )
            });
        if let Err(err) = logged {
            err.print(py);
        }
    });
}

/// Run `attempt` until it succeeds, fails with anything but a connection error, or
/// `cancel` is set; between attempts wait [`backoff`]. `None` when cancelled.
pub(crate) async fn with_retry<T, F, Fut>(
    cancel: Arc<Py<StartCancel>>,
    address: &str,
    task_queue: &str,
    mut attempt: F,
) -> Result<Option<T>, EngineError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, EngineError>>,
{
    let cancel = cancel.get();
    let mut number = 0u32;
    loop {
        if cancel.cancelled() {
            return Ok(None);
        }
        number += 1;
        let err = match attempt().await {
            Ok(value) => return Ok(Some(value)),
            Err(err @ EngineError::Connect { .. }) => err,
            Err(err) => return Err(err),
        };
        if cancel.cancelled() {
            return Ok(None);
        }
        let delay = backoff(number);
        log_attempt(address, task_queue, number, &err, delay);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = cancel.wait() => return Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errors::ConnectKind;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn backoff_doubles_from_one_second_and_stops_at_thirty() {
        let delays: Vec<u64> = (1..=8).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(backoff(u32::MAX), MAX_DELAY);
    }

    fn refused() -> EngineError {
        EngineError::connect("http://x:1", ConnectKind::Refused, None, "refused".into())
    }

    #[test]
    fn retries_connection_errors_and_is_cancelled_while_waiting() {
        Python::initialize();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let cancel = Arc::new(Python::attach(|py| {
            Py::new(py, StartCancel::default()).unwrap()
        }));
        let attempts = Arc::new(AtomicU32::new(0));
        // Two refusals, then success after the two waits (1 s + 2 s, real time).
        let counted = attempts.clone();
        let started = rt.block_on(async { tokio::time::Instant::now() });
        let out = rt.block_on(with_retry(cancel.clone(), "x:1", "q", || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move { if n < 2 { Err(refused()) } else { Ok(n) } }
        }));
        assert_eq!(out.unwrap(), Some(2));
        let waited = rt.block_on(async { tokio::time::Instant::now() }) - started;
        assert!(waited >= Duration::from_secs(3), "{waited:?}");

        // A configuration error is not retried.
        let out: Result<Option<()>, _> =
            rt.block_on(with_retry(cancel.clone(), "x:1", "q", || async {
                Err(EngineError::Config("bad".into()))
            }));
        assert!(matches!(out, Err(EngineError::Config(_))));

        // Cancelled during the wait: None, without another attempt.
        attempts.store(0, Ordering::SeqCst);
        let counted = attempts.clone();
        let canceller = cancel.clone();
        let out: Result<Option<()>, _> = rt.block_on(async move {
            let retry = with_retry(cancel.clone(), "x:1", "q", || {
                counted.fetch_add(1, Ordering::SeqCst);
                async { Err(refused()) }
            });
            let stop = async {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                canceller.get().cancel();
                std::future::pending::<()>().await;
            };
            tokio::select! { out = retry => out, _ = stop => unreachable!() }
        });
        assert!(matches!(out, Ok(None)));
        assert_eq!(
            attempts.load(Ordering::SeqCst),
            2,
            "1 s wait, attempt 2, cancelled in the 2 s wait"
        );
    }
}

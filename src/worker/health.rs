//! The worker's health endpoint, `GET /health`, as upstream NOMAD's workers serve it for the
//! distro's `curl --fail http://localhost:8080/health` probe: `200 OK` while the worker works,
//! `503 UNHEALTHY` otherwise.
//!
//! It is served from Rust on the tokio runtime, so it answers while Python is busy; but a
//! worker whose Python side cannot run is not healthy, so a thread of its own takes the GIL
//! every [`PING_INTERVAL`] and the endpoint reports 503 once that has not succeeded for
//! [`PYTHON_STALE_AFTER`] (a C call holding the GIL, a deadlocked interpreter). A stopped
//! process (SIGSTOP) does not answer at all, which the probe's timeout turns into a failure.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pyo3::Python;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use crate::errors::EngineError;
use crate::runtime::runtime;

/// How often the health thread takes the GIL.
const PING_INTERVAL: Duration = Duration::from_millis(500);
/// How long the GIL may stay out of reach before the worker reads as unhealthy.
const PYTHON_STALE_AFTER: Duration = Duration::from_secs(3);
/// How long a client may take to send its request line and headers.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of a request we read; a health probe sends a few hundred bytes.
const MAX_REQUEST: usize = 8192;

/// What the endpoint reports; updated by the poll loops and shutdown.
pub(crate) struct HealthState {
    started: Instant,
    /// Both poll loops are running (set when `run` starts, cleared when either ends).
    polling: AtomicBool,
    /// Shutdown was initiated: the worker takes no new tasks while it drains.
    draining: AtomicBool,
    /// Milliseconds since `started` at which the health thread last held the GIL.
    python_seen_millis: AtomicU64,
    /// Tells the health thread to end (the worker's run is over).
    stop_pinging: AtomicBool,
}

impl HealthState {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            polling: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            python_seen_millis: AtomicU64::new(0),
            stop_pinging: AtomicBool::new(false),
        })
    }

    fn now_millis(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The poll loops started (`running`) or one of them ended.
    pub(crate) fn set_polling(&self, running: bool) {
        if running {
            self.python_seen_millis
                .store(self.now_millis(), Ordering::Release);
        }
        self.polling.store(running, Ordering::Release);
    }

    pub(crate) fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Why the worker is unhealthy, or None when it is healthy.
    pub(crate) fn problem(&self) -> Option<&'static str> {
        if self.draining.load(Ordering::Acquire) {
            return Some("draining");
        }
        if !self.polling.load(Ordering::Acquire) {
            return Some("not polling");
        }
        let seen = self.python_seen_millis.load(Ordering::Acquire);
        if self.now_millis().saturating_sub(seen) > PYTHON_STALE_AFTER.as_millis() as u64 {
            return Some("python unresponsive");
        }
        None
    }

    /// Take the GIL every [`PING_INTERVAL`] on a thread of its own until the run is over.
    /// A plain thread, not a tokio task: it blocks while the GIL is out of reach.
    pub(crate) fn start_pinging(self: &Arc<Self>) {
        let state = self.clone();
        let spawned = std::thread::Builder::new()
            .name("nomad-actions-health".into())
            .spawn(move || {
                while !state.stop_pinging.load(Ordering::Acquire) {
                    // None while the interpreter shuts down: then there is nothing to watch.
                    if Python::try_attach(|_py| ()).is_none() {
                        break;
                    }
                    state
                        .python_seen_millis
                        .store(state.now_millis(), Ordering::Release);
                    std::thread::sleep(PING_INTERVAL);
                }
            });
        if spawned.is_err() {
            // Without the thread the endpoint would soon report 503; say so instead of hiding it.
            eprintln!("nomad-actions: cannot start the health check thread");
        }
    }

    pub(crate) fn stop_pinging(&self) {
        self.stop_pinging.store(true, Ordering::Release);
    }
}

/// A running health endpoint; stops serving when dropped.
pub(crate) struct HealthServer {
    pub(crate) address: SocketAddr,
    task: AbortHandle,
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Bind `address` (`host:port`) and serve `/health` from `state` until the server is dropped.
pub(crate) fn serve(address: &str, state: Arc<HealthState>) -> Result<HealthServer, EngineError> {
    let listener = std::net::TcpListener::bind(address)
        .and_then(|l| l.set_nonblocking(true).map(|_| l))
        .map_err(|e| {
            EngineError::Config(format!(
                "cannot serve the health check at {address}: {e} (change the worker's \
                 healthcheck_port / --health-port, or turn it off with --no-health)"
            ))
        })?;
    let bound = listener.local_addr().map_err(|e| {
        EngineError::Config(format!("cannot serve the health check at {address}: {e}"))
    })?;
    let _guard = runtime().enter();
    let listener = TcpListener::from_std(listener).map_err(|e| {
        EngineError::Config(format!("cannot serve the health check at {address}: {e}"))
    })?;
    let task = runtime().spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of file descriptors, say: try again shortly rather than end the server.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &state)).await;
            });
        }
    });
    Ok(HealthServer {
        address: bound,
        task: task.abort_handle(),
    })
}

/// Read one request and answer it; the connection is closed afterwards.
async fn answer(mut stream: TcpStream, state: &HealthState) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < MAX_REQUEST {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&chunk[..n]);
    }
    let (status, body) = respond(&request, state);
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if !request.starts_with(b"HEAD ") {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

/// The status line and body for a request.
fn respond(request: &[u8], state: &HealthState) -> (&'static str, String) {
    let line = request.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let method = parts.next().unwrap_or_default();
    let path = parts.next().unwrap_or_default();
    let path = path.split(|b| *b == b'?').next().unwrap_or_default();
    if path != b"/health" {
        return (
            "404 Not Found",
            "not found; the health check is GET /health".into(),
        );
    }
    if method != b"GET" && method != b"HEAD" {
        return ("405 Method Not Allowed", "use GET /health".into());
    }
    match state.problem() {
        None => ("200 OK", "OK".into()),
        Some(_) => ("503 Service Unavailable", "UNHEALTHY".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_only_while_polling_not_draining_and_python_seen() {
        let state = HealthState::new();
        assert_eq!(state.problem(), Some("not polling"));
        state.set_polling(true);
        assert_eq!(state.problem(), None);
        assert_eq!(respond(b"GET /health HTTP/1.1\r\n\r\n", &state).0, "200 OK");
        state.python_seen_millis.store(0, Ordering::Release);
        // Pretend the last GIL ping is older than the limit.
        let state2 = HealthState {
            started: Instant::now() - PYTHON_STALE_AFTER - Duration::from_secs(1),
            polling: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            python_seen_millis: AtomicU64::new(0),
            stop_pinging: AtomicBool::new(false),
        };
        assert_eq!(state2.problem(), Some("python unresponsive"));
        state.set_draining();
        assert_eq!(state.problem(), Some("draining"));
        assert_eq!(
            respond(b"GET /health HTTP/1.1\r\n\r\n", &state).0,
            "503 Service Unavailable"
        );
    }

    #[test]
    fn other_paths_and_methods() {
        let state = HealthState::new();
        state.set_polling(true);
        assert_eq!(
            respond(b"GET / HTTP/1.1\r\n\r\n", &state).0,
            "404 Not Found"
        );
        assert_eq!(
            respond(b"POST /health HTTP/1.1\r\n\r\n", &state).0,
            "405 Method Not Allowed"
        );
        assert_eq!(
            respond(b"GET /health?x=1 HTTP/1.1\r\n\r\n", &state).0,
            "200 OK"
        );
        assert_eq!(respond(b"", &state).0, "404 Not Found");
    }
}

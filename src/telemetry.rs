//! Prometheus metrics through sdk-core's own exporter.
//!
//! Core records its metrics (slots, polls, sticky cache, latencies, completions) into the meter
//! of the `CoreRuntime` a worker is created on, so the exporter must exist before that runtime
//! is built: [`start_prometheus`] is called before the first worker of the process. The options
//! are those temporalio's `PrometheusConfig` uses by default (no `_total` or unit suffixes,
//! durations in milliseconds), so the metric names are the official worker's and existing
//! dashboards keep working.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use pyo3::prelude::*;

use temporalio_common::telemetry::metrics::CoreMeter;
use temporalio_common::telemetry::{PrometheusExporterOptions, start_prometheus_metric_exporter};

use crate::errors::EngineError;
use crate::runtime::runtime;

/// The exporter of this process: its requested and bound addresses, and its meter.
struct Exporter {
    requested: String,
    bound: SocketAddr,
    meter: Arc<dyn CoreMeter>,
}

static EXPORTER: Mutex<Option<Exporter>> = Mutex::new(None);

/// Set once the core runtime has been built: from then on its meter can no longer change.
static RUNTIME_BUILT: OnceLock<bool> = OnceLock::new();

/// Serve Prometheus metrics at `bind_address` (`host:port`, port 0 for any free one) and return
/// the address bound. Starting it again with the same address returns the running one.
///
/// Errors name the address: one that does not parse, cannot be bound, or a second, different
/// address in a process whose workers already record into the first exporter.
pub fn start_prometheus(bind_address: &str) -> Result<SocketAddr, EngineError> {
    let mut exporter = EXPORTER.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(running) = exporter.as_ref() {
        if running.requested == bind_address || running.bound.to_string() == bind_address {
            return Ok(running.bound);
        }
        return Err(EngineError::Config(format!(
            "Prometheus metrics are already served at {} in this process; cannot serve them at \
             {bind_address:?} as well",
            running.bound
        )));
    }
    if RUNTIME_BUILT.get().is_some() {
        return Err(EngineError::Config(format!(
            "cannot serve Prometheus metrics at {bind_address:?}: a worker already runs in this \
             process without metrics (set the metrics address before the first worker starts)"
        )));
    }
    let socket_addr: SocketAddr = bind_address.parse().map_err(|e| {
        EngineError::Config(format!(
            "Prometheus bind address {bind_address:?} is not host:port ({e})"
        ))
    })?;
    let options = PrometheusExporterOptions::builder()
        .socket_addr(socket_addr)
        .build();
    // The exporter spawns its HTTP server on the current runtime.
    let _guard = runtime().enter();
    let started = start_prometheus_metric_exporter(options).map_err(|e| {
        EngineError::Config(format!(
            "cannot serve Prometheus metrics at {bind_address}: {e}"
        ))
    })?;
    let bound = started.bound_addr;
    *exporter = Some(Exporter {
        requested: bind_address.to_string(),
        bound,
        meter: started.meter,
    });
    Ok(bound)
}

/// The meter for the core runtime, marking the runtime as built (called once, by
/// [`crate::runtime::core_runtime`]).
pub(crate) fn meter_for_core_runtime() -> Option<Arc<dyn CoreMeter>> {
    let _ = RUNTIME_BUILT.set(true);
    let exporter = EXPORTER.lock().unwrap_or_else(|p| p.into_inner());
    exporter.as_ref().map(|e| e.meter.clone())
}

/// The meter a new Temporal connection records its RPC metrics (`temporal_request`,
/// `temporal_long_request`, ...) into: the core runtime's, once an exporter runs; None without
/// one (a plain client process never builds the core runtime for this).
pub(crate) fn meter_for_connection() -> Option<temporalio_common::telemetry::metrics::TemporalMeter>
{
    let running = EXPORTER.lock().unwrap_or_else(|p| p.into_inner()).is_some();
    if !running {
        return None;
    }
    crate::runtime::core_runtime()
        .telemetry()
        .get_temporal_metric_meter()
}

/// Serve sdk-core's Prometheus metrics at `bind_address` (`host:port`; port 0 picks a free
/// one) for every worker of this process; returns the address bound. Must come before the
/// first worker starts.
#[pyfunction]
pub fn start_metrics_exporter(bind_address: &str) -> PyResult<String> {
    Ok(start_prometheus(bind_address)?.to_string())
}

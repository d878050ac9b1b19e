//! nomad-actions: the Rust engine behind NOMAD Actions.
//!
//! This crate is the native module `nomad_actions._core` (documented for Python in
//! `python/nomad_actions/_core.pyi`). This file is the only place where Python-visible things
//! are registered; the modules below hold the work:
//!
//! - [`runtime`]: the tokio runtime per process generation (fork-safe), the one sync/async
//!   bridge every call goes through.
//! - [`connection`]: the connection configuration, TLS, the connection cache, the RPC bound.
//! - [`client`]: the Temporal client's RPCs, their values, and `ClientRef`.
//! - [`worker`]: the sdk-core worker and its poll loops (start with retry, workflows with
//!   their deadlock timer, activities with their registry and shutdown timer, /health).
//! - [`payload`] (values <-> JSON payloads), [`codec`] (upstream's Fernet encryption),
//!   [`telemetry`] (sdk-core's Prometheus exporter), [`errors`] (errors -> Python
//!   exceptions).
//!
//! Dependencies point one way: `payload` <- `errors` <- `connection` <- `codec` <- `client`,
//! `worker` (only `runtime` and `connection` know each other: the connection cache lives in
//! the runtime's generation, so that a forked child starts with an empty one).

pub mod client;
pub mod codec;
pub mod connection;
pub mod errors;
pub mod interrupt;
pub mod payload;
pub mod runtime;
pub mod telemetry;
pub mod worker;

use pyo3::prelude::*;

/// The native module. Only the Python wrapper modules import it.
#[pymodule]
pub mod _core {
    #[pymodule_export]
    use crate::client::{ClientRef, connection_count, unix_time};
    #[pymodule_export]
    use crate::codec::PayloadCodecRef;
    #[pymodule_export]
    use crate::interrupt::interrupt_thread;
    #[pymodule_export]
    use crate::runtime::runtime_generations;
    #[pymodule_export]
    use crate::telemetry::start_metrics_exporter;
    #[pymodule_export]
    use crate::worker::{ActivityReply, LoopLane, Reply, StartCancel, WorkerRef};

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        Ok(())
    }
    use pyo3::prelude::*;
}

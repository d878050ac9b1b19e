//! nomad-actions: the Rust engine behind NOMAD Actions.
//!
//! This crate is the native module `nomad_actions._core`. It is the only place where
//! Python-visible things are registered; the modules below hold the work:
//! [`runtime`] (tokio runtime, sync/async bridge), [`client`] (Temporal client and
//! connection cache), [`payload`] (payload conversion) and [`errors`].

pub mod client;
pub mod codec;
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
    use crate::worker::{ActivityReply, WorkerRef};

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        Ok(())
    }
    use pyo3::prelude::*;
}

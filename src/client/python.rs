//! `ClientRef`, the Python handle to a [`Client`]: each method converts its arguments, runs
//! one client call on the runtime (bounded by the RPC timeout, see
//! [`crate::connection::bounded`]) and hands the typed result back, blocking or as an
//! awaitable. No logic of its own lives here.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use prost::Message;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use temporalio_common::protos::temporal::api::common::v1::Payload;

use super::{Client, StartRequest, now_secs};
use crate::connection::{ConnectionConfig, bounded, open_connections};
use crate::errors::EngineError;
use crate::payload::{Json, PayloadError};
use crate::runtime::call;

/// Python handle to a [`Client`]; every method takes `blocking` (sync API) or returns an
/// awaitable (async API).
#[pyclass(name = "ClientRef", module = "nomad_actions._core", frozen)]
pub struct ClientRef {
    inner: Client,
}

impl ClientRef {
    /// Run `op` (one RPC named `rpc`) with a clone of the client, bounded by the RPC timeout.
    fn rpc<'py, T, F, Fut>(
        &self,
        py: Python<'py>,
        blocking: bool,
        rpc: &'static str,
        op: F,
    ) -> PyResult<Bound<'py, PyAny>>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, EngineError>> + Send + 'static,
        T: for<'a> IntoPyObject<'a> + Send + 'static,
    {
        let config = self.inner.config.clone();
        let fut = op(self.inner.clone());
        call(py, blocking, async move {
            Ok(bounded(&config, rpc, fut).await?)
        })
    }
}

fn values(args: Vec<Json>) -> Vec<serde_json::Value> {
    args.into_iter().map(|j| j.0).collect()
}

#[pymethods]
impl ClientRef {
    #[new]
    fn new(config: ConnectionConfig) -> Self {
        ClientRef {
            inner: Client::new(config),
        }
    }

    /// Open (or reuse) the connection now; raises `TemporalConnectionError` if it fails.
    fn connect<'py>(&self, py: Python<'py>, blocking: bool) -> PyResult<Bound<'py, PyAny>> {
        self.rpc(py, blocking, "Connect", |c| async move {
            c.conn().await.map(|_| ())
        })
    }

    fn start_workflow<'py>(
        &self,
        py: Python<'py>,
        request: StartRequest,
        blocking: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.rpc(py, blocking, "StartWorkflowExecution", |c| async move {
            c.start_workflow(request).await
        })
    }

    fn describe<'py>(
        &self,
        py: Python<'py>,
        workflow_id: String,
        blocking: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.rpc(py, blocking, "DescribeWorkflowExecution", |c| async move {
            c.describe(&workflow_id).await
        })
    }

    /// Not bounded by the RPC timeout: it waits as long as the workflow runs, or `timeout`.
    #[pyo3(signature = (workflow_id, run_id, timeout, blocking))]
    fn result<'py>(
        &self,
        py: Python<'py>,
        workflow_id: String,
        run_id: Option<String>,
        timeout: Option<f64>,
        blocking: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let client = self.inner.clone();
        call(py, blocking, async move {
            let fut = client.result(&workflow_id, run_id);
            match timeout {
                None => Ok(fut.await?),
                Some(secs) => {
                    match tokio::time::timeout(Duration::from_secs_f64(secs.max(0.0)), fut).await {
                        Ok(out) => Ok(out?),
                        Err(_) => Err(EngineError::Timeout(secs, workflow_id).into()),
                    }
                }
            }
        })
    }

    fn cancel<'py>(
        &self,
        py: Python<'py>,
        workflow_id: String,
        reason: String,
        blocking: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.rpc(
            py,
            blocking,
            "RequestCancelWorkflowExecution",
            |c| async move { c.cancel(&workflow_id, reason).await },
        )
    }

    fn terminate<'py>(
        &self,
        py: Python<'py>,
        workflow_id: String,
        reason: String,
        blocking: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.rpc(py, blocking, "TerminateWorkflowExecution", |c| async move {
            c.terminate(&workflow_id, reason).await
        })
    }

    fn signal<'py>(
        &self,
        py: Python<'py>,
        workflow_id: String,
        signal_name: String,
        args: Vec<Json>,
        blocking: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let args = values(args);
        self.rpc(py, blocking, "SignalWorkflowExecution", |c| async move {
            c.signal(&workflow_id, signal_name, args).await
        })
    }

    fn query<'py>(
        &self,
        py: Python<'py>,
        workflow_id: String,
        query_type: String,
        args: Vec<Json>,
        blocking: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let args = values(args);
        self.rpc(py, blocking, "QueryWorkflow", |c| async move {
            c.query(&workflow_id, query_type, args).await.map(Json)
        })
    }

    /// Not bounded as one call: each page is bounded inside (a scan of a large namespace
    /// takes many pages).
    fn list<'py>(
        &self,
        py: Python<'py>,
        query: String,
        memo_filter: HashMap<String, Json>,
        limit: usize,
        blocking: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let client = self.inner.clone();
        let filter = memo_filter.into_iter().map(|(k, v)| (k, v.0)).collect();
        call(py, blocking, async move {
            Ok(client.list(query, filter, limit).await?)
        })
    }

    fn list_page<'py>(
        &self,
        py: Python<'py>,
        query: String,
        page_size: usize,
        page_token: Vec<u8>,
        blocking: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.rpc(py, blocking, "ListWorkflowExecutions", |c| async move {
            c.list_page(query, page_size, page_token).await
        })
    }

    fn count<'py>(
        &self,
        py: Python<'py>,
        query: String,
        blocking: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.rpc(py, blocking, "CountWorkflowExecutions", |c| async move {
            c.count(query).await
        })
    }

    fn search_attributes<'py>(
        &self,
        py: Python<'py>,
        blocking: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.rpc(py, blocking, "ListSearchAttributes", |c| async move {
            c.search_attributes().await
        })
    }

    fn add_search_attributes<'py>(
        &self,
        py: Python<'py>,
        attributes: HashMap<String, i32>,
        blocking: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.rpc(py, blocking, "AddSearchAttributes", |c| async move {
            c.add_search_attributes(attributes).await
        })
    }

    /// Decrypt serialized `Payload`s with this configuration's codec (a temporalio
    /// `PayloadCodec` in Python uses it, e.g. to replay histories); without a codec, and for
    /// payloads that are not encrypted, the bytes come back as they are.
    fn decode_payloads(
        &self,
        py: Python<'_>,
        payloads: Vec<Vec<u8>>,
    ) -> PyResult<Vec<Py<PyBytes>>> {
        payloads
            .into_iter()
            .map(|bytes| {
                let decoded = match &self.inner.codec {
                    None => bytes,
                    Some(codec) => {
                        let payload = Payload::decode(bytes.as_slice()).map_err(|e| {
                            pyo3::exceptions::PyValueError::new_err(format!(
                                "not a serialized Payload: {e}"
                            ))
                        })?;
                        let plain = codec.decode(payload).map_err(|e| EngineError::Payload {
                            context: "decoding a history payload".into(),
                            source: PayloadError::from(e),
                        })?;
                        plain.encode_to_vec()
                    }
                };
                Ok(PyBytes::new(py, &decoded).unbind())
            })
            .collect()
    }

    /// The address this handle talks to (for error messages).
    #[getter]
    fn target(&self) -> String {
        self.inner.config.target()
    }
}

/// Seconds since the epoch (used by Python to stamp memos consistently with Rust).
#[pyfunction]
pub fn unix_time() -> f64 {
    now_secs()
}

/// How many configurations currently hold an open connection.
#[pyfunction]
pub fn connection_count() -> usize {
    open_connections()
}

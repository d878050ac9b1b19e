//! Workflow activations: poll from core, run through the Python workflow bridge on one of
//! the worker's Python threads, complete with the bytes it replies.

use std::sync::{Arc, Mutex};

use prost::Message;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use temporalio_common::protos::coresdk::workflow_activation::WorkflowActivation;
use temporalio_common::protos::coresdk::workflow_completion::{
    self, WorkflowActivationCompletion, workflow_activation_completion,
};
use temporalio_common::protos::temporal::api::failure::v1::Failure;
use temporalio_sdk_core::{PollError, Worker as CoreWorker};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::python_threads::{self, PythonThreads};
use crate::codec::FernetCodec;
use crate::errors::EngineError;

/// A failed completion for `run_id`: core fails the workflow task, evicts the run and the
/// server retries the task (replaying from history).
fn failed(run_id: String, message: String) -> WorkflowActivationCompletion {
    WorkflowActivationCompletion {
        run_id,
        status: Some(workflow_activation_completion::Status::Failed(
            workflow_completion::Failure {
                failure: Some(Failure {
                    message,
                    source: "nomad-actions".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

/// The bridge's way back, passed with each activation: called once with the serialized
/// completion; later calls are ignored and return `False`.
#[pyclass(module = "nomad_actions._core", frozen)]
pub(crate) struct Reply {
    tx: Mutex<Option<oneshot::Sender<Answer>>>,
}

/// A serialized completion, or why there is none.
type Answer = Result<Vec<u8>, String>;

impl Reply {
    fn send(&self, answer: Answer) -> bool {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        tx.is_some_and(|tx| tx.send(answer).is_ok())
    }
}

#[pymethods]
impl Reply {
    fn __call__(&self, py: Python<'_>, completion: &[u8]) -> bool {
        let completion = completion.to_vec();
        // Waking the task that waits for this can get the calling thread preempted on a
        // busy machine; it must not hold the GIL meanwhile, or every Python thread waits.
        py.detach(|| self.send(Ok(completion)))
    }
}

/// Run one activation through the bridge. Never fails: any error becomes a failed
/// completion that still carries the activation's run id (core needs it).
async fn activate(
    bridge: Arc<Py<PyAny>>,
    threads: PythonThreads,
    codec: Option<FernetCodec>,
    mut activation: WorkflowActivation,
) -> WorkflowActivationCompletion {
    let run_id = activation.run_id.clone();
    if let Some(codec) = &codec
        && let Err(err) = codec.decode_message(&mut activation).await
    {
        return failed(
            run_id,
            format!("Failed decoding workflow activation: {err}"),
        );
    }
    let bytes = activation.encode_to_vec();
    let (tx, mut rx) = oneshot::channel();
    let reply = Reply {
        tx: Mutex::new(Some(tx)),
    };
    // The workflow code runs on one of the Python threads. The completion comes back
    // through `reply`: from that thread when the code yields, or from the bridge's watchdog
    // when it overruns the deadlock timeout (the thread then stays in the workflow code
    // until it lets go, and the others carry on).
    threads.submit(move |py| {
        // Should this fail, `reply` is dropped unanswered and the activation fails below.
        let Ok(reply) = Bound::new(py, reply) else {
            return;
        };
        if let Err(err) = bridge.call1(py, (PyBytes::new(py, &bytes), &reply)) {
            reply
                .get()
                .send(Err(format!("workflow bridge failed: {err}")));
        }
    });
    let answer = loop {
        tokio::select! {
            out = &mut rx => break out.unwrap_or_else(|_| {
                Err("workflow bridge returned without a completion".to_string())
            }),
            _ = tokio::time::sleep(python_threads::STALL) => threads.unstall(),
        }
    };
    let mut completion = match answer {
        Ok(out) => match WorkflowActivationCompletion::decode(out.as_slice()) {
            Ok(c) => c,
            Err(e) => failed(
                run_id.clone(),
                format!("workflow bridge returned a malformed completion: {e}"),
            ),
        },
        Err(message) => failed(run_id.clone(), message),
    };
    if completion.run_id.is_empty() {
        completion.run_id = run_id.clone();
    }
    if let Some(codec) = &codec
        && let Err(err) = codec.encode_message(&mut completion).await
    {
        return failed(
            run_id,
            format!("Failed encoding workflow completion: {err}"),
        );
    }
    completion
}

/// Poll activations until core says it is shut down; each is processed in its own task so
/// different runs progress concurrently (core never hands out two for one run at once).
pub(super) async fn poll_loop(
    core: Arc<CoreWorker>,
    codec: Option<FernetCodec>,
    bridge: Arc<Py<PyAny>>,
    max_threads: usize,
) -> Result<(), EngineError> {
    let threads = PythonThreads::new("nomad-workflows", max_threads);
    let mut tasks = JoinSet::new();
    let mut outcome = Ok(());
    loop {
        let activation = match core.poll_workflow_activation().await {
            Ok(a) => a,
            Err(PollError::ShutDown) => break,
            Err(PollError::TonicError(status)) => {
                outcome = Err(EngineError::Rpc {
                    rpc: "PollWorkflowTaskQueue",
                    code: status.code(),
                    message: status.message().to_string(),
                });
                break;
            }
        };
        let core = core.clone();
        let bridge = bridge.clone();
        let codec = codec.clone();
        let threads = threads.clone();
        tasks.spawn(async move {
            let completion = activate(bridge, threads, codec, activation).await;
            if let Err(err) = core.complete_workflow_activation(completion).await {
                eprintln!("nomad-actions: completing a workflow activation failed: {err}");
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    // Activations already handed out must be completed before core can shut down.
    while tasks.join_next().await.is_some() {}
    threads.close();
    outcome
}

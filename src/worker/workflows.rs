//! Workflow activations: poll from core, run through the Python workflow bridge on a
//! blocking thread, complete with the bytes it returns.

use std::sync::Arc;

use prost::Message;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use temporalio_common::protos::coresdk::workflow_activation::WorkflowActivation;
use temporalio_common::protos::coresdk::workflow_completion::{
    self, WorkflowActivationCompletion, workflow_activation_completion,
};
use temporalio_common::protos::temporal::api::failure::v1::Failure;
use temporalio_sdk_core::{PollError, Worker as CoreWorker};
use tokio::task::JoinSet;

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

/// Run one activation through the bridge. Never fails: any error becomes a failed
/// completion that still carries the activation's run id (core needs it).
async fn activate(
    bridge: Arc<Py<PyAny>>,
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
    // The bridge blocks (it waits for the workflow code, up to the deadlock timeout), so it
    // runs on tokio's blocking pool, never on a runtime worker thread.
    let answer = tokio::task::spawn_blocking(move || {
        Python::attach(|py| -> PyResult<Vec<u8>> {
            let out = bridge.call1(py, (PyBytes::new(py, &bytes),))?;
            Ok(out.bind(py).extract::<&[u8]>()?.to_vec())
        })
    })
    .await;
    let mut completion = match answer {
        Ok(Ok(out)) => match WorkflowActivationCompletion::decode(out.as_slice()) {
            Ok(c) => c,
            Err(e) => failed(
                run_id.clone(),
                format!("workflow bridge returned a malformed completion: {e}"),
            ),
        },
        Ok(Err(err)) => failed(run_id.clone(), format!("workflow bridge failed: {err}")),
        Err(join) => failed(
            run_id.clone(),
            format!("workflow activation panicked: {join}"),
        ),
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
) -> Result<(), EngineError> {
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
        tasks.spawn(async move {
            let completion = activate(bridge, codec, activation).await;
            if let Err(err) = core.complete_workflow_activation(completion).await {
                eprintln!("nomad-actions: completing a workflow activation failed: {err}");
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    // Activations already handed out must be completed before core can shut down.
    while tasks.join_next().await.is_some() {}
    outcome
}

//! Workflow activations: poll from core, run through the Python workflow bridge on one of
//! the worker's Python threads, complete with the bytes it replies. The deadlock timeout of
//! an activation lives here too, in its [`Reply`] (timed by [`super::deadlines`]): the timer
//! builds the failed completion and interrupts the stuck thread (through `pyo3::ffi`);
//! Python is called only to capture the thread's stack and forget the run.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyType};
use temporalio_common::protos::coresdk::workflow_activation::WorkflowActivation;
use temporalio_common::protos::coresdk::workflow_completion::{
    self, WorkflowActivationCompletion, workflow_activation_completion,
};
use temporalio_common::protos::temporal::api::failure::v1::{
    ApplicationFailureInfo, Failure, failure,
};
use temporalio_sdk_core::{PollError, Worker as CoreWorker};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::deadlines::{Deadlines, Key};
use super::python_threads::{self, PythonThreads};
use crate::codec::FernetCodec;
use crate::errors::EngineError;
use crate::interrupt::interrupt_thread;

const YEAR_SECONDS: f64 = 365.0 * 86_400.0;

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

/// A serialized completion, or why there is none.
type Answer = Result<Vec<u8>, String>;

/// Where a [`Reply`] delivers its answer.
enum Sink {
    /// To the Rust task waiting in [`activate`].
    Channel(oneshot::Sender<Answer>),
    /// To a Python callable (tests, the bridge's own evictions at shutdown).
    Python(Py<PyAny>),
}

/// What the deadlock timer and the thread running the activation agree on, under one lock.
/// The thread and the timer race for the answer: `close` (the code returned) and the
/// timer's abandonment decide it, and the timer's interrupt is only ever sent before
/// `close`, which clears one sent but not yet raised.
#[derive(Default)]
struct Watch {
    closed: bool,
    abandoned: bool,
    /// The Python thread ident of the thread running the activation.
    thread: u64,
    timer: Option<(Arc<Deadlines>, Key)>,
}

/// What the timer needs to answer for an activation that overran the deadlock timeout.
struct Overrun {
    timeout: f64,
    run_id: String,
    workflow_type: String,
    eviction: bool,
    /// `WorkflowBridge._deadlocked(run_id, workflow_type, thread, eviction) -> stack`: forgets the run and
    /// captures where the thread is stuck; Python only because only Python sees its frames.
    on_deadlock: Py<PyAny>,
    /// The exception class raised in the stuck thread (the bridge's `_InterruptDeadlockError`).
    interrupt: Py<PyType>,
}

/// The bridge's way back, passed with each activation: called once with the serialized
/// completion; later calls are ignored and return `False`. It also owns the activation's
/// deadlock timeout (started by `watch`): when the code does not yield in time, the timer
/// answers with the failed completion (or a successful one for an eviction) and interrupts
/// the thread.
#[pyclass(module = "nomad_actions._core", frozen)]
pub struct Reply {
    sink: Mutex<Option<Sink>>,
    watch: Mutex<Watch>,
}

impl Reply {
    fn with_sink(sink: Sink) -> Self {
        Reply {
            sink: Mutex::new(Some(sink)),
            watch: Mutex::new(Watch::default()),
        }
    }

    fn lock_watch(&self) -> std::sync::MutexGuard<'_, Watch> {
        self.watch.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Deliver `answer` unless one was delivered; true if this call delivered it.
    fn send(&self, py: Python<'_>, answer: Answer) -> bool {
        let sink = self.sink.lock().unwrap_or_else(|p| p.into_inner()).take();
        match sink {
            None => false,
            // Waking the task that waits for this can get the calling thread preempted on a
            // busy machine; it must not hold the GIL meanwhile, or every Python thread waits.
            Some(Sink::Channel(tx)) => py.detach(|| tx.send(answer).is_ok()),
            Some(Sink::Python(callable)) => {
                let bytes = match &answer {
                    Ok(bytes) => bytes.clone(),
                    Err(message) => failed(String::new(), message.clone()).encode_to_vec(),
                };
                match callable.call1(py, (PyBytes::new(py, &bytes),)) {
                    Ok(_) => true,
                    Err(err) => {
                        err.print(py);
                        false
                    }
                }
            }
        }
    }

    /// The timer fired: give up on the activation unless it returned, answer for it, and
    /// interrupt its thread.
    fn overran(&self, py: Python<'_>, overrun: &Overrun) {
        let thread = {
            let mut watch = self.lock_watch();
            if watch.closed {
                return; // it returned meanwhile and answers itself
            }
            watch.abandoned = true;
            watch.thread
        };
        let stack = overrun
            .on_deadlock
            .call1(
                py,
                (
                    &overrun.run_id,
                    &overrun.workflow_type,
                    thread,
                    overrun.eviction,
                ),
            )
            .and_then(|s| s.extract::<String>(py))
            .unwrap_or_else(|err| {
                // Still answer and interrupt: a missing stack only makes the failure poorer.
                err.print(py);
                String::new()
            });
        let completion = deadlock_completion(overrun, stack);
        // Answer first, then get the thread out: the run is already forgotten, so core can
        // go on with it (evict, retry the task) while the thread unwinds.
        self.send(py, Ok(completion.encode_to_vec()));
        let watch = self.lock_watch();
        if !watch.closed {
            // A class checked in `watch`; a thread that is gone needs no interrupt.
            let _ = interrupt_thread(thread, Some(overrun.interrupt.bind(py)));
        }
    }
}

/// What the deadlock timer answers: core fails the workflow task (TMPRL1101, as temporalio)
/// and evicts the run; an eviction that overran is reported done, so core can drop the run.
fn deadlock_completion(overrun: &Overrun, stack: String) -> WorkflowActivationCompletion {
    if overrun.eviction {
        return WorkflowActivationCompletion {
            run_id: overrun.run_id.clone(),
            status: Some(workflow_activation_completion::Status::Successful(
                workflow_completion::Success::default(),
            )),
            ..Default::default()
        };
    }
    let message = format!(
        "[TMPRL1101] Potential deadlock detected: workflow {} didn't yield within {} second(s).",
        overrun.workflow_type, overrun.timeout
    );
    let mut completion = failed(overrun.run_id.clone(), message);
    if let Some(workflow_activation_completion::Status::Failed(f)) = &mut completion.status
        && let Some(failure) = &mut f.failure
    {
        failure.stack_trace = stack;
        failure.failure_info = Some(failure::FailureInfo::ApplicationFailureInfo(
            ApplicationFailureInfo {
                r#type: "_DeadlockError".into(),
                ..Default::default()
            },
        ));
    }
    completion
}

#[pymethods]
impl Reply {
    /// A reply that delivers to a Python callable (tests; the bridge's evictions at shutdown).
    #[new]
    fn py_new(sink: Py<PyAny>) -> Self {
        Reply::with_sink(Sink::Python(sink))
    }

    fn __call__(&self, py: Python<'_>, completion: &[u8]) -> bool {
        self.send(py, Ok(completion.to_vec()))
    }

    /// Start the deadlock timeout for the activation running on the calling thread.
    #[pyo3(signature = (timeout, run_id, workflow_type, eviction, on_deadlock, interrupt))]
    #[allow(clippy::too_many_arguments)]
    fn watch(
        slf: &Bound<'_, Self>,
        timeout: f64,
        run_id: String,
        workflow_type: String,
        eviction: bool,
        on_deadlock: Py<PyAny>,
        interrupt: Py<PyType>,
    ) -> PyResult<()> {
        if !(timeout.is_finite() && timeout > 0.0) {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "deadlock timeout must be a positive number of seconds, not {timeout}"
            )));
        }
        if !interrupt
            .bind(slf.py())
            .is_subclass_of::<pyo3::exceptions::PyBaseException>()?
        {
            return Err(pyo3::exceptions::PyTypeError::new_err(
                "the deadlock interrupt must be an exception class",
            ));
        }
        // SAFETY: a plain query of the calling thread's ident. (`c_ulong` is u64 here but
        // u32 on Windows, hence the conversion.)
        #[allow(clippy::useless_conversion)]
        let thread = u64::from(unsafe { pyo3::ffi::PyThread_get_thread_ident() });
        let reply: Py<Reply> = slf.clone().unbind();
        let overrun = Overrun {
            timeout,
            run_id,
            workflow_type,
            eviction,
            on_deadlock,
            interrupt,
        };
        // (At most a year: an `Instant` that far ahead is as good as never.)
        let after = Duration::from_secs_f64(timeout.min(YEAR_SECONDS));
        let deadlines = Deadlines::get();
        // Fires on a thread of its own, which may wait a while for the GIL.
        let key = deadlines.add(after, move || {
            Python::attach(|py| reply.get().overran(py, &overrun));
        });
        let mut watch = slf.get().lock_watch();
        watch.thread = thread;
        if let Some((old_deadlines, old)) = watch.timer.replace((deadlines, key)) {
            old_deadlines.cancel(old);
        }
        Ok(())
    }

    /// The activation's code returned (or was interrupted). Returns True if the timer gave
    /// up on it meanwhile (it has answered; the caller only tears the instance down);
    /// clears an interrupt sent but not yet raised.
    fn close(&self) -> bool {
        let mut watch = self.lock_watch();
        watch.closed = true;
        if let Some((deadlines, key)) = watch.timer.take() {
            deadlines.cancel(key);
        }
        if watch.abandoned {
            // The GIL is held: this is a Python method call. Clearing cannot fail.
            let _ = interrupt_thread(watch.thread, None);
        }
        watch.abandoned
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
    let reply = Reply::with_sink(Sink::Channel(tx));
    // The workflow code runs on one of the Python threads. The completion comes back
    // through `reply`: from that thread when the code yields, or from the reply's deadlock
    // timer when it overruns (the thread then stays in the workflow code until it lets go,
    // and the others carry on).
    threads.submit(move |py| {
        // Should this fail, `reply` is dropped unanswered and the activation fails below.
        let Ok(reply) = Bound::new(py, reply) else {
            return;
        };
        if let Err(err) = bridge.call1(py, (PyBytes::new(py, &bytes), &reply)) {
            reply
                .get()
                .send(py, Err(format!("workflow bridge failed: {err}")));
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

#[cfg(test)]
mod tests {
    use super::*;
    use pyo3::types::PyList;

    fn overrun(eviction: bool, on_deadlock: Py<PyAny>) -> Overrun {
        Python::attach(|py| Overrun {
            timeout: 0.5,
            run_id: "run-1".into(),
            workflow_type: "Blocking".into(),
            eviction,
            on_deadlock,
            interrupt: py.get_type::<pyo3::exceptions::PyRuntimeError>().unbind(),
        })
    }

    /// A callable recording its calls in `calls` and returning a stack text.
    fn recorder<'py>(py: Python<'py>, calls: &Bound<'py, PyList>) -> Py<PyAny> {
        // Globals, not locals: the lambda looks `calls` up when it runs.
        let globals = pyo3::types::PyDict::new(py);
        globals.set_item("calls", calls).unwrap();
        py.eval(
            c"lambda *args: calls.append(args) or 'stack'",
            Some(&globals),
            None,
        )
        .unwrap()
        .unbind()
    }

    fn none(py: Python<'_>) -> Py<PyAny> {
        py.None()
    }

    #[test]
    fn a_deadlock_fails_the_task_with_temporalios_message_and_the_stack() {
        Python::initialize();
        Python::attach(|py| {
            let completion = deadlock_completion(&overrun(false, none(py)), "  at sleep".into());
            assert_eq!(completion.run_id, "run-1");
            let Some(workflow_activation_completion::Status::Failed(f)) = completion.status else {
                panic!("not failed: {completion:?}");
            };
            let failure = f.failure.unwrap();
            assert_eq!(
                failure.message,
                "[TMPRL1101] Potential deadlock detected: workflow Blocking didn't yield within \
                 0.5 second(s)."
            );
            assert_eq!(failure.stack_trace, "  at sleep");
            let Some(failure::FailureInfo::ApplicationFailureInfo(info)) = failure.failure_info
            else {
                panic!("no application failure info");
            };
            assert_eq!(info.r#type, "_DeadlockError");
        });
    }

    #[test]
    fn an_eviction_that_overran_is_reported_done() {
        Python::initialize();
        Python::attach(|py| {
            let completion = deadlock_completion(&overrun(true, none(py)), String::new());
            assert!(matches!(
                completion.status,
                Some(workflow_activation_completion::Status::Successful(_))
            ));
        });
    }

    #[test]
    fn the_timer_answers_only_for_an_activation_that_did_not_return() {
        Python::initialize();
        Python::attach(|py| {
            // Returned first: the timer neither answers nor calls back.
            let answers = PyList::empty(py);
            let calls = PyList::empty(py);
            let reply = Reply::py_new(answers.getattr("append").unwrap().unbind());
            assert!(!reply.close(), "not abandoned");
            reply.overran(py, &overrun(false, recorder(py, &calls)));
            assert_eq!((answers.len(), calls.len()), (0, 0));
            // Its own answer still goes through, exactly once.
            assert!(reply.__call__(py, b"x"));
            assert!(!reply.__call__(py, b"y"));
            assert_eq!(answers.len(), 1);

            // Overran: the timer calls back, answers once, and `close` then says abandoned.
            let answers = PyList::empty(py);
            let calls = PyList::empty(py);
            let reply = Reply::py_new(answers.getattr("append").unwrap().unbind());
            reply.overran(py, &overrun(false, recorder(py, &calls)));
            assert_eq!((answers.len(), calls.len()), (1, 1));
            let args: (String, String, u64, bool) = calls.get_item(0).unwrap().extract().unwrap();
            assert_eq!(
                (args.0.as_str(), args.1.as_str(), args.3),
                ("run-1", "Blocking", false)
            );
            let answer: Vec<u8> = answers.get_item(0).unwrap().extract().unwrap();
            let completion = WorkflowActivationCompletion::decode(answer.as_slice()).unwrap();
            let Some(workflow_activation_completion::Status::Failed(f)) = completion.status else {
                panic!("not failed");
            };
            assert_eq!(f.failure.unwrap().stack_trace, "stack");
            assert!(reply.close(), "abandoned");
            assert!(
                !reply.__call__(py, b"late"),
                "the thread's late answer is dropped"
            );
        });
    }
}

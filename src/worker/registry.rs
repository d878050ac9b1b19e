//! The registry of running activity tasks and the one graceful-shutdown timer.
//!
//! Each started task gets a [`Slot`] in [`Outstanding`] (task token -> slot). Whoever claims
//! a slot first completes the task with core: the bridge's `ActivityReply`, or the shutdown
//! [`drain`] failing a task that ignored its cancel; later answers are refused. The drain is
//! the only timer deciding the fate of running activities at shutdown (core's
//! `graceful_shutdown_period` is left unset): wait the grace period, cancel what is left,
//! fail what still does not answer within [`CANCEL_BOUND`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use temporalio_common::protos::coresdk::activity_result::{
    ActivityExecutionResult, activity_execution_result,
};
use tokio::sync::watch;

use super::activities::rust_failure;

/// How long activities cancelled at shutdown may take to answer before they are failed, so
/// core can finish its shutdown (their late outcome is then refused).
pub(super) const CANCEL_BOUND: Duration = Duration::from_secs(10);

/// One running task's right to be completed, claimed exactly once.
#[derive(Default)]
pub(super) struct Slot {
    answered: AtomicBool,
    /// The drain cancelled it for the worker's shutdown (core did not: it has no timer).
    shutdown_cancel: AtomicBool,
    /// It was started on the activity loop's lane, where its cancel must queue too.
    on_lane: bool,
}

impl Slot {
    /// Whether the task has been answered (by its reply or by the drain).
    pub(super) fn answered(&self) -> bool {
        self.answered.load(Ordering::Acquire)
    }

    /// A cancel for the worker's shutdown is reported as a retryable failure, as core does
    /// for the cancels it issues: the server then retries the activity at once, instead of
    /// after its timeout (a cancellation the server did not ask for is not recorded).
    pub(super) fn shutdown_outcome(
        &self,
        result: ActivityExecutionResult,
    ) -> ActivityExecutionResult {
        let cancelled = matches!(
            result.status,
            Some(activity_execution_result::Status::Cancelled(_))
        );
        if cancelled && self.shutdown_cancel.load(Ordering::Acquire) {
            return rust_failure(
                "Worker is shutting down and this activity did not complete in time".into(),
                "WorkerShutdown",
                false,
            );
        }
        result
    }
}

/// The running activity tasks (token -> slot), and the worker's shutdown signal.
pub(crate) struct Outstanding {
    tasks: Mutex<HashMap<Vec<u8>, Arc<Slot>>>,
    /// How many tasks are registered; the drain waits for it to reach 0.
    count: watch::Sender<usize>,
    /// Set once by `initiate_shutdown`; a watch keeps it for a loop that starts later.
    shutdown: watch::Sender<bool>,
}

impl Default for Outstanding {
    fn default() -> Self {
        Self {
            tasks: Mutex::default(),
            count: watch::Sender::new(0),
            shutdown: watch::Sender::new(false),
        }
    }
}

impl Outstanding {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Arc<Slot>>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register a started task (not on the lane).
    #[cfg(test)]
    pub(super) fn register(&self, token: Vec<u8>) -> Arc<Slot> {
        self.register_on(token, false)
    }

    /// Register a started task, noting whether its start went to the activity loop's lane.
    /// A token core hands out again (it does not) replaces the old slot, which can then no
    /// longer be claimed through the registry.
    pub(super) fn register_on(&self, token: Vec<u8>, on_lane: bool) -> Arc<Slot> {
        let slot = Arc::new(Slot {
            on_lane,
            ..Slot::default()
        });
        let mut tasks = self.lock();
        tasks.insert(token, slot.clone());
        self.count.send_replace(tasks.len());
        slot
    }

    /// True exactly once per slot: the caller then completes the task with core.
    pub(super) fn claim(&self, token: &[u8], slot: &Arc<Slot>) -> bool {
        if slot.answered.swap(true, Ordering::AcqRel) {
            return false;
        }
        let mut tasks = self.lock();
        if tasks.get(token).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            tasks.remove(token);
        }
        self.count.send_replace(tasks.len());
        true
    }

    /// Claim a task by its token (the drain's way): false when already answered or unknown.
    pub(super) fn claim_token(&self, token: &[u8]) -> bool {
        let slot = self.lock().get(token).cloned();
        slot.is_some_and(|slot| self.claim(token, &slot))
    }

    /// Whether the outstanding task `token` was started on the activity loop's lane.
    pub(super) fn on_lane(&self, token: &[u8]) -> bool {
        self.lock().get(token).is_some_and(|slot| slot.on_lane)
    }

    /// Note that the drain cancels `token` for the worker's shutdown.
    fn mark_shutdown_cancel(&self, token: &[u8]) {
        if let Some(slot) = self.lock().get(token) {
            slot.shutdown_cancel.store(true, Ordering::Release);
        }
    }

    /// Tokens of the tasks not yet answered.
    pub(super) fn tokens(&self) -> Vec<Vec<u8>> {
        self.lock().keys().cloned().collect()
    }

    /// Wait until no task is outstanding; false when `limit` passed first.
    async fn wait_idle(&self, limit: Duration) -> bool {
        let mut count = self.count.subscribe();
        tokio::time::timeout(limit, count.wait_for(|n| *n == 0))
            .await
            .is_ok()
    }

    /// Start the shutdown drain (idempotent).
    pub(crate) fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub(super) async fn shutdown_begun(&self) {
        let mut rx = self.shutdown.subscribe();
        // The sender lives as long as `self`, so this only ends by the flag.
        let _ = rx.wait_for(|begun| *begun).await;
    }
}

/// How a shutdown drain ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Drained {
    /// Every task answered within the grace period.
    InGrace,
    /// Some were cancelled after the grace period, and all answered within the bound.
    AfterCancel,
    /// This many ignored their cancel and were failed by Rust.
    Failed(usize),
}

/// The one graceful-shutdown timer: wait up to `grace` for the outstanding tasks, then
/// `cancel` each still running, wait up to `bound`, then `fail` each that still has not
/// answered (claimed here, so its late answer is refused).
pub(super) async fn drain(
    outstanding: &Outstanding,
    grace: Duration,
    bound: Duration,
    mut cancel: impl FnMut(Vec<u8>),
    mut fail: impl FnMut(Vec<u8>),
) -> Drained {
    if outstanding.wait_idle(grace).await {
        return Drained::InGrace;
    }
    for token in outstanding.tokens() {
        outstanding.mark_shutdown_cancel(&token);
        cancel(token);
    }
    if outstanding.wait_idle(bound).await {
        return Drained::AfterCancel;
    }
    let mut failed = 0;
    for token in outstanding.tokens() {
        if outstanding.claim_token(&token) {
            failed += 1;
            fail(token);
        }
    }
    Drained::Failed(failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use temporalio_common::protos::coresdk::activity_result;
    use temporalio_common::protos::temporal::api::failure::v1::failure;

    #[test]
    fn a_task_is_claimed_exactly_once() {
        let outstanding = Outstanding::default();
        let slot = outstanding.register(b"t1".to_vec());
        let other = outstanding.register(b"t2".to_vec());
        assert_eq!(outstanding.tokens().len(), 2);
        assert!(outstanding.claim(b"t1", &slot));
        assert!(
            !outstanding.claim(b"t1", &slot),
            "a second answer is refused"
        );
        assert!(
            !outstanding.claim_token(b"t1"),
            "and the drain finds nothing to fail"
        );
        assert_eq!(outstanding.tokens(), vec![b"t2".to_vec()]);
        // The drain claims t2 first: the reply's late answer is refused.
        assert!(outstanding.claim_token(b"t2"));
        assert!(!outstanding.claim(b"t2", &other));
        assert!(outstanding.tokens().is_empty());
        assert!(!outstanding.claim_token(b"unknown"));
    }

    #[test]
    fn a_cancel_at_shutdown_is_reported_as_a_retryable_failure() {
        use activity_execution_result::Status;
        let cancelled = || ActivityExecutionResult {
            status: Some(Status::Cancelled(activity_result::Cancellation::default())),
        };
        let outstanding = Outstanding::default();
        let slot = outstanding.register(b"t".to_vec());
        // Cancelled by the server: stays a cancellation.
        assert!(matches!(
            slot.shutdown_outcome(cancelled()).status,
            Some(Status::Cancelled(_))
        ));
        outstanding.mark_shutdown_cancel(b"t");
        let Some(Status::Failed(failed)) = slot.shutdown_outcome(cancelled()).status else {
            panic!("not failed")
        };
        let failure = failed.failure.unwrap();
        let Some(failure::FailureInfo::ApplicationFailureInfo(info)) = failure.failure_info else {
            panic!("no application failure info")
        };
        assert_eq!(info.r#type, "WorkerShutdown");
        assert!(!info.non_retryable);
        // A result is a result, shutdown or not.
        let done = ActivityExecutionResult {
            status: Some(Status::Completed(activity_result::Success::default())),
        };
        assert!(matches!(
            slot.shutdown_outcome(done).status,
            Some(Status::Completed(_))
        ));
    }

    #[test]
    fn racing_claims_have_one_winner() {
        let outstanding = Arc::new(Outstanding::default());
        for round in 0..200u32 {
            let token = round.to_be_bytes().to_vec();
            let slot = outstanding.register(token.clone());
            let (a, b) = std::thread::scope(|s| {
                let reply = s.spawn(|| outstanding.claim(&token, &slot));
                let drain = s.spawn(|| outstanding.claim_token(&token));
                (reply.join().unwrap(), drain.join().unwrap())
            });
            assert!(a ^ b, "round {round}: reply {a}, drain {b}");
        }
        assert!(outstanding.tokens().is_empty());
    }

    const SHORT: Duration = Duration::from_millis(150);

    #[tokio::test]
    async fn drain_ends_when_tasks_finish_within_the_grace_period() {
        let outstanding = Arc::new(Outstanding::default());
        let slot = outstanding.register(b"quick".to_vec());
        let answering = outstanding.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            answering.claim(b"quick", &slot);
        });
        let began = Instant::now();
        let mut cancelled = Vec::new();
        let drained = drain(
            &outstanding,
            Duration::from_secs(10),
            SHORT,
            |t| cancelled.push(t),
            |_| panic!("nothing to fail"),
        )
        .await;
        assert_eq!(drained, Drained::InGrace);
        assert!(cancelled.is_empty());
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "did not wait the grace out"
        );
    }

    #[tokio::test]
    async fn drain_cancels_after_the_grace_period() {
        let outstanding = Outstanding::default();
        outstanding.register(b"long".to_vec());
        let began = Instant::now();
        let mut cancelled = Vec::new();
        let drained = drain(
            &outstanding,
            SHORT,
            Duration::from_secs(10),
            |t| {
                assert!(
                    began.elapsed() >= SHORT,
                    "cancelled before the grace period"
                );
                // The activity answers its cancel at once.
                assert!(outstanding.claim_token(&t));
                cancelled.push(t);
            },
            |_| panic!("it answered"),
        )
        .await;
        assert_eq!(drained, Drained::AfterCancel);
        assert_eq!(cancelled, vec![b"long".to_vec()]);
    }

    #[tokio::test]
    async fn drain_fails_tasks_that_ignore_the_cancel_and_refuses_their_late_answer() {
        let outstanding = Outstanding::default();
        let stubborn = outstanding.register(b"stubborn".to_vec());
        let obedient = outstanding.register(b"obedient".to_vec());
        let began = Instant::now();
        let mut cancelled = Vec::new();
        let mut failed = Vec::new();
        let drained = drain(
            &outstanding,
            SHORT,
            SHORT,
            |t| {
                if t == b"obedient" {
                    assert!(outstanding.claim(&t, &obedient));
                }
                cancelled.push(t)
            },
            |t| failed.push(t),
        )
        .await;
        assert!(began.elapsed() >= SHORT * 2, "grace and bound both waited");
        assert_eq!(drained, Drained::Failed(1));
        cancelled.sort();
        assert_eq!(cancelled, vec![b"obedient".to_vec(), b"stubborn".to_vec()]);
        assert_eq!(failed, vec![b"stubborn".to_vec()]);
        assert!(
            !outstanding.claim(b"stubborn", &stubborn),
            "late answer refused"
        );
    }
}

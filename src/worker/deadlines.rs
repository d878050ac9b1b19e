//! One thread per process that times every activation's deadlock timeout.
//!
//! Each activation starts a timeout and, almost always, cancels it a millisecond later. A
//! tokio timer task per activation (spawned and aborted from the Python thread that runs
//! the activation) woke a runtime thread twice per activation: once to register the sleep,
//! once to drop the aborted task. Here a deadline is an entry in a map under a mutex:
//! adding and cancelling one wakes nobody, as long as the timer thread is already due to
//! wake no later than the new deadline. It sleeps until the earliest deadline, and at most
//! [`TICK`] while deadlines keep coming, so that a deadline added later (they are `now +
//! timeout`, so later deadlines come later) never needs a wake-up; after [`IDLE`] without
//! deadlines it sleeps until the next one is added.
//!
//! Firing runs the callback on a thread of its own (rare: a deadlocked workflow), so one
//! callback that waits for the GIL never delays another deadline.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The longest the timer thread sleeps while deadlines are being added.
const TICK: Duration = Duration::from_millis(500);
/// After this long without any deadline, the timer thread sleeps until one is added.
const IDLE: Duration = Duration::from_secs(10);

type Fire = Box<dyn FnOnce() + Send>;

/// A started deadline, to cancel it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Key(Instant, u64);

#[derive(Default)]
struct State {
    queue: BTreeMap<Key, Fire>,
    next_id: u64,
    /// When the timer thread wakes by itself: None while it sleeps until notified. While it
    /// is awake this is "now" (it looks at the queue again before sleeping).
    wakes_at: Option<Instant>,
    last_added: Option<Instant>,
}

/// The deadlines of one process.
pub(super) struct Deadlines {
    state: Mutex<State>,
    wake: Condvar,
    /// [`TICK`] and [`IDLE`] (other values in tests).
    tick: Duration,
    idle: Duration,
}

impl Deadlines {
    /// This process's deadlines, with their timer thread (started on first use; a forked
    /// child, which has no copy of the parent's thread, starts its own).
    pub(super) fn get() -> Arc<Deadlines> {
        /// The owning process's id with its deadlines.
        type Owned = Option<(u32, Arc<Deadlines>)>;
        static PROCESS: Mutex<Owned> = Mutex::new(None);
        let mut slot = PROCESS.lock().unwrap_or_else(|p| p.into_inner());
        let pid = std::process::id();
        match &*slot {
            Some((owner, deadlines)) if *owner == pid => deadlines.clone(),
            _ => {
                let deadlines = Deadlines::start(TICK, IDLE);
                *slot = Some((pid, deadlines.clone()));
                deadlines
            }
        }
    }

    fn start(tick: Duration, idle: Duration) -> Arc<Deadlines> {
        let deadlines = Arc::new(Deadlines {
            state: Mutex::new(State {
                wakes_at: Some(Instant::now()),
                ..State::default()
            }),
            wake: Condvar::new(),
            tick,
            idle,
        });
        let timer = deadlines.clone();
        std::thread::Builder::new()
            .name("nomad-deadlines".into())
            .spawn(move || timer.run())
            .expect("cannot start the deadlock timer thread");
        deadlines
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Calls `fire` (on a thread of its own) `after` from now, unless cancelled first.
    pub(super) fn add(&self, after: Duration, fire: impl FnOnce() + Send + 'static) -> Key {
        let now = Instant::now();
        let mut state = self.lock();
        let key = Key(now + after, state.next_id);
        state.next_id += 1;
        state.queue.insert(key, Box::new(fire));
        state.last_added = Some(now);
        if state.wakes_at.is_none_or(|at| at > key.0) {
            state.wakes_at = Some(key.0);
            self.wake.notify_one();
        }
        key
    }

    /// Cancels the deadline; false if it fired (or was cancelled) already.
    pub(super) fn cancel(&self, key: Key) -> bool {
        self.lock().queue.remove(&key).is_some()
    }

    fn run(&self) {
        let mut state = self.lock();
        loop {
            let now = Instant::now();
            state.wakes_at = Some(now);
            if let Some(entry) = state.queue.first_entry()
                && entry.key().0 <= now
            {
                let fire = entry.remove();
                drop(state);
                // A thread per overrun: it may wait long for the GIL.
                let spawned = std::thread::Builder::new()
                    .name("nomad-deadlock".into())
                    .spawn(fire);
                if let Err(err) = spawned {
                    eprintln!("nomad-actions: cannot start a deadlock handler thread: {err}");
                }
                state = self.lock();
                continue;
            }
            let earliest = state.queue.keys().next().map(|k| k.0);
            let busy = state.last_added.is_some_and(|t| now - t < self.idle);
            let until = match (earliest, busy) {
                (Some(at), true) => Some(at.min(now + self.tick)),
                (Some(at), false) => Some(at),
                (None, true) => Some(now + self.tick),
                (None, false) => None,
            };
            state.wakes_at = until;
            state = match until {
                None => self.wake.wait(state).unwrap_or_else(|p| p.into_inner()),
                Some(at) => {
                    let wait = at.saturating_duration_since(Instant::now());
                    self.wake
                        .wait_timeout(state, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn a_deadline_fires_after_its_time_and_not_before() {
        let deadlines = Deadlines::start(TICK, IDLE);
        let (tx, rx) = mpsc::channel();
        let began = Instant::now();
        deadlines.add(Duration::from_millis(150), move || tx.send(()).unwrap());
        rx.recv_timeout(Duration::from_secs(5))
            .expect("never fired");
        assert!(began.elapsed() >= Duration::from_millis(150));
    }

    #[test]
    fn a_cancelled_deadline_never_fires() {
        let deadlines = Deadlines::start(TICK, IDLE);
        let (tx, rx) = mpsc::channel();
        let key = deadlines.add(Duration::from_millis(50), move || tx.send(()).unwrap());
        assert!(deadlines.cancel(key));
        assert!(!deadlines.cancel(key), "cancelled twice");
        assert!(rx.recv_timeout(Duration::from_millis(400)).is_err());
    }

    #[test]
    fn an_earlier_deadline_wakes_a_timer_sleeping_until_a_later_one() {
        // Ticks longer than the test: only the wake-up brings the early deadline in time.
        let deadlines = Deadlines::start(Duration::from_secs(60), IDLE);
        let (tx, rx) = mpsc::channel();
        let late = tx.clone();
        deadlines.add(Duration::from_secs(30), move || late.send("late").unwrap());
        // Let the timer settle into its sleep until the 30 s deadline.
        std::thread::sleep(Duration::from_millis(50));
        let began = Instant::now();
        deadlines.add(Duration::from_millis(100), move || {
            tx.send("early").unwrap()
        });
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok("early"));
        assert!(began.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn deadlines_fire_in_order_and_a_slow_callback_delays_no_other() {
        let deadlines = Deadlines::start(TICK, IDLE);
        let (tx, rx) = mpsc::channel();
        let slow = tx.clone();
        deadlines.add(Duration::from_millis(50), move || {
            slow.send(1).unwrap();
            std::thread::sleep(Duration::from_secs(2));
        });
        deadlines.add(Duration::from_millis(100), move || tx.send(2).unwrap());
        let began = Instant::now();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(1));
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(2));
        assert!(began.elapsed() < Duration::from_secs(1));
    }
}

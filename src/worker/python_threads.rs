//! Threads that stay attached to Python and run the worker's calls into the bridges.
//!
//! Python runs one thread at a time (the GIL), so handing every activation to a fresh
//! blocking thread only adds work: each hand-off wakes a parked thread, creates a Python
//! thread state and makes the threads queue for the GIL (futex waits and context switches,
//! measured at a quarter of the worker's CPU). Here a job goes to a queue; a thread that
//! finishes one job takes the next without sleeping, keeping its thread state and usually
//! the GIL. One thread does the work while it makes progress.
//!
//! A job may block: workflow code that never yields (the bridge's watchdog answers for it,
//! but the thread stays inside until the code lets go), or a lock held by such a thread.
//! When no job has started or finished for [`STALL`] while jobs wait and no thread is idle,
//! the next `submit` or [`PythonThreads::unstall`] starts another thread (up to `max`). Threads beyond the
//! first end after [`IDLE_EXIT`] without work.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

/// How long the queue may sit without any job starting or finishing before a thread is
/// added. Jobs are activations of a few milliseconds; a longer silence means every thread
/// is blocked.
pub(super) const STALL: Duration = Duration::from_millis(100);

/// Idle time after which a thread other than the last one ends.
const IDLE_EXIT: Duration = Duration::from_secs(10);

/// A call into Python, run with the GIL held.
pub(super) type Job = Box<dyn FnOnce(Python<'_>) + Send>;

struct State {
    jobs: VecDeque<Job>,
    threads: usize,
    idle: usize,
    /// When a job last started or finished.
    progress: Instant,
    closed: bool,
}

struct Inner {
    name: &'static str,
    max: usize,
    state: Mutex<State>,
    work: Condvar,
}

/// A growable set of Python-attached threads serving one queue of jobs.
#[derive(Clone)]
pub(super) struct PythonThreads {
    inner: Arc<Inner>,
}

impl PythonThreads {
    /// Threads are named `name` and never more than `max`; the first starts with the
    /// first job.
    pub(super) fn new(name: &'static str, max: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                name,
                max: max.max(1),
                state: Mutex::new(State {
                    jobs: VecDeque::new(),
                    threads: 0,
                    idle: 0,
                    progress: Instant::now(),
                    closed: false,
                }),
                work: Condvar::new(),
            }),
        }
    }

    /// Queue a job; it runs with the GIL held on one of the threads.
    pub(super) fn submit(&self, job: impl FnOnce(Python<'_>) + Send + 'static) {
        let mut state = self.inner.lock();
        state.jobs.push_back(Box::new(job));
        if state.idle > 0 {
            self.inner.work.notify_one();
        } else {
            self.inner.unstall(&mut state);
        }
    }

    /// Called by a waiter every [`STALL`]: add a thread if the queue has not moved since.
    pub(super) fn unstall(&self) {
        self.inner.unstall(&mut self.inner.lock());
    }

    /// Let the threads end once the queue is empty (the worker stopped).
    pub(super) fn close(&self) {
        self.inner.lock().closed = true;
        self.inner.work.notify_all();
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unstall(self: &Arc<Self>, state: &mut State) {
        let stalled = state.threads == 0
            || (state.idle == 0 && !state.jobs.is_empty() && state.progress.elapsed() >= STALL);
        if stalled && state.threads < self.max {
            self.spawn(state);
            // Give the new thread a full STALL before the next one is considered.
            state.progress = Instant::now();
        }
    }

    fn spawn(self: &Arc<Self>, state: &mut State) {
        let inner = self.clone();
        match std::thread::Builder::new()
            .name(self.name.into())
            .spawn(move || inner.serve())
        {
            Ok(_) => state.threads += 1,
            // Running on with the threads there are beats failing the job.
            Err(err) => eprintln!("nomad-actions: cannot start a {} thread: {err}", self.name),
        }
    }

    /// A thread's life: attached to Python throughout, the GIL released while it waits.
    fn serve(self: Arc<Self>) {
        Python::attach(|py| {
            while let Some(job) = py.detach(|| self.next_job()) {
                // A panicking job must not take the thread (and the count) with it.
                if std::panic::catch_unwind(AssertUnwindSafe(|| job(py))).is_err() {
                    eprintln!("nomad-actions: a {} job panicked", self.name);
                }
                self.lock().progress = Instant::now();
            }
        });
    }

    /// The next job, or `None` when this thread should end.
    fn next_job(&self) -> Option<Job> {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.jobs.pop_front() {
                state.progress = Instant::now();
                return Some(job);
            }
            if state.closed {
                state.threads -= 1;
                return None;
            }
            state.idle += 1;
            let (next, timeout) = self
                .work
                .wait_timeout(state, IDLE_EXIT)
                .unwrap_or_else(|p| p.into_inner());
            state = next;
            state.idle -= 1;
            if timeout.timed_out() && state.jobs.is_empty() && state.threads > 1 {
                state.threads -= 1;
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn thread_count(threads: &PythonThreads) -> usize {
        threads.inner.lock().threads
    }

    #[test]
    fn quick_jobs_share_one_thread() {
        Python::initialize();
        let threads = PythonThreads::new("test-quick", 8);
        let (done, finished) = mpsc::channel();
        for i in 0..200 {
            let done = done.clone();
            threads.submit(move |py| {
                // Some Python work, as an activation would do.
                let n = py.eval(c"sum(range(100))", None, None).unwrap();
                done.send((i, n.extract::<i64>().unwrap())).unwrap();
            });
        }
        let got: Vec<(i32, i64)> = (0..200)
            .map(|_| finished.recv_timeout(Duration::from_secs(30)).unwrap())
            .collect();
        assert_eq!(got, (0..200).map(|i| (i, 4950)).collect::<Vec<_>>());
        // One thread did it all, in order; a second only if this box froze for 100 ms.
        assert!(thread_count(&threads) <= 2, "{}", thread_count(&threads));
        threads.close();
    }

    #[test]
    fn a_blocked_thread_is_joined_by_another_when_the_queue_stalls() {
        Python::initialize();
        let threads = PythonThreads::new("test-stall", 4);
        let (release, blocked) = mpsc::channel::<()>();
        let (done, finished) = mpsc::channel();
        // Stuck the way workflow code in `time.sleep` is: GIL released, thread held.
        threads.submit(move |py| {
            py.detach(move || blocked.recv().ok());
        });
        for i in 0..3 {
            let done = done.clone();
            threads.submit(move |_| done.send(i).unwrap());
        }
        std::thread::sleep(STALL * 2);
        threads.unstall();
        let mut got: Vec<i32> = (0..3)
            .map(|_| finished.recv_timeout(Duration::from_secs(30)).unwrap())
            .collect();
        got.sort();
        assert_eq!(got, vec![0, 1, 2]);
        assert_eq!(thread_count(&threads), 2);
        release.send(()).unwrap();
        threads.close();
    }
}

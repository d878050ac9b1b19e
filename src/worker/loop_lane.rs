//! The activity bridge's asyncio loop as a place to run the worker's jobs.
//!
//! An `async def` activity runs on the bridge's event loop. Started through
//! [`super::python_threads::PythonThreads`], its start crossed two Python threads: a
//! worker thread woke, took the GIL, built the arguments and called the bridge, which
//! woke the loop's thread in turn (`call_soon_threadsafe`). Each wake of a sleeping
//! thread costs a futex, a GIL hand-off and a cold cache: that thread took 0.22 of the
//! worker's 2.04 ms CPU per fan-out activity (benches/README.md, run 15). Here the loop's
//! own thread runs the start: the
//! queue's read end is registered with `loop.add_reader`, and a submit from a tokio
//! thread queues the job and writes one byte (without the GIL) when the queue was empty.
//!
//! Jobs run in submission order, so a cancel queued behind its start cannot overtake it.
//! Once the loop has stopped ([`LoopLane::close`]) a submit is refused and the caller
//! runs the job elsewhere.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};

use pyo3::prelude::*;

use super::python_threads::Job;

struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
}

struct Inner {
    queue: Mutex<Queue>,
    /// Write end: one byte says "jobs are waiting". Non-blocking: a full socket already
    /// holds a wake-up.
    wake: UnixStream,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Jobs for the activity bridge's event loop (handed to `ActivityBridge.attach_lane`,
/// which registers `run_pending` as the reader of `fileno()`).
#[pyclass(frozen, module = "nomad_actions._core")]
pub struct LoopLane {
    inner: Arc<Inner>,
    /// Read end, watched by the loop's selector.
    read: UnixStream,
}

/// The submitting side of a [`LoopLane`], for the tokio tasks.
#[derive(Clone)]
pub(super) struct LaneHandle {
    inner: Arc<Inner>,
}

impl LoopLane {
    pub(super) fn new() -> std::io::Result<Self> {
        let (read, wake) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        wake.set_nonblocking(true)?;
        Ok(Self {
            inner: Arc::new(Inner {
                queue: Mutex::new(Queue {
                    jobs: VecDeque::new(),
                    closed: false,
                }),
                wake,
            }),
            read,
        })
    }

    pub(super) fn handle(&self) -> LaneHandle {
        LaneHandle {
            inner: self.inner.clone(),
        }
    }

    fn run_all(&self, py: Python<'_>) {
        loop {
            let jobs = std::mem::take(&mut self.inner.lock().jobs);
            if jobs.is_empty() {
                return;
            }
            for job in jobs {
                // A panicking job must not take the loop's callback down with it.
                if std::panic::catch_unwind(AssertUnwindSafe(|| job(py))).is_err() {
                    eprintln!("nomad-actions: a job on the activity loop panicked");
                }
            }
        }
    }
}

impl LaneHandle {
    /// Queue `job` for the loop's thread, or give it back once the loop has stopped.
    pub(super) fn submit(&self, job: Job) -> Result<(), Job> {
        let mut queue = self.inner.lock();
        if queue.closed {
            return Err(job);
        }
        let was_empty = queue.jobs.is_empty();
        queue.jobs.push_back(job);
        drop(queue);
        if was_empty {
            // WouldBlock: the socket is full of wake-ups already; any other error means
            // the read end is gone, and `close` runs what is queued.
            let _ = (&self.inner.wake).write(&[1]);
        }
        Ok(())
    }
}

#[pymethods]
impl LoopLane {
    /// The descriptor the loop watches for readability.
    fn fileno(&self) -> i32 {
        self.read.as_raw_fd()
    }

    /// The loop's reader callback: consumes the wake-ups and runs every queued job, in
    /// order, on the calling (the loop's) thread.
    fn run_pending(&self, py: Python<'_>) {
        let mut buf = [0u8; 64];
        loop {
            match (&self.read).read(&mut buf) {
                Ok(n) if n == buf.len() => continue,
                Ok(_) => break,
                Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        self.run_all(py);
    }

    /// The loop stops: refuse further jobs and run those still queued (the bridge is
    /// closing, so a start among them fails at once instead of being lost).
    fn close(&self, py: Python<'_>) {
        self.inner.lock().closed = true;
        self.run_all(py);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn jobs_run_in_order_on_the_reader_and_one_byte_wakes_per_batch() {
        Python::initialize();
        let lane = LoopLane::new().unwrap();
        let handle = lane.handle();
        let (done, finished) = mpsc::channel();
        for i in 0..3 {
            let done = done.clone();
            assert!(
                handle
                    .submit(Box::new(move |_| done.send(i).unwrap()))
                    .is_ok()
            );
        }
        // Only the first submit onto the empty queue wrote a wake-up.
        assert_eq!(pending_bytes(&lane), 1);
        Python::attach(|py| lane.run_pending(py));
        assert_eq!(finished.try_iter().collect::<Vec<_>>(), vec![0, 1, 2]);
        // The next submit onto the emptied queue wakes again; run_pending consumes it.
        assert!(
            handle
                .submit(Box::new(move |_| done.send(3).unwrap()))
                .is_ok()
        );
        Python::attach(|py| lane.run_pending(py));
        assert_eq!(finished.try_iter().collect::<Vec<_>>(), vec![3]);
        assert_eq!(pending_bytes(&lane), 0);
    }

    /// Reads (and so consumes) the wake-ups waiting on the read end.
    fn pending_bytes(lane: &LoopLane) -> usize {
        let mut buf = [0u8; 64];
        (&lane.read).read(&mut buf).unwrap_or(0)
    }

    #[test]
    fn close_runs_what_is_queued_and_refuses_the_rest() {
        Python::initialize();
        let lane = LoopLane::new().unwrap();
        let handle = lane.handle();
        let (done, finished) = mpsc::channel();
        let queued = done.clone();
        assert!(
            handle
                .submit(Box::new(move |_| queued.send("queued").unwrap()))
                .is_ok()
        );
        Python::attach(|py| lane.close(py));
        assert_eq!(finished.try_iter().collect::<Vec<_>>(), vec!["queued"]);
        let refused = handle.submit(Box::new(move |_| done.send("late").unwrap()));
        let job = refused.expect_err("a closed lane gives the job back");
        Python::attach(job);
        assert_eq!(finished.try_iter().collect::<Vec<_>>(), vec!["late"]);
    }
}

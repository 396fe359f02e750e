//! The bounded queue between callers and the writer thread.
//!
//! Callers only validate and enqueue; the writer takes everything pending
//! as one batch (one poll's points = one flush) when `write_buffer` points
//! wait, when the oldest has waited `flush_interval`, or when someone calls
//! `flush()`, and jobs (rollup, prune, vacuum) in the order they came.
//!
//! # Locking
//! One mutex guards the whole queue state; nobody holds it while doing I/O.
//! Two condition variables hang off it: `wake` tells the writer there is
//! work (the first pending point, a full buffer, a job, a flush request,
//! shutdown) and `flushed` tells waiting callers that a flush finished or
//! failed.

use crate::error::{Error, Result};
use crate::model::{HistoryPoint, SeriesKey, Tier};
use crate::{MaintainReport, PruneReport, RollupReport, VacuumReport};
use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Most points that may wait for the writer, counting a batch being
/// flushed. Past this, writes are refused with `Overloaded` (HTTP 503)
/// rather than dropped or left to grow memory. Large enough for the biggest
/// request body the API accepts (8 MiB).
pub const QUEUE_CAPACITY: usize = 500_000;

/// A series as the caller named it: resolved to its id when already known.
pub enum SeriesRef {
    Known(u32),
    New(SeriesKey),
}

/// One validated point waiting for the writer.
pub struct Pending {
    pub series: SeriesRef,
    /// Unix ms.
    pub ts: i64,
    pub value: f64,
}

pub type Reply<T> = std::sync::mpsc::SyncSender<Result<T>>;

/// Work for the writer thread besides flushing; each carries where to
/// send its answer.
pub enum Job {
    Rollup(i64, Reply<RollupReport>),
    Prune(i64, Reply<PruneReport>),
    Maintain(i64, Reply<MaintainReport>),
    Vacuum(Reply<VacuumReport>),
    Import(Tier, Vec<(SeriesKey, HistoryPoint)>, Reply<usize>),
    /// Any other work that must run on the writer thread (resource
    /// metadata, series merges); it answers through what it captured.
    Run(Box<dyn FnOnce(&mut crate::writer::Writer) + Send>),
}

struct State {
    pending: Vec<Pending>,
    /// Points taken by the writer and not yet flushed: they count against
    /// the bound, so a failed flush that puts them back cannot overfill it.
    in_flight: usize,
    /// When the oldest pending point arrived.
    oldest: Option<Instant>,
    jobs: VecDeque<Job>,
    /// Write calls accepted so far.
    accepted: u64,
    /// `accepted` as of the last flush that committed.
    durable: u64,
    /// The last failed flush: (`accepted` it covered, message).
    failure: Option<(u64, String)>,
    flush_wanted: bool,
    shutdown: bool,
    writer_gone: bool,
    write_buffer: usize,
    flush_interval: Duration,
}

pub struct Queue {
    state: Mutex<State>,
    wake: Condvar,
    flushed: Condvar,
}

/// What the writer takes from the queue in one turn.
pub struct Turn {
    pub batch: Vec<Pending>,
    /// `accepted` covered by `batch`: durable once it is flushed.
    pub upto: u64,
    pub job: Option<Job>,
    /// Shutdown was asked for and no job is left.
    pub stop: bool,
}

impl Queue {
    pub fn new(write_buffer: usize, flush_interval: Duration) -> Queue {
        Queue {
            state: Mutex::new(State {
                pending: Vec::new(),
                in_flight: 0,
                oldest: None,
                jobs: VecDeque::new(),
                accepted: 0,
                durable: 0,
                failure: None,
                flush_wanted: false,
                shutdown: false,
                writer_gone: false,
                write_buffer,
                flush_interval,
            }),
            wake: Condvar::new(),
            flushed: Condvar::new(),
        }
    }

    /// Takes effect at the writer's next turn.
    pub fn set_limits(&self, write_buffer: usize, flush_interval: Duration) {
        let mut q = self.state.lock();
        q.write_buffer = write_buffer;
        q.flush_interval = flush_interval;
        self.wake.notify_one();
    }

    /// Enqueues a validated batch whole, or refuses it whole (returning the
    /// number of points refused through `Overloaded`).
    pub fn push(&self, points: Vec<Pending>) -> Result<()> {
        let n = points.len();
        let mut q = self.state.lock();
        if q.shutdown || q.writer_gone {
            return Err(Error::closed());
        }
        let held = q.pending.len() + q.in_flight;
        if held + n > QUEUE_CAPACITY {
            return Err(Error::overloaded(held, QUEUE_CAPACITY));
        }
        let was_empty = q.pending.is_empty();
        if was_empty {
            q.oldest = Some(Instant::now());
        }
        q.pending.extend(points);
        q.accepted += 1;
        // The first pending point starts the flush_interval clock: the
        // writer, idle until now, must learn of it to time its wait.
        if was_empty || q.pending.len() >= q.write_buffer {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Waits until every point accepted before the call is durable.
    pub fn flush(&self) -> Result<()> {
        let mut q = self.state.lock();
        let target = q.accepted;
        if q.durable >= target {
            return Ok(());
        }
        q.flush_wanted = true;
        self.wake.notify_one();
        loop {
            if q.durable >= target {
                return Ok(());
            }
            if let Some((covered, message)) = &q.failure
                && *covered >= target
            {
                return Err(Error::io(
                    "flush failed; the points stay queued and are retried",
                    std::io::Error::other(message.clone()),
                ));
            }
            if q.writer_gone {
                return Err(Error::closed());
            }
            self.flushed.wait(&mut q);
        }
    }

    /// Hands a job to the writer and waits for its answer.
    pub fn run<T>(&self, make: impl FnOnce(Reply<T>) -> Job) -> Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        {
            let mut q = self.state.lock();
            if q.shutdown || q.writer_gone {
                return Err(Error::closed());
            }
            q.jobs.push_back(make(tx));
            self.wake.notify_one();
        }
        rx.recv().map_err(|_| Error::closed())?
    }

    /// Asks the writer to flush everything and stop.
    pub fn shutdown(&self) {
        let mut q = self.state.lock();
        q.shutdown = true;
        self.wake.notify_one();
    }

    /// Points waiting, including a batch being flushed.
    pub fn pending_len(&self) -> usize {
        let q = self.state.lock();
        q.pending.len() + q.in_flight
    }

    /// Writer side: waits for work. `retry_at` is set after a failed flush,
    /// so a full disk is not hammered: pending points then wait until it.
    pub fn next_turn(&self, retry_at: Option<Instant>) -> Turn {
        let mut q = self.state.lock();
        loop {
            let backing_off = retry_at.is_some_and(|t| Instant::now() < t);
            if !q.jobs.is_empty() || q.shutdown {
                break;
            }
            if !backing_off
                && !q.pending.is_empty()
                && (q.flush_wanted
                    || q.pending.len() >= q.write_buffer
                    || q.oldest.is_some_and(|t| t.elapsed() >= q.flush_interval))
            {
                break;
            }
            let wait = match (q.oldest, retry_at) {
                (_, Some(t)) if backing_off => t.saturating_duration_since(Instant::now()),
                (Some(t), _) => q.flush_interval.saturating_sub(t.elapsed()),
                (None, _) => Duration::from_secs(3600),
            };
            self.wake
                .wait_for(&mut q, wait.max(Duration::from_millis(1)));
        }
        q.flush_wanted = false;
        q.oldest = None;
        let batch = std::mem::take(&mut q.pending);
        q.in_flight = batch.len();
        Turn {
            upto: q.accepted,
            job: q.jobs.pop_front(),
            stop: q.shutdown && q.jobs.is_empty(),
            batch,
        }
    }

    /// Writer side: everything accepted up to `upto` is durable.
    pub fn flushed(&self, upto: u64) {
        let mut q = self.state.lock();
        q.durable = q.durable.max(upto);
        q.in_flight = 0;
        q.failure = None;
        self.flushed.notify_all();
    }

    /// Writer side: a flush failed; `batch` goes back to the head of the
    /// queue (still counted against the bound) and waiting callers learn why.
    pub fn failed(&self, batch: Vec<Pending>, upto: u64, message: String) {
        let mut q = self.state.lock();
        let mut back = batch;
        back.append(&mut q.pending);
        q.pending = back;
        q.in_flight = 0;
        q.oldest.get_or_insert_with(Instant::now);
        q.failure = Some((upto, message));
        self.flushed.notify_all();
    }

    /// Writer side: whether anything is pending (after a stop was asked).
    pub fn is_empty(&self) -> bool {
        self.state.lock().pending.is_empty()
    }

    /// Writer side: the writer stopped; returns the points it could not
    /// flush, which are lost.
    pub fn writer_gone(&self) -> usize {
        let mut q = self.state.lock();
        q.writer_gone = true;
        self.flushed.notify_all();
        let lost = q.pending.len() + q.in_flight;
        q.pending.clear();
        q.in_flight = 0;
        lost
    }
}

/// Marks the writer as gone when its thread ends (even by a panic), so
/// callers get `Closed` instead of waiting forever, and counts what it left
/// unflushed in the second field.
pub struct GoneOnDrop(
    pub std::sync::Arc<Queue>,
    pub std::sync::Arc<std::sync::atomic::AtomicU64>,
);

impl Drop for GoneOnDrop {
    fn drop(&mut self) {
        let lost = self.0.writer_gone();
        self.1
            .fetch_add(lost as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(n: usize) -> Vec<Pending> {
        (0..n)
            .map(|i| Pending {
                series: SeriesRef::Known(i as u32),
                ts: 0,
                value: 0.0,
            })
            .collect()
    }

    #[test]
    fn the_bound_counts_a_batch_being_flushed() {
        let q = Queue::new(100, Duration::from_millis(1));
        q.push(points(QUEUE_CAPACITY - 10)).unwrap();
        q.flush_wanted_for_test();
        let turn = q.next_turn(None);
        assert_eq!(turn.batch.len(), QUEUE_CAPACITY - 10);
        // While that batch is in flight, only 10 more fit.
        assert!(q.push(points(11)).unwrap_err().is_overloaded());
        q.push(points(10)).unwrap();
        q.failed(turn.batch, turn.upto, "disk full".into());
        assert_eq!(q.pending_len(), QUEUE_CAPACITY);
        assert!(q.push(points(1)).unwrap_err().is_overloaded());
    }

    impl Queue {
        fn flush_wanted_for_test(&self) {
            self.state.lock().flush_wanted = true;
        }
    }
}

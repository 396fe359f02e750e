//! The write path: a bounded queue of pending points and the one thread
//! that owns the write connection.
//!
//! Callers only validate and enqueue; the writer turns everything pending
//! into one transaction (one poll's batch = one commit) when `write_buffer`
//! points are waiting, when the oldest has waited `flush_interval`, or when
//! someone calls `flush()`. Jobs (rollup, prune, vacuum) run on the same
//! thread, after a flush, so they see every point written before them.

use super::codec::LogPoint;
use super::ring::Ring;
use super::state::{HOUR, MINUTE, RawPoint, SeriesEntry, State, floor_to};
use super::{MaintainReport, PruneReport, RollupReport, VacuumReport};
use crate::config::MetricsConfig;
use crate::error::{Error, Result, SqlContext};
use crate::model::{SeriesKey, now_ms};
use parking_lot::{Condvar, Mutex, RwLock};
use rusqlite::{Connection, TransactionBehavior};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Most points that may wait for the writer. Past this, writes are refused
/// with `Overloaded` (HTTP 503) rather than dropped or left to grow memory.
/// Large enough for the biggest request body the API accepts (8 MiB).
pub const QUEUE_CAPACITY: usize = 500_000;
/// Estimated WAL frames after which the writer checkpoints (about 1 MiB):
/// keeps the WAL small without an fsync per flush.
const CHECKPOINT_FRAMES: usize = 256;
/// Pause before retrying a failed flush, so a full disk is not hammered.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How long a closing store keeps retrying a failing flush before it gives
/// the pending points up as lost (and says exactly how many).
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);

/// A series as the caller named it: resolved to its id when already known.
pub enum SeriesRef {
    Known(u32),
    New(SeriesKey),
}

pub struct Pending {
    pub series: SeriesRef,
    /// Unix ms.
    pub ts: i64,
    pub value: f64,
}

type Reply<T> = std::sync::mpsc::SyncSender<Result<T>>;

pub enum Job {
    Rollup(i64, Reply<RollupReport>),
    Prune(i64, Reply<PruneReport>),
    Maintain(i64, Reply<MaintainReport>),
    Vacuum(Reply<VacuumReport>),
    Import(
        crate::model::Tier,
        Vec<(SeriesKey, crate::model::HistoryPoint)>,
        Reply<usize>,
    ),
}

/// Counters shown by `stats()` and `/metrics`.
#[derive(Default)]
pub struct Counters {
    pub total_writes: AtomicU64,
    pub dropped_writes: AtomicU64,
    pub flushes: AtomicU64,
    pub flush_failures: AtomicU64,
    pub job_failures: AtomicU64,
    /// Unix ms of the last successful flush / rollup / prune / vacuum (0 = never).
    pub last_flush: AtomicI64,
    pub last_rollup: AtomicI64,
    pub last_retention: AtomicI64,
    pub last_vacuum: AtomicI64,
    pub last_error: Mutex<String>,
    pub log_slots: AtomicU64,
    pub log_slots_free: AtomicU64,
}

impl Counters {
    /// Writes the lifetime counters into `meta` (inside the caller's
    /// transaction). Done with every rollup, prune and at close, never per
    /// flush: a page per flush would double the bytes written, and after a
    /// crash the counters are at most one rollup interval behind.
    pub fn persist(&self, conn: &Connection) -> Result<()> {
        super::schema::meta_set(
            conn,
            "total_writes",
            self.total_writes.load(Ordering::Relaxed) as i64,
        )?;
        super::schema::meta_set(
            conn,
            "dropped_writes",
            self.dropped_writes.load(Ordering::Relaxed) as i64,
        )?;
        super::schema::meta_set(conn, "last_flush", self.last_flush.load(Ordering::Relaxed))
    }

    pub fn record_error(&self, message: &str) {
        tracing::error!("{message}");
        *self.last_error.lock() =
            format!("{}: {message}", crate::model::format_timestamp(now_ms()));
    }
}

pub struct QueueState {
    pub pending: Vec<Pending>,
    /// Points taken by the writer for the flush under way: still queued as
    /// far as the bound is concerned (a failed flush puts them back).
    in_flight: usize,
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
    /// When `shutdown` was asked: the drain deadline counts from here.
    shutdown_at: Option<Instant>,
    writer_gone: bool,
    /// Accepted points the writer gave up at shutdown, and why.
    pub lost: Option<(usize, String)>,
    pub write_buffer: usize,
    pub flush_interval: Duration,
}

pub struct Queue {
    pub state: Mutex<QueueState>,
    wake: Condvar,
    flushed: Condvar,
}

impl Queue {
    pub fn new(config: &MetricsConfig) -> Queue {
        Queue {
            state: Mutex::new(QueueState {
                pending: Vec::new(),
                in_flight: 0,
                oldest: None,
                jobs: VecDeque::new(),
                accepted: 0,
                durable: 0,
                failure: None,
                flush_wanted: false,
                shutdown: false,
                shutdown_at: None,
                writer_gone: false,
                lost: None,
                write_buffer: config.write_buffer,
                flush_interval: config.flush_interval,
            }),
            wake: Condvar::new(),
            flushed: Condvar::new(),
        }
    }

    /// Enqueues a validated batch whole, or refuses it whole.
    pub fn push(&self, points: Vec<Pending>, counters: &Counters) -> Result<()> {
        let n = points.len();
        let mut q = self.state.lock();
        if q.shutdown || q.writer_gone {
            return Err(Error::closed());
        }
        let queued = q.pending.len() + q.in_flight;
        if queued + n > QUEUE_CAPACITY {
            counters
                .dropped_writes
                .fetch_add(n as u64, Ordering::Relaxed);
            return Err(Error::overloaded(queued, QUEUE_CAPACITY));
        }
        let was_empty = q.pending.is_empty();
        if was_empty {
            q.oldest = Some(Instant::now());
        }
        q.pending.extend(points);
        q.accepted += 1;
        counters.total_writes.fetch_add(n as u64, Ordering::Relaxed);
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
                let what = if q.shutdown {
                    "flush failed while the store closes; it is retried until the drain limit"
                } else {
                    "flush failed; the points stay queued and are retried"
                };
                return Err(Error::io(what, std::io::Error::other(message.clone())));
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
        q.shutdown_at.get_or_insert_with(Instant::now);
        self.wake.notify_one();
    }

    /// Points accepted and not yet durable (the flush under way included).
    pub fn pending_len(&self) -> usize {
        let q = self.state.lock();
        q.pending.len() + q.in_flight
    }
}

/// Raw points of one (hour, series) not yet sealed into a minute chunk.
#[derive(Debug, Default)]
pub struct HourWork {
    /// Oldest batch with a point here: nothing at or after it is sealed.
    pub min_seq: u64,
    /// Minutes (bit i = minute i of the hour) with raw changes not rolled up.
    pub dirty: u64,
    /// Points whose raw minute was already pruned: merged into the
    /// aggregates instead of recomputed (their neighbours are gone). Each
    /// with its batch's sequence number, so that of two writes of one second
    /// still waiting here the later replaces the earlier.
    pub late: Vec<LatePoint>,
}

/// A late point with the sequence number of the batch that wrote it.
pub type LatePoint = (u64, RawPoint);

/// The late points to fold: of several writes of one second, the last.
pub fn latest_per_second(late: &[LatePoint]) -> Vec<RawPoint> {
    let mut v: Vec<&LatePoint> = late.iter().collect();
    v.sort_by_key(|(seq, p)| (p.ts, *seq));
    let mut out: Vec<RawPoint> = Vec::with_capacity(v.len());
    for (_, p) in v {
        match out.last_mut() {
            Some(last) if last.ts == p.ts => *last = *p,
            _ => out.push(*p),
        }
    }
    out
}

/// The thread that owns the write connection and everything only it touches.
pub struct Writer {
    pub conn: Connection,
    pub memory: bool,
    pub shared: Arc<RwLock<State>>,
    pub queue: Arc<Queue>,
    pub counters: Arc<Counters>,
    pub config: Arc<RwLock<MetricsConfig>>,
    pub ring: Ring,
    /// Unsealed raw points by (hour, series).
    pub work: BTreeMap<(i64, u32), HourWork>,
    /// (day, series) with hourly buckets not yet rolled into a daily one.
    pub daily_pending: BTreeSet<(i64, u32)>,
    /// Sequence number of the next flushed batch.
    pub next_seq: u64,
    /// `now` of the latest rollup (seconds).
    pub rolled_to: i64,
    frames: usize,
}

impl Writer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        conn: Connection,
        memory: bool,
        shared: Arc<RwLock<State>>,
        queue: Arc<Queue>,
        counters: Arc<Counters>,
        config: Arc<RwLock<MetricsConfig>>,
        ring: Ring,
        next_seq: u64,
        rolled_to: i64,
    ) -> Writer {
        Writer {
            conn,
            memory,
            shared,
            queue,
            counters,
            config,
            ring,
            work: BTreeMap::new(),
            daily_pending: BTreeSet::new(),
            next_seq,
            rolled_to,
            frames: 0,
        }
    }

    /// The writer thread's loop.
    pub fn run(mut self) {
        let mut retry_at: Option<Instant> = None;
        loop {
            let (batch, upto, job, stop) = {
                let mut q = self.queue.state.lock();
                loop {
                    let backing_off = retry_at.is_some_and(|t| Instant::now() < t);
                    // Closing, a failed flush is still retried after the
                    // pause, until the drain limit.
                    if !q.jobs.is_empty() || (q.shutdown && !backing_off) {
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
                    self.queue
                        .wake
                        .wait_for(&mut q, wait.max(Duration::from_millis(1)));
                }
                q.flush_wanted = false;
                q.oldest = None;
                let batch = std::mem::take(&mut q.pending);
                q.in_flight = batch.len();
                (
                    batch,
                    q.accepted,
                    q.jobs.pop_front(),
                    q.shutdown && q.jobs.is_empty(),
                )
            };
            let flushed = self.flush_batch(batch, upto);
            retry_at = if flushed {
                None
            } else {
                Some(Instant::now() + RETRY_AFTER)
            };
            if let Some(job) = job {
                self.run_job(job, flushed);
            }
            if stop {
                let q = self.queue.state.lock();
                let drained = q.shutdown_at.is_some_and(|t| t.elapsed() >= SHUTDOWN_DRAIN);
                if q.pending.is_empty() || (!flushed && drained) {
                    drop(q);
                    self.finish();
                    return;
                }
            }
        }
    }

    /// Flushes `batch`; on failure puts it back at the head of the queue.
    fn flush_batch(&mut self, batch: Vec<Pending>, upto: u64) -> bool {
        if batch.is_empty() {
            let mut q = self.queue.state.lock();
            q.durable = q.durable.max(upto);
            self.queue.flushed.notify_all();
            return true;
        }
        let n = batch.len();
        match self.flush(&batch) {
            Ok(()) => {
                self.counters.flushes.fetch_add(1, Ordering::Relaxed);
                self.counters.last_flush.store(now_ms(), Ordering::Relaxed);
                let mut q = self.queue.state.lock();
                q.durable = q.durable.max(upto);
                q.failure = None;
                q.in_flight = 0;
                self.queue.flushed.notify_all();
                drop(q);
                if self.frames >= CHECKPOINT_FRAMES {
                    self.checkpoint("PASSIVE");
                }
                true
            }
            Err(e) => {
                self.counters.flush_failures.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .record_error(&format!("flush of {n} points failed: {e}"));
                let mut q = self.queue.state.lock();
                let mut back = batch;
                back.append(&mut q.pending);
                q.pending = back;
                q.in_flight = 0;
                q.oldest.get_or_insert_with(Instant::now);
                q.failure = Some((upto, e.to_string()));
                self.queue.flushed.notify_all();
                false
            }
        }
    }

    /// Writes one batch to the log in one transaction, then into memory.
    fn flush(&mut self, batch: &[Pending]) -> Result<()> {
        let (sids, new_series) = {
            let st = self.shared.read();
            resolve_series(&st, batch.iter().map(|p| &p.series))?
        };
        let mut pts: Vec<LogPoint> = batch
            .iter()
            .zip(sids)
            .map(|(p, sid)| LogPoint {
                sid,
                ts: p.ts,
                value: p.value,
            })
            .collect();
        // One point per series and second: the last write wins (the sort
        // is stable, so "last" is the order of writing).
        let second = |p: &LogPoint| (p.ts.div_euclid(1000), p.sid);
        pts.sort_by_key(second);
        let mut deduped: Vec<LogPoint> = Vec::with_capacity(pts.len());
        for p in pts {
            match deduped.last_mut() {
                Some(last) if second(last) == second(&p) => *last = p,
                _ => deduped.push(p),
            }
        }
        let pts = deduped;
        let seq = self.next_seq;
        let plan = self.ring.plan(seq, &pts);
        let first_new = self.shared.read().series.len();
        {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .ctx("begin flush")?;
            {
                insert_series(&tx, first_new, &new_series)?;
                let mut upd = tx
                    .prepare_cached("UPDATE raw_log SET data = ?2 WHERE slot = ?1")
                    .ctx("prepare log update")?;
                let mut add = tx
                    .prepare_cached("INSERT INTO raw_log (slot, data) VALUES (?1, ?2)")
                    .ctx("prepare log insert")?;
                for w in &plan.writes {
                    let stmt = if w.insert { &mut add } else { &mut upd };
                    stmt.execute(rusqlite::params![i64::from(w.id), w.bytes])
                        .ctx("write log slot")?;
                }
            }
            tx.commit().ctx("commit flush")?;
        }
        self.frames += plan.writes.len() + new_series.len().div_ceil(16) + 1;
        self.next_seq += 1;
        let slot_of = plan.slot_of.clone();
        self.ring.commit(plan);

        let mut st = self.shared.write();
        publish_series(&mut st, new_series);
        let raw_floor = st.floors.raw;
        for (p, slot) in pts.iter().zip(slot_of) {
            let point = RawPoint::at(p.ts, p.value, slot);
            let hour = floor_to(point.ts, HOUR);
            let w = self.work.entry((hour, p.sid)).or_insert_with(|| HourWork {
                min_seq: seq,
                ..HourWork::default()
            });
            w.min_seq = w.min_seq.min(seq);
            if point.ts >= raw_floor {
                w.dirty |= 1u64 << ((point.ts - hour) / MINUTE);
                if let Some(old) = st.series[p.sid as usize].upsert(point) {
                    self.ring.release(old.slot);
                }
            } else {
                w.late.push((seq, point));
                st.late_points += 1;
            }
        }
        Ok(())
    }

    fn run_job(&mut self, job: Job, flushed: bool) {
        // A job must see every point written before it was asked for; when
        // they could not be flushed, the job fails with the flush's cause.
        let cause = self
            .queue
            .state
            .lock()
            .failure
            .as_ref()
            .map_or_else(String::new, |(_, m)| m.clone());
        let unflushed = || {
            Error::io(
                "the points written before it could not be flushed",
                std::io::Error::other(cause.clone()),
            )
        };
        match job {
            Job::Rollup(now, reply) => {
                let r = if flushed {
                    self.rollup(now)
                } else {
                    Err(unflushed())
                };
                let _ = reply.send(self.note("rollup", r));
            }
            Job::Prune(now, reply) => {
                let r = if flushed {
                    self.prune(now)
                } else {
                    Err(unflushed())
                };
                let _ = reply.send(self.note("retention", r));
            }
            Job::Maintain(now, reply) => {
                let r = if flushed {
                    self.maintain(now)
                } else {
                    Err(unflushed())
                };
                let _ = reply.send(self.note("maintenance", r));
            }
            Job::Vacuum(reply) => {
                let r = self.vacuum();
                let _ = reply.send(self.note("vacuum", r));
            }
            Job::Import(tier, buckets, reply) => {
                let _ = reply.send(self.import(tier, &buckets));
            }
        }
    }

    fn note<T>(&self, what: &str, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            self.counters.job_failures.fetch_add(1, Ordering::Relaxed);
            self.counters.record_error(&format!("{what} failed: {e}"));
        }
        r
    }

    pub fn maintain(&mut self, now: i64) -> Result<MaintainReport> {
        let rollup = self.rollup(now)?;
        let prune = self.prune(now)?;
        let reclaim = self.reclaim(super::retention::RESERVE_PAGES)?;
        Ok(MaintainReport {
            rollup,
            prune,
            reclaim,
        })
    }

    /// Changes the tiers on disk: `stage` writes in one IMMEDIATE
    /// transaction, which commits while the state's write lock is held and
    /// `publish` updates the in-memory state under that same lock. Readers
    /// hold the read lock for a whole query, so they see the new rows and the
    /// new state together, never one without the other (which is also why a
    /// query may split itself over several readers). Any failure rolls the
    /// transaction back and leaves the state as it was.
    pub fn commit_staged<T, R>(
        &self,
        what: &str,
        stage: impl FnOnce() -> Result<T>,
        publish: impl FnOnce(&mut State, T) -> R,
    ) -> Result<R> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .ctx(&format!("begin {what}"))?;
        let staged = match stage() {
            Ok(v) => v,
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        };
        let mut st = self.shared.write();
        if let Err(e) = self
            .conn
            .execute_batch("COMMIT")
            .ctx(&format!("commit {what}"))
        {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(e);
        }
        Ok(publish(&mut st, staged))
    }

    /// Runs a WAL checkpoint (`PASSIVE` or `TRUNCATE`); failures are logged,
    /// not fatal: the WAL is simply checkpointed later.
    pub fn checkpoint(&mut self, mode: &str) {
        if self.memory {
            return;
        }
        match self
            .conn
            .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                r.get::<_, i64>(0)
            }) {
            Ok(_) => self.frames = 0,
            Err(e) => tracing::warn!("wal checkpoint ({mode}) failed: {e}"),
        }
    }

    /// Final flush already done: keep the counters, truncate the WAL so the
    /// file is whole.
    fn finish(&mut self) {
        let saved = self
            .conn
            .execute_batch("BEGIN IMMEDIATE")
            .ctx("begin")
            .and_then(|()| self.counters.persist(&self.conn))
            .and_then(|()| self.conn.execute_batch("COMMIT").ctx("commit"));
        if let Err(e) = saved {
            let _ = self.conn.execute_batch("ROLLBACK");
            tracing::warn!("could not save the write counters: {e}");
        }
        self.checkpoint("TRUNCATE");
        let mut q = self.queue.state.lock();
        q.writer_gone = true;
        // Anything still queued was retried until the drain limit and could
        // not be written: say exactly how much, and why.
        let n = q.pending.len();
        if n > 0 {
            let cause = q
                .failure
                .as_ref()
                .map_or_else(|| "the writer stopped".to_string(), |(_, m)| m.clone());
            q.lost = Some((n, cause.clone()));
            q.pending.clear();
            self.counters
                .dropped_writes
                .fetch_add(n as u64, Ordering::Relaxed);
            self.counters.record_error(&format!(
                "{n} accepted point(s) could not be written within {}s of shutdown and are lost: {cause}",
                SHUTDOWN_DRAIN.as_secs()
            ));
        }
        self.queue.flushed.notify_all();
    }
}

/// Ids for the series of a batch: known ones from the directory, unknown
/// ones numbered after it (in the returned list, to be inserted).
pub fn resolve_series<'a>(
    st: &State,
    refs: impl Iterator<Item = &'a SeriesRef>,
) -> Result<(Vec<u32>, Vec<SeriesKey>)> {
    let base = st.series.len();
    let mut new_series: Vec<SeriesKey> = Vec::new();
    let mut new_ids: HashMap<&SeriesKey, u32> = HashMap::new();
    let mut sids = Vec::new();
    for r in refs {
        let sid = match r {
            SeriesRef::Known(id) => *id,
            SeriesRef::New(key) => match st.ids.get(key) {
                Some(id) => *id,
                None => *new_ids.entry(key).or_insert_with(|| {
                    new_series.push(key.clone());
                    (base + new_series.len() - 1) as u32
                }),
            },
        };
        sids.push(sid);
    }
    if base + new_series.len() > super::state::MAX_SERIES {
        return Err(Error::invalid_input("too many series (at most 16,777,216)"));
    }
    Ok((sids, new_series))
}

/// Inserts new series rows (inside the caller's transaction).
pub fn insert_series(conn: &Connection, first_id: usize, keys: &[SeriesKey]) -> Result<()> {
    let mut ins = conn
        .prepare_cached(
            "INSERT INTO series (id, resource_type, resource_id, metric) VALUES (?1, ?2, ?3, ?4)",
        )
        .ctx("prepare series insert")?;
    for (i, key) in keys.iter().enumerate() {
        ins.execute(rusqlite::params![
            (first_id + i) as i64,
            key.resource_type,
            key.resource_id,
            key.metric
        ])
        .ctx("insert series")?;
    }
    Ok(())
}

/// Makes committed new series visible to readers.
pub fn publish_series(st: &mut State, keys: Vec<SeriesKey>) {
    for key in keys {
        let id = st.series.len() as u32;
        st.ids.insert(key.clone(), id);
        st.series.push(SeriesEntry {
            key,
            raw: Vec::new(),
        });
    }
}

/// Marks the writer as gone if its thread panics, so callers get `Closed`
/// instead of waiting forever.
pub struct GoneOnDrop(pub Arc<Queue>);

impl Drop for GoneOnDrop {
    fn drop(&mut self) {
        let mut q = self.0.state.lock();
        q.writer_gone = true;
        self.0.flushed.notify_all();
    }
}

//! The one thread that writes: it takes batches and jobs from the
//! [`Queue`], appends batches to the journal and publishes them in memory,
//! and runs rollup, retention and vacuum after a flush, so a job sees every
//! point written before it was asked for.
//!
//! Everything here is owned by the writer thread alone: the write
//! connection (inside [`Disk`]), the journal, what the rollup has still to
//! fold, and the batch sequence numbers. Other threads reach it only
//! through the queue and the shared state (see `disk.rs` for the locking).

use crate::counters::Counters;
use crate::disk::{CHECKPOINT_FRAMES, Disk};
use crate::error::{Error, Result, SqlContext};
use crate::journal::{Journal, LogPoint};
use crate::model::{HistoryPoint, SeriesKey, Tier, now_ms};
use crate::queue::{Job, Pending, Queue, SeriesRef, Turn};
use crate::raw::RawPoint;
use crate::rollup::{Fold, RollupContext};
use crate::state::{SeriesEntry, State};
use crate::{MaintainReport, MetricsConfig, PruneReport, RollupReport, VacuumReport, retention};
use parking_lot::RwLock;
use rusqlite::{Connection, TransactionBehavior};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Pause before retrying a failed flush, so a full disk is not hammered.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How long shutdown keeps retrying a failing final flush before it gives
/// up and reports the accepted points it loses.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// What the writer starts from: the opened file and what replay found.
pub struct WriterParts {
    pub disk: Disk,
    /// `None` for an in-memory store.
    pub journal: Option<Journal>,
    pub fold: Fold,
    pub next_seq: u64,
    pub queue: Arc<Queue>,
    pub counters: Arc<Counters>,
    pub config: Arc<RwLock<MetricsConfig>>,
    /// Journal positions remote-write readers still need (`tail.rs`).
    pub holds: Arc<crate::tail::Holds>,
}

pub struct Writer {
    disk: Disk,
    journal: Option<Journal>,
    fold: Fold,
    /// Sequence number of the next flushed batch.
    next_seq: u64,
    queue: Arc<Queue>,
    counters: Arc<Counters>,
    config: Arc<RwLock<MetricsConfig>>,
    /// Points the store lost (could not flush before it stopped).
    lost: Arc<std::sync::atomic::AtomicU64>,
    holds: Arc<crate::tail::Holds>,
}

impl Writer {
    pub fn new(parts: WriterParts, lost: Arc<std::sync::atomic::AtomicU64>) -> Writer {
        let w = Writer {
            disk: parts.disk,
            journal: parts.journal,
            fold: parts.fold,
            next_seq: parts.next_seq,
            queue: parts.queue,
            counters: parts.counters,
            config: parts.config,
            lost,
            holds: parts.holds,
        };
        w.publish_journal_usage();
        w
    }

    /// The writer thread's loop.
    pub fn run(mut self) {
        let mut retry_at: Option<Instant> = None;
        let mut draining_since: Option<Instant> = None;
        loop {
            let Turn {
                batch,
                upto,
                job,
                stop,
            } = self.queue.next_turn(retry_at);
            let flushed = self.flush_batch(batch, upto);
            retry_at = (!flushed).then(|| Instant::now() + RETRY_AFTER);
            if let Some(job) = job {
                self.run_job(job, flushed);
            }
            if stop {
                if self.queue.is_empty() {
                    break;
                }
                // Keep retrying a failing final flush for a while (a full
                // disk may clear), then give up and say what is lost.
                let since = *draining_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= DRAIN_LIMIT {
                    break;
                }
                std::thread::sleep(RETRY_AFTER.min(DRAIN_LIMIT.saturating_sub(since.elapsed())));
                retry_at = None;
            }
        }
        self.finish();
    }

    /// Flushes `batch`; on failure puts it back at the head of the queue.
    fn flush_batch(&mut self, batch: Vec<Pending>, upto: u64) -> bool {
        if batch.is_empty() {
            self.queue.flushed(upto);
            return true;
        }
        let n = batch.len();
        match self.flush(&batch) {
            Ok(()) => {
                self.counters.flushes.fetch_add(1, Ordering::Relaxed);
                self.counters.last_flush.store(now_ms(), Ordering::Relaxed);
                self.queue.flushed(upto);
                if self.disk.frames >= CHECKPOINT_FRAMES {
                    self.disk.checkpoint("PASSIVE");
                }
                true
            }
            Err(e) => {
                self.counters.flush_failures.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .record_error(&format!("flush of {n} points failed: {e}"));
                self.queue.failed(batch, upto, e.to_string());
                false
            }
        }
    }

    /// Makes one batch durable (journal append; new series in SQLite
    /// first), then publishes it in memory.
    fn flush(&mut self, batch: &[Pending]) -> Result<()> {
        let (sids, new_series) = {
            let st = self.disk.shared.read();
            resolve_series(&st, batch.iter().map(|p| &p.series))?
        };
        let points = dedup(
            batch
                .iter()
                .zip(sids)
                .map(|(p, sid)| LogPoint {
                    sid,
                    ts: p.ts,
                    value: p.value,
                })
                .collect(),
        );
        let first_new = self.disk.shared.read().series.len();
        if !new_series.is_empty() {
            // New series rows are made durable (the WAL fsynced) before the
            // journal can hold points of them: the journal is fsynced at the
            // next rollup, while a commit under `synchronous=NORMAL` reaches
            // the disk only at a checkpoint, and after a power cut in
            // between, points of a series the file does not know would stop
            // the open. New series are rare (a new guest): one fsync each.
            let conn = &mut self.disk.conn;
            conn.pragma_update(None, "synchronous", "FULL")
                .ctx("set synchronous")?;
            let committed = (|| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .ctx("begin new series")?;
                insert_series(&tx, first_new, &new_series)?;
                tx.commit().ctx("commit new series")
            })();
            conn.pragma_update(None, "synchronous", "NORMAL")
                .ctx("set synchronous")?;
            committed?;
            self.disk.frames += new_series.len().div_ceil(16) + 1;
        }
        let seq = self.next_seq;
        let series_count = first_new + new_series.len();
        if let Some(j) = &mut self.journal {
            // New series are published even if the append fails: their
            // rows are committed, and the retried batch finds them.
            if let Err(e) = j.append(seq, &points, series_count) {
                publish_series(&mut self.disk.shared.write(), new_series);
                return Err(e);
            }
        }
        self.next_seq += 1;
        let mut st = self.disk.shared.write();
        publish_series(&mut st, new_series);
        let raw_floor = st.floors.raw;
        for p in &points {
            let point = RawPoint::at(p.ts, p.value);
            if self.fold.note(seq, p.sid, point, raw_floor) {
                st.late_points += 1;
            } else {
                st.series[p.sid as usize].raw.upsert(point);
            }
        }
        drop(st);
        self.publish_journal_usage();
        Ok(())
    }

    fn run_job(&mut self, job: Job, flushed: bool) {
        // A job must see every point written before it was asked for.
        let unflushed = |c: &Counters| {
            Error::io(
                "the flush before the job failed",
                std::io::Error::other(c.last_error_message()),
            )
        };
        match job {
            Job::Rollup(now, reply) => {
                let r = if flushed {
                    self.rollup(now)
                } else {
                    Err(unflushed(&self.counters))
                };
                let _ = reply.send(self.note("rollup", r));
            }
            Job::Prune(now, reply) => {
                let r = if flushed {
                    self.prune(now)
                } else {
                    Err(unflushed(&self.counters))
                };
                let _ = reply.send(self.note("retention", r));
            }
            Job::Maintain(now, reply) => {
                let r = if flushed {
                    self.maintain(now)
                } else {
                    Err(unflushed(&self.counters))
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
            Job::Run(work) => work(self),
        }
    }

    fn note<T>(&self, what: &str, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            self.counters.job_failures.fetch_add(1, Ordering::Relaxed);
            self.counters.record_error(&format!("{what} failed: {e}"));
        }
        r
    }

    fn rollup(&mut self, now: i64) -> Result<RollupReport> {
        // The fold about to be committed must not be more durable than the
        // points it folds: sync the journal first (also the power-cut bound).
        if let Some(j) = &mut self.journal {
            j.sync()?;
        }
        let (raw_floor, floors) = {
            let config = self.config.read();
            let old = self.disk.shared.read().floors;
            (
                retention::raw_floor_for(now, &config),
                retention::floors_for(now, &config, &self.fold, old),
            )
        };
        let report = self.fold.rollup(
            &mut self.disk,
            now,
            RollupContext {
                last_seq: self.next_seq.saturating_sub(1),
                next_seq: self.next_seq,
                raw_floor,
                floors,
                counters: &self.counters,
            },
        )?;
        if let Some(j) = &mut self.journal {
            let series = self.disk.shared.read().series.len();
            if let Err(e) = j.mark(self.next_seq.saturating_sub(1), now, series) {
                tracing::warn!("could not note the rollup in the raw journal: {e}");
            }
        }
        self.release_journal()?;
        Ok(report)
    }

    fn prune(&mut self, now: i64) -> Result<PruneReport> {
        let config = self.config.read().clone();
        let mut report =
            retention::prune(&mut self.disk, &self.fold, now, &config, &self.counters)?;
        if self.disk.checkpoint("TRUNCATE") {
            self.fold.durable_raw_floor = self.disk.shared.read().floors.raw;
        }
        report.journal_segments_deleted = self.release_journal()? as u64;
        Ok(report)
    }

    fn maintain(&mut self, now: i64) -> Result<MaintainReport> {
        let rollup = self.rollup(now)?;
        let mut prune = self.prune(now)?;
        // What this maintenance removed, whichever of its passes did it (a
        // rollup that seals an hour prunes first, see drop_expired).
        prune.minute_buckets += rollup.expired_buckets[0];
        prune.hourly_buckets += rollup.expired_buckets[1];
        prune.daily_buckets += rollup.expired_buckets[2];
        let reclaim = retention::reclaim(&mut self.disk, retention::RESERVE_PAGES, &self.counters)?;
        Ok(MaintainReport {
            rollup,
            prune,
            reclaim,
        })
    }

    fn vacuum(&mut self) -> Result<VacuumReport> {
        let reclaim = retention::reclaim(&mut self.disk, 0, &self.counters)?;
        Ok(VacuumReport { reclaim })
    }

    /// The write connection, for work of other modules run on this thread.
    pub(crate) fn conn(&mut self) -> &mut Connection {
        &mut self.disk.conn
    }

    pub(crate) fn disk(&self) -> &Disk {
        &self.disk
    }

    pub(crate) fn shared(&self) -> &RwLock<State> {
        &self.disk.shared
    }

    pub(crate) fn fold_mut(&mut self) -> &mut Fold {
        &mut self.fold
    }

    /// The raw journal's directory (`None` for an in-memory store). Any
    /// append so far is readable there: appends are plain writes.
    pub(crate) fn journal_dir(&self) -> Option<std::path::PathBuf> {
        self.journal.as_ref().map(|j| j.dir().to_path_buf())
    }

    fn import(&mut self, tier: Tier, buckets: &[(SeriesKey, HistoryPoint)]) -> Result<usize> {
        crate::import::import(&self.disk, tier, buckets)
    }

    /// Deletes the journal segments nothing needs any more: every point in
    /// them is below the raw floor and folded into tiers that are durable.
    fn release_journal(&mut self) -> Result<usize> {
        let Some(j) = &mut self.journal else {
            return Ok(0);
        };
        let raw_floor = self.fold.durable_raw_floor;
        let durable = self.fold.durable_seq;
        // Raw retention also bounds how long a remote-write reader that is
        // behind keeps segments it has not read (`tail.rs`).
        let keep_for = self.config.read().retention.raw;
        let holds = &self.holds;
        let n = j.delete(|s| {
            let unneeded =
                s.max_ts < raw_floor && s.last_seq <= durable && !holds.keeps(s, keep_for);
            if unneeded {
                holds.deleted(s);
            }
            unneeded
        })?;
        self.publish_journal_usage();
        Ok(n)
    }

    /// Appends a note to the raw journal (`cursors.rs`); nothing without one.
    pub(crate) fn append_note(&mut self, body: &[u8]) -> Result<()> {
        let series = self.disk.shared.read().series.len();
        let last = self.next_seq.saturating_sub(1);
        if let Some(j) = &mut self.journal {
            j.note(last, body, series)?;
        }
        Ok(())
    }

    fn publish_journal_usage(&self) {
        let (segments, bytes) = self.journal.as_ref().map_or((0, 0), Journal::usage);
        self.counters
            .journal_segments
            .store(segments as u64, Ordering::Relaxed);
        self.counters.journal_bytes.store(bytes, Ordering::Relaxed);
        let staged = self.journal.as_ref().map_or(0, Journal::staged_bytes);
        self.counters
            .journal_staged_bytes
            .store(staged, Ordering::Relaxed);
    }

    /// Final flush already attempted: sync the journal, keep the counters,
    /// truncate the WAL so the file is whole, and report what could not be
    /// flushed.
    fn finish(&mut self) {
        if let Some(j) = &mut self.journal
            && let Err(e) = j.close()
        {
            tracing::warn!("could not sync the raw journal at close: {e}");
        }
        if let Err(e) = self.counters.persist_now(&self.disk.conn) {
            tracing::warn!("could not save the write counters: {e}");
        }
        self.disk.checkpoint("TRUNCATE");
        let lost = self.queue.writer_gone();
        if lost > 0 {
            self.lost.fetch_add(lost as u64, Ordering::Relaxed);
            self.counters.record_error(&format!(
                "{lost} accepted points could not be flushed before shutdown and are lost (the last failure: {})",
                self.counters.last_error_message()
            ));
        }
    }
}

/// One point per series and second: the last write wins (the sort is
/// stable, so "last" is the order of writing). Sorted by series, then time,
/// as the journal wants them.
fn dedup(mut pts: Vec<LogPoint>) -> Vec<LogPoint> {
    let second = |p: &LogPoint| (p.sid, p.ts.div_euclid(1000));
    pts.sort_by_key(second);
    let mut out: Vec<LogPoint> = Vec::with_capacity(pts.len());
    for p in pts {
        match out.last_mut() {
            Some(last) if second(last) == second(&p) => *last = p,
            _ => out.push(p),
        }
    }
    out
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
            // A series merged since the caller looked it up: its target.
            SeriesRef::Known(id) => crate::merge::target(st, *id),
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
    if base + new_series.len() > crate::state::MAX_SERIES {
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
            raw: Default::default(),
        });
    }
}

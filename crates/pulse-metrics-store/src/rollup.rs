//! Rollup: raw -> minute -> hourly -> daily for closed buckets.
//!
//! Every bucket is recomputed whole from the tier below (never incremented),
//! so running a rollup twice changes nothing and a late raw point simply
//! marks its minute dirty again. Only where the tier below has already been
//! pruned is a late point merged into the existing aggregate instead.
//!
//! Minute buckets of an hour that has not closed are not written: they are
//! computed from the raw tier when asked for (`State::open_hours`), or held
//! in memory (`State::open`) when late points were merged into them. When
//! the hour closes its three minute chunks are written together with the
//! hourly bucket they make, in the pass's transaction. Until then the
//! journal keeps their points, so a crash loses nothing: they are
//! recomputed at open.
//!
//! [`Fold`] is what the rollup has still to do: the raw points of each
//! (hour, series) not sealed yet, and the days whose daily bucket waits.

use crate::codec::Agg;
use crate::counters::Counters;
use crate::disk::Disk;
use crate::error::Result;
use crate::raw::RawPoint;
use crate::raw::RawSeries;
use crate::state::{ChunkTier, DAY, Floors, HOUR, MINUTE, OpenHour, State, floor_to};
use crate::tiers::{self, Buckets};
use crate::{RollupReport, schema};
use rusqlite::Connection;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

// Sealing an hour writes its minute chunks whole: a chunk never spans two
// hours, so a minute chunk's span must divide the hour.
const _: () = assert!(HOUR % (ChunkTier::MINUTE.bucket * ChunkTier::MINUTE.span as i64) == 0);

/// `meta` keys the rollup keeps.
pub mod key {
    /// `now` of the latest rollup (seconds).
    pub const ROLLED_TO: &str = "rolled_to";
    /// Every batch up to this one is folded into sealed chunks.
    pub const FOLDED_SEQ: &str = "folded_seq";
    /// Sequence number of the next batch.
    pub const NEXT_SEQ: &str = "next_seq";
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

/// Unsealed raw points by series, then hour. A series has one or two
/// unsealed hours at a time, and every flushed point is noted here: finding
/// its entry must cost a vector index, not a tree search (40,000 series at
/// 5 s are 8,000 points a second, and a replay at open notes millions).
#[derive(Debug, Default)]
pub struct Work {
    by_sid: Vec<Vec<(i64, HourWork)>>,
}

impl Work {
    /// The entry of (hour, series), created for batch `seq` if absent.
    fn entry(&mut self, hour: i64, sid: u32, seq: u64) -> &mut HourWork {
        let i = sid as usize;
        if self.by_sid.len() <= i {
            self.by_sid.resize_with(i + 1, Vec::new);
        }
        let list = &mut self.by_sid[i];
        let at = match list.iter().position(|(h, _)| *h == hour) {
            Some(at) => at,
            None => {
                list.push((
                    hour,
                    HourWork {
                        min_seq: seq,
                        ..HourWork::default()
                    },
                ));
                list.len() - 1
            }
        };
        &mut list[at].1
    }

    pub fn iter(&self) -> impl Iterator<Item = ((i64, u32), &HourWork)> {
        self.by_sid
            .iter()
            .enumerate()
            .flat_map(|(sid, list)| list.iter().map(move |(h, w)| ((*h, sid as u32), w)))
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = ((i64, u32), &mut HourWork)> {
        self.by_sid
            .iter_mut()
            .enumerate()
            .flat_map(|(sid, list)| list.iter_mut().map(move |(h, w)| ((*h, sid as u32), w)))
    }

    fn get_mut(&mut self, (hour, sid): (i64, u32)) -> Option<&mut HourWork> {
        self.by_sid
            .get_mut(sid as usize)?
            .iter_mut()
            .find(|(h, _)| *h == hour)
            .map(|(_, w)| w)
    }

    fn remove(&mut self, (hour, sid): (i64, u32)) {
        if let Some(list) = self.by_sid.get_mut(sid as usize) {
            list.retain(|(h, _)| *h != hour);
        }
    }

    pub fn keys(&self) -> impl Iterator<Item = (i64, u32)> + '_ {
        self.iter().map(|(k, _)| k)
    }

    /// Moves the work of each merged series (`plan`: from -> into) to its
    /// target; minutes in `reopened` (per (hour, target)) are recomputed.
    pub fn merge(&mut self, plan: &BTreeMap<u32, u32>, reopened: &BTreeMap<(i64, u32), u64>) {
        for (&from, &into) in plan {
            let Some(list) = self.by_sid.get_mut(from as usize) else {
                continue;
            };
            for (hour, w) in std::mem::take(list) {
                let t = self.entry(hour, into, w.min_seq);
                t.min_seq = t.min_seq.min(w.min_seq);
                t.dirty |= w.dirty | reopened.get(&(hour, into)).copied().unwrap_or(0);
                t.late.extend(w.late);
            }
        }
    }
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

/// A change to one bucket of a coarser tier.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// Recomputed from the complete tier below.
    Set(Option<Agg>),
    /// Points whose finer buckets are gone: add them in.
    Merge(Agg),
}

impl Op {
    fn apply(self, bucket: &mut Option<Agg>) {
        match self {
            Op::Set(v) => *bucket = v,
            Op::Merge(d) => match bucket {
                Some(b) => b.merge(&d),
                None => *bucket = Some(d),
            },
        }
    }
}

fn agg_points(points: &[RawPoint]) -> Option<Agg> {
    let mut it = points.iter();
    let mut acc = Agg::of(it.next()?.value);
    for p in it {
        acc.merge(&Agg::of(p.value));
    }
    Some(acc)
}

/// The 60 minute buckets of `hour` recomputed from raw for the minutes in
/// `recompute` (bit i = minute i), the others taken from `base`, and the
/// `late` points (already reduced to one per second) merged in.
fn rebuild_hour(
    base: &mut [Option<Agg>],
    raw: &RawSeries,
    hour: i64,
    recompute: u64,
    late: &[RawPoint],
) -> usize {
    let mut n = 0;
    for m in (0..60).filter(|m| recompute & (1u64 << m) != 0) {
        base[m] = raw.agg(hour + MINUTE * m as i64, MINUTE);
        n += 1;
    }
    for p in late {
        let m = ((p.ts - hour) / MINUTE) as usize;
        Op::Merge(Agg::of(p.value)).apply(&mut base[m]);
    }
    n
}

/// Mask of the first `closed` minutes of an hour.
fn first_minutes(closed: i64) -> u64 {
    match closed {
        c if c >= 60 => u64::MAX,
        c if c <= 0 => 0,
        c => (1u64 << c) - 1,
    }
}

/// Minutes of `hour` before the raw floor: their raw points are gone.
fn minutes_below_raw_floor(st: &State, hour: i64) -> i64 {
    ((st.floors.raw - hour).max(0) + MINUTE - 1) / MINUTE
}

/// Work items whose minute buckets are computed ahead, on several threads,
/// at a time: sealing an hour at 40,000 series decodes 29 M raw points, the
/// largest part of the pass; a batch bounds the memory the results hold.
const PREFETCH_BATCH: usize = 2048;
/// Threads that compute them (the writer's own is one of them).
const PREFETCH_THREADS: usize = 4;

/// The minute buckets an hour's seal computes from the raw tier.
struct Prefetched {
    /// The minutes they cover.
    mask: u64,
    aggs: Box<[Option<Agg>; 60]>,
    /// When they are the whole hour (no minute below the raw floor): its
    /// minute chunks encoded (`None` for one with no bucket), which the
    /// seal writes unless late points change the buckets.
    encoded: Option<Vec<Option<Vec<u8>>>>,
}

/// The minute buckets from raw of each work item that seals a whole hour
/// from the raw tier (`Pass::hour` checks the minutes match, else
/// computes them itself), computed on several threads.
fn prefetch(
    st: &State,
    now: i64,
    minute_floor: i64,
    batch: &[((i64, u32), &HourWork)],
) -> Vec<Option<Prefetched>> {
    let one = |&((hour, sid), _): &((i64, u32), &HourWork)| -> Option<Prefetched> {
        let sealing =
            hour + HOUR <= now && hour >= minute_floor && !st.open.contains_key(&(sid, hour));
        let raw = &st.series.get(sid as usize)?.raw;
        sealing.then(|| {
            let below = minutes_below_raw_floor(st, hour);
            let mask = !first_minutes(below);
            let aggs = Box::new(raw.minute_aggs(hour, mask));
            let span = ChunkTier::MINUTE.span;
            let encoded = (below == 0).then(|| {
                aggs.chunks(span)
                    .map(|part| {
                        part.iter()
                            .any(Option::is_some)
                            .then(|| crate::codec::encode_chunk(part))
                    })
                    .collect()
            });
            Prefetched {
                mask,
                aggs,
                encoded,
            }
        })
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(PREFETCH_THREADS);
    if !batch.iter().any(|((hour, _), _)| hour + HOUR <= now) {
        return batch.iter().map(|_| None).collect();
    }
    if threads < 2 || batch.len() < 64 {
        return batch.iter().map(one).collect();
    }
    let per = batch.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = batch
            .chunks(per)
            .skip(1)
            .map(|part| scope.spawn(move || part.iter().map(one).collect::<Vec<_>>()))
            .collect();
        let mut out: Vec<_> = batch[..per.min(batch.len())].iter().map(one).collect();
        for p in parts {
            // A panic in a helper is a bug; compute its part here instead
            // of losing the pass.
            match p.join() {
                Ok(v) => out.extend(v),
                Err(_) => return batch.iter().map(one).collect(),
            }
        }
        out
    })
}

/// What the rollup has still to fold.
#[derive(Debug, Default)]
pub struct Fold {
    /// Unsealed raw points by (hour, series).
    pub work: Work,
    /// (day, series) with hourly buckets not yet rolled into a daily one.
    pub daily_pending: BTreeSet<(i64, u32)>,
    /// `now` of the latest rollup (seconds).
    pub rolled_to: i64,
    /// The last batch written before that rollup: late points of later
    /// batches were not folded by it (known at open, to tell the late
    /// points a restart must fold again from those it folded).
    pub rolled_seq: u64,
    /// Every batch up to this one is folded into sealed chunks.
    pub folded_seq: u64,
    /// `folded_seq` as of the last checkpoint: the fold of these batches
    /// survives a power cut, so the journal may let go of them.
    pub durable_seq: u64,
    /// The raw floor as of the last checkpoint. A pass that writes nothing
    /// moves the floor in memory only; the journal keeps what lies above
    /// the floor a restart would use, so a late point replayed then is
    /// folded against every raw neighbour it had.
    pub durable_raw_floor: i64,
}

/// What the rollup needs from the writer besides the fold.
pub struct RollupContext<'a> {
    /// The last flushed batch.
    pub last_seq: u64,
    pub next_seq: u64,
    /// Where raw retention puts the raw floor as of `now`.
    pub raw_floor: i64,
    /// The minute, hourly and daily floors retention asks for as of `now`
    /// (`retention::floors_for`): the pass deletes what lies below them
    /// before it writes (see `retention::drop_expired`).
    pub floors: Floors,
    pub counters: &'a Counters,
}

impl Fold {
    /// Notes a flushed (or replayed) point of batch `seq` for series `sid`
    /// that is not folded yet. Returns whether it is late: its raw minute is
    /// below `raw_floor`, so it waits here instead of in the raw tier.
    pub fn note(&mut self, seq: u64, sid: u32, point: RawPoint, raw_floor: i64) -> bool {
        let hour = floor_to(point.ts, HOUR);
        let w = self.work.entry(hour, sid, seq);
        w.min_seq = w.min_seq.min(seq);
        if point.ts >= raw_floor {
            w.dirty |= 1u64 << ((point.ts - hour) / MINUTE);
            false
        } else {
            w.late.push((seq, point));
            true
        }
    }

    /// The oldest hour holding raw points not sealed yet.
    pub fn oldest_unsealed_hour(&self) -> Option<i64> {
        self.work.keys().map(|(h, _)| h).min()
    }

    /// The oldest day whose hourly buckets are not rolled into a daily one.
    pub fn oldest_unrolled_day(&self) -> Option<i64> {
        self.daily_pending.iter().map(|&(d, _)| d).min()
    }

    /// The last batch every point of which is sealed, given `last_seq`,
    /// counting the (hour, series) sealed by the pass being committed.
    fn folded_seq_after(&self, last_seq: u64, sealed_now: &BTreeSet<(i64, u32)>) -> u64 {
        self.work
            .iter()
            .filter(|(k, _)| !sealed_now.contains(k))
            .map(|(_, w)| w.min_seq.saturating_sub(1))
            .min()
            .unwrap_or(last_seq)
    }

    /// Minute buckets that were rolled up before a restart but not sealed
    /// (hours still open at the last rollup) come back at open: those with
    /// late points are rebuilt from the raw and late points into
    /// `State::open`; the others are computed from raw when asked for.
    pub fn reopen_hours(&mut self, st: &mut State) {
        let rolled_to = self.rolled_to;
        let mut rebuilt = Vec::new();
        for ((hour, sid), w) in self.work.iter_mut() {
            if hour + HOUR <= rolled_to || hour < st.floors.minute {
                continue;
            }
            let closed = ((rolled_to - hour) / MINUTE).clamp(0, 60);
            if closed == 0 {
                continue;
            }
            let mask = first_minutes(closed);
            // Late points the last rollup folded: of closed minutes, from
            // batches it saw. Later ones still wait for the next rollup.
            let folded =
                |(seq, p): &LatePoint| *seq <= self.rolled_seq && (p.ts - hour) / MINUTE < closed;
            let done: Vec<LatePoint> = w.late.iter().filter(|l| folded(l)).copied().collect();
            let late: Vec<RawPoint> = latest_per_second(&done);
            w.dirty &= !mask;
            if late.is_empty() {
                // Computed from raw when asked for (State::open_hours).
                continue;
            }
            let mut buckets: [Option<Agg>; 60] = [None; 60];
            rebuild_hour(
                &mut buckets,
                &st.series[sid as usize].raw,
                hour,
                mask,
                &late,
            );
            w.late.retain(|l| !folded(l));
            rebuilt.push(((sid, hour), Box::new(buckets)));
        }
        st.open.extend(rebuilt);
        st.rolled_to = rolled_to;
    }

    /// Rolls up every closed bucket as of `now` (Unix seconds).
    #[tracing::instrument(skip(self, disk, ctx), level = "debug")]
    pub fn rollup(
        &mut self,
        disk: &mut Disk,
        now: i64,
        ctx: RollupContext<'_>,
    ) -> Result<RollupReport> {
        let started = Instant::now();
        let (next_seq, counters) = (ctx.next_seq, ctx.counters);
        // The pass writes sealed minute chunks straight into the
        // transaction as it goes: at 40,000 series, holding an hour's chunks
        // until the end took ~100 MB.
        disk.begin("rollup")?;
        let old = disk.shared.read().floors;
        let floors = Floors {
            raw: old.raw,
            ..ctx.floors
        };
        // Expired chunks go first, in this transaction: the pages they free
        // are the ones this pass's new chunks then fill (written once).
        let (expired, staged) = match crate::retention::drop_expired(&disk.conn, old, floors)
            .and_then(|expired| Ok((expired, self.stage(disk, now, &ctx, floors)?)))
        {
            Ok(s) => s,
            Err(e) => {
                disk.abort();
                return Err(e);
            }
        };
        let Staged {
            writes,
            deltas,
            folded_seq,
            rolled_to,
            raw_floor,
            open_set,
            open_remove,
            work_done,
            work_keep,
            pending_add,
            pending_remove,
            mut report,
        } = staged;
        let staged_counts = disk.shared.read().disk_buckets;
        // A pass that deletes commits even if it seals nothing; one that
        // does neither leaves the floors to the retention pass.
        let writes = writes || expired.iter().any(|&n| n > 0);
        // The floors this pass commits and publishes.
        let floors = Floors {
            raw: raw_floor,
            ..if writes { floors } else { old }
        };
        let deltas: [i64; 3] = std::array::from_fn(|i| deltas[i] - expired[i] as i64);
        report.expired_buckets = expired;
        let late_folded = report.late_points as u64;
        counters
            .last_rollup
            .store(crate::model::now_ms(), std::sync::atomic::Ordering::Relaxed);
        let saved = || -> Result<()> {
            tiers::save_counts(&disk.conn, tiers::add_counts(staged_counts, deltas))?;
            schema::meta_set(&disk.conn, key::ROLLED_TO, rolled_to)?;
            schema::meta_set(&disk.conn, key::FOLDED_SEQ, folded_seq as i64)?;
            crate::retention::save_floors(&disk.conn, floors)?;
            schema::meta_set(&disk.conn, key::NEXT_SEQ, next_seq as i64)?;
            counters.persist(&disk.conn)
        };
        // A pass that seals nothing changes no tier on disk: it writes
        // nothing either (most passes within an hour). The floors and the
        // marks it moved in memory are saved by the next pass that seals;
        // after a crash before it, the raw points and open minutes it
        // dropped or computed simply come back from the journal.
        if writes && let Err(e) = saved() {
            disk.abort();
            return Err(e);
        }
        disk.finish("rollup", writes, |st| {
            for k in &open_remove {
                st.open.remove(k);
            }
            for (k, v) in open_set {
                st.open.insert(k, v);
            }
            for (i, d) in deltas.iter().enumerate() {
                st.disk_buckets[i] = st.disk_buckets[i].saturating_add_signed(*d);
            }
            st.late_points = st.late_points.saturating_sub(late_folded);
            st.floors = floors;
            st.rolled_to = rolled_to;
            st.drop_raw_below(raw_floor)
        })?;
        for k in work_done {
            self.work.remove(k);
        }
        for (k, dirty, late) in work_keep {
            if let Some(w) = self.work.get_mut(k) {
                w.dirty = dirty;
                w.late = late;
            }
        }
        for k in pending_remove {
            self.daily_pending.remove(&k);
        }
        self.daily_pending.extend(pending_add);
        self.rolled_to = rolled_to;
        self.folded_seq = folded_seq;
        // An hour's seal is the biggest transaction; truncating after each
        // pass keeps the WAL file near the size of the last few commits, and
        // makes the fold durable before the journal lets go of its points.
        if writes && disk.checkpoint("TRUNCATE") {
            self.durable_seq = folded_seq;
            self.durable_raw_floor = raw_floor;
        }
        report.raw_floor = raw_floor.max(0) * 1000;
        report.floors = floors.to_ms();
        report.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        Ok(report)
    }
}

/// What a pass leaves to commit and publish.
struct Staged {
    /// Whether any tier on disk changed (else the transaction is rolled
    /// back: nothing to save).
    writes: bool,
    /// Change of the stored buckets per tier (minute, hourly, daily).
    deltas: [i64; 3],
    folded_seq: u64,
    rolled_to: i64,
    raw_floor: i64,
    open_set: Vec<((u32, i64), OpenHour)>,
    open_remove: Vec<(u32, i64)>,
    work_done: Vec<(i64, u32)>,
    work_keep: Vec<((i64, u32), u64, Vec<LatePoint>)>,
    pending_add: Vec<(i64, u32)>,
    pending_remove: Vec<(i64, u32)>,
    report: RollupReport,
}

impl Fold {
    /// Runs a pass inside the open transaction, under the state's read lock.
    /// `floors` are those the pass commits (the raw floor is `st`'s).
    fn stage(
        &self,
        disk: &Disk,
        now: i64,
        ctx: &RollupContext<'_>,
        floors: Floors,
    ) -> Result<Staged> {
        let st = disk.shared.read();
        let conn = &disk.conn;
        let mut pass = Pass::new(now, ctx.last_seq, floors.minute);
        let work: Vec<_> = self.work.iter().collect();
        for batch in work.chunks(PREFETCH_BATCH) {
            let fresh = prefetch(&st, now, floors.minute, batch);
            for (((hour, sid), w), fresh) in batch.iter().zip(fresh) {
                pass.hour(conn, &st, *hour, *sid, w, fresh)?;
            }
            pass.minute.write_sealed(conn)?;
        }
        let daily_ops = pass.hourly_tier(conn, floors.hourly, &self.daily_pending)?;
        pass.daily_tier(conn, floors.daily, daily_ops)?;

        // Everything not sealed by this pass keeps its oldest batch.
        let done: BTreeSet<(i64, u32)> = pass.work_done.iter().copied().collect();
        let folded_seq = self.folded_seq_after(ctx.last_seq, &done);
        // Raw points past raw retention are dropped as soon as they are
        // folded, not only at the hourly prune: memory and the journal then
        // hold raw retention plus one rollup interval instead of plus an
        // hour (docs/storage.md).
        let unsealed = self
            .work
            .keys()
            .filter(|k| !done.contains(k))
            .map(|(h, _)| h)
            .min()
            .unwrap_or(i64::MAX);
        drop(st);
        let d1 = pass.hourly.write(conn)?;
        let d2 = pass.daily.write(conn)?;
        Ok(Staged {
            writes: pass.minute_writes > 0 || !pass.hourly.is_empty() || !pass.daily.is_empty(),
            deltas: [pass.minute_delta, d1, d2],
            folded_seq,
            rolled_to: self.rolled_to.max(now),
            raw_floor: floors.raw.max(ctx.raw_floor.min(unsealed)),
            open_set: pass.open_set,
            open_remove: pass.open_remove,
            work_done: pass.work_done,
            work_keep: pass.work_keep,
            pending_add: pass.pending_add,
            pending_remove: pass.pending_remove,
            report: pass.report,
        })
    }
}

/// One rollup pass's pending changes, built under the state's read lock and
/// committed at the end.
struct Pass {
    now: i64,
    /// The minute floor as of this pass: hours below it have no minute
    /// chunks (they were pruned, possibly by this very pass).
    minute_floor: i64,
    /// Minute chunks are written as each hour is sealed, not held.
    minute_writes: usize,
    minute_delta: i64,
    minute: Edits,
    hourly: Edits,
    daily: Edits,
    /// Keyed (series, hour), as `State::open` is.
    open_set: Vec<((u32, i64), OpenHour)>,
    open_remove: Vec<(u32, i64)>,
    hourly_ops: Vec<(u32, i64, Op)>,
    work_done: Vec<(i64, u32)>,
    work_keep: Vec<((i64, u32), u64, Vec<LatePoint>)>,
    pending_add: Vec<(i64, u32)>,
    pending_remove: Vec<(i64, u32)>,
    report: RollupReport,
}

impl Pass {
    fn new(now: i64, seq: u64, minute_floor: i64) -> Pass {
        Pass {
            now,
            minute_floor,
            minute_writes: 0,
            minute_delta: 0,
            minute: Edits::new(ChunkTier::MINUTE, seq),
            hourly: Edits::new(ChunkTier::HOURLY, seq),
            daily: Edits::new(ChunkTier::DAILY, seq),
            open_set: Vec::new(),
            open_remove: Vec::new(),
            hourly_ops: Vec::new(),
            work_done: Vec::new(),
            work_keep: Vec::new(),
            pending_add: Vec::new(),
            pending_remove: Vec::new(),
            report: RollupReport {
                now: now * 1000,
                ..RollupReport::default()
            },
        }
    }

    /// The minute tier for one (hour, series): recompute its closed dirty
    /// minutes, merge its late points, seal it if the hour closed.
    fn hour(
        &mut self,
        conn: &Connection,
        st: &State,
        hour: i64,
        sid: u32,
        w: &HourWork,
        prefetched: Option<Prefetched>,
    ) -> Result<()> {
        let now = self.now;
        let hour_closed = hour + HOUR <= now;
        let closed = ((now - hour) / MINUTE).clamp(0, 60);
        let roll = w.dirty & first_minutes(closed);
        let (late_now, late_keep): (Vec<LatePoint>, Vec<LatePoint>) = w
            .late
            .iter()
            .partition(|(_, p)| (p.ts - hour) / MINUTE < closed);
        if roll == 0 && late_now.is_empty() && !hour_closed {
            return Ok(());
        }
        self.report.late_points += late_now.len();
        let late_now = latest_per_second(&late_now);
        if hour < self.minute_floor {
            // The minute chunk of this hour was pruned: only late points
            // can land here (retention never passes unsealed raw data).
            if roll != 0 {
                tracing::warn!(
                    hour,
                    sid,
                    "raw points below the minute floor; merging them into the hourly tier"
                );
                let pts = st.series[sid as usize].raw.range(hour, hour + HOUR - 1);
                if let Some(d) = agg_points(&pts) {
                    self.hourly_ops.push((sid, hour, Op::Merge(d)));
                }
            }
            if let Some(d) = agg_points(&late_now) {
                self.hourly_ops.push((sid, hour, Op::Merge(d)));
            }
            if late_keep.is_empty() {
                self.work_done.push((hour, sid));
            } else {
                self.work_keep.push(((hour, sid), 0, late_keep));
            }
            return Ok(());
        }
        let held = st.open.get(&(sid, hour));
        let raw = &st.series[sid as usize].raw;
        // The minute chunks a helper thread encoded, while they are what
        // the buckets hold.
        let mut encoded = None;
        let rolled = if hour_closed {
            u64::MAX
        } else {
            first_minutes(closed)
        };
        let mut buckets: Buckets = match held {
            Some(open) => {
                let mut b = open.to_vec();
                self.report.minute_buckets += rebuild_hour(&mut b, raw, hour, roll, &[]);
                b
            }
            None => {
                if !hour_closed && late_now.is_empty() {
                    // Nothing to keep: its minutes come from the raw tier
                    // when asked for (State::open_hours).
                    self.report.minute_buckets += (roll & rolled).count_ones() as usize;
                    self.work_keep
                        .push(((hour, sid), w.dirty & !roll, late_keep));
                    return Ok(());
                }
                // Minutes from the raw floor on have every point in the raw
                // tier (the floor never passes an hour with unsealed points;
                // it can enter an hour that had none); the ones before it
                // keep what is stored (re-sealing an old hour for a late
                // point).
                let below = minutes_below_raw_floor(st, hour);
                let from_raw = rolled & !first_minutes(below);
                let mut b = if below > 0 {
                    self.minute.hour(conn, hour, sid)?
                } else {
                    vec![None; 60]
                };
                let fresh = match prefetched {
                    Some(p) if p.mask == from_raw => {
                        encoded = p.encoded;
                        p.aggs
                    }
                    _ => Box::new(raw.minute_aggs(hour, from_raw)),
                };
                for m in (0..60).filter(|m| from_raw & (1u64 << m) != 0) {
                    b[m] = fresh[m];
                }
                self.report.minute_buckets += (roll & rolled).count_ones() as usize;
                b
            }
        };
        for p in &late_now {
            let m = ((p.ts - hour) / MINUTE) as usize;
            Op::Merge(Agg::of(p.value)).apply(&mut buckets[m]);
            encoded = None;
        }
        if hour_closed {
            let hourly = Agg::combine(buckets.iter().flatten());
            self.hourly_ops.push((sid, hour, Op::Set(hourly)));
            self.minute_delta += self.minute.seal_hour(conn, hour, sid, &buckets, encoded)?;
            self.minute_writes += 1;
            if held.is_some() {
                self.open_remove.push((sid, hour));
            }
            self.report.hours_sealed += 1;
            self.work_done.push((hour, sid));
        } else {
            // Kept in memory: raw alone cannot give these back (late
            // points merged in, under a raw retention shorter than the hour).
            let mut arr: OpenHour = Box::new([None; 60]);
            arr.copy_from_slice(&buckets);
            self.open_set.push(((sid, hour), arr));
            self.work_keep
                .push(((hour, sid), w.dirty & !roll, late_keep));
        }
        Ok(())
    }

    /// Applies the hourly changes; returns the daily changes they make
    /// (days that closed, and hours merged below the hourly floor).
    fn hourly_tier(
        &mut self,
        conn: &Connection,
        hourly_floor: i64,
        daily_pending: &BTreeSet<(i64, u32)>,
    ) -> Result<Vec<(u32, i64, Op)>> {
        let mut daily_ops: Vec<(u32, i64, Op)> = Vec::new();
        let mut touched: BTreeSet<(i64, u32)> = BTreeSet::new();
        let t = ChunkTier::HOURLY;
        for (sid, hour, op) in std::mem::take(&mut self.hourly_ops) {
            let day = floor_to(hour, DAY);
            if day >= hourly_floor {
                op.apply(&mut self.hourly.get_mut(conn, t.chunk_of(hour), sid)?[t.index_of(hour)]);
                touched.insert((day, sid));
                self.report.hourly_buckets += 1;
            } else {
                let delta = match op {
                    Op::Merge(d) => d,
                    Op::Set(Some(a)) => {
                        tracing::warn!(
                            hour,
                            sid,
                            "hour sealed below the hourly floor; merging into daily"
                        );
                        a
                    }
                    Op::Set(None) => continue,
                };
                daily_ops.push((sid, day, Op::Merge(delta)));
            }
        }
        for &(day, sid) in touched.union(daily_pending) {
            if day + DAY <= self.now {
                let chunk = self.hourly.get(conn, t.chunk_of(day), sid)?;
                daily_ops.push((sid, day, Op::Set(Agg::combine(chunk.iter().flatten()))));
                self.pending_remove.push((day, sid));
            } else {
                self.pending_add.push((day, sid));
            }
        }
        Ok(daily_ops)
    }

    fn daily_tier(
        &mut self,
        conn: &Connection,
        daily_floor: i64,
        ops: Vec<(u32, i64, Op)>,
    ) -> Result<()> {
        let t = ChunkTier::DAILY;
        for (sid, day, op) in ops {
            if day >= daily_floor {
                op.apply(&mut self.daily.get_mut(conn, t.chunk_of(day), sid)?[t.index_of(day)]);
                self.report.daily_buckets += 1;
            } else if let Op::Merge(d) = op {
                // Older than every tier's retention: nothing can hold it.
                self.report.discarded_points += d.count as usize;
            }
        }
        Ok(())
    }
}

/// Chunks a pass holds in memory: reading one more first writes out those
/// it holds (`Edits::write_out`). An hour's seal at 40,000 series touches
/// 40,000 hourly chunks of ~1 KB each.
const EDITS_HELD: usize = 4096;

/// Chunks read and rewritten in this pass: (buckets, count on disk,
/// changed). Only changed chunks are written back.
struct Edits {
    tier: ChunkTier,
    /// The batch every chunk written is marked with.
    seq: u64,
    chunks: BTreeMap<(i64, u32), (Buckets, u64, bool)>,
    /// Change of the stored buckets by chunks already written this pass.
    written: Option<i64>,
    /// Sealed chunks not written yet, by key (`None`: delete the row). An
    /// hour's seal inserts 3 chunks per series; written in key order they
    /// are appended at the B-tree's right edge, which fills each page
    /// (~10 rows of ~400 bytes) instead of splitting pages in the middle
    /// (9.4 a page): fewer pages to the WAL and the file.
    sealed: Vec<(i64, Option<Vec<u8>>)>,
}

impl Edits {
    fn new(tier: ChunkTier, seq: u64) -> Edits {
        Edits {
            tier,
            seq,
            chunks: BTreeMap::new(),
            written: None,
            sealed: Vec::new(),
        }
    }

    /// Whether the pass changes nothing of this tier.
    fn is_empty(&self) -> bool {
        self.written.is_none() && !self.chunks.values().any(|c| c.2)
    }

    fn load(
        &mut self,
        conn: &Connection,
        chunk: i64,
        sid: u32,
    ) -> Result<&mut (Buckets, u64, bool)> {
        use std::collections::btree_map::Entry;
        if self.chunks.len() >= EDITS_HELD && !self.chunks.contains_key(&(chunk, sid)) {
            self.write_out(conn)?;
        }
        match self.chunks.entry((chunk, sid)) {
            Entry::Occupied(e) => Ok(e.into_mut()),
            Entry::Vacant(e) => {
                let stored = tiers::read(conn, self.tier, chunk, sid)?;
                let old = stored
                    .as_ref()
                    .map_or(0, |b| b.iter().flatten().count() as u64);
                let buckets = stored.unwrap_or_else(|| vec![None; self.tier.span]);
                Ok(e.insert((buckets, old, false)))
            }
        }
    }

    /// A chunk to read.
    fn get(&mut self, conn: &Connection, chunk: i64, sid: u32) -> Result<&Buckets> {
        Ok(&self.load(conn, chunk, sid)?.0)
    }

    /// A chunk to change (written back at the end of the pass).
    fn get_mut(&mut self, conn: &Connection, chunk: i64, sid: u32) -> Result<&mut Buckets> {
        let c = self.load(conn, chunk, sid)?;
        c.2 = true;
        Ok(&mut c.0)
    }

    /// The 60 minute buckets of an hour (minute chunks are shorter than an
    /// hour so that several fill a page).
    fn hour(&mut self, conn: &Connection, hour: i64, sid: u32) -> Result<Buckets> {
        let t = self.tier;
        let mut out = Vec::with_capacity(60);
        for chunk in t.chunk_of(hour)..=t.chunk_of(hour + HOUR - 1) {
            out.extend_from_slice(self.get(conn, chunk, sid)?);
        }
        Ok(out)
    }

    /// Writes the minute chunks of a sealed hour at once (in the open
    /// transaction) and forgets them; returns the change in stored buckets.
    fn seal_hour(
        &mut self,
        conn: &Connection,
        hour: i64,
        sid: u32,
        buckets: &[Option<Agg>],
        mut encoded: Option<Vec<Option<Vec<u8>>>>,
    ) -> Result<i64> {
        let t = self.tier;
        let mut delta = 0i64;
        for (i, chunk) in (t.chunk_of(hour)..=t.chunk_of(hour + HOUR - 1)).enumerate() {
            let old = match self.chunks.remove(&(chunk, sid)) {
                Some((_, old, _)) => old,
                None => tiers::population(conn, t, chunk, sid)?,
            };
            let part = &buckets[i * t.span..(i + 1) * t.span];
            // `None`: no bucket, the row goes.
            let data = encoded
                .as_mut()
                .and_then(|e| e.get_mut(i)?.take())
                .or_else(|| {
                    part.iter()
                        .any(Option::is_some)
                        .then(|| crate::codec::encode_chunk(part))
                });
            self.sealed.push((t.key(chunk, sid), data));
            delta += part.iter().flatten().count() as i64 - old as i64;
        }
        Ok(delta)
    }

    /// Writes the sealed chunks held by `seal_hour`, in key order.
    fn write_sealed(&mut self, conn: &Connection) -> Result<()> {
        let mut sealed = std::mem::take(&mut self.sealed);
        sealed.sort_unstable_by_key(|(key, _)| *key);
        for (key, data) in sealed {
            let (chunk, sid) = ChunkTier::split_key(key);
            match data {
                Some(data) => tiers::write_encoded(conn, self.tier, chunk, sid, self.seq, &data)?,
                None => tiers::delete(conn, self.tier, chunk, sid)?,
            }
        }
        Ok(())
    }

    /// Writes every changed chunk and forgets every chunk read; a chunk
    /// needed again is read back, with what this pass wrote.
    fn write_out(&mut self, conn: &Connection) -> Result<()> {
        for ((chunk, sid), (buckets, old, changed)) in std::mem::take(&mut self.chunks) {
            if !changed {
                continue;
            }
            tiers::write(conn, self.tier, chunk, sid, self.seq, &buckets)?;
            *self.written.get_or_insert(0) += buckets.iter().flatten().count() as i64 - old as i64;
        }
        Ok(())
    }

    /// Writes every changed chunk; returns the change in stored buckets
    /// over the pass.
    fn write(&mut self, conn: &Connection) -> Result<i64> {
        self.write_out(conn)?;
        Ok(self.written.unwrap_or(0))
    }
}

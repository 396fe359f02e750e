//! Rollup: raw -> minute -> hourly -> daily for closed buckets.
//!
//! Every bucket is recomputed whole from the tier below (never incremented),
//! so running a rollup twice changes nothing and a late raw point simply
//! marks its minute dirty again. Only where the tier below has already been
//! pruned is a late point merged into the existing aggregate instead.
//!
//! Minute buckets of an hour that has not closed stay in memory (`open`);
//! when the hour closes they are sealed to disk in one chunk together with
//! the hourly bucket they make. Until then the raw log keeps their points,
//! so a crash loses nothing: they are recomputed at open.

use super::codec::Agg;
use super::state::{ChunkTier, DAY, HOUR, MINUTE, OpenHour, RawPoint, floor_to};
use super::tiers::{self, Buckets};
use super::writer::{LatePoint, Writer, latest_per_second};
use super::{RollupReport, schema};
use crate::error::Result;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

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

/// Chunks being rewritten in this pass, with the bucket count they had on disk.
struct Edits {
    tier: ChunkTier,
    chunks: BTreeMap<(i64, u32), (Buckets, u64)>,
}

impl Edits {
    fn new(tier: ChunkTier) -> Edits {
        Edits {
            tier,
            chunks: BTreeMap::new(),
        }
    }

    fn get(&mut self, conn: &rusqlite::Connection, chunk: i64, sid: u32) -> Result<&mut Buckets> {
        use std::collections::btree_map::Entry;
        match self.chunks.entry((chunk, sid)) {
            Entry::Occupied(e) => Ok(&mut e.into_mut().0),
            Entry::Vacant(e) => {
                let stored = tiers::read(conn, self.tier, chunk, sid)?;
                let old = stored
                    .as_ref()
                    .map_or(0, |b| b.iter().flatten().count() as u64);
                let buckets = stored.unwrap_or_else(|| vec![None; self.tier.span]);
                Ok(&mut e.insert((buckets, old)).0)
            }
        }
    }

    /// The 60 minute buckets of an hour (minute chunks are shorter than an
    /// hour so that several fill a page).
    fn hour(&mut self, conn: &rusqlite::Connection, hour: i64, sid: u32) -> Result<Buckets> {
        let t = self.tier;
        let mut out = Vec::with_capacity(60);
        for chunk in t.chunk_of(hour)..=t.chunk_of(hour + HOUR - 1) {
            out.extend_from_slice(self.get(conn, chunk, sid)?);
        }
        Ok(out)
    }

    fn set_hour(
        &mut self,
        conn: &rusqlite::Connection,
        hour: i64,
        sid: u32,
        buckets: &[Option<Agg>],
    ) -> Result<()> {
        let t = self.tier;
        for (i, chunk) in (t.chunk_of(hour)..=t.chunk_of(hour + HOUR - 1)).enumerate() {
            self.get(conn, chunk, sid)?
                .copy_from_slice(&buckets[i * t.span..(i + 1) * t.span]);
        }
        Ok(())
    }

    /// Writes every edited chunk; returns the change in stored buckets.
    fn write(&self, conn: &rusqlite::Connection, seq: u64) -> Result<i64> {
        let mut delta = 0i64;
        for ((chunk, sid), (buckets, old)) in &self.chunks {
            tiers::write(conn, self.tier, *chunk, *sid, seq, buckets)?;
            delta += buckets.iter().flatten().count() as i64 - *old as i64;
        }
        Ok(delta)
    }
}

impl Writer {
    /// Rolls up every closed bucket as of `now` (Unix seconds).
    #[tracing::instrument(skip(self), level = "debug")]
    pub fn rollup(&mut self, now: i64) -> Result<RollupReport> {
        let started = Instant::now();
        let last_seq = self.next_seq.saturating_sub(1);
        let st = self.shared.read();
        let floors = st.floors;

        let mut minute = Edits::new(ChunkTier::MINUTE);
        let mut hourly = Edits::new(ChunkTier::HOURLY);
        let mut daily = Edits::new(ChunkTier::DAILY);
        let mut open_set: Vec<((i64, u32), OpenHour)> = Vec::new();
        let mut open_remove: Vec<(i64, u32)> = Vec::new();
        let mut hourly_ops: Vec<(u32, i64, Op)> = Vec::new();
        let mut work_done: Vec<(i64, u32)> = Vec::new();
        let mut work_keep: Vec<((i64, u32), u64, Vec<LatePoint>)> = Vec::new();
        let mut released: Vec<u32> = Vec::new();
        let mut report = RollupReport {
            now: now * 1000,
            ..RollupReport::default()
        };

        for (&(hour, sid), w) in &self.work {
            let hour_closed = hour + HOUR <= now;
            let closed = ((now - hour) / MINUTE).clamp(0, 60) as u32;
            let mask = if closed >= 60 {
                u64::MAX
            } else {
                (1u64 << closed) - 1
            };
            let roll = w.dirty & mask;
            let (late_now, late_keep): (Vec<LatePoint>, Vec<LatePoint>) = w
                .late
                .iter()
                .partition(|(_, p)| ((p.ts - hour) / MINUTE) < i64::from(closed));
            if roll == 0 && late_now.is_empty() && !hour_closed {
                continue;
            }
            released.extend(late_now.iter().map(|(_, p)| p.slot));
            report.late_points += late_now.len();
            let late_now = latest_per_second(&late_now);
            if hour >= floors.minute {
                let mut buckets: Buckets = match st.open.get(&(hour, sid)) {
                    Some(open) => open.to_vec(),
                    None => minute.hour(&self.conn, hour, sid)?,
                };
                let series = &st.series[sid as usize];
                for m in (0..60).filter(|m| roll & (1u64 << m) != 0) {
                    buckets[m] = series.raw_agg(hour + MINUTE * m as i64, MINUTE);
                    report.minute_buckets += 1;
                }
                for p in &late_now {
                    let m = ((p.ts - hour) / MINUTE) as usize;
                    Op::Merge(Agg::of(p.value)).apply(&mut buckets[m]);
                }
                if hour_closed {
                    hourly_ops.push((sid, hour, Op::Set(Agg::combine(buckets.iter().flatten()))));
                    minute.set_hour(&self.conn, hour, sid, &buckets)?;
                    if st.open.contains_key(&(hour, sid)) {
                        open_remove.push((hour, sid));
                    }
                    report.hours_sealed += 1;
                    work_done.push((hour, sid));
                } else {
                    let arr: OpenHour = Box::new(buckets.try_into().expect("60 minute buckets"));
                    open_set.push(((hour, sid), arr));
                    work_keep.push(((hour, sid), w.dirty & !roll, late_keep));
                }
            } else {
                // The minute chunk of this hour was pruned: only late points
                // can land here (retention never passes unsealed raw data).
                if roll != 0 {
                    tracing::warn!(
                        hour,
                        sid,
                        "raw points below the minute floor; merging them into the hourly tier"
                    );
                    let series = &st.series[sid as usize];
                    let pts = series.raw_range(hour, hour + HOUR - 1);
                    if let Some(d) = agg_points(pts) {
                        hourly_ops.push((sid, hour, Op::Merge(d)));
                    }
                }
                if let Some(d) = agg_points(&late_now) {
                    hourly_ops.push((sid, hour, Op::Merge(d)));
                }
                if late_keep.is_empty() {
                    work_done.push((hour, sid));
                } else {
                    work_keep.push(((hour, sid), 0, late_keep));
                }
            }
        }

        // Hourly tier.
        let mut daily_ops: Vec<(u32, i64, Op)> = Vec::new();
        let mut touched: BTreeSet<(i64, u32)> = BTreeSet::new();
        for (sid, hour, op) in hourly_ops {
            let day = floor_to(hour, DAY);
            if day >= floors.hourly {
                let t = ChunkTier::HOURLY;
                op.apply(&mut hourly.get(&self.conn, t.chunk_of(hour), sid)?[t.index_of(hour)]);
                touched.insert((day, sid));
                report.hourly_buckets += 1;
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
        let mut pending_add = Vec::new();
        let mut pending_remove = Vec::new();
        let candidates: BTreeSet<(i64, u32)> =
            touched.union(&self.daily_pending).copied().collect();
        for (day, sid) in candidates {
            if day + DAY <= now {
                let t = ChunkTier::HOURLY;
                let chunk = hourly.get(&self.conn, t.chunk_of(day), sid)?;
                daily_ops.push((sid, day, Op::Set(Agg::combine(chunk.iter().flatten()))));
                pending_remove.push((day, sid));
            } else {
                pending_add.push((day, sid));
            }
        }

        // Daily tier.
        for (sid, day, op) in daily_ops {
            if day >= floors.daily {
                let t = ChunkTier::DAILY;
                op.apply(&mut daily.get(&self.conn, t.chunk_of(day), sid)?[t.index_of(day)]);
                report.daily_buckets += 1;
            } else if let Op::Merge(d) = op {
                // Older than every tier's retention: nothing can hold it.
                report.discarded_points += d.count as usize;
            }
        }

        // Everything not sealed by this pass keeps its oldest batch.
        let done: BTreeSet<(i64, u32)> = work_done.iter().copied().collect();
        let folded_seq = self
            .work
            .iter()
            .filter(|(k, _)| !done.contains(k))
            .map(|(_, w)| w.min_seq.saturating_sub(1))
            .min()
            .unwrap_or(last_seq);
        let rolled_to = self.rolled_to.max(now);
        // Raw points past raw retention are dropped as soon as they are
        // folded, not only at the hourly prune: the log then holds raw
        // retention plus one rollup interval instead of plus an hour, which
        // is a third of the file (docs/storage.md).
        let unsealed = self
            .work
            .keys()
            .filter(|k| !done.contains(k))
            .map(|&(h, _)| h)
            .min()
            .unwrap_or(i64::MAX);
        let raw_floor = floors.raw.max(self.raw_floor_candidate(now).min(unsealed));

        // The commit takes the state lock for writing.
        drop(st);
        let stage = || -> Result<[i64; 3]> {
            let d0 = minute.write(&self.conn, last_seq)?;
            let d1 = hourly.write(&self.conn, last_seq)?;
            let d2 = daily.write(&self.conn, last_seq)?;
            schema::meta_set(&self.conn, "rolled_to", rolled_to)?;
            schema::meta_set(&self.conn, "folded_seq", folded_seq as i64)?;
            schema::meta_set(&self.conn, "floor_raw", raw_floor)?;
            schema::meta_set(&self.conn, "next_seq", self.next_seq as i64)?;
            schema::meta_set(&self.conn, "last_rollup", crate::model::now_ms())?;
            self.counters.persist(&self.conn)?;
            Ok([d0, d1, d2])
        };
        let dropped = self.commit_staged("rollup", stage, |st, deltas| {
            for k in &open_remove {
                st.open.remove(k);
            }
            for (k, v) in open_set {
                st.open.insert(k, v);
            }
            for (i, d) in deltas.iter().enumerate() {
                st.disk_buckets[i] = st.disk_buckets[i].saturating_add_signed(*d);
            }
            st.late_points = st.late_points.saturating_sub(report.late_points as u64);
            st.floors.raw = raw_floor;
            super::retention::drop_raw_below(st, raw_floor)
        })?;
        released.extend(dropped);
        for k in work_done {
            self.work.remove(&k);
        }
        for (k, dirty, late) in work_keep {
            if let Some(w) = self.work.get_mut(&k) {
                w.dirty = dirty;
                w.late = late;
            }
        }
        for slot in released {
            self.ring.release(slot);
        }
        for k in pending_remove {
            self.daily_pending.remove(&k);
        }
        self.daily_pending.extend(pending_add);
        self.rolled_to = rolled_to;
        self.counters
            .last_rollup
            .store(crate::model::now_ms(), std::sync::atomic::Ordering::Relaxed);
        // An hour's seal is the biggest transaction; truncating after each
        // pass keeps the WAL file near the size of the last few flushes.
        self.checkpoint("TRUNCATE");
        report.raw_floor = raw_floor.max(0) * 1000;
        report.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        Ok(report)
    }
}

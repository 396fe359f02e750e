//! Retention: dropping what each tier no longer keeps, and giving the
//! space back to the file system without a full VACUUM.
//!
//! Floors are aligned to the tier's chunk (raw: minute, minute: hour,
//! hourly: day, daily: day), so a pruned bucket is always whole; and they
//! never pass data that is not yet folded into the next tier.

use super::state::{ChunkTier, DAY, Floors, HOUR, MINUTE, State, floor_to};
use super::tiers;
use super::writer::Writer;
use super::{PruneReport, ReclaimReport, VacuumReport, schema};
use crate::error::{Result, SqlContext};
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Free pages kept for reuse rather than returned to the file system: about
/// what an hour of rollups allocates, so steady state neither shrinks nor
/// grows the file (each shrink would cost page moves, i.e. writes).
pub const RESERVE_PAGES: i64 = 256;

impl Writer {
    /// Applies retention as of `now` (Unix seconds).
    #[tracing::instrument(skip(self), level = "debug")]
    pub fn prune(&mut self, now: i64) -> Result<PruneReport> {
        let started = Instant::now();
        let retention = self.config.read().retention;
        let secs = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4);
        // Oldest hour holding raw points not sealed yet, and oldest day whose
        // hourly buckets are not rolled into a daily one yet.
        let unsealed = self.work.keys().map(|&(h, _)| h).min().unwrap_or(i64::MAX);
        let unrolled_day = self
            .daily_pending
            .iter()
            .map(|&(d, _)| d)
            .min()
            .unwrap_or(i64::MAX);
        let old = self.shared.read().floors;
        let candidate = Floors {
            raw: self.raw_floor_candidate(now).min(unsealed),
            minute: floor_to(now - secs(retention.minute), HOUR).min(unsealed),
            hourly: floor_to(now - secs(retention.hourly), DAY)
                .min(floor_to(unsealed, DAY))
                .min(unrolled_day),
            daily: floor_to(now - secs(retention.daily), DAY),
        };
        let floors = Floors {
            raw: old.raw.max(candidate.raw),
            minute: old.minute.max(candidate.minute),
            hourly: old.hourly.max(candidate.hourly),
            daily: old.daily.max(candidate.daily),
        };
        let mut report = PruneReport {
            now: now * 1000,
            ..PruneReport::default()
        };

        let stage = || -> Result<([u64; 3], Vec<u32>)> {
            let mut removed = [0u64; 3];
            for (i, (tier, floor)) in [
                (ChunkTier::MINUTE, floors.minute),
                (ChunkTier::HOURLY, floors.hourly),
                (ChunkTier::DAILY, floors.daily),
            ]
            .into_iter()
            .enumerate()
            {
                let first_kept = tier.chunk_of(floor);
                let below = tier.key(first_kept, 0);
                removed[i] = tiers::population_between(&self.conn, tier, i64::MIN, below)?;
                let sql = format!("DELETE FROM {} WHERE key < ?1", tier.table);
                self.conn
                    .execute(&sql, [below])
                    .ctx("delete expired chunks")?;
                // A chunk straddling the floor keeps only its newer buckets.
                if tier.chunk_start(first_kept) < floor {
                    let cut = tier.index_of(floor);
                    let mut edits = Vec::new();
                    tiers::scan(
                        &self.conn,
                        tier,
                        first_kept,
                        first_kept,
                        |_| true,
                        |chunk, sid, b| edits.push((chunk, sid, b)),
                    )?;
                    for (chunk, sid, mut buckets) in edits {
                        let seq = tiers::seq(&self.conn, tier, chunk, sid)?.unwrap_or(0);
                        for b in buckets.iter_mut().take(cut) {
                            if b.take().is_some() {
                                removed[i] += 1;
                            }
                        }
                        tiers::write(&self.conn, tier, chunk, sid, seq, &buckets)?;
                    }
                }
            }
            let surplus = self.ring.surplus();
            if !surplus.is_empty() {
                let mut del = self
                    .conn
                    .prepare_cached("DELETE FROM raw_log WHERE slot = ?1")
                    .ctx("prepare log shrink")?;
                for id in &surplus {
                    del.execute([i64::from(*id)]).ctx("shrink log")?;
                }
            }
            schema::meta_set(&self.conn, "floor_raw", floors.raw)?;
            schema::meta_set(&self.conn, "floor_minute", floors.minute)?;
            schema::meta_set(&self.conn, "floor_hourly", floors.hourly)?;
            schema::meta_set(&self.conn, "floor_daily", floors.daily)?;
            schema::meta_set(&self.conn, "next_seq", self.next_seq as i64)?;
            schema::meta_set(&self.conn, "last_retention", crate::model::now_ms())?;
            self.counters.persist(&self.conn)?;
            Ok((removed, surplus))
        };
        let (removed, surplus, released) =
            self.commit_staged("prune", stage, |st, (removed, surplus)| {
                st.floors = floors;
                for (i, r) in removed.iter().enumerate() {
                    st.disk_buckets[i] = st.disk_buckets[i].saturating_sub(*r);
                }
                (removed, surplus, drop_raw_below(st, floors.raw))
            })?;
        report.raw_points = released.len() as u64;
        report.minute_buckets = removed[0];
        report.hourly_buckets = removed[1];
        report.daily_buckets = removed[2];
        for slot in released {
            self.ring.release(slot);
        }
        self.ring.deleted(&surplus);
        report.log_slots_deleted = surplus.len() as u64;
        let (rows, free) = self.ring.usage();
        self.counters
            .log_slots
            .store(rows as u64, Ordering::Relaxed);
        self.counters
            .log_slots_free
            .store(free as u64, Ordering::Relaxed);
        self.counters
            .last_retention
            .store(crate::model::now_ms(), Ordering::Relaxed);
        report.floors =
            [floors.raw, floors.minute, floors.hourly, floors.daily].map(|f| f.max(0) * 1000);
        // Space beyond the reuse reserve goes back to the file system, and
        // big deletes leave the WAL large: give that back too.
        report.bytes_freed = self.free_pages(RESERVE_PAGES)?.0;
        self.checkpoint("TRUNCATE");
        report.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        Ok(report)
    }

    /// Where raw retention puts the raw floor as of `now` (minute-aligned).
    pub fn raw_floor_candidate(&self, now: i64) -> i64 {
        let keep =
            i64::try_from(self.config.read().retention.raw.as_secs()).unwrap_or(i64::MAX / 4);
        floor_to(now.saturating_sub(keep), MINUTE)
    }

    /// Gives free pages beyond `keep` back to the file system; returns the
    /// bytes freed and the free pages left.
    fn free_pages(&mut self, keep: i64) -> Result<(u64, u64)> {
        let pragma = |conn: &rusqlite::Connection, name: &str| -> Result<i64> {
            conn.pragma_query_value(None, name, |r| r.get(0)).ctx(name)
        };
        let page_size = pragma(&self.conn, "page_size")?;
        let free_before = pragma(&self.conn, "freelist_count")?;
        let excess = free_before - keep;
        if excess > 0 {
            // incremental_vacuum frees pages only as its rows are stepped.
            let mut stmt = self
                .conn
                .prepare(&format!("PRAGMA incremental_vacuum({excess})"))
                .ctx("incremental_vacuum")?;
            let mut rows = stmt.query([]).ctx("incremental_vacuum")?;
            while rows.next().ctx("incremental_vacuum")?.is_some() {}
        }
        let free_after = pragma(&self.conn, "freelist_count")?;
        Ok((
            ((free_before - free_after).max(0) * page_size) as u64,
            free_after.max(0) as u64,
        ))
    }

    /// Frees pages beyond `keep`, refreshes the query planner's statistics
    /// and truncates the WAL.
    pub fn reclaim(&mut self, keep: i64) -> Result<ReclaimReport> {
        let started = Instant::now();
        let (bytes_freed, free_pages) = self.free_pages(keep)?;
        self.conn.execute_batch("PRAGMA optimize").ctx("optimize")?;
        self.checkpoint("TRUNCATE");
        let now = crate::model::now_ms();
        schema::meta_set(&self.conn, "last_vacuum", now)?;
        self.counters.last_vacuum.store(now, Ordering::Relaxed);
        Ok(ReclaimReport {
            bytes_freed,
            free_pages,
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    /// Reclaims every free page, truncates the WAL and refreshes the planner.
    pub fn vacuum(&mut self) -> Result<VacuumReport> {
        let reclaim = self.reclaim(0)?;
        Ok(VacuumReport { reclaim })
    }
}

/// Removes raw points older than `floor` from memory; returns their log
/// slots so the caller can release them.
pub fn drop_raw_below(st: &mut State, floor: i64) -> Vec<u32> {
    let mut released = Vec::new();
    for series in &mut st.series {
        let cut = series.raw.partition_point(|p| p.ts < floor);
        released.extend(series.raw.drain(..cut).map(|p| p.slot));
    }
    released
}

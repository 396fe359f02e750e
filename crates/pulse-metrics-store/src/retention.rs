//! Retention: dropping what each tier no longer keeps, and giving the
//! space back to the file system without a full VACUUM.
//!
//! Floors are aligned to the tier's chunk (raw: minute, minute: hour,
//! hourly: day, daily: day), so a pruned bucket is always whole; and they
//! never pass data that is not yet folded into the next tier.

use crate::counters::Counters;
use crate::disk::Disk;
use crate::error::{Result, SqlContext};
use crate::rollup::Fold;
use crate::state::{ChunkTier, DAY, Floors, HOUR, MINUTE, floor_to};
use crate::tiers;
use crate::{MetricsConfig, PruneReport, ReclaimReport, schema};
use rusqlite::Connection;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// `meta` keys of the retention floors.
pub mod key {
    pub const FLOOR_RAW: &str = "floor_raw";
    pub const FLOOR_MINUTE: &str = "floor_minute";
    pub const FLOOR_HOURLY: &str = "floor_hourly";
    pub const FLOOR_DAILY: &str = "floor_daily";
}

/// Free pages kept for reuse rather than returned to the file system: about
/// what an hour of rollups allocates, so steady state neither shrinks nor
/// grows the file (each shrink would cost page moves, i.e. writes).
pub const RESERVE_PAGES: i64 = 256;

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4)
}

/// Where raw retention puts the raw floor as of `now` (minute-aligned).
pub fn raw_floor_for(now: i64, config: &MetricsConfig) -> i64 {
    floor_to(now.saturating_sub(secs(config.retention.raw)), MINUTE)
}

/// Saves the floors in `meta`, in the transaction open on `conn`.
pub fn save_floors(conn: &Connection, floors: Floors) -> Result<()> {
    schema::meta_set(conn, key::FLOOR_RAW, floors.raw)?;
    schema::meta_set(conn, key::FLOOR_MINUTE, floors.minute)?;
    schema::meta_set(conn, key::FLOOR_HOURLY, floors.hourly)?;
    schema::meta_set(conn, key::FLOOR_DAILY, floors.daily)
}

/// The floors restored at open.
pub fn restore_floors(conn: &Connection) -> Result<Floors> {
    Ok(Floors {
        raw: schema::meta_get(conn, key::FLOOR_RAW, 0)?,
        minute: schema::meta_get(conn, key::FLOOR_MINUTE, 0)?,
        hourly: schema::meta_get(conn, key::FLOOR_HOURLY, 0)?,
        daily: schema::meta_get(conn, key::FLOOR_DAILY, 0)?,
    })
}

/// The floors retention asks for as of `now`, held back where data is not
/// folded into the next tier yet, and never lower than `old`.
pub fn floors_for(now: i64, config: &MetricsConfig, fold: &Fold, old: Floors) -> Floors {
    let r = &config.retention;
    let unsealed = fold.oldest_unsealed_hour().unwrap_or(i64::MAX);
    let unrolled_day = fold.oldest_unrolled_day().unwrap_or(i64::MAX);
    let candidate = Floors {
        raw: raw_floor_for(now, config).min(unsealed),
        minute: floor_to(now - secs(r.minute), HOUR).min(unsealed),
        hourly: floor_to(now - secs(r.hourly), DAY)
            .min(floor_to(unsealed, DAY))
            .min(unrolled_day),
        daily: floor_to(now - secs(r.daily), DAY),
    };
    Floors {
        raw: old.raw.max(candidate.raw),
        minute: old.minute.max(candidate.minute),
        hourly: old.hourly.max(candidate.hourly),
        daily: old.daily.max(candidate.daily),
    }
}

/// Deletes the chunks of `tier` below `floor`; a chunk straddling the floor
/// keeps only its newer buckets. Returns the buckets removed.
fn prune_tier(conn: &Connection, tier: ChunkTier, floor: i64) -> Result<u64> {
    let first_kept = tier.chunk_of(floor);
    let below = tier.key(first_kept, 0);
    let mut removed = tiers::population_between(conn, tier, i64::MIN, below)?;
    conn.execute(
        &format!("DELETE FROM {} WHERE key < ?1", tier.table),
        [below],
    )
    .ctx("delete expired chunks")?;
    if tier.chunk_start(first_kept) < floor {
        let cut = tier.index_of(floor);
        let mut edits = Vec::new();
        tiers::scan(
            conn,
            tier,
            first_kept,
            first_kept,
            |_| true,
            |chunk, sid, b| edits.push((chunk, sid, b)),
        )?;
        for (chunk, sid, mut buckets) in edits {
            let mut cut_here = 0;
            for b in buckets.iter_mut().take(cut) {
                if b.take().is_some() {
                    cut_here += 1;
                }
            }
            // Rewrite only what changed: the floor moves once a day, the
            // prune runs every hour.
            if cut_here > 0 {
                let seq = tiers::seq(conn, tier, chunk, sid)?.unwrap_or(0);
                tiers::write(conn, tier, chunk, sid, seq, &buckets)?;
                removed += cut_here;
            }
        }
    }
    Ok(removed)
}

/// Deletes the rolled-up buckets below `floors` in each tier whose floor
/// rose above `old`'s; returns the buckets removed per tier (minute,
/// hourly, daily). The raw floor is the caller's.
///
/// The rollup pass that seals an hour calls this first, inside its own
/// transaction: deleting rows dirties every page they were on, and pages
/// freed there are the ones the seal's new chunks then take, so each is
/// written once. Pruned by a transaction of its own, the same pages went to
/// the WAL and the file twice (an hour of minute chunks: ~620 KB instead of
/// ~0 at the typical install, see docs/storage.md).
pub fn drop_expired(conn: &Connection, old: Floors, floors: Floors) -> Result<[u64; 3]> {
    let tier = |t: ChunkTier, old: i64, new: i64| -> Result<u64> {
        if new > old {
            prune_tier(conn, t, new)
        } else {
            Ok(0)
        }
    };
    Ok([
        tier(ChunkTier::MINUTE, old.minute, floors.minute)?,
        tier(ChunkTier::HOURLY, old.hourly, floors.hourly)?,
        tier(ChunkTier::DAILY, old.daily, floors.daily)?,
    ])
}

/// Applies retention as of `now` (Unix seconds).
#[tracing::instrument(skip(disk, fold, config, counters), level = "debug")]
pub fn prune(
    disk: &mut Disk,
    fold: &Fold,
    now: i64,
    config: &MetricsConfig,
    counters: &Counters,
) -> Result<PruneReport> {
    let started = Instant::now();
    let (old, counts) = {
        let st = disk.shared.read();
        (st.floors, st.disk_buckets)
    };
    let floors = floors_for(now, config, fold, old);
    let stage = |conn: &Connection| -> Result<[u64; 3]> {
        // Every tier, not only those whose floor rose: whatever a crash or
        // an older version left below a floor goes too.
        let removed = drop_expired(conn, Floors::BOTTOM, floors)?;
        let deltas = removed.map(|r| -(r as i64));
        tiers::save_counts(conn, tiers::add_counts(counts, deltas))?;
        save_floors(conn, floors)?;
        counters
            .last_retention
            .store(crate::model::now_ms(), Ordering::Relaxed);
        counters.persist(conn)?;
        Ok(removed)
    };
    let (removed, raw_points) = disk.commit_staged("prune", stage, |st, removed| {
        st.floors = floors;
        for (i, r) in removed.iter().enumerate() {
            st.disk_buckets[i] = st.disk_buckets[i].saturating_sub(*r);
        }
        (removed, st.drop_raw_below(floors.raw))
    })?;
    // Space beyond the reuse reserve goes back to the file system, and
    // big deletes leave the WAL large: give that back too.
    let (bytes_freed, _) = free_pages(&disk.conn, RESERVE_PAGES)?;
    disk.checkpoint("TRUNCATE");
    Ok(PruneReport {
        now: now * 1000,
        raw_points,
        minute_buckets: removed[0],
        hourly_buckets: removed[1],
        daily_buckets: removed[2],
        journal_segments_deleted: 0,
        bytes_freed,
        floors: floors.to_ms(),
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
    })
}

/// Gives free pages beyond `keep` back to the file system; returns the
/// bytes freed and the free pages left.
fn free_pages(conn: &Connection, keep: i64) -> Result<(u64, u64)> {
    let pragma =
        |name: &str| -> Result<i64> { conn.pragma_query_value(None, name, |r| r.get(0)).ctx(name) };
    let page_size = pragma("page_size")?;
    let free_before = pragma("freelist_count")?;
    let excess = free_before - keep;
    if excess > 0 {
        // incremental_vacuum frees pages only as its rows are stepped.
        let mut stmt = conn
            .prepare(&format!("PRAGMA incremental_vacuum({excess})"))
            .ctx("incremental_vacuum")?;
        let mut rows = stmt.query([]).ctx("incremental_vacuum")?;
        while rows.next().ctx("incremental_vacuum")?.is_some() {}
    }
    let free_after = pragma("freelist_count")?;
    Ok((
        ((free_before - free_after).max(0) * page_size) as u64,
        free_after.max(0) as u64,
    ))
}

/// Frees pages beyond `keep`, refreshes the query planner's statistics
/// and truncates the WAL.
pub fn reclaim(disk: &mut Disk, keep: i64, counters: &Counters) -> Result<ReclaimReport> {
    let started = Instant::now();
    let (bytes_freed, free_pages) = free_pages(&disk.conn, keep)?;
    disk.conn.execute_batch("PRAGMA optimize").ctx("optimize")?;
    disk.checkpoint("TRUNCATE");
    let now = crate::model::now_ms();
    counters.last_vacuum.store(now, Ordering::Relaxed);
    counters.persist_now(&disk.conn)?;
    Ok(ReclaimReport {
        bytes_freed,
        free_pages,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
    })
}

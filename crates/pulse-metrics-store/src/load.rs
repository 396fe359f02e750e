//! Opening an existing store: the series directory, the retention floors,
//! and the replay of the raw log into memory.
//!
//! A point in the log is needed if it is inside raw retention, or if it has
//! not been folded into the tier that would hold it (its batch `seq` is
//! newer than that chunk's `seq`). Everything else is skipped, which is how
//! slots that were released but not yet overwritten are ignored.

use super::codec::Slot;
use super::ring::Ring;
use super::schema::meta_get;
use super::state::{ChunkTier, DAY, Floors, HOUR, MINUTE, RawPoint, SeriesEntry, State, floor_to};
use super::tiers;
use super::writer::{Counters, HourWork};
use crate::error::{Error, Result, SqlContext};
use crate::model::SeriesKey;
use rusqlite::Connection;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::Ordering;

pub struct Loaded {
    pub state: State,
    pub ring: Ring,
    pub work: BTreeMap<(i64, u32), HourWork>,
    pub daily_pending: BTreeSet<(i64, u32)>,
    pub next_seq: u64,
    pub rolled_to: i64,
}

#[tracing::instrument(skip_all, level = "debug")]
pub fn load(conn: &Connection, counters: &Counters, path: &Path) -> Result<Loaded> {
    let corrupt = |what: &str| Error::damaged(Some(path.to_path_buf()), what.to_string());
    let floors = Floors {
        raw: meta_get(conn, "floor_raw", 0)?,
        minute: meta_get(conn, "floor_minute", 0)?,
        hourly: meta_get(conn, "floor_hourly", 0)?,
        daily: meta_get(conn, "floor_daily", 0)?,
    };
    let rolled_to = meta_get(conn, "rolled_to", 0)?;
    let folded_seq = meta_get(conn, "folded_seq", 0)? as u64;
    let mut next_seq = meta_get(conn, "next_seq", 1)?.max(1) as u64;
    counters.total_writes.store(
        meta_get(conn, "total_writes", 0)?.max(0) as u64,
        Ordering::Relaxed,
    );
    counters.dropped_writes.store(
        meta_get(conn, "dropped_writes", 0)?.max(0) as u64,
        Ordering::Relaxed,
    );
    counters
        .last_flush
        .store(meta_get(conn, "last_flush", 0)?, Ordering::Relaxed);
    counters
        .last_rollup
        .store(meta_get(conn, "last_rollup", 0)?, Ordering::Relaxed);
    counters
        .last_retention
        .store(meta_get(conn, "last_retention", 0)?, Ordering::Relaxed);
    counters
        .last_vacuum
        .store(meta_get(conn, "last_vacuum", 0)?, Ordering::Relaxed);

    let mut state = State {
        floors,
        ..State::default()
    };
    {
        let mut stmt = conn
            .prepare("SELECT id, resource_type, resource_id, metric FROM series ORDER BY id")
            .ctx("read series")?;
        let mut rows = stmt.query([]).ctx("read series")?;
        while let Some(row) = rows.next().ctx("read series")? {
            let id: i64 = row.get(0).ctx("read series")?;
            if id != state.series.len() as i64 {
                return Err(corrupt("series ids are not dense"));
            }
            let key = SeriesKey::new(
                row.get::<_, String>(1).ctx("read series")?,
                row.get::<_, String>(2).ctx("read series")?,
                row.get::<_, String>(3).ctx("read series")?,
            );
            state.ids.insert(key.clone(), id as u32);
            state.series.push(SeriesEntry {
                key,
                raw: Vec::new(),
            });
        }
    }
    for (i, tier) in [ChunkTier::MINUTE, ChunkTier::HOURLY, ChunkTier::DAILY]
        .into_iter()
        .enumerate()
    {
        state.disk_buckets[i] = tiers::population_between(conn, tier, i64::MIN, i64::MAX)?;
    }

    // Log slots, oldest batch first.
    let mut slots: Vec<(u32, Slot, Option<u64>)> = Vec::new();
    {
        let mut stmt = conn
            .prepare("SELECT slot, data FROM raw_log")
            .ctx("read log")?;
        let mut rows = stmt.query([]).ctx("read log")?;
        while let Some(row) = rows.next().ctx("read log")? {
            let id: i64 = row.get(0).ctx("read log")?;
            let blob = row.get_ref(1).ctx("read log")?.as_blob().ctx("read log")?;
            let named =
                |e: super::codec::DecodeError| corrupt(&format!("raw_log slot {id}: {}", e.0));
            let slot = Slot::from_bytes(blob).map_err(named)?;
            let first = slot.first_seq().map_err(named)?;
            let id = u32::try_from(id).map_err(|_| corrupt("log slot id out of range"))?;
            slots.push((id, slot, first));
        }
    }
    slots.sort_by_key(|(id, _, first)| (first.is_none(), *first, *id));

    let mut live: HashMap<u32, u32> = slots.iter().map(|(id, _, _)| (*id, 0)).collect();
    let mut work: BTreeMap<(i64, u32), HourWork> = BTreeMap::new();
    let mut seqs: HashMap<(&'static str, i64), Option<u64>> = HashMap::new();
    let mut late = 0u64;
    let mut failure: Option<Error> = None;
    for (id, slot, _) in &slots {
        let decoded = slot.for_each(|seq, p| {
            if failure.is_some() {
                return;
            }
            next_seq = next_seq.max(seq + 1);
            if p.sid as usize >= state.series.len() {
                failure = Some(corrupt(&format!(
                    "raw_log slot {id}: a point of series id {}, which does not exist",
                    p.sid
                )));
                return;
            }
            let point = RawPoint::at(p.ts, p.value, *id);
            let ts = point.ts;
            let hour = floor_to(ts, HOUR);
            let day = floor_to(ts, DAY);
            // The chunk this point would be folded into, per the floors.
            let target = if ts >= floors.raw || hour >= floors.minute {
                Some((ChunkTier::MINUTE, ChunkTier::MINUTE.chunk_of(ts)))
            } else if day >= floors.hourly {
                Some((ChunkTier::HOURLY, ChunkTier::HOURLY.chunk_of(day)))
            } else if day >= floors.daily {
                Some((ChunkTier::DAILY, ChunkTier::DAILY.chunk_of(day)))
            } else {
                None
            };
            let sealed = seq <= folded_seq
                || match target {
                    None => true,
                    Some((tier, chunk)) => {
                        let key = (tier.table, tier.key(chunk, p.sid));
                        let stored = match seqs.get(&key) {
                            Some(s) => *s,
                            None => match tiers::seq(conn, tier, chunk, p.sid) {
                                Ok(s) => {
                                    seqs.insert(key, s);
                                    s
                                }
                                Err(e) => {
                                    failure = Some(e);
                                    return;
                                }
                            },
                        };
                        stored.is_some_and(|s| s >= seq)
                    }
                };
            if ts >= floors.raw {
                *live.get_mut(id).expect("slot") += 1;
                if let Some(old) = state.series[p.sid as usize].upsert(point)
                    && let Some(n) = live.get_mut(&old.slot)
                {
                    *n = n.saturating_sub(1);
                }
                if !sealed {
                    let w = work.entry((hour, p.sid)).or_insert_with(|| HourWork {
                        min_seq: seq,
                        ..HourWork::default()
                    });
                    w.min_seq = w.min_seq.min(seq);
                    w.dirty |= 1u64 << ((ts - hour) / MINUTE);
                }
            } else if !sealed {
                *live.get_mut(id).expect("slot") += 1;
                let w = work.entry((hour, p.sid)).or_insert_with(|| HourWork {
                    min_seq: seq,
                    ..HourWork::default()
                });
                w.min_seq = w.min_seq.min(seq);
                w.late.push((seq, point));
                late += 1;
            }
        });
        decoded.map_err(|e| corrupt(&format!("raw_log slot {id}: {}", e.0)))?;
        if let Some(e) = failure.take() {
            return Err(e);
        }
    }
    state.late_points = late;

    // Minute buckets that were rolled up before the restart but not sealed
    // (hours still open at the last rollup) come back from the raw points.
    let mut rebuilt = Vec::new();
    for (&(hour, sid), w) in work.iter_mut() {
        if hour + HOUR <= rolled_to || hour < floors.minute {
            continue;
        }
        let closed = ((rolled_to - hour) / MINUTE).clamp(0, 60) as usize;
        if closed == 0 {
            continue;
        }
        let series = &state.series[sid as usize];
        let mut buckets: [Option<super::codec::Agg>; 60] = [None; 60];
        for (m, b) in buckets.iter_mut().enumerate().take(closed) {
            *b = series.raw_agg(hour + MINUTE * m as i64, MINUTE);
        }
        for p in &super::writer::latest_per_second(&w.late) {
            let m = ((p.ts - hour) / MINUTE) as usize;
            if m < closed {
                let a = super::codec::Agg::of(p.value);
                match &mut buckets[m] {
                    Some(b) => b.merge(&a),
                    None => buckets[m] = Some(a),
                }
            }
        }
        w.late
            .retain(|(_, p)| ((p.ts - hour) / MINUTE) as usize >= closed);
        w.dirty &= !((1u64 << closed) - 1);
        rebuilt.push(((hour, sid), Box::new(buckets)));
    }
    state.open.extend(rebuilt);

    let mut daily_pending = BTreeSet::new();
    {
        let first = ChunkTier::HOURLY.chunk_of(floor_to(rolled_to, DAY));
        let mut stmt = conn
            .prepare("SELECT key FROM hourly WHERE key >= ?1")
            .ctx("read hourly keys")?;
        let mut rows = stmt.query([first << 24]).ctx("read hourly keys")?;
        while let Some(row) = rows.next().ctx("read hourly keys")? {
            let (chunk, sid) = ChunkTier::split_key(row.get(0).ctx("read hourly keys")?);
            daily_pending.insert((ChunkTier::HOURLY.chunk_start(chunk), sid));
        }
    }

    // The newest slot keeps being filled; the others are free if unneeded.
    let current = slots
        .iter()
        .rev()
        .find(|(_, _, first)| first.is_some())
        .map(|(id, slot, _)| (*id, slot.clone()));
    let slot_live: Vec<(u32, u32)> = live.into_iter().collect();
    let ring = Ring::restore(&slot_live, current);
    let (rows, free) = ring.usage();
    counters.log_slots.store(rows as u64, Ordering::Relaxed);
    counters
        .log_slots_free
        .store(free as u64, Ordering::Relaxed);
    Ok(Loaded {
        state,
        ring,
        work,
        daily_pending,
        next_seq,
        rolled_to,
    })
}

//! Merging one series into another, so that a resource whose id changes
//! (a guest keyed `{instance}:{node}:{vmid}` that becomes `{instance}:{vmid}`,
//! the per-node copies of one shared storage) keeps one continuous history.
//!
//! Series ids are dense and the raw journal refers to them, so a merged
//! series keeps its row, marked `merged_into` its target:
//! * rolled-up chunks are added into the target's chunk of the same span
//!   (counts, sums, min, max) and deleted, in the caller's transaction
//!   ([`merge_chunks`]);
//! * raw points still journalled under the merged id are read as the
//!   target's when the journal is replayed at open ([`routes`]), in write
//!   order, so of two points in the same second the later write wins;
//! * the directory maps the merged key to the target, so a query or a write
//!   under the old key reaches the target, and listings skip the merged
//!   entry ([`is_merged`]);
//! * a merge while the store runs also moves what memory holds
//!   ([`Writer::merge_series`]); the targets' raw points are read again from
//!   the journal, so they are exactly what the next open will read.

use crate::codec::{self, Agg};
use crate::error::{Error, Result, SqlContext};
use crate::journal;
use crate::model::SeriesKey;
use crate::queue::SeriesRef;
use crate::raw::{RawPoint, RawSeries};
use crate::state::{ChunkTier, State};
use crate::tiers::{self, Buckets};
use crate::writer::{Writer, insert_series, publish_series, resolve_series};
use rusqlite::{Connection, OptionalExtension};
use std::collections::{BTreeMap, BTreeSet};

const TIERS: [ChunkTier; 3] = [ChunkTier::MINUTE, ChunkTier::HOURLY, ChunkTier::DAILY];

/// The series `sid` answers as: itself, or the series it was merged into.
pub fn target(st: &State, sid: u32) -> u32 {
    st.ids
        .get(&st.series[sid as usize].key)
        .copied()
        .unwrap_or(sid)
}

/// Whether `sid` was merged into another series (and so is not listed).
pub fn is_merged(st: &State, sid: u32) -> bool {
    target(st, sid) != sid
}

/// For every series id, the id its points belong to, following chains of
/// merges, from the `merged_into` column (`None` = not merged).
pub fn routes(merged_into: &[Option<u32>]) -> Result<Vec<u32>> {
    let corrupt = |what: &str| Error::damaged(format!("table series: {what}"));
    let mut out = Vec::with_capacity(merged_into.len());
    for start in 0..merged_into.len() {
        let mut sid = start;
        let mut steps = 0;
        while let Some(next) = merged_into[sid] {
            let next = next as usize;
            if next >= merged_into.len() {
                return Err(corrupt("a series is merged into an unknown series"));
            }
            steps += 1;
            if steps > merged_into.len() {
                return Err(corrupt("series are merged into each other in a circle"));
            }
            sid = next;
        }
        out.push(sid as u32);
    }
    Ok(out)
}

/// Adds every rolled-up chunk of each key of `pairs` into the chunk of the
/// same span of its value, then deletes it; marks the merged rows (and rows
/// merged into them before) `merged_into` their target. Runs inside the
/// caller's transaction. Returns the change in stored buckets per tier
/// (minute, hourly, daily).
pub fn merge_chunks(conn: &Connection, pairs: &BTreeMap<u32, u32>) -> Result<[i64; 3]> {
    let mut deltas = [0i64; 3];
    if pairs.is_empty() {
        return Ok(deltas);
    }
    for (i, tier) in TIERS.into_iter().enumerate() {
        // The tables are keyed time-major, so one series' chunks are found
        // by a scan; merges are rare (an upgrade, a storage found shared).
        let mut sources: Vec<(i64, u64, Buckets)> = Vec::new();
        {
            let sql = format!("SELECT key, seq, data FROM {}", tier.table);
            let mut stmt = conn.prepare(&sql).ctx("prepare merge scan")?;
            let mut rows = stmt.query([]).ctx("scan chunks to merge")?;
            while let Some(row) = rows.next().ctx("scan chunks to merge")? {
                let key: i64 = row.get(0).ctx("read chunk key")?;
                if !pairs.contains_key(&ChunkTier::split_key(key).1) {
                    continue;
                }
                let seq: i64 = row.get(1).ctx("read chunk seq")?;
                let blob = row.get_ref(2).ctx("read chunk")?;
                let blob = blob.as_blob().ctx("read chunk")?;
                let buckets = codec::decode_chunk(blob, tier.span).map_err(|e| {
                    let (chunk, sid) = ChunkTier::split_key(key);
                    Error::damaged(format!(
                        "{} chunk of series {sid}, span {chunk}: {e}",
                        tier.table
                    ))
                })?;
                sources.push((key, seq.max(0) as u64, buckets));
            }
        }
        // (chunk, target) -> merged buckets and the highest fold mark.
        let mut merged: BTreeMap<(i64, u32), (Buckets, u64)> = BTreeMap::new();
        for (key, seq, buckets) in &sources {
            let (chunk, sid) = ChunkTier::split_key(*key);
            let into = pairs[&sid];
            let slot = match merged.entry((chunk, into)) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    let stored = tiers::read(conn, tier, chunk, into)?;
                    deltas[i] -= stored
                        .as_ref()
                        .map_or(0, |b| b.iter().flatten().count() as i64);
                    let stored_seq = tiers::seq(conn, tier, chunk, into)?.unwrap_or(0);
                    e.insert((stored.unwrap_or_else(|| vec![None; tier.span]), stored_seq))
                }
            };
            add_buckets(&mut slot.0, buckets);
            // A raw point newer than every batch folded into either chunk
            // is still to be folded; older ones are in one of them already.
            slot.1 = slot.1.max(*seq);
            deltas[i] -= buckets.iter().flatten().count() as i64;
        }
        let delete = format!("DELETE FROM {} WHERE key = ?1", tier.table);
        for (key, _, _) in &sources {
            conn.prepare_cached(&delete)
                .and_then(|mut s| s.execute([key]))
                .ctx("delete merged chunk")?;
        }
        for ((chunk, into), (buckets, seq)) in &merged {
            tiers::write(conn, tier, *chunk, *into, *seq, buckets)?;
            deltas[i] += buckets.iter().flatten().count() as i64;
        }
    }
    let mut mark = conn
        .prepare_cached("UPDATE series SET merged_into = ?2 WHERE id = ?1 OR merged_into = ?1")
        .ctx("prepare merge mark")?;
    for (from, into) in pairs {
        mark.execute([i64::from(*from), i64::from(*into)])
            .ctx("mark merged series")?;
    }
    Ok(deltas)
}

fn add_buckets(into: &mut [Option<Agg>], from: &[Option<Agg>]) {
    for (a, b) in into.iter_mut().zip(from) {
        if let Some(b) = b {
            match a {
                Some(a) => a.merge(b),
                None => *a = Some(*b),
            }
        }
    }
}

/// The id of the series stored under `key`, merged or not.
pub fn stored_id(conn: &Connection, key: &SeriesKey) -> Result<Option<u32>> {
    let id: Option<i64> = conn
        .prepare_cached(
            "SELECT id FROM series WHERE resource_type = ?1 AND resource_id = ?2 AND metric = ?3",
        )
        .and_then(|mut s| {
            s.query_row([&key.resource_type, &key.resource_id, &key.metric], |r| {
                r.get(0)
            })
            .optional()
        })
        .ctx("look up series")?;
    Ok(id.map(|i| i as u32))
}

impl Writer {
    /// Merges each series `from` into `into` (created if new) while the
    /// store runs: chunks and marks on disk in one transaction, then what
    /// memory holds (raw points, open hours, pending rollup work). Of two
    /// raw points in the same second the later write is kept. Series that
    /// do not exist or were merged already are skipped. Returns the series
    /// merged.
    pub fn merge_series(&mut self, pairs: &[(SeriesKey, SeriesKey)]) -> Result<usize> {
        let (plan, new_series, first_new) = {
            let st = self.shared().read();
            let mut wanted: Vec<(u32, SeriesRef)> = Vec::new();
            for (from, into) in pairs {
                let Some(&sid) = st.ids.get(from) else {
                    continue;
                };
                if st.series[sid as usize].key != *from {
                    continue; // merged before: the key leads elsewhere
                }
                let target = match st.ids.get(into) {
                    Some(&t) => SeriesRef::Known(t),
                    None => SeriesRef::New(into.clone()),
                };
                wanted.push((sid, target));
            }
            let (targets, new_series) = resolve_series(&st, wanted.iter().map(|(_, t)| t))?;
            let plan: BTreeMap<u32, u32> = wanted
                .iter()
                .zip(targets)
                .map(|((sid, _), t)| (*sid, t))
                .filter(|(sid, t)| sid != t)
                .collect();
            (plan, new_series, st.series.len())
        };
        if plan.is_empty() {
            return Ok(0);
        }
        let merged = plan.len();
        // Where every series' journalled points go once the merge is done.
        let (floor, route, counts) = {
            let st = self.shared().read();
            let route: Vec<u32> = (0..(st.series.len() + new_series.len()) as u32)
                .map(|sid| {
                    let t = if (sid as usize) < st.series.len() {
                        target(&st, sid)
                    } else {
                        sid
                    };
                    plan.get(&t).copied().unwrap_or(t)
                })
                .collect();
            (st.floors.raw, route, st.disk_buckets)
        };
        let targets: BTreeSet<u32> = plan.values().copied().collect();
        // The journal holds every raw point above the floor: read the
        // targets' (their own and their merged series') in write order.
        let raw = match self.journal_dir() {
            Some(dir) => Some(replay_raw(&dir, &route, &targets, floor)?),
            None => None,
        };
        let reopened = self.disk().commit_staged(
            "merge",
            |conn| {
                insert_series(conn, first_new, &new_series)?;
                let deltas = merge_chunks(conn, &plan)?;
                tiers::save_counts(conn, tiers::add_counts(counts, deltas))?;
                Ok((deltas, new_series))
            },
            |st, (deltas, new_series)| {
                publish_series(st, new_series);
                for (i, d) in deltas.iter().enumerate() {
                    st.disk_buckets[i] = st.disk_buckets[i].saturating_add_signed(*d);
                }
                move_memory(st, &plan, raw)
            },
        )?;
        self.fold_mut().work.merge(&plan, &reopened);
        let days: Vec<(i64, u32)> = self
            .fold_mut()
            .daily_pending
            .iter()
            .filter(|(_, sid)| plan.contains_key(sid))
            .copied()
            .collect();
        for (day, sid) in days {
            let pending = &mut self.fold_mut().daily_pending;
            pending.remove(&(day, sid));
            pending.insert((day, plan[&sid]));
        }
        Ok(merged)
    }
}

/// The raw points (at or after `floor`) of each of `targets`, journalled
/// under it or under a series `route` sends to it, in the order they were
/// written: of two in the same second the later wins, as when the journal
/// is replayed at open.
fn replay_raw(
    dir: &std::path::Path,
    route: &[u32],
    targets: &BTreeSet<u32>,
    floor: i64,
) -> Result<BTreeMap<u32, RawSeries>> {
    let route = |sid: u32| route.get(sid as usize).copied().unwrap_or(sid);
    let mut out: BTreeMap<u32, RawSeries> = BTreeMap::new();
    journal::replay(dir, false, |records| {
        for r in records {
            for p in r.points {
                let t = route(p.sid);
                if targets.contains(&t) && p.ts.div_euclid(1000) >= floor {
                    out.entry(t)
                        .or_default()
                        .upsert(RawPoint::at(p.ts, p.value));
                }
            }
        }
        Ok(())
    })?;
    Ok(out)
}

/// Gives each target the raw points `raw` says it has (its own and its
/// merged series'; without a journal, an in-memory store, the points held
/// are moved, the target's kept where both have a second), moves open
/// minute buckets and points the directory to the targets. Returns, per
/// open (hour, target), the minutes whose buckets were added together: the
/// next rollup recomputes them from the merged raw points, where such a
/// second counts once.
fn move_memory(
    st: &mut State,
    plan: &BTreeMap<u32, u32>,
    raw: Option<BTreeMap<u32, RawSeries>>,
) -> BTreeMap<(i64, u32), u64> {
    let floor = st.floors.raw;
    match raw {
        Some(mut raw) => {
            for sid in plan.keys() {
                st.series[*sid as usize].raw = RawSeries::default();
            }
            for t in plan.values() {
                let mut points = raw.remove(t).unwrap_or_default();
                points.drop_below(floor);
                st.series[*t as usize].raw = points;
            }
        }
        None => {
            for (&from, &into) in plan {
                let moved = std::mem::take(&mut st.series[from as usize].raw);
                let target = &mut st.series[into as usize].raw;
                for p in moved.range(i64::MIN, i64::MAX) {
                    if target.range(p.ts, p.ts).is_empty() {
                        target.upsert(p);
                    }
                }
            }
        }
    }
    let mut reopened: BTreeMap<(i64, u32), u64> = BTreeMap::new();
    for (&from, &into) in plan {
        let hours: Vec<(u32, i64)> = st
            .open
            .range((from, i64::MIN)..=(from, i64::MAX))
            .map(|(k, _)| *k)
            .collect();
        for key in hours {
            let Some(buckets) = st.open.remove(&key) else {
                continue;
            };
            let hour = key.1;
            let t = st
                .open
                .entry((into, hour))
                .or_insert_with(|| Box::new([None; 60]));
            add_buckets(&mut t[..], &buckets[..]);
            let mask = buckets
                .iter()
                .enumerate()
                .filter(|(_, b)| b.is_some())
                .fold(0u64, |m, (i, _)| m | (1 << i));
            *reopened.entry((hour, into)).or_default() |= mask;
        }
        // Earlier merges into `from` now lead to `into` as well.
        let key = st.series[from as usize].key.clone();
        for v in st.ids.values_mut() {
            if *v == from {
                *v = into;
            }
        }
        st.ids.insert(key, into);
    }
    reopened
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_chains_and_refuse_circles() {
        assert_eq!(
            routes(&[None, Some(2), Some(3), None, Some(0)]).unwrap(),
            [0, 3, 3, 3, 0]
        );
        assert!(routes(&[Some(1), Some(0)]).is_err());
        assert!(routes(&[Some(7)]).is_err());
    }

    #[test]
    fn buckets_add_up() {
        let mut into = vec![Some(Agg::of(1.0)), None, None];
        add_buckets(&mut into, &[Some(Agg::of(3.0)), Some(Agg::of(5.0)), None]);
        let a = into[0].unwrap();
        assert_eq!((a.count, a.sum, a.min, a.max), (2, 4.0, 1.0, 3.0));
        assert_eq!(into[1].unwrap().sum, 5.0);
        assert!(into[2].is_none());
    }

    use crate::{MetricsConfig, Resource, ResourceMeta, Store, TimeRange};

    const T: i64 = 1_700_002_800_000; // 23:00, on the hour
    const MIN: i64 = 60_000;
    const HOUR: i64 = 3_600_000;

    /// (count, sum) per bucket of `width` ms.
    fn sums(points: &BTreeMap<i64, f64>, width: i64) -> BTreeMap<i64, (u64, f64)> {
        let mut out: BTreeMap<i64, (u64, f64)> = BTreeMap::new();
        for (&t, &v) in points {
            let e = out.entry(t - t.rem_euclid(width)).or_default();
            e.0 += 1;
            e.1 += v;
        }
        out
    }

    fn answer(store: &Store, start: i64, end: i64, now: i64) -> BTreeMap<i64, (u64, f64)> {
        let key = SeriesKey::new("storage", "pve1:nfs", "disk");
        store
            .query(&key, TimeRange::between(start, end, now).unwrap(), None)
            .unwrap()
            .points
            .iter()
            .map(|p| (p.timestamp, (p.count, p.value * p.count as f64)))
            .collect()
    }

    #[test]
    fn a_running_store_merges_resources_into_one_history() {
        let dir = tempfile::tempdir().unwrap();
        let config = MetricsConfig {
            database_path: dir.path().join("m.db"),
            ..MetricsConfig::default()
        };
        let store = Store::open(config.clone()).unwrap();
        // One shared storage seen through two nodes, on offset seconds, and
        // once in the same second (23:20).
        let mut expected: BTreeMap<i64, f64> = BTreeMap::new();
        let tie = T + 20 * MIN;
        for (node, offset, value) in [("a", 0, 10.0), ("b", 5_000, 20.0)] {
            let id = format!("pve1:{node}:nfs");
            let mut t = T - 150 * MIN + offset;
            while t < T + 25 * MIN {
                store.write("storage", &id, "disk", value, t).unwrap();
                expected.entry(t).or_insert(value);
                t += 10_000;
            }
            store.write("storage", &id, "disk", value, tie).unwrap();
            // Written under both ids: the later write (b's) wins.
            expected.insert(tie, value);
            let meta = ResourceMeta {
                node: Some(node.into()),
                ..ResourceMeta::default()
            };
            store
                .write_resources(&[Resource::new("storage", &id, meta)])
                .unwrap();
        }
        store.flush().unwrap();
        let now = T + 30 * MIN;
        store.rollup(now).unwrap();

        assert_eq!(
            store
                .merge_resource("storage", "pve1:a:nfs", "pve1:nfs")
                .unwrap(),
            1
        );
        assert_eq!(
            store
                .merge_resource("storage", "pve1:b:nfs", "pve1:nfs")
                .unwrap(),
            1
        );
        assert_eq!(
            store
                .merge_resource("storage", "pve1:b:nfs", "pve1:nfs")
                .unwrap(),
            0
        );
        let ids: Vec<String> = store
            .series()
            .unwrap()
            .into_iter()
            .map(|s| s.key.resource_id)
            .collect();
        assert_eq!(ids, ["pve1:nfs"]);
        assert!(store.resources().is_empty(), "{:?}", store.resources());

        // Raw points: both nodes', the second written under both once.
        let raw = answer(&store, T, now, now);
        let want: BTreeMap<i64, (u64, f64)> =
            expected.range(T..).map(|(t, v)| (*t, (1, *v))).collect();
        assert_eq!(raw, want);
        // Sealed minute buckets add up.
        let minutes = answer(&store, T - 150 * MIN, T - 1, now);
        let want: BTreeMap<i64, (u64, f64)> = sums(&expected, MIN)
            .range(T - 150 * MIN..T)
            .map(|(k, v)| (*k, *v))
            .collect();
        assert_eq!(minutes, want);

        // A write under an old id lands in the merged series.
        store
            .write("storage", "pve1:a:nfs", "disk", 30.0, now)
            .unwrap();
        expected.insert(now, 30.0);
        store.flush().unwrap();
        store.close().unwrap();

        // After a restart and a rollup past every hour, each hourly bucket
        // holds every point once.
        let store = Store::open(config).unwrap();
        let later = T + 3 * HOUR;
        store.rollup(later).unwrap();
        let hours = answer(&store, T - 3 * HOUR, later, later + 30 * HOUR);
        assert_eq!(hours, sums(&expected, HOUR));
        assert_eq!(store.stats().unwrap().series_count, 1);
        store.close().unwrap();
    }

    #[test]
    fn keys_version_changes_with_the_keys_listed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(MetricsConfig {
            database_path: dir.path().join("m.db"),
            ..MetricsConfig::default()
        })
        .unwrap();
        let listed = |s: &Store| (s.keys_version(), s.keys(&crate::SeriesFilter::default()));
        let (empty, _) = listed(&store);
        for id in ["a", "b"] {
            store.write("storage", id, "disk", 1.0, T).unwrap();
        }
        store.flush().unwrap();
        let (two, keys) = listed(&store);
        assert_eq!(keys.len(), 2);
        assert_ne!(two, empty, "new series");
        // More points for the same series: the same keys, the same version.
        store.write("storage", "a", "disk", 2.0, T + MIN).unwrap();
        store.flush().unwrap();
        assert_eq!(listed(&store).0, two);
        // A merge into a series that exists lists one key fewer.
        store.merge_resource("storage", "a", "b").unwrap();
        let (merged, keys) = listed(&store);
        assert_eq!(keys.len(), 1);
        assert_ne!(merged, two, "a merge");
        store.close().unwrap();
    }
}

//! The read path: tier selection, stitching of tiers into one gap-free
//! answer, and `max_points` merging.
//!
//! For a range `[start, end]` the chosen tier is the finest whose retention
//! reaches back to `start`. Its buckets are followed by the finer tiers'
//! points after its last bucket (the part not rolled up yet), and preceded by
//! coarser tiers' buckets where it has no older data.

use super::codec::{self, Agg};
use super::state::{ChunkTier, HOUR, OpenHour, State};
use super::tiers;
use crate::config::Retention;
use crate::error::Result;
use crate::model::{HistoryPoint, Tier};
use rusqlite::Connection;
use std::collections::HashMap;

/// The finest tier whose retention covers `start` as of `now` (all in ms).
pub fn select_tier(start: i64, now: i64, retention: &Retention) -> Tier {
    for tier in Tier::ALL {
        let keep = i64::try_from(retention.get(tier).as_millis()).unwrap_or(i64::MAX);
        if start >= now.saturating_sub(keep) {
            return tier;
        }
    }
    Tier::Daily
}

/// Reads buckets of the rolled-up tiers for a set of series. With many
/// series it scans each tier's time range once (rows of one span are
/// neighbours on disk) into per-series lists; with few it looks chunks up
/// by key. Every timestamp here is Unix ms: raw points keep the millisecond
/// they were written with, buckets are stamped with their start.
pub struct Source<'a> {
    st: &'a State,
    conn: &'a Connection,
    mode: Mode,
    /// Per tier, the first and last span number stored (looked up once).
    extent: [Option<Option<(i64, i64)>>; 4],
}

/// How a `Source` reads the rolled-up tiers, chosen by the number of
/// series once.
enum Mode {
    /// Few series: chunks looked up by key; decoded ones kept by (tier,
    /// span number, series).
    Lookup(HashMap<(usize, i64, u32), Vec<(i64, Agg)>>),
    /// Many series: each tier's spans scanned once into per-series lists.
    Scan(Scan),
}

struct Scan {
    /// Position of each wanted series in the per-series lists.
    slots: HashMap<u32, usize>,
    /// Per tier, the span numbers scanned so far.
    scanned: [Option<(i64, i64)>; 4],
    /// Per tier, what the scanned spans held per series (by slot), sorted
    /// by time.
    lists: [Vec<Vec<(i64, Agg)>>; 4],
}

/// Above this many series a query scans instead of looking up...
const SCAN_THRESHOLD: usize = 8;
/// ...when they are at least one in this many of all series.
const SCAN_SHARE: usize = 8;

/// `[from, to]` of a slice sorted by time.
fn within(list: &[(i64, Agg)], from: i64, to: i64) -> (usize, usize) {
    let a = list.partition_point(|p| p.0 < from);
    (a, list.partition_point(|p| p.0 <= to).max(a))
}

impl<'a> Source<'a> {
    pub fn new(st: &'a State, conn: &'a Connection, sids: &[u32]) -> Source<'a> {
        // A scan reads every row of the span, of every series: worth it
        // when the wanted ones are a good share of them (a whole dashboard),
        // not for a page of a big fleet, whose chunks are looked up.
        let mode = if sids.len() > SCAN_THRESHOLD && sids.len() * SCAN_SHARE >= st.series.len() {
            let slots: HashMap<u32, usize> =
                sids.iter().enumerate().map(|(i, s)| (*s, i)).collect();
            let n = slots.len();
            Mode::Scan(Scan {
                slots,
                scanned: [None; 4],
                lists: std::array::from_fn(|_| vec![Vec::new(); n]),
            })
        } else {
            Mode::Lookup(HashMap::new())
        };
        Source {
            st,
            conn,
            mode,
            extent: [None; 4],
        }
    }

    /// Scan mode: the slot of `sid` in the per-series lists.
    fn slot(&self, sid: u32) -> Option<usize> {
        match &self.mode {
            Mode::Scan(scan) => scan.slots.get(&sid).copied(),
            Mode::Lookup(_) => None,
        }
    }

    /// Scan mode: the list of `slot` for `tier` (empty in lookup mode,
    /// which has no slots).
    fn list(&self, tier: Tier, slot: usize) -> &[(i64, Agg)] {
        match &self.mode {
            Mode::Scan(scan) => &scan.lists[tier.index()][slot],
            Mode::Lookup(_) => &[],
        }
    }

    /// Appends the points of `tier` for `sid` in `[from, to]` to `out`;
    /// returns how many.
    fn push_points(
        &mut self,
        tier: Tier,
        sid: u32,
        from: i64,
        to: i64,
        out: &mut Vec<(i64, Agg)>,
    ) -> Result<usize> {
        let before = out.len();
        match self.borrowed(tier, sid, from, to)? {
            Some((slot, a, b)) => out.extend_from_slice(&self.list(tier, slot)[a..b]),
            None => self.copy_points(tier, sid, from, to, out)?,
        }
        Ok(out.len() - before)
    }

    /// In scan mode, where `tier`'s points for `sid` in `[from, to]` sit in
    /// the per-series lists (slot and index range), so they can be read in
    /// place. `None` when they must be copied (raw, lookup mode, or minute
    /// data overlaid by open hours).
    fn borrowed(
        &mut self,
        tier: Tier,
        sid: u32,
        from: i64,
        to: i64,
    ) -> Result<Option<(usize, usize, usize)>> {
        if from > to || tier == Tier::Raw {
            return Ok(None);
        }
        let Some(slot) = self.slot(sid) else {
            return Ok(None);
        };
        if tier == Tier::Minute && !self.open_hours(sid, from, to).is_empty() {
            return Ok(None);
        }
        let (a, b) = self.scanned_range(tier, slot, from, to)?;
        Ok(Some((slot, a, b)))
    }

    /// Scan mode: the index range of `[from, to]` in the list of `slot`,
    /// scanning the spans it needs first.
    fn scanned_range(
        &mut self,
        tier: Tier,
        slot: usize,
        from: i64,
        to: i64,
    ) -> Result<(usize, usize)> {
        let Some((c0, c1)) = self.stored_spans(tier, from, to)? else {
            return Ok((0, 0));
        };
        let Some(t) = ChunkTier::of(tier) else {
            return Ok((0, 0));
        };
        self.ensure_scanned(tier, t, c0, c1)?;
        Ok(within(self.list(tier, slot), from, to))
    }

    /// Open (unsealed) hours of `sid` overlapping `[from, to]` (ms).
    fn open_hours(&self, sid: u32, from: i64, to: i64) -> Vec<(i64, OpenHour)> {
        self.st
            .open_hours(sid, from.div_euclid(1000), to.div_euclid(1000))
    }

    /// Span numbers of `tier` whose buckets may start in `[from, to]`,
    /// clamped to those that hold any row at all, so a query over a huge
    /// range costs what the stored data costs. `None` when nothing is stored
    /// in it.
    fn stored_spans(&mut self, tier: Tier, from: i64, to: i64) -> Result<Option<(i64, i64)>> {
        let (s0, s1) = secs_range(from, to);
        let Some(t) = ChunkTier::of(tier) else {
            return Ok(None);
        };
        let idx = tier.index();
        if self.extent[idx].is_none() {
            self.extent[idx] = Some(tiers::extent(self.conn, t)?);
        }
        let Some(Some((lo, hi))) = self.extent[idx] else {
            return Ok(None);
        };
        let (c0, c1) = (t.chunk_of(s0).max(lo), t.chunk_of(s1).min(hi));
        Ok((s0 <= s1 && c0 <= c1).then_some((c0, c1)))
    }

    fn copy_points(
        &mut self,
        tier: Tier,
        sid: u32,
        from: i64,
        to: i64,
        out: &mut Vec<(i64, Agg)>,
    ) -> Result<()> {
        let before = out.len();
        if from > to {
            return Ok(());
        }
        if tier == Tier::Raw {
            let series = &self.st.series[sid as usize];
            series
                .raw
                .for_each_in(from.div_euclid(1000), to.div_euclid(1000), |p| {
                    let ms = p.ms();
                    if ms >= from && ms <= to {
                        out.push((ms, Agg::of(p.value)));
                    }
                });
            return Ok(());
        }
        let Some(t) = ChunkTier::of(tier) else {
            return Ok(());
        };
        let Some((c0, c1)) = self.stored_spans(tier, from, to)? else {
            if tier == Tier::Minute {
                self.overlay_open_hours(sid, from, to, out, before);
            }
            return Ok(());
        };
        if let Some(slot) = self.slot(sid) {
            let (a, b) = self.scanned_range(tier, slot, from, to)?;
            out.extend_from_slice(&self.list(tier, slot)[a..b]);
        } else {
            // Looked up by key: kept in lookup mode; a series outside the
            // scanned set (none is asked for today) is read each time.
            let conn = self.conn;
            let mut scratch = HashMap::new();
            let chunks = match &mut self.mode {
                Mode::Lookup(chunks) => chunks,
                Mode::Scan(_) => &mut scratch,
            };
            for chunk in c0..=c1 {
                let list = match chunks.entry((tier.index(), chunk, sid)) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        let mut pts = Vec::new();
                        if let Some(b) = tiers::read(conn, t, chunk, sid)? {
                            let start = t.chunk_start(chunk);
                            pts.extend(b.iter().enumerate().filter_map(|(i, a)| {
                                a.map(|a| ((start + i as i64 * t.bucket) * 1000, a))
                            }));
                        }
                        e.insert(pts)
                    }
                };
                let (a, b) = within(list, from, to);
                out.extend_from_slice(&list[a..b]);
            }
        }
        if tier == Tier::Minute {
            self.overlay_open_hours(sid, from, to, out, before);
        }
        Ok(())
    }

    /// Minute buckets of hours not sealed yet live in memory and take
    /// precedence over anything on disk for the same hour (`out[start..]`).
    fn overlay_open_hours(
        &self,
        sid: u32,
        from: i64,
        to: i64,
        out: &mut Vec<(i64, Agg)>,
        start: usize,
    ) {
        let open = self.open_hours(sid, from, to);
        let Some(&(first_open, _)) = open.first() else {
            return;
        };
        let first_open = first_open * 1000;
        // Disk data of an open hour only exists after a clock went back.
        let in_open = |ts: i64| {
            open.iter()
                .any(|(h, _)| ts >= h * 1000 && ts < (h + HOUR) * 1000)
        };
        let mut i = start;
        while i < out.len() {
            if out[i].0 >= first_open && in_open(out[i].0) {
                out.remove(i);
            } else {
                i += 1;
            }
        }
        let sorted = out.len() == start || out.last().is_none_or(|p| p.0 < first_open);
        for (hour, buckets) in &open {
            for (m, b) in buckets.iter().enumerate() {
                let ts = (hour + m as i64 * 60) * 1000;
                if let Some(a) = b
                    && ts >= from
                    && ts <= to
                {
                    out.push((ts, *a));
                }
            }
        }
        if !sorted {
            out[start..].sort_by_key(|p| p.0);
        }
    }

    /// Scans the spans of `[c0, c1]` not scanned yet (keeping one covered
    /// interval per tier, so a many-series query reads each row once).
    fn ensure_scanned(&mut self, tier: Tier, t: ChunkTier, c0: i64, c1: i64) -> Result<()> {
        let idx = tier.index();
        let conn = self.conn;
        let Mode::Scan(scan) = &mut self.mode else {
            return Ok(());
        };
        let (runs, prepend) = match scan.scanned[idx] {
            None => (vec![(c0, c1)], false),
            Some((lo, hi)) => {
                let mut runs = Vec::new();
                if c0 < lo {
                    runs.push((c0, lo - 1));
                }
                if c1 > hi {
                    runs.push((hi + 1, c1));
                }
                (runs, c0 < lo)
            }
        };
        if runs.is_empty() {
            return Ok(());
        }
        let slots = &scan.slots;
        let lists = &mut scan.lists[idx];
        if scan.scanned[idx].is_none() {
            let per_series = ((c1 - c0 + 1) as usize * t.span).min(1 << 16);
            for list in lists.iter_mut() {
                list.reserve(per_series);
            }
        }
        for (a, b) in runs {
            tiers::scan_chunks(conn, t, a, b, |sid, start, blob| {
                let Some(&slot) = slots.get(&sid) else {
                    return Ok(());
                };
                let list = &mut lists[slot];
                codec::for_each_bucket(blob, t.span, |i, agg| {
                    list.push(((start + i as i64 * t.bucket) * 1000, agg))
                })
            })?;
        }
        if prepend {
            // A run scanned before the covered interval lands after it.
            for list in lists.iter_mut() {
                list.sort_by_key(|p| p.0);
            }
        }
        scan.scanned[idx] = Some(match scan.scanned[idx] {
            None => (c0, c1),
            Some((lo, hi)) => (lo.min(c0), hi.max(c1)),
        });
        Ok(())
    }

    /// The history of one series over `[start_ms, end_ms]` from `tier`,
    /// stitched and capped at `max` points.
    ///
    /// The chosen tier, then each finer tier after the last bucket of the
    /// coarser one (what has not been rolled up yet); before it, coarser
    /// tiers where the chosen one has no older data (only whole buckets
    /// that end before it starts, so nothing is counted twice). The chosen
    /// tier's points are read in place when scanned, not copied.
    pub fn history(
        &mut self,
        tier: Tier,
        sid: u32,
        start_ms: i64,
        end_ms: i64,
        max: Option<usize>,
    ) -> Result<Vec<HistoryPoint>> {
        let (from, to) = (start_ms, end_ms);
        let width = |t: Tier| t.bucket_secs() * 1000;
        let main = self.borrowed(tier, sid, from, to)?;
        let mut owned = Vec::new();
        if main.is_none() {
            self.copy_points(tier, sid, from, to, &mut owned)?;
        }
        let (first, last) = {
            let slice: &[(i64, Agg)] = match main {
                Some((slot, a, b)) => &self.list(tier, slot)[a..b],
                None => &owned,
            };
            (slice.first().map(|p| p.0), slice.last().map(|p| p.0))
        };
        let mut tail = Vec::new();
        let mut cursor = last.map_or(from, |l| l + width(tier));
        for t in Tier::ALL[..tier.index()].iter().rev() {
            if self.push_points(*t, sid, cursor, to, &mut tail)? > 0 {
                cursor = tail.last().map_or(cursor, |p| p.0 + width(*t));
            }
        }
        let mut limit = first.or(tail.first().map(|p| p.0)).unwrap_or(to + 1);
        let mut prefix: Vec<(i64, Agg)> = Vec::new();
        for t in &Tier::ALL[tier.index() + 1..] {
            if limit <= from {
                break;
            }
            let mut pts = Vec::new();
            self.push_points(*t, sid, from, limit - 1, &mut pts)?;
            pts.retain(|p| p.0 + width(*t) <= limit);
            if let Some(&(f, _)) = pts.first() {
                limit = f;
            }
            pts.append(&mut prefix);
            prefix = pts;
        }
        if max.is_none() {
            // Every point is answered: turn the list into the answer in
            // place rather than copying it (a 24 h chart of every series is
            // ~15 MB of points, and fresh memory costs page faults).
            // A series is answered once per query, so its list may go.
            let mut list = match main {
                Some((slot, a, b)) => {
                    let mut list = match &mut self.mode {
                        Mode::Scan(scan) => std::mem::take(&mut scan.lists[tier.index()][slot]),
                        Mode::Lookup(_) => Vec::new(),
                    };
                    list.truncate(b);
                    list.drain(..a);
                    list
                }
                None => owned,
            };
            if !prefix.is_empty() {
                list.splice(0..0, prefix);
            }
            list.append(&mut tail);
            return Ok(list.into_iter().map(|(ts, a)| point(ts, &a)).collect());
        }
        let slice: &[(i64, Agg)] = match main {
            Some((slot, a, b)) => &self.list(tier, slot)[a..b],
            None => &owned,
        };
        Ok(to_history(&[&prefix, slice, &tail], start_ms, end_ms, max))
    }
}

fn point(ts_ms: i64, a: &Agg) -> HistoryPoint {
    HistoryPoint {
        timestamp: ts_ms,
        value: a.mean(),
        min: a.min,
        max: a.max,
        count: a.count,
    }
}

/// Caps a series at `max` points: evenly spaced buckets of width
/// `ceil((end - start) / max)` ms from `start`, each keeping the
/// count-weighted mean, the min and the max, stamped with its start.
pub fn to_history(
    parts: &[&[(i64, Agg)]],
    start_ms: i64,
    end_ms: i64,
    max: Option<usize>,
) -> Vec<HistoryPoint> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let all = parts.iter().flat_map(|p| p.iter());
    let max = match max {
        Some(m) if m > 0 && len > m => m,
        _ => return all.map(|(ts, a)| point(*ts, a)).collect(),
    };
    let span = (end_ms - start_ms).max(1);
    let width = (span + max as i64 - 1) / max as i64;
    let mut out: Vec<(i64, Agg)> = Vec::with_capacity(max);
    for &(ts, a) in all {
        let idx = ((ts - start_ms).max(0) / width).min(max as i64 - 1);
        let stamp = start_ms + idx * width;
        match out.last_mut() {
            Some((s, acc)) if *s == stamp => acc.merge(&a),
            _ => out.push((stamp, a)),
        }
    }
    out.iter().map(|(ts, a)| point(*ts, a)).collect()
}

/// A bucket (or a raw point: count 1) from elsewhere, e.g. a remote engine,
/// as `cap_buckets` takes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Unix ms of its start (a raw point's own time).
    pub timestamp: i64,
    /// How many raw points it stands for.
    pub count: u64,
    /// The sum of their values.
    pub sum: f64,
    /// The smallest of their values.
    pub min: f64,
    /// The largest of their values.
    pub max: f64,
}

/// The store's answer for points in time order: as they are, or merged
/// into `max` evenly spaced buckets exactly as a query with `max_points`
/// merges its own (`to_history`).
pub fn cap_buckets(
    buckets: &[Bucket],
    start_ms: i64,
    end_ms: i64,
    max: Option<usize>,
) -> Vec<HistoryPoint> {
    let aggs: Vec<(i64, Agg)> = buckets
        .iter()
        .map(|b| {
            (
                b.timestamp,
                Agg {
                    count: b.count,
                    sum: b.sum,
                    min: b.min,
                    max: b.max,
                },
            )
        })
        .collect();
    to_history(&[&aggs], start_ms, end_ms, max)
}

/// Seconds covering `[start_ms, end_ms]`: whole seconds inside the range.
pub fn secs_range(start_ms: i64, end_ms: i64) -> (i64, i64) {
    (-((-start_ms).div_euclid(1000)), end_ms.div_euclid(1000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn tier_selection_follows_retention() {
        let r = Retention::default();
        let now = 1_000_000_000_000;
        let h = 3_600_000;
        assert_eq!(select_tier(now - h, now, &r), Tier::Raw);
        assert_eq!(select_tier(now - 2 * h, now, &r), Tier::Raw);
        assert_eq!(select_tier(now - 2 * h - 1, now, &r), Tier::Minute);
        assert_eq!(select_tier(now - 24 * h, now, &r), Tier::Minute);
        assert_eq!(select_tier(now - 7 * 24 * h, now, &r), Tier::Hourly);
        assert_eq!(select_tier(now - 30 * 24 * h, now, &r), Tier::Daily);
        assert_eq!(select_tier(now - 365 * 24 * h, now, &r), Tier::Daily);
        let short = Retention {
            raw: Duration::from_secs(600),
            ..r
        };
        assert_eq!(select_tier(now - h, now, &short), Tier::Minute);
    }

    #[test]
    fn max_points_merges_count_weighted() {
        let pts: Vec<(i64, Agg)> = (0..100i64)
            .map(|i| {
                (
                    i * 1000,
                    Agg {
                        count: 1 + (i % 3) as u64,
                        sum: i as f64 * (1 + i % 3) as f64,
                        min: i as f64,
                        max: i as f64,
                    },
                )
            })
            .collect();
        let total: u64 = pts.iter().map(|p| p.1.count).sum();
        let sum: f64 = pts.iter().map(|p| p.1.sum).sum();
        let out = to_history(&[&pts], 0, 100_000, Some(10));
        assert_eq!(out.len(), 10);
        assert_eq!(out.iter().map(|p| p.count).sum::<u64>(), total);
        let weighted: f64 = out.iter().map(|p| p.value * p.count as f64).sum();
        assert!((weighted - sum).abs() < 1e-9);
        assert_eq!(out[0].timestamp, 0);
        assert_eq!(out[1].timestamp, 10_000);
        assert_eq!(out[0].min, 0.0);
        assert_eq!(out[0].max, 9.0);
        assert!(
            out.windows(2)
                .all(|w| w[1].timestamp - w[0].timestamp == 10_000)
        );
    }

    #[test]
    fn few_points_are_left_alone() {
        let pts = vec![(5000, Agg::of(1.0)), (6000, Agg::of(2.0))];
        let out = to_history(&[&pts], 0, 10_000, Some(10));
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].timestamp, 6000);
    }

    #[test]
    fn second_range_is_inside_the_ms_range() {
        assert_eq!(secs_range(1500, 3500), (2, 3));
        assert_eq!(secs_range(1000, 3000), (1, 3));
    }
}

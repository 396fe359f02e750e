//! The read path: tier selection, stitching of tiers into one gap-free
//! answer, and `max_points` merging.
//!
//! For a range `[start, end]` the chosen tier is the finest whose retention
//! reaches back to `start`. Its buckets are followed by the finer tiers'
//! points after its last bucket (the part not rolled up yet), and preceded by
//! coarser tiers' buckets where it has no older data.

use super::codec::Agg;
use super::state::{ChunkTier, HOUR, State};
use super::tiers::{self, Buckets};
use crate::config::Retention;
use crate::error::Result;
use crate::model::{HistoryPoint, Tier};
use rusqlite::Connection;
use std::collections::{HashMap, HashSet};

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

fn chunk_tier(tier: Tier) -> ChunkTier {
    match tier {
        Tier::Minute => ChunkTier::MINUTE,
        Tier::Hourly => ChunkTier::HOURLY,
        Tier::Daily | Tier::Raw => ChunkTier::DAILY,
    }
}

/// Reads buckets of the rolled-up tiers for a set of series. With many
/// series it scans each tier's time range once (rows of one span are
/// neighbours on disk); with few it looks chunks up by key.
pub struct Source<'a> {
    st: &'a State,
    conn: &'a Connection,
    wanted: Option<HashSet<u32>>,
    cache: HashMap<(usize, i64, u32), Buckets>,
    scanned: [Option<(i64, i64)>; 4],
}

/// Above this many series a query scans instead of looking up.
const SCAN_THRESHOLD: usize = 8;

impl<'a> Source<'a> {
    pub fn new(st: &'a State, conn: &'a Connection, sids: &[u32]) -> Source<'a> {
        let wanted = (sids.len() > SCAN_THRESHOLD).then(|| sids.iter().copied().collect());
        Source {
            st,
            conn,
            wanted,
            cache: HashMap::new(),
            scanned: [None; 4],
        }
    }

    /// Points of `tier` for `sid` with `from <= ts <= to` (seconds).
    fn points(&mut self, tier: Tier, sid: u32, from: i64, to: i64) -> Result<Vec<(i64, Agg)>> {
        if from > to {
            return Ok(Vec::new());
        }
        if tier == Tier::Raw {
            let series = &self.st.series[sid as usize];
            return Ok(series
                .raw_range(from, to)
                .iter()
                .map(|p| (p.ts, Agg::of(p.value)))
                .collect());
        }
        let t = chunk_tier(tier);
        let (c0, c1) = (t.chunk_of(from), t.chunk_of(to));
        if self.wanted.is_some() {
            self.ensure_scanned(tier, t, c0, c1)?;
        }
        let mut out = Vec::new();
        for chunk in c0..=c1 {
            let start = t.chunk_start(chunk);
            // An hour not sealed yet is answered from memory.
            let hour = start - start.rem_euclid(HOUR);
            let open = (tier == Tier::Minute)
                .then(|| self.st.open.get(&(hour, sid)))
                .flatten();
            let buckets: Option<&[Option<Agg>]> = match open {
                Some(o) => {
                    let first = ((start - hour) / t.bucket) as usize;
                    Some(&o[first..first + t.span])
                }
                None => {
                    let key = (tier.index(), chunk, sid);
                    if self.wanted.is_none()
                        && !self.cache.contains_key(&key)
                        && let Some(b) = tiers::read(self.conn, t, chunk, sid)?
                    {
                        self.cache.insert(key, b);
                    }
                    self.cache.get(&key).map(|b| &b[..])
                }
            };
            for (i, b) in buckets.into_iter().flatten().enumerate() {
                let ts = start + i as i64 * t.bucket;
                if let Some(a) = b
                    && ts >= from
                    && ts <= to
                {
                    out.push((ts, *a));
                }
            }
        }
        Ok(out)
    }

    /// Scans the chunks of `[c0, c1]` not scanned yet (keeping one covered
    /// interval per tier, so a many-series query reads each row once).
    fn ensure_scanned(&mut self, tier: Tier, t: ChunkTier, c0: i64, c1: i64) -> Result<()> {
        let idx = tier.index();
        let runs = match self.scanned[idx] {
            None => vec![(c0, c1)],
            Some((lo, hi)) => {
                let mut runs = Vec::new();
                if c0 < lo {
                    runs.push((c0, lo - 1));
                }
                if c1 > hi {
                    runs.push((hi + 1, c1));
                }
                runs
            }
        };
        let wanted = self.wanted.as_ref().expect("scan mode");
        for (a, b) in runs {
            let cache = &mut self.cache;
            tiers::scan(
                self.conn,
                t,
                a,
                b,
                |s| wanted.contains(&s),
                |chunk, s, buckets| {
                    cache.insert((idx, chunk, s), buckets);
                },
            )?;
        }
        self.scanned[idx] = Some(match self.scanned[idx] {
            None => (c0, c1),
            Some((lo, hi)) => (lo.min(c0), hi.max(c1)),
        });
        Ok(())
    }

    /// The stitched answer for one series over `[from, to]` (seconds).
    pub fn stitched(
        &mut self,
        tier: Tier,
        sid: u32,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, Agg)>> {
        // The chosen tier, then each finer tier after the last bucket of the
        // coarser one (what has not been rolled up yet).
        let mut fine = Vec::new();
        let mut cursor = from;
        for t in Tier::ALL[..=tier.index()].iter().rev() {
            let pts = self.points(*t, sid, cursor, to)?;
            if let Some(&(last, _)) = pts.last() {
                cursor = last + t.bucket_secs();
            }
            fine.extend(pts);
        }
        // Coarser tiers where the chosen one has no older data: only whole
        // buckets that end before it starts, so nothing is counted twice.
        let mut limit = fine.first().map_or(to + 1, |p| p.0);
        let mut prefix = Vec::new();
        for t in &Tier::ALL[tier.index() + 1..] {
            if limit <= from {
                break;
            }
            let mut pts = self.points(*t, sid, from, limit - 1)?;
            pts.retain(|p| p.0 + t.bucket_secs() <= limit);
            if let Some(&(first, _)) = pts.first() {
                limit = first;
            }
            prefix.push(pts);
        }
        let mut out: Vec<(i64, Agg)> = prefix.into_iter().rev().flatten().collect();
        out.extend(fine);
        Ok(out)
    }
}

/// Caps a series at `max` points: evenly spaced buckets of width
/// `ceil((end - start) / max)` ms from `start`, each keeping the
/// count-weighted mean, the min and the max, stamped with its start.
pub fn to_history(
    points: Vec<(i64, Agg)>,
    start_ms: i64,
    end_ms: i64,
    max: Option<usize>,
) -> Vec<HistoryPoint> {
    let point = |ts_ms: i64, a: &Agg| HistoryPoint {
        timestamp: ts_ms,
        value: a.mean(),
        min: a.min,
        max: a.max,
        count: a.count,
    };
    let max = match max {
        Some(m) if m > 0 && points.len() > m => m,
        _ => return points.iter().map(|(ts, a)| point(ts * 1000, a)).collect(),
    };
    let span = (end_ms - start_ms).max(1);
    let width = (span + max as i64 - 1) / max as i64;
    let mut out: Vec<(i64, Agg)> = Vec::with_capacity(max);
    for (ts, a) in points {
        let idx = ((ts * 1000 - start_ms).max(0) / width).min(max as i64 - 1);
        let stamp = start_ms + idx * width;
        match out.last_mut() {
            Some((s, acc)) if *s == stamp => acc.merge(&a),
            _ => out.push((stamp, a)),
        }
    }
    out.iter().map(|(ts, a)| point(*ts, a)).collect()
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
        let pts: Vec<(i64, Agg)> = (0..100)
            .map(|i| {
                (
                    i,
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
        let out = to_history(pts, 0, 100_000, Some(10));
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
        let pts = vec![(5, Agg::of(1.0)), (6, Agg::of(2.0))];
        let out = to_history(pts, 0, 10_000, Some(10));
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].timestamp, 6000);
    }

    #[test]
    fn second_range_is_inside_the_ms_range() {
        assert_eq!(secs_range(1500, 3500), (2, 3));
        assert_eq!(secs_range(1000, 3000), (1, 3));
    }
}

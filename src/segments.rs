//! How wide a bucket each point of an answer stands for, so a chart can tell
//! a missing bucket (a gap: the resource was stopped) from a coarser one.
//!
//! The store answers a range from one tier, preceded by coarser tiers where
//! that tier holds no older data and followed by finer tiers for what has not
//! been rolled up yet, so a 30-day answer is daily buckets, then a day of
//! hourly ones, then minutes and raw points. A gap rule that looks only at
//! the usual spacing of the points breaks every daily step in two.
//!
//! The answer does not carry each point's tier, but the stitching leaves a
//! trace that names it: tiers run from coarse to fine and never overlap (a
//! bucket ends before the next point starts), and every bucket starts on its
//! tier's UTC boundary (minute, hour, midnight). [`label`] gives each point
//! the coarsest tier its timestamp and its successor allow, never coarser
//! than the point before it. A raw point that happens to sit on a boundary
//! is told apart by its neighbours (the next raw point falls inside the
//! bucket it would claim, or the point before it is finer already).
//!
//! [`cap`] then merges points into `maxPoints` buckets exactly as the store
//! does (evenly spaced from the start, count-weighted mean, min, max, stamped
//! with the bucket start), keeping for each merged point the coarsest tier
//! it holds, and [`segments`] describes the result as runs of one tier and
//! width: `{"start": ms, "tier": "hourly", "width": ms}`.

use crate::model::{HistoryPoint, Tier};
use serde::Serialize;

/// A run of consecutive points of one tier and bucket width: from the point
/// stamped `start` on, until the next segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Segment {
    /// Timestamp (Unix ms) of the run's first point.
    pub start: i64,
    /// The tier the run's points were read from (the coarsest, for points
    /// merged by `maxPoints`).
    pub tier: Tier,
    /// How long a span (ms) each point of the run stands for: its tier's
    /// bucket (1 s for raw points), or the `maxPoints` bucket when that is
    /// wider.
    pub width: i64,
}

/// Width of a tier's bucket in ms.
pub fn tier_width(tier: Tier) -> i64 {
    tier.bucket_secs() * 1000
}

/// The next finer tier (raw stays raw).
fn finer(tier: Tier) -> Tier {
    let i = Tier::ALL.iter().position(|t| *t == tier).unwrap_or(0);
    Tier::ALL[i.saturating_sub(1)]
}

/// The tier each point of an uncapped, stitched answer was read from.
pub fn label(points: &[HistoryPoint]) -> Vec<Tier> {
    let mut out = Vec::with_capacity(points.len());
    let mut coarsest = Tier::Daily;
    for (i, p) in points.iter().enumerate() {
        let next = points.get(i + 1).map(|q| q.timestamp);
        let mut t = coarsest;
        while t != Tier::Raw {
            let w = tier_width(t);
            let aligned = p.timestamp.rem_euclid(w) == 0;
            if aligned && next.is_none_or(|n| n >= p.timestamp.saturating_add(w)) {
                break;
            }
            t = finer(t);
        }
        out.push(t);
        coarsest = t;
    }
    out
}

/// A point of a capped answer with what it stands for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Capped {
    pub point: HistoryPoint,
    pub tier: Tier,
    pub width: i64,
}

/// Caps `points` (uncapped, with their `tiers` from [`label`]) at `max`
/// points over `[start, end]` as the store's `maxPoints` does: only when
/// there are more than `max`, into evenly spaced buckets `ceil(span / max)`
/// ms wide from `start`, each keeping the count-weighted mean, the min and
/// the max and stamped with its start. Each point also gets its tier (the
/// coarsest merged into it) and width (that tier's bucket, or the `maxPoints`
/// bucket when wider).
pub fn cap(
    points: &[HistoryPoint],
    tiers: &[Tier],
    start: i64,
    end: i64,
    max: Option<usize>,
) -> Vec<Capped> {
    let own = |(p, t): (&HistoryPoint, &Tier)| Capped {
        point: *p,
        tier: *t,
        width: tier_width(*t),
    };
    let max = match max {
        Some(m) if m > 0 && points.len() > m => m as i64,
        _ => return points.iter().zip(tiers).map(own).collect(),
    };
    let span = (end - start).max(1);
    let width = (span + max - 1) / max;
    let mut out: Vec<Capped> = Vec::with_capacity(max as usize);
    // Sums of value x count per bucket: the mean is the total over the count.
    let mut sum = 0.0;
    for (p, t) in points.iter().zip(tiers) {
        let idx = ((p.timestamp - start).max(0) / width).min(max - 1);
        let stamp = start + idx * width;
        match out.last_mut() {
            Some(c) if c.point.timestamp == stamp => {
                sum += p.value * p.count as f64;
                c.point.count += p.count;
                c.point.min = c.point.min.min(p.min);
                c.point.max = c.point.max.max(p.max);
                c.point.value = sum / c.point.count as f64;
                c.tier = c.tier.max(*t);
                c.width = tier_width(c.tier).max(width);
            }
            _ => {
                sum = p.value * p.count as f64;
                out.push(Capped {
                    point: HistoryPoint {
                        timestamp: stamp,
                        ..*p
                    },
                    tier: *t,
                    width: tier_width(*t).max(width),
                });
            }
        }
    }
    out
}

/// The runs of one tier and width in a capped answer.
pub fn segments(points: &[Capped]) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    for c in points {
        match out.last() {
            Some(s) if s.tier == c.tier && s.width == c.width => {}
            _ => out.push(Segment {
                start: c.point.timestamp,
                tier: c.tier,
                width: c.width,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    const HOUR: i64 = 3_600_000;
    const DAY: i64 = 86_400_000;
    /// A midnight (UTC).
    const T0: i64 = 1_700_006_400_000;

    fn pt(timestamp: i64) -> HistoryPoint {
        HistoryPoint {
            timestamp,
            value: 1.0,
            min: 1.0,
            max: 1.0,
            count: 1,
        }
    }

    #[test]
    fn a_thirty_day_answer_is_labelled_tier_by_tier() {
        // 5 days, a stopped day, 1 day, then a day of hours, an hour of
        // minutes, and raw points every 15 s (on minute boundaries too).
        let mut ts: Vec<i64> = (0..5).map(|d| T0 + d * DAY).collect();
        ts.push(T0 + 6 * DAY);
        let hours = T0 + 7 * DAY;
        ts.extend((0..24).map(|h| hours + h * HOUR));
        let minutes = hours + 24 * HOUR;
        ts.extend((0..60).map(|m| minutes + m * MIN));
        let raw = minutes + HOUR;
        ts.extend((0..40).map(|i| raw + i * 15_000));
        let points: Vec<HistoryPoint> = ts.iter().map(|t| pt(*t)).collect();
        let tiers = label(&points);
        let count = |t: Tier| tiers.iter().filter(|x| **x == t).count();
        assert_eq!(count(Tier::Daily), 6);
        assert_eq!(count(Tier::Hourly), 24);
        assert_eq!(count(Tier::Minute), 60);
        assert_eq!(count(Tier::Raw), 40);
        assert!(tiers.windows(2).all(|w| w[0] >= w[1]), "coarse to fine");
        let capped = cap(&points, &tiers, T0, raw + 40 * 15_000, None);
        let segs = segments(&capped);
        assert_eq!(
            segs.iter().map(|s| (s.tier, s.width)).collect::<Vec<_>>(),
            [
                (Tier::Daily, DAY),
                (Tier::Hourly, HOUR),
                (Tier::Minute, MIN),
                (Tier::Raw, 1000)
            ]
        );
        assert_eq!(segs[1].start, hours);
    }

    #[test]
    fn raw_points_on_boundaries_stay_raw() {
        // A VM stopped for 20 minutes right after a point at the full hour,
        // and a lone raw point at midnight followed by a gap.
        let mut ts: Vec<i64> = (0..20).map(|i| T0 - 20 * 15_000 + i * 15_000).collect();
        ts.push(T0);
        ts.extend((0..10).map(|i| T0 + 20 * MIN + i * 15_000));
        let points: Vec<HistoryPoint> = ts.iter().map(|t| pt(*t)).collect();
        assert!(label(&points).iter().all(|t| *t == Tier::Raw));
    }

    #[test]
    fn cap_merges_as_the_store_does() {
        let points: Vec<HistoryPoint> = (0..100i64)
            .map(|i| HistoryPoint {
                timestamp: T0 + i * 1000,
                value: i as f64,
                min: i as f64 - 1.0,
                max: i as f64 + 1.0,
                count: 1 + (i % 3) as u64,
            })
            .collect();
        let tiers = label(&points);
        let out = cap(&points, &tiers, T0, T0 + 100_000, Some(10));
        assert_eq!(out.len(), 10);
        assert!(out.iter().all(|c| c.width == 10_000 && c.tier == Tier::Raw));
        let first = &out[0].point;
        assert_eq!(first.timestamp, T0);
        assert_eq!(first.min, -1.0);
        assert_eq!(first.max, 10.0);
        let (n, s) = points[..10].iter().fold((0, 0.0), |(n, s), p| {
            (n + p.count, s + p.value * p.count as f64)
        });
        assert_eq!(first.count, n);
        assert!((first.value - s / n as f64).abs() < 1e-12);
        // Few points are left alone.
        let few = cap(&points[..5], &tiers[..5], T0, T0 + 100_000, Some(10));
        assert_eq!(few.len(), 5);
        assert_eq!(few[3].point, points[3]);
    }

    #[test]
    fn merged_daily_points_keep_their_day() {
        // 90 days in 120 points (18 h each): 87 daily buckets and 3 days of
        // hourly ones. A daily point stays a day wide, not 18 h.
        let mut points: Vec<HistoryPoint> = (0..87).map(|d| pt(T0 + d * DAY)).collect();
        points.extend((0..72).map(|h| pt(T0 + 87 * DAY + h * HOUR)));
        let tiers = label(&points);
        let out = cap(&points, &tiers, T0, T0 + 90 * DAY, Some(120));
        let segs = segments(&out);
        assert_eq!(
            segs.iter().map(|s| (s.tier, s.width)).collect::<Vec<_>>(),
            [(Tier::Daily, DAY), (Tier::Hourly, 18 * HOUR)]
        );
        assert_eq!(out.iter().filter(|c| c.tier == Tier::Daily).count(), 87);
    }
}

//! Property test: whatever the order of writes (out of order, late,
//! duplicated, with gaps, across UTC midnight), restarts, rollups and
//! prunes, every rolled-up bucket equals an independent recomputation from
//! the raw points written into it, every closed bucket inside retention
//! exists, and the raw tier holds exactly the retained raw points.

use proptest::prelude::*;
use pulse_metrics::{
    MetricsConfig, Point, Retention, SeriesFilter, SeriesKey, Store, Tier, TimeRange,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// Ten series: more than a query looks up one by one, so `query_many`
/// takes its scanning path and can be checked against `query`.
const SERIES: [(&str, &str, &str); 10] = [
    ("vm", "pve1:node1:101", "cpu"),
    ("node", "pve1:node1", "memory"),
    ("storage", "pve1:node1:local", "disk"),
    ("vm", "pve1:node1:102", "cpu"),
    ("vm", "pve1:node1:103", "cpu"),
    ("container", "pve1:node1:104", "memory"),
    ("container", "pve1:node1:105", "disk"),
    ("node", "pve1:node2", "cpu"),
    ("storage", "pve1:node2:ceph", "disk"),
    ("dockerHost", "h1", "cpu"),
];
/// 2024-01-01T00:00:00Z minus three hours: runs cross UTC midnight.
const BASE: i64 = 1_704_067_200 - 3 * 3600;

fn config(dir: &std::path::Path) -> MetricsConfig {
    MetricsConfig {
        database_path: dir.join("metrics.db"),
        retention: Retention {
            raw: Duration::from_secs(15 * 60),
            minute: Duration::from_secs(2 * 3600),
            hourly: Duration::from_secs(30 * 3600),
            daily: Duration::from_secs(3 * 86_400),
        },
        ..MetricsConfig::default()
    }
}

#[derive(Debug, Clone)]
enum Step {
    /// Move the clock forward.
    Advance(i64),
    /// Points (series, seconds before now, value); an offset beyond raw
    /// retention makes a late point.
    Write(Vec<(usize, i64, i32)>),
    /// Write again seconds already written (which one, by index into what
    /// was written so far; the new value): duplicates of recent and of
    /// late points alike.
    Rewrite(Vec<(usize, i32)>),
    Rollup,
    Prune,
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (1i64..4 * 3600).prop_map(Step::Advance),
        5 => proptest::collection::vec(
            (0usize..10, prop_oneof![4 => 0i64..600, 1 => 0i64..7200, 1 => 0i64..(3 * 86_400)], -50i32..150),
            1..40
        )
        .prop_map(Step::Write),
        2 => proptest::collection::vec((any::<usize>(), -50i32..150), 1..10).prop_map(Step::Rewrite),
        2 => Just(Step::Rollup),
        1 => Just(Step::Prune),
        1 => Just(Step::Restart),
    ]
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Agg {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Agg {
    fn add(&mut self, v: f64) {
        if self.count == 0 {
            self.min = v;
            self.max = v;
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        self.count += 1;
        self.sum += v;
    }
}

/// Every bucket of `tier` the store exports, keyed (series, start in
/// seconds), the series numbered by `series_of`.
fn exported(
    store: &Store,
    tier: Tier,
    series_of: impl Fn(&SeriesKey) -> usize,
) -> BTreeMap<(usize, i64), Agg> {
    let mut got = BTreeMap::new();
    store
        .export(tier, |key, p| {
            got.insert(
                (series_of(key), p.timestamp / 1000),
                Agg {
                    count: p.count,
                    sum: p.value * p.count as f64,
                    min: p.min,
                    max: p.max,
                },
            );
            Ok(())
        })
        .unwrap();
    got
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let mut store = Store::open(cfg.clone()).unwrap();
    let mut now = BASE;
    // (series, second) -> value: the last write of each second wins.
    let mut written: BTreeMap<(usize, i64), f64> = BTreeMap::new();
    let mut raw_floor = 0i64;
    let mut rolled_to = i64::MIN;
    // Late writes (below the raw floor) not folded by a rollup yet.
    let mut pending_late: std::collections::BTreeSet<(usize, i64)> = Default::default();
    for s in steps {
        match s {
            Step::Advance(d) => now += d,
            Step::Write(_) | Step::Rewrite(_) => {
                let points: Vec<(usize, i64, i32)> = match s {
                    Step::Write(points) => points
                        .into_iter()
                        .map(|(series, back, v)| (series, now - back, v))
                        .collect(),
                    Step::Rewrite(picks) => {
                        let keys: Vec<(usize, i64)> = written.keys().copied().collect();
                        if keys.is_empty() {
                            continue;
                        }
                        picks
                            .into_iter()
                            .map(|(i, v)| {
                                let (series, ts) = keys[i % keys.len()];
                                (series, ts, v)
                            })
                            .collect()
                    }
                    _ => unreachable!(),
                };
                let mut batch = Vec::new();
                for (series, ts, v) in points {
                    // Replacing a point already folded after its raw minute
                    // was pruned cannot be done (docs/storage.md, "Rollup":
                    // its old value is gone, so the new one is merged too);
                    // replacing a late point still waiting to be folded can.
                    if ts < raw_floor {
                        if written.contains_key(&(series, ts))
                            && !pending_late.contains(&(series, ts))
                        {
                            continue;
                        }
                        pending_late.insert((series, ts));
                    }
                    let (t, i, m) = SERIES[series];
                    batch.push(Point::new(
                        &SeriesKey::new(t, i, m),
                        f64::from(v) / 4.0,
                        ts * 1000 + 7,
                    ));
                    written.insert((series, ts), f64::from(v) / 4.0);
                }
                store.write_batch(&batch).unwrap();
            }
            Step::Rollup => {
                pending_late.clear();
                let r = store.rollup(now * 1000).unwrap();
                rolled_to = rolled_to.max(now);
                raw_floor = r.raw_floor / 1000;
            }
            Step::Prune => {
                let r = store.prune(now * 1000).unwrap();
                raw_floor = r.floors[0] / 1000;
            }
            Step::Restart => {
                store.close().unwrap();
                store = Store::open(cfg.clone()).unwrap();
            }
        }
    }
    // The floors as they stand: moved by prunes and by the rollups that
    // sealed an hour (which prune first).
    let last = store.rollup(now * 1000).unwrap();
    let floors = last.floors.map(|f| f / 1000);
    raw_floor = last.raw_floor / 1000;
    rolled_to = rolled_to.max(now);

    // Raw: exactly the retained points.
    let mut raw: BTreeMap<(usize, i64), f64> = BTreeMap::new();
    store
        .export(Tier::Raw, |key, p| {
            let series = SERIES
                .iter()
                .position(|s| {
                    (s.0, s.1, s.2) == (&*key.resource_type, &*key.resource_id, &*key.metric)
                })
                .unwrap();
            // Raw points keep the millisecond they were written with.
            assert_eq!(p.timestamp % 1000, 7);
            raw.insert((series, p.timestamp / 1000), p.value);
            Ok(())
        })
        .unwrap();
    let expected_raw: BTreeMap<(usize, i64), f64> = written
        .iter()
        .filter(|((_, ts), _)| *ts >= raw_floor)
        .map(|(k, v)| (*k, *v))
        .collect();
    prop_assert_eq!(&raw, &expected_raw, "raw tier");

    for (tier, width, floor) in [
        (Tier::Minute, 60, floors[1]),
        (Tier::Hourly, 3600, floors[2]),
        (Tier::Daily, 86_400, floors[3]),
    ] {
        let mut expected: BTreeMap<(usize, i64), Agg> = BTreeMap::new();
        for (&(series, ts), &v) in &written {
            let start = ts.div_euclid(width) * width;
            if start + width <= rolled_to && start >= floor {
                expected.entry((series, start)).or_default().add(v);
            }
        }
        let got = exported(&store, tier, |key| {
            SERIES
                .iter()
                .position(|s| {
                    (s.0, s.1, s.2) == (&*key.resource_type, &*key.resource_id, &*key.metric)
                })
                .unwrap()
        });
        prop_assert_eq!(
            got.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "{} buckets present",
            tier
        );
        for (k, e) in &expected {
            let g = &got[k];
            prop_assert_eq!(g.count, e.count, "{} {:?} count", tier, k);
            prop_assert!(
                close(g.sum, e.sum),
                "{} {:?} sum {} vs {}",
                tier,
                k,
                g.sum,
                e.sum
            );
            prop_assert_eq!(g.min, e.min, "{} {:?} min", tier, k);
            prop_assert_eq!(g.max, e.max, "{} {:?} max", tier, k);
        }
    }
    // Stitched answers: strictly increasing, and never older at the end
    // than the newest raw point in range (no trailing hole).
    for range_secs in [600, 3 * 3600, 26 * 3600, 5 * 86_400] {
        let range = TimeRange::last(Duration::from_secs(range_secs), now * 1000);
        // The many-series path answers exactly what one-series queries do.
        for max_points in [None, Some(7)] {
            let many = store
                .query_many(&SeriesFilter::default(), range, max_points)
                .unwrap();
            for (key, points) in &many.series {
                let one = store.query(key, range, max_points).unwrap();
                prop_assert_eq!(one.tier, many.tier);
                prop_assert_eq!(&one.points, points, "{} over {}s", key, range_secs);
            }
        }
        for (series, (t, i, m)) in SERIES.iter().enumerate() {
            let h = store
                .query(&SeriesKey::new(*t, *i, *m), range, None)
                .unwrap();
            prop_assert!(
                h.points.windows(2).all(|w| w[0].timestamp < w[1].timestamp),
                "increasing"
            );
            prop_assert!(
                h.points
                    .iter()
                    .all(|p| p.timestamp >= range.start && p.timestamp <= range.end)
            );
            let newest_raw = expected_raw
                .keys()
                .filter(|(s, ts)| {
                    *s == series && ts * 1000 + 7 >= range.start && ts * 1000 + 7 <= range.end
                })
                .map(|(_, ts)| ts * 1000 + 7)
                .max();
            if let Some(newest) = newest_raw {
                // The newest raw point is shown, or is inside the last bucket.
                let width = h.tier.bucket_secs() * 1000;
                prop_assert!(
                    h.points
                        .last()
                        .is_some_and(|p| p.timestamp + width > newest),
                    "trailing hole"
                );
            }
        }
    }
    store.close().unwrap();
    Ok(())
}

proptest! {
    // PROPTEST_CASES=2000 for a longer hunt.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48),
        ..ProptestConfig::default()
    })]
    #[test]
    fn tiers_equal_an_independent_recomputation(steps in proptest::collection::vec(step(), 1..40)) {
        run(steps)?;
    }
}

#[test]
fn late_point_refolds_its_sealed_hour() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let key = SeriesKey::new("vm", "1", "cpu");
    let t0 = BASE; // an hour boundary
    for i in 0..60 {
        store
            .write_batch(&[Point::new(&key, 1.0, (t0 + i * 60) * 1000)])
            .unwrap();
    }
    store.rollup((t0 + 3600) * 1000).unwrap();
    // Late point into the sealed hour, raw still retained.
    store
        .write_batch(&[Point::new(&key, 61.0, (t0 + 30) * 1000)])
        .unwrap();
    store.rollup((t0 + 3660) * 1000).unwrap();
    let mut hourly = Vec::new();
    store
        .export(Tier::Hourly, |_, p| {
            hourly.push(*p);
            Ok(())
        })
        .unwrap();
    assert_eq!(hourly.len(), 1);
    assert_eq!(hourly[0].count, 61);
    assert!(close(hourly[0].value, 121.0 / 61.0));
    assert_eq!(hourly[0].max, 61.0);
    store.close().unwrap();
}

/// A chart of every series is split over several readers; each part must
/// answer exactly what a query of that one series alone answers, in every
/// tier and across the stitched edges, in the store's key order.
#[test]
fn many_series_split_across_readers_answer_like_one_by_one() {
    for enabled in [true, false] {
        split_queries_answer_like_one_by_one(enabled);
    }
}

/// With the file, or in memory only (`enabled: false`).
fn split_queries_answer_like_one_by_one(enabled: bool) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(MetricsConfig {
        enabled,
        ..config(dir.path())
    })
    .unwrap();
    let keys: Vec<SeriesKey> = (0..100)
        .map(|i| SeriesKey::new(["vm", "node", "storage"][i % 3], format!("r{i}"), "cpu"))
        .collect();
    let now = BASE + 40 * 3600;
    // 40 h: one point a minute, every series with its own gaps and values;
    // rolled up every hour as a running service would.
    let mut t = BASE;
    while t <= now {
        let batch: Vec<Point> = keys
            .iter()
            .enumerate()
            .filter(|(i, _)| (t / 60 + *i as i64) % 17 != 0)
            .map(|(i, k)| Point::new(k, ((t / 60) % 97 + i as i64) as f64 / 3.0, t * 1000))
            .collect();
        store.write_batch(&batch).unwrap();
        if t % 3600 == 0 {
            store.maintain(t * 1000).unwrap();
        }
        t += 60;
    }
    store.flush().unwrap();
    for range_secs in [600, 3 * 3600, 26 * 3600, 40 * 3600] {
        let range = TimeRange::last(Duration::from_secs(range_secs), now * 1000);
        for max_points in [None, Some(50)] {
            let many = store
                .query_many(&SeriesFilter::default(), range, max_points)
                .unwrap();
            let mut sorted = keys.clone();
            sorted.sort();
            assert_eq!(
                many.series.iter().map(|(k, _)| k).collect::<Vec<_>>(),
                sorted.iter().collect::<Vec<_>>()
            );
            for (key, points) in &many.series {
                assert!(!points.is_empty(), "{key} over {range_secs}s");
                let one = store.query(key, range, max_points).unwrap();
                assert_eq!(one.tier, many.tier);
                assert_eq!(
                    &one.points, points,
                    "{key} over {range_secs}s, enabled {enabled}"
                );
            }
        }
    }
    store.close().unwrap();
}

/// Sealing an hour computes the minute buckets of many series on several
/// threads at once (more than 64 work items): every minute and hourly
/// bucket must still equal a recomputation from the points written, for
/// series with gaps, a rewritten second and a restart between rollups.
#[test]
fn an_hour_sealed_on_several_threads_matches_a_recomputation() {
    sealed_tiers_match_a_recomputation(300, 5, 2 * 3600 + 600, &[Tier::Minute, Tier::Hourly]);
}

/// More series than a rollup pass holds hourly and daily chunks of at once
/// (it writes them out in turns), across a UTC day's close: every hourly and
/// daily bucket must still equal a recomputation.
#[test]
fn a_day_closed_over_thousands_of_series_matches_a_recomputation() {
    sealed_tiers_match_a_recomputation(4500, 1200, 28 * 3600, &[Tier::Hourly, Tier::Daily]);
}

/// Writes `series` series every `step` seconds from `BASE` for `secs`
/// seconds (rolling up every 5 minutes, restarting once), then checks each
/// closed bucket of `tiers` against the points written.
fn sealed_tiers_match_a_recomputation(series: usize, step: i64, secs: i64, tiers: &[Tier]) {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<SeriesKey> = (0..series)
        .map(|i| SeriesKey::new(["vm", "node", "storage"][i % 3], format!("r{i}"), "cpu"))
        .collect();
    let mut written: BTreeMap<(usize, i64), f64> = BTreeMap::new();
    let mut store = Store::open(config(dir.path())).unwrap();
    let start = BASE;
    let end = BASE + secs;
    let restart_at = start + (secs / 2).div_euclid(step) * step;
    let rewrite_at = start + (secs / 4).div_euclid(step) * step;
    let mut t = start;
    while t < end {
        let batch: Vec<Point> = keys
            .iter()
            .enumerate()
            .filter(|(i, _)| (t / step + *i as i64) % 11 != 0)
            .map(|(i, k)| {
                let v = ((t * 7919 + i as i64 * 104_729) % 10_007) as f64 / 7.0;
                written.insert((i, t), v);
                Point::new(k, v, t * 1000)
            })
            .collect();
        store.write_batch(&batch).unwrap();
        if t == rewrite_at {
            // A second written again within raw retention (up to 5 minutes
            // back): the last write wins.
            let again = t - (300 / step) * step;
            written.insert((5, again), -1.5);
            store
                .write_batch(&[Point::new(&keys[5], -1.5, again * 1000)])
                .unwrap();
        }
        let next = t + step;
        for roll in (t / 300 + 1)..=(next / 300) {
            store.rollup(roll * 300 * 1000).unwrap();
        }
        if t == restart_at {
            store.close().unwrap();
            store = Store::open(config(dir.path())).unwrap();
        }
        t = next;
    }
    store.rollup(end * 1000).unwrap();
    for &tier in tiers {
        let width = match tier {
            Tier::Minute => 60,
            Tier::Hourly => 3600,
            _ => 86_400,
        };
        let mut expected: BTreeMap<(usize, i64), Agg> = BTreeMap::new();
        for (&(series, ts), &v) in &written {
            let bucket = ts.div_euclid(width) * width;
            // Closed buckets (the open hour's minutes come from the raw tier).
            if bucket + width <= end {
                expected.entry((series, bucket)).or_default().add(v);
            }
        }
        let got = exported(&store, tier, |key| key.resource_id[1..].parse().unwrap());
        assert!(!expected.is_empty(), "{tier}: nothing to check");
        assert_eq!(got.len(), expected.len(), "{tier} buckets");
        for (k, e) in &expected {
            let g = got.get(k).unwrap_or_else(|| panic!("{tier} {k:?} missing"));
            assert_eq!(
                (g.count, g.min, g.max),
                (e.count, e.min, e.max),
                "{tier} {k:?}"
            );
            assert!(
                close(g.sum, e.sum),
                "{tier} {k:?} sum {} vs {}",
                g.sum,
                e.sum
            );
        }
    }
    store.close().unwrap();
}

//! Upgrading a file written before schema version 2, whose guest ids still
//! carry their node (`pve1:node1:101`): the series of one VMID on several
//! nodes become one series `pve1:101`, with the node as metadata.
//!
//! `tests/fixtures/schema-v1.db` was written by the build before this change
//! (`tests/fixtures/make-schema-v1.py` says how); the points it holds are
//! derived here from the same rules.

use pulse_metrics::{MetricsConfig, SeriesKey, Store, Tier, TimeRange};
use std::collections::BTreeMap;
use std::path::Path;

const N: i64 = 1_700_001_000_000; // 22:30, the fixture's last rollup
const H: i64 = 3_600_000;
const C: i64 = N - 600_000; // written under both nodes

/// Guest 101's points by timestamp, the later write winning.
fn guest_points() -> BTreeMap<i64, f64> {
    let mut m = BTreeMap::new();
    for k in 0..240 {
        m.insert(N - 3 * H + k * 30_000, (k % 10) as f64);
    }
    m.insert(C, 1000.0);
    for k in 0..130 {
        m.insert(N - H + k * 30_000, (50 + k % 4) as f64);
    }
    m
}

fn open_copy(dir: &Path) -> (Store, MetricsConfig) {
    let path = dir.join("metrics.db");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schema-v1.db");
    std::fs::copy(fixture, &path).unwrap();
    let config = MetricsConfig {
        database_path: path,
        ..MetricsConfig::default()
    };
    (Store::open(config.clone()).unwrap(), config)
}

fn series_ids(store: &Store) -> Vec<(String, String, String)> {
    store
        .series()
        .unwrap()
        .into_iter()
        .map(|s| (s.key.resource_type, s.key.resource_id, s.key.metric))
        .collect()
}

fn owned(list: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    list.iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect()
}

/// (count, mean, min, max) of `points` per bucket of `width` ms.
fn buckets(points: &BTreeMap<i64, f64>, width: i64) -> BTreeMap<i64, (u64, f64, f64, f64)> {
    let mut out: BTreeMap<i64, (u64, f64, f64, f64)> = BTreeMap::new();
    for (&t, &v) in points {
        let e = out
            .entry(t - t.rem_euclid(width))
            .or_insert((0, 0.0, f64::MAX, f64::MIN));
        e.0 += 1;
        e.1 += v;
        e.2 = e.2.min(v);
        e.3 = e.3.max(v);
    }
    for e in out.values_mut() {
        e.1 /= e.0 as f64;
    }
    out
}

#[test]
fn a_file_of_the_previous_schema_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let (store, config) = open_copy(dir.path());
    let want_series = owned(&[
        ("container", "pve1:200", "cpu"),
        ("node", "pve1:node1", "cpu"),
        ("storage", "pve1:node1:local", "disk"),
        ("vm", "pve1:101", "cpu"),
        ("vm", "web-frontend", "cpu"),
    ]);
    assert_eq!(series_ids(&store), want_series);
    assert_eq!(store.stats().unwrap().series_count, 5);

    // The node is metadata now: where the guest was seen last.
    let meta = store.resource("vm", "pve1:101").unwrap();
    assert_eq!(meta.node.as_deref(), Some("node2"));
    assert_eq!(meta.instance.as_deref(), Some("pve1"));
    let ct = store.resource("container", "pve1:200").unwrap();
    assert_eq!(ct.node.as_deref(), Some("node1"));
    assert_eq!(store.resource("node", "pve1:node1"), None);

    let now = N + 10 * 60_000;
    let cpu = SeriesKey::new("vm", "pve1:101", "cpu");
    let expected = guest_points();

    // Raw tier: both nodes' points in one series; in the second written
    // under both, the later write (node2's) is kept.
    let raw = store
        .query(&cpu, TimeRange::between(N - H, now, now).unwrap(), None)
        .unwrap();
    assert_eq!(raw.tier, Tier::Raw);
    let got: Vec<(i64, f64)> = raw.points.iter().map(|p| (p.timestamp, p.value)).collect();
    let want: Vec<(i64, f64)> = expected.range(N - H..).map(|(t, v)| (*t, *v)).collect();
    assert_eq!(got, want);
    assert_eq!(expected[&C], 50.0);

    // Minute tier: the sealed chunks of both nodes and the open hour add up
    // to exactly the buckets of the merged points.
    let minutes = store
        .query(
            &cpu,
            TimeRange::between(N - 3 * H, N - 1, now).unwrap(),
            None,
        )
        .unwrap();
    assert_eq!(minutes.tier, Tier::Minute);
    let want_minutes = buckets(&expected, 60_000);
    let got_minutes: BTreeMap<i64, (u64, f64, f64, f64)> = minutes
        .points
        .iter()
        .map(|p| (p.timestamp, (p.count, p.value, p.min, p.max)))
        .collect();
    let want_before_n: BTreeMap<i64, (u64, f64, f64, f64)> =
        want_minutes.range(..N).map(|(k, v)| (*k, *v)).collect();
    assert_eq!(got_minutes, want_before_n);

    // Old ids still answer, and writes under them land in the merged series.
    let old = SeriesKey::new("vm", "pve1:node1:101", "cpu");
    store
        .write("vm", "pve1:node1:101", "cpu", 77.0, now)
        .unwrap();
    store.flush().unwrap();
    let range = TimeRange::between(now - 1000, now, now).unwrap();
    assert_eq!(
        store.query(&cpu, range, None).unwrap().points[0].value,
        77.0
    );
    assert_eq!(
        store.query(&old, range, None).unwrap().points[0].value,
        77.0
    );
    assert_eq!(series_ids(&store), want_series);
    store.close().unwrap();

    // Reopened: nothing merged twice, nothing lost; raw points still
    // logged under the old ids are read as the new series'.
    let store = Store::open(config).unwrap();
    assert_eq!(series_ids(&store), want_series);
    let again = store
        .query(&cpu, TimeRange::between(N - H, now - 1, now).unwrap(), None)
        .unwrap();
    assert_eq!(again.points, raw.points);

    // Rolled up past every hour: each hourly bucket holds both nodes'
    // points exactly once.
    let later = N + 2 * H;
    store.rollup(later).unwrap();
    let mut expected = expected;
    expected.insert(now, 77.0);
    let hours = store
        .query(
            &cpu,
            TimeRange::between(N - 4 * H, later, later + 30 * H).unwrap(),
            None,
        )
        .unwrap();
    assert_eq!(hours.tier, Tier::Hourly);
    let got_hours: BTreeMap<i64, (u64, f64, f64, f64)> = hours
        .points
        .iter()
        .map(|p| (p.timestamp, (p.count, p.value, p.min, p.max)))
        .collect();
    assert_eq!(got_hours, buckets(&expected, H));
    // 21:00, the hour of the migration: 60 points on node1, 60 on node2.
    assert_eq!(got_hours[&(N - 3 * H / 2)].0, 120);
    store.close().unwrap();
}

//! Minimal reproductions of store misbehaviour found while building the CLI.
//! Ignored until the store is fixed; run with `cargo test --test store_bugs -- --ignored`.

use pulse_metrics::{HistoryPoint, MetricsConfig, SeriesKey, Store, Tier};

fn exported(store: &Store, tier: Tier) -> Vec<(SeriesKey, HistoryPoint)> {
    let mut seen = Vec::new();
    store
        .export(tier, |k, p| {
            seen.push((k.clone(), *p));
            Ok(())
        })
        .unwrap();
    seen
}

/// `Store::export` (and `Store::series`) scan chunks with
/// `tiers::scan(conn, t, i64::MIN >> 24, i64::MAX >> 24, ..)`, whose upper
/// bound `(last + 1) << 24` overflows to `i64::MIN`, so no chunk on disk is
/// ever returned: only the minute buckets of hours still open in memory are.
#[test]
#[ignore = "store bug: export/series skip every on-disk chunk (tiers::scan upper bound (last + 1) << 24 overflows)"]
fn export_returns_buckets_stored_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(MetricsConfig {
        database_path: dir.path().join("m.db"),
        ..Default::default()
    })
    .unwrap();
    let key = SeriesKey::new("vm", "1", "cpu");
    let now = 1_699_999_980_000;
    let bucket = HistoryPoint {
        timestamp: now - 7 * 3_600_000,
        value: 11.0,
        min: 9.0,
        max: 15.0,
        count: 1,
    };
    store
        .import_buckets(Tier::Hourly, &[(key.clone(), bucket)])
        .unwrap();
    assert_eq!(store.stats().unwrap().hourly_count, 1);
    let hourly = exported(&store, Tier::Hourly);
    assert_eq!(
        hourly.len(),
        1,
        "stats counts the bucket, export does not list it"
    );
    let info = store.series().unwrap();
    assert!(info[0].last_timestamp.is_some(), "{info:?}");
}

/// A query whose range spans millennia takes time linear in the span even on
/// a store holding one point: `start = 0, end = year 9999` answers in ~55 s
/// (debug build), `start = 0, end = 2030` in 0.5 s. Through the HTTP history
/// endpoint this is a cheap way to tie up a core.
#[test]
#[ignore = "store bug: query cost grows with the span asked for (0 .. year 9999 takes ~55 s on a one-point store)"]
fn a_query_over_a_huge_span_is_quick() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(MetricsConfig {
        database_path: dir.path().join("m.db"),
        ..Default::default()
    })
    .unwrap();
    let now = 1_700_000_010_000;
    store.write("vm", "x", "cpu", 1.0, now - 10_000).unwrap();
    store.flush().unwrap();
    let started = std::time::Instant::now();
    let range = pulse_metrics::TimeRange {
        start: 0,
        end: pulse_metrics::model::MAX_TIMESTAMP_MS,
        now,
    };
    let h = store
        .query(&SeriesKey::new("vm", "x", "cpu"), range, None)
        .unwrap();
    assert_eq!(h.points.len(), 1);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

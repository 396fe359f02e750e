//! Profiling harness for the read path: builds (once) a store with 26 h of
//! 255 series in /tmp/qprof, then times `query_many` over 24 h and single
//! series queries. Run under `perf record` to see where a query's time goes:
//!
//!     cargo build --release --example qprof && perf record -g target/release/examples/qprof
//!
//! The figures that count come from `cargo bench --bench workload`.

use pulse_metrics::*;
use std::time::{Duration, Instant};
fn main() {
    let dir = std::path::PathBuf::from("/tmp/qprof");
    let fresh = !dir.join("m.db").exists();
    let store = Store::open(MetricsConfig {
        database_path: dir.join("m.db"),
        ..Default::default()
    })
    .unwrap();
    let keys: Vec<SeriesKey> = (0..255)
        .map(|i| SeriesKey::new("vm", format!("id{i}"), "cpu"))
        .collect();
    let end = 1_793_491_200i64;
    if fresh {
        let mut ts = end - 26 * 3600;
        let mut v = 1.2345678901234f64;
        while ts < end {
            let pts: Vec<Point> = keys
                .iter()
                .map(|k| {
                    v = (v * 1.0001 + 0.37) % 100.0;
                    Point::new(k, v, ts * 1000)
                })
                .collect();
            store.write_batch(&pts).unwrap();
            ts += if ts < end - 3 * 3600 { 60 } else { 5 };
            if ts % 3600 == 0 {
                store.rollup(ts * 1000).unwrap();
            }
        }
        store.maintain(end * 1000).unwrap();
    }
    let range = TimeRange::last(Duration::from_secs(86400), end * 1000);
    let t = Instant::now();
    let n = 40;
    for _ in 0..n {
        let m = store
            .query_many(&SeriesFilter::default(), range, Some(500))
            .unwrap();
        assert_eq!(m.series.len(), 255);
    }
    println!(
        "all 24h: {:.2} ms",
        t.elapsed().as_secs_f64() * 1000.0 / n as f64
    );
    let t = Instant::now();
    for _ in 0..n {
        let m = store
            .query_many(&SeriesFilter::default(), range, None)
            .unwrap();
        assert_eq!(m.series.len(), 255);
    }
    println!(
        "all 24h, every point: {:.2} ms",
        t.elapsed().as_secs_f64() * 1000.0 / n as f64
    );
    let mut spaced = vec![];
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(300));
        let t = Instant::now();
        store
            .query_many(&SeriesFilter::default(), range, None)
            .unwrap();
        spaced.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    spaced.sort_by(f64::total_cmp);
    println!(
        "all 24h, every point, 300 ms apart: p50 {:.2} ms",
        spaced[5]
    );
    let mut s = vec![];
    for i in 0..300 {
        let t = Instant::now();
        store.query(&keys[i % 255], range, None).unwrap();
        s.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "one 24h p50 {:.3} p99 {:.3} max {:.3} first {:.3}",
        s[150], s[297], s[299], s[0]
    );
}

//! Export throughput: how many points per second `export.remote_write`
//! sustains to a real VictoriaMetrics on this machine (docs/remote.md).
//!
//!     cargo bench --bench remote_write          # REMOTE_BENCH_POINTS=N to change the load
//!
//! Writes N points (1,000 series, one flush per poll) into a fresh store,
//! then starts the exporter from the start of the journal and times it until
//! the engine has acknowledged every point.

#[path = "../tests/engines/mod.rs"]
mod engines;

use pulse_metrics::config::RemoteWriteTarget;
use pulse_metrics::remote::{RemoteHealth, sender};
use pulse_metrics::{MetricsConfig, Point, Store};
use std::time::{Duration, Instant};

fn main() {
    if !engines::available(engines::Kind::VictoriaMetrics) {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let total: usize = std::env::var("REMOTE_BENCH_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let series = 1000;
    let dir = tempfile::tempdir().unwrap();
    let engine = engines::Engine::start(engines::Kind::VictoriaMetrics, &dir.path().join("vm"));
    let store = Store::open(MetricsConfig {
        database_path: dir.path().join("metrics.db"),
        ..MetricsConfig::default()
    })
    .unwrap();
    let polls = total / series;
    let t0 = pulse_metrics::model::now_ms() - polls as i64 * 5_000;
    for i in 0..polls {
        let batch: Vec<Point> = (0..series)
            .map(|s| Point {
                resource_type: "vm".into(),
                resource_id: format!("pve1:{s}"),
                metric: "cpu".into(),
                value: ((i * 7919 + s * 104_729) % 100_003) as f64 / 8.0,
                timestamp: t0 + i as i64 * 5_000,
            })
            .collect();
        store.write_batch(&batch).unwrap();
        store.flush().unwrap();
    }
    let n = (polls * series) as u64;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let health = RemoteHealth::default();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let target = RemoteWriteTarget {
        name: "vm".into(),
        url: engine.write_url(),
        ..RemoteWriteTarget::default()
    };
    let started = Instant::now();
    let tasks =
        rt.block_on(async { sender::spawn(store.clone(), &[target], health.clone(), stop) });
    loop {
        let sent = health.snapshot()[0].sent_points;
        if sent >= n {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "only {sent} of {n} sent"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    rt.block_on(async {
        for t in tasks {
            let _ = t.await;
        }
    });
    println!(
        "remote write to VictoriaMetrics: {n} points in {secs:.2} s = {:.0} points/s (batch_size 5000, 1,000 series)",
        n as f64 / secs
    );
}

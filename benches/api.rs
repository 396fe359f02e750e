//! The service under the typical install's data: `/api/charts?range=24h`
//! latency and sustained `/api/metrics-store/write` throughput; then a
//! fleet of 10,000 resources, paged as the dashboard pages it.
//!
//! `cargo bench --bench api` (release build). Loads 85 resources (5 nodes,
//! 50 VMs, 20 containers, 10 storage) x 3 metrics = 255 series: 24 h at one
//! point a minute plus the last 2 h at one point every 5 s, through the
//! store API, then runs `maintain`. Prints p50/p99 latencies and points/s.
//! Then 10,000 resources x 4 metrics with names (22 h of minute buckets
//! imported, the last 2 h as raw points every 5 s, rolled up): one page of
//! the 24 h dashboard (50 rows), a page deep in the list, a search, a sort
//! by a metric, and the whole answer without paging.
//! `-- --scale N` sets that fleet's size (0 skips it). The last line is one
//! JSON object with the figures.

use pulse_metrics::config::Config;
use pulse_metrics::model::now_ms;
use pulse_metrics::server::{self, App};
use pulse_metrics::{MetricsConfig, Point, Store};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const CHART_REQUESTS: usize = 50;
const WRITE_CLIENTS: usize = 4;
const WRITE_BATCH: usize = 1000;
const WRITE_SECONDS: u64 = 10;

fn resources() -> Vec<(&'static str, String)> {
    let mut r = Vec::new();
    for n in 1..=5 {
        r.push(("node", format!("pve1:node{n}")));
    }
    for v in 0..50 {
        r.push(("vm", format!("pve1:node{}:{}", v % 5 + 1, 100 + v)));
    }
    for c in 0..20 {
        r.push(("container", format!("pve1:node{}:{}", c % 5 + 1, 200 + c)));
    }
    for s in 0..10 {
        r.push(("storage", format!("pve1:node{}:store{s}", s % 5 + 1)));
    }
    r
}

fn value(i: usize, ts: i64) -> f64 {
    ((ts / 1000 + i as i64 * 37) % 100) as f64 + 0.25
}

/// Writes the history through the store, rolling up as time "passes" like a
/// running service would, then one `maintain` as of now.
fn load(store: &Store, now: i64) -> usize {
    let res = resources();
    let series: Vec<(&str, &str, &str)> = res
        .iter()
        .flat_map(|(t, id)| {
            ["cpu", "memory", "disk"]
                .into_iter()
                .map(move |m| (*t, id.as_str(), m))
        })
        .collect();
    let start = (now - 24 * 3_600_000) / 60_000 * 60_000;
    let fine_from = now - 2 * 3_600_000;
    let mut stamps: Vec<i64> = (0..)
        .map(|i| start + i * 60_000)
        .take_while(|t| *t < fine_from)
        .collect();
    stamps.extend(
        (0..)
            .map(|i| fine_from + i * 5000)
            .take_while(|t| *t <= now),
    );
    let mut batch: Vec<Point> = Vec::with_capacity(20_000);
    let mut written = 0;
    let mut next_rollup = start + 3_600_000;
    for &ts in &stamps {
        for (i, (t, id, m)) in series.iter().enumerate() {
            batch.push(Point {
                resource_type: t.to_string(),
                resource_id: id.to_string(),
                metric: m.to_string(),
                value: value(i, ts),
                timestamp: ts,
            });
        }
        if batch.len() >= 20_000 {
            written += push(store, &mut batch);
        }
        if ts >= next_rollup {
            written += push(store, &mut batch);
            store.flush().expect("flush");
            store.rollup(ts).expect("rollup");
            next_rollup += 3_600_000;
        }
    }
    written += push(store, &mut batch);
    store.flush().expect("flush");
    store.maintain(now_ms()).expect("maintain");
    written
}

fn push(store: &Store, batch: &mut Vec<Point>) -> usize {
    if batch.is_empty() {
        return 0;
    }
    loop {
        match store.write_batch(batch) {
            Ok(n) => {
                batch.clear();
                return n;
            }
            Err(e) if e.is_overloaded() => store.flush().expect("flush"),
            Err(e) => panic!("load failed: {e}"),
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn latency(client: &reqwest::Client, url: &str, n: usize) -> (f64, f64, usize, u64) {
    let mut times = Vec::with_capacity(n);
    let mut bytes = 0;
    let mut points = 0;
    for _ in 0..n {
        let started = Instant::now();
        let r = client.get(url).send().await.expect("GET");
        assert_eq!(r.status(), 200, "{url}");
        let body = r.bytes().await.expect("body");
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        bytes = body.len();
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        points = v["stats"]["pointCount"].as_u64().unwrap_or(0);
    }
    times.sort_by(f64::total_cmp);
    (
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        bytes,
        points,
    )
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        metrics: MetricsConfig {
            database_path: dir.path().join("metrics.db"),
            ..MetricsConfig::default()
        },
        ..Config::default()
    };
    config.collectors.host.enabled = false;
    let started = Instant::now();
    let (store, loaded) = open_loaded(&config, |store| load(store, now_ms())).await;
    let stats = store.stats().unwrap();
    println!(
        "loaded {loaded} points into {} series in {:.1} s: raw {} minute {} hourly {} daily {}, file {:.1} MiB",
        stats.series_count,
        started.elapsed().as_secs_f64(),
        stats.raw_count,
        stats.minute_count,
        stats.hourly_count,
        stats.daily_count,
        stats.db_size as f64 / 1048576.0
    );

    // Where the time of a 24h chart goes: the store's query alone, then the
    // query with each series' JSON made on the reader threads plus the
    // structure around it, as the endpoint does.
    {
        let store = store.clone();
        let (q, enc) = tokio::task::spawn_blocking(move || {
            let (mut q, mut enc) = (Vec::new(), Vec::new());
            let all = pulse_metrics::SeriesFilter::default();
            for _ in 0..10 {
                let range = pulse_metrics::TimeRange::last(Duration::from_secs(86_400), now_ms());
                let t = Instant::now();
                let many = store.query_many(&all, range, None).unwrap();
                q.push(t.elapsed().as_secs_f64() * 1000.0);
                std::hint::black_box(many);
                let t = Instant::now();
                let many = store
                    .query_many_map(&all, range, None, &|_, p| {
                        server::charts::series(&p, range.start, range.end, None)
                    })
                    .unwrap();
                let body = server::charts::encode(
                    &many.series,
                    &pulse_metrics::ResourceMap::new(),
                    now_ms(),
                    &server::charts::ChartStats {
                        oldest_data_timestamp: 0,
                        tier: many.tier,
                        range: Some("24h".into()),
                        range_seconds: 86_400,
                        late_count: 0,
                    },
                    &server::listing::PageJson {
                        total: 0,
                        offset: 0,
                        limit: None,
                        items: Vec::new(),
                        groups: &[],
                    },
                );
                std::hint::black_box(body);
                enc.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            q.sort_by(f64::total_cmp);
            enc.sort_by(f64::total_cmp);
            (percentile(&q, 0.5), percentile(&enc, 0.5))
        })
        .await
        .unwrap();
        println!(
            "24h in-process: store.query_many p50 {q:.1} ms; query and JSON together p50 {enc:.1} ms"
        );
    }

    let settings = pulse_metrics::config::SettingsFile::in_memory(config.clone());
    let app = App::new(store.clone(), config, settings);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::run(listener, app, async move {
        let _ = stop_rx.await;
    }));
    let client = reqwest::Client::builder().build().unwrap();

    let mut figures = serde_json::Map::new();
    // Warm-up (page cache, reader pool).
    latency(&client, &format!("{base}/api/charts?range=24h"), 3).await;
    for (label, query) in [
        ("charts24h", "range=24h"),
        ("charts1h", "range=1h"),
        ("charts7d", "range=7d"),
        ("charts24h_max200", "range=24h&maxPoints=200"),
    ] {
        let (p50, p99, bytes, points) = latency(
            &client,
            &format!("{base}/api/charts?{query}"),
            CHART_REQUESTS,
        )
        .await;
        println!(
            "/api/charts?{query}: p50 {p50:.1} ms, p99 {p99:.1} ms ({points} points, {:.1} MiB) over {CHART_REQUESTS} requests",
            bytes as f64 / 1048576.0
        );
        figures.insert(format!("{label}_p50_ms"), serde_json::json!(round(p50)));
        figures.insert(format!("{label}_p99_ms"), serde_json::json!(round(p99)));
        figures.insert(format!("{label}_points"), serde_json::json!(points));
    }

    // Sustained writes: pre-encoded bodies so the figure is the server's.
    let res = resources();
    let now = now_ms();
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..64)
            .map(|b| {
                let points: Vec<serde_json::Value> = (0..WRITE_BATCH)
                    .map(|i| {
                        let (t, id) = &res[i % res.len()];
                        let metric = ["cpu", "memory", "disk"][(i / res.len()) % 3];
                        serde_json::json!({
                            "resourceType": t, "resourceId": id, "metric": metric,
                            "value": (i % 100) as f64,
                            "timestamp": now - 3_600_000 + (b * 8 + i as i64 / 255) * 1000,
                        })
                    })
                    .collect();
                serde_json::to_vec(&serde_json::json!({ "points": points })).unwrap()
            })
            .collect(),
    );
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(WRITE_SECONDS);
    let write_started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..WRITE_CLIENTS {
        let (client, bodies, accepted, refused) = (
            client.clone(),
            bodies.clone(),
            accepted.clone(),
            refused.clone(),
        );
        let url = format!("{base}/api/metrics-store/write");
        tasks.push(tokio::spawn(async move {
            let mut i = c;
            while Instant::now() < deadline {
                let body = bodies[i % bodies.len()].clone();
                i += WRITE_CLIENTS;
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .expect("POST");
                match r.status().as_u16() {
                    200 => {
                        accepted.fetch_add(WRITE_BATCH as u64, Ordering::Relaxed);
                    }
                    503 => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    s => panic!("write answered {s}"),
                }
                let _ = r.bytes().await;
            }
        }));
    }
    // A dashboard polling while the writers push: its latency under load.
    let reader = {
        let client = client.clone();
        let url = format!("{base}/api/charts?range=1h&maxPoints=120");
        tokio::spawn(async move {
            let mut times = Vec::new();
            while Instant::now() < deadline {
                let started = Instant::now();
                let r = client.get(&url).send().await.expect("GET");
                assert_eq!(r.status(), 200);
                let _ = r.bytes().await;
                times.push(started.elapsed().as_secs_f64() * 1000.0);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            times.sort_by(f64::total_cmp);
            times
        })
    };
    for t in tasks {
        t.await.unwrap();
    }
    let read_times = reader.await.unwrap();
    let s = store.clone();
    tokio::task::spawn_blocking(move || s.flush().expect("flush"))
        .await
        .unwrap();
    let secs = write_started.elapsed().as_secs_f64();
    let n = accepted.load(Ordering::Relaxed);
    let rate = n as f64 / secs;
    println!(
        "/api/metrics-store/write: {n} points in {secs:.1} s = {rate:.0} points/s ({WRITE_CLIENTS} clients, batches of {WRITE_BATCH}, {} refused with 503), flushed",
        refused.load(Ordering::Relaxed)
    );
    let (rp50, rp99) = (percentile(&read_times, 0.5), percentile(&read_times, 0.99));
    println!(
        "/api/charts?range=1h&maxPoints=120 during the writes: p50 {rp50:.1} ms, p99 {rp99:.1} ms over {} requests",
        read_times.len()
    );
    figures.insert(
        "read_during_writes_p50_ms".into(),
        serde_json::json!(round(rp50)),
    );
    figures.insert(
        "read_during_writes_p99_ms".into(),
        serde_json::json!(round(rp99)),
    );
    figures.insert("write_points_per_s".into(), serde_json::json!(rate.round()));
    figures.insert(
        "write_refused_503".into(),
        serde_json::json!(refused.load(Ordering::Relaxed)),
    );

    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
    let scale = scale_arg();
    if scale > 0 {
        at_scale(&client, scale, &mut figures).await;
    }
    println!("{}", serde_json::Value::Object(figures));
}

/// `--scale N` after `--`: the resources of the fleet measured paged.
fn scale_arg() -> usize {
    let mut args = std::env::args().skip_while(|a| a != "--scale");
    args.next();
    args.next()
        .map(|n| n.parse().expect("--scale N: a number of resources"))
        .unwrap_or(SCALE_RESOURCES)
}

const SCALE_RESOURCES: usize = 10_000;
const SCALE_METRICS: [&str; 4] = ["cpu", "memory", "disk", "netin"];
const PAGE_REQUESTS: usize = 30;

/// A fleet of `n` resources in a cluster's proportions (1 node in 20, 1
/// storage in 20, 1 container in 5, VMs the rest), named as a collector
/// names them.
fn fleet(n: usize) -> Vec<pulse_metrics::Resource> {
    (0..n)
        .map(|i| {
            let (t, id, name) = match i % 20 {
                0 => ("node", format!("pve1:node{i}"), format!("node{i}")),
                1 => ("storage", format!("pve1:store{i}"), format!("store-{i}")),
                2..=5 => ("container", format!("pve1:{}", 100 + i), format!("ct-{i}")),
                _ => ("vm", format!("pve1:{}", 100 + i), format!("vm-{i:05}")),
            };
            let meta = pulse_metrics::ResourceMeta {
                name: Some(name),
                node: Some(format!("node{}", i % 50)),
                instance: Some("pve1".into()),
                ..Default::default()
            };
            pulse_metrics::Resource::new(t, id, meta)
        })
        .collect()
}

/// 22 h of minute buckets imported, then the last 2 h as raw points every
/// 5 s, rolled up as the service would; names for every resource.
fn load_scale(store: &Store, resources: &[pulse_metrics::Resource], now: i64) -> usize {
    use pulse_metrics::{HistoryPoint, SeriesKey, Tier};
    let keys: Vec<SeriesKey> = resources
        .iter()
        .flat_map(|r| {
            SCALE_METRICS
                .iter()
                .map(|m| SeriesKey::new(&r.resource_type, &r.resource_id, *m))
        })
        .collect();
    let raw_from = (now - 2 * 3_600_000) / 60_000 * 60_000;
    let mut written = 0;
    let mut buckets = Vec::with_capacity(200_000);
    let mut minute = raw_from - 22 * 3_600_000;
    while minute < raw_from {
        for (i, k) in keys.iter().enumerate() {
            let v = value(i, minute);
            buckets.push((
                k.clone(),
                HistoryPoint {
                    timestamp: minute,
                    value: v,
                    min: v - 1.0,
                    max: v + 1.0,
                    count: 12,
                },
            ));
        }
        if buckets.len() >= 160_000 {
            written += store
                .import_buckets(Tier::Minute, &buckets)
                .expect("import");
            buckets.clear();
        }
        minute += 60_000;
    }
    written += store
        .import_buckets(Tier::Minute, &buckets)
        .expect("import");
    let mut batch = Vec::with_capacity(keys.len());
    let mut ts = raw_from;
    let mut next_rollup = raw_from + 300_000;
    while ts <= now {
        for (i, k) in keys.iter().enumerate() {
            batch.push(Point::new(k, value(i, ts), ts));
        }
        written += push(store, &mut batch);
        if ts >= next_rollup {
            store.flush().expect("flush");
            store.rollup(ts).expect("rollup");
            next_rollup += 300_000;
        }
        ts += 5_000;
    }
    store.flush().expect("flush");
    store.maintain(now_ms()).expect("maintain");
    store.write_resources(resources).expect("names");
    written
}

/// The 24 h dashboard over `n` resources x 4 metrics, by page.
/// Opens the store of `config` and fills it with `load` (on a blocking
/// thread); returns it and how many points were loaded.
async fn open_loaded(
    config: &Config,
    load: impl FnOnce(&Store) -> usize + Send + 'static,
) -> (Store, usize) {
    let metrics = config.metrics.clone();
    tokio::task::spawn_blocking(move || {
        let store = Store::open(metrics).expect("open");
        let n = load(&store);
        (store, n)
    })
    .await
    .unwrap()
}

async fn at_scale(
    client: &reqwest::Client,
    n: usize,
    figures: &mut serde_json::Map<String, serde_json::Value>,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        metrics: MetricsConfig {
            database_path: dir.path().join("metrics.db"),
            ..MetricsConfig::default()
        },
        ..Config::default()
    };
    config.collectors.host.enabled = false;
    // The whole answer without paging is measured too: over the default
    // cap on one answer (server.max_answer_points), which refuses it.
    config.server.max_answer_points = 100_000_000;
    let started = Instant::now();
    let (store, loaded) =
        open_loaded(&config, move |store| load_scale(store, &fleet(n), now_ms())).await;
    let stats = store.stats().unwrap();
    println!(
        "at scale: {n} resources, {} series: loaded {loaded} points and buckets in {:.0} s (raw {}, minute {})",
        stats.series_count,
        started.elapsed().as_secs_f64(),
        stats.raw_count,
        stats.minute_count,
    );
    let settings = pulse_metrics::config::SettingsFile::in_memory(config.clone());
    let app = App::new(store.clone(), config, settings);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::run(listener, app, async move {
        let _ = stop_rx.await;
    }));
    // Warm-up: the resource list is made once, then kept.
    latency(
        client,
        &format!("{base}/api/charts?range=24h&maxPoints=120&limit=50"),
        2,
    )
    .await;
    for (label, query, runs) in [
        ("page", "limit=50", PAGE_REQUESTS),
        ("page_deep", "limit=50&offset=5000", PAGE_REQUESTS),
        ("page_search", "limit=50&search=vm-01", PAGE_REQUESTS),
        ("page_sorted_cpu", "limit=50&type=vm&sort=vm:cpu:desc", 10),
        ("unpaged", "", 5),
    ] {
        let url = format!("{base}/api/charts?range=24h&maxPoints=120&{query}");
        let (p50, p99, bytes, points) = latency(client, &url, runs).await;
        println!(
            "at scale /api/charts?range=24h&maxPoints=120&{query}: p50 {p50:.1} ms, p99 {p99:.1} ms ({points} points, {:.1} KiB) over {runs} requests",
            bytes as f64 / 1024.0
        );
        figures.insert(
            format!("scale_{label}_p50_ms"),
            serde_json::json!(round(p50)),
        );
        figures.insert(
            format!("scale_{label}_p99_ms"),
            serde_json::json!(round(p99)),
        );
        figures.insert(format!("scale_{label}_bytes"), serde_json::json!(bytes));
    }
    figures.insert("scale_resources".into(), serde_json::json!(n));
    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
}

fn round(ms: f64) -> f64 {
    (ms * 100.0).round() / 100.0
}

//! The typical Pulse install, simulated with an accelerated clock, against
//! pulse-metrics and against the seed document's schema and write pattern.
//!
//! 85 resources (5 nodes, 50 VMs, 20 containers, 10 storage) x 3 metrics =
//! 255 series, one poll every 5 s with random-walk values, default config,
//! rollup every 5 simulated minutes and pruning every simulated hour.
//!
//! Run: `cargo bench --bench workload` (`WORKLOAD_QUICK=1` for a short run).
//! Prints each figure, its ratio to the seed schema where one exists, and
//! last one JSON line with everything.

use pulse_metrics::{MetricsConfig, Point, SeriesFilter, SeriesKey, Store, TimeRange};
use rusqlite::{Connection, params};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

const POLL: i64 = 5;
const MINUTE: i64 = 60;
const HOUR: i64 = 3600;
const DAY: i64 = 86_400;
/// 2026-11-01T00:00:00Z: the simulated "now" when the steady-state day starts.
const STEADY_START: i64 = 1_793_491_200;
const RANGES: [(&str, i64); 5] = [
    ("1h", HOUR),
    ("24h", DAY),
    ("7d", 7 * DAY),
    ("30d", 30 * DAY),
    ("90d", 90 * DAY),
];

/// xorshift64* plus Box-Muller: deterministic and dependency-free.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit().max(1e-300), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// The 255 series and their random walks. Steps are per metric: CPU moves
/// a lot, memory a little, disk usage barely; all full-precision doubles
/// (as Proxmox's fractions times 100 are).
struct Fleet {
    keys: Vec<SeriesKey>,
    values: Vec<f64>,
    steps: Vec<f64>,
    rng: Rng,
}

impl Fleet {
    fn new() -> Fleet {
        let mut keys = Vec::new();
        for (kind, n) in [("node", 5), ("vm", 50), ("container", 20), ("storage", 10)] {
            for i in 0..n {
                let id = match kind {
                    "node" => format!("pve1:node{}", i + 1),
                    "storage" => format!("pve1:node{}:local-{}", i % 5 + 1, i),
                    _ => format!("pve1:node{}:{}", i % 5 + 1, 100 + i),
                };
                for metric in ["cpu", "memory", "disk"] {
                    keys.push(SeriesKey::new(kind, id.clone(), metric));
                }
            }
        }
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let values = keys.iter().map(|_| 10.0 + 70.0 * rng.unit()).collect();
        let steps = keys
            .iter()
            .map(|k| match k.metric.as_str() {
                "cpu" => 2.0,
                "memory" => 0.2,
                _ => 0.01,
            })
            .collect();
        Fleet {
            keys,
            values,
            steps,
            rng,
        }
    }

    fn poll(&mut self, ts: i64) -> Vec<Point> {
        (0..self.keys.len())
            .map(|i| {
                let v = (self.values[i] + self.steps[i] * self.rng.normal()).clamp(0.0, 100.0);
                self.values[i] = v;
                Point::new(&self.keys[i], v, ts * 1000)
            })
            .collect()
    }
}

fn proc_io() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .map(|v| v.trim().parse::<u64>().unwrap_or(0))
            })
            .unwrap_or(0)
    };
    (field("wchar:"), field("write_bytes:"))
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmHWM:")
                .map(|v| v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

fn file_size(path: &Path) -> u64 {
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    size(path) + size(Path::new(&wal))
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[derive(Default)]
struct Figures(BTreeMap<String, f64>);

impl Figures {
    fn set(&mut self, name: &str, value: f64, unit: &str, baseline: Option<f64>) {
        match baseline {
            Some(b) if b > 0.0 => {
                println!(
                    "{name:<40} {value:>14.3} {unit:<8} seed {b:>14.3}  ratio {:.4}",
                    value / b
                );
                self.0.insert(format!("seed_{name}"), b);
            }
            _ => println!("{name:<40} {value:>14.3} {unit}"),
        }
        self.0.insert(name.to_string(), value);
    }
}

struct Ours {
    fleet_day_wchar: f64,
    fleet_day_write_bytes: f64,
    peak_file: u64,
    end_file: u64,
    rollup_ms: Vec<f64>,
    prune_ms: Vec<f64>,
    rows: [u64; 4],
}

fn config(path: &Path) -> MetricsConfig {
    MetricsConfig {
        database_path: path.to_path_buf(),
        ..MetricsConfig::default()
    }
}

/// Fills 90 days of history, then runs one steady-state day at 5 s polls.
fn simulate(path: &Path, quick: bool) -> (Store, Fleet, Ours) {
    let store = Store::open(config(path)).unwrap();
    let mut fleet = Fleet::new();
    // History before the steady-state day. Tier row counts do not depend on
    // raw density, so older history is simulated sparser: one point per
    // minute for the 8 days the hourly tier keeps (hourly buckets of 60),
    // one per 10 minutes before that (only daily buckets remain of it).
    let history_days = if quick { 9 } else { 90 };
    let mut now = STEADY_START - history_days * DAY;
    let started = Instant::now();
    while now < STEADY_START {
        let step = if now < STEADY_START - 8 * DAY {
            10 * MINUTE
        } else {
            MINUTE
        };
        store.write_batch(&fleet.poll(now)).unwrap();
        now += step;
        if now % HOUR == 0 {
            store.rollup(now * 1000).unwrap();
            store.prune(now * 1000).unwrap();
        }
    }
    store.flush().unwrap();
    println!(
        "(history of {history_days} days simulated in {:.1} s)",
        started.elapsed().as_secs_f64()
    );

    // The steady-state day: one commit per poll, as the service does.
    let polls = if quick { 2 * HOUR / POLL } else { DAY / POLL };
    let (w0, b0) = proc_io();
    let mut rollup_ms = Vec::new();
    let mut prune_ms = Vec::new();
    let mut peak_file = 0;
    let started = Instant::now();
    // Bytes written by flushes, rollups and prunes (each waits for the writer).
    let mut by_job = [0u64; 3];
    let mut io = |job: usize, f: &mut dyn FnMut()| {
        let before = proc_io().0;
        f();
        by_job[job] += proc_io().0 - before;
    };
    for _ in 0..polls {
        let pts = fleet.poll(now);
        io(0, &mut || {
            store.write_batch(&pts).unwrap();
            store.flush().unwrap();
        });
        peak_file = peak_file.max(file_size(path));
        now += POLL;
        if now % (5 * MINUTE) == 0 {
            let t = Instant::now();
            io(1, &mut || {
                store.rollup(now * 1000).unwrap();
            });
            rollup_ms.push(ms(t.elapsed()));
            peak_file = peak_file.max(file_size(path));
        }
        if now % HOUR == 0 {
            let t = Instant::now();
            io(2, &mut || {
                store.prune(now * 1000).unwrap();
            });
            prune_ms.push(ms(t.elapsed()));
            peak_file = peak_file.max(file_size(path));
        }
    }
    let (w1, b1) = proc_io();
    println!(
        "(steady state: {polls} polls in {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    let scale = (DAY / POLL) as f64 / polls as f64;
    let stats = store.stats().unwrap();
    describe_file(path, &stats);
    println!(
        "(bytes per day by job: flushes {:.0}, rollups {:.0}, prunes {:.0})",
        by_job[0] as f64 * scale,
        by_job[1] as f64 * scale,
        by_job[2] as f64 * scale
    );
    let ours = Ours {
        fleet_day_wchar: (w1 - w0) as f64 * scale,
        fleet_day_write_bytes: (b1 - b0) as f64 * scale,
        peak_file,
        end_file: file_size(path),
        rollup_ms,
        prune_ms,
        rows: [
            stats.raw_count,
            stats.minute_count,
            stats.hourly_count,
            stats.daily_count,
        ],
    };
    (store, fleet, ours)
}

/// Where the bytes of the file go: rows and payload per table, free pages.
fn describe_file(path: &Path, stats: &pulse_metrics::Stats) {
    let conn =
        Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut parts = Vec::new();
    for table in ["raw_log", "minute", "hourly", "daily", "series"] {
        let (rows, bytes): (i64, i64) = conn
            .query_row(
                &format!(
                    "SELECT count(*), coalesce(sum(length(CAST(data AS BLOB))), 0) FROM {table}"
                )
                .replace(
                    "CAST(data AS BLOB)",
                    if table == "series" {
                        "resource_id"
                    } else {
                        "data"
                    },
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        parts.push(format!(
            "{table}: {rows} rows, {:.2} MB",
            bytes as f64 / 1e6
        ));
    }
    println!(
        "(file {:.2} MB + WAL {:.2} MB, {} free pages; {})",
        stats.db_size as f64 / 1e6,
        stats.wal_size as f64 / 1e6,
        stats.free_pages,
        parts.join("; ")
    );
}

struct Latencies {
    one: BTreeMap<&'static str, (f64, f64)>,
    all: BTreeMap<&'static str, f64>,
    /// All series over 24 h with every point: what `/api/charts?range=24h`
    /// asks for without `maxPoints` (and the query that needs most memory).
    all_24h_every_point: f64,
}

fn measure_queries(store: &Store, fleet: &Fleet, now: i64) -> Latencies {
    let mut rng = Rng(7);
    let mut one = BTreeMap::new();
    let mut all = BTreeMap::new();
    for (name, secs) in RANGES {
        let range = TimeRange::last(Duration::from_secs(secs as u64), now * 1000);
        let mut samples = Vec::new();
        for _ in 0..300 {
            let key = &fleet.keys[(rng.next() % fleet.keys.len() as u64) as usize];
            let t = Instant::now();
            let h = store.query(key, range, None).unwrap();
            samples.push(ms(t.elapsed()));
            assert!(!h.points.is_empty(), "{name} answered nothing");
        }
        let p50 = percentile(&mut samples, 0.5);
        let p99 = percentile(&mut samples, 0.99);
        one.insert(name, (p50, p99));
        let mut samples = Vec::new();
        for _ in 0..15 {
            let t = Instant::now();
            let many = store
                .query_many(&SeriesFilter::default(), range, Some(500))
                .unwrap();
            samples.push(ms(t.elapsed()));
            assert_eq!(many.series.len(), 255);
        }
        all.insert(name, percentile(&mut samples, 0.5));
    }
    let range = TimeRange::last(Duration::from_secs(DAY as u64), now * 1000);
    let mut samples = Vec::new();
    for _ in 0..15 {
        let t = Instant::now();
        let many = store
            .query_many(&SeriesFilter::default(), range, None)
            .unwrap();
        samples.push(ms(t.elapsed()));
        assert_eq!(many.series.len(), 255);
    }
    Latencies {
        one,
        all,
        all_24h_every_point: percentile(&mut samples, 0.5),
    }
}

fn ingest_throughput(dir: &Path) -> f64 {
    let store = Store::open(config(&dir.join("ingest.db"))).unwrap();
    let mut fleet = Fleet::new();
    let batches = 2_000; // 255 series x 4 polls x 2,000 = 2.04 M points
    let start_ts = STEADY_START - 3 * HOUR;
    let t = Instant::now();
    let mut total = 0usize;
    for b in 0..batches {
        let mut batch = Vec::with_capacity(1020);
        for p in 0..4 {
            batch.extend(fleet.poll(start_ts + (b * 4 + p) as i64));
        }
        loop {
            match store.write_batch(&batch) {
                Ok(n) => {
                    total += n;
                    break;
                }
                Err(e) if e.is_overloaded() => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => panic!("{e}"),
            }
        }
    }
    store.flush().unwrap();
    let rate = total as f64 / t.elapsed().as_secs_f64();
    store.close().unwrap();
    rate
}

// ---------------------------------------------------------------- baseline

const SEED_SCHEMA: &str = "
CREATE TABLE metrics (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    resource_type TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    metric_type TEXT NOT NULL,
    value REAL NOT NULL,
    timestamp INTEGER NOT NULL,
    tier TEXT DEFAULT 'raw'
);
CREATE INDEX idx_metrics_lookup ON metrics(resource_type, resource_id, metric_type, tier, timestamp);
CREATE INDEX idx_metrics_timestamp ON metrics(timestamp);
CREATE INDEX idx_metrics_tier_time ON metrics(tier, timestamp);
";

struct Seed {
    conn: Connection,
}

impl Seed {
    fn open(path: &Path) -> Seed {
        let conn = Connection::open(path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
        conn.execute_batch(SEED_SCHEMA).unwrap();
        Seed { conn }
    }

    fn insert(&mut self, points: &[Point], tier: &str) {
        let tx = self.conn.transaction().unwrap();
        {
            let mut stmt = tx
                .prepare_cached("INSERT INTO metrics (resource_type, resource_id, metric_type, value, timestamp, tier) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
                .unwrap();
            for p in points {
                stmt.execute(params![
                    p.resource_type,
                    p.resource_id,
                    p.metric,
                    p.value,
                    p.timestamp / 1000,
                    tier
                ])
                .unwrap();
            }
        }
        tx.commit().unwrap();
    }

    /// The seed's rollup: AVG of the finer tier per closed bucket.
    fn rollup(&self, from: &str, to: &str, width: i64, start: i64, end: i64) {
        self.conn
            .execute(
                "INSERT INTO metrics (resource_type, resource_id, metric_type, value, timestamp, tier)
                 SELECT resource_type, resource_id, metric_type, AVG(value), (timestamp / ?1) * ?1, ?2
                 FROM metrics WHERE tier = ?3 AND timestamp >= ?4 AND timestamp < ?5
                 GROUP BY resource_type, resource_id, metric_type, timestamp / ?1",
                params![width, to, from, start, end],
            )
            .unwrap();
    }

    fn prune(&self, now: i64) {
        for (tier, keep) in [
            ("raw", 2 * HOUR),
            ("minute", DAY),
            ("hourly", 7 * DAY),
            ("daily", 90 * DAY),
        ] {
            self.conn
                .execute(
                    "DELETE FROM metrics WHERE tier = ?1 AND timestamp < ?2",
                    params![tier, now - keep],
                )
                .unwrap();
        }
    }

    fn query(&self, key: &SeriesKey, tier: &str, start: i64, end: i64) -> usize {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT timestamp, value FROM metrics WHERE resource_type = ?1 AND resource_id = ?2 AND metric_type = ?3
                 AND tier = ?4 AND timestamp >= ?5 AND timestamp <= ?6 ORDER BY timestamp",
            )
            .unwrap();
        let rows = stmt
            .query_map(
                params![
                    key.resource_type,
                    key.resource_id,
                    key.metric,
                    tier,
                    start,
                    end
                ],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, f64>(1)?)),
            )
            .unwrap();
        rows.count()
    }
}

struct SeedFigures {
    day_wchar: f64,
    day_write_bytes: f64,
    file: u64,
    rollup_ms: f64,
    prune_ms: f64,
    one: BTreeMap<&'static str, (f64, f64)>,
    all: BTreeMap<&'static str, f64>,
    ingest_rate: f64,
}

fn seed_tier(secs: i64) -> &'static str {
    if secs <= 2 * HOUR {
        "raw"
    } else if secs <= DAY {
        "minute"
    } else if secs <= 7 * DAY {
        "hourly"
    } else {
        "daily"
    }
}

fn baseline(dir: &Path, quick: bool) -> SeedFigures {
    let path = dir.join("seed.db");
    let mut seed = Seed::open(&path);
    let mut fleet = Fleet::new();
    // Steady-state content at full retention, inserted directly.
    let now0 = STEADY_START;
    let fill = |seed: &mut Seed, fleet: &mut Fleet, tier: &str, from: i64, to: i64, step: i64| {
        let mut ts = from;
        let mut batch = Vec::new();
        while ts < to {
            batch.extend(fleet.poll(ts));
            if batch.len() >= 20_000 {
                seed.insert(&batch, tier);
                batch.clear();
            }
            ts += step;
        }
        seed.insert(&batch, tier);
    };
    fill(&mut seed, &mut fleet, "daily", now0 - 90 * DAY, now0, DAY);
    fill(&mut seed, &mut fleet, "hourly", now0 - 7 * DAY, now0, HOUR);
    fill(&mut seed, &mut fleet, "minute", now0 - DAY, now0, MINUTE);
    fill(&mut seed, &mut fleet, "raw", now0 - 2 * HOUR, now0, POLL);
    seed.conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();

    // Two simulated hours of steady state, extrapolated to a day.
    let polls = if quick { HOUR / POLL } else { 2 * HOUR / POLL };
    let (w0, b0) = proc_io();
    let mut now = now0;
    let mut rollups = Vec::new();
    let mut prunes = Vec::new();
    for _ in 0..polls {
        let pts = fleet.poll(now);
        seed.insert(&pts, "raw");
        now += POLL;
        if now % (5 * MINUTE) == 0 {
            let t = Instant::now();
            seed.rollup("raw", "minute", MINUTE, now - 5 * MINUTE, now);
            if now % HOUR == 0 {
                seed.rollup("minute", "hourly", HOUR, now - HOUR, now);
            }
            rollups.push(ms(t.elapsed()));
        }
        if now % HOUR == 0 {
            let t = Instant::now();
            seed.prune(now);
            prunes.push(ms(t.elapsed()));
        }
    }
    let (w1, b1) = proc_io();
    let scale = (DAY / POLL) as f64 / polls as f64;
    let file = file_size(&path);

    let mut rng = Rng(7);
    let mut one = BTreeMap::new();
    let mut all = BTreeMap::new();
    for (name, secs) in RANGES {
        let tier = seed_tier(secs);
        let mut samples = Vec::new();
        for _ in 0..100 {
            let key = &fleet.keys[(rng.next() % fleet.keys.len() as u64) as usize];
            let t = Instant::now();
            seed.query(key, tier, now - secs, now);
            samples.push(ms(t.elapsed()));
        }
        one.insert(
            name,
            (
                percentile(&mut samples, 0.5),
                percentile(&mut samples, 0.99),
            ),
        );
        let t = Instant::now();
        for key in &fleet.keys {
            seed.query(key, tier, now - secs, now);
        }
        all.insert(name, ms(t.elapsed()));
    }

    // Batched inserts, 1,000 rows per transaction, into a fresh seed file.
    let mut fresh = Seed::open(&dir.join("seed-ingest.db"));
    let t = Instant::now();
    let mut total = 0;
    for b in 0..500 {
        let mut batch = Vec::with_capacity(1020);
        for p in 0..4 {
            batch.extend(fleet.poll(now0 + b * 4 + p));
        }
        fresh.insert(&batch, "raw");
        total += batch.len();
    }
    let ingest_rate = total as f64 / t.elapsed().as_secs_f64();

    SeedFigures {
        day_wchar: (w1 - w0) as f64 * scale,
        day_write_bytes: (b1 - b0) as f64 * scale,
        file,
        rollup_ms: percentile(&mut rollups, 0.5),
        prune_ms: percentile(&mut prunes, 0.5),
        one,
        all,
        ingest_rate,
    }
}

fn main() {
    // `cargo bench` passes --bench; nothing else is accepted.
    let quick = std::env::var("WORKLOAD_QUICK").is_ok_and(|v| v != "0");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.db");
    println!(
        "pulse-metrics workload: 255 series, 5 s polls{}",
        if quick { " (quick)" } else { "" }
    );

    let (store, fleet, ours) = simulate(&path, quick);
    let now = STEADY_START + if quick { 2 * HOUR } else { DAY };
    let lat = measure_queries(&store, &fleet, now);
    let rss = peak_rss_kib();
    store.close().unwrap();
    let t = Instant::now();
    let reopened = Store::open(config(&path)).unwrap();
    let first = reopened
        .query(
            &fleet.keys[0],
            TimeRange::last(Duration::from_secs(3600), now * 1000),
            None,
        )
        .unwrap();
    let open_ms = ms(t.elapsed());
    assert!(!first.points.is_empty());
    reopened.close().unwrap();
    let ingest = ingest_throughput(dir.path());

    println!("(baseline: the seed document's schema and write pattern)");
    let seed = baseline(dir.path(), quick);

    println!();
    let mut f = Figures::default();
    let mut rollups = ours.rollup_ms.clone();
    let mut prunes = ours.prune_ms.clone();
    f.set(
        "bytes_written_per_day_wchar",
        ours.fleet_day_wchar,
        "bytes",
        Some(seed.day_wchar),
    );
    f.set(
        "bytes_written_per_day_write_bytes",
        ours.fleet_day_write_bytes,
        "bytes",
        Some(seed.day_write_bytes),
    );
    f.set(
        "file_size_peak",
        ours.peak_file as f64,
        "bytes",
        Some(seed.file as f64),
    );
    f.set(
        "file_size_end",
        ours.end_file as f64,
        "bytes",
        Some(seed.file as f64),
    );
    f.set(
        "ingest_points_per_sec",
        ingest,
        "pts/s",
        Some(seed.ingest_rate),
    );
    for (name, _) in RANGES {
        let (p50, p99) = lat.one[name];
        let (s50, s99) = seed.one[name];
        f.set(&format!("query_one_{name}_p50_ms"), p50, "ms", Some(s50));
        f.set(&format!("query_one_{name}_p99_ms"), p99, "ms", Some(s99));
        f.set(
            &format!("query_all_255_{name}_ms"),
            lat.all[name],
            "ms",
            Some(seed.all[name]),
        );
    }
    f.set(
        "query_all_255_24h_every_point_ms",
        lat.all_24h_every_point,
        "ms",
        None,
    );
    f.set(
        "rollup_pass_p50_ms",
        percentile(&mut rollups, 0.5),
        "ms",
        Some(seed.rollup_ms),
    );
    f.set(
        "rollup_pass_max_ms",
        percentile(&mut rollups, 1.0),
        "ms",
        None,
    );
    f.set(
        "prune_pass_p50_ms",
        percentile(&mut prunes, 0.5),
        "ms",
        Some(seed.prune_ms),
    );
    f.set(
        "prune_pass_max_ms",
        percentile(&mut prunes, 1.0),
        "ms",
        None,
    );
    f.set("open_full_file_ms", open_ms, "ms", None);
    f.set("peak_rss_bytes", (rss * 1024) as f64, "bytes", None);
    for (i, tier) in ["raw", "minute", "hourly", "daily"].iter().enumerate() {
        f.set(&format!("rows_{tier}"), ours.rows[i] as f64, "rows", None);
    }
    println!("{}", serde_json::to_string(&f.0).unwrap());
}

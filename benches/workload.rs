//! A Pulse install, simulated with an accelerated clock, against
//! pulse-metrics and (for the typical install) against the seed document's
//! schema and write pattern.
//!
//! By default the typical install: 85 resources (5 nodes, 50 VMs, 20
//! containers, 10 storage) x 3 metrics = 255 series, one poll every 5 s,
//! default config, rollup every 5 simulated minutes and pruning every
//! simulated hour, 90 days of history then one steady-state day.
//!
//! Run: `cargo bench --bench workload` (`WORKLOAD_QUICK=1` for a short run).
//! Options after `--`:
//! - `--resources N --metrics M` (M up to 4: cpu, memory, disk, netin): the
//!   fleet size, kinds in the same proportions. Fleets over 1,000 series
//!   skip the long history, the seed comparison and the all-series queries
//!   (the API pages them), and measure 3 steady-state hours.
//! - `--values random|proxmox`: full-precision random walks (the default;
//!   the worst case for compression), or values shaped as Proxmox reports
//!   them (see `Values`).
//! - `--hours H`, `--history-days D`: override the steady-state window and
//!   the history before it.
//! - `--minute-retention H`: keep minute buckets H hours instead of 24, so
//!   that a run of more than H hours without history sees each hour's seal
//!   delete an expired hour, as every hour does at full retention.
//!
//! Prints each figure, its ratio to the seed schema where one exists, and
//! last one JSON line with everything.

#[path = "common/fleet.rs"]
mod fleet;

use fleet::{Fleet, Rng, Values};
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

/// What to simulate, from the command line.
struct Args {
    resources: usize,
    metrics: usize,
    values: Values,
    hours: i64,
    history_days: i64,
    /// `metrics.retention.minute`, when not the default.
    minute_retention: Option<Duration>,
    /// Run the seed schema and the all-series queries (typical sizes only).
    full: bool,
    quick: bool,
    /// Measure opening this file in a fresh process, answering one query
    /// (series key, now ms), and exit (the bench runs itself with this to
    /// measure open time and its memory alone).
    reopen: Option<(std::path::PathBuf, String, i64)>,
}

impl Args {
    fn parse() -> Args {
        let quick = std::env::var("WORKLOAD_QUICK").is_ok_and(|v| v != "0");
        let mut resources = 85;
        let mut metrics = 3;
        let mut values = Values::Random;
        let mut hours = None;
        let mut history_days = None;
        let mut minute_retention = None;
        let mut reopen = None;
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            let mut num = |name: &str| -> i64 {
                it.next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("{name} needs a number"))
            };
            match a.as_str() {
                "--bench" => {}
                "--resources" => resources = num("--resources") as usize,
                "--metrics" => metrics = num("--metrics") as usize,
                "--hours" => hours = Some(num("--hours")),
                "--history-days" => history_days = Some(num("--history-days")),
                "--minute-retention" => {
                    let h = num("--minute-retention");
                    minute_retention = Some(Duration::from_secs(h as u64 * 3600));
                }
                "--values" => {
                    values = match it.next().as_deref() {
                        Some("random") => Values::Random,
                        Some("proxmox") => Values::Proxmox,
                        other => panic!("--values random|proxmox, not {other:?}"),
                    }
                }
                "--reopen" => {
                    let path = it
                        .next()
                        .map(std::path::PathBuf::from)
                        .expect("--reopen PATH KEY NOW");
                    let key = it.next().expect("--reopen PATH KEY NOW");
                    let now = it
                        .next()
                        .and_then(|v| v.parse().ok())
                        .expect("--reopen PATH KEY NOW");
                    reopen = Some((path, key, now));
                }
                other => panic!(
                    "unknown argument {other:?}: --resources N --metrics M --values random|proxmox --hours H --history-days D --minute-retention H"
                ),
            }
        }
        assert!((1..=4).contains(&metrics), "--metrics is 1 to 4");
        assert!(resources >= 1, "--resources is at least 1");
        let full = resources * metrics <= 1_000;
        Args {
            resources,
            metrics,
            values,
            hours: hours.unwrap_or(match (full, quick) {
                (_, true) => 2,
                (true, false) => 24,
                (false, false) => 3,
            }),
            history_days: history_days.unwrap_or(match (full, quick) {
                (true, false) => 90,
                (true, true) => 9,
                (false, _) => 0,
            }),
            minute_retention,
            full,
            quick,
            reopen,
        }
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

/// A `/proc/self/status` figure in KiB (`name` with its colon).
fn status_kib(name: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// (VmRSS, RssAnon, RssFile) now, in MB: how much of the memory is the
/// process's own and how much is mapped file pages.
fn rss_now_mb() -> (f64, f64, f64) {
    let mb = |name| status_kib(name) as f64 / 1024.0;
    (mb("VmRSS:"), mb("RssAnon:"), mb("RssFile:"))
}

fn peak_rss_kib() -> u64 {
    status_kib("VmHWM:")
}

/// Bytes of the raw journal's segment files.
fn journal_size(path: &Path) -> u64 {
    let mut dir = path.as_os_str().to_owned();
    dir.push("-raw");
    std::fs::read_dir(Path::new(&dir))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Everything the store keeps on disk: the database, its WAL and the raw
/// journal.
fn file_size(path: &Path) -> u64 {
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    size(path) + size(Path::new(&wal)) + journal_size(path)
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
    /// The last simulated hour's bytes, times 24.
    last_hour_day_wchar: f64,
    last_hour_day_write_bytes: f64,
    /// One poll's write_batch + flush.
    flush_ms: Vec<f64>,
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

/// The configuration the simulation runs with.
fn simulated_config(path: &Path, args: &Args) -> MetricsConfig {
    let mut c = config(path);
    if let Some(minute) = args.minute_retention {
        c.retention.minute = minute;
    }
    c
}

/// Fills 90 days of history, then runs one steady-state day at 5 s polls.
fn simulate(path: &Path, args: &Args) -> (Store, Fleet, Ours) {
    let store = Store::open(simulated_config(path, args)).unwrap();
    let mut fleet = Fleet::new(args.resources, args.metrics, args.values);
    // History before the steady-state day. Tier row counts do not depend on
    // raw density, so older history is simulated sparser: one point per
    // minute for the 8 days the hourly tier keeps (hourly buckets of 60),
    // one per 10 minutes before that (only daily buckets remain of it).
    let history_days = args.history_days;
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
    // `wchar` counts the journal's writes to its staging file in shared
    // memory too (docs/storage.md): they are taken off, so the figures are
    // bytes written to files on the disk.
    let staged = || store.journal_staged_bytes();
    let polls = args.hours * HOUR / POLL;
    let s0 = staged();
    let (w0, b0) = proc_io();
    let mut rollup_ms = Vec::new();
    let mut prune_ms = Vec::new();
    let mut peak_file = 0;
    let started = Instant::now();
    // Bytes written by flushes, rollups and prunes (each waits for the
    // writer), and staged by rollups and prunes.
    let mut by_job = [0u64; 3];
    let mut staged_by_job = [0u64; 3];
    let mut io = |job: usize, f: &mut dyn FnMut()| {
        let before = proc_io().0;
        f();
        by_job[job] += proc_io().0 - before;
    };
    let mut flush_ms = Vec::new();
    // I/O at each simulated hour boundary: the last hour is steady state
    // even when the window starts on an empty file.
    let mut hour_marks = vec![(w0 - s0, b0)];
    let mut rss_by_hour = Vec::new();
    for _ in 0..polls {
        let pts = fleet.poll(now);
        let t = Instant::now();
        io(0, &mut || {
            store.write_batch(&pts).unwrap();
            store.flush().unwrap();
        });
        flush_ms.push(ms(t.elapsed()));
        peak_file = peak_file.max(file_size(path));
        now += POLL;
        if now % (5 * MINUTE) == 0 {
            let before = staged();
            let t = Instant::now();
            io(1, &mut || {
                store.rollup(now * 1000).unwrap();
            });
            rollup_ms.push(ms(t.elapsed()));
            staged_by_job[1] += staged() - before;
            peak_file = peak_file.max(file_size(path));
        }
        if now % HOUR == 0 {
            let before = staged();
            let t = Instant::now();
            io(2, &mut || {
                store.prune(now * 1000).unwrap();
            });
            prune_ms.push(ms(t.elapsed()));
            staged_by_job[2] += staged() - before;
            peak_file = peak_file.max(file_size(path));
            let (w, b) = proc_io();
            hour_marks.push((w - staged(), b));
            rss_by_hour.push((rss_now_mb(), peak_rss_kib() as f64 / 1024.0));
        }
    }
    let (w1, b1) = proc_io();
    let s1 = staged();
    staged_by_job[0] = (s1 - s0) - staged_by_job[1] - staged_by_job[2];
    for (bytes, staged) in by_job.iter_mut().zip(staged_by_job) {
        *bytes -= staged;
    }
    let w1 = w1 - (s1 - s0);
    let last_hour = match hour_marks.as_slice() {
        [.., a, b] => ((b.0 - a.0) as f64 * 24.0, (b.1 - a.1) as f64 * 24.0),
        _ => (0.0, 0.0),
    };
    println!(
        "(steady state: {polls} polls in {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    for (i, ((rss, anon, file), peak)) in rss_by_hour.iter().enumerate() {
        println!(
            "(memory after hour {}: RSS {rss:.0} MB, of which {anon:.0} MB the process's own and {file:.0} MB mapped file pages; peak so far {peak:.0} MB)",
            i + 1
        );
    }
    let scale = (DAY / POLL) as f64 / polls as f64;
    let stats = store.stats().unwrap();
    describe_file(path, &stats);
    println!(
        "(bytes per day by job: flushes {:.0}, rollups {:.0}, prunes {:.0}; and to the journal's staging file in shared memory, not counted: {:.0})",
        by_job[0] as f64 * scale,
        by_job[1] as f64 * scale,
        by_job[2] as f64 * scale,
        (s1 - s0) as f64 * scale
    );
    let ours = Ours {
        fleet_day_wchar: (w1 - w0) as f64 * scale,
        fleet_day_write_bytes: (b1 - b0) as f64 * scale,
        last_hour_day_wchar: last_hour.0,
        last_hour_day_write_bytes: last_hour.1,
        flush_ms,
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
    parts.push(format!(
        "raw journal: {} segments, {:.2} MB; raw tier in memory {:.2} MB",
        stats.journal_segments,
        stats.journal_bytes as f64 / 1e6,
        stats.raw_memory_bytes as f64 / 1e6
    ));
    for table in ["minute", "hourly", "daily", "series"] {
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

fn measure_queries(store: &Store, fleet: &Fleet, now: i64, all_series: bool) -> Latencies {
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
        if !all_series {
            continue;
        }
        let mut samples = Vec::new();
        for _ in 0..15 {
            let t = Instant::now();
            let many = store
                .query_many(&SeriesFilter::default(), range, Some(500))
                .unwrap();
            samples.push(ms(t.elapsed()));
            assert_eq!(many.series.len(), fleet.keys.len());
        }
        all.insert(name, percentile(&mut samples, 0.5));
    }
    let range = TimeRange::last(Duration::from_secs(DAY as u64), now * 1000);
    let mut samples = Vec::new();
    for _ in 0..if all_series { 15 } else { 0 } {
        let t = Instant::now();
        let many = store
            .query_many(&SeriesFilter::default(), range, None)
            .unwrap();
        samples.push(ms(t.elapsed()));
        assert_eq!(many.series.len(), fleet.keys.len());
    }
    Latencies {
        one,
        all,
        all_24h_every_point: if samples.is_empty() {
            0.0
        } else {
            percentile(&mut samples, 0.5)
        },
    }
}

fn ingest_throughput(dir: &Path, args: &Args) -> f64 {
    let store = Store::open(config(&dir.join("ingest.db"))).unwrap();
    let mut fleet = Fleet::new(args.resources, args.metrics, args.values);
    // About 2 M points in batches of about 1,000 (several polls, or a
    // share of one).
    let per_batch = 1_000usize;
    let polls = 2_000_000usize.div_ceil(fleet.keys.len());
    let start_ts = STEADY_START - 3 * HOUR;
    let mut total = 0usize;
    let mut pending: Vec<Point> = Vec::new();
    let mut batches: Vec<Vec<Point>> = Vec::new();
    for p in 0..polls {
        pending.extend(fleet.poll(start_ts + p as i64));
        while pending.len() >= per_batch {
            batches.push(pending.drain(..per_batch).collect());
        }
    }
    batches.push(pending);
    let t = Instant::now();
    for batch in batches {
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

fn baseline(dir: &Path, args: &Args) -> SeedFigures {
    let quick = args.quick;
    let path = dir.join("seed.db");
    let mut seed = Seed::open(&path);
    let mut fleet = Fleet::new(args.resources, args.metrics, args.values);
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

/// Opens `path` in this (fresh) process and answers one query (the last
/// hour of `key`, `type/id/metric`, as of `now` ms): prints the time it
/// took and the process's peak memory, for the parent to read.
fn reopen(path: &Path, key: &str, now: i64) {
    let t = Instant::now();
    let store = Store::open(config(path)).unwrap();
    let mut parts = key.splitn(3, '/');
    let key = SeriesKey::new(
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let h = store
        .query(&key, TimeRange::last(Duration::from_secs(3600), now), None)
        .unwrap();
    assert!(!h.points.is_empty());
    let open_ms = ms(t.elapsed());
    println!("reopen {open_ms} {}", peak_rss_kib() * 1024);
    let rss_now = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .unwrap_or("")
        .to_string();
    let stats = store.stats().unwrap();
    println!(
        "(after the open: {rss_now}; raw tier {:.0} MB)",
        stats.raw_memory_bytes as f64 / 1e6
    );
    store.close().unwrap();
}

/// Runs this bench again with `--reopen`: open time and peak memory of a
/// process that only opens the file.
fn reopen_in_child(path: &Path, key: &SeriesKey, now: i64) -> (f64, f64) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--reopen")
        .arg(path)
        .arg(key.to_string())
        .arg(now.to_string())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("reopen "))
        .unwrap_or_else(|| panic!("reopen failed: {}", String::from_utf8_lossy(&out.stderr)));
    let mut parts = line.split(' ').map(|v| v.parse::<f64>().unwrap());
    (parts.next().unwrap(), parts.next().unwrap())
}

fn main() {
    let args = Args::parse();
    if let Some((path, key, now)) = &args.reopen {
        reopen(path, key, *now);
        return;
    }
    // WORKLOAD_DIR keeps the files for a look afterwards (it must be new).
    let kept = std::env::var_os("WORKLOAD_DIR").map(std::path::PathBuf::from);
    let tmp = tempfile::tempdir().unwrap();
    let root = match &kept {
        Some(d) => {
            std::fs::create_dir_all(d).unwrap();
            tempfile::tempdir_in(d).unwrap().keep()
        }
        None => tmp.path().to_path_buf(),
    };
    let path = root.join("metrics.db");
    if kept.is_some() {
        println!("(files kept in {})", root.display());
    }
    println!(
        "pulse-metrics workload: {} resources x {} metrics, 5 s polls, {:?} values, {} days of history, {} h measured{}",
        args.resources,
        args.metrics,
        args.values,
        args.history_days,
        args.hours,
        if args.quick { " (quick)" } else { "" }
    );

    let (store, fleet, ours) = simulate(&path, &args);
    let series = fleet.keys.len();
    let now = STEADY_START + args.hours * HOUR;
    let lat = measure_queries(&store, &fleet, now, args.full);
    let rss = peak_rss_kib();
    store.close().unwrap();
    let (open_ms, open_rss) = reopen_in_child(&path, &fleet.keys[0], now * 1000);
    let ingest = ingest_throughput(root.as_path(), &args);

    let seed = args.full.then(|| {
        println!("(baseline: the seed document's schema and write pattern)");
        baseline(root.as_path(), &args)
    });
    let seed = seed.as_ref();

    println!();
    let mut f = Figures::default();
    let mut rollups = ours.rollup_ms.clone();
    let mut prunes = ours.prune_ms.clone();
    f.set(
        "bytes_written_per_day_wchar",
        ours.fleet_day_wchar,
        "bytes",
        seed.map(|s| s.day_wchar),
    );
    f.set(
        "bytes_written_per_day_write_bytes",
        ours.fleet_day_write_bytes,
        "bytes",
        seed.map(|s| s.day_write_bytes),
    );
    f.set(
        "file_size_peak",
        ours.peak_file as f64,
        "bytes",
        seed.map(|s| s.file as f64),
    );
    f.set(
        "file_size_end",
        ours.end_file as f64,
        "bytes",
        seed.map(|s| s.file as f64),
    );
    f.set(
        "ingest_points_per_sec",
        ingest,
        "pts/s",
        seed.map(|s| s.ingest_rate),
    );
    f.set(
        "bytes_written_per_day_wchar_last_hour",
        ours.last_hour_day_wchar,
        "bytes",
        None,
    );
    f.set(
        "bytes_written_per_day_write_bytes_last_hour",
        ours.last_hour_day_write_bytes,
        "bytes",
        None,
    );
    let mut flushes = ours.flush_ms.clone();
    f.set(
        "write_batch_flush_p50_ms",
        percentile(&mut flushes, 0.5),
        "ms",
        None,
    );
    f.set(
        "write_batch_flush_p99_ms",
        percentile(&mut flushes, 0.99),
        "ms",
        None,
    );
    for (name, _) in RANGES {
        let (p50, p99) = lat.one[name];
        let s = seed.map(|s| s.one[name]);
        f.set(
            &format!("query_one_{name}_p50_ms"),
            p50,
            "ms",
            s.map(|s| s.0),
        );
        f.set(
            &format!("query_one_{name}_p99_ms"),
            p99,
            "ms",
            s.map(|s| s.1),
        );
        if let Some(all) = lat.all.get(name) {
            f.set(
                &format!("query_all_{series}_{name}_ms"),
                *all,
                "ms",
                seed.map(|s| s.all[name]),
            );
        }
    }
    if args.full {
        f.set(
            &format!("query_all_{series}_24h_every_point_ms"),
            lat.all_24h_every_point,
            "ms",
            None,
        );
    }
    f.set(
        "rollup_pass_p50_ms",
        percentile(&mut rollups, 0.5),
        "ms",
        seed.map(|s| s.rollup_ms),
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
        seed.map(|s| s.prune_ms),
    );
    f.set(
        "prune_pass_max_ms",
        percentile(&mut prunes, 1.0),
        "ms",
        None,
    );
    f.set("open_full_file_ms", open_ms, "ms", None);
    f.set("peak_rss_bytes", (rss * 1024) as f64, "bytes", None);
    f.set("peak_rss_after_reopen_bytes", open_rss, "bytes", None);
    f.set("series", series as f64, "series", None);
    for (i, tier) in ["raw", "minute", "hourly", "daily"].iter().enumerate() {
        f.set(&format!("rows_{tier}"), ours.rows[i] as f64, "rows", None);
    }
    println!("{}", serde_json::to_string(&f.0).unwrap());
}

//! The running service beside Prometheus, in one run and in real time:
//! bytes written to the disk per day, CPU time and memory, for the typical
//! install in steady state.
//!
//! Run: `cargo bench --bench service` (about 15 minutes: it runs in real
//! time; cargo builds the `pulse-metrics` binary with the bench profile).
//! 1. 2 h of history (85 resources x cpu/memory/disk = 255 series, one
//!    point every 5 s) is loaded with `pulse-metrics ingest --now`.
//! 2. `pulse-metrics serve` runs on it with the default intervals (flush
//!    5 s, rollup 5 m, retention 1 h) and the host collector disabled: the
//!    bench is the only writer.
//! 3. When `prometheus` is on PATH (Debian: `apt-get install prometheus`),
//!    it runs with its defaults on its own data directory, scraping every
//!    5 s a page the bench serves with the same values.
//! 4. At every 5 s of the wall clock the bench POSTs the fleet's next 255
//!    values to `/api/metrics-store/write` and puts them on that page.
//! 5. After a warm-up it looks once a second, for the window, at both
//!    processes' `/proc/PID/io`, CPU time and memory and at the files
//!    they write, and prints each figure extrapolated to a day. The window
//!    starts 10 s after one of the service's rollups and lasts whole
//!    rollup intervals: each rollup syncs the journal, which writes the
//!    partly filled 64 KiB unit its staging held in shared memory, so the
//!    window holds every record appended in it as it reaches the disk. (A
//!    window from any moment held 3 to 5 of its ~4 units: +-25 %.)
//!
//! What happens less often than the window is counted apart. The service
//! writes the database when a rollup closes an hour (in the window only if
//! the wall clock crosses an hour in it: `--cross-hour` sees to that) and
//! at the hourly retention pass. The bench measures one retention pass as
//! the service runs it, after the window: it sets the pass's interval to
//! the shortest allowed (1m) through the settings API, lets the first pass
//! that follows run, and measures the next one alone. Prometheus
//! compacts its blocks: the bench weighs a sample in a block `promtool`
//! builds of the same values and counts it at each level its default
//! retention compacts into (2 h, 6 h, 18 h).
//!
//! Options after `--`: `--values random|proxmox` (as `workload`'s),
//! `--window 15m` (rounded up to whole rollup intervals), `--warmup 1m`, `--history 2h`, `--cross-hour` (keep
//! warming up until the window will hold the first rollup after an hour
//! closes: up to an hour more), `--no-prometheus`, `--sync` (POST with
//! `sync=true`). `SERVICE_BENCH_DIR=DIR` keeps the files in a new
//! directory under DIR; by default they go under cargo's target directory
//! (not a tmpfs, where `write_bytes` would read zero) and are deleted.
//!
//! Prints the figures, then one JSON line with all of them.

#[path = "service/feed.rs"]
mod feed;
#[path = "common/files.rs"]
mod files;
#[path = "common/fleet.rs"]
mod fleet;
#[path = "common/procfs.rs"]
mod procfs;
#[path = "common/prometheus.rs"]
mod prometheus;
#[path = "service/report.rs"]
mod report;
#[path = "service/running.rs"]
mod running;
#[path = "service/split.rs"]
mod split;
#[path = "service/window.rs"]
mod window;

use feed::{Feed, Page, feed, serve_page};
use fleet::{Fleet, Values};
use procfs::ProcSample;
use prometheus::Prometheus;
use pulse_metrics::Point;
use report::{Figures, clock, prometheus_summary, service_summary};
use running::{Running, free_addr, now_ms};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use window::{Counters, family_sum, get_json, watch};

pub const POLL_MS: i64 = 5_000;
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY: f64 = 86_400.0;
pub const MB: f64 = 1e6;
/// The service's default rollup interval: the first rollup after an hour
/// closes writes that hour to the database.
pub const ROLLUP: Duration = Duration::from_secs(300);
const ROLLUP_MS: i64 = 300_000;
/// How long after a rollup the window starts and ends: past its journal
/// sync and its database write, if any.
const AFTER_ROLLUP_MS: i64 = 10_000;
/// The service's default retention interval.
pub const RETENTIONS_PER_DAY: f64 = 24.0;

struct Args {
    values: Values,
    window: Duration,
    warmup: Duration,
    history: Duration,
    cross_hour: bool,
    prometheus: bool,
    sync: bool,
}

impl Args {
    fn parse() -> Args {
        let mut a = Args {
            values: Values::Random,
            window: Duration::from_secs(15 * 60),
            warmup: Duration::from_secs(60),
            history: Duration::from_secs(2 * 3600),
            cross_hour: false,
            prometheus: true,
            sync: false,
        };
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            let mut duration = |name: &str| {
                let v = it.next().unwrap_or_default();
                humantime::parse_duration(&v)
                    .unwrap_or_else(|e| panic!("{name} needs a duration like 12m, not {v:?}: {e}"))
            };
            match arg.as_str() {
                "--bench" => {}
                "--window" => a.window = duration("--window"),
                "--warmup" => a.warmup = duration("--warmup"),
                "--history" => a.history = duration("--history"),
                "--cross-hour" => a.cross_hour = true,
                "--no-prometheus" => a.prometheus = false,
                "--sync" => a.sync = true,
                "--values" => {
                    a.values = match it.next().as_deref() {
                        Some("random") => Values::Random,
                        Some("proxmox") => Values::Proxmox,
                        other => panic!("--values random|proxmox, not {other:?}"),
                    }
                }
                other => panic!(
                    "unknown argument {other:?}: --values random|proxmox --window 15m --warmup 1m --history 2h --cross-hour --no-prometheus --sync"
                ),
            }
        }
        let rollups = a.window.as_millis().div_ceil(ROLLUP.as_millis());
        a.window = ROLLUP * rollups as u32;
        assert!(
            a.window >= Duration::from_secs(60),
            "--window is at least 1m"
        );
        if a.cross_hour {
            // The close's rollup and the one after it.
            let needs = ROLLUP * 2;
            assert!(
                a.window >= needs,
                "--cross-hour needs a window of at least {}",
                humantime::format_duration(needs)
            );
        }
        a
    }
}

// ---------------------------------------------------------------- setup

/// Writes the history as JSON Lines (for `ingest`) and returns its polls.
fn history(fleet: &mut Fleet, from_ms: i64, to_ms: i64, path: &Path) -> Vec<Vec<Point>> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut polls = Vec::new();
    let mut ts = from_ms;
    while ts < to_ms {
        let poll = fleet.poll(ts / 1000);
        for p in &poll {
            serde_json::to_writer(&mut out, p).unwrap();
            out.write_all(b"\n").unwrap();
        }
        polls.push(poll);
        ts += POLL_MS;
    }
    out.flush().unwrap();
    polls
}

/// The same values as one full 2 h Prometheus block (blocks are aligned to
/// 2 h): the first 2 h of polls restamped from a 2 h boundary.
fn restamp_to_block(polls: &[Vec<Point>]) -> Vec<Vec<Point>> {
    let two_hours = 2 * HOUR_MS;
    let base = (now_ms() / two_hours - 2) * two_hours;
    polls
        .iter()
        .take((two_hours / POLL_MS) as usize)
        .enumerate()
        .map(|(i, poll)| {
            poll.iter()
                .map(|p| Point {
                    timestamp: base + i as i64 * POLL_MS,
                    ..p.clone()
                })
                .collect()
        })
        .collect()
}

fn is_tmpfs(dir: &Path) -> bool {
    const TMPFS_MAGIC: u64 = 0x0102_1994;
    rustix::fs::statfs(dir).is_ok_and(|s| s.f_type as u64 == TMPFS_MAGIC)
}

/// Sleeps (the polls go on) until 10 s after one of the service's
/// rollups: the next one, or with `cross_hour` the last one before an
/// hour's close, so that a window of two rollup intervals or more holds
/// the close's rollup and the one after it. Rollups run every
/// `ROLLUP` from the last one (the stats' `lastRollup`).
async fn after_a_rollup(client: &reqwest::Client, base: &str, cross_hour: bool) {
    let stats = get_json(client, &format!("{base}/api/metrics-store/stats")).await;
    let last = stats["lastRollup"]
        .as_i64()
        .filter(|&t| t > 0)
        .expect("the service reports its last rollup");
    let now = now_ms();
    let mut start = last + AFTER_ROLLUP_MS;
    while start <= now {
        start += ROLLUP_MS;
    }
    if cross_hour {
        // The first rollup at or after an hour's start closes that hour.
        while (start + ROLLUP_MS - AFTER_ROLLUP_MS) % HOUR_MS >= ROLLUP_MS {
            start += ROLLUP_MS;
        }
    }
    println!(
        "(waiting until {}: 10 s after a rollup{})",
        clock(start),
        if cross_hour {
            let hour = (start + ROLLUP_MS - AFTER_ROLLUP_MS) / HOUR_MS * HOUR_MS;
            format!(
                ", for the window to hold the first rollup after {}",
                clock(hour)
            )
        } else {
            String::new()
        }
    );
    tokio::time::sleep(Duration::from_millis((start - now) as u64)).await;
}

/// The write_bytes of one retention pass as the service runs it: its
/// interval set to the shortest allowed (1m) through the settings API, the
/// first pass after that let run, the next one measured alone (polls are
/// stopped; should a rollup run in the same minute, the next pass is
/// measured instead). The settings are reset to the file's after.
async fn retention_pass(client: &reqwest::Client, base: &str, pid: u32) -> f64 {
    let metrics = format!("{base}/metrics");
    let runs = || family_sum(client, &metrics, "pulse_metrics_job_retention_runs_total");
    let rollups = || family_sum(client, &metrics, "pulse_metrics_job_rollup_runs_total");
    let wait_for_run = |after: f64| async move {
        let deadline = Instant::now() + Duration::from_secs(150);
        loop {
            let n = runs().await;
            if n > after {
                return n;
            }
            assert!(Instant::now() < deadline, "no retention pass within 150 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let config = format!("{base}/api/metrics-store/config");
    let put = client
        .put(&config)
        .header("content-type", "application/json")
        .body(r#"{"retention_interval": "1m"}"#)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "PUT config: {}", put.status());
    let mut seen = wait_for_run(runs().await - 1.0).await;
    let bytes = loop {
        seen = wait_for_run(seen).await;
        let (m0, u0) = (ProcSample::read(pid).unwrap(), rollups().await);
        seen = wait_for_run(seen).await;
        let (m1, u1) = (ProcSample::read(pid).unwrap(), rollups().await);
        if u1 == u0 {
            break (m1.write_bytes - m0.write_bytes) as f64;
        }
    };
    let reset = client
        .delete(&config)
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert!(
        reset.status().is_success(),
        "DELETE config: {}",
        reset.status()
    );
    bytes
}

// ------------------------------------------------------------------ run

fn main() {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(args));
}

async fn run(args: Args) {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_pulse-metrics"));
    let kept = std::env::var_os("SERVICE_BENCH_DIR").map(PathBuf::from);
    let tmp = match &kept {
        Some(d) => {
            std::fs::create_dir_all(d).unwrap();
            tempfile::tempdir_in(d).unwrap()
        }
        None => tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap(),
    };
    let root = tmp.path().to_path_buf();
    if kept.is_some() {
        println!("(files kept in {})", root.display());
    }
    if is_tmpfs(&root) {
        println!(
            "WARNING: {} is on a tmpfs, where write_bytes reads zero: set SERVICE_BENCH_DIR to a disk",
            root.display()
        );
    }
    let prom_bin = args
        .prometheus
        .then(|| prometheus::which("prometheus"))
        .flatten();
    let mut fleet = Fleet::new(85, 3, args.values);
    let series = fleet.keys.len();
    println!(
        "pulse-metrics service: {series} series, 5 s polls over HTTP{}, {:?} values, {} of history, a window of {} after {} of warm-up, {}",
        if args.sync { " (sync=true)" } else { "" },
        args.values,
        humantime::format_duration(args.history),
        humantime::format_duration(args.window),
        humantime::format_duration(args.warmup),
        match &prom_bin {
            Some(p) => format!("beside {}", prometheus::version(p)),
            None if args.prometheus =>
                "without Prometheus (not on PATH; Debian: apt-get install prometheus)".into(),
            None => "without Prometheus (--no-prometheus)".into(),
        }
    );

    // 1. The history, loaded as the CLI does.
    let db = root.join("metrics.db");
    let config = root.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "metrics:\n  database_path: \"{}\"\ncollectors:\n  host: {{ enabled: false }}\n",
            db.display()
        ),
    )
    .unwrap();
    let loaded_at = now_ms() / POLL_MS * POLL_MS;
    let jsonl = root.join("history.jsonl");
    let history_polls = history(
        &mut fleet,
        loaded_at - args.history.as_millis() as i64,
        loaded_at,
        &jsonl,
    );
    let started = Instant::now();
    let out = Command::new(&bin)
        .env("PULSE_DATA_DIR", &root)
        .arg("--config")
        .arg(&config)
        .args(["ingest", "--now", &now_ms().to_string()])
        .arg(&jsonl)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ingest failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(&jsonl).unwrap();
    println!(
        "(history: {} points ingested in {:.1} s)",
        history_polls.len() * series,
        started.elapsed().as_secs_f64()
    );

    // 2. The service and 3. Prometheus.
    let client = reqwest::Client::new();
    let listen = free_addr();
    let base = format!("http://{listen}");
    let mut service = Running::new(
        Command::new(&bin)
            .env("PULSE_DATA_DIR", &root)
            .arg("--config")
            .arg(&config)
            .args(["serve", "--listen", &listen.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        "pulse-metrics",
    );
    service
        .wait_ready(&client, &format!("{base}/healthz"))
        .await;
    let page = Arc::new(Page::default());
    let mut prom = None;
    if let Some(bin) = &prom_bin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        tokio::spawn(serve_page(page.clone(), listener));
        let p = Prometheus::start(bin, &root, target, free_addr()).unwrap();
        let mut running = Running::new(p.child, "prometheus");
        running
            .wait_ready(&client, &format!("{}/-/ready", p.url))
            .await;
        prom = Some((running, p.data, p.url));
    }

    // 4. The polls, from now to the end.
    let feeding = Arc::new(Feed::default());
    let done_feeding = Arc::new(AtomicBool::new(false));
    let feeder = tokio::spawn(feed(
        fleet,
        format!(
            "{base}/api/metrics-store/write{}",
            if args.sync { "?sync=true" } else { "" }
        ),
        page.clone(),
        feeding.clone(),
        done_feeding.clone(),
    ));
    tokio::time::sleep(args.warmup).await;
    after_a_rollup(&client, &base, args.cross_hour).await;

    // 5. The window.
    let prom_url = prom.as_ref().map(|(_, _, url)| url.clone());
    let before = Counters::read(&client, &base, prom_url.as_deref()).await;
    let scrapes_before = (
        page.scrapes.load(Ordering::Relaxed),
        page.repeats.load(Ordering::Relaxed),
    );
    let polls_before = feeding.polls.load(Ordering::Relaxed);
    let done_watching = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (db, pid, done) = (db.clone(), service.pid(), done_watching.clone());
        let prom = prom.as_ref().map(|(p, data, _)| (p.pid(), data.clone()));
        std::thread::spawn(move || watch(db, pid, prom, done))
    };
    println!(
        "(window: {} to {})",
        clock(now_ms()),
        clock(now_ms() + args.window.as_millis() as i64)
    );
    tokio::time::sleep(args.window).await;
    done_watching.store(true, Ordering::Relaxed);
    let window = tokio::task::spawn_blocking(move || watcher.join().unwrap())
        .await
        .unwrap();
    let polls = feeding.polls.load(Ordering::Relaxed) - polls_before;
    let scrapes = (
        page.scrapes.load(Ordering::Relaxed) - scrapes_before.0,
        page.repeats.load(Ordering::Relaxed) - scrapes_before.1,
    );
    let after = Counters::read(&client, &base, prom_url.as_deref()).await;

    // The hourly retention pass, measured alone: polls stopped first.
    done_feeding.store(true, Ordering::Relaxed);
    let _ = feeder.await;
    println!("(measuring one retention pass: a minute or two)");
    let retention = retention_pass(&client, &base, service.pid()).await;
    let end_stats = get_json(&client, &format!("{base}/api/metrics-store/stats")).await;

    let mut f = Figures::default();
    let feed_failures = feeding.failures.load(Ordering::Relaxed);
    f.set("window_seconds", window.secs());
    f.set("polls_in_window", polls as f64);
    f.set("write_failures", feed_failures as f64);
    println!();
    println!(
        "window {:.0} s ({} to {}): {polls} polls of {series} values; {} rollup(s), {} retention pass(es); {}",
        window.secs(),
        clock(window.looks[0].wall),
        clock(window.looks.last().unwrap().wall),
        after.rollups - before.rollups,
        after.retentions - before.retentions,
        if after.hourly_buckets > before.hourly_buckets {
            "a rollup closed an hour in it"
        } else {
            "no hour closed in it (--cross-hour)"
        }
    );
    let ours = service_summary(&mut f, &window, polls, series, retention, &end_stats, &db);
    let theirs = prom.as_ref().map(|(_, data, _)| {
        let block = prometheus::which("promtool").and_then(|tool| {
            let input = root.join("block.om");
            let text = prometheus::openmetrics(&restamp_to_block(&history_polls));
            std::fs::write(&input, text).unwrap();
            let built = prometheus::promtool_blocks(&tool, &input, &root.join("promtool-blocks"));
            let _ = std::fs::remove_file(&input);
            built.map_err(|e| println!("(promtool: {e})")).ok()
        });
        prometheus_summary(&mut f, &window, before, after, data, block, scrapes, series)
    });
    println!(
        "{:<34} {:>16} {:>12} {:>10} {:>20}",
        "", "write_bytes/day", "wchar/day", "CPU s/day", "RSS now / peak"
    );
    for row in ours.rows.iter().chain(theirs.iter().flat_map(|t| &t.rows)) {
        println!("{row}");
    }
    if let Some(t) = &theirs {
        let window_ratio = f.set("ratio_write_bytes_window", ours.window / t.window);
        let day_ratio = f.set("ratio_write_bytes_day", ours.day / t.day);
        println!(
            "write_bytes, pulse-metrics / Prometheus: {window_ratio:.2} in the window, {day_ratio:.2} over a day (with hour closings and retention passes; head chunks and block compactions)"
        );
    }
    println!();
    println!("where pulse-metrics's bytes go:");
    ours.notes.iter().for_each(|n| println!("  {n}"));
    if let Some(t) = &theirs {
        println!("where Prometheus's bytes go:");
        t.notes.iter().for_each(|n| println!("  {n}"));
    }
    println!(
        "(POSTs: slowest {} ms, {feed_failures} failed)",
        feeding.slowest_ms.load(Ordering::Relaxed)
    );

    let tail = service.tail();
    let clean = service.stop();
    if let Some((p, _, _)) = prom {
        p.stop();
    }
    println!("{}", serde_json::to_string(&f.0).unwrap());
    if kept.is_some() {
        let _ = tmp.keep();
    }
    assert!(clean, "the service did not exit cleanly on SIGTERM");
    assert_eq!(feed_failures, 0, "writes failed:\n{tail}");
}

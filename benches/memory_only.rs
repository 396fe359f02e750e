//! Memory of the store in its memory-only mode (`metrics.enabled: false`)
//! at scale: what the service holds per series when nothing goes to disk.
//!
//! `cargo bench --bench memory_only` opens a store with `enabled: false`,
//! then feeds it 10,000 resources x 4 metrics (cpu, memory, disk, netin)
//! polled every 5 s for 3 simulated hours, with a rollup every 5 simulated
//! minutes and a retention pass every simulated hour (as the service's jobs
//! run them), and prints the process's resident memory before and after,
//! its peak, and the growth per series. The last line is one JSON object.
//!
//! Options after `--`: `--resources N`, `--metrics M` (1 to 4), `--hours H`,
//! `--values random|proxmox`: full-precision random walks (the default, the
//! worst case for the raw tier's compression) or values shaped as Proxmox
//! reports them (a CPU fraction printed with 15 digits, memory in 4 KiB
//! pages, a disk that changes every ~10 minutes, a byte counter's rate).

use pulse_metrics::{MetricsConfig, Point, SeriesKey, Store};
use std::time::Instant;

const POLL_MS: i64 = 5_000;
const ROLLUP_EVERY: i64 = 60; // polls: 5 minutes
const PRUNE_EVERY: i64 = 720; // polls: 1 hour
/// 2026-11-01T00:00:00Z, the simulated start.
const START_MS: i64 = 1_793_491_200_000;
const METRICS: [&str; 4] = ["cpu", "memory", "disk", "netin"];

struct Args {
    resources: usize,
    metrics: usize,
    hours: i64,
    proxmox: bool,
}

fn args() -> Args {
    let mut a = Args {
        resources: 10_000,
        metrics: 4,
        hours: 3,
        proxmox: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--bench" => {}
            "--resources" => a.resources = value().parse().expect("--resources N"),
            "--metrics" => a.metrics = value().parse().expect("--metrics M"),
            "--hours" => a.hours = value().parse().expect("--hours H"),
            "--values" => {
                a.proxmox = match value().as_str() {
                    "random" => false,
                    "proxmox" => true,
                    other => panic!("--values random|proxmox, not {other:?}"),
                }
            }
            other => panic!(
                "unknown argument {other:?}: --resources N --metrics M --hours H --values random|proxmox"
            ),
        }
    }
    assert!((1..=4).contains(&a.metrics), "--metrics is 1 to 4");
    a
}

/// xorshift64* and Box-Muller: deterministic and dependency-free.
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

/// The series and the state their values move from.
struct Fleet {
    keys: Vec<SeriesKey>,
    values: Vec<f64>,
    /// Proxmox shape: bytes used (memory, disk) or counted (netin).
    count: Vec<u64>,
    proxmox: bool,
    rng: Rng,
}

impl Fleet {
    fn new(a: &Args) -> Fleet {
        let mut keys = Vec::new();
        for i in 0..a.resources {
            // Mostly guests, some nodes and storage, as a cluster has them.
            let (t, id) = match i % 17 {
                0 => ("node", format!("pve1:node{i}")),
                1 | 2 => ("storage", format!("pve1:store{i}")),
                3..=6 => ("container", format!("pve1:{}", 100 + i)),
                _ => ("vm", format!("pve1:{}", 100 + i)),
            };
            for m in &METRICS[..a.metrics] {
                keys.push(SeriesKey::new(t, id.clone(), *m));
            }
        }
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let values: Vec<f64> = keys.iter().map(|_| 10.0 + 70.0 * rng.unit()).collect();
        let count = values
            .iter()
            .map(|v| (v * 1e7) as u64 / 4096 * 4096)
            .collect();
        Fleet {
            keys,
            values,
            count,
            proxmox: a.proxmox,
            rng,
        }
    }

    fn value(&mut self, i: usize) -> f64 {
        let metric = self.keys[i].metric.as_str();
        if !self.proxmox {
            let (step, cap) = match metric {
                "cpu" => (2.0, 100.0),
                "memory" => (0.2, 100.0),
                "netin" => (10_000.0, 1e9),
                _ => (0.01, 100.0),
            };
            self.values[i] = (self.values[i] + step * self.rng.normal()).clamp(0.0, cap);
            return self.values[i];
        }
        const SIZE: f64 = 1e9;
        match metric {
            "cpu" => {
                let f = (self.values[i] / 100.0 + 0.02 * self.rng.normal()).clamp(0.0, 1.0);
                let printed: f64 = format!("{f:.14e}").parse().expect("a number");
                self.values[i] = printed * 100.0;
                self.values[i]
            }
            "memory" => {
                let pages = (self.rng.normal() * 64.0) as i64;
                self.count[i] = (self.count[i] as i64 + pages * 4096).clamp(0, SIZE as i64) as u64;
                self.count[i] as f64 / SIZE * 100.0
            }
            "disk" => {
                if self.rng.next().is_multiple_of(120) {
                    self.count[i] += 4096 * (self.rng.next() % 2048);
                }
                self.count[i] as f64 / SIZE * 100.0
            }
            _ => (self.rng.unit() * 2e6).floor() / 5.0,
        }
    }

    fn poll(&mut self, ts: i64) -> Vec<Point> {
        (0..self.keys.len())
            .map(|i| {
                let v = self.value(i);
                Point::new(&self.keys[i], v, ts)
            })
            .collect()
    }
}

/// Resident and peak memory of this process, bytes.
fn memory() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mib(b: u64) -> f64 {
    b as f64 / 1_048_576.0
}

fn main() {
    let a = args();
    let mut fleet = Fleet::new(&a);
    let series = fleet.keys.len() as u64;
    println!(
        "pulse-metrics memory only (metrics.enabled: false): {} resources x {} metrics = {series} series, 5 s polls, {} simulated hours, {} values",
        a.resources,
        a.metrics,
        a.hours,
        if a.proxmox { "proxmox" } else { "random" }
    );
    let (before, _) = memory();
    let store = Store::open(MetricsConfig {
        enabled: false,
        ..MetricsConfig::default()
    })
    .expect("open a memory-only store");
    let started = Instant::now();
    let polls = a.hours * 3600 * 1000 / POLL_MS;
    for n in 1..=polls {
        let ts = START_MS + n * POLL_MS;
        let batch = fleet.poll(ts);
        loop {
            match store.write_batch(&batch) {
                Ok(_) => break,
                Err(e) if e.is_overloaded() => store.flush().expect("flush"),
                Err(e) => panic!("write: {e}"),
            }
        }
        store.flush().expect("flush");
        if n % ROLLUP_EVERY == 0 {
            store.rollup(ts).expect("rollup");
        }
        if n % PRUNE_EVERY == 0 {
            store.prune(ts).expect("prune");
        }
    }
    let fed = started.elapsed().as_secs_f64();
    let stats = store.stats().expect("stats");
    let (after, peak) = memory();
    let grown = after.saturating_sub(before);
    let per_series = grown as f64 / series as f64;
    println!(
        "fed {} points in {fed:.0} s; raw {} points, minute {} buckets, hourly {}, raw tier {:.1} MiB",
        polls as u64 * series,
        stats.raw_count,
        stats.minute_count,
        stats.hourly_count,
        mib(stats.raw_memory_bytes)
    );
    println!(
        "resident memory: {:.1} MiB before open, {:.1} MiB after {} h ({:.1} MiB for the store: {:.0} bytes per series), peak {:.1} MiB",
        mib(before),
        mib(after),
        a.hours,
        mib(grown),
        per_series,
        mib(peak)
    );
    println!(
        "{}",
        serde_json::json!({
            "resources": a.resources,
            "series": series,
            "hours": a.hours,
            "values": if a.proxmox { "proxmox" } else { "random" },
            "rss_before_bytes": before,
            "rss_after_bytes": after,
            "rss_peak_bytes": peak,
            "store_bytes_per_series": per_series.round(),
            "raw_memory_bytes": stats.raw_memory_bytes,
            "raw_count": stats.raw_count,
            "minute_count": stats.minute_count,
            "feed_seconds": (fed * 10.0).round() / 10.0,
        })
    );
    store.close().expect("close");
}

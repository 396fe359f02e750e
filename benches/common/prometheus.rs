//! Prometheus beside the service: the page it scrapes, how it is started,
//! what its head wrote (the memory-mapped head chunks, parsed), and what a
//! block of the same values weighs (built by `promtool`), to count the
//! block compactions that happen outside a short window.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use pulse_metrics::Point;

/// Prometheus's default retention (`--storage.tsdb.retention.time`).
pub const DEFAULT_RETENTION_HOURS: u64 = 15 * 24;

/// The block ranges Prometheus compacts into: 2 h blocks cut from the
/// head, merged three at a time into the next range while it is no longer
/// than a tenth of the retention (`tsdb.ExponentialBlockRanges(2h, 10, 3)`
/// cut at `MaxBlockDuration`, which `cmd/prometheus` sets to retention/10).
/// With the default 15 days: 2 h, 6 h and 18 h, so every sample is written
/// to a block three times.
pub fn block_ranges_hours(retention_hours: u64) -> Vec<u64> {
    let max = (retention_hours / 10).max(2);
    let mut ranges = vec![2];
    while ranges.len() < 10 && ranges[ranges.len() - 1] * 3 <= max {
        ranges.push(ranges[ranges.len() - 1] * 3);
    }
    ranges
}

/// The program on PATH, if any.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// `prometheus --version`'s first line.
pub fn version(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned()
                + &String::from_utf8_lossy(&o.stderr);
            text.lines().next().map(str::to_string)
        })
        .unwrap_or_else(|| "prometheus (version unknown)".into())
}

fn family(metric: &str) -> String {
    format!("pulse_{metric}")
}

fn labels(p: &Point) -> String {
    let esc = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    format!(
        "{{resource_type=\"{}\",resource_id=\"{}\"}}",
        esc(&p.resource_type),
        esc(&p.resource_id)
    )
}

/// Metric names in the order they first appear.
fn metrics(points: &[Point]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for p in points {
        if !out.contains(&p.metric.as_str()) {
            out.push(&p.metric);
        }
    }
    out
}

/// One poll as a scrape page (text exposition format 0.0.4): one gauge
/// family per metric, `pulse_cpu{resource_type="vm",resource_id="pve1:101"}`.
/// Values are printed in full (shortest form that reads back the same
/// double), without timestamps: Prometheus stamps them with its scrape time.
pub fn exposition(points: &[Point]) -> String {
    let mut out = String::with_capacity(points.len() * 64);
    for metric in metrics(points) {
        let name = family(metric);
        let _ = writeln!(out, "# TYPE {name} gauge");
        for p in points.iter().filter(|p| p.metric == metric) {
            let _ = writeln!(out, "{name}{} {}", labels(p), p.value);
        }
    }
    out
}

/// Polls (each the same series in the same order) as OpenMetrics text for
/// `promtool tsdb create-blocks-from openmetrics`: families and series
/// kept together, samples in time order, timestamps in seconds.
pub fn openmetrics(polls: &[Vec<Point>]) -> String {
    let Some(first) = polls.first() else {
        return "# EOF\n".into();
    };
    let mut out = String::with_capacity(polls.len() * first.len() * 64);
    for metric in metrics(first) {
        let name = family(metric);
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (i, p) in first.iter().enumerate() {
            if p.metric != metric {
                continue;
            }
            let labels = labels(p);
            for poll in polls {
                let q = &poll[i];
                let _ = writeln!(
                    out,
                    "{name}{labels} {} {}.{:03}",
                    q.value,
                    q.timestamp.div_euclid(1000),
                    q.timestamp.rem_euclid(1000)
                );
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

/// A running Prometheus.
pub struct Prometheus {
    pub child: Child,
    pub data: PathBuf,
    pub url: String,
}

impl Prometheus {
    /// Starts Prometheus with its defaults (retention, block ranges) on a
    /// data directory under `dir`, scraping `target` every 5 s.
    pub fn start(
        bin: &Path,
        dir: &Path,
        target: SocketAddr,
        listen: SocketAddr,
    ) -> std::io::Result<Prometheus> {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 5s\n  scrape_timeout: 4s\n  evaluation_interval: 1m\n\
                 scrape_configs:\n  - job_name: pulse\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )?;
        let data = dir.join("prometheus-data");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={listen}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        Ok(Prometheus {
            child,
            data,
            url: format!("http://{listen}"),
        })
    }
}

/// What the head's memory-mapped chunk files (`chunks_head/`) hold.
#[derive(Debug, Default, Clone, Copy)]
pub struct HeadChunks {
    pub chunks: u64,
    pub samples: u64,
    /// Bytes of those chunks, headers and checksums included.
    pub bytes: u64,
}

/// Parses every file of `chunks_head/`: an 8-byte file header, then per
/// chunk the series ref, min and max time (8 bytes each), the encoding
/// (1 byte), the data length (uvarint), the data (whose first two bytes
/// are the sample count, big-endian, for XOR chunks) and a CRC-32.
pub fn head_chunks(data: &Path) -> HeadChunks {
    let mut total = HeadChunks::default();
    let Ok(entries) = std::fs::read_dir(data.join("chunks_head")) else {
        return total;
    };
    for e in entries.flatten() {
        let Ok(bytes) = std::fs::read(e.path()) else {
            continue;
        };
        let mut pos = 8;
        while pos + 25 < bytes.len() {
            let encoding = bytes[pos + 24];
            if encoding == 0 {
                break; // zero padding after the last chunk
            }
            let (len, n) = uvarint(&bytes[pos + 25..]);
            let data = pos + 25 + n;
            let end = data + len as usize + 4;
            if n == 0 || end > bytes.len() || len < 2 {
                break;
            }
            total.chunks += 1;
            total.samples += u64::from(u16::from_be_bytes([bytes[data], bytes[data + 1]]));
            total.bytes += (end - pos) as u64;
            pos = end;
        }
    }
    total
}

fn uvarint(b: &[u8]) -> (u64, usize) {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return (v, i + 1);
        }
    }
    (0, 0)
}

/// Sizes of the blocks `promtool` built.
#[derive(Debug, Default, Clone, Copy)]
pub struct Blocks {
    pub blocks: u64,
    pub samples: u64,
    pub chunk_bytes: u64,
    /// The index, meta.json and tombstones.
    pub other_bytes: u64,
}

/// Builds blocks from OpenMetrics text with `promtool tsdb
/// create-blocks-from openmetrics` (2 h blocks, as the head's) into `out`
/// and measures them.
pub fn promtool_blocks(promtool: &Path, input: &Path, out: &Path) -> Result<Blocks, String> {
    let o = Command::new(promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics", "--quiet"])
        .arg(input)
        .arg(out)
        .output()
        .map_err(|e| format!("run {}: {e}", promtool.display()))?;
    if !o.status.success() {
        return Err(format!(
            "promtool failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    let mut b = Blocks::default();
    for e in std::fs::read_dir(out).map_err(|e| e.to_string())?.flatten() {
        let meta = e.path().join("meta.json");
        let Ok(text) = std::fs::read_to_string(&meta) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        b.blocks += 1;
        b.samples += v["stats"]["numSamples"].as_u64().unwrap_or(0);
        b.chunk_bytes += crate::files::dir_bytes(&e.path().join("chunks"));
        b.other_bytes += crate::files::dir_bytes(&e.path());
    }
    if b.samples == 0 {
        return Err("promtool built no samples".into());
    }
    Ok(b)
}

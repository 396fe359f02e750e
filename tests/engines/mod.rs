//! Real Prometheus-compatible engines for the remote tests, started on a
//! free port over a temporary directory: VictoriaMetrics (Debian's
//! `victoria-metrics`; its single-node API is the cluster's vminsert and
//! vmselect API) and Prometheus (`prometheus`, with its remote-write
//! receiver on). When one is missing the test fails under CI (`$CI` set,
//! `.ci/run` installs both) and is skipped loudly elsewhere.
#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    VictoriaMetrics,
    Prometheus,
}

impl Kind {
    fn binary(self) -> &'static str {
        match self {
            Kind::VictoriaMetrics => "/usr/bin/victoria-metrics",
            Kind::Prometheus => "/usr/bin/prometheus",
        }
    }
}

/// The engine's binary, or `None` after saying loudly why the test is
/// skipped (a panic under CI).
pub fn available(kind: Kind) -> bool {
    if Path::new(kind.binary()).exists() {
        return true;
    }
    let msg = format!(
        "{} is not installed (apt-get install -y victoria-metrics prometheus; .ci/run does it)",
        kind.binary()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

pub struct Engine {
    pub kind: Kind,
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Engine {
    /// Starts `kind` over `dir` (created) and waits until it answers.
    pub fn start(kind: Kind, dir: &Path) -> Engine {
        std::fs::create_dir_all(dir).unwrap();
        let mut e = Engine {
            kind,
            port: free_port(),
            dir: dir.to_path_buf(),
            child: None,
        };
        e.restart();
        e
    }

    /// The remote-write URL.
    pub fn write_url(&self) -> String {
        match self.kind {
            Kind::VictoriaMetrics => format!("http://127.0.0.1:{}/api/v1/write", self.port),
            Kind::Prometheus => format!("http://127.0.0.1:{}/api/v1/write", self.port),
        }
    }

    /// The Prometheus query API base (`/api/v1/...` is appended).
    pub fn query_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the engine again over the same directory and port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let listen = format!("127.0.0.1:{}", self.port);
        let mut cmd = Command::new(self.kind.binary());
        match self.kind {
            Kind::VictoriaMetrics => {
                cmd.arg(format!(
                    "-storageDataPath={}",
                    self.dir.join("vm").display()
                ))
                .arg(format!("-httpListenAddr={listen}"))
                .arg("-retentionPeriod=100y")
                // Answer with what was just written: no response cache
                // and no 30 s "latency offset" hiding the newest points.
                .arg("-search.disableCache")
                .arg("-search.latencyOffset=0s");
            }
            Kind::Prometheus => {
                let config = self.dir.join("prometheus.yml");
                std::fs::write(&config, "global: {}\n").unwrap();
                cmd.arg(format!("--config.file={}", config.display()))
                    .arg(format!(
                        "--storage.tsdb.path={}",
                        self.dir.join("prom").display()
                    ))
                    .arg(format!("--web.listen-address={listen}"))
                    .arg("--web.enable-remote-write-receiver")
                    .arg("--storage.tsdb.retention.time=100y");
            }
        }
        let log = std::fs::File::create(self.dir.join(format!("{:?}.log", self.kind))).unwrap();
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        self.child = Some(cmd.spawn().expect("start the engine"));
        let ready = match self.kind {
            Kind::VictoriaMetrics => "/health",
            Kind::Prometheus => "/-/ready",
        };
        let started = Instant::now();
        loop {
            if let Ok(s) = http_get(self.port, ready)
                && s.0 == 200
            {
                return;
            }
            if started.elapsed() > Duration::from_secs(30) {
                panic!(
                    "{:?} did not answer {ready} within 30 s; its log: {}",
                    self.kind,
                    std::fs::read_to_string(self.dir.join(format!("{:?}.log", self.kind)))
                        .unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the engine (SIGTERM, so it keeps what it acknowledged; an
    /// engine killed with SIGKILL may lose its last second of writes) and
    /// waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let started = Instant::now();
            while c.try_wait().ok().flatten().is_none() {
                if started.elapsed() > Duration::from_secs(30) {
                    let _ = c.kill();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Kills the engine (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `GET /api/v1/...` with the query parameters given; the JSON answer.
    pub fn api(&self, path: &str, params: &[(&str, String)]) -> Value {
        let mut url =
            reqwest::Url::parse(&format!("http://127.0.0.1:{}{path}", self.port)).unwrap();
        for (k, v) in params {
            url.query_pairs_mut().append_pair(k, v);
        }
        let q = url.query().map(|q| format!("?{q}")).unwrap_or_default();
        let (status, body) = http_get(self.port, &format!("{}{q}", url.path())).unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Every raw sample of the series named `metric` (any labels), by
    /// `resource_id`: `(ms, value)` in time order.
    pub fn raw_samples(
        &self,
        metric: &str,
        lookback: &str,
    ) -> std::collections::BTreeMap<String, Vec<(i64, f64)>> {
        if self.kind == Kind::VictoriaMetrics {
            // Makes what was just ingested searchable now, not in a second.
            let _ = http_get(self.port, "/internal/force_flush");
        }
        let now = (pulse_metrics::model::now_ms() / 1000 + 60).to_string();
        let v = self.api(
            "/api/v1/query",
            &[("query", format!("{metric}[{lookback}]")), ("time", now)],
        );
        let mut out = std::collections::BTreeMap::new();
        for series in v["data"]["result"].as_array().unwrap() {
            let id = series["metric"]["resource_id"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let samples: Vec<(i64, f64)> = series["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    let t = s[0].as_f64().unwrap();
                    let v: f64 = s[1].as_str().unwrap().parse().unwrap();
                    ((t * 1000.0).round() as i64, v)
                })
                .collect();
            out.insert(id, samples);
        }
        out
    }
}

/// Waits (up to 20 s) until `engine` holds exactly `want` for `metric`
/// (a sample stored twice counts once), else fails naming the first
/// difference.
pub fn assert_holds(
    engine: &Engine,
    metric: &str,
    want: &std::collections::BTreeMap<String, Vec<(i64, f64)>>,
) {
    let started = Instant::now();
    loop {
        let mut got = engine.raw_samples(metric, "3h");
        // At least once: a resent sample may be stored twice (with the
        // same value: a different one would still show).
        for samples in got.values_mut() {
            samples.dedup();
        }
        if &got == want {
            return;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let total = |m: &std::collections::BTreeMap<String, Vec<(i64, f64)>>| {
                m.values().map(Vec::len).sum::<usize>()
            };
            let first = want.iter().find_map(|(id, w)| {
                let g = got.get(id).cloned().unwrap_or_default();
                let i = w
                    .iter()
                    .zip(&g)
                    .position(|(a, b)| a != b)
                    .unwrap_or(w.len().min(g.len()));
                (g != *w).then(|| {
                    format!(
                        "{id}: want {:?}, got {:?} at index {i} (want {} got {} samples)",
                        w.get(i),
                        g.get(i),
                        w.len(),
                        g.len()
                    )
                })
            });
            panic!(
                "{:?}: {} series / {} samples, want {} / {}; first difference: {first:?}",
                engine.kind,
                got.len(),
                total(&got),
                want.len(),
                total(want)
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A plain HTTP/1.0 GET on 127.0.0.1 (no client library state shared with
/// the code under test): status and body.
pub fn http_get(port: u16, path_and_query: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET {path_and_query} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nAccept-Encoding: identity\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

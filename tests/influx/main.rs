//! The line protocol push (`/write`, `/api/v2/write`, UDP) as its clients
//! use it: Proxmox VE's own payloads (built by `pve_influx.pl` the way
//! pve-manager builds them), real InfluxDB clients (Python
//! `influxdb-client`, curl), and every rule of the protocol.

#![recursion_limit = "256"]

#[path = "../common/mod.rs"]
mod common;

mod clients;
mod poller;
mod protocol;
mod proxmox;

use common::{client, test_config};
use pulse_metrics::config::Config;
use pulse_metrics::server::{self, App};
use pulse_metrics::{SeriesFilter, Store, TimeRange};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

pub const TOKEN: &str = "s3cret-token";

/// A running service, with its App (for the UDP address).
pub struct Service {
    pub base: String,
    pub http: reqwest::Client,
    pub store: Store,
    pub app: App,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Service {
    pub async fn start(config: Config) -> Service {
        let metrics = config.metrics.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(metrics))
            .await
            .unwrap()
            .expect("store opens");
        let udp = !config.ingest.influx.udp.is_empty();
        let settings = pulse_metrics::config::SettingsFile::in_memory(config.clone());
        let app = App::new(store.clone(), config, settings);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(server::run(listener, app.clone(), async move {
            let _ = rx.await;
        }));
        if udp {
            for _ in 0..500 {
                if app.udp_addr().is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(app.udp_addr().is_some(), "the UDP listener started");
        }
        Service {
            base: format!("http://{addr}"),
            http: fresh_connections(),
            store,
            app,
            stop: Some(tx),
            handle: Some(handle),
        }
    }

    /// With `server.api_token` set to [`TOKEN`].
    pub async fn with_token(dir: &Path) -> Service {
        let mut c = test_config(dir);
        c.server.api_token = TOKEN.into();
        Service::start(c).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn udp_addr(&self) -> SocketAddr {
        self.app.udp_addr().expect("UDP is configured")
    }

    /// POSTs `body` as line protocol (no content type, as Proxmox sends it).
    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, Value) {
        let mut req = self.http.post(self.url(path)).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.expect("POST");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().await.expect("GET");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Every stored point of the last 2 hours, by series.
    pub async fn points(&self) -> Stored {
        stored(&self.store).await
    }

    /// The status board entry `name`, as `/api/metrics-store/stats` shows it.
    pub async fn collector(&self, name: &str) -> Value {
        let mut req = self.http.get(self.url("/api/metrics-store/stats"));
        req = req.header("authorization", format!("Bearer {TOKEN}"));
        let stats: Value = req.send().await.unwrap().json().await.unwrap();
        stats["collectors"]
            .as_array()
            .unwrap_or_else(|| panic!("no collectors: {stats}"))
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no collector {name}: {stats}"))
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(10), h)
                .await
                .expect("server stops within 10 s")
                .expect("server task")
                .expect("server run returns Ok");
        }
    }
}

/// A client that opens a new connection per request: after a 413 the
/// service closes the connection it did not read to the end, and a pooled
/// client would send the next request into it.
fn fresh_connections() -> reqwest::Client {
    let _ = client();
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// Every point `store` holds for the last 2 hours, by series.
pub async fn stored(store: &Store) -> Stored {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        store.flush().unwrap();
        let now = pulse_metrics::model::now_ms();
        let many = store
            .query_many(
                &SeriesFilter::default(),
                TimeRange::last(Duration::from_secs(2 * 3600), now + 60_000),
                None,
            )
            .unwrap();
        Stored(
            many.series
                .into_iter()
                .map(|(k, pts)| {
                    (
                        (k.resource_type, k.resource_id, k.metric),
                        pts.into_iter().map(|p| (p.timestamp, p.value)).collect(),
                    )
                })
                .collect(),
        )
    })
    .await
    .unwrap()
}

/// Stored points: (type, id, metric) -> [(timestamp, value)].
#[derive(Debug)]
pub struct Stored(pub BTreeMap<(String, String, String), Vec<(i64, f64)>>);

impl Stored {
    pub fn get(&self, t: &str, id: &str, metric: &str) -> &[(i64, f64)] {
        self.0
            .get(&(t.to_string(), id.to_string(), metric.to_string()))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The single value of a series at `ts`.
    pub fn at(&self, t: &str, id: &str, metric: &str, ts: i64) -> Option<f64> {
        self.get(t, id, metric)
            .iter()
            .find(|(at, _)| *at == ts)
            .map(|(_, v)| *v)
    }

    /// Every (type, id, metric) stored.
    pub fn keys(&self) -> Vec<(&str, &str, &str)> {
        self.0
            .keys()
            .map(|(t, i, m)| (t.as_str(), i.as_str(), m.as_str()))
            .collect()
    }

    pub fn count(&self) -> usize {
        self.0.values().map(Vec::len).sum()
    }
}

pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// A tool a test needs that may be missing outside CI: under `$CI` its
/// absence fails the test, elsewhere the test is skipped loudly.
pub fn require(what: &str, present: bool, install: &str) -> bool {
    if present {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{what} is missing in CI; .ci/run installs it ({install})");
    }
    eprintln!();
    eprintln!("==================================================================");
    eprintln!("SKIP: {what} is missing ({install}); under CI this is a failure");
    eprintln!("==================================================================");
    eprintln!();
    false
}

/// Runs `pve_influx.pl` on `input`; one `{body, datagrams}` per transaction.
/// None (after `require`'s skip message) where perl is missing outside CI.
pub fn pve_payloads(input: &Value) -> Option<Vec<Value>> {
    let perl = Command::new("perl")
        .args(["-MJSON::PP", "-MScalar::Util", "-MPOSIX", "-e", "1"])
        .status()
        .is_ok_and(|s| s.success());
    if !require("perl with JSON::PP", perl, "apt-get install perl") {
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/influx/pve_influx.pl");
    let mut child = Command::new("perl")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("perl runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "pve_influx.pl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("pve_influx.pl prints JSON"))
}

//! Helpers shared by the service's integration tests: a server on
//! `127.0.0.1:0` over a temporary database, and a plain-HTTP client.
#![allow(dead_code)]

pub mod stats;

use pulse_metrics::config::{Config, SettingsFile};
use pulse_metrics::model::now_ms;
use pulse_metrics::server::{self, App};
use pulse_metrics::{MetricsConfig, Store};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration over `dir` with the host collector off, so every series
/// in the store is one the test wrote.
pub fn test_config(dir: &Path) -> Config {
    let mut c = Config {
        metrics: MetricsConfig {
            database_path: dir.join("metrics.db"),
            ..MetricsConfig::default()
        },
        ..Config::default()
    };
    c.server.listen = "127.0.0.1:0".into();
    c.collectors.host.enabled = false;
    c
}

pub fn client() -> reqwest::Client {
    // reqwest is built with `rustls-no-provider`: even a plain-http client
    // needs a process-wide provider installed (a second install is a no-op).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// A running service.
pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    pub store: Store,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    pub async fn start(config: Config) -> TestServer {
        TestServer::start_with_path(config, None).await
    }

    /// A service started from `config_path` (when given), keeping settings
    /// changes in `settings.json` beside it, as `serve` keeps them in the
    /// data dir. Without a file they last until restart.
    pub async fn start_with_path(config: Config, config_path: Option<PathBuf>) -> TestServer {
        let metrics = config.metrics.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(metrics))
            .await
            .unwrap()
            .expect("store opens");
        let settings = match &config_path {
            Some(path) => SettingsFile::new(
                path.with_file_name("settings.json"),
                Some(path.clone()),
                config.clone(),
            ),
            None => SettingsFile::in_memory(config.clone()),
        };
        let app = App::new(store.clone(), config, settings);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(server::run(listener, app, async move {
            let _ = rx.await;
        }));
        TestServer {
            base: format!("http://{addr}"),
            client: client(),
            store,
            stop: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(self.url(path)).send().await.expect("GET");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, serde_json::to_vec(body).unwrap()).await
    }

    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn put_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .client
            .put(self.url(path))
            .json(body)
            .send()
            .await
            .expect("PUT");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Writes with `sync=true` and asserts the whole batch was accepted.
    pub async fn write_sync(&self, points: Value) {
        let n = points.as_array().map_or(0, Vec::len);
        let (status, body) = self
            .post_json(
                "/api/metrics-store/write?sync=true",
                &json!({ "points": points }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["accepted"], n, "{body}");
    }

    /// Graceful shutdown: everything flushed and the store closed.
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

pub fn point(t: &str, id: &str, metric: &str, value: f64, ts: i64) -> Value {
    json!({"resourceType": t, "resourceId": id, "metric": metric, "value": value, "timestamp": ts})
}

/// A timestamp `secs_ago` seconds before now, on a whole second.
pub fn ago(secs_ago: i64) -> i64 {
    (now_ms() / 1000 - secs_ago) * 1000
}

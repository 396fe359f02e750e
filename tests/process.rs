//! The service as a process: `kill -9` after `sync=true` writes loses none
//! of them, SIGTERM flushes unsynced points and exits 0, a restart keeps
//! history.
//!
//! Each scenario runs twice:
//! - `*_child`: the process is this test binary re-run as `child_serve`,
//!   which calls `server::serve` exactly as the CLI does. Runs today.
//! - `*_binary`: the real `pulse-metrics --db PATH serve --listen
//!   127.0.0.1:0`.

mod common;

use common::{ago, client, point};
use pulse_metrics::config::Config;
use pulse_metrics::server::{ServeOptions, serve};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_DB_ENV: &str = "PULSE_METRICS_TEST_CHILD_DB";

/// Not a test: the service process the tests below start by re-running
/// this binary. Does nothing unless started that way.
#[test]
#[ignore = "helper process for the *_child tests"]
fn child_serve() {
    let Ok(db) = std::env::var(CHILD_DB_ENV) else {
        return;
    };
    let mut config = Config::default();
    config.metrics.database_path = PathBuf::from(db);
    config.server.listen = "127.0.0.1:0".into();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(serve(ServeOptions {
        settings: pulse_metrics::config::SettingsFile::in_memory(config.clone()),
        config,
    }))
    .expect("serve returns Ok after SIGTERM");
}

#[derive(Clone, Copy, Debug)]
enum Launcher {
    /// This test binary running `child_serve`.
    Child,
    /// The `pulse-metrics` binary.
    Binary,
}

struct Proc {
    child: Child,
    base: String,
}

impl Proc {
    fn start(launcher: Launcher, db: &Path) -> Proc {
        let mut cmd = match launcher {
            Launcher::Child => {
                let mut c = Command::new(std::env::current_exe().unwrap());
                c.args(["child_serve", "--exact", "--ignored", "--nocapture"])
                    .env(CHILD_DB_ENV, db);
                c
            }
            Launcher::Binary => {
                let mut c = Command::new(env!("CARGO_BIN_EXE_pulse-metrics"));
                c.arg("--db")
                    .arg(db)
                    .args(["serve", "--listen", "127.0.0.1:0"]);
                c
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env_remove("PULSE_METRICS_CONFIG");
        let mut child = cmd.spawn().expect("start the service");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the `listening on` line, then keeps draining stderr so the
        // child never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(i) = line.find("listening on http://")
                    && let Some(tx) = tx.take()
                {
                    let addr = line[i + "listening on ".len()..].trim().to_string();
                    let _ = tx.send(addr);
                }
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(base) => base,
            Err(_) => {
                let _ = child.kill();
                panic!("{launcher:?}: no `listening on` line within 60 s");
            }
        };
        Proc { child, base }
    }

    fn kill9(mut self) {
        // std's Child::kill sends SIGKILL on Unix.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then the exit status and how long the exit took.
    fn terminate(mut self) -> (std::process::ExitStatus, Duration) {
        let started = Instant::now();
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            if started.elapsed() > Duration::from_secs(20) {
                let _ = self.child.kill();
                panic!("no exit within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn post(base: &str, path: &str, body: &Value) -> (u16, Value) {
    let r = client()
        .post(format!("{base}{path}"))
        .json(body)
        .send()
        .await
        .expect("POST");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn values(base: &str, id: &str) -> Vec<f64> {
    let r = client()
        .get(format!(
            "{base}/api/metrics-store/history?resourceType=vm&resourceId={id}&metric=cpu&range=2h"
        ))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200);
    let h: Value = r.json().await.unwrap();
    h["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["value"].as_f64().unwrap())
        .collect()
}

async fn kill9_after_sync_loses_nothing(launcher: Launcher) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("metrics.db");
    let p = Proc::start(launcher, &db);
    let base = ago(1200);
    // 10 series x 300 seconds, in 6 acknowledged batches of 500.
    let all: Vec<Value> = (0..3000)
        .map(|i| {
            point(
                "vm",
                &format!("k{}", i % 10),
                "cpu",
                (i / 10) as f64,
                base + (i / 10) * 1000,
            )
        })
        .collect();
    for batch in all.chunks(500) {
        let (st, b) = post(
            &p.base,
            "/api/metrics-store/write?sync=true",
            &json!({ "points": batch }),
        )
        .await;
        assert_eq!((st, &b), (200, &json!({"accepted": 500})));
    }
    p.kill9();

    let p = Proc::start(launcher, &db);
    let want: Vec<f64> = (0..300).map(f64::from).collect();
    for k in 0..10 {
        assert_eq!(values(&p.base, &format!("k{k}")).await, want, "series k{k}");
    }
    let (status, took) = p.terminate();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(5), "exit took {took:?}");
}

async fn sigterm_flushes_and_exits_zero(launcher: Launcher) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("metrics.db");
    let p = Proc::start(launcher, &db);
    let t = ago(300);
    let points: Vec<Value> = (0..50)
        .map(|i| point("vm", "t1", "cpu", i as f64, t + i * 1000))
        .collect();
    // No sync: only the shutdown flush makes these durable.
    let (st, b) = post(
        &p.base,
        "/api/metrics-store/write",
        &json!({ "points": points }),
    )
    .await;
    assert_eq!((st, &b), (200, &json!({"accepted": 50})));
    let (status, took) = p.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(5), "exit took {took:?}");
    // The WAL was checkpointed into the main file.
    let wal = dir.path().join("metrics.db-wal");
    let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(wal_len, 0, "WAL not truncated at shutdown");

    let p = Proc::start(launcher, &db);
    let want: Vec<f64> = (0..50).map(f64::from).collect();
    assert_eq!(values(&p.base, "t1").await, want);
    let (status, _) = p.terminate();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_after_sync_loses_nothing_child() {
    kill9_after_sync_loses_nothing(Launcher::Child).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_and_exits_zero_child() {
    sigterm_flushes_and_exits_zero(Launcher::Child).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_after_sync_loses_nothing_binary() {
    kill9_after_sync_loses_nothing(Launcher::Binary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_and_exits_zero_binary() {
    sigterm_flushes_and_exits_zero(Launcher::Binary).await;
}

//! `export.remote_write` against real engines (tests/engines): every point
//! arrives with its value, an engine down for 60 s loses nothing, a
//! `kill -9` of pulse-metrics mid-send loses nothing, a 4xx is counted and
//! skipped, and the health shows it all.

mod common;
mod engines;

use common::{TestServer, ago, point, test_config};
use engines::{Engine, Kind};
use pulse_metrics::config::{Config, RemoteWriteTarget};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn target(engine: &Engine) -> RemoteWriteTarget {
    RemoteWriteTarget {
        name: "engine".into(),
        url: engine.write_url(),
        timeout: Duration::from_secs(5),
        ..RemoteWriteTarget::default()
    }
}

fn config_for(dir: &std::path::Path, engine: &Engine) -> Config {
    let mut c = test_config(dir);
    c.export.remote_write = vec![target(engine)];
    c
}

/// The one target's health from the stats.
async fn health(s: &TestServer) -> Value {
    let (status, stats) = s.get("/api/metrics-store/stats").await;
    assert_eq!(status, 200);
    stats["remoteWrite"][0].clone()
}

/// Waits until the target has acknowledged everything written.
async fn caught_up(s: &TestServer, within: Duration) -> Value {
    let started = Instant::now();
    loop {
        let store = s.store.clone();
        tokio::task::spawn_blocking(move || store.flush())
            .await
            .unwrap()
            .unwrap();
        let h = health(s).await;
        let last = s.store.journal_tail(None).unwrap();
        drop(last);
        if h["backlogPoints"] == 0 && h["sentPoints"].as_u64().unwrap_or(0) > 0 {
            // The backlog figure is refreshed every few seconds: check the
            // journal itself.
            let store = s.store.clone();
            let cursor = h["cursor"].as_u64().unwrap();
            let unread = tokio::task::spawn_blocking(move || {
                store.journal_tail(Some(cursor)).unwrap().unread().unwrap()
            })
            .await
            .unwrap();
            if unread.batches == 0 {
                return h;
            }
        }
        assert!(
            started.elapsed() < within,
            "not caught up within {within:?}: {h}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Points with values every engine stores exactly (VictoriaMetrics keeps
/// values as decimals of up to 15 significant digits), one per series and
/// second.
/// Per `resource_id`, `(ms, value)` samples in time order.
type Samples = BTreeMap<String, Vec<(i64, f64)>>;

fn points(series: usize, from: i64, n: usize) -> (Vec<Value>, Samples) {
    let mut out = Vec::new();
    let mut want: Samples = BTreeMap::new();
    for i in 0..n {
        for s in 0..series {
            let id = format!("pve1:{}", 100 + s);
            let ts = from + i as i64 * 1000;
            let value = (i * 37 + s * 11) as f64 * 0.125 + 0.5;
            out.push(point("vm", &id, "cpu", value, ts));
            want.entry(id).or_default().push((ts, value));
        }
    }
    (out, want)
}

async fn every_point_arrives(kind: Kind) {
    if !engines::available(kind) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::start(kind, &dir.path().join("engine"));
    let s = TestServer::start(config_for(dir.path(), &engine)).await;
    let (pts, want) = points(20, ago(600), 300);
    for chunk in pts.chunks(1000) {
        s.write_sync(Value::Array(chunk.to_vec())).await;
    }
    let (status, _) = s
        .post_json(
            "/api/metrics-store/write",
            &json!({"resources": [{"resourceType": "vm", "resourceId": "pve1:100", "name": "web01", "node": "pve2"}]}),
        )
        .await;
    assert_eq!(status, 200);
    let h = caught_up(&s, Duration::from_secs(60)).await;
    assert_eq!(h["sentPoints"], 6000, "{h}");
    assert_eq!(h["failedPoints"], 0, "{h}");
    assert_eq!(h["state"], "ok", "{h}");
    engines::assert_holds(&engine, "pulse_cpu", &want);
    // The metadata rides in the info series, not on the points.
    let started = Instant::now();
    loop {
        let v = engine.api(
            "/api/v1/query",
            &[("query", "pulse_resource_info".to_string())],
        );
        let r = &v["data"]["result"];
        if let Some(first) = r.get(0) {
            assert_eq!(first["metric"]["name"], "web01", "{v}");
            assert_eq!(first["metric"]["node"], "pve2", "{v}");
            assert_eq!(first["metric"]["resource_id"], "pve1:100", "{v}");
            assert_eq!(first["value"][1], "1");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no info series: {v}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // /metrics says the same.
    let text = s
        .client
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("pulse_metrics_remote_write_sent_points_total{target=\"engine\"} 6000"),
        "{text}"
    );
    assert!(text.contains("pulse_metrics_remote_write_backlog_points{target=\"engine\"} 0"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_point_reaches_victoriametrics_with_its_value() {
    every_point_arrives(Kind::VictoriaMetrics).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_point_reaches_prometheus_with_its_value() {
    every_point_arrives(Kind::Prometheus).await;
}

/// Prometheus refuses a sample older than the newest of its series (out of
/// order): a 400, counted and skipped, and what follows is still sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_request_is_counted_and_skipped() {
    if !engines::available(Kind::Prometheus) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::start(Kind::Prometheus, &dir.path().join("engine"));
    let s = TestServer::start(config_for(dir.path(), &engine)).await;
    let ago_ts1 = ago(10);
    s.write_sync(json!([point("vm", "pve1:100", "cpu", 1.0, ago_ts1)]))
        .await;
    caught_up(&s, Duration::from_secs(30)).await;
    s.write_sync(json!([point("vm", "pve1:100", "cpu", 2.0, ago(300))]))
        .await;
    let started = Instant::now();
    let h = loop {
        let h = health(&s).await;
        if h["failedPoints"] == 1 {
            break h;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not refused: {h}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(h["lastError"].as_str().unwrap().contains("HTTP 400"), "{h}");
    assert_eq!(h["retries"], 0, "a 4xx is not retried: {h}");
    let ago_ts3 = ago(1);
    s.write_sync(json!([point("vm", "pve1:100", "cpu", 3.0, ago_ts3)]))
        .await;
    let h = caught_up(&s, Duration::from_secs(30)).await;
    assert_eq!(h["sentPoints"], 2, "{h}");
    let want = [("pve1:100".to_string(), vec![(ago_ts1, 1.0), (ago_ts3, 3.0)])]
        .into_iter()
        .collect();
    engines::assert_holds(&engine, "pulse_cpu", &want);
    s.stop().await;
}

/// The engine is stopped for 60 s while points keep coming; nothing is lost,
/// and the health says the target is retrying with a growing backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_engine_down_for_a_minute_loses_nothing() {
    if !engines::available(Kind::VictoriaMetrics) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut engine = Engine::start(Kind::VictoriaMetrics, &dir.path().join("engine"));
    let s = TestServer::start(config_for(dir.path(), &engine)).await;
    let start = ago(120);
    let mut want: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    let mut i = 0i64;
    let mut write = async |i: &mut i64, s: &TestServer| {
        let ts = start + *i * 1000;
        let mut batch = Vec::new();
        for sid in 0..10 {
            let id = format!("pve1:{}", 100 + sid);
            let v = (*i * 10 + sid) as f64 * 0.5;
            batch.push(point("vm", &id, "cpu", v, ts));
            want.entry(id).or_default().push((ts, v));
        }
        s.write_sync(Value::Array(batch)).await;
        *i += 1;
    };
    for _ in 0..20 {
        write(&mut i, &s).await;
    }
    caught_up(&s, Duration::from_secs(30)).await;
    engine.stop();
    let down = Instant::now();
    let mut seen_retrying = Value::Null;
    while down.elapsed() < Duration::from_secs(60) {
        write(&mut i, &s).await;
        let h = health(&s).await;
        if h["state"] == "retrying" && h["backlogPoints"].as_u64().unwrap_or(0) > 0 {
            seen_retrying = h;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        seen_retrying.is_object(),
        "the health showed a retrying target with a backlog"
    );
    assert!(
        seen_retrying["lastError"]
            .as_str()
            .unwrap()
            .contains("connect"),
        "{seen_retrying}"
    );
    assert!(
        seen_retrying["backlogSeconds"].as_f64().unwrap() > 0.0,
        "{seen_retrying}"
    );
    engine.restart();
    for _ in 0..5 {
        write(&mut i, &s).await;
    }
    let h = caught_up(&s, Duration::from_secs(120)).await;
    assert_eq!(h["state"], "ok", "{h}");
    assert_eq!(h["skippedBatches"], 0, "{h}");
    engines::assert_holds(&engine, "pulse_cpu", &want);
    s.stop().await;
}

/// The real binary, started over a config file; its base URL.
struct Service {
    child: std::process::Child,
    base: String,
}

impl Service {
    fn start(config: &std::path::Path) -> Service {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pulse-metrics"))
            .arg("--config")
            .arg(config)
            .arg("serve")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start pulse-metrics");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(i) = line.find("listening on http://")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(line[i + "listening on ".len()..].trim().to_string());
                }
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("a `listening on` line");
        Service { child, base }
    }

    async fn health(&self) -> Value {
        let r = common::client()
            .get(format!("{}/api/metrics-store/stats", self.base))
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        v["remoteWrite"][0].clone()
    }

    async fn write(&self, points: &[Value]) {
        let r = common::client()
            .post(format!("{}/api/metrics-store/write?sync=true", self.base))
            .json(&json!({ "points": points }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kill -9` of pulse-metrics while it sends, then a restart: the target
/// resumes from the cursor saved in the raw journal (not from the start)
/// and every point is in the engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_9_mid_send_loses_nothing() {
    if !engines::available(Kind::VictoriaMetrics) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::start(Kind::VictoriaMetrics, &dir.path().join("engine"));
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "metrics:\n  database_path: {}\nserver:\n  listen: 127.0.0.1:0\ncollectors:\n  host:\n    enabled: false\nexport:\n  remote_write:\n    - name: vm\n      url: {}\n      batch_size: 100\n",
            dir.path().join("metrics.db").display(),
            engine.write_url()
        ),
    )
    .unwrap();
    let (first, mut want) = points(30, ago(1800), 200);
    let (second, want2) = points(30, ago(1500), 600);
    for (id, v) in want2 {
        want.entry(id).or_default().extend(v);
    }
    let svc = Service::start(&config);
    for c in first.chunks(2000) {
        svc.write(c).await;
    }
    let started = Instant::now();
    while svc.health().await["sentPoints"] != 6000 {
        assert!(started.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The cursor is saved at most every 10 s.
    tokio::time::sleep(pulse_metrics::remote::sender::SAVE_EVERY + Duration::from_secs(2)).await;
    for c in second.chunks(6000) {
        svc.write(c).await;
    }
    let mut svc = svc;
    let started = Instant::now();
    loop {
        let sent = svc.health().await["sentPoints"].as_u64().unwrap();
        if sent > 6000 {
            assert!(sent < 24_000, "still sending when killed: {sent}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    svc.child.kill().unwrap();
    svc.child.wait().unwrap();
    drop(svc);
    let svc = Service::start(&config);
    let started = Instant::now();
    let h = loop {
        let h = svc.health().await;
        if h["backlogPoints"] == 0
            && h["cursor"].as_u64().unwrap_or(0) > 0
            && h["sentPoints"].as_u64().unwrap_or(0) > 0
        {
            break h;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{h}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let resent = h["sentPoints"].as_u64().unwrap();
    assert!(
        resent <= 18_000,
        "resumed from the saved cursor, not from the start: {resent} points sent after the restart"
    );
    engines::assert_holds(&engine, "pulse_cpu", &want);
}

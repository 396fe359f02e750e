//! What the web UI relies on from the service: compressed answers, chart
//! values rounded to what a chart shows, `buckets` (each series' segments
//! and newest point), late points folded within a flush interval, and quiet
//! request logs.

mod common;

use common::{TestServer, ago, point, test_config};
use serde_json::{Value, json};
use std::io::Read;
use std::time::Duration;

/// GET with `Accept-Encoding`, answering the status, the encoding and the
/// raw (still compressed) bytes.
async fn get_encoded(s: &TestServer, path: &str, accept: &str) -> (u16, String, Vec<u8>) {
    let r = s
        .client
        .get(s.url(path))
        .header("accept-encoding", accept)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let encoding = r
        .headers()
        .get("content-encoding")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, encoding, r.bytes().await.unwrap().to_vec())
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn unbrotli(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::Decompressor::new(bytes, 4096)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// 40 VMs x 3 metrics, a point every 10 s for the last hour, with values
/// that carry float noise.
async fn seeded() -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(test_config(dir.path())).await;
    let mut points = Vec::new();
    for vm in 0..40 {
        for metric in ["cpu", "memory", "disk"] {
            for i in 0..360 {
                let v = 30.0 + (i as f64 * 0.1 + vm as f64) / 3.0;
                points.push(point(
                    "vm",
                    &format!("pve1:n1:{vm}"),
                    metric,
                    v,
                    ago(i * 10),
                ));
            }
        }
    }
    for chunk in points.chunks(10_000) {
        s.write_sync(json!(chunk)).await;
    }
    (dir, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_compressed_when_the_client_asks() {
    let (_dir, s) = seeded().await;
    let path = "/api/charts?range=1h&maxPoints=120";
    let (st, enc, plain) = get_encoded(&s, path, "identity").await;
    assert_eq!((st, enc.as_str()), (200, ""));
    let (st, enc, gz) = get_encoded(&s, path, "gzip").await;
    assert_eq!((st, enc.as_str()), (200, "gzip"));
    let (st, enc, br) = get_encoded(&s, path, "gzip, deflate, br").await;
    assert_eq!((st, enc.as_str()), (200, "br"));
    // The same answer (a moment later), several times smaller.
    let shape = |v: &Value| -> Vec<(String, usize)> {
        v["data"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(id, m)| {
                m.as_object()
                    .unwrap()
                    .iter()
                    .map(move |(k, p)| (format!("{id}/{k}"), p.as_array().unwrap().len() / 10))
            })
            .collect()
    };
    let a: Value = serde_json::from_slice(&plain).unwrap();
    let b: Value = serde_json::from_slice(&gunzip(&gz)).unwrap();
    let c: Value = serde_json::from_slice(&unbrotli(&br)).unwrap();
    assert_eq!(shape(&a).len(), 120);
    assert_eq!(shape(&a), shape(&b));
    assert_eq!(shape(&a), shape(&c));
    assert!(
        gz.len() * 4 < plain.len() && br.len() * 4 < plain.len(),
        "plain {} gzip {} br {}",
        plain.len(),
        gz.len(),
        br.len()
    );
    // The UI's files too.
    for ui in ["/", "/js/dashboard.js", "/css/app.css"] {
        let (st, enc, body) = get_encoded(&s, ui, "gzip").await;
        assert_eq!((st, enc.as_str()), (200, "gzip"), "{ui}");
        assert!(!gunzip(&body).is_empty());
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_values_are_rounded_and_history_stays_exact() {
    let (_dir, s) = seeded().await;
    let (_, charts) = s.get("/api/charts?range=1h&maxPoints=120").await;
    let mut seen = 0;
    for (_, metrics) in charts["data"].as_object().unwrap() {
        for (_, points) in metrics.as_object().unwrap() {
            for p in points.as_array().unwrap() {
                let v = p["value"].as_f64().unwrap();
                let digits = format!("{v:e}")
                    .split('e')
                    .next()
                    .unwrap()
                    .replace(['.', '-'], "")
                    .len();
                assert!(digits <= 4, "{v} has {digits} significant digits");
                seen += 1;
            }
        }
    }
    assert!(seen > 1000, "{seen} points");
    // The history endpoint keeps every digit of the same data.
    let (_, h) = s
        .get("/api/metrics-store/history?resourceType=vm&resourceId=pve1:n1:1&metric=cpu&range=1h")
        .await;
    let exact = h["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            let v = p["value"].as_f64().unwrap();
            format!("{v}")
                .replace(['.', '-'], "")
                .trim_start_matches('0')
                .len()
                > 4
        })
        .count();
    assert!(exact > 100, "history rounded: {h}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_give_each_series_segments_and_newest_point() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(test_config(dir.path())).await;
    // 3 days of points every 10 minutes, then the last hour every 10 s.
    let mut points = Vec::new();
    for i in 0..(3 * 144) {
        points.push(point(
            "node",
            "pve1:n1",
            "cpu",
            10.0,
            ago(3 * 86_400 - i * 600),
        ));
    }
    let mut newest_written = 0;
    for i in 0..360 {
        newest_written = ago(3600 - i * 10);
        points.push(point("node", "pve1:n1", "cpu", 10.0, newest_written));
    }
    s.write_sync(json!(points)).await;
    let (st, _) = s
        .post_json("/api/metrics-store/maintenance", &json!({}))
        .await;
    assert_eq!(st, 200);
    let (_, c) = s.get("/api/charts?range=7d&maxPoints=50").await;
    let b = &c["buckets"]["node"]["pve1:n1"]["cpu"];
    let newest = c["nodeData"]["pve1:n1"]["cpu"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()["timestamp"]
        .as_i64()
        .unwrap();
    let last = b["last"].as_i64().unwrap();
    // The newest point itself, or, once its minute is rolled up, the
    // minute bucket holding it: never the 7d answer's coarser bucket.
    let minute_of_newest = newest_written - newest_written.rem_euclid(60_000);
    assert!(
        last > newest && (last == newest_written || last == minute_of_newest),
        "last {last} is the newest point's time ({newest_written}) or its minute's, not its bucket's {newest}"
    );
    let segments = b["segments"].as_array().unwrap();
    assert_eq!(segments[0]["tier"], "hourly", "{b}");
    // 7 d in 50 points: 3.36 h buckets.
    assert!(
        segments.iter().all(|s| s["width"] == 12_096_000),
        "{segments:?}"
    );
    // The detail chart asks history for the same.
    let (_, h) = s
        .get("/api/metrics-store/history?resourceType=node&resourceId=pve1:n1&metric=cpu&range=7d&maxPoints=500&segments=true")
        .await;
    let seg = h["segments"].as_array().unwrap();
    assert_eq!(seg[0]["tier"], "hourly", "{h}");
    assert_eq!(seg[0]["start"], h["points"][0]["timestamp"]);
    assert!(seg.iter().any(|s| s["tier"] != "hourly"), "{seg:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_batch_over_http_is_folded_within_a_flush_interval() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.metrics.flush_interval = Duration::from_secs(1);
    let s = TestServer::start(config).await;
    // The store's raw floor moves once a rollup has run.
    s.write_sync(json!([point("vm", "now", "cpu", 1.0, ago(5))]))
        .await;
    let (st, _) = s
        .post_json("/api/metrics-store/maintenance", &json!({}))
        .await;
    assert_eq!(st, 200);
    // 8 hours of a backfill, 3 to 11 hours old: older than the raw
    // retention (2 h), so late.
    let points: Vec<Value> = (0..2880)
        .map(|i| point("vm", "backfill", "cpu", 5.0, ago(11 * 3600 - i * 10)))
        .collect();
    s.write_sync(json!(points)).await;
    let started = std::time::Instant::now();
    loop {
        let (_, stats) = s.get("/api/metrics-store/stats").await;
        if stats["lateCount"] == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "late points still waiting after {:?}: {stats}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, h) = s
        .get("/api/metrics-store/history?resourceType=vm&resourceId=backfill&metric=cpu&range=24h")
        .await;
    let counted: u64 = h["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, 2880, "{h}");
    let (_, c) = s.get("/api/charts?range=24h&maxPoints=120").await;
    assert_eq!(c["stats"]["lateCount"], 0);
    s.stop().await;
}

/// Sends one bare HTTP/1.1 GET and answers the status line.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::Write;
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = c.read_to_string(&mut text);
    text.lines().next().unwrap_or_default().to_string()
}

#[test]
fn routine_requests_are_not_logged_and_the_start_says_where_data_is() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hist/m.db");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pulse-metrics"))
        .args([
            "--db",
            db.to_str().unwrap(),
            "serve",
            "--listen",
            "127.0.0.1:0",
        ])
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .env_remove("PULSE_METRICS_CONFIG")
        .env("PULSE_DATA_DIR", dir.path().join("data"))
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("a `listening on` line");
        lines.push(line.clone());
        if let Some(a) = line.strip_prefix("listening on http://") {
            break a.trim().to_string();
        }
    };
    let next = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let history = std::path::absolute(&db).unwrap();
    let settings = dir.path().join("data").join("settings.json");
    assert!(
        next.contains(&format!("history in {}", history.display()))
            && next.contains(&settings.display().to_string()),
        "{next}"
    );
    for _ in 0..5 {
        assert!(http_get(&addr, "/api/charts?range=1h&maxPoints=120").contains("200"));
        assert!(http_get(&addr, "/").contains("200"));
    }
    assert!(http_get(&addr, "/api/nope").contains("404"));
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(child.wait().unwrap().success());
    reader.join().unwrap();
    lines.extend(rx.try_iter());
    let text = lines.join("\n");
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("status=200") || l.contains("path=/api/charts")),
        "routine requests logged:\n{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("WARN") && l.contains("path=/api/nope") && l.contains("404")),
        "a refused request is a warning:\n{text}"
    );
}

//! The HTTP API as a client sees it: every endpoint's success and error
//! paths, against the service on 127.0.0.1:0 over a temporary database.

mod common;

use common::{TestServer, ago, point, test_config};
use pulse_metrics::model::now_ms;
use serde_json::{Value, json};
use std::time::Duration;

fn assert_error(status: u16, body: &Value, want: u16, needle: &str) {
    assert_eq!(status, want, "{body}");
    let msg = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error field: {body}"));
    assert!(
        msg.contains(needle),
        "error {msg:?} should mention {needle:?}"
    );
    assert!(body["details"].is_array(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_then_history_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(test_config(dir.path())).await;
    let t0 = ago(30);
    s.write_sync(json!([
        point("vm", "pve1:node1:101", "cpu", 10.5, t0),
        point("vm", "pve1:node1:101", "cpu", 20.5, t0 + 5000),
        point("vm", "pve1:node1:101", "memory", 55.0, t0),
    ]))
    .await;

    let (status, h) = s
        .get("/api/metrics-store/history?resourceType=vm&resourceId=pve1:node1:101&metric=cpu&range=1h")
        .await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["resourceType"], "vm");
    assert_eq!(h["resourceId"], "pve1:node1:101");
    assert_eq!(h["metric"], "cpu");
    assert_eq!(h["range"], "1h");
    assert_eq!(h["tier"], "raw");
    let end = h["end"].as_i64().unwrap();
    assert_eq!(end - h["start"].as_i64().unwrap(), 3_600_000);
    assert!((end - now_ms()).abs() < 10_000);
    let pts = h["points"].as_array().unwrap();
    assert_eq!(pts.len(), 2, "{h}");
    assert_eq!(
        pts[0],
        json!({"timestamp": t0, "value": 10.5, "min": 10.5, "max": 10.5, "count": 1})
    );
    assert_eq!(pts[1]["value"], 20.5);
    assert!(h.get("metrics").is_none());

    // Without a metric: every metric of the resource.
    let (status, h) = s
        .get("/api/metrics-store/history?resourceType=vm&resourceId=pve1:node1:101&range=2h")
        .await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["metric"], Value::Null);
    assert!(h.get("points").is_none());
    assert_eq!(h["metrics"]["cpu"].as_array().unwrap().len(), 2);
    assert_eq!(h["metrics"]["memory"][0]["value"], 55.0);

    // start/end, in ms and RFC 3339 (with an unescaped '+' offset).
    let q = format!(
        "/api/metrics-store/history?resourceType=vm&resourceId=pve1:node1:101&metric=cpu&start={}&end={}",
        t0 + 1000,
        t0 + 60_000
    );
    let (status, h) = s.get(&q).await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["range"], Value::Null);
    assert_eq!(h["start"], t0 + 1000);
    assert_eq!(h["points"].as_array().unwrap().len(), 1, "{h}");
    let (status, h) = s
        .get("/api/metrics-store/history?resourceType=vm&resourceId=x&metric=cpu&start=2024-01-01T00:00:00+01:00&end=2024-01-01T01:00:00Z")
        .await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["start"], 1_704_063_600_000i64);
    assert_eq!(h["points"], json!([]));

    // maxPoints merges consecutive points (count-weighted mean).
    let (status, h) = s
        .get("/api/metrics-store/history?resourceType=vm&resourceId=pve1:node1:101&metric=cpu&range=1h&maxPoints=1")
        .await;
    assert_eq!(status, 200, "{h}");
    let pts = h["points"].as_array().unwrap();
    assert_eq!(pts.len(), 1, "{h}");
    assert_eq!(pts[0]["value"], 15.5);
    assert_eq!(pts[0]["count"], 2);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_writes_are_refused_whole_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(test_config(dir.path())).await;
    let w = "/api/metrics-store/write";
    let ts = ago(10);

    let (st, b) = s.post_raw(w, b"{\"points\": [".to_vec()).await;
    assert_error(st, &b, 400, "malformed JSON");
    let (st, b) = s
        .post_raw(
            w,
            format!(r#"{{"points":[{{"resourceType":"vm","resourceId":"1","metric":"cpu","value":NaN,"timestamp":{ts}}}]}}"#)
                .into_bytes(),
        )
        .await;
    assert_error(st, &b, 400, "malformed JSON");
    let (st, b) = s.post_raw(w, Vec::new()).await;
    assert_error(st, &b, 400, "empty");
    let (st, b) = s.post_json(w, &json!([1, 2])).await;
    assert_error(st, &b, 400, "points");
    let (st, b) = s.post_json(w, &json!({"point": []})).await;
    assert_error(st, &b, 400, "points");
    let (st, b) = s.post_json(w, &json!({"points": {"a": 1}})).await;
    assert_error(st, &b, 400, "array");

    // One good point, then bad ones: each bad index named, nothing stored.
    let batch = json!({"points": [
        point("vm", "101", "cpu", 1.0, ts),
        {"resourceType": "vm", "resourceId": "101", "metric": "cpu", "value": "NaN", "timestamp": ts},
        point("vm", "", "cpu", 1.0, ts),
        point("vm", "101", "", 1.0, ts),
        {"resourceType": "vm", "resourceId": "101", "metric": "cpu", "value": 1.0},
        point("vm", "101", "cpu", 1.0, -5),
        "not a point",
    ]});
    let (st, b) = s.post_json(w, &batch).await;
    assert_error(st, &b, 400, "6 invalid");
    let details = b["details"].as_array().unwrap();
    let indexes: Vec<i64> = details
        .iter()
        .map(|d| d["index"].as_i64().unwrap())
        .collect();
    assert_eq!(indexes, vec![1, 2, 3, 4, 5, 6], "{b}");
    assert!(details[0]["error"].as_str().unwrap().contains("value"));
    assert!(details[1]["error"].as_str().unwrap().contains("resourceId"));
    assert!(details[2]["error"].as_str().unwrap().contains("metric"));
    assert!(details[3]["error"].as_str().unwrap().contains("timestamp"));
    let (_, series) = s.get("/api/metrics-store/series").await;
    assert_eq!(
        series["series"],
        json!([]),
        "a refused batch stored something"
    );

    // Only JSON is JSON: a text/plain body (what a cross-site form can
    // send) is refused before it is read, and nothing is stored.
    let r = s
        .client
        .post(s.url("/api/metrics-store/write?sync=true"))
        .header("content-type", "text/plain")
        .body(json!({"points": [point("vm", "101", "cpu", 3.0, ts)]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let b = r.json::<Value>().await.unwrap();
    assert!(
        b["error"].as_str().unwrap().contains("application/json"),
        "{b}"
    );
    let (_, series) = s.get("/api/metrics-store/series").await;
    assert_eq!(
        series["series"],
        json!([]),
        "a refused body stored something"
    );
    let r = s
        .client
        .post(s.url("/api/metrics-store/write?sync=true"))
        .header("content-type", "application/json; charset=utf-8")
        .body(json!({"points": [point("vm", "101", "cpu", 3.0, ts)]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"accepted": 1}));
    let (st, b) = s
        .post_json(&format!("{w}?sync=maybe"), &json!({"points": []}))
        .await;
    assert_error(st, &b, 400, "sync");
    let (st, b) = s.post_json(w, &json!({"points": []})).await;
    assert_eq!((st, b), (200, json!({"accepted": 0})));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_is_413_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(test_config(dir.path())).await;
    let one = point("vm", "101", "cpu", 1.0, ago(5)).to_string();
    let mut body = String::from("{\"points\":[");
    while body.len() <= 8 * 1024 * 1024 {
        body.push_str(&one);
        body.push(',');
    }
    body.push_str(&one);
    body.push_str("]}");
    let (st, b) = s
        .post_raw("/api/metrics-store/write", body.into_bytes())
        .await;
    assert_error(st, &b, 413, "8 MiB");
    let (_, series) = s.get("/api/metrics-store/series").await;
    assert_eq!(series["series"], json!([]));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_refuses_bad_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(test_config(dir.path())).await;
    let h = "/api/metrics-store/history";
    for (query, needle) in [
        ("resourceId=1&range=1h", "resourceType"),
        ("resourceType=vm&range=1h", "resourceId"),
        ("resourceType=vm&resourceId=&range=1h", "resourceId"),
        ("resourceType=v%20m&resourceId=1&range=1h", "resourceType"),
        ("resourceType=vm&resourceId=1&metric=&range=1h", "metric"),
        ("resourceType=vm&resourceId=1", "range"),
        ("resourceType=vm&resourceId=1&range=soon", "range"),
        ("resourceType=vm&resourceId=1&range=5", "range"),
        ("resourceType=vm&resourceId=1&range=0s", "range"),
        ("resourceType=vm&resourceId=1&start=2000&end=1000", "after"),
        ("resourceType=vm&resourceId=1&start=1000", "end"),
        ("resourceType=vm&resourceId=1&end=1000", "start"),
        (
            "resourceType=vm&resourceId=1&start=yesterday&end=1000",
            "start",
        ),
        (
            "resourceType=vm&resourceId=1&range=1h&start=1&end=2",
            "either",
        ),
        (
            "resourceType=vm&resourceId=1&range=1h&maxPoints=0",
            "maxPoints",
        ),
        (
            "resourceType=vm&resourceId=1&range=1h&maxPoints=-3",
            "maxPoints",
        ),
        (
            "resourceType=vm&resourceId=1&range=1h&maxPoints=lots",
            "maxPoints",
        ),
    ] {
        let (st, b) = s.get(&format!("{h}?{query}")).await;
        assert_eq!(st, 400, "{query}: {b}");
        let msg = b["error"].as_str().unwrap();
        assert!(
            msg.contains(needle),
            "{query}: {msg:?} should name {needle}"
        );
    }
    // Any duration works for history, not only the chart ranges.
    let (st, b) = s
        .get(&format!("{h}?resourceType=vm&resourceId=1&range=48h"))
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["tier"], "hourly");
    assert_eq!(b["metrics"], json!({}));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charts_have_pulses_shape() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(test_config(dir.path())).await;
    let t = ago(60);
    s.write_sync(json!([
        point("vm", "pve1:node1:101", "cpu", 11.0, t),
        point("vm", "pve1:node1:101", "cpu", 12.0, t + 5000),
        point("container", "pve1:node1:102", "memory", 40.0, t),
        point("node", "pve1:node1", "cpu", 5.0, t),
        point("storage", "pve1:node1:local", "disk", 70.0, t),
        point("dockerContainer", "abc123", "cpu", 1.0, t),
        point("dockerHost", "dh1", "memory", 2.0, t),
        point("pbs", "backup1", "disk", 3.0, t),
    ]))
    .await;

    let (st, c) = s.get("/api/charts?range=1h").await;
    assert_eq!(st, 200, "{c}");
    assert_eq!(
        c["data"]["pve1:node1:101"]["cpu"],
        json!([{"timestamp": t, "value": 11.0}, {"timestamp": t + 5000, "value": 12.0}])
    );
    assert_eq!(c["data"]["pve1:node1:102"]["memory"][0]["value"], 40.0);
    assert_eq!(
        c["guestTypes"],
        json!({"pve1:node1:101": "vm", "pve1:node1:102": "container"})
    );
    assert_eq!(c["nodeData"]["pve1:node1"]["cpu"][0]["value"], 5.0);
    assert_eq!(
        c["storageData"]["pve1:node1:local"]["disk"][0]["value"],
        70.0
    );
    assert_eq!(c["dockerData"]["abc123"]["cpu"][0]["value"], 1.0);
    assert_eq!(c["dockerHostData"]["dh1"]["memory"][0]["value"], 2.0);
    assert_eq!(c["resources"]["pbs"]["backup1"]["disk"][0]["value"], 3.0);
    let ts = c["timestamp"].as_i64().unwrap();
    assert!((ts - now_ms()).abs() < 10_000);
    let stats = &c["stats"];
    assert_eq!(stats["range"], "1h");
    assert_eq!(stats["rangeSeconds"], 3600);
    assert_eq!(stats["tier"], "raw");
    assert_eq!(stats["pointCount"], 8);
    assert_eq!(stats["oldestDataTimestamp"], t);

    // Pulse's default when no range is given.
    let (st, c) = s.get("/api/charts").await;
    assert_eq!(st, 200, "{c}");
    assert_eq!(c["stats"]["range"], "1h");
    // Every listed range is accepted; others are a 400 listing them.
    for r in [
        "5m", "15m", "30m", "1h", "4h", "8h", "12h", "24h", "7d", "30d", "90d",
    ] {
        let (st, c) = s.get(&format!("/api/charts?range={r}")).await;
        assert_eq!(st, 200, "{r}: {c}");
        assert_eq!(c["stats"]["range"], r);
    }
    // As in Pulse, an empty range is the default.
    let (st, c) = s.get("/api/charts?range=").await;
    assert_eq!((st, &c["stats"]["range"]), (200, &json!("1h")), "{c}");
    for bad in ["2h", "1y", "1H", "24"] {
        let (st, c) = s.get(&format!("/api/charts?range={bad}")).await;
        assert_error(st, &c, 400, "24h");
    }
    // start/end, and maxPoints.
    let (st, c) = s
        .get(&format!(
            "/api/charts?start={}&end={}",
            t + 1000,
            t + 10_000
        ))
        .await;
    assert_eq!(st, 200, "{c}");
    assert_eq!(c["stats"]["range"], Value::Null);
    assert_eq!(c["stats"]["rangeSeconds"], 9);
    assert_eq!(c["stats"]["pointCount"], 1);
    let (st, c) = s
        .get(&format!("/api/charts?start={}&end={}", t + 10_000, t))
        .await;
    assert_error(st, &c, 400, "after");
    let (st, c) = s.get("/api/charts?range=1h&maxPoints=1").await;
    assert_eq!(st, 200, "{c}");
    assert_eq!(
        c["data"]["pve1:node1:101"]["cpu"].as_array().unwrap().len(),
        1
    );
    assert_eq!(c["data"]["pve1:node1:101"]["cpu"][0]["value"], 11.5);
    let (st, c) = s.get("/api/charts?range=1h&maxPoints=0").await;
    assert_error(st, &c, 400, "maxPoints");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_stats_config_maintenance_metrics_health() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(test_config(dir.path())).await;
    let t = ago(20);
    s.write_sync(json!([
        point("node", "n1", "cpu", 1.0, t),
        point("node", "n1", "cpu", 2.0, t + 1000),
    ]))
    .await;

    let (st, b) = s.get("/api/metrics-store/series").await;
    assert_eq!(st, 200);
    assert_eq!(
        b["series"],
        json!([{"resourceType": "node", "resourceId": "n1", "metric": "cpu",
                "firstTimestamp": t, "lastTimestamp": t + 1000, "lastValue": 2.0}])
    );

    let (st, b) = s.get("/api/metrics-store/stats").await;
    assert_eq!(st, 200);
    common::stats::assert_stats_keys(&b);
    assert!(b.get("collectors").is_some(), "stats lacks collectors: {b}");
    assert_eq!(b["enabled"], true);
    assert_eq!(b["seriesCount"], 1);
    assert_eq!(b["rawCount"], 2);
    assert_eq!(b["totalWrites"], 2);
    assert!(b["lastFlush"].as_i64().unwrap() > 0);
    assert_eq!(
        b["dbPath"],
        dir.path().join("metrics.db").display().to_string()
    );
    assert_eq!(b["collectors"][0]["name"], "host");
    assert_eq!(b["collectors"][0]["state"], "disabled");

    let (st, b) = s.get("/api/metrics-store/config").await;
    assert_eq!(st, 200);
    assert_eq!(
        b["retention"],
        json!({"raw": "2h", "minute": "24h", "hourly": "168h", "daily": "2160h"})
    );
    assert_eq!(b["flush_interval"], "5s");
    assert_eq!(b["enabled"], true);

    let (st, b) = s
        .post_json("/api/metrics-store/maintenance", &json!({}))
        .await;
    assert_eq!(st, 200, "{b}");
    assert!(b["rollup"].is_object() && b["prune"].is_object(), "{b}");
    let (_, stats) = s.get("/api/metrics-store/stats").await;
    assert!(stats["lastRollup"].as_i64().unwrap() > 0);
    assert!(stats["lastRetention"].as_i64().unwrap() > 0);

    let r = s.client.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"),
        "{:?}",
        r.headers()
    );
    let text = r.text().await.unwrap();
    for needle in [
        "pulse_metrics_writes_total 2",
        "pulse_metrics_series 1",
        "pulse_metrics_raw_rows 2",
        "pulse_metrics_db_size_bytes",
        "pulse_metrics_wal_size_bytes",
        "pulse_metrics_dropped_writes_total 0",
        "pulse_metrics_last_rollup_timestamp_seconds",
        "pulse_metrics_http_requests_total{method=\"GET\",route=\"/api/metrics-store/series\",status=\"200\"} 1",
    ] {
        assert!(text.contains(needle), "/metrics lacks {needle:?}:\n{text}");
    }

    let r = s.client.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok");
    let r = s.client.get(s.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // Unknown API routes and wrong methods are JSON errors too.
    let (st, b) = s.get("/api/metrics-store/nope").await;
    assert_error(st, &b, 404, "no such endpoint");
    let (st, b) = s.get("/api/metrics-store/write").await;
    assert_error(st, &b, 405, "GET");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_guards_every_api_route() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.server.api_token = "s3cret-token".into();
    let s = TestServer::start(config).await;
    let routes = [
        (
            "GET",
            "/api/metrics-store/history?resourceType=vm&resourceId=1&range=1h",
        ),
        ("GET", "/api/metrics-store/series"),
        ("GET", "/api/metrics-store/stats"),
        ("GET", "/api/metrics-store/config"),
        ("PUT", "/api/metrics-store/config"),
        ("POST", "/api/metrics-store/write"),
        ("POST", "/api/metrics-store/maintenance"),
        ("GET", "/api/charts?range=1h"),
        ("GET", "/api/nothing-here"),
    ];
    for (method, path) in routes {
        for headers in [
            vec![],
            vec![("authorization", "Bearer wrong")],
            vec![("authorization", "Bearer s3cret-toke")],
            vec![("x-api-token", "s3cret-token-and-more")],
            vec![("authorization", "s3cret-token")],
        ] {
            let mut req = s
                .client
                .request(method.parse().unwrap(), s.url(path))
                .body(r#"{"points":[]}"#);
            for (k, v) in &headers {
                req = req.header(*k, *v);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 401, "{method} {path} with {headers:?}");
            let b: Value = r.json().await.unwrap();
            assert!(b["error"].as_str().unwrap().contains("token"), "{b}");
        }
    }
    // Either header form works.
    for (k, v) in [
        ("authorization", "Bearer s3cret-token"),
        ("authorization", "bearer s3cret-token"),
        ("x-api-token", "s3cret-token"),
    ] {
        let r = s
            .client
            .get(s.url("/api/metrics-store/stats"))
            .header(k, v)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{k}: {v}");
        let r = s
            .client
            .post(s.url("/api/metrics-store/write?sync=true"))
            .header(k, v)
            .header("content-type", "application/json")
            .body(json!({"points": [point("vm", "1", "cpu", 1.0, ago(1))]}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{k}: {v}");
    }
    // The UI, /metrics and /healthz stay open.
    for path in ["/", "/metrics", "/healthz"] {
        let r = s.client.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_history_and_shutdown_flushes_unsynced_points() {
    let dir = tempfile::tempdir().unwrap();
    let t = ago(100);
    let s = TestServer::start(test_config(dir.path())).await;
    s.write_sync(json!([point("vm", "101", "cpu", 1.0, t)]))
        .await;
    // Not synced: only the graceful shutdown's flush makes this durable.
    let (st, b) = s
        .post_json(
            "/api/metrics-store/write",
            &json!({"points": [point("vm", "101", "cpu", 2.0, t + 1000)]}),
        )
        .await;
    assert_eq!((st, b), (200, json!({"accepted": 1})));
    s.stop().await;

    let s = TestServer::start(test_config(dir.path())).await;
    let (st, h) = s
        .get("/api/metrics-store/history?resourceType=vm&resourceId=101&metric=cpu&range=1h")
        .await;
    assert_eq!(st, 200);
    let values: Vec<f64> = h["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["value"].as_f64().unwrap())
        .collect();
    assert_eq!(values, vec![1.0, 2.0], "{h}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_are_answered_during_heavy_writes() {
    let dir = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(TestServer::start(test_config(dir.path())).await);
    let base = ago(600);
    let stop_at = tokio::time::Instant::now() + Duration::from_secs(4);
    let mut writers = Vec::new();
    for w in 0..3 {
        let s = s.clone();
        writers.push(tokio::spawn(async move {
            let mut written = 0u64;
            let mut round = 0i64;
            while tokio::time::Instant::now() < stop_at {
                let points: Vec<Value> = (0..1000)
                    .map(|i| {
                        point(
                            "vm",
                            &format!("w{w}-{}", i % 50),
                            "cpu",
                            (i % 100) as f64,
                            // Within the last 10 minutes however many rounds
                            // run: later seconds are written again.
                            base + ((round * 20) % 500 + i / 50) * 1000,
                        )
                    })
                    .collect();
                let (st, b) = s
                    .post_json("/api/metrics-store/write", &json!({ "points": points }))
                    .await;
                // 503 is the documented back-pressure answer, never a drop.
                assert!(st == 200 || st == 503, "{st}: {b}");
                if st == 200 {
                    written += 1000;
                }
                round += 1;
            }
            written
        }));
    }
    let mut reads = 0;
    let mut slowest = Duration::ZERO;
    while tokio::time::Instant::now() < stop_at {
        for path in [
            "/api/charts?range=1h",
            "/api/metrics-store/history?resourceType=vm&resourceId=w0-1&metric=cpu&range=1h",
            "/api/metrics-store/stats",
        ] {
            let started = std::time::Instant::now();
            let (st, b) = s.get(path).await;
            slowest = slowest.max(started.elapsed());
            assert_eq!(st, 200, "{path}: {b}");
            reads += 1;
        }
    }
    let mut written = 0;
    for w in writers {
        written += w.await.unwrap();
    }
    assert!(reads >= 6, "only {reads} reads answered in 4 s");
    assert!(written >= 10_000, "only {written} points written in 4 s");
    assert!(slowest < Duration::from_secs(5), "a read took {slowest:?}");
    eprintln!("{reads} reads (slowest {slowest:?}) during {written} written points");
    let s = std::sync::Arc::try_unwrap(s).ok().expect("sole owner");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollup_job_runs_on_its_interval() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.metrics.rollup_interval = Duration::from_secs(1);
    let s = TestServer::start(config).await;
    s.write_sync(json!([point("vm", "1", "cpu", 1.0, ago(180))]))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    loop {
        let (_, b) = s.get("/api/metrics-store/stats").await;
        if b["lastRollup"].as_i64().unwrap() > 0 && b["minuteCount"].as_i64().unwrap() >= 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no rollup within 6 s with a 1s interval: {b}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_collector_shows_this_machine() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.collectors.host.enabled = true;
    config.collectors.host.interval = Duration::from_secs(1);
    // Samples are visible once flushed; keep that short for the test.
    config.metrics.flush_interval = Duration::from_secs(1);
    let s = TestServer::start(config).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    let node = loop {
        let (_, c) = s.get("/api/charts?range=5m").await;
        let nodes = c["nodeData"].as_object().cloned().unwrap_or_default();
        if let Some((id, metrics)) = nodes.into_iter().next()
            && metrics.get("disk").is_some()
        {
            break (id, metrics);
        }
        if tokio::time::Instant::now() >= deadline {
            let (_, stats) = s.get("/api/metrics-store/stats").await;
            panic!("no host sample in 8 s: {c}\nstats: {stats}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!node.0.is_empty());
    for m in ["cpu", "memory", "disk"] {
        let v = node.1[m][0]["value"].as_f64().unwrap_or(-1.0);
        assert!((0.0..=100.0).contains(&v), "{m} = {v}");
    }
    let (_, stats) = s.get("/api/metrics-store/stats").await;
    let host = &stats["collectors"][0];
    assert_eq!(host["name"], "host");
    assert_eq!(host["state"], "ok", "{host}");
    assert!(host["pointsWritten"].as_u64().unwrap() >= 3);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_only_store_answers_the_same_api() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.metrics.enabled = false;
    let s = TestServer::start(config).await;
    let t = ago(10);
    s.write_sync(json!([point("vm", "1", "cpu", 7.0, t)])).await;
    let (st, h) = s
        .get("/api/metrics-store/history?resourceType=vm&resourceId=1&metric=cpu&range=1h")
        .await;
    assert_eq!(st, 200);
    assert_eq!(h["points"][0]["value"], 7.0);
    let (_, stats) = s.get("/api/metrics-store/stats").await;
    assert_eq!(stats["enabled"], false);
    s.stop().await;
    assert!(
        !dir.path().join("metrics.db").exists(),
        "enabled: false must not create the database file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exposed_listen_without_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.server.listen = "0.0.0.0:0".into();
    let err = pulse_metrics::server::serve(pulse_metrics::server::ServeOptions {
        settings: pulse_metrics::config::SettingsFile::in_memory(config.clone()),
        config,
    })
    .await
    .expect_err("must refuse");
    assert!(err.to_string().contains("api_token"), "{err}");
    assert!(!dir.path().join("metrics.db").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsynced_write_is_visible_within_the_flush_interval() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.metrics.flush_interval = Duration::from_millis(500);
    let s = TestServer::start(config).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (st, _) = s
        .post_json(
            "/api/metrics-store/write",
            &json!({"points": [point("vm", "1", "cpu", 4.0, ago(1))]}),
        )
        .await;
    assert_eq!(st, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, h) = s
        .get("/api/metrics-store/history?resourceType=vm&resourceId=1&metric=cpu&range=5m")
        .await;
    assert_eq!(h["points"][0]["value"], 4.0, "{h}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_nodes_come_back_from_every_read() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(test_config(dir.path())).await;
    let t0 = ago(30);
    let mut web = point("vm", "pve1:101", "cpu", 10.0, t0);
    web["name"] = json!("web01");
    web["node"] = json!("pve-a");
    let body = json!({
        "points": [web, point("storage", "pve1:ceph", "usage", 40.0, t0),
                   point("docker-host", "h1", "cpu", 3.0, t0)],
        "resources": [{"resourceType": "vm", "resourceId": "pve1:101", "tags": ["prod"],
                       "instance": "pve1", "template": false}],
    });
    let (status, v) = s
        .post_json("/api/metrics-store/write?sync=true", &body)
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v, json!({"accepted": 3, "resources": 2}));
    let want = json!({"name": "web01", "node": "pve-a", "instance": "pve1",
                      "template": false, "tags": ["prod"]});

    let (_, series) = s.get("/api/metrics-store/series").await;
    assert_eq!(series["meta"]["vm"]["pve1:101"], want, "{series}");
    let (_, h) = s
        .get("/api/metrics-store/history?resourceType=vm&resourceId=pve1:101&range=1h")
        .await;
    assert_eq!(h["meta"], want, "{h}");
    let (_, c) = s.get("/api/charts?range=1h").await;
    assert_eq!(c["meta"]["vm"]["pve1:101"], want, "{c}");
    assert_eq!(c["data"]["pve1:101"]["cpu"][0]["value"], 10.0);
    // Pulse's names: a storage's `usage` answers as `disk`, `docker-host`
    // as `dockerHost`, in the charts and in the history.
    assert_eq!(
        c["storageData"]["pve1:ceph"]["disk"][0]["value"], 40.0,
        "{c}"
    );
    assert_eq!(c["dockerHostData"]["h1"]["cpu"][0]["value"], 3.0, "{c}");
    let (status, h) = s
        .get(
            "/api/metrics-store/history?resourceType=docker-host&resourceId=h1&metric=cpu&range=1h",
        )
        .await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["resourceType"], "dockerHost");
    assert_eq!(h["points"][0]["value"], 3.0);
    let (_, h) = s
        .get("/api/metrics-store/history?resourceType=storage&resourceId=pve1:ceph&metric=disk&range=1h")
        .await;
    assert_eq!(h["points"][0]["value"], 40.0, "{h}");

    // A bad resource record refuses the whole request, points included.
    let bad = json!({
        "points": [point("vm", "pve1:102", "cpu", 1.0, t0)],
        "resources": [{"resourceType": "vm", "resourceId": "pve1:102", "name": 5}],
    });
    let (status, v) = s.post_json("/api/metrics-store/write", &bad).await;
    assert_error(status, &v, 400, "invalid resource record");
    assert_eq!(v["details"][0]["resource"], 0, "{v}");
    assert!(
        v["details"][0]["error"]
            .as_str()
            .unwrap()
            .starts_with("name:")
    );
    let mut bad_point = point("vm", "pve1:102", "cpu", 1.0, t0);
    bad_point["node"] = json!("a\u{7}b");
    let (status, v) = s
        .post_json("/api/metrics-store/write", &json!({"points": [bad_point]}))
        .await;
    assert_error(status, &v, 400, "invalid point");
    let (_, h) = s
        .get("/api/metrics-store/history?resourceType=vm&resourceId=pve1:102&metric=cpu&range=1h")
        .await;
    assert_eq!(h["points"], json!([]));
    assert!(h.get("meta").is_none());
    s.stop().await;
}

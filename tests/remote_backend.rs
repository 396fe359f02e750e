//! `metrics.backend: remote` against real engines (tests/engines): two
//! instances over one engine answer `/api/charts` and `/history`
//! identically, and what they answer equals what the SQLite store answers
//! for the same raw points.

mod common;
mod engines;

use common::{TestServer, ago, point, test_config};
use engines::{Engine, Kind};
use pulse_metrics::config::{Config, RemoteWriteTarget};
use pulse_metrics::store::Backend;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn remote_config(dir: &std::path::Path, engine: &Engine) -> Config {
    let mut c = test_config(dir);
    c.metrics.backend = Backend::Remote;
    c.export.remote_write = vec![RemoteWriteTarget {
        name: "engine".into(),
        url: engine.write_url(),
        query_url: engine.query_url(),
        timeout: Duration::from_secs(5),
        ..RemoteWriteTarget::default()
    }];
    c
}

/// 10 guests and 2 nodes, 3 metrics each, every 5 s over the last 50
/// minutes (one point on a minute boundary per series at least), values
/// any engine keeps exactly.
fn feed() -> Vec<Value> {
    let start = (ago(3000) / 60_000) * 60_000;
    let mut out = Vec::new();
    for i in 0..600i64 {
        let ts = start + i * 5_000;
        for g in 0..12 {
            let (t, id) = if g < 10 {
                ("vm", format!("pve1:{}", 100 + g))
            } else {
                ("node", format!("pve1:node{}", g - 9))
            };
            for (m, metric) in ["cpu", "memory", "netin"].iter().enumerate() {
                let v = ((i * 13 + g * 7 + m as i64 * 3) % 400) as f64 * 0.25;
                out.push(point(t, &id, metric, v, ts));
            }
        }
    }
    out
}

async fn get(s: &TestServer, path: &str) -> Value {
    let (status, v) = s.get(path).await;
    assert_eq!(status, 200, "{path}: {v}");
    v
}

/// The charts answer without its one time-dependent field.
fn chart(mut v: Value) -> Value {
    v.as_object_mut().unwrap().remove("timestamp");
    v
}

async fn two_instances_answer_as_sqlite(kind: Kind) {
    if !engines::available(kind) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::start(kind, &dir.path().join("engine"));
    let (a_dir, b_dir, l_dir) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("l"),
    );
    for d in [&a_dir, &b_dir, &l_dir] {
        std::fs::create_dir_all(d).unwrap();
    }
    let a = TestServer::start(remote_config(&a_dir, &engine)).await;
    let b = TestServer::start(remote_config(&b_dir, &engine)).await;
    let local = TestServer::start(test_config(&l_dir)).await;
    let points = feed();
    let names = json!({"resources": [{"resourceType": "vm", "resourceId": "pve1:100", "name": "web01", "node": "pve1"}]});
    for s in [&a, &local] {
        for chunk in points.chunks(5000) {
            s.write_sync(Value::Array(chunk.to_vec())).await;
        }
        assert_eq!(s.post_json("/api/metrics-store/write", &names).await.0, 200);
    }
    // Everything acknowledged by the engine, the names included.
    let started = Instant::now();
    loop {
        let (_, stats) = a.get("/api/metrics-store/stats").await;
        let h = &stats["remoteWrite"][0];
        if h["sentPoints"] == points.len() && h["backlogPoints"] == 0 {
            let v = engine.api("/api/v1/query", &[("query", "pulse_resource_info".into())]);
            if v["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
            {
                break;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{h}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let _ = engines::http_get(engine.port, "/internal/force_flush");
    let (status, cfg) = a.get("/api/metrics-store/config").await;
    assert_eq!(status, 200);
    assert_eq!(cfg["backend"], "remote");

    // /api/charts?range=1h: the same points from both instances and from
    // SQLite (each request's hour ends at its own now).
    let started = Instant::now();
    let (ca, cb, cl) = loop {
        let ca = chart(get(&a, "/api/charts?range=1h").await);
        let cb = chart(get(&b, "/api/charts?range=1h").await);
        let cl = chart(get(&local, "/api/charts?range=1h").await);
        if ca["data"] == cl["data"] || started.elapsed() > Duration::from_secs(20) {
            break (ca, cb, cl);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(ca["stats"]["tier"], "raw");
    assert_eq!(ca["stats"]["pointCount"], points.len(), "{}", ca["stats"]);
    for part in ["data", "nodeData", "guestTypes", "stats"] {
        let (mut x, mut y, mut z) = (ca[part].clone(), cb[part].clone(), cl[part].clone());
        if part == "stats" {
            for v in [&mut x, &mut y, &mut z] {
                v.as_object_mut().unwrap().remove("rangeSeconds");
            }
        }
        assert_eq!(
            x, y,
            "{kind:?} {part}: two instances over one engine answer alike"
        );
        assert_eq!(x, z, "{kind:?} {part}: as SQLite answers");
    }
    // Over one explicit window, the whole answers are identical.
    let (s0, e0) = (ago(3500), ago(30));
    for q in [
        format!("/api/charts?start={s0}&end={e0}"),
        format!("/api/charts?start={s0}&end={e0}&maxPoints=37"),
    ] {
        let (ma, mb, ml) = (
            chart(get(&a, &q).await),
            chart(get(&b, &q).await),
            chart(get(&local, &q).await),
        );
        assert_eq!(ma, mb, "{kind:?} {q}");
        assert_eq!(
            ma, ml,
            "{kind:?} {q}: as SQLite answers (maxPoints merged as the store does)"
        );
    }

    // /history over an explicit span: raw, capped, every metric.
    let (start, end) = (ago(3300), ago(60));
    for q in [
        format!("resourceType=vm&resourceId=pve1:100&metric=cpu&start={start}&end={end}"),
        format!(
            "resourceType=vm&resourceId=pve1:100&metric=cpu&start={start}&end={end}&maxPoints=50"
        ),
        format!("resourceType=node&resourceId=pve1:node1&start={start}&end={end}"),
        format!("resourceType=vm&resourceId=pve1:103&start={start}&end={end}&maxPoints=10"),
    ] {
        let path = format!("/api/metrics-store/history?{q}");
        let (ha, hb, hl) = (
            get(&a, &path).await,
            get(&b, &path).await,
            get(&local, &path).await,
        );
        assert_eq!(ha, hb, "{path}");
        assert_eq!(ha, hl, "{kind:?} {path}");
    }
    let h = get(&b, &format!("/api/metrics-store/history?resourceType=vm&resourceId=pve1:100&metric=cpu&start={start}&end={end}")).await;
    assert_eq!(
        h["meta"]["name"], "web01",
        "names come from the info series"
    );

    // Minute buckets (a range past raw retention): the engine's count,
    // min and max equal the store's, the mean to the last few digits.
    let store = local.store.clone();
    let now = pulse_metrics::model::now_ms();
    tokio::task::spawn_blocking(move || store.rollup(now))
        .await
        .unwrap()
        .unwrap();
    let (start, end) = (ago(5 * 3600), (now / 60_000) * 60_000 - 1);
    let path = format!(
        "/api/metrics-store/history?resourceType=vm&resourceId=pve1:101&metric=netin&start={start}&end={end}"
    );
    let (ha, hb, hl) = (
        get(&a, &path).await,
        get(&b, &path).await,
        get(&local, &path).await,
    );
    assert_eq!(ha, hb);
    assert_eq!(ha["tier"], "minute");
    assert_eq!(hl["tier"], "minute");
    let (pa, pl) = (
        ha["points"].as_array().unwrap(),
        hl["points"].as_array().unwrap(),
    );
    assert_eq!(pa.len(), pl.len(), "{kind:?}: {ha} vs {hl}");
    assert!(pa.len() >= 49, "{}", pa.len());
    for (x, y) in pa.iter().zip(pl) {
        for k in ["timestamp", "count", "min", "max"] {
            assert_eq!(x[k], y[k], "{kind:?} {k}: {x} vs {y}");
        }
        let (vx, vy) = (x["value"].as_f64().unwrap(), y["value"].as_f64().unwrap());
        assert!((vx - vy).abs() <= 1e-9 * vy.abs().max(1.0), "{x} vs {y}");
    }
    a.stop().await;
    b.stop().await;
    local.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_over_victoriametrics_answer_as_sqlite() {
    two_instances_answer_as_sqlite(Kind::VictoriaMetrics).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_over_prometheus_answer_as_sqlite() {
    two_instances_answer_as_sqlite(Kind::Prometheus).await;
}

#[test]
fn remote_needs_a_query_url() {
    let mut c = Config::default();
    c.metrics.backend = Backend::Remote;
    c.export.remote_write = vec![RemoteWriteTarget {
        url: "http://vm:8428/api/v1/write".into(),
        ..RemoteWriteTarget::default()
    }];
    assert_eq!(
        c.validate().unwrap_err().config_key(),
        Some("metrics.backend")
    );
    c.export.remote_write[0].query_url = "http://vm:8428".into();
    c.validate().unwrap();
}

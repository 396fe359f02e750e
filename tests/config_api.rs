//! `PUT /api/metrics-store/config`: validated as the next start would be,
//! saved to `settings.json` (the config file is never written), applied
//! without a restart; `DELETE` resets to the file.

mod common;

use common::{TestServer, ago, point, test_config};
use pulse_metrics::config::{Config, SettingsFile};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

fn write_config_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("pulse-metrics.yaml");
    let db = dir.join("metrics.db");
    std::fs::write(
        &path,
        format!(
            "metrics:\n  database_path: \"{}\"\nserver:\n  listen: 127.0.0.1:0\ncollectors:\n  host: {{ enabled: false }}\n",
            db.display()
        ),
    )
    .unwrap();
    path
}

async fn start_from_file(path: &Path) -> TestServer {
    let (config, from) = Config::load(Some(path)).expect("config file loads");
    assert_eq!(from.as_deref(), Some(path));
    TestServer::start_with_path(config, Some(path.to_path_buf())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_saves_settings_json_and_changes_the_behaviour() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config_file(dir.path());
    let before = std::fs::read(&path).unwrap();
    let s = start_from_file(&path).await;

    let (st, b) = s
        .put_json(
            "/api/metrics-store/config",
            &json!({"retention": {"raw": "4h"}, "rollup_interval": "1s"}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["retention"]["raw"], "4h");
    assert_eq!(
        b["retention"]["minute"], "24h",
        "untouched keys keep their values"
    );
    assert_eq!(b["rollup_interval"], "1s");
    assert_eq!(b["persisted"], true);
    assert_eq!(b["restartRequired"], json!([]));

    let (_, got) = s.get("/api/metrics-store/config").await;
    assert_eq!(got["retention"]["raw"], "4h");
    assert_eq!(got["rollup_interval"], "1s");

    // The config file is untouched; the change is in settings.json, and a
    // restart (file, then settings.json) sees it.
    assert_eq!(std::fs::read(&path).unwrap(), before, "config file written");
    let settings_path = dir.path().join("settings.json");
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&settings_path).unwrap()).unwrap();
    assert_eq!(
        saved,
        json!({"metrics": {"retention": {"raw": "4h"}, "rollup_interval": "1s"}})
    );
    let (file_only, _) = Config::load(Some(&path)).expect("config file loads");
    let restarted = SettingsFile::new(settings_path.clone(), Some(path.clone()), file_only);
    let reloaded = restarted
        .startup_config(&restarted.load().unwrap())
        .unwrap();
    assert_eq!(
        reloaded.metrics.retention.raw,
        Duration::from_secs(4 * 3600)
    );
    assert_eq!(reloaded.metrics.rollup_interval, Duration::from_secs(1));
    assert!(!reloaded.collectors.host.enabled, "other sections kept");

    // Where each value comes from.
    let (st, src) = s.get("/api/metrics-store/config/sources").await;
    assert_eq!(st, 200, "{src}");
    assert_eq!(src["sources"]["retention.raw"], "settings");
    assert_eq!(src["sources"]["database_path"], "file");
    assert_eq!(src["sources"]["retention.minute"], "default");
    assert_eq!(src["file"]["retention"]["raw"], "2h");
    assert_eq!(src["configFile"], path.display().to_string());
    assert_eq!(src["settingsFile"], settings_path.display().to_string());

    // Applied live: the rollup job now runs every second (it was 5m).
    s.write_sync(json!([point("vm", "1", "cpu", 1.0, ago(180))]))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    loop {
        let (_, stats) = s.get("/api/metrics-store/stats").await;
        if stats["lastRollup"].as_i64().unwrap() > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rollup interval change not applied: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_put_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config_file(dir.path());
    let before = std::fs::read(&path).unwrap();
    let s = start_from_file(&path).await;
    let (_, original) = s.get("/api/metrics-store/config").await;

    for (body, key) in [
        (json!({"retention": {"raw": "1m"}}), "metrics.retention.raw"),
        (
            json!({"retention": {"raw": "soon"}}),
            "metrics.retention.raw",
        ),
        (
            json!({"retention": {"hourly": "2h"}}),
            "metrics.retention.hourly",
        ),
        (json!({"write_buffer": 0}), "metrics.write_buffer"),
        (json!({"retension": {"raw": "4h"}}), "retension"),
        // What the next start would refuse is refused now (issue 10).
        (json!({"database_path": "/tmp"}), "metrics.database_path"),
        (
            json!({"database_path": dir.path().display().to_string()}),
            "metrics.database_path",
        ),
    ] {
        let (st, b) = s.put_json("/api/metrics-store/config", &body).await;
        assert_eq!(st, 400, "{body}: {b}");
        let detail_key = b["details"][0]["key"].as_str().unwrap_or_default();
        assert!(detail_key.contains(key), "{body}: details {b}");
        assert!(b["error"].is_string());
    }
    let r = s
        .client
        .put(s.url("/api/metrics-store/config"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let (st, _) = s.put_json("/api/metrics-store/config", &json!([1])).await;
    assert_eq!(st, 400);

    assert_eq!(std::fs::read(&path).unwrap(), before, "file changed");
    assert!(!dir.path().join("settings.json").exists(), "nothing saved");
    let (_, after) = s.get("/api/metrics-store/config").await;
    assert_eq!(after, original);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_to_file_forgets_the_ui_settings() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config_file(dir.path());
    let s = start_from_file(&path).await;
    let settings_path = dir.path().join("settings.json");
    let (st, b) = s
        .put_json(
            "/api/metrics-store/config",
            &json!({"retention": {"raw": "3h"}, "write_buffer": 300}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert!(settings_path.exists());
    // Setting a value back to the file's drops it from settings.json.
    let (st, _) = s
        .put_json("/api/metrics-store/config", &json!({"write_buffer": 100}))
        .await;
    assert_eq!(st, 200);
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&settings_path).unwrap()).unwrap();
    assert_eq!(saved, json!({"metrics": {"retention": {"raw": "3h"}}}));

    let r = s
        .client
        .delete(s.url("/api/metrics-store/config"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let b: serde_json::Value = r.json().await.unwrap();
    assert_eq!(b["retention"]["raw"], "2h");
    assert!(!settings_path.exists(), "reset removes settings.json");
    let (_, got) = s.get("/api/metrics-store/config").await;
    assert_eq!(got["retention"]["raw"], "2h");
    assert_eq!(s.store.config().retention.raw, Duration::from_secs(7200));
    let (_, src) = s.get("/api/metrics-store/config/sources").await;
    assert_eq!(src["sources"]["retention.raw"], "default");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_file_put_applies_until_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(test_config(dir.path())).await;
    let (st, b) = s
        .put_json("/api/metrics-store/config", &json!({"write_buffer": 500}))
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["persisted"], false);
    assert_eq!(b["write_buffer"], 500);
    let (_, got) = s.get("/api/metrics-store/config").await;
    assert_eq!(got["write_buffer"], 500);

    // Keys the running store cannot change are reported, not pretended.
    let other = dir.path().join("other.db");
    let (st, b) = s
        .put_json(
            "/api/metrics-store/config",
            &json!({"database_path": other.display().to_string()}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["restartRequired"], json!(["metrics.database_path"]));
    s.stop().await;
}

/// A retention change takes effect at the next retention pass, with no
/// restart (the maintenance endpoint runs the same pass as the job).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_change_applies_at_the_next_pass() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(test_config(dir.path())).await;
    let t = ago(90 * 60);
    let points: Vec<_> = (0..60)
        .map(|i| point("vm", "1", "cpu", i as f64, t + i * 1000))
        .collect();
    s.write_sync(json!(points)).await;
    let (st, _) = s
        .post_json("/api/metrics-store/maintenance", &json!({}))
        .await;
    assert_eq!(st, 200);
    let (_, stats) = s.get("/api/metrics-store/stats").await;
    assert_eq!(stats["rawCount"], 60, "kept under the default 2h: {stats}");

    let (st, b) = s
        .put_json(
            "/api/metrics-store/config",
            &json!({"retention": {"raw": "1h"}}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let (st, _) = s
        .post_json("/api/metrics-store/maintenance", &json!({}))
        .await;
    assert_eq!(st, 200);
    let (_, stats) = s.get("/api/metrics-store/stats").await;
    assert_eq!(stats["rawCount"], 0, "raw older than 1h pruned: {stats}");
    // Still answered from the minute tier.
    let (_, h) = s
        .get("/api/metrics-store/history?resourceType=vm&resourceId=1&metric=cpu&range=2h")
        .await;
    let total: u64 = h["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["count"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 60, "{h}");
    s.stop().await;
}

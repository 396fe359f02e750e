//! Case 6: points that could never be stored (seconds for milliseconds,
//! older than every retention) were acknowledged and dropped later, and a
//! point from the year 3000 stood as its series' last value for ever.

use super::{JSON, Sandbox, ago, get, points, request, service, values};
use crate::cli_support::point;

#[test]
fn impossible_timestamps_refuse_the_batch_naming_each_point() {
    let sb = Sandbox::new();
    let svc = service(&sb, "metrics:\n  max_future_skew: 10m\n", None);
    let now = ago(0);
    let day = 86_400_000;
    let batch = points(&[
        ("p1", 1.0, now - 5_000),
        ("p1", 2.0, now / 1000),
        ("p1", 3.0, 0),
        ("p1", 4.0, 32_503_680_000_000), // 3000-01-01
        ("p1", 5.0, now + 11 * 60_000),
        ("p1", 6.0, now - 91 * day),
        ("p1", 7.0, now + 9 * 60_000),
        ("p1", 8.0, now - 89 * day),
    ]);
    let r = request(
        &svc,
        "POST",
        "/api/metrics-store/write?sync=true",
        &[JSON],
        &batch,
    );
    assert_eq!(r.status, 400, "{r:?}");
    let body = r.json();
    let details = body["details"].as_array().unwrap();
    let reasons: Vec<(u64, &str)> = details
        .iter()
        .map(|d| (d["index"].as_u64().unwrap(), d["error"].as_str().unwrap()))
        .collect();
    assert_eq!(
        reasons.iter().map(|r| r.0).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5],
        "{body}"
    );
    assert!(
        reasons[0]
            .1
            .contains("looks like seconds: send Unix milliseconds"),
        "{body}"
    );
    assert!(reasons[1].1.contains("looks like seconds"), "{body}");
    assert!(reasons[2].1.contains("metrics.max_future_skew"), "{body}");
    assert!(reasons[3].1.contains("metrics.max_future_skew"), "{body}");
    assert!(
        reasons[4].1.contains("older than the longest retention"),
        "{body}"
    );
    assert_eq!(
        values(&svc, "p1"),
        Vec::<f64>::new(),
        "a refused batch stored something"
    );

    // The same points without the bad ones are stored, the 9-minutes-ahead
    // one included (clocks drift).
    let r = request(
        &svc,
        "POST",
        "/api/metrics-store/write?sync=true",
        &[JSON],
        &points(&[("p1", 1.0, now - 5_000), ("p1", 7.0, now + 9 * 60_000)]),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let series = get(&svc, "/api/metrics-store/series").json();
    assert_eq!(series["series"][0]["lastValue"], 7.0);
    assert_eq!(svc.stop(), 0);
}

#[test]
fn ingest_refuses_seconds_but_keeps_backfills() {
    let sb = Sandbox::new();
    let db = sb.path("m.db");
    let now = ago(0);
    let seconds = sb.write(
        "s.jsonl",
        format!("{}\n", point("vm", "a", "cpu", 1.0, now / 1000)),
    );
    let out = sb.on(&db, &["ingest", seconds.to_str().unwrap()]).fails(2);
    assert!(
        out.stderr.contains("line 1: timestamp") && out.stderr.contains("looks like seconds"),
        "{}",
        out.stderr
    );
    // A year-old point in milliseconds is a backfill: accepted, and
    // reported as discarded by retention rather than refused.
    let old = sb.write(
        "o.jsonl",
        format!("{}\n", point("vm", "a", "cpu", 1.0, now - 365 * 86_400_000)),
    );
    let out = sb.on(&db, &["ingest", old.to_str().unwrap()]).ok();
    assert_eq!(out.json()["accepted"], 1, "{}", out.stderr);
}

/// Pushes from Proxmox's External Metric Server (InfluxDB line protocol)
/// follow the same rules: a node whose clock is far ahead cannot fix a
/// series' last value in the future.
#[test]
fn line_protocol_pushes_follow_the_same_time_rules() {
    let sb = Sandbox::new();
    let svc = service(&sb, "", None);
    let now_s = ago(0) / 1000;
    let year_3000_s = 32_503_680_000i64;
    let body = format!(
        "cpustat,object=nodes,host=pve-a cpu=0.5 {now_s}\ncpustat,object=nodes,host=pve-a cpu=0.7 {year_3000_s}\n"
    );
    let r = request(
        &svc,
        "POST",
        "/write?db=pve1&precision=s",
        &[],
        body.as_bytes(),
    );
    assert_eq!(r.status, 400, "{r:?}");
    let answer = r.json();
    assert!(answer.to_string().contains("max_future_skew"), "{answer}");
    assert_eq!(
        get(&svc, "/api/metrics-store/series").json()["series"],
        serde_json::json!([])
    );
    let r = request(
        &svc,
        "POST",
        "/write?db=pve1&precision=s",
        &[],
        format!("cpustat,object=nodes,host=pve-a cpu=0.5 {now_s}\n").as_bytes(),
    );
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(svc.stop(), 0);
}

//! `import-pulse` on files built with the Pulse Go store's schema.

mod cli_support;

use cli_support::{Sandbox, T0};
use rusqlite::Connection;
use std::path::Path;

/// (resource_type, resource_id, metric_type, value, min, max, timestamp_secs, tier)
type Row<'a> = (
    &'a str,
    &'a str,
    &'a str,
    f64,
    Option<f64>,
    Option<f64>,
    i64,
    &'a str,
);

fn create_pulse_db(conn: &Connection, with_min_max: bool) {
    let min_max = if with_min_max {
        "min_value REAL, max_value REAL,"
    } else {
        ""
    };
    conn.execute_batch(&format!(
        "CREATE TABLE metrics (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            resource_type TEXT NOT NULL,
            resource_id TEXT NOT NULL,
            metric_type TEXT NOT NULL,
            value REAL NOT NULL,
            {min_max}
            timestamp INTEGER NOT NULL,
            tier TEXT NOT NULL DEFAULT 'raw'
        );
        CREATE INDEX idx_metrics_lookup ON metrics(resource_type, resource_id, metric_type, tier, timestamp);
        CREATE TABLE metrics_meta (key TEXT PRIMARY KEY, value TEXT);
        INSERT INTO metrics_meta VALUES ('schema_version', '1');"
    ))
    .unwrap();
}

fn insert(conn: &Connection, with_min_max: bool, rows: &[Row]) {
    let tx = conn.unchecked_transaction().unwrap();
    for (t, id, m, v, min, max, ts, tier) in rows {
        if with_min_max {
            tx.execute(
                "INSERT INTO metrics (resource_type, resource_id, metric_type, value, min_value, max_value, timestamp, tier) VALUES (?1,?2,?3,?4,?5,?6,?7,?8)",
                rusqlite::params![t, id, m, v, min, max, ts, tier],
            )
            .unwrap();
        } else {
            tx.execute(
                "INSERT INTO metrics (resource_type, resource_id, metric_type, value, timestamp, tier) VALUES (?1,?2,?3,?4,?5,?6)",
                rusqlite::params![t, id, m, v, ts, tier],
            )
            .unwrap();
        }
    }
    tx.commit().unwrap();
}

fn pulse_file(path: &Path, with_min_max: bool, rows: &[Row]) {
    let conn = Connection::open(path).unwrap();
    create_pulse_db(&conn, with_min_max);
    insert(&conn, with_min_max, rows);
}

const S0: i64 = T0 / 1000;
/// The time imports are folded as of: the newest raw point of the samples,
/// so the fold leaves them as they were imported.
const NOW: &str = "1699999990000";

fn sample_rows() -> Vec<Row<'static>> {
    vec![
        // raw, seconds
        ("vm", "pve1:node1:101", "cpu", 12.5, None, None, S0, "raw"),
        (
            "vm",
            "pve1:node1:101",
            "cpu",
            14.5,
            None,
            None,
            S0 + 10,
            "raw",
        ),
        ("node", "pve1:node1", "memory", 61.0, None, None, S0, "raw"),
        // rolled up, with and without min/max
        (
            "vm",
            "pve1:node1:101",
            "cpu",
            11.0,
            Some(9.0),
            Some(15.0),
            S0 - 3_600,
            "minute",
        ),
        (
            "vm",
            "pve1:node1:101",
            "cpu",
            10.0,
            None,
            None,
            S0 - 3_540,
            "minute",
        ),
        (
            "vm",
            "pve1:node1:101",
            "cpu",
            9.5,
            Some(2.0),
            Some(30.0),
            S0 - 7 * 3_600,
            "hourly",
        ),
        (
            "storage",
            "pve1:node1:local",
            "disk",
            40.0,
            Some(39.0),
            Some(41.0),
            S0 - 3 * 86_400,
            "daily",
        ),
        // not importable: an unknown tier and a bad name
        ("vm", "pve1:node1:101", "cpu", 1.0, None, None, S0, "weekly"),
        (
            "vm",
            "pve1:node1:101",
            "cpu usage",
            1.0,
            None,
            None,
            S0,
            "raw",
        ),
    ]
}

/// What the store answers for each resource over each tier's span, as of
/// a fixed time: changes if anything is stored twice or lost.
fn snapshot(sb: &Sandbox, db: &Path) -> Vec<serde_json::Value> {
    let now = (T0 + 60_000).to_string();
    let mut out = Vec::new();
    for (t, id) in [
        ("vm", "pve1:101"), // Pulse's pve1:node1:101
        ("node", "pve1:node1"),
        ("storage", "pve1:node1:local"),
    ] {
        for range in ["1h", "24h", "7d", "30d"] {
            out.push(
                sb.on(
                    db,
                    &[
                        "query", "--type", t, "--id", id, "--range", range, "--now", &now,
                    ],
                )
                .ok()
                .json(),
            );
        }
    }
    out
}

fn points(answer: &serde_json::Value, metric: &str) -> Vec<serde_json::Value> {
    answer["metrics"][metric]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn imports_every_tier_and_twice_is_once() {
    let sb = Sandbox::new();
    let src = sb.path("pulse/metrics.db");
    std::fs::create_dir_all(src.parent().unwrap()).unwrap();
    pulse_file(&src, true, &sample_rows());
    let before = std::fs::read(&src).unwrap();
    let db = sb.path("ours.db");

    let first = sb
        .on(&db, &["import-pulse", "--now", NOW, src.to_str().unwrap()])
        .ok();
    let report = first.json();
    assert_eq!(report["rows"], 9);
    assert_eq!(report["rawPoints"], 3);
    assert_eq!(report["minuteBuckets"], 2);
    assert_eq!(report["hourlyBuckets"], 1);
    assert_eq!(report["dailyBuckets"], 1);
    assert_eq!(report["skipped"], 2);
    assert!(
        report["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("count 1")),
        "{report}"
    );
    assert!(first.stderr.contains("skipped row"), "{}", first.stderr);
    let stats1 = sb.on(&db, &["stats"]).ok().json();
    assert_eq!(
        (
            &stats1["rawCount"],
            &stats1["minuteCount"],
            &stats1["hourlyCount"],
            &stats1["dailyCount"],
            &stats1["seriesCount"]
        ),
        (&3.into(), &2.into(), &1.into(), &1.into(), &3.into())
    );
    let snap1 = snapshot(&sb, &db);

    // Seconds became milliseconds; min/max kept, or the value when missing.
    // (The hour's first minute is older than any raw point, so the minute
    // tier fills it in: where a tier holds no older data, the coarser one
    // precedes it; docs/storage.md, "Queries".)
    let raw: Vec<_> = points(&snap1[0], "cpu")
        .into_iter()
        .filter(|p| p["timestamp"].as_i64() >= Some(T0))
        .collect();
    assert_eq!(
        raw,
        [
            serde_json::json!({"timestamp": T0, "value": 12.5, "min": 12.5, "max": 12.5, "count": 1}),
            serde_json::json!({"timestamp": T0 + 10_000, "value": 14.5, "min": 14.5, "max": 14.5, "count": 1}),
        ]
    );
    assert_eq!(snap1[1]["tier"], "minute");
    let minute = points(&snap1[1], "cpu");
    let at = |list: &[serde_json::Value], ts: i64| {
        list.iter()
            .find(|p| p["timestamp"] == ts)
            .cloned()
            .unwrap_or_else(|| panic!("no point at {ts} in {list:?}"))
    };
    assert_eq!(
        at(&minute, (S0 - 3_600) * 1000),
        serde_json::json!({"timestamp": (S0 - 3_600) * 1000, "value": 11.0, "min": 9.0, "max": 15.0, "count": 1})
    );
    let no_min_max = at(&minute, (S0 - 3_540) * 1000);
    assert_eq!(
        (&no_min_max["min"], &no_min_max["max"]),
        (&10.0.into(), &10.0.into())
    );
    assert_eq!(snap1[2]["tier"], "hourly");
    let hour = (S0 - 7 * 3_600).div_euclid(3_600) * 3_600 * 1000;
    assert_eq!(at(&points(&snap1[2], "cpu"), hour)["max"], 30.0);
    assert_eq!(snap1[11]["tier"], "daily");
    let day = (S0 - 3 * 86_400).div_euclid(86_400) * 86_400 * 1000;
    assert_eq!(at(&points(&snap1[11], "disk"), day)["value"], 40.0);

    // Again: the same report, nothing stored twice.
    let second = sb
        .on(&db, &["import-pulse", "--now", NOW, src.to_str().unwrap()])
        .ok()
        .json();
    let strip = |mut v: serde_json::Value| {
        v.as_object_mut().unwrap().remove("durationMs");
        v
    };
    assert_eq!(strip(second), strip(report));
    let stats2 = sb.on(&db, &["stats"]).ok().json();
    for key in [
        "rawCount",
        "minuteCount",
        "hourlyCount",
        "dailyCount",
        "seriesCount",
    ] {
        assert_eq!(stats2[key], stats1[key], "{key}");
    }
    assert_eq!(snapshot(&sb, &db), snap1);

    // The source was only read.
    assert_eq!(std::fs::read(&src).unwrap(), before);
    let siblings: Vec<String> = std::fs::read_dir(src.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(siblings, ["metrics.db"], "files appeared beside the source");
}

#[test]
fn an_older_file_without_min_max_imports_with_min_max_equal_to_the_value() {
    let sb = Sandbox::new();
    // A name that needs escaping in an SQLite URI.
    std::fs::create_dir_all(sb.path("old files")).unwrap();
    let src = sb.path("old files/pulse #1?%20.db");
    let rows: Vec<Row> = vec![
        ("vm", "pve1:node1:101", "cpu", 12.5, None, None, S0, "raw"),
        (
            "vm",
            "pve1:node1:101",
            "cpu",
            11.0,
            None,
            None,
            S0 - 3_600,
            "minute",
        ),
        (
            "vm",
            "pve1:node1:101",
            "cpu",
            9.0,
            None,
            None,
            S0 - 7_200,
            "hourly",
        ),
    ];
    pulse_file(&src, false, &rows);
    let db = sb.path("ours.db");
    let report = sb
        .on(&db, &["import-pulse", "--now", NOW, src.to_str().unwrap()])
        .ok()
        .json();
    assert_eq!(report["hasMinMax"], false);
    assert_eq!(
        (
            &report["rawPoints"],
            &report["minuteBuckets"],
            &report["hourlyBuckets"]
        ),
        (&1.into(), &1.into(), &1.into())
    );
    assert!(
        report["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("min_value")),
        "{report}"
    );
    let now = (T0 + 60_000).to_string();
    let week = sb
        .on(
            &db,
            &[
                "query", "--type", "vm", "--id", "pve1:101", "--metric", "cpu", "--range", "7d",
                "--now", &now,
            ],
        )
        .ok()
        .json();
    assert_eq!(week["tier"], "hourly");
    let hour = (S0 - 7_200).div_euclid(3_600) * 3_600 * 1000;
    let h = week["points"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["timestamp"] == hour)
        .cloned()
        .unwrap_or_else(|| panic!("no hourly bucket: {week}"));
    assert_eq!(
        (&h["value"], &h["min"], &h["max"], &h["count"]),
        (&9.0.into(), &9.0.into(), &9.0.into(), &1.into())
    );
    let again = sb
        .on(&db, &["import-pulse", "--now", NOW, src.to_str().unwrap()])
        .ok()
        .json();
    assert_eq!(again["rows"], 3);
    let stats = sb.on(&db, &["stats"]).ok().json();
    assert_eq!(
        (
            &stats["rawCount"],
            &stats["minuteCount"],
            &stats["hourlyCount"]
        ),
        (&1.into(), &1.into(), &1.into())
    );
}

#[test]
fn a_source_with_a_wal_is_read_through_a_copy() {
    let sb = Sandbox::new();
    let src = sb.path("live/metrics.db");
    std::fs::create_dir_all(src.parent().unwrap()).unwrap();
    let conn = Connection::open(&src).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    create_pulse_db(&conn, true);
    insert(
        &conn,
        true,
        &[("vm", "1", "cpu", 5.0, None, None, S0, "raw")],
    );
    // Pulse still running: the rows live in the WAL only.
    let wal = sb.path("live/metrics.db-wal");
    assert!(std::fs::metadata(&wal).unwrap().len() > 0);
    let main_before = std::fs::read(&src).unwrap();
    let wal_before = std::fs::read(&wal).unwrap();
    let db = sb.path("ours.db");
    let report = sb
        .on(&db, &["import-pulse", "--now", NOW, src.to_str().unwrap()])
        .ok()
        .json();
    assert_eq!(report["rawPoints"], 1);
    assert_eq!(std::fs::read(&src).unwrap(), main_before);
    assert_eq!(std::fs::read(&wal).unwrap(), wal_before);
    // The copy is gone.
    let leftovers: Vec<_> = std::fs::read_dir(sb.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".pulse-import"))
        .collect();
    assert!(leftovers.is_empty());
    // Closed cleanly (WAL checkpointed and removed): read in place, and no
    // -wal or -shm file appears beside it.
    drop(conn);
    assert!(!wal.exists());
    let before = std::fs::read(&src).unwrap();
    let again = sb
        .on(&db, &["import-pulse", "--now", NOW, src.to_str().unwrap()])
        .ok()
        .json();
    assert_eq!(again["rawPoints"], 1);
    assert_eq!(std::fs::read(&src).unwrap(), before);
    assert!(!wal.exists());
    assert!(!sb.path("live/metrics.db-shm").exists());
}

#[test]
fn files_that_are_not_pulse_databases_are_refused() {
    let sb = Sandbox::new();
    let db = sb.path("ours.db");
    let out = sb.on(&db, &["import-pulse", "nowhere.db"]).fails(2);
    assert!(out.stderr.contains("nowhere.db"), "{}", out.stderr);
    let text = sb.write("notes.db", "not a database at all, just text that goes on");
    let out = sb
        .on(&db, &["import-pulse", text.to_str().unwrap()])
        .fails(2);
    assert!(
        out.stderr.contains("not an SQLite database"),
        "{}",
        out.stderr
    );
    let other = sb.path("other.db");
    Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE things (x)")
        .unwrap();
    let out = sb
        .on(&db, &["import-pulse", other.to_str().unwrap()])
        .fails(2);
    assert!(out.stderr.contains("no `metrics` table"), "{}", out.stderr);
    let stats = sb.on(&db, &["stats"]).ok().json();
    assert_eq!(stats["seriesCount"], 0);
}

#[test]
fn large_files_show_progress_on_stderr() {
    let sb = Sandbox::new();
    let src = sb.path("big.db");
    let conn = Connection::open(&src).unwrap();
    create_pulse_db(&conn, true);
    // 120k raw rows: 100 series x 1200 seconds.
    conn.execute_batch(&format!(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 119999)
         INSERT INTO metrics (resource_type, resource_id, metric_type, value, timestamp, tier)
         SELECT 'vm', 'pve1:node1:' || (i % 100), 'cpu', i * 0.5, {S0} + i / 100, 'raw' FROM n;"
    ))
    .unwrap();
    drop(conn);
    let db = sb.path("ours.db");
    let out = sb
        .on(&db, &["import-pulse", "--now", NOW, src.to_str().unwrap()])
        .ok();
    assert_eq!(out.json()["rawPoints"], 120_000);
    assert!(out.stderr.contains("120000 rows"), "{}", out.stderr);
    assert!(out.stderr.contains("100%"), "{}", out.stderr);
    assert!(
        !out.stdout.contains("rows ("),
        "progress must not go to stdout"
    );
    assert_eq!(sb.on(&db, &["stats"]).ok().json()["rawCount"], 120_000);
}

#[test]
fn export_after_an_import_lists_every_tier() {
    let sb = Sandbox::new();
    let src = sb.path("pulse.db");
    pulse_file(&src, true, &sample_rows());
    let db = sb.path("ours.db");
    sb.on(&db, &["import-pulse", "--now", NOW, src.to_str().unwrap()])
        .ok();
    // Points only: the export begins with what the ids said about the
    // resources (pve1:node1:101 ran on node1).
    let count = |tier: &str| {
        let out = sb.on(&db, &["export", "--tier", tier]).ok().stdout;
        assert!(
            out.starts_with(
                r#"{"resource":{"resourceType":"vm","resourceId":"pve1:101","node":"node1""#
            ),
            "{out}"
        );
        out.lines()
            .filter(|l| !l.starts_with(r#"{"resource""#))
            .count()
    };
    assert_eq!(
        (
            count("raw"),
            count("minute"),
            count("hourly"),
            count("daily")
        ),
        (3, 2, 1, 1)
    );
    let before: Vec<String> = ["minute", "hourly", "daily"]
        .iter()
        .map(|t| sb.on(&db, &["export", "--tier", t]).ok().stdout)
        .collect();
    sb.on(&db, &["import-pulse", "--now", NOW, src.to_str().unwrap()])
        .ok();
    let after: Vec<String> = ["minute", "hourly", "daily"]
        .iter()
        .map(|t| sb.on(&db, &["export", "--tier", t]).ok().stdout)
        .collect();
    assert_eq!(before, after);
}

#[test]
fn the_instance_option_puts_pulse_ids_under_the_collector_instance() {
    let sb = Sandbox::new();
    let src = sb.path("pulse.db");
    pulse_file(
        &src,
        true,
        &[
            (
                "vm",
                "homelab:pve-a:101",
                "cpu",
                12.5,
                None,
                None,
                S0,
                "raw",
            ),
            ("node", "homelab-pve-a", "cpu", 5.0, None, None, S0, "raw"),
            (
                "storage",
                "homelab-cluster-ceph",
                "usage",
                40.0,
                None,
                None,
                S0,
                "raw",
            ),
            (
                "storage",
                "homelab-pve-q-r-s",
                "usage",
                40.0,
                None,
                None,
                S0,
                "raw",
            ),
        ],
    );
    let db = sb.path("ours.db");
    let run = sb
        .on(
            &db,
            &[
                "import-pulse",
                "--now",
                NOW,
                "--instance",
                "pve1",
                src.to_str().unwrap(),
            ],
        )
        .ok();
    let report = run.json();
    assert_eq!(report["instance"], "pve1");
    assert_eq!(report["idsMapped"], 3);
    assert_eq!(report["idsKept"][0]["resourceId"], "homelab-pve-q-r-s");
    assert!(
        run.stderr.contains("kept storage id \"homelab-pve-q-r-s\""),
        "{}",
        run.stderr
    );
    let now = (T0 + 60_000).to_string();
    for (t, id, metric, value) in [
        ("vm", "pve1:101", "cpu", 12.5),
        ("node", "pve1:pve-a", "cpu", 5.0),
        ("storage", "pve1:ceph", "disk", 40.0),
    ] {
        let answer = sb
            .on(
                &db,
                &[
                    "query", "--type", t, "--id", id, "--metric", metric, "--range", "1h", "--now",
                    &now,
                ],
            )
            .ok()
            .json();
        assert_eq!(answer["points"][0]["value"], value, "{t} {id}: {answer}");
    }
    // A name that cannot prefix an id is refused before anything is read.
    let bad = sb
        .on(
            &db,
            &["import-pulse", "--instance", "a\tb", src.to_str().unwrap()],
        )
        .fails(2);
    assert!(bad.stderr.contains("--instance"), "{}", bad.stderr);
}

//! The command line as an operator uses it: the real binary, real files.

mod cli_support;
#[path = "common/stats.rs"]
mod stats_keys;

use cli_support::{Out, Sandbox, T0, point};
use serde_json::json;

fn stats(sb: &Sandbox, db: &std::path::Path) -> serde_json::Value {
    sb.on(db, &["stats"]).ok().json()
}

fn lines(out: &Out) -> Vec<&str> {
    out.stdout.lines().filter(|l| !l.is_empty()).collect()
}

#[test]
fn every_command_has_help_with_an_example() {
    let sb = Sandbox::new();
    let top = sb.run(&["--help"]).ok();
    for cmd in [
        "serve",
        "ingest",
        "maintain",
        "query",
        "stats",
        "import-pulse",
        "export",
        "check",
        "salvage",
    ] {
        assert!(top.stdout.contains(cmd), "top-level help lacks {cmd}");
        let out = sb.run(&[cmd, "--help"]).ok();
        assert!(
            out.stdout.contains("Example"),
            "{cmd} --help has no example:\n{}",
            out.stdout
        );
        assert!(
            out.stdout.contains(&format!("pulse-metrics {cmd}"))
                || out.stdout.contains(&format!("{cmd} ")),
            "{cmd} --help:\n{}",
            out.stdout
        );
    }
    assert!(!sb.default_db().exists(), "--help must not touch the store");
}

#[test]
fn usage_errors_exit_2() {
    let sb = Sandbox::new();
    let db = sb.path("m.db");
    sb.run(&["frobnicate"]).fails(2);
    sb.on(&db, &["query", "--id", "x", "--range", "1h"])
        .fails(2);
    // A window is required, and start and end go together.
    sb.on(&db, &["query", "--type", "vm", "--id", "x"]).fails(2);
    sb.on(&db, &["query", "--type", "vm", "--id", "x", "--start", "1"])
        .fails(2);
    sb.on(
        &db,
        &["query", "--type", "vm", "--id", "x", "--range", "0s"],
    )
    .fails(2);
    sb.on(
        &db,
        &[
            "query", "--type", "vm", "--id", "x", "--range", "1h", "--start", "1",
        ],
    )
    .fails(2);
    let out = sb
        .on(
            &db,
            &["query", "--type", "vm", "--id", "x", "--range", "soon"],
        )
        .fails(2);
    assert!(out.stderr.contains("range"), "{}", out.stderr);
    sb.on(
        &db,
        &["query", "--type", "vm", "--id", "x", "--max-points", "0"],
    )
    .fails(2);
    sb.on(
        &db,
        &[
            "query", "--type", "vm", "--id", "x", "--start", "5", "--end", "4",
        ],
    )
    .fails(2);
    sb.on(&db, &["export", "--tier", "weekly"]).fails(2);
    sb.on(&db, &["export", "--format", "xml"]).fails(2);
    sb.on(&db, &["maintain", "--now", "yesterday"]).fails(2);
    let out = sb.on(&db, &["ingest", "no-such-file.jsonl"]).fails(2);
    assert!(out.stderr.contains("no-such-file.jsonl"), "{}", out.stderr);
}

#[test]
fn ingest_jsonl_file_then_query_stats_and_export() {
    let sb = Sandbox::new();
    let db = sb.path("data/m.db");
    let mut input = String::new();
    for i in 0..12 {
        input += &point(
            "vm",
            "pve1:node1:101",
            "cpu",
            10.0 + i as f64,
            T0 + i * 5_000,
        );
        input += "\n";
    }
    input += &point("vm", "pve1:node1:101", "memory", 42.5, T0);
    input += "\n\n";
    input += r#"{"resourceType":"node","resourceId":"pve1:node1","metric":"cpu","value":7,"timestamp":"2023-11-14T22:13:00Z"}"#;
    input += "\n";
    let file = sb.write("points.jsonl", &input);
    // Time is simulated: the same --now for ingest and the queries.
    let now = (T0 + 60_000).to_string();
    let out = sb
        .on(&db, &["ingest", "--now", &now, file.to_str().unwrap()])
        .ok();
    assert_eq!(
        out.json(),
        json!({"accepted": 14, "invalid": 0, "discarded": 0})
    );

    let s = stats(&sb, &db);
    assert_eq!(s["rawCount"], 14);
    assert_eq!(s["seriesCount"], 3);
    assert_eq!(s["enabled"], true);
    stats_keys::assert_stats_keys(&s);
    assert_eq!(s["oldestDataTimestamp"], T0);

    let q = sb
        .on(
            &db,
            &[
                "query",
                "--type",
                "vm",
                "--id",
                "pve1:node1:101",
                "--metric",
                "cpu",
                "--range",
                "1h",
                "--now",
                &now,
            ],
        )
        .ok()
        .json();
    assert_eq!(q["resourceType"], "vm");
    assert_eq!(q["resourceId"], "pve1:node1:101");
    assert_eq!(q["metric"], "cpu");
    assert_eq!(q["range"], "1h");
    assert_eq!(q["end"], T0 + 60_000);
    assert_eq!(q["start"], T0 + 60_000 - 3_600_000);
    assert_eq!(q["tier"], "raw");
    let points = q["points"].as_array().unwrap();
    assert_eq!(points.len(), 12);
    assert_eq!(
        points[0],
        json!({"timestamp": T0, "value": 10.0, "min": 10.0, "max": 10.0, "count": 1})
    );
    assert!(q.get("metrics").is_none());

    // Without --metric: every metric of the resource, under "metrics".
    let q = sb
        .on(
            &db,
            &[
                "query",
                "--type",
                "vm",
                "--id",
                "pve1:node1:101",
                "--start",
                "2023-11-14T22:00:00Z",
                "--end",
                &now,
                "--now",
                &now,
            ],
        )
        .ok()
        .json();
    assert_eq!(q["range"], serde_json::Value::Null);
    assert_eq!(q["start"], 1_699_999_200_000i64);
    assert!(q.get("points").is_none());
    assert_eq!(q["metrics"]["cpu"].as_array().unwrap().len(), 12);
    assert_eq!(q["metrics"]["memory"][0]["value"], 42.5);
    assert!(q["metrics"].get("node").is_none());

    // maxPoints merges into evenly spaced buckets keeping mean, min and max.
    let q = sb
        .on(
            &db,
            &[
                "query",
                "--type",
                "vm",
                "--id",
                "pve1:node1:101",
                "--metric",
                "cpu",
                "--range",
                "1h",
                "--now",
                &now,
                "--max-points",
                "2",
            ],
        )
        .ok()
        .json();
    let points = q["points"].as_array().unwrap();
    assert!(points.len() <= 2, "{q}");
    let total: u64 = points.iter().map(|p| p["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 12);
    let min = points
        .iter()
        .map(|p| p["min"].as_f64().unwrap())
        .fold(f64::MAX, f64::min);
    let max = points
        .iter()
        .map(|p| p["max"].as_f64().unwrap())
        .fold(f64::MIN, f64::max);
    assert_eq!((min, max), (10.0, 21.0));

    let csv = sb
        .on(
            &db,
            &[
                "query",
                "--type",
                "vm",
                "--id",
                "pve1:node1:101",
                "--metric",
                "memory",
                "--range",
                "1h",
                "--now",
                &now,
                "--format",
                "csv",
            ],
        )
        .ok();
    assert_eq!(
        lines(&csv),
        [
            "resourceType,resourceId,metric,timestamp,value,min,max,count",
            &format!("vm,pve1:node1:101,memory,{T0},42.5,42.5,42.5,1")
        ]
    );

    let export = sb.on(&db, &["export"]).ok();
    let rows = lines(&export);
    assert_eq!(rows.len(), 14);
    let first: serde_json::Value = serde_json::from_str(rows[0]).unwrap();
    assert_eq!(
        first,
        json!({"resourceType":"node","resourceId":"pve1:node1","metric":"cpu","value":7.0,"timestamp":T0})
    );
}

#[test]
fn ingest_csv_by_extension_and_by_flag_from_stdin() {
    let sb = Sandbox::new();
    let db = sb.path("m.db");
    let csv = format!(
        "resourceType,resourceId,metric,value,timestamp\n\
         vm,\"pve1:node1:101\",cpu,1.5,{T0}\n\
         vm,pve1:node1:101,cpu,2.5,2023-11-14T22:13:05Z\n"
    );
    let file = sb.write("points.csv", &csv);
    let now = (T0 + 60_000).to_string();
    let out = sb
        .on(&db, &["ingest", "--now", &now, file.to_str().unwrap()])
        .ok();
    assert_eq!(
        out.json(),
        json!({"accepted": 2, "invalid": 0, "discarded": 0})
    );

    let more =
        format!("resourceType,resourceId,metric,value,timestamp\nvm,pve1:node1:102,cpu,3,{T0}\n");
    let out = sb
        .on_stdin(
            &db,
            &["ingest", "--now", &now, "--format", "csv", "-"],
            more.as_bytes(),
        )
        .ok();
    assert_eq!(
        out.json(),
        json!({"accepted": 1, "invalid": 0, "discarded": 0})
    );
    // The same CSV read as JSON Lines (no flag, stdin) is all bad lines.
    sb.on_stdin(&db, &["ingest"], more.as_bytes()).fails(2);
    assert_eq!(stats(&sb, &db)["rawCount"], 3);

    let jsonl = point("vm", "pve1:node1:103", "cpu", 4.0, T0) + "\n";
    let out = sb
        .on_stdin(&db, &["ingest", "--now", &now], jsonl.as_bytes())
        .ok();
    assert_eq!(
        out.json(),
        json!({"accepted": 1, "invalid": 0, "discarded": 0})
    );
    assert_eq!(stats(&sb, &db)["rawCount"], 4);
    // The copy of stdin made for the second pass is gone.
    let spools: Vec<_> = std::fs::read_dir(sb.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("spool"))
        .collect();
    assert!(spools.is_empty(), "{spools:?}");
}

#[test]
fn bad_lines_exit_2_each_named_and_nothing_stored() {
    let sb = Sandbox::new();
    let db = sb.path("m.db");
    let good = point("vm", "1", "cpu", 1.0, T0);
    let input = [
        good.clone(),
        r#"{"resourceType":"vm","resourceId":"1","metric":"cpu","value":"NaN","timestamp":1}"#
            .into(),
        good.clone(),
        r#"{"resourceType":"vm","resourceId":"1","metric":"cpu","value":1,"timestamp":-5}"#.into(),
        "this is not json".into(),
        r#"{"resourceType":"v m","resourceId":"1","metric":"cpu","value":1,"timestamp":1}"#.into(),
        good,
    ]
    .join("\n");
    let file = sb.write("bad.jsonl", &input);
    let out = sb.on(&db, &["ingest", file.to_str().unwrap()]).fails(2);
    for needle in [
        "line 2: value",
        "line 4: timestamp",
        "line 5: not valid JSON",
        "line 6: resourceType",
    ] {
        assert!(
            out.stderr.contains(needle),
            "missing {needle:?} in:\n{}",
            out.stderr
        );
    }
    assert!(!out.stderr.contains("line 1:") && !out.stderr.contains("line 3:"));
    assert_eq!(out.json()["invalid"], 4);
    assert_eq!(out.json()["accepted"], 0);
    assert_eq!(stats(&sb, &db)["rawCount"], 0);
    assert!(lines(&sb.on(&db, &["export"]).ok()).is_empty());

    // The same from stdin, and in CSV.
    sb.on_stdin(&db, &["ingest", "-"], input.as_bytes())
        .fails(2);
    let csv = format!(
        "resourceType,resourceId,metric,value,timestamp\nvm,1,cpu,1,{T0}\nvm,1,cpu,inf,{T0}\nvm,1,cpu,1,later\n"
    );
    let file = sb.write("bad.csv", &csv);
    let out = sb.on(&db, &["ingest", file.to_str().unwrap()]).fails(2);
    assert!(out.stderr.contains("line 3: value"), "{}", out.stderr);
    assert!(out.stderr.contains("line 4: timestamp"), "{}", out.stderr);
    assert_eq!(stats(&sb, &db)["rawCount"], 0);

    // --skip-invalid stores the rest and still names the bad lines.
    let file = sb.write("bad.jsonl", &input);
    let now = (T0 + 60_000).to_string();
    let out = sb
        .on(
            &db,
            &[
                "ingest",
                "--now",
                &now,
                "--skip-invalid",
                file.to_str().unwrap(),
            ],
        )
        .ok();
    assert_eq!(
        out.json(),
        json!({"accepted": 3, "invalid": 4, "discarded": 0})
    );
    assert!(
        out.stderr.contains("line 5: not valid JSON"),
        "{}",
        out.stderr
    );
    // Three writes of one series and second: one point.
    assert_eq!(stats(&sb, &db)["rawCount"], 1);
}

#[test]
fn the_list_of_bad_lines_is_capped_with_a_count() {
    let sb = Sandbox::new();
    let db = sb.path("m.db");
    let input: String = (0..35).map(|i| format!("bad {i}\n")).collect();
    let out = sb.on_stdin(&db, &["ingest"], input.as_bytes()).fails(2);
    let named = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("line "))
        .count();
    assert_eq!(named, 20, "{}", out.stderr);
    assert!(out.stderr.contains("and 15 more"), "{}", out.stderr);
    assert_eq!(out.json()["invalid"], 35);
}

#[test]
fn csv_without_its_header_is_refused() {
    let sb = Sandbox::new();
    let db = sb.path("m.db");
    let file = sb.write("x.csv", format!("vm,1,cpu,1,{T0}\n"));
    let out = sb.on(&db, &["ingest", file.to_str().unwrap()]).fails(2);
    assert!(out.stderr.contains("header"), "{}", out.stderr);
    let out = sb
        .on(&db, &["ingest", "--skip-invalid", file.to_str().unwrap()])
        .fails(2);
    assert!(out.stderr.contains("header"), "{}", out.stderr);
    assert_eq!(stats(&sb, &db)["rawCount"], 0);
}

#[test]
fn export_then_ingest_gives_the_same_raw_points() {
    let sb = Sandbox::new();
    let a = sb.path("a.db");
    let values = [
        0.1 + 0.2,
        1e300,
        -5e-324,
        1.0 / 3.0,
        -0.0,
        123456789.12345679,
        f64::MAX,
        42.0,
    ];
    let mut input = String::new();
    for (i, v) in values.iter().enumerate() {
        for (id, metric) in [
            ("pve1:node1:101", "cpu"),
            ("a,\"b\" c/ü", "disk.read_bytes-x"),
        ] {
            input += &point("dockerContainer", id, metric, *v, T0 + i as i64 * 1000);
            input += "\n";
        }
    }
    // As of just after the last point: its minute stays raw.
    let now = (T0 + 10_000).to_string();
    sb.on_stdin(&a, &["ingest", "--now", &now], input.as_bytes())
        .ok();
    let jsonl = sb.on(&a, &["export"]).ok().stdout;
    let csv = sb.on(&a, &["export", "--format", "csv"]).ok().stdout;
    assert_eq!(jsonl.lines().count(), 16);
    assert_eq!(csv.lines().count(), 17);

    for (name, dump, flag) in [("b.db", &jsonl, "jsonl"), ("c.db", &csv, "csv")] {
        let db = sb.path(name);
        let out = sb
            .on_stdin(
                &db,
                &["ingest", "--now", &now, "--format", flag, "-"],
                dump.as_bytes(),
            )
            .ok();
        assert_eq!(out.json()["accepted"], 16);
        assert_eq!(sb.on(&db, &["export"]).ok().stdout, jsonl, "via {flag}");
        assert_eq!(
            sb.on(&db, &["export", "--format", "csv"]).ok().stdout,
            csv,
            "via {flag}"
        );
    }
    // Values survive bit for bit (read with Rust's exact parser: serde_json's
    // default one may be a bit off).
    let exported: Vec<f64> = jsonl
        .lines()
        .map(|l| {
            let fields: std::collections::BTreeMap<String, Box<serde_json::value::RawValue>> =
                serde_json::from_str(l).unwrap();
            fields["value"].get().parse::<f64>().unwrap()
        })
        .collect();
    for v in values {
        assert!(
            exported.iter().any(|e| e.to_bits() == v.to_bits()),
            "{v:e} lost"
        );
    }
}

#[test]
fn maintain_rolls_up_and_prints_what_it_did() {
    let sb = Sandbox::new();
    let db = sb.path("m.db");
    let input: String = (0..12)
        .map(|i| point("vm", "1", "cpu", 10.0 + i as f64, T0 + i * 5_000) + "\n")
        .collect();
    // Ingested as of its last point: the minute is still open.
    let last = (T0 + 55_000).to_string();
    sb.on_stdin(&db, &["ingest", "--now", &last], input.as_bytes())
        .ok();
    let now = (T0 + 3 * 60_000).to_string();
    let report = sb.on(&db, &["maintain", "--now", &now]).ok().json();
    assert_eq!(report["rollup"]["now"], T0 + 3 * 60_000);
    assert_eq!(report["rollup"]["minuteBuckets"], 1);
    assert!(
        report["prune"].is_object() && report["reclaim"].is_object(),
        "{report}"
    );
    let minute = sb.on(&db, &["export", "--tier", "minute"]).ok();
    let rows = lines(&minute);
    assert_eq!(rows.len(), 1);
    let row: serde_json::Value = serde_json::from_str(rows[0]).unwrap();
    assert_eq!(
        row,
        json!({"resourceType":"vm","resourceId":"1","metric":"cpu","value":15.5,"timestamp":T0,
               "min":10.0,"max":21.0,"count":12})
    );
    let csv = sb
        .on(&db, &["export", "--tier", "minute", "--format", "csv"])
        .ok();
    assert_eq!(
        lines(&csv),
        [
            "resourceType,resourceId,metric,value,timestamp,min,max,count",
            &format!("vm,1,cpu,15.5,{T0},10.0,21.0,12")
        ]
    );
    let s = stats(&sb, &db);
    assert_eq!(s["minuteCount"], 1);
    // RFC 3339 works for --now too.
    sb.on(&db, &["maintain", "--now", "2023-11-14T23:00:00Z"])
        .ok();
}

#[test]
fn a_file_that_is_not_sqlite_is_refused_and_left_alone() {
    let sb = Sandbox::new();
    let content = b"these are my notes, not a database\n".repeat(200);
    let db = sb.write("notes.db", &content);
    for args in [vec!["stats"], vec!["export"], vec!["maintain"]] {
        let out = sb.on(&db, &args).fails(1);
        assert!(
            out.stderr.contains("not an SQLite database"),
            "{}",
            out.stderr
        );
    }
    let input = point("vm", "1", "cpu", 1.0, T0);
    sb.on_stdin(&db, &["ingest"], input.as_bytes()).fails(1);
    assert_eq!(std::fs::read(&db).unwrap(), content);
    assert!(!sb.path("notes.db-wal").exists());
}

#[test]
fn export_to_a_closed_pipe_is_quiet() {
    let sb = Sandbox::new();
    let db = sb.path("m.db");
    let input: String = (0..20_000)
        .map(|i| {
            point(
                "vm",
                &format!("id{}", i % 50),
                "cpu",
                i as f64,
                T0 + (i / 50) * 1000,
            ) + "\n"
        })
        .collect();
    let now = (T0 + 400_000).to_string();
    sb.on_stdin(&db, &["ingest", "--now", &now], input.as_bytes())
        .ok();
    let mut child = sb
        .command(&["--db", db.to_str().unwrap(), "export"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 64];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.code().is_some_and(|c| c == 0), "{stderr}");
}

#[test]
fn serve_refuses_a_bad_listen_address_before_starting() {
    let sb = Sandbox::new();
    let out = sb
        .run(&["--db", "m.db", "serve", "--listen", "localhost"])
        .fails(2);
    assert!(out.stderr.contains("server.listen"), "{}", out.stderr);
}

#[test]
fn a_store_kept_in_memory_needs_db_for_offline_commands() {
    let sb = Sandbox::new();
    let cfg = sb.write("c.yaml", "metrics:\n  enabled: false\n");
    let out = sb
        .run(&["--config", cfg.to_str().unwrap(), "stats"])
        .fails(2);
    assert!(out.stderr.contains("metrics.enabled"), "{}", out.stderr);
    assert!(!sb.default_db().exists());
    let db = sb.path("x.db");
    let with_db = |cmd: &str| {
        sb.run(&[
            "--config",
            cfg.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
            cmd,
        ])
    };
    // A reader never creates the file; a writer does.
    with_db("stats").fails(2);
    assert!(!db.exists());
    with_db("maintain").ok();
    assert_eq!(with_db("stats").ok().json()["enabled"], true);
    assert!(db.exists());
}

/// A backfill is queryable at every range as soon as `ingest` returns: the
/// points older than the raw retention are folded into their buckets then,
/// not at the next rollup, and what is older than every retention is
/// reported as discarded.
#[test]
fn ingest_folds_what_it_wrote_so_every_range_shows_it() {
    let sb = Sandbox::new();
    let db = sb.path("m.db");
    let now = T0;
    let step = 5 * 60_000;
    let mut input = String::new();
    for id in ["pve1:node1:201", "pve1:node1:local"] {
        let mut t = now - 7 * 86_400_000;
        while t <= now {
            input += &point("container", id, "cpu", 20.0, t);
            input += "\n";
            t += step;
        }
    }
    // 100 days ago: older than every tier's retention (90 d).
    for i in 0..3 {
        input += &point("vm", "old", "cpu", 1.0, now - 100 * 86_400_000 + i * 1000);
        input += "\n";
    }
    let file = sb.write("week.jsonl", &input);
    let now_text = now.to_string();
    // A store in use has been rolled up before: older points are late.
    sb.on(&db, &["maintain", "--now", &now_text]).ok();
    let out = sb
        .on(&db, &["ingest", "--now", &now_text, file.to_str().unwrap()])
        .ok();
    let per_series = 7 * 288 + 1;
    assert_eq!(
        out.json(),
        json!({"accepted": 2 * per_series + 3, "invalid": 0, "discarded": 3})
    );
    assert!(
        out.stderr.contains("discarded 3 point(s)"),
        "{}",
        out.stderr
    );
    assert_eq!(stats(&sb, &db)["lateCount"], 0, "nothing left waiting");

    for (range, tier, span) in [
        ("24h", "minute", 86_400_000i64),
        ("7d", "hourly", 7 * 86_400_000),
        ("30d", "daily", 7 * 86_400_000),
    ] {
        let q = sb
            .on(
                &db,
                &[
                    "query",
                    "--type",
                    "container",
                    "--id",
                    "pve1:node1:local",
                    "--metric",
                    "cpu",
                    "--range",
                    range,
                    "--now",
                    &now_text,
                ],
            )
            .ok()
            .json();
        assert_eq!(q["tier"], tier, "{range}");
        let points = q["points"].as_array().unwrap();
        let first = points[0]["timestamp"].as_i64().unwrap();
        assert!(
            first <= now - span + 86_400_000,
            "{range}: history starts {} h before now, not {} h",
            (now - first) / 3_600_000,
            span / 3_600_000
        );
        let counted: u64 = points.iter().map(|p| p["count"].as_u64().unwrap()).sum();
        // Every point of the range, but for the partly covered bucket at
        // its start (an hour of 12 points at most).
        let expected = if range == "24h" {
            24 * 12 - 12
        } else {
            7 * 288 - 12
        };
        assert!(
            counted >= expected,
            "{range}: {counted} points counted, {expected} expected"
        );
    }
}

#[test]
fn names_survive_ingest_export_and_ingest_again() {
    let sb = Sandbox::new();
    let db = sb.path("a.db");
    let now = (T0 + 60_000).to_string();
    let input = format!(
        "{}\n{}\n{}\n",
        r#"{"resource":{"resourceType":"vm","resourceId":"pve1:101","tags":["prod","web"],"instance":"pve1","template":false}}"#,
        r#"{"resourceType":"vm","resourceId":"pve1:101","metric":"cpu","value":12.5,"timestamp":1699999980000,"name":"web01","node":"pve-a"}"#,
        point("node", "pve1:pve-a", "cpu", 3.0, T0),
    );
    let file = sb.write("in.jsonl", &input);
    let out = sb
        .on(&db, &["ingest", "--now", &now, file.to_str().unwrap()])
        .ok();
    assert_eq!(
        out.json(),
        json!({"accepted": 2, "invalid": 0, "discarded": 0, "resources": 1})
    );
    let want = json!({"name": "web01", "node": "pve-a", "instance": "pve1",
                      "template": false, "tags": ["prod", "web"]});
    let query = |db: &std::path::Path| {
        sb.on(
            db,
            &[
                "query", "--type", "vm", "--id", "pve1:101", "--range", "1h", "--now", &now,
            ],
        )
        .ok()
        .json()
    };
    assert_eq!(query(&db)["meta"], want);

    // The export carries the metadata; ingested elsewhere, it is the same.
    let export = sb.on(&db, &["export"]).ok().stdout;
    assert!(
        export.starts_with(
            r#"{"resource":{"resourceType":"vm","resourceId":"pve1:101","name":"web01""#
        ),
        "{export}"
    );
    let copy = sb.write("export.jsonl", &export);
    let other = sb.path("b.db");
    sb.on(&other, &["ingest", "--now", &now, copy.to_str().unwrap()])
        .ok();
    assert_eq!(query(&other)["meta"], want);
    assert_eq!(sb.on(&other, &["export"]).ok().stdout, export);

    // CSV may name its resources too; a bad record is a bad line.
    let csv = sb.write(
        "in.csv",
        format!("resourceType,resourceId,metric,value,timestamp,name,node\nvm,pve1:102,cpu,1,{T0},db01,pve-b\nvm,pve1:103,cpu,1,{T0},,\n"),
    );
    sb.on(&db, &["ingest", "--now", &now, csv.to_str().unwrap()])
        .ok();
    let h = sb
        .on(
            &db,
            &[
                "query", "--type", "vm", "--id", "pve1:102", "--range", "1h", "--now", &now,
            ],
        )
        .ok()
        .json();
    assert_eq!(h["meta"], json!({"name": "db01", "node": "pve-b"}));
    let bad = sb.write(
        "bad.jsonl",
        r#"{"resource":{"resourceType":"vm","resourceId":"pve1:104","tags":"a;b"}}"#,
    );
    let out = sb
        .on(&db, &["ingest", "--now", &now, bad.to_str().unwrap()])
        .fails(2);
    assert!(
        out.stderr.contains("line 1: resource: tags"),
        "{}",
        out.stderr
    );
}

//! Cases 1 and 2: two writers on one database both started and lost
//! acknowledged points; the read-only commands created files (and whole
//! directories) where there was no database.

use super::{JSON, Sandbox, ago, points, request, service, values};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

/// Every file in `dir` with its size and modification time.
fn files(dir: &Path) -> BTreeMap<String, (u64, SystemTime)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                (m.len(), m.modified().unwrap()),
            )
        })
        .collect()
}

#[test]
fn a_second_writer_is_refused_naming_the_holder_and_readers_work_beside_it() {
    let sb = Sandbox::new();
    let db = sb.default_db();
    let svc = service(&sb, "", None);
    let pid = svc.child.id();
    let ts = ago(60);
    let r = request(
        &svc,
        "POST",
        "/api/metrics-store/write?sync=true",
        &[JSON],
        &points(&[("w1", 1.0, ts), ("w2", 2.0, ts)]),
    );
    assert_eq!(r.status, 200, "{r:?}");

    let jsonl = sb.write(
        "p.jsonl",
        crate::cli_support::point("vm", "w1", "cpu", 9.0, ts),
    );
    let lock = format!("{}.lock", db.display());
    for args in [
        vec!["serve", "--listen", "127.0.0.1:0"],
        vec!["ingest", jsonl.to_str().unwrap()],
        vec!["maintain"],
        vec!["import-pulse", "pulse.db"],
    ] {
        let out = sb.on_within(&db, &args, 20).fails(1);
        assert!(
            out.stderr.contains(&db.display().to_string())
                && out.stderr.contains(&format!("PID {pid}"))
                && out.stderr.contains(&lock),
            "{args:?}: {}",
            out.stderr
        );
    }
    // The refused writers changed nothing.
    assert_eq!(values(&svc, "w1"), vec![1.0]);

    // Readers work beside the service and leave every file as it was (the
    // WAL's shared-memory index is shared with the service by design, so
    // only its existence is compared).
    let before = files(db.parent().unwrap());
    let q = sb
        .on(
            &db,
            &[
                "query", "--type", "vm", "--id", "w1", "--metric", "cpu", "--range", "1h",
            ],
        )
        .ok()
        .json();
    assert_eq!(q["points"][0]["value"], 1.0, "{q}");
    assert_eq!(sb.on(&db, &["stats"]).ok().json()["seriesCount"], 2);
    let export = sb.on(&db, &["export"]).ok();
    assert_eq!(export.stdout.lines().count(), 2, "{}", export.stdout);
    let after = files(db.parent().unwrap());
    let keys = |m: &BTreeMap<String, (u64, SystemTime)>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&after), keys(&before), "files created or removed");
    for (name, meta) in &before {
        if !name.ends_with("-shm") {
            assert_eq!(after[name], *meta, "{name} changed");
        }
    }
    assert_eq!(svc.stop(), 0);

    // With the service stopped: readers create nothing, not even a WAL.
    let before = files(db.parent().unwrap());
    assert!(
        !before
            .keys()
            .any(|n| n.ends_with("-wal") || n.ends_with("-shm")),
        "{before:?}"
    );
    sb.on(&db, &["stats"]).ok();
    sb.on(
        &db,
        &["query", "--type", "vm", "--id", "w2", "--range", "1h"],
    )
    .ok();
    sb.on(&db, &["export", "--tier", "minute"]).ok();
    assert_eq!(files(db.parent().unwrap()), before);
}

#[test]
fn two_services_on_one_database_cannot_lose_acknowledged_points() {
    let sb = Sandbox::new();
    let db = sb.default_db();
    let first = service(&sb, "", None);
    // The second exits at once, before serving anything.
    let out = sb
        .on_within(&db, &["serve", "--listen", "127.0.0.1:0"], 20)
        .fails(1);
    assert!(
        out.stderr
            .contains("in use by another pulse-metrics process"),
        "{}",
        out.stderr
    );
    let t = ago(600);
    let mut acked = 0;
    for batch in 0..6 {
        let list: Vec<(String, f64, i64)> = (0..100)
            .map(|i| {
                (
                    format!("k{}", i % 10),
                    (batch * 100 + i) as f64,
                    t + (batch * 100 + i) * 1000,
                )
            })
            .collect();
        let refs: Vec<(&str, f64, i64)> = list
            .iter()
            .map(|(id, v, ts)| (id.as_str(), *v, *ts))
            .collect();
        let r = request(
            &first,
            "POST",
            "/api/metrics-store/write?sync=true",
            &[JSON],
            &points(&refs),
        );
        assert_eq!(r.status, 200, "{r:?}");
        acked += 100;
    }
    // A crash releases the lock: the next writer starts, and every
    // acknowledged point is there.
    drop(first);
    let svc = service(&sb, "", None);
    let stored: usize = (0..10).map(|k| values(&svc, &format!("k{k}")).len()).sum();
    assert_eq!(stored, acked);
    assert_eq!(svc.stop(), 0);
}

#[test]
fn readers_on_a_missing_database_exit_2_and_create_nothing() {
    let sb = Sandbox::new();
    let typo = sb.path("typo/dir/metrics.db");
    for args in [
        vec!["stats"],
        vec!["query", "--type", "vm", "--id", "x", "--range", "1h"],
        vec!["export"],
    ] {
        let out = sb.on(&typo, &args).fails(2);
        assert!(
            out.stderr
                .contains(&format!("no database at {}", typo.display())),
            "{args:?}: {}",
            out.stderr
        );
    }
    assert!(!sb.path("typo").exists(), "a reader created the directory");
    // The default database too.
    sb.run(&["stats"]).fails(2);
    assert!(!sb.path("data").exists());
    // And each says in its help that it only reads.
    for cmd in ["query", "stats", "export"] {
        let help = sb.run(&[cmd, "--help"]).ok().stdout;
        assert!(help.contains("Read-only"), "{cmd} --help:\n{help}");
    }
}

#[test]
fn dev_null_as_the_database_is_a_clear_error() {
    let sb = Sandbox::new();
    let null = Path::new("/dev/null");
    for args in [
        vec!["stats"],
        vec!["maintain"],
        vec!["serve", "--listen", "127.0.0.1:0"],
    ] {
        let out = sb.on_within(null, &args, 20).fails(2);
        assert!(
            out.stderr
                .contains("/dev/null is a character device, not a database file"),
            "{args:?}: {}",
            out.stderr
        );
    }
    for leftover in ["/dev/null.lock", "/dev/null-journal", "/dev/null-wal"] {
        assert!(!Path::new(leftover).exists(), "{leftover} created");
    }
}

//! Case 7: 512 random bytes inside the raw log (SQLite's integrity check
//! still "ok") made `serve`, `stats` and `export` fail, naming nothing and
//! offering no way out. Now the raw tier is a journal beside the database
//! and the rolled-up tiers are chunks in it: damage in either is named, and
//! `check` and `salvage` are the way out.
//!
//! The damage is injected by the helpers at the end of this file, the only
//! code here that knows where the store keeps what.

use super::Sandbox;
use crate::cli_support::{T0, point};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

const MIN: i64 = 60_000;

/// `ingest --now NOW`: each run appends to a journal segment of its own.
fn ingest(sb: &Sandbox, db: &Path, name: &str, lines: Vec<String>) {
    let file = sb.write(name, lines.join("\n"));
    let now = T0.to_string();
    sb.on(db, &["ingest", "--now", &now, file.to_str().unwrap()])
        .ok();
}

/// Every exported line of `tier`, for each series.
fn export(sb: &Sandbox, db: &Path, tier: &str) -> HashMap<String, BTreeSet<String>> {
    let out = sb.on(db, &["export", "--tier", tier]).ok();
    let mut by_series: HashMap<String, BTreeSet<String>> = HashMap::new();
    for line in out.stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        by_series
            .entry(v["resourceId"].as_str().unwrap().to_string())
            .or_default()
            .insert(line.to_string());
    }
    by_series
}

fn timestamp(line: &str) -> i64 {
    serde_json::from_str::<serde_json::Value>(line).unwrap()["timestamp"]
        .as_i64()
        .unwrap()
}

/// `v`'s points every 5 s over `[from, to)` minutes before now.
fn v_points(from: i64, to: i64) -> Vec<String> {
    let mut out = Vec::new();
    let mut t = T0 - from * MIN;
    while t < T0 - to * MIN {
        out.push(point("vm", "v", "cpu", (t / 5_000 % 89) as f64 * 0.5, t));
        t += 5_000;
    }
    out
}

#[test]
fn a_damaged_journal_segment_and_minute_chunk_are_named_and_salvage_keeps_everything_else() {
    let sb = Sandbox::new();
    let db = sb.path("data/metrics.db");
    // a, b, c: hours old, rolled up into the tiers; v: the last 90 minutes,
    // still raw, written in three runs (three journal segments).
    let mut old = Vec::new();
    for id in ["a", "b", "c"] {
        let mut t = T0 - 360 * MIN;
        while t < T0 - 130 * MIN {
            old.push(point("vm", id, "cpu", (t / 10_000 % 97) as f64, t));
            t += 10_000;
        }
    }
    ingest(&sb, &db, "old.jsonl", old);
    ingest(&sb, &db, "v1.jsonl", v_points(90, 60));
    let before_v2 = segments(&db);
    ingest(&sb, &db, "v2.jsonl", v_points(60, 30));
    let v2_segment = segments(&db)
        .into_iter()
        .find(|s| !before_v2.contains(s))
        .expect("the second run's segment");
    ingest(&sb, &db, "v3.jsonl", v_points(30, 1));
    let tiers = ["raw", "minute", "hourly", "daily"];
    let before: Vec<_> = tiers.iter().map(|t| export(&sb, &db, t)).collect();
    assert!(before[1]["a"].len() > 100, "{:?}", before[1].keys());
    assert_eq!(before[0]["v"].len(), 3 * 360 - 12);
    sb.on(&db, &["check"]).ok();

    // What meets the damage refuses, naming the damaged part and the way
    // out: a damaged chunk when it is read, then a damaged journal segment
    // at every open.
    let refuses = |part: &str, commands: &[Vec<&str>]| {
        for args in commands {
            let out = sb.on_within(&db, args, 30).fails(1);
            for needle in [part, "pulse-metrics check", "pulse-metrics salvage"] {
                assert!(
                    out.stderr.contains(needle),
                    "{args:?}: {needle:?} not in {}",
                    out.stderr
                );
            }
        }
    };
    let (chunk_key, from, to) = damage_a_minute_chunk(&db, "a");
    let now = T0.to_string();
    refuses(
        &format!("key {chunk_key}"),
        &[
            vec!["export", "--tier", "minute"],
            vec![
                "query", "--type", "vm", "--id", "a", "--range", "12h", "--now", &now,
            ],
        ],
    );
    let segment_name = damage_a_segment(&v2_segment);
    refuses(
        &segment_name,
        &[
            vec!["stats"],
            vec!["export"],
            vec!["maintain"],
            vec!["serve", "--listen", "127.0.0.1:0"],
        ],
    );

    // check: SQLite sees nothing wrong; ours names both parts and series.
    let out = sb.on(&db, &["check"]).fails(1);
    let report = out.json();
    assert_eq!(report["integrity"], serde_json::json!([]), "{report}");
    let damage = report["damage"].as_array().unwrap();
    assert_eq!(damage.len(), 2, "{report}");
    assert_eq!(damage[0]["table"], "raw journal");
    assert_eq!(
        damage[0]["part"],
        format!("segment {segment_name} from byte 0"),
        "{report}"
    );
    assert_eq!(damage[1]["table"], "minute");
    assert!(
        damage[1]["part"]
            .as_str()
            .unwrap()
            .contains(&format!("key {chunk_key}"))
    );
    assert_eq!(damage[1]["series"], serde_json::json!(["vm/a/cpu"]));
    assert!(out.stderr.contains(&segment_name), "{}", out.stderr);

    // salvage: everything else, bit for bit; the two parts reported lost.
    let saved = sb.path("saved.db");
    let out = sb.on(&db, &["salvage", saved.to_str().unwrap()]).ok();
    let report = out.json();
    let lost = report["lost"].as_array().unwrap();
    assert_eq!(lost.len(), 2, "{report}");
    assert_eq!(lost[0]["table"], "raw journal");
    assert_eq!(lost[1]["table"], "minute");
    assert!(out.stderr.contains("lost: raw journal"), "{}", out.stderr);
    sb.on(&saved, &["check"]).ok();

    let after: Vec<_> = tiers.iter().map(|t| export(&sb, &saved, t)).collect();
    for (i, tier) in tiers.iter().enumerate() {
        for id in ["b", "c"] {
            assert_eq!(after[i].get(id), before[i].get(id), "{tier} of {id}");
        }
    }
    // a: the damaged chunk's minutes are gone, nothing else.
    let kept: BTreeSet<String> = before[1]["a"]
        .iter()
        .filter(|l| !(from..to).contains(&timestamp(l)))
        .cloned()
        .collect();
    assert!(kept.len() < before[1]["a"].len());
    assert_eq!(after[1]["a"], kept);
    for i in [2, 3] {
        assert_eq!(after[i].get("a"), before[i].get("a"), "{} of a", tiers[i]);
    }
    // v: exactly the second run's raw points are gone.
    let v2: BTreeSet<i64> = v_points(60, 30).iter().map(|l| timestamp(l)).collect();
    let v_kept: BTreeSet<String> = before[0]["v"]
        .iter()
        .filter(|l| !v2.contains(&timestamp(l)))
        .cloned()
        .collect();
    assert_eq!(after[0]["v"], v_kept);
    // The salvaged file serves.
    let svc = crate::cli_support::Service::start(sb.command(&[
        "--db",
        saved.to_str().unwrap(),
        "serve",
        "--listen",
        "127.0.0.1:0",
    ]));
    assert_eq!(svc.stop(), 0);
}

// ------------------------------------------------------ damage injection
// Where the store keeps what, as of this writing: raw points in journal
// segments `<database>-raw/*.seg`; rolled-up buckets in `minute(key, seq,
// data)` rows keyed `(span << 24) | series id`, 20 one-minute buckets each.

fn segments(db: &Path) -> Vec<PathBuf> {
    let mut dir = db.as_os_str().to_owned();
    dir.push("-raw");
    let mut out: Vec<PathBuf> = std::fs::read_dir(PathBuf::from(dir))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// 512 pseudo-random bytes over `blob[at..]`.
fn scribble(blob: &mut [u8], at: usize) {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for b in blob.iter_mut().skip(at).take(512) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
}

/// Scribbles over a segment 200 bytes in (inside its first record's
/// points); returns its file name.
fn damage_a_segment(path: &Path) -> String {
    let mut bytes = std::fs::read(path).unwrap();
    assert!(
        bytes.len() > 800,
        "{} is {} bytes",
        path.display(),
        bytes.len()
    );
    scribble(&mut bytes, 200);
    std::fs::write(path, bytes).unwrap();
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// Damages the third minute chunk of series `vm/<id>/cpu`; returns its key
/// and the span of its buckets (Unix ms, end exclusive).
fn damage_a_minute_chunk(db: &Path, id: &str) -> (i64, i64, i64) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let sid: i64 = conn
        .query_row(
            "SELECT id FROM series WHERE resource_type = 'vm' AND resource_id = ?1 AND metric = 'cpu'",
            [id],
            |r| r.get(0),
        )
        .unwrap();
    let (key, mut blob): (i64, Vec<u8>) = conn
        .query_row(
            "SELECT key, data FROM minute WHERE key & 16777215 = ?1 ORDER BY key LIMIT 1 OFFSET 2",
            [sid],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    scribble(&mut blob, 10);
    conn.execute(
        "UPDATE minute SET data = ?1 WHERE key = ?2",
        rusqlite::params![blob, key],
    )
    .unwrap();
    let start = (key >> 24) * 20 * MIN;
    (key, start, start + 20 * MIN)
}

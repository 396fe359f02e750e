//! Case 7: 512 random bytes inside one raw log slot (SQLite's integrity
//! check still "ok") made `serve`, `stats` and `export` fail with "database
//! content: series id out of range", naming nothing and offering no way out.
//!
//! The damage is injected by the helpers at the end of this file, the only
//! code here that knows how the store lays out its tables.

use super::Sandbox;
use crate::cli_support::{T0, point};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

const MIN: i64 = 60_000;

fn ingest(sb: &Sandbox, db: &Path, name: &str, lines: Vec<String>) {
    let file = sb.write(name, lines.join("\n"));
    sb.on(db, &["ingest", file.to_str().unwrap()]).ok();
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

#[test]
fn a_damaged_log_slot_and_minute_chunk_are_named_and_salvage_keeps_everything_else() {
    let sb = Sandbox::new();
    let db = sb.path("data/metrics.db");
    let now = T0;
    // a, b, c: hours old, rolled up into the tiers (their raw log slots are
    // freed); v: the last 90 minutes, still raw.
    let mut old = Vec::new();
    for id in ["a", "b", "c"] {
        let mut t = now - 360 * MIN;
        while t < now - 130 * MIN {
            old.push(point("vm", id, "cpu", (t / 10_000 % 97) as f64, t));
            t += 10_000;
        }
    }
    ingest(&sb, &db, "old.jsonl", old);
    let now_arg = now.to_string();
    sb.on(&db, &["maintain", "--now", &now_arg]).ok();
    let slots_before = slots(&db);
    let recent: Vec<String> = (0..1068)
        .map(|i| point("vm", "v", "cpu", i as f64 * 0.5, now - 90 * MIN + i * 5_000))
        .collect();
    ingest(&sb, &db, "recent.jsonl", recent);
    let tiers = ["raw", "minute", "hourly", "daily"];
    let before: Vec<_> = tiers.iter().map(|t| export(&sb, &db, t)).collect();
    assert!(before[1]["a"].len() > 100 && before[0]["v"].len() == 1068);
    sb.on(&db, &["check"]).ok();

    // Everything that opens the store refuses, naming the damaged part and
    // the way out: first a damaged log slot, then a damaged chunk too.
    let refuses = |part: &str| {
        for args in [
            vec!["stats"],
            vec!["export"],
            vec!["maintain"],
            vec!["serve", "--listen", "127.0.0.1:0"],
        ] {
            let out = sb.on_within(&db, &args, 30).fails(1);
            for needle in [part, "pulse-metrics check", "pulse-metrics salvage"] {
                assert!(
                    out.stderr.contains(needle),
                    "{args:?}: {needle:?} not in {}",
                    out.stderr
                );
            }
        }
    };
    let slot = damage_a_slot_written_since(&db, &slots_before);
    refuses(&format!("raw_log slot {slot}"));
    let (chunk_key, from, to) = damage_a_minute_chunk(&db, "a");
    refuses(&format!("key {chunk_key}"));

    // check: SQLite sees nothing wrong; ours names both parts and series.
    let out = sb.on(&db, &["check"]).fails(1);
    let report = out.json();
    assert_eq!(report["integrity"], serde_json::json!([]), "{report}");
    let damage = report["damage"].as_array().unwrap();
    assert_eq!(damage.len(), 2, "{report}");
    assert_eq!(damage[0]["table"], "raw_log");
    assert_eq!(damage[0]["part"], format!("slot {slot}"));
    assert_eq!(
        damage[0]["series"],
        serde_json::json!(["vm/v/cpu"]),
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
    assert!(
        out.stderr.contains(&format!("raw_log slot {slot}")),
        "{}",
        out.stderr
    );

    // salvage: everything else, bit for bit; the two parts reported lost.
    let saved = sb.path("saved.db");
    let out = sb.on(&db, &["salvage", saved.to_str().unwrap()]).ok();
    let report = out.json();
    let lost = report["lost"].as_array().unwrap();
    assert_eq!(lost.len(), 2, "{report}");
    assert_eq!(lost[0]["part"], format!("slot {slot}"));
    assert!(lost[0]["problem"].as_str().unwrap().contains("lost"));
    assert!(
        lost[1]["part"]
            .as_str()
            .unwrap()
            .contains(&format!("key {chunk_key}"))
    );
    assert!(out.stderr.contains("lost: raw_log"), "{}", out.stderr);
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
    // v: the raw points of the damaged slot are gone; the rest unchanged.
    let v_after = &after[0]["v"];
    assert!(v_after.is_subset(&before[0]["v"]));
    let missing = before[0]["v"].len() - v_after.len();
    assert!(
        (1..=450).contains(&missing),
        "{missing} raw points of v lost"
    );
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
// The store's layout as of this writing: `raw_log(slot, data)` rows of
// page-sized slots, and `minute(key, seq, data)` chunks keyed
// `(span << 24) | series id`, 20 one-minute buckets each.

/// Every raw log slot's bytes.
fn slots(db: &Path) -> HashMap<i64, Vec<u8>> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare("SELECT slot, data FROM raw_log").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
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

/// Damages a slot rewritten from its start since `before` was taken (so
/// it holds only what was written since), 200 bytes in; returns its id.
fn damage_a_slot_written_since(db: &Path, before: &HashMap<i64, Vec<u8>>) -> i64 {
    let now = slots(db);
    let (&id, blob) = now
        .iter()
        .filter(|(id, blob)| before.get(id).is_none_or(|old| old[3..64] != blob[3..64]))
        .max_by_key(|(_, blob)| u16::from_le_bytes([blob[1], blob[2]]))
        .expect("a slot written since");
    let mut blob = blob.clone();
    scribble(&mut blob, 200);
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute(
        "UPDATE raw_log SET data = ?1 WHERE slot = ?2",
        rusqlite::params![blob, id],
    )
    .unwrap();
    id
}

/// Damages the first minute chunk of series `vm/<id>/cpu`; returns its key
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

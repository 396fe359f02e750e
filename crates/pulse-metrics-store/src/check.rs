//! Verifying a database without writing to it: SQLite's own integrity
//! check, then ours, which SQLite cannot do: every raw log slot and every
//! tier chunk must decode, checksum (chunks), and name series that exist,
//! with sane times and finite values. Each damaged part is named by table,
//! slot or chunk, and the series it holds.
//!
//! `salvage` copies what these checks pass; both read the file exactly as
//! the read-only commands do (see `schema::ReadMode`).

use crate::codec::{self, Slot};
use crate::error::{Error, Result};
use crate::model::{MAX_TIMESTAMP_MS, SeriesKey, format_timestamp};
use crate::schema::{self, ReadMode};
use crate::state::ChunkTier;
use rusqlite::Connection;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::Path;

/// Integrity messages listed at most (SQLite stops there too).
const INTEGRITY_MAX: usize = 100;

/// One damaged part of a database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Damage {
    /// `raw_log`, `minute`, `hourly`, `daily`, `series`, or `sqlite` for
    /// what SQLite's own check reports.
    pub table: String,
    /// Which row: `slot 17`, `chunk 2024-05-01T12:00:00Z (key ...)`.
    pub part: String,
    /// The series whose data it holds. For a log slot, those read before
    /// the damage: what lies after it cannot be known.
    pub series: Vec<String>,
    pub problem: String,
}

/// What `check` found.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    pub path: String,
    /// No damage of either kind.
    pub ok: bool,
    /// SQLite's `integrity_check` messages (empty when it says "ok").
    pub integrity: Vec<String>,
    pub series: u64,
    pub log_slots: u64,
    pub chunks: u64,
    pub damage: Vec<Damage>,
}

/// The source database, open for reading, and its series directory.
pub(crate) struct Source {
    pub conn: Connection,
    pub keys: Vec<Option<SeriesKey>>,
}

impl Source {
    /// Opens `path` as the read-only commands do; refuses files that are
    /// not ours, but not damaged ones (that is what is being looked at).
    pub fn open(path: &Path) -> Result<Source> {
        schema::check_database_path(path)?;
        match std::fs::metadata(path) {
            Ok(m) if m.len() > 0 => {}
            _ => return Err(Error::missing(path.to_path_buf())),
        }
        let mode = ReadMode::of(path);
        schema::identify(path, mode, false)?;
        let conn = schema::open_read_only(path, mode)
            .map_err(|e| Error::sqlite(format!("open {}", path.display()), e))?;
        Ok(Source {
            conn,
            keys: Vec::new(),
        })
    }

    /// The name of series `sid`, or a placeholder for an unknown id.
    pub fn name(&self, sid: u32) -> String {
        match self.keys.get(sid as usize) {
            Some(Some(key)) => key.to_string(),
            _ => format!("(unknown series id {sid})"),
        }
    }
}

/// What one readable log slot holds.
pub(crate) struct SlotContent {
    pub points: usize,
    pub sids: BTreeSet<u32>,
}

/// Decodes and checks one log slot. The error carries the reason and the
/// series read before the damage.
pub(crate) fn check_slot(
    blob: &[u8],
    series: usize,
) -> std::result::Result<SlotContent, (String, BTreeSet<u32>)> {
    let slot = Slot::from_bytes(blob).map_err(|e| (e.0.to_string(), BTreeSet::new()))?;
    let mut content = SlotContent {
        points: 0,
        sids: BTreeSet::new(),
    };
    let mut bad: Option<String> = None;
    let decoded = slot.for_each(|_, p| {
        if bad.is_some() {
            return;
        }
        if p.sid as usize >= series {
            bad = Some(format!(
                "a point of series id {}, which does not exist",
                p.sid
            ));
        } else if !(0..=MAX_TIMESTAMP_MS).contains(&p.ts) {
            bad = Some(format!("a point stamped {} ms, outside 1970..9999", p.ts));
        } else if !p.value.is_finite() {
            bad = Some(format!("a point with the value {}", p.value));
        } else {
            content.points += 1;
            content.sids.insert(p.sid);
        }
    });
    match (decoded, bad) {
        (Ok(()), None) => Ok(content),
        (Err(e), _) => Err((e.0.to_string(), content.sids)),
        (Ok(()), Some(reason)) => Err((reason, content.sids)),
    }
}

/// Decodes and checks one chunk; returns its bucket count.
pub(crate) fn check_chunk(
    tier: ChunkTier,
    key: i64,
    blob: &[u8],
    series: usize,
) -> std::result::Result<u32, String> {
    let (_, sid) = ChunkTier::split_key(key);
    if sid as usize >= series {
        return Err(format!("series id {sid} does not exist"));
    }
    let mut buckets = 0u32;
    let mut bad: Option<String> = None;
    codec::for_each_bucket(blob, tier.span, |i, a| {
        buckets += 1;
        if bad.is_none()
            && !(a.sum.is_finite() && a.min.is_finite() && a.max.is_finite() && a.min <= a.max)
        {
            bad = Some(format!(
                "bucket {i} holds impossible numbers (min {}, max {}, sum {})",
                a.min, a.max, a.sum
            ));
        }
    })
    .map_err(|e| e.0.to_string())?;
    match bad {
        Some(reason) => Err(reason),
        None => Ok(buckets),
    }
}

/// `chunk 2024-05-01T12:00:00Z (key ...)`.
pub(crate) fn chunk_part(tier: ChunkTier, key: i64) -> String {
    let (chunk, _) = ChunkTier::split_key(key);
    format!(
        "chunk {} (key {key})",
        format_timestamp(tier.chunk_start(chunk) * 1000)
    )
}

pub(crate) const TIERS: [ChunkTier; 3] = [ChunkTier::MINUTE, ChunkTier::HOURLY, ChunkTier::DAILY];

/// Reads the series directory into `src.keys` (a hole for each id that
/// is missing or invalid), reporting what is wrong with it.
pub(crate) fn read_series(src: &mut Source, damage: &mut Vec<Damage>) {
    let read = (|| -> rusqlite::Result<()> {
        let mut stmt = src
            .conn
            .prepare("SELECT id, resource_type, resource_id, metric FROM series ORDER BY id")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            let key = SeriesKey::new(
                row.get::<_, String>(1).unwrap_or_default(),
                row.get::<_, String>(2).unwrap_or_default(),
                row.get::<_, String>(3).unwrap_or_default(),
            );
            let Ok(idx) = usize::try_from(id) else {
                damage.push(series_damage(id, "negative series id".into()));
                continue;
            };
            if idx >= src.keys.len() {
                src.keys.resize(idx + 1, None);
            }
            match key.validate() {
                Ok(()) => src.keys[idx] = Some(key),
                Err(reason) => damage.push(series_damage(id, reason)),
            }
        }
        Ok(())
    })();
    if let Err(e) = read {
        damage.push(Damage {
            table: "series".into(),
            part: "the table".into(),
            series: Vec::new(),
            problem: format!("cannot be read: {e}"),
        });
    }
    for (id, key) in src.keys.iter().enumerate() {
        if key.is_none() && !damage.iter().any(|d| d.part == format!("id {id}")) {
            damage.push(series_damage(
                id as i64,
                "missing (ids must be dense)".into(),
            ));
        }
    }
}

fn series_damage(id: i64, problem: String) -> Damage {
    Damage {
        table: "series".into(),
        part: format!("id {id}"),
        series: Vec::new(),
        problem,
    }
}

/// Every row of `sql` (`key, blob`), handed to `f`; a read error ends the
/// scan and is returned with the last key read.
pub(crate) fn scan_rows(
    conn: &Connection,
    sql: &str,
    mut f: impl FnMut(i64, &[u8]),
) -> std::result::Result<(), (Option<i64>, rusqlite::Error)> {
    let mut last = None;
    let mut stmt = conn.prepare(sql).map_err(|e| (last, e))?;
    let mut rows = stmt.query([]).map_err(|e| (last, e))?;
    loop {
        match rows.next() {
            Ok(Some(row)) => {
                let key: i64 = row.get(0).map_err(|e| (last, e))?;
                let blob = row
                    .get_ref(1)
                    .and_then(|v| v.as_blob().map_err(Into::into))
                    .map_err(|e| (Some(key), e))?;
                f(key, blob);
                last = Some(key);
            }
            Ok(None) => return Ok(()),
            Err(e) => return Err((last, e)),
        }
    }
}

/// Checks the database at `path`. Refuses (as an error) only what is not
/// one of our databases at all; damage is what the report lists.
pub fn check(path: &Path) -> Result<CheckReport> {
    let mut src = Source::open(path)?;
    let mut damage = Vec::new();
    let mut integrity = Vec::new();
    let verdict = (|| -> rusqlite::Result<Vec<String>> {
        let mut stmt = src
            .conn
            .prepare(&format!("PRAGMA integrity_check({INTEGRITY_MAX})"))?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect()
    })();
    match verdict {
        Ok(lines) if lines == ["ok"] => {}
        Ok(lines) => integrity = lines,
        Err(e) => integrity.push(format!("integrity_check could not run: {e}")),
    }
    read_series(&mut src, &mut damage);
    let series = src.keys.len();

    let mut log_slots = 0u64;
    let scanned = scan_rows(
        &src.conn,
        "SELECT slot, data FROM raw_log ORDER BY slot",
        |id, blob| {
            log_slots += 1;
            if let Err((reason, sids)) = check_slot(blob, series) {
                damage.push(Damage {
                    table: "raw_log".into(),
                    part: format!("slot {id}"),
                    series: sids.iter().map(|&s| src.name(s)).collect(),
                    problem: reason,
                });
            }
        },
    );
    if let Err((last, e)) = scanned {
        damage.push(unreadable("raw_log", last, &e));
    }

    let mut chunks = 0u64;
    for tier in TIERS {
        let sql = format!("SELECT key, data FROM {} ORDER BY key", tier.table);
        let scanned = scan_rows(&src.conn, &sql, |key, blob| {
            chunks += 1;
            if let Err(reason) = check_chunk(tier, key, blob, series) {
                let (_, sid) = ChunkTier::split_key(key);
                damage.push(Damage {
                    table: tier.table.into(),
                    part: chunk_part(tier, key),
                    series: vec![src.name(sid)],
                    problem: reason,
                });
            }
        });
        if let Err((last, e)) = scanned {
            damage.push(unreadable(tier.table, last, &e));
        }
    }

    Ok(CheckReport {
        path: path.display().to_string(),
        ok: integrity.is_empty() && damage.is_empty(),
        integrity,
        series: series as u64,
        log_slots,
        chunks,
        damage,
    })
}

/// The rest of a table that SQLite could not read.
pub(crate) fn unreadable(table: &str, last: Option<i64>, e: &rusqlite::Error) -> Damage {
    Damage {
        table: table.into(),
        part: match last {
            Some(k) => format!("rows after key {k}"),
            None => "every row".into(),
        },
        series: Vec::new(),
        problem: format!("SQLite cannot read them: {e}"),
    }
}

//! Verifying a database without writing to it: SQLite's own integrity
//! check, then ours, which SQLite cannot do: every record of the raw
//! journal (and of a version 1 raw log) and every tier chunk must decode,
//! match its checksum, and name series that exist, with sane times and
//! finite values. Each damaged part is named by where it is (journal
//! segment and byte, table and chunk or slot) and the series it holds.
//!
//! `salvage` copies what these checks pass; both read the files exactly as
//! the read-only commands do (see `schema::ReadMode`).

use crate::codec;
use crate::error::{Error, Result};
use crate::journal::{self, LogPoint};
use crate::legacy;
use crate::model::{MAX_TIMESTAMP_MS, SeriesKey, format_timestamp};
use crate::schema::{self, ReadMode};
use crate::state::ChunkTier;
use rusqlite::Connection;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Integrity messages listed at most (SQLite stops there too).
const INTEGRITY_MAX: usize = 100;

/// One damaged part of a database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Damage {
    /// `raw journal`, `raw_log` (schema version 1 and 2 files), `minute`, `hourly`,
    /// `daily`, `series`, or `sqlite` for what SQLite's own check reports.
    pub table: String,
    /// Which part: `segment 00000000000000000001.seg from byte 4096`,
    /// `slot 17`, `chunk 2024-05-01T12:00:00Z (key ...)`.
    pub part: String,
    /// The series whose data it holds, where that can be known: for a
    /// journal segment or log slot, those read before the damage.
    pub series: Vec<String>,
    /// What is wrong with it, and what cannot be read because of it.
    pub problem: String,
}

/// What `check` found.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    /// The database checked.
    pub path: String,
    /// No damage of either kind.
    pub ok: bool,
    /// SQLite's `integrity_check` messages (empty when it says "ok").
    pub integrity: Vec<String>,
    /// Series ids the series table spans (its highest id read, plus one).
    pub series: u64,
    /// Files of the raw journal.
    pub journal_segments: u64,
    /// Raw points in the records that passed, in the journal and any old
    /// raw log.
    pub raw_points: u64,
    /// Tier chunks read (minute, hourly and daily), damaged ones included.
    pub chunks: u64,
    /// Every damaged part found.
    pub damage: Vec<Damage>,
    /// What is not damage but worth knowing (a record cut short at the end
    /// of the newest segment by a crash: the next start drops it).
    pub notes: Vec<String>,
}

/// The source database, open for reading, and its series directory.
pub(crate) struct Source {
    pub path: PathBuf,
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
        let conn = schema::open_ro(path, mode)
            .map_err(|e| Error::sqlite(format!("open {}", path.display()), e))?;
        Ok(Source {
            path: path.to_path_buf(),
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

    fn names(&self, sids: &BTreeSet<u32>) -> Vec<String> {
        sids.iter().map(|&s| self.name(s)).collect()
    }
}

/// Why a point cannot be right, if it cannot.
fn bad_point(p: &LogPoint, series: usize) -> Option<String> {
    if p.sid as usize >= series {
        Some(format!(
            "a point of series id {}, which does not exist",
            p.sid
        ))
    } else if !(0..=MAX_TIMESTAMP_MS).contains(&p.ts) {
        Some(format!("a point stamped {} ms, outside 1970..9999", p.ts))
    } else if !p.value.is_finite() {
        Some(format!("a point with the value {}", p.value))
    } else {
        None
    }
}

/// One journal segment as far as it can be trusted.
pub(crate) struct SegmentCheck {
    pub name: String,
    /// Bytes from the start that hold good records.
    pub good: u64,
    pub points: u64,
    /// Damage past `good`, if any (a torn tail of the newest segment is a
    /// note, not damage).
    pub damage: Option<Damage>,
    pub note: Option<String>,
}

/// Reads and checks one segment (`last`: the newest).
pub(crate) fn check_segment(src: &Source, path: &Path, last: bool) -> SegmentCheck {
    let series = src.keys.len();
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let bytes = match journal::segment_bytes(path, false) {
        Ok(b) => b,
        Err(e) => {
            return SegmentCheck {
                damage: Some(Damage {
                    table: "raw journal".into(),
                    part: format!("segment {name}"),
                    series: Vec::new(),
                    problem: format!("cannot be read: {e}"),
                }),
                name,
                good: 0,
                points: 0,
                note: None,
            };
        }
    };
    let (mut records, damage) = journal::decode_segment(&bytes);
    // A record that decodes but names no series of ours, or an impossible
    // time, is damage too: it and what follows it are not trusted.
    let mut problem: Option<(usize, String)> = None;
    'records: for (i, r) in records.iter().enumerate() {
        for p in &r.points {
            if let Some(why) = bad_point(p, series) {
                problem = Some((i, why));
                break 'records;
            }
        }
    }
    let mut seen = BTreeSet::new();
    let mut damage_at: Option<(u64, String)> = match &damage {
        Some(journal::Damage::Torn { offset }) => Some((*offset, "a record cut short".into())),
        Some(journal::Damage::Corrupt { offset, reason }) => Some((*offset, reason.clone())),
        None => None,
    };
    let bad_record = problem.is_some();
    if let Some((i, why)) = problem {
        // The offset of record i is where the records before it end.
        let offset = record_offsets(&bytes)[i];
        records.truncate(i);
        damage_at = Some((offset, why));
    }
    for r in &records {
        for p in &r.points {
            seen.insert(p.sid);
        }
    }
    let points = records.iter().map(|r| r.points.len() as u64).sum();
    let good = damage_at.as_ref().map_or(bytes.len() as u64, |(o, _)| *o);
    let torn_tail = last && !bad_record && matches!(damage, Some(journal::Damage::Torn { .. }));
    let (damage, note) = match damage_at {
        None => (None, None),
        Some((offset, _)) if torn_tail => (
            None,
            Some(format!(
                "raw journal segment {name} ends in a record cut short at byte {offset} (a crash or a full disk during a write); the next start drops it"
            )),
        ),
        Some((offset, why)) => (
            Some(Damage {
                table: "raw journal".into(),
                part: format!("segment {name} from byte {offset}"),
                series: src.names(&seen),
                problem: format!(
                    "{why}; the {} bytes from there to the end of the segment cannot be read",
                    bytes.len() as u64 - offset
                ),
            }),
            None,
        ),
    };
    SegmentCheck {
        name,
        good,
        points,
        damage,
        note,
    }
}

/// Where each whole record of a segment starts.
fn record_offsets(bytes: &[u8]) -> Vec<u64> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + 4 <= bytes.len() {
        out.push(pos as u64);
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4")) as usize;
        pos = pos.saturating_add(journal::HEADER).saturating_add(len);
    }
    out
}

/// Why a slot is damaged, and the series read before the damage.
pub(crate) type SlotDamage = (String, BTreeSet<u32>);

/// Decodes and checks one version 1 log slot: its points with their batch
/// numbers.
pub(crate) fn check_slot(
    blob: &[u8],
    series: usize,
) -> std::result::Result<Vec<(u64, LogPoint)>, SlotDamage> {
    let (points, stopped) = legacy::slot_points(blob);
    let mut sids = BTreeSet::new();
    for (_, p) in &points {
        if let Some(why) = bad_point(p, series) {
            return Err((why, sids));
        }
        sids.insert(p.sid);
    }
    match stopped {
        Some(e) => Err((e.0.to_string(), sids)),
        None => Ok(points),
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
    let mut bad = Vec::new();
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
                bad.push((id, "negative series id".to_string()));
                continue;
            };
            if idx >= src.keys.len() {
                src.keys.resize(idx + 1, None);
            }
            match key.validate() {
                Ok(()) => src.keys[idx] = Some(key),
                Err(reason) => bad.push((id, reason)),
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
        if key.is_none() && !bad.iter().any(|(b, _)| *b == id as i64) {
            bad.push((id as i64, "missing (ids must be dense)".into()));
        }
    }
    bad.sort();
    for (id, problem) in bad {
        damage.push(Damage {
            table: "series".into(),
            part: format!("id {id}"),
            series: Vec::new(),
            problem,
        });
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

/// Checks the database at `path` and its raw journal. Refuses (as an
/// error) only what is not one of our databases at all; damage is what the
/// report lists.
pub fn check(path: &Path) -> Result<CheckReport> {
    let mut src = Source::open(path)?;
    let mut damage = Vec::new();
    let mut notes = Vec::new();
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

    let segments = journal::list(&journal::dir_of(path))?;
    let mut raw_points = 0u64;
    for (i, (_, seg)) in segments.iter().enumerate() {
        let c = check_segment(&src, seg, i + 1 == segments.len());
        raw_points += c.points;
        damage.extend(c.damage);
        notes.extend(c.note);
    }
    if legacy::has_raw_log(&src.conn)? {
        let scanned = scan_rows(
            &src.conn,
            "SELECT slot, data FROM raw_log ORDER BY slot",
            |id, blob| match check_slot(blob, series) {
                Ok(points) => raw_points += points.len() as u64,
                Err((reason, sids)) => damage.push(Damage {
                    table: "raw_log".into(),
                    part: format!("slot {id}"),
                    series: src.names(&sids),
                    problem: reason,
                }),
            },
        );
        if let Err((last, e)) = scanned {
            damage.push(unreadable("raw_log", last, &e));
        }
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
        path: src.path.display().to_string(),
        ok: integrity.is_empty() && damage.is_empty(),
        integrity,
        series: series as u64,
        journal_segments: segments.len() as u64,
        raw_points,
        chunks,
        damage,
        notes,
    })
}

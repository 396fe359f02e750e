//! Migrating a Pulse (Go) `metrics.db` into this store, every tier kept.
//!
//! The Go store has one table, `metrics(id, resource_type, resource_id,
//! metric_type, value, [min_value, max_value,] timestamp /*unix seconds*/,
//! tier /*raw|minute|hourly|daily*/)`. Raw rows become raw points (through
//! `Store::write_batch`); rolled-up rows become buckets of the same tier
//! (through `Store::import_buckets`). Both replace what is stored at the same
//! time, so running the import twice stores everything once.
//!
//! The source is only read: it is opened read-only and immutable, and when a
//! WAL file sits beside it (Pulse still running, or not shut down cleanly),
//! the pair is copied first so that recovering the WAL touches the copy.

use crate::error::{Error, Result};
use crate::ingest::{BATCH, write_all};
use crate::model::{HistoryPoint, MAX_TIMESTAMP_MS, Point, SeriesKey, Tier};
use crate::store::Store;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportReport {
    pub source: String,
    /// Rows in the source's `metrics` table.
    pub rows: u64,
    pub raw_points: u64,
    pub minute_buckets: u64,
    pub hourly_buckets: u64,
    pub daily_buckets: u64,
    /// Rows that could not be imported, by reason.
    pub skipped: u64,
    pub skipped_reasons: BTreeMap<String, u64>,
    /// A few skipped rows, as `row <id>: <reason>`.
    pub skipped_examples: Vec<String>,
    /// Whether the source has `min_value`/`max_value` columns.
    pub has_min_max: bool,
    /// What the reader should know about how rows were mapped.
    pub notes: Vec<String>,
    pub duration_ms: u64,
}

/// How far an import has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub rows_done: u64,
    pub rows_total: u64,
}

/// Rows between two progress reports.
const PROGRESS_EVERY: u64 = 50_000;

/// Timestamps above this many seconds (year 5138) can only be milliseconds.
const SECONDS_LIMIT: i64 = 100_000_000_000;

const SKIPPED_EXAMPLES: usize = 10;

/// Imports the Pulse database at `source` into `store`, calling `progress`
/// now and then. Problems with the source (missing, not SQLite, not a Pulse
/// database) are invalid input; the store's own failures are passed on.
/// Nothing is durable until the caller flushes or closes the store.
pub fn import_pulse(
    store: &Store,
    source: &Path,
    mut progress: impl FnMut(Progress),
) -> Result<ImportReport> {
    let started = std::time::Instant::now();
    let opened = open_source(store, source)?;
    let conn = &opened.conn;
    let bad = |m: String| Error::invalid_input(format!("{}: {m}", source.display()));
    let sql_err = |e: rusqlite::Error| bad(format!("cannot read it as a Pulse metrics.db ({e})"));

    let tables: Vec<String> = {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .map_err(sql_err)?;
        stmt.query_map([], |r| r.get::<_, String>(0))
            .map_err(sql_err)?
            .collect::<rusqlite::Result<_>>()
            .map_err(sql_err)?
    };
    if !tables.iter().any(|t| t == "metrics") {
        return Err(bad(format!(
            "has no `metrics` table, so it is not a Pulse metrics.db (tables: {})",
            if tables.is_empty() {
                "none".to_string()
            } else {
                tables.join(", ")
            }
        )));
    }
    let columns: Vec<String> = {
        let mut stmt = conn
            .prepare("PRAGMA table_info(metrics)")
            .map_err(sql_err)?;
        stmt.query_map([], |r| r.get::<_, String>(1))
            .map_err(sql_err)?
            .collect::<rusqlite::Result<_>>()
            .map_err(sql_err)?
    };
    let has = |c: &str| columns.iter().any(|x| x == c);
    let missing: Vec<&str> = [
        "resource_type",
        "resource_id",
        "metric_type",
        "value",
        "timestamp",
        "tier",
    ]
    .into_iter()
    .filter(|c| !has(c))
    .collect();
    if !missing.is_empty() {
        return Err(bad(format!(
            "its `metrics` table lacks column(s) {} (has {})",
            missing.join(", "),
            columns.join(", ")
        )));
    }
    let has_min_max = has("min_value") && has("max_value");
    let (min_col, max_col) = if has_min_max {
        ("min_value", "max_value")
    } else {
        ("NULL", "NULL")
    };

    let rows_total: u64 = conn
        .query_row("SELECT count(*) FROM metrics", [], |r| r.get::<_, i64>(0))
        .map_err(sql_err)?
        .max(0) as u64;
    let mut report = ImportReport {
        source: source.display().to_string(),
        rows: rows_total,
        has_min_max,
        ..ImportReport::default()
    };
    progress(Progress {
        rows_done: 0,
        rows_total,
    });

    let mut stmt = conn
        .prepare(&format!(
            "SELECT rowid, resource_type, resource_id, metric_type, value, {min_col}, {max_col}, timestamp, tier FROM metrics"
        ))
        .map_err(sql_err)?;
    let mut rows = stmt.query([]).map_err(sql_err)?;
    let mut raw: Vec<Point> = Vec::with_capacity(BATCH);
    let mut buckets: [Vec<(SeriesKey, HistoryPoint)>; 3] = Default::default();
    let mut done = 0u64;
    let mut millisecond_rows = 0u64;
    while let Some(row) = rows.next().map_err(sql_err)? {
        done += 1;
        let id = row
            .get_ref(0)
            .ok()
            .and_then(|v| v.as_i64().ok())
            .unwrap_or(done as i64);
        match read_row(row) {
            Ok(r) => {
                if r.was_millis {
                    millisecond_rows += 1;
                }
                match r.tier {
                    Tier::Raw => {
                        raw.push(Point::new(&r.key, r.point.value, r.point.timestamp));
                        if raw.len() >= BATCH {
                            report.raw_points += write_all(store, &raw)? as u64;
                            raw.clear();
                        }
                    }
                    tier => {
                        let list = &mut buckets[tier.index() - 1];
                        list.push((r.key, r.point));
                        if list.len() >= BATCH {
                            let n = store.import_buckets(tier, list)? as u64;
                            add_buckets(&mut report, tier, n);
                            list.clear();
                        }
                    }
                }
            }
            Err((category, reason)) => {
                report.skipped += 1;
                *report.skipped_reasons.entry(category).or_default() += 1;
                if report.skipped_examples.len() < SKIPPED_EXAMPLES {
                    report.skipped_examples.push(format!("row {id}: {reason}"));
                }
            }
        }
        if done.is_multiple_of(PROGRESS_EVERY) {
            progress(Progress {
                rows_done: done,
                rows_total: rows_total.max(done),
            });
        }
    }
    report.raw_points += write_all(store, &raw)? as u64;
    for tier in [Tier::Minute, Tier::Hourly, Tier::Daily] {
        let list = &buckets[tier.index() - 1];
        if !list.is_empty() {
            let n = store.import_buckets(tier, list)? as u64;
            add_buckets(&mut report, tier, n);
        }
    }
    report.rows = done;
    progress(Progress {
        rows_done: done,
        rows_total: done,
    });

    let rolled = report.minute_buckets + report.hourly_buckets + report.daily_buckets;
    if rolled > 0 {
        report.notes.push(format!(
            "Pulse keeps no point count for rolled-up rows: the {rolled} minute/hourly/daily buckets were stored with count 1, so later merges weigh each of them as one point (as Pulse did)"
        ));
    }
    if !has_min_max {
        report.notes.push(
            "this file has no min_value/max_value columns (an older Pulse): min and max were set to the value".into(),
        );
    }
    if millisecond_rows > 0 {
        report.notes.push(format!(
            "{millisecond_rows} row(s) had a timestamp too large for Unix seconds and were read as milliseconds"
        ));
    }
    if report.raw_points > 0 {
        report.notes.push(
            "raw points older than the raw retention are folded into the minute tier and pruned at the next maintenance".into(),
        );
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

fn add_buckets(report: &mut ImportReport, tier: Tier, n: u64) {
    match tier {
        Tier::Minute => report.minute_buckets += n,
        Tier::Hourly => report.hourly_buckets += n,
        Tier::Daily => report.daily_buckets += n,
        Tier::Raw => report.raw_points += n,
    }
}

struct Row {
    tier: Tier,
    key: SeriesKey,
    point: HistoryPoint,
    was_millis: bool,
}

/// One source row, or (category, reason) why it cannot be imported.
fn read_row(row: &rusqlite::Row<'_>) -> std::result::Result<Row, (String, String)> {
    let text = |i: usize, name: &str| -> std::result::Result<String, (String, String)> {
        match row.get_ref(i) {
            Ok(ValueRef::Text(t)) => std::str::from_utf8(t)
                .map(str::to_string)
                .map_err(|_| (name.to_string(), format!("{name}: not valid UTF-8"))),
            Ok(ValueRef::Integer(n)) => Ok(n.to_string()),
            _ => Err((name.to_string(), format!("{name}: missing"))),
        }
    };
    let number = |i: usize| -> Option<f64> {
        match row.get_ref(i) {
            Ok(ValueRef::Real(v)) => Some(v),
            Ok(ValueRef::Integer(n)) => Some(n as f64),
            _ => None,
        }
    };
    let tier_text = text(8, "tier")?;
    let tier: Tier = tier_text.parse().map_err(|_| {
        (
            "tier".to_string(),
            format!("tier: unknown tier {tier_text:?}"),
        )
    })?;
    let key = SeriesKey::new(
        text(1, "resource_type")?,
        text(2, "resource_id")?,
        text(3, "metric_type")?,
    );
    key.validate().map_err(|reason| {
        let field = reason.split(':').next().unwrap_or("name").to_string();
        (field, reason)
    })?;
    let value = number(4).filter(|v| v.is_finite()).ok_or_else(|| {
        (
            "value".to_string(),
            "value: not a finite number".to_string(),
        )
    })?;
    let min = number(5)
        .filter(|v| v.is_finite())
        .unwrap_or(value)
        .min(value);
    let max = number(6)
        .filter(|v| v.is_finite())
        .unwrap_or(value)
        .max(value);
    let ts = match row.get_ref(7) {
        Ok(ValueRef::Integer(n)) => n,
        Ok(ValueRef::Real(v)) if v.is_finite() => v as i64,
        _ => {
            return Err((
                "timestamp".into(),
                "timestamp: missing or not a number".into(),
            ));
        }
    };
    let was_millis = ts > SECONDS_LIMIT;
    let ms = if was_millis {
        Some(ts)
    } else {
        ts.checked_mul(1000)
    };
    let timestamp = ms
        .filter(|ms| (0..=MAX_TIMESTAMP_MS).contains(ms))
        .ok_or_else(|| {
            (
                "timestamp".to_string(),
                format!("timestamp: {ts} is out of range"),
            )
        })?;
    Ok(Row {
        tier,
        key,
        point: HistoryPoint {
            timestamp,
            value,
            min,
            max,
            count: 1,
        },
        was_millis,
    })
}

struct Opened {
    conn: Connection,
    /// A copy of the source taken because of its WAL; removed on drop.
    copy_dir: Option<PathBuf>,
}

impl Drop for Opened {
    fn drop(&mut self) {
        if let Some(dir) = self.copy_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn open_source(store: &Store, source: &Path) -> Result<Opened> {
    let bad = |m: String| Error::invalid_input(format!("{}: {m}", source.display()));
    let meta = std::fs::metadata(source).map_err(|e| bad(format!("cannot read it ({e})")))?;
    if !meta.is_file() {
        return Err(bad("is not a file".into()));
    }
    let mut header = [0u8; 16];
    {
        use std::io::Read;
        let mut f =
            std::fs::File::open(source).map_err(|e| bad(format!("cannot read it ({e})")))?;
        let n = f
            .read(&mut header)
            .map_err(|e| bad(format!("cannot read it ({e})")))?;
        if n < 16 || &header != b"SQLite format 3\0" {
            return Err(bad(
                "is not an SQLite database, so not a Pulse metrics.db".into()
            ));
        }
    }
    let ours = store.config().database_path;
    if let (Ok(a), Ok(b)) = (std::fs::canonicalize(source), std::fs::canonicalize(&ours))
        && a == b
    {
        return Err(bad(
            "is this store's own database; give the Pulse metrics.db".into(),
        ));
    }
    let wal = sidecar(source, "-wal");
    let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    if wal_len == 0 {
        let uri = format!("file:{}?mode=ro&immutable=1", uri_path(source));
        let conn = Connection::open_with_flags(
            uri,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_URI
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| bad(format!("cannot open it ({e})")))?;
        return Ok(Opened {
            conn,
            copy_dir: None,
        });
    }
    // Recent writes live in the WAL; reading them means recovering it, which
    // writes. Do that on a copy, next to our own database (not /tmp, which
    // may be a small RAM disk).
    let base = match ours.parent() {
        Some(p) if store.config().enabled && !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::env::temp_dir(),
    };
    let dir = base.join(format!(".pulse-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    let mut opened = Opened {
        conn: Connection::open_in_memory().map_err(|e| Error::sqlite("open", e))?,
        copy_dir: Some(dir.clone()),
    };
    let copy = dir.join("metrics.db");
    std::fs::copy(source, &copy).map_err(|e| Error::io(format!("copy {}", source.display()), e))?;
    std::fs::copy(&wal, sidecar(&copy, "-wal"))
        .map_err(|e| Error::io(format!("copy {}", wal.display()), e))?;
    opened.conn = Connection::open_with_flags(
        &copy,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| bad(format!("cannot open it ({e})")))?;
    Ok(opened)
}

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// Percent-encodes a path for an SQLite `file:` URI.
fn uri_path(path: &Path) -> String {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = String::new();
    for &b in abs.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a Go-store file; `min_max` picks the newer schema.
    fn pulse_db(path: &Path, min_max: bool, rows: &[(&str, &str, &str, f64, i64, &str)]) {
        let conn = Connection::open(path).unwrap();
        let extra = if min_max {
            "min_value REAL, max_value REAL,"
        } else {
            ""
        };
        conn.execute_batch(&format!(
            "CREATE TABLE metrics (id INTEGER PRIMARY KEY AUTOINCREMENT, resource_type TEXT NOT NULL,
               resource_id TEXT NOT NULL, metric_type TEXT NOT NULL, value REAL NOT NULL, {extra}
               timestamp INTEGER NOT NULL, tier TEXT NOT NULL DEFAULT 'raw');
             CREATE TABLE metrics_meta (key TEXT PRIMARY KEY, value TEXT);"
        ))
        .unwrap();
        for (t, id, m, v, ts, tier) in rows {
            conn.execute(
                "INSERT INTO metrics (resource_type, resource_id, metric_type, value, timestamp, tier) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                rusqlite::params![t, id, m, v, ts, tier],
            )
            .unwrap();
        }
    }

    #[test]
    fn maps_tiers_and_skips_bad_rows() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("pulse.db");
        let t0 = 1_700_000_000; // seconds
        pulse_db(
            &src,
            false,
            &[
                ("vm", "pve1:node1:101", "cpu", 10.0, t0, "raw"),
                ("vm", "pve1:node1:101", "cpu", 12.0, t0 + 5, "raw"),
                ("vm", "pve1:node1:101", "cpu", 11.0, t0 - 3600, "minute"),
                ("vm", "pve1:node1:101", "cpu", 11.0, t0 - 7200, "hourly"),
                (
                    "vm",
                    "pve1:node1:101",
                    "cpu",
                    11.0,
                    t0 - 86_400 * 3,
                    "daily",
                ),
                ("vm", "pve1:node1:101", "cpu", 1.0, t0, "weekly"),
                ("v m", "x", "cpu", 1.0, t0, "raw"),
            ],
        );
        let before = std::fs::read(&src).unwrap();
        let store = Store::open(crate::MetricsConfig {
            database_path: dir.path().join("ours.db"),
            ..Default::default()
        })
        .unwrap();
        let mut seen = Vec::new();
        let r = import_pulse(&store, &src, |p| seen.push(p)).unwrap();
        assert_eq!(
            (
                r.rows,
                r.raw_points,
                r.minute_buckets,
                r.hourly_buckets,
                r.daily_buckets,
                r.skipped
            ),
            (7, 2, 1, 1, 1, 2)
        );
        assert_eq!(r.skipped_reasons.get("tier"), Some(&1));
        assert_eq!(r.skipped_reasons.get("resourceType"), Some(&1));
        assert!(!r.has_min_max);
        assert!(r.notes.iter().any(|n| n.contains("count 1")));
        assert_eq!(seen.last().unwrap().rows_done, 7);
        store.flush().unwrap();
        let stats = store.stats().unwrap();
        assert_eq!(
            (
                stats.raw_count,
                stats.minute_count,
                stats.hourly_count,
                stats.daily_count
            ),
            (2, 1, 1, 1)
        );
        assert_eq!(std::fs::read(&src).unwrap(), before, "the source changed");
        assert!(import_pulse(&store, &dir.path().join("ours.db"), |_| {}).is_err());
    }
}

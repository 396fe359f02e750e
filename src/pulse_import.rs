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
//!
//! Ids are mapped onto the collectors' (see [`crate::pulse_ids`]) so that
//! Pulse's history and ours are one series per resource: a guest seen on
//! several nodes becomes one series, the node it was seen on last kept as
//! metadata, with the node and storage names the ids hold; resource types
//! Pulse later renamed get their canonical name, and a storage's `usage` is
//! stored as `disk`. Ids that cannot be split one way only are kept as they
//! are and listed in the report.

use crate::error::{Error, Result};
use crate::ingest::{BATCH, write_all};
use crate::model::{HistoryPoint, MAX_TIMESTAMP_MS, Point, SeriesKey, Tier};
use crate::pulse_ids::{Mapping, PulseIds, canonical_metric, canonical_type};
use crate::store::{Resource, ResourceMeta, Store};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
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
    /// The collector instance the resources were given (`--instance`);
    /// without it, the instance named in Pulse's ids.
    pub instance: Option<String>,
    /// Pulse resource ids stored under one of ours.
    pub ids_mapped: u64,
    /// Pulse resource ids kept as they are because they split more than one
    /// way (or none); their series do not join the collectors'.
    pub ids_kept: Vec<KeptId>,
    /// Resources whose node, name or instance the ids gave.
    pub resources_described: u64,
    pub duration_ms: u64,
}

/// A Pulse id stored as it is, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeptId {
    pub resource_type: String,
    pub resource_id: String,
    pub reason: String,
}

/// How Pulse's ids become ours: learnt from the file, then applied per row.
struct Remap {
    /// (Pulse type, Pulse id) -> our (type, id).
    ids: HashMap<(String, String), (String, String)>,
    /// Our (type, id) -> (newest Pulse timestamp, what the id says).
    meta: BTreeMap<(String, String), (i64, ResourceMeta)>,
    kept: Vec<KeptId>,
}

impl Remap {
    fn key(&self, key: SeriesKey) -> SeriesKey {
        let (t, id) = self
            .ids
            .get(&(key.resource_type.clone(), key.resource_id.clone()))
            .cloned()
            .unwrap_or((key.resource_type, key.resource_id));
        let metric = canonical_metric(&t, &key.metric).to_string();
        SeriesKey::new(t, id, metric)
    }
}

/// Reads the file's distinct resources once and decides each one's id.
fn learn_ids(conn: &Connection, instance: Option<&str>) -> rusqlite::Result<Remap> {
    let mut stmt = conn.prepare(
        "SELECT resource_type, resource_id, max(timestamp) FROM metrics GROUP BY resource_type, resource_id",
    )?;
    let rows: Vec<(String, String, i64)> = stmt
        .query_map([], |r| {
            let text = |i: usize| -> rusqlite::Result<String> {
                Ok(match r.get_ref(i)? {
                    ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    ValueRef::Integer(n) => n.to_string(),
                    _ => String::new(),
                })
            };
            Ok((text(0)?, text(1)?, r.get::<_, Option<i64>>(2)?.unwrap_or(0)))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let learnt = PulseIds::learn(
        instance,
        rows.iter().map(|(t, id, _)| (t.as_str(), id.as_str())),
    );
    let mut remap = Remap {
        ids: HashMap::new(),
        meta: BTreeMap::new(),
        kept: Vec::new(),
    };
    for (t, id, newest) in rows {
        let canonical = canonical_type(&t).to_string();
        let (new_id, meta) = match learnt.map(&canonical, &id) {
            Mapping::Mapped(new_id, meta) => (new_id, Some(meta)),
            Mapping::Unchanged => (id.clone(), None),
            Mapping::Ambiguous(reason) => {
                remap.kept.push(KeptId {
                    resource_type: t.clone(),
                    resource_id: id.clone(),
                    reason,
                });
                (id.clone(), None)
            }
        };
        if let Some(meta) = meta {
            let slot = remap
                .meta
                .entry((canonical.clone(), new_id.clone()))
                .or_insert((newest, meta.clone()));
            if newest > slot.0 {
                *slot = (newest, meta);
            }
        }
        if (canonical.as_str(), new_id.as_str()) != (t.as_str(), id.as_str()) {
            remap.ids.insert((t, id), (canonical, new_id));
        }
    }
    Ok(remap)
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
/// Resources keep the instance named in Pulse's ids; see [`import_pulse_as`].
pub fn import_pulse(
    store: &Store,
    source: &Path,
    progress: impl FnMut(Progress),
) -> Result<ImportReport> {
    import_pulse_as(store, source, None, progress)
}

/// [`import_pulse`], with every resource given to collector instance
/// `instance` (the `name` of the Proxmox instance that collects it now), so
/// that its history continues in that instance's series.
pub fn import_pulse_as(
    store: &Store,
    source: &Path,
    instance: Option<&str>,
    mut progress: impl FnMut(Progress),
) -> Result<ImportReport> {
    if let Some(name) = instance {
        SeriesKey::new("node", format!("{name}:node"), "cpu")
            .validate()
            .ok()
            .filter(|()| !name.is_empty())
            .ok_or_else(|| {
                Error::invalid_input(format!(
                    "--instance {name:?} cannot prefix a series id (it must be the `name` of a Proxmox instance)"
                ))
            })?;
    }
    let started = std::time::Instant::now();
    let opened = open_source(store, source)?;
    let conn = &opened.conn;
    let bad = |m: String| Error::invalid_input(format!("{}: {m}", source.display()));
    let sql_err = |e: rusqlite::Error| bad(format!("cannot read it as a Pulse metrics.db ({e})"));

    let has_min_max = check_shape(conn, &bad)?;
    let rows_total: u64 = conn
        .query_row("SELECT count(*) FROM metrics", [], |r| r.get::<_, i64>(0))
        .map_err(sql_err)?
        .max(0) as u64;
    let remap = learn_ids(conn, instance).map_err(sql_err)?;
    let mut report = ImportReport {
        source: source.display().to_string(),
        rows: rows_total,
        has_min_max,
        instance: instance.map(str::to_string),
        ids_mapped: remap.ids.len() as u64,
        ..ImportReport::default()
    };
    progress(Progress {
        rows_done: 0,
        rows_total,
    });

    let millisecond_rows = copy_rows(
        store,
        conn,
        has_min_max,
        &remap,
        rows_total,
        &mut report,
        &mut progress,
    )
    .map_err(|e| match e {
        Copy::Source(e) => sql_err(e),
        Copy::Store(e) => e,
    })?;
    let done = report.rows;
    let described: Vec<Resource> = remap
        .meta
        .into_iter()
        .map(|((t, id), (_, meta))| Resource::new(t, id, meta))
        .filter(|r| r.validate().is_ok())
        .collect();
    store.write_resources(&described)?;
    report.resources_described = described.len() as u64;
    report.ids_kept = remap.kept;
    progress(Progress {
        rows_done: done,
        rows_total: done,
    });

    add_notes(&mut report, has_min_max, instance, millisecond_rows);
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// Checks that `conn` is a Pulse metrics.db this import can read; says
/// whether it has min/max columns (older Pulse versions do not).
fn check_shape(conn: &Connection, bad: &dyn Fn(String) -> Error) -> Result<bool> {
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

    Ok(has_min_max)
}

/// Why copying stopped: the source could not be read, or the store refused.
enum Copy {
    Source(rusqlite::Error),
    Store(Error),
}

impl From<rusqlite::Error> for Copy {
    fn from(e: rusqlite::Error) -> Copy {
        Copy::Source(e)
    }
}

impl From<Error> for Copy {
    fn from(e: Error) -> Copy {
        Copy::Store(e)
    }
}

/// Copies every row of `metrics` into the store (raw rows as points, the
/// others as buckets of their tier), in batches, counting and keeping
/// examples of the rows it skips; returns how many rows had millisecond
/// timestamps.
fn copy_rows(
    store: &Store,
    conn: &Connection,
    has_min_max: bool,
    remap: &Remap,
    rows_total: u64,
    report: &mut ImportReport,
    progress: &mut impl FnMut(Progress),
) -> std::result::Result<u64, Copy> {
    let (min_col, max_col) = if has_min_max {
        ("min_value", "max_value")
    } else {
        ("NULL", "NULL")
    };
    let mut stmt = conn
        .prepare(&format!(
            "SELECT rowid, resource_type, resource_id, metric_type, value, {min_col}, {max_col}, timestamp, tier FROM metrics"
        ))
        .map_err(Copy::Source)?;
    let mut rows = stmt.query([]).map_err(Copy::Source)?;
    let mut raw: Vec<Point> = Vec::with_capacity(BATCH);
    let mut buckets: [Vec<(SeriesKey, HistoryPoint)>; 3] = Default::default();
    let mut done = 0u64;
    let mut millisecond_rows = 0u64;
    while let Some(row) = rows.next().map_err(Copy::Source)? {
        done += 1;
        let id = row
            .get_ref(0)
            .ok()
            .and_then(|v| v.as_i64().ok())
            .unwrap_or(done as i64);
        match read_row(row).and_then(|mut r| {
            r.key = remap.key(r.key);
            // A long `--instance` can make an id too long.
            r.key
                .validate()
                .map_err(|e| ("resourceId".to_string(), e))?;
            Ok(r)
        }) {
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
                            add_buckets(report, tier, n);
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
            add_buckets(report, tier, n);
        }
    }
    report.rows = done;
    Ok(millisecond_rows)
}

/// What the user should know about what was imported.
fn add_notes(
    report: &mut ImportReport,
    has_min_max: bool,
    instance: Option<&str>,
    millisecond_rows: u64,
) {
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
    if report.ids_mapped > 0 {
        report.notes.push(format!(
            "{} Pulse resource id(s) were stored under the collectors' ids (guests {{instance}}:{{vmid}}, nodes {{instance}}:{{node}}, storage {{instance}}:{{node}}:{{storage}} or {{instance}}:{{storage}} when shared; storage `usage` as `disk`){}",
            report.ids_mapped,
            match instance {
                Some(name) => format!(", all under instance {name:?}"),
                None => " with the instance named in Pulse's ids (give --instance NAME to use your collector's instance name)".into(),
            }
        ));
    }
    if !report.ids_kept.is_empty() {
        report.notes.push(format!(
            "{} Pulse resource id(s) could not be split into instance, node and storage one way only and were kept as they are (see idsKept); their history does not join the collectors' series",
            report.ids_kept.len()
        ));
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

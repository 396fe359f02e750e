//! Copying everything readable out of a damaged database into a new one,
//! and saying exactly which parts were left behind.
//!
//! What passes `check` is copied as it is stored: rows (series, resource
//! metadata, watermarks, tier chunks) and, for the raw tier, each journal
//! segment up to its first bad record (records decode on their own within
//! a segment, so the good prefix is whole). A version 1 raw log is copied
//! slot by slot into a new journal. The new file is then opened as a store
//! opens it, so a salvage that cannot be opened is an error here, not a
//! surprise at the next start.

use crate::check::{
    self, Damage, Source, TIERS, check_chunk, check_segment, check_slot, chunk_part, scan_rows,
};
use crate::config::MetricsConfig;
use crate::error::{Error, Result, SqlContext};
use crate::journal::{self, LogPoint};
use crate::state::ChunkTier;
use crate::{Store, legacy, lock, schema};
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// What `salvage` copied and what it could not.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SalvageReport {
    /// The damaged database read.
    pub source: String,
    /// The new database written.
    pub output: String,
    /// Series written to the new file; one whose name is lost is kept as
    /// `salvaged/series-id-<id>/unknown`.
    pub series: u64,
    /// Files of the new file's raw journal.
    pub journal_segments: u64,
    /// Raw points copied.
    pub raw_points: u64,
    /// Tier chunks copied.
    pub chunks: u64,
    /// Buckets in the chunks copied.
    pub buckets: u64,
    /// Every part left behind, with the series it held where known.
    pub lost: Vec<Damage>,
}

/// Copies every readable part of `source` into the new database `output`
/// (which must not exist yet). `source` is only read.
pub fn salvage(source: &Path, output: &Path) -> Result<SalvageReport> {
    let out_journal = journal::dir_of(output);
    let occupied = std::fs::metadata(output).is_ok_and(|m| m.len() > 0)
        || journal::list(&out_journal).is_ok_and(|l| !l.is_empty());
    if occupied {
        return Err(Error::invalid_input(format!(
            "{} already exists: salvage writes a new file, give a path that does not exist",
            output.display()
        )));
    }
    let mut src = Source::open(source)?;
    let mut lost = Vec::new();
    check::read_series(&mut src, &mut lost);

    // The schema, exactly as a store creates it; then rows go in under the
    // writer lock, so nothing else writes the new file meanwhile.
    let config = MetricsConfig {
        database_path: output.to_path_buf(),
        ..MetricsConfig::default()
    };
    Store::open(config.clone())?.close()?;
    let held = lock::acquire(output)?;
    let dst = Connection::open_with_flags(output, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .ctx("open the new database")?;
    let mut report = SalvageReport {
        source: source.display().to_string(),
        output: output.display().to_string(),
        series: 0,
        journal_segments: 0,
        raw_points: 0,
        chunks: 0,
        buckets: 0,
        lost: Vec::new(),
    };
    // Listed as `check` lists them: series, raw, then chunks.
    let mut chunks_lost = Vec::new();
    dst.execute_batch("BEGIN IMMEDIATE").ctx("begin salvage")?;
    match copy_rows(&src, &dst, &mut report, &mut chunks_lost) {
        Ok(()) => dst.execute_batch("COMMIT").ctx("commit salvage")?,
        Err(e) => {
            let _ = dst.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    drop(dst);
    copy_raw(&src, &out_journal, &mut report, &mut lost)?;
    lost.append(&mut chunks_lost);
    drop(held);
    Store::open(config)?.close()?;
    report.lost = lost;
    Ok(report)
}

/// Series, resource metadata, watermarks and every chunk that passes.
fn copy_rows(
    src: &Source,
    dst: &Connection,
    report: &mut SalvageReport,
    lost: &mut Vec<Damage>,
) -> Result<()> {
    let series = src.keys.len();
    {
        let mut stmt = src
            .conn
            .prepare("SELECT key, value FROM meta")
            .ctx("read meta")?;
        let rows: Vec<(String, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect())
            .ctx("read meta")?;
        for (key, value) in rows {
            schema::meta_set(dst, &key, value)?;
        }
    }
    // Ids are positions in every record and chunk: a series whose name is
    // lost keeps its data under a name that says so.
    let merged = merged_into(&src.conn);
    for (id, key) in src.keys.iter().enumerate() {
        let (t, i, m) = match key {
            Some(k) => (
                k.resource_type.clone(),
                k.resource_id.clone(),
                k.metric.clone(),
            ),
            None => (
                "salvaged".to_string(),
                format!("series-id-{id}"),
                "unknown".to_string(),
            ),
        };
        dst.execute(
            "INSERT INTO series (id, resource_type, resource_id, metric, merged_into) VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![id as i64, t, i, m, merged.get(&(id as i64))],
        )
        .ctx("copy series")?;
        report.series += 1;
    }
    copy_resources(&src.conn, dst, lost)?;

    let mut failed: Option<rusqlite::Error> = None;
    for tier in TIERS {
        let mut insert = dst
            .prepare(&format!(
                "INSERT INTO {} (key, seq, data) VALUES (?1, ?2, ?3)",
                tier.table
            ))
            .ctx("prepare chunk copy")?;
        let seqs = read_seqs(&src.conn, tier);
        let sql = format!("SELECT key, data FROM {} ORDER BY key", tier.table);
        let scanned = scan_rows(&src.conn, &sql, |key, blob| {
            match check_chunk(tier, key, blob, series) {
                Ok(buckets) => {
                    let seq = seqs.get(&key).copied().unwrap_or(0);
                    if let Err(e) = insert.execute(rusqlite::params![key, seq, blob]) {
                        failed.get_or_insert(e);
                    }
                    report.chunks += 1;
                    report.buckets += u64::from(buckets);
                }
                Err(reason) => {
                    let (_, sid) = ChunkTier::split_key(key);
                    lost.push(Damage {
                        table: tier.table.into(),
                        part: chunk_part(tier, key),
                        series: vec![src.name(sid)],
                        problem: format!(
                            "{reason}; its buckets ({} of {} each) are lost",
                            tier.span,
                            crate::config::format_duration(std::time::Duration::from_secs(
                                tier.bucket as u64
                            ))
                        ),
                    });
                }
            }
        });
        if let Err((last, e)) = scanned {
            lost.push(check::unreadable(tier.table, last, &e));
        }
        if let Some(e) = failed.take() {
            return Err(Error::sqlite("copy a chunk", e));
        }
    }
    Ok(())
}

/// `series.merged_into` of files that have it (version 2 on).
fn merged_into(conn: &Connection) -> BTreeMap<i64, i64> {
    let mut out = BTreeMap::new();
    if let Ok(mut stmt) =
        conn.prepare("SELECT id, merged_into FROM series WHERE merged_into IS NOT NULL")
        && let Ok(mut rows) = stmt.query([])
    {
        while let Ok(Some(row)) = rows.next() {
            if let (Ok(id), Ok(into)) = (row.get::<_, i64>(0), row.get::<_, i64>(1)) {
                out.insert(id, into);
            }
        }
    }
    out
}

/// Resource metadata rows (version 2 on), as they are.
fn copy_resources(src: &Connection, dst: &Connection, lost: &mut Vec<Damage>) -> Result<()> {
    const COLUMNS: &str =
        "resource_type, resource_id, name, node, instance, status, template, tags";
    let Ok(mut stmt) = src.prepare(&format!("SELECT {COLUMNS} FROM resources")) else {
        return Ok(()); // a version 1 file keeps none
    };
    let mut insert = dst
        .prepare(&format!(
            "INSERT INTO resources ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
        ))
        .ctx("prepare resource copy")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, Option<String>>(5)?,
            r.get::<_, Option<i64>>(6)?,
            r.get::<_, Option<String>>(7)?,
        ))
    });
    let rows = match rows.and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>()) {
        Ok(rows) => rows,
        Err(e) => {
            lost.push(Damage {
                table: "resources".into(),
                part: "the table".into(),
                series: Vec::new(),
                problem: format!("cannot be read, so names and tags are lost: {e}"),
            });
            return Ok(());
        }
    };
    for r in rows {
        insert
            .execute(rusqlite::params![r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7])
            .ctx("copy resource metadata")?;
    }
    Ok(())
}

/// The raw tier: each journal segment up to its first bad record, or a
/// version 1 log's good slots turned into journal records.
fn copy_raw(
    src: &Source,
    out_journal: &Path,
    report: &mut SalvageReport,
    lost: &mut Vec<Damage>,
) -> Result<()> {
    let segments = journal::list(&journal::dir_of(&src.path))?;
    if !segments.is_empty() {
        std::fs::create_dir_all(out_journal)
            .map_err(|e| Error::io(format!("create {}", out_journal.display()), e))?;
    }
    for (i, (_, path)) in segments.iter().enumerate() {
        let c = check_segment(src, path, i + 1 == segments.len());
        lost.extend(c.damage);
        if c.good == 0 {
            continue;
        }
        let bytes = journal::segment_bytes(path, false)
            .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        let target = out_journal.join(&c.name);
        let mut file = std::fs::File::create(&target)
            .map_err(|e| Error::io(format!("create {}", target.display()), e))?;
        file.write_all(&bytes[..c.good as usize])
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(format!("write {}", target.display()), e))?;
        report.journal_segments += 1;
        report.raw_points += c.points;
    }
    if legacy::has_raw_log(&src.conn)? {
        let series = src.keys.len();
        let mut by_seq: BTreeMap<u64, Vec<LogPoint>> = BTreeMap::new();
        let scanned = scan_rows(
            &src.conn,
            "SELECT slot, data FROM raw_log ORDER BY slot",
            |id, blob| match check_slot(blob, series) {
                Ok(points) => {
                    for (seq, p) in points {
                        by_seq.entry(seq).or_default().push(p);
                    }
                }
                Err((reason, sids)) => lost.push(Damage {
                    table: "raw_log".into(),
                    part: format!("slot {id}"),
                    series: sids.iter().map(|&s| src.name(s)).collect(),
                    problem: format!("{reason}; the raw points it held are lost"),
                }),
            },
        );
        if let Err((last, e)) = scanned {
            lost.push(check::unreadable("raw_log", last, &e));
        }
        if !by_seq.is_empty() {
            let mut j = journal::Journal::new(out_journal.to_path_buf(), Vec::new());
            for (seq, mut points) in by_seq {
                points.sort_by_key(|p| (p.ts, p.sid));
                report.raw_points += points.len() as u64;
                j.append(seq, &points, series)?;
            }
            j.close()?;
            report.journal_segments = journal::list(out_journal)?.len() as u64;
        }
    }
    Ok(())
}

/// Each chunk's `seq` (which batches it folded in), read apart from the
/// blobs so that a blob SQLite cannot read does not hide it.
fn read_seqs(conn: &Connection, tier: ChunkTier) -> std::collections::HashMap<i64, i64> {
    let sql = format!("SELECT key, seq FROM {}", tier.table);
    let mut out = std::collections::HashMap::new();
    if let Ok(mut stmt) = conn.prepare(&sql)
        && let Ok(mut rows) = stmt.query([])
    {
        while let Ok(Some(row)) = rows.next() {
            if let (Ok(k), Ok(s)) = (row.get::<_, i64>(0), row.get::<_, i64>(1)) {
                out.insert(k, s);
            }
        }
    }
    out
}

//! Copying everything readable out of a damaged database into a new file,
//! and saying exactly which parts were left behind.
//!
//! Rows are copied as they are stored (log slots, chunks, series, meta),
//! each one only if `check` passes it, so what survives is bit for bit what
//! was there. A damaged log slot is dropped whole: without a checksum no
//! point in it can be trusted. The new file is then opened as a store
//! would open it, so a salvage that cannot be opened is an error here, not
//! a surprise at the next start.

use crate::check::{self, Damage, Source, TIERS, check_chunk, check_slot, chunk_part, scan_rows};
use crate::config::MetricsConfig;
use crate::error::{Error, Result, SqlContext};
use crate::lock;
use crate::state::ChunkTier;
use crate::{Store, schema};
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;
use std::path::Path;

/// What `salvage` copied and what it could not.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SalvageReport {
    pub source: String,
    pub output: String,
    pub series: u64,
    pub log_slots: u64,
    pub raw_points: u64,
    pub chunks: u64,
    pub buckets: u64,
    /// Every part left behind, with the series it held.
    pub lost: Vec<Damage>,
}

/// Copies every readable series, log slot and chunk of `source` into the
/// new database `output` (which must not exist yet). `source` is only read.
pub fn salvage(source: &Path, output: &Path) -> Result<SalvageReport> {
    if std::fs::metadata(output).is_ok_and(|m| m.len() > 0) {
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
    dst.execute_batch("BEGIN IMMEDIATE").ctx("begin salvage")?;
    let mut report = SalvageReport {
        source: source.display().to_string(),
        output: output.display().to_string(),
        series: 0,
        log_slots: 0,
        raw_points: 0,
        chunks: 0,
        buckets: 0,
        lost: Vec::new(),
    };
    let copied = copy(&src, &dst, &mut report, &mut lost);
    match copied {
        Ok(()) => dst.execute_batch("COMMIT").ctx("commit salvage")?,
        Err(e) => {
            let _ = dst.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    drop(dst);
    drop(held);
    Store::open(config)?.close()?;
    report.lost = lost;
    Ok(report)
}

fn copy(
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
    // Ids are positions in every slot and chunk: a series whose name is
    // lost keeps its data under a name that says so.
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
            "INSERT INTO series (id, resource_type, resource_id, metric) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![id as i64, t, i, m],
        )
        .ctx("copy series")?;
        report.series += 1;
    }

    let mut failed: Option<rusqlite::Error> = None;
    let mut insert = dst
        .prepare("INSERT INTO raw_log (slot, data) VALUES (?1, ?2)")
        .ctx("prepare slot copy")?;
    let scanned = scan_rows(
        &src.conn,
        "SELECT slot, data FROM raw_log ORDER BY slot",
        |id, blob| match check_slot(blob, series) {
            Ok(content) => {
                if let Err(e) = insert.execute(rusqlite::params![id, blob]) {
                    failed.get_or_insert(e);
                }
                report.log_slots += 1;
                report.raw_points += content.points as u64;
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
    if let Some(e) = failed.take() {
        return Err(Error::sqlite("copy a log slot", e));
    }

    for tier in TIERS {
        let mut insert = dst
            .prepare(&format!(
                "INSERT INTO {} (key, seq, data) VALUES (?1, ?2, ?3)",
                tier.table
            ))
            .ctx("prepare chunk copy")?;
        let sql = format!("SELECT key, data FROM {} ORDER BY key", tier.table);
        let seqs = read_seqs(&src.conn, tier);
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
                            "{reason}; its {} buckets ({} each) are lost",
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

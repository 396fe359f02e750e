//! Reading the raw log of schema version 1 and 2 files (table `raw_log`:
//! page-sized slots rewritten in place; "the version 1 raw log" here and in
//! `check` and `salvage`), which the journal replaced in schema version 3.
//! Opening such a file for writing moves the log into the journal once, in
//! the migration that drops the table; read-only commands read it in place.

use crate::bits::{ByteReader, DecodeError, unzigzag};
use crate::error::{Error, Result, SqlContext};
use crate::journal::{LogPoint, Record};
use rusqlite::Connection;
use std::collections::BTreeMap;

const SLOT_BYTES: usize = 4000;
const SLOT_VERSION: u8 = 3;
const SLOT_HEADER: usize = 3;

/// Calls `f(seq, point)` for every point of one slot, in write order.
fn for_each(bytes: &[u8], mut f: impl FnMut(u64, LogPoint)) -> Result<(), DecodeError> {
    if bytes.len() != SLOT_BYTES {
        return Err(DecodeError("log slot has the wrong size"));
    }
    if bytes[0] != SLOT_VERSION {
        return Err(DecodeError("unknown log slot version"));
    }
    let used = usize::from(u16::from_le_bytes([bytes[1], bytes[2]]));
    if !(SLOT_HEADER..=SLOT_BYTES).contains(&used) {
        return Err(DecodeError("log slot length out of range"));
    }
    let mut r = ByteReader::new(&bytes[SLOT_HEADER..used]);
    while r.pos < r.buf.len() {
        let seq = r.varint()?;
        let n = r.varint()?;
        let mut ts = unzigzag(r.varint()?);
        let mut sid = 0i64;
        for _ in 0..n {
            let head = r.varint()?;
            sid += unzigzag(head >> 1);
            if head & 1 == 1 {
                ts += unzigzag(r.varint()?);
            }
            let value = r.f64()?;
            let sid = u32::try_from(sid).map_err(|_| DecodeError("series id out of range"))?;
            f(seq, LogPoint { sid, ts, value });
        }
    }
    Ok(())
}

/// The points of one version 1 slot with their batch numbers, as far as
/// they decode, and why decoding stopped early if it did (for `check`).
pub fn slot_points(bytes: &[u8]) -> (Vec<(u64, LogPoint)>, Option<DecodeError>) {
    let mut out = Vec::new();
    let stopped = for_each(bytes, |seq, p| out.push((seq, p))).err();
    (out, stopped)
}

/// Whether the file still has a version 1 raw log.
pub fn has_raw_log(conn: &Connection) -> Result<bool> {
    let n: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'raw_log'",
            [],
            |r| r.get(0),
        )
        .ctx("look for the raw log")?;
    Ok(n > 0)
}

/// Every batch of the version 1 raw log, oldest first, as journal records.
/// Slots that were released but not yet overwritten hold points already
/// rolled up and pruned; replay skips them like any other folded point.
pub fn records(conn: &Connection) -> Result<Vec<Record>> {
    let mut by_seq: BTreeMap<u64, Vec<LogPoint>> = BTreeMap::new();
    let mut stmt = conn
        .prepare("SELECT slot, data FROM raw_log")
        .ctx("read the raw log")?;
    let mut rows = stmt.query([]).ctx("read the raw log")?;
    while let Some(row) = rows.next().ctx("read the raw log")? {
        let slot: i64 = row.get(0).ctx("read the raw log")?;
        let blob = row
            .get_ref(1)
            .ctx("read the raw log")?
            .as_blob()
            .ctx("read the raw log")?;
        for_each(blob, |seq, p| by_seq.entry(seq).or_default().push(p))
            .map_err(|e| Error::damaged(format!("raw_log slot {slot}: {e}")))?;
    }
    Ok(by_seq
        .into_iter()
        .map(|(seq, mut points)| {
            // A batch written across two slots comes back in two runs.
            points.sort_by_key(|p| (p.sid, p.ts));
            Record {
                seq,
                points,
                rolled_to: None,
            }
        })
        .collect())
}

/// Copies the version 1 raw log into the journal in `dir` (synced), so the
/// migration that follows may drop it. Leftovers of an interrupted copy are
/// replaced: a version 1 file had no journal of its own.
pub fn convert(conn: &Connection, dir: &std::path::Path) -> Result<()> {
    let records = records(conn)?;
    for (_, path) in crate::journal::list(dir)? {
        std::fs::remove_file(&path)
            .map_err(|e| Error::io(format!("remove {}", path.display()), e))?;
    }
    if records.is_empty() {
        return Ok(());
    }
    let series: i64 = conn
        .query_row("SELECT count(*) FROM series", [], |r| r.get(0))
        .ctx("count series")?;
    let mut journal = crate::journal::Journal::new(dir.to_path_buf(), Vec::new());
    for r in &records {
        journal.append(r.seq, &r.points, series.max(0) as usize)?;
    }
    journal.close()?;
    tracing::info!(
        "moved {} batches of the raw log into the journal {}",
        records.len(),
        dir.display()
    );
    Ok(())
}

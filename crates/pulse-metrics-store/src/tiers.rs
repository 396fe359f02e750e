//! Reading and writing the chunks of the rolled-up tiers (`minute`,
//! `hourly`, `daily`): one row per series per span, keyed time-major.

use super::codec::{self, Agg};
use super::state::{ChunkTier, DAY, HOUR, MINUTE, State};
use crate::error::{Error, Result, SqlContext};
use rusqlite::{Connection, OptionalExtension};

pub type Buckets = Vec<Option<Agg>>;

fn corrupt(tier: ChunkTier, key: i64, e: codec::DecodeError) -> Error {
    Error::damaged(describe(tier, key, e.0))
}

/// "minute chunk 2026-12-01T15:00:00Z of series id 7 (key 123): reason".
pub fn describe(tier: ChunkTier, key: i64, reason: &str) -> String {
    let (chunk, sid) = ChunkTier::split_key(key);
    format!(
        "{} chunk {} of series id {sid} (key {key}): {reason}",
        tier.table,
        crate::model::format_timestamp(tier.chunk_start(chunk) * 1000)
    )
}

/// One chunk of one series, if stored.
pub fn read(conn: &Connection, tier: ChunkTier, chunk: i64, sid: u32) -> Result<Option<Buckets>> {
    let key = tier.key(chunk, sid);
    let sql = format!("SELECT data FROM {} WHERE key = ?1", tier.table);
    let blob: Option<Vec<u8>> = conn
        .prepare_cached(&sql)
        .and_then(|mut s| s.query_row([key], |r| r.get(0)).optional())
        .ctx("read chunk")?;
    blob.map(|b| codec::decode_chunk(&b, tier.span).map_err(|e| corrupt(tier, key, e)))
        .transpose()
}

/// Every chunk with span number in `[first, last]`, for the series `want`
/// accepts; calls `f(chunk, sid, buckets)` in key order.
pub fn scan(
    conn: &Connection,
    tier: ChunkTier,
    first: i64,
    last: i64,
    want: impl Fn(u32) -> bool,
    mut f: impl FnMut(i64, u32, Buckets),
) -> Result<()> {
    scan_chunks(conn, tier, first, last, |sid, start, blob| {
        if want(sid) {
            f(
                tier.chunk_of(start),
                sid,
                codec::decode_chunk(blob, tier.span)?,
            );
        }
        Ok(())
    })
}

/// Like `scan`, but hands out each row's series, start and encoded blob,
/// so the caller decodes straight into its own buffers (the hot path of
/// many-series queries).
pub fn scan_chunks(
    conn: &Connection,
    tier: ChunkTier,
    first: i64,
    last: i64,
    mut f: impl FnMut(u32, i64, &[u8]) -> Result<(), codec::DecodeError>,
) -> Result<()> {
    let sql = format!(
        "SELECT key, data FROM {} WHERE key >= ?1 AND key < ?2 ORDER BY key",
        tier.table
    );
    let mut stmt = conn.prepare_cached(&sql).ctx("prepare chunk scan")?;
    let (lo, hi) = key_bounds(first, last);
    let mut rows = stmt.query([lo, hi]).ctx("scan chunks")?;
    while let Some(row) = rows.next().ctx("scan chunks")? {
        let key: i64 = row.get(0).ctx("read chunk key")?;
        let (chunk, sid) = ChunkTier::split_key(key);
        let blob = row
            .get_ref(1)
            .ctx("read chunk")?
            .as_blob()
            .ctx("read chunk")?;
        f(sid, tier.chunk_start(chunk), blob).map_err(|e| corrupt(tier, key, e))?;
    }
    Ok(())
}

/// The first and last span number with any row, if any.
pub fn extent(conn: &Connection, tier: ChunkTier) -> Result<Option<(i64, i64)>> {
    // Two subqueries: SQLite answers a lone min() or max() from the end of
    // the B-tree, but scans the whole table for both in one SELECT.
    let t = tier.table;
    let sql = format!("SELECT (SELECT min(key) FROM {t}), (SELECT max(key) FROM {t})");
    let (lo, hi): (Option<i64>, Option<i64>) = conn
        .prepare_cached(&sql)
        .and_then(|mut s| s.query_row([], |r| Ok((r.get(0)?, r.get(1)?))))
        .ctx("read tier extent")?;
    Ok(lo
        .zip(hi)
        .map(|(lo, hi)| (ChunkTier::split_key(lo).0, ChunkTier::split_key(hi).0)))
}

/// Key range of span numbers `[first, last]`. Span numbers use 40 bits of
/// the key; clamped so "everything" scans work.
fn key_bounds(first: i64, last: i64) -> (i64, i64) {
    let lo = if first <= i64::MIN >> 24 {
        i64::MIN
    } else {
        first << 24
    };
    let hi = if last >= (i64::MAX >> 24) - 1 {
        i64::MAX
    } else {
        (last + 1) << 24
    };
    (lo, hi)
}

/// `meta` keys of the number of buckets each rolled-up tier holds: kept in
/// the transaction that changes the tier, so an open needs not read every
/// chunk to count them (at 40,000 series that is 150 MB).
const COUNT_KEYS: [&str; 3] = ["buckets_minute", "buckets_hourly", "buckets_daily"];

/// The buckets stored per rolled-up tier (minute, hourly, daily): as last
/// saved, or counted from the chunks when a file has not saved them yet.
pub fn restore_counts(conn: &Connection) -> Result<[u64; 3]> {
    let mut out = [0u64; 3];
    for (i, (key, tier)) in COUNT_KEYS
        .iter()
        .zip([ChunkTier::MINUTE, ChunkTier::HOURLY, ChunkTier::DAILY])
        .enumerate()
    {
        let saved = crate::schema::meta_get(conn, key, -1)?;
        out[i] = if saved >= 0 {
            saved as u64
        } else {
            population_between(conn, tier, i64::MIN, i64::MAX)?
        };
    }
    Ok(out)
}

/// Saves the bucket counts (inside the caller's transaction).
pub fn save_counts(conn: &Connection, counts: [u64; 3]) -> Result<()> {
    for (key, n) in COUNT_KEYS.iter().zip(counts) {
        crate::schema::meta_set(conn, key, n as i64)?;
    }
    Ok(())
}

/// `counts` changed by `deltas`.
pub fn add_counts(counts: [u64; 3], deltas: [i64; 3]) -> [u64; 3] {
    std::array::from_fn(|i| counts[i].saturating_add_signed(deltas[i]))
}

/// Buckets stored in one chunk (0 when there is none).
pub fn population(conn: &Connection, tier: ChunkTier, chunk: i64, sid: u32) -> Result<u64> {
    let key = tier.key(chunk, sid);
    population_between(conn, tier, key, key + 1)
}

/// Total buckets stored in rows with key in `[from_key, to_key)`.
pub fn population_between(
    conn: &Connection,
    tier: ChunkTier,
    from_key: i64,
    to_key: i64,
) -> Result<u64> {
    let sql = format!(
        "SELECT key, data FROM {} WHERE key >= ?1 AND key < ?2",
        tier.table
    );
    let mut stmt = conn.prepare_cached(&sql).ctx("prepare population")?;
    let mut rows = stmt.query([from_key, to_key]).ctx("count buckets")?;
    let mut total = 0u64;
    while let Some(row) = rows.next().ctx("count buckets")? {
        let key: i64 = row.get(0).ctx("read key")?;
        let blob = row
            .get_ref(1)
            .ctx("read chunk")?
            .as_blob()
            .ctx("read chunk")?;
        total +=
            u64::from(codec::chunk_population(blob, tier.span).map_err(|e| corrupt(tier, key, e))?);
    }
    Ok(total)
}

/// Writes (or deletes, when empty) a chunk; `seq` is the last batch folded in.
pub fn write(
    conn: &Connection,
    tier: ChunkTier,
    chunk: i64,
    sid: u32,
    seq: u64,
    buckets: &[Option<Agg>],
) -> Result<()> {
    if buckets.iter().all(Option::is_none) {
        return delete(conn, tier, chunk, sid);
    }
    write_encoded(conn, tier, chunk, sid, seq, &codec::encode_chunk(buckets))
}

/// Deletes a chunk (one with no bucket left).
pub fn delete(conn: &Connection, tier: ChunkTier, chunk: i64, sid: u32) -> Result<()> {
    let sql = format!("DELETE FROM {} WHERE key = ?1", tier.table);
    conn.prepare_cached(&sql)
        .and_then(|mut s| s.execute([tier.key(chunk, sid)]))
        .ctx("delete chunk")?;
    Ok(())
}

/// Stores a chunk already encoded (`codec::encode_chunk` of buckets that
/// are not all empty).
pub fn write_encoded(
    conn: &Connection,
    tier: ChunkTier,
    chunk: i64,
    sid: u32,
    seq: u64,
    data: &[u8],
) -> Result<()> {
    let key = tier.key(chunk, sid);
    let sql = format!(
        "INSERT INTO {} (key, seq, data) VALUES (?1, ?2, ?3) \
         ON CONFLICT(key) DO UPDATE SET seq = excluded.seq, data = excluded.data",
        tier.table
    );
    conn.prepare_cached(&sql)
        .and_then(|mut s| s.execute(rusqlite::params![key, seq as i64, data]))
        .ctx("write chunk")?;
    Ok(())
}

/// The `seq` of a chunk, if stored.
pub fn seq(conn: &Connection, tier: ChunkTier, chunk: i64, sid: u32) -> Result<Option<u64>> {
    let sql = format!("SELECT seq FROM {} WHERE key = ?1", tier.table);
    let v: Option<i64> = conn
        .prepare_cached(&sql)
        .and_then(|mut s| s.query_row([tier.key(chunk, sid)], |r| r.get(0)).optional())
        .ctx("read chunk seq")?;
    Ok(v.map(|s| s as u64))
}

/// The first bucket start (Unix s) stored in `tier`, if any.
fn first_bucket(conn: &Connection, tier: ChunkTier) -> Result<Option<i64>> {
    let min_key: Option<i64> = conn
        .query_row(&format!("SELECT min(key) FROM {}", tier.table), [], |r| {
            r.get(0)
        })
        .ctx("oldest chunk")?;
    let Some(k) = min_key else {
        return Ok(None);
    };
    let (chunk, _) = ChunkTier::split_key(k);
    let mut first: Option<i64> = None;
    scan(
        conn,
        tier,
        chunk,
        chunk,
        |_| true,
        |chunk, _, buckets| {
            if let Some(i) = buckets.iter().position(Option::is_some) {
                let ts = tier.chunk_start(chunk) + i as i64 * tier.bucket;
                first = Some(first.map_or(ts, |f| f.min(ts)));
            }
        },
    )?;
    Ok(first)
}

/// The oldest data of the store (Unix s): the earliest first bucket of any
/// tier, or raw point. A coarse bucket only says "somewhere in this hour (or
/// day)"; when a finer tier starts inside it and has lost nothing there to
/// retention (its floor is not after the bucket's start), the finer start is
/// the better answer, down to the raw point.
pub fn oldest(conn: &Connection, st: &State) -> Result<Option<i64>> {
    let open_first = st
        .open
        .iter()
        .filter_map(|(&(_, hour), b)| {
            b.iter()
                .position(Option::is_some)
                .map(|m| hour + m as i64 * MINUTE)
        })
        .min();
    let raw_first = st
        .series
        .iter()
        .filter_map(|s| s.raw.first().map(|p| p.ts))
        .min();
    let disk_minute = first_bucket(conn, ChunkTier::MINUTE)?;
    // Finest first: raw, minute, hourly, daily.
    let first = [
        raw_first,
        match (disk_minute, open_first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        },
        first_bucket(conn, ChunkTier::HOURLY)?,
        first_bucket(conn, ChunkTier::DAILY)?,
    ];
    let width = [1, MINUTE, HOUR, DAY];
    let f = st.floors;
    let floors = [f.raw, f.minute, f.hourly, f.daily];
    let mut best: Option<(usize, i64)> = None;
    for (t, candidate) in first.iter().enumerate() {
        if let Some(c) = *candidate
            && best.is_none_or(|(_, b)| c < b)
        {
            best = Some((t, c));
        }
    }
    while let Some((t, c)) = best {
        let finer = (0..t).rev().find_map(|u| {
            first[u]
                .filter(|&s| s >= c && s < c + width[t] && floors[u] <= c)
                .map(|s| (u, s))
        });
        match finer {
            Some(x) => best = Some(x),
            None => break,
        }
    }
    Ok(best.map(|(_, c)| c))
}

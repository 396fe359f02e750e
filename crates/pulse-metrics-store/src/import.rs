//! Storing rolled-up buckets that come from another store (`import-pulse`):
//! each replaces the bucket with the same start, so importing twice stores
//! each bucket once.

use crate::codec::Agg;
use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::model::{HistoryPoint, SeriesKey, Tier};
use crate::queue::SeriesRef;
use crate::state::{ChunkTier, floor_to};
use crate::tiers;
use crate::writer::{insert_series, publish_series, resolve_series};
use std::collections::BTreeMap;

/// Stores `buckets` of `tier` (a rolled-up tier) in one transaction.
pub fn import(disk: &Disk, tier: Tier, buckets: &[(SeriesKey, HistoryPoint)]) -> Result<usize> {
    let Some(t) = ChunkTier::of(tier) else {
        return Err(Error::invalid_input(
            "raw points are imported with write_batch, not import_buckets",
        ));
    };
    let refs: Vec<SeriesRef> = buckets
        .iter()
        .map(|(k, _)| SeriesRef::New(k.clone()))
        .collect();
    let (sids, new_series) = {
        let st = disk.shared.read();
        resolve_series(&st, refs.iter())?
    };
    let mut by_chunk: BTreeMap<(i64, u32), Vec<(usize, Agg)>> = BTreeMap::new();
    for ((_, b), sid) in buckets.iter().zip(&sids) {
        let start = floor_to(b.timestamp.div_euclid(1000), t.bucket);
        let agg = Agg {
            count: b.count,
            sum: b.value * b.count as f64,
            min: b.min,
            max: b.max,
        };
        by_chunk
            .entry((t.chunk_of(start), *sid))
            .or_default()
            .push((t.index_of(start), agg));
    }
    let (first_new, counts) = {
        let st = disk.shared.read();
        (st.series.len(), st.disk_buckets)
    };
    disk.commit_staged(
        "import",
        |conn| {
            insert_series(conn, first_new, &new_series)?;
            let mut delta = 0i64;
            for ((chunk, sid), entries) in &by_chunk {
                let stored = tiers::read(conn, t, *chunk, *sid)?;
                let old = stored
                    .as_ref()
                    .map_or(0, |b| b.iter().flatten().count() as i64);
                let mut chunk_buckets = stored.unwrap_or_else(|| vec![None; t.span]);
                for (i, agg) in entries {
                    chunk_buckets[*i] = Some(*agg);
                }
                // Keep the chunk's fold mark: imported buckets fold no raw points.
                let seq = tiers::seq(conn, t, *chunk, *sid)?.unwrap_or(0);
                tiers::write(conn, t, *chunk, *sid, seq, &chunk_buckets)?;
                delta += chunk_buckets.iter().flatten().count() as i64 - old;
            }
            let mut deltas = [0i64; 3];
            deltas[tier.index() - 1] = delta;
            tiers::save_counts(conn, tiers::add_counts(counts, deltas))?;
            Ok((delta, new_series))
        },
        |st, (delta, new_series)| {
            publish_series(st, new_series);
            let i = tier.index() - 1;
            st.disk_buckets[i] = st.disk_buckets[i].saturating_add_signed(delta);
        },
    )?;
    Ok(buckets.len())
}

//! In-memory state shared by the writer and the readers (under one RwLock):
//! the series directory, the raw tier, and the minute buckets of hours not
//! sealed to disk yet.
//!
//! The raw tier lives in memory because its durable form (the log) is in
//! write order, which is cheap to write and useless to read; a reader wants
//! one series at a time. The log is replayed into this at open.

use super::codec::Agg;
use crate::model::SeriesKey;
use std::collections::{BTreeMap, HashMap};

pub const MINUTE: i64 = 60;
pub const HOUR: i64 = 3_600;
pub const DAY: i64 = 86_400;

/// Geometry of a rolled-up tier's chunks.
#[derive(Debug, Clone, Copy)]
pub struct ChunkTier {
    pub table: &'static str,
    /// Seconds per bucket.
    pub bucket: i64,
    /// Buckets per chunk.
    pub span: usize,
}

impl ChunkTier {
    /// 20 minutes: a chunk of 60 would be ~1.3 KB and only two would fit in
    /// a 4 KiB page; eight of 20 fill it (see docs/storage.md).
    pub const MINUTE: ChunkTier = ChunkTier {
        table: "minute",
        bucket: MINUTE,
        span: 20,
    };
    pub const HOURLY: ChunkTier = ChunkTier {
        table: "hourly",
        bucket: HOUR,
        span: 24,
    };
    pub const DAILY: ChunkTier = ChunkTier {
        table: "daily",
        bucket: DAY,
        span: 32,
    };

    pub fn chunk_secs(self) -> i64 {
        self.bucket * self.span as i64
    }
    /// Chunk number holding the bucket that contains `ts`.
    pub fn chunk_of(self, ts: i64) -> i64 {
        ts.div_euclid(self.chunk_secs())
    }
    pub fn chunk_start(self, chunk: i64) -> i64 {
        chunk * self.chunk_secs()
    }
    /// Index of `ts`'s bucket inside its chunk.
    pub fn index_of(self, ts: i64) -> usize {
        (ts.rem_euclid(self.chunk_secs()) / self.bucket) as usize
    }
    pub fn key(self, chunk: i64, sid: u32) -> i64 {
        (chunk << 24) | i64::from(sid)
    }
    pub fn split_key(key: i64) -> (i64, u32) {
        (key >> 24, (key & 0xFF_FFFF) as u32)
    }
}

/// Highest series id a chunk key can hold.
pub const MAX_SERIES: usize = 1 << 24;

/// A raw point in memory; `slot` is the log slot holding it, so the slot can
/// be reused once none of its points is needed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawPoint {
    /// Unix seconds: a series keeps one point per second.
    pub ts: i64,
    /// The millisecond within that second it was written with.
    pub milli: u16,
    pub value: f64,
    pub slot: u32,
}

impl RawPoint {
    /// A point written at Unix ms `at`.
    pub fn at(at: i64, value: f64, slot: u32) -> RawPoint {
        RawPoint {
            ts: at.div_euclid(1000),
            milli: at.rem_euclid(1000) as u16,
            value,
            slot,
        }
    }

    /// Its timestamp in Unix ms, as written.
    pub fn ms(&self) -> i64 {
        self.ts * 1000 + i64::from(self.milli)
    }
}

#[derive(Debug)]
pub struct SeriesEntry {
    pub key: SeriesKey,
    /// Sorted by `ts`, one point per second.
    pub raw: Vec<RawPoint>,
}

impl SeriesEntry {
    /// Inserts or replaces the point of its second; returns the replaced one.
    pub fn upsert(&mut self, p: RawPoint) -> Option<RawPoint> {
        match self.raw.last() {
            Some(last) if last.ts < p.ts => {
                self.raw.push(p);
                None
            }
            None => {
                self.raw.push(p);
                None
            }
            _ => match self.raw.binary_search_by_key(&p.ts, |r| r.ts) {
                Ok(i) => Some(std::mem::replace(&mut self.raw[i], p)),
                Err(i) => {
                    self.raw.insert(i, p);
                    None
                }
            },
        }
    }

    /// Raw points with `from <= ts <= to`.
    pub fn raw_range(&self, from: i64, to: i64) -> &[RawPoint] {
        let a = self.raw.partition_point(|p| p.ts < from);
        let b = self.raw.partition_point(|p| p.ts <= to);
        if a >= b { &[] } else { &self.raw[a..b] }
    }

    /// Aggregate of the raw points in `[from, from + len)`.
    pub fn raw_agg(&self, from: i64, len: i64) -> Option<Agg> {
        let pts = self.raw_range(from, from + len - 1);
        let mut it = pts.iter();
        let mut acc = Agg::of(it.next()?.value);
        for p in it {
            acc.merge(&Agg::of(p.value));
        }
        Some(acc)
    }
}

/// Retention floors: data older than these has been pruned from each tier.
/// Aligned to the tier's chunk (raw: minute) so a bucket is either whole or
/// gone, which is what lets a late point be folded exactly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Floors {
    pub raw: i64,
    pub minute: i64,
    pub hourly: i64,
    pub daily: i64,
}

/// Minute buckets of one unsealed hour, rolled up but not yet on disk; they
/// can be rebuilt from the raw log, which keeps them until the hour is sealed.
pub type OpenHour = Box<[Option<Agg>; 60]>;

#[derive(Debug, Default)]
pub struct State {
    pub series: Vec<SeriesEntry>,
    pub ids: HashMap<SeriesKey, u32>,
    /// `(hour start, series)` -> rolled minute buckets of that unsealed hour.
    pub open: BTreeMap<(i64, u32), OpenHour>,
    pub floors: Floors,
    /// Buckets on disk per rolled-up tier (minute, hourly, daily).
    pub disk_buckets: [u64; 3],
    /// Raw points held for folding after their raw bucket was pruned.
    pub late_points: u64,
}

impl State {
    pub fn raw_count(&self) -> u64 {
        self.series.iter().map(|s| s.raw.len() as u64).sum()
    }

    pub fn open_buckets(&self) -> u64 {
        self.open
            .values()
            .map(|h| h.iter().flatten().count() as u64)
            .sum()
    }
}

pub fn floor_to(ts: i64, unit: i64) -> i64 {
    ts.div_euclid(unit) * unit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsert_keeps_one_point_per_second_in_order() {
        let mut s = SeriesEntry {
            key: SeriesKey::new("a", "b", "c"),
            raw: Vec::new(),
        };
        for ts in [10, 5, 20, 5, 15] {
            s.upsert(RawPoint::at(ts * 1000, ts as f64, 0));
        }
        let replaced = s.upsert(RawPoint::at(15_250, -1.0, 1));
        assert_eq!(replaced.map(|p| p.value), Some(15.0));
        let ts: Vec<i64> = s.raw.iter().map(|p| p.ts).collect();
        assert_eq!(ts, [5, 10, 15, 20]);
        assert_eq!(s.raw_range(6, 15).len(), 2);
        assert_eq!(s.raw_agg(0, 60).unwrap().count, 4);
    }

    #[test]
    fn chunk_keys_split_back() {
        let t = ChunkTier::MINUTE;
        let key = t.key(t.chunk_of(1_700_000_000), 4242);
        assert_eq!(ChunkTier::split_key(key), (1_700_000_000 / 1200, 4242));
        assert_eq!(
            t.index_of(1_700_000_000),
            ((1_700_000_000 % 1200) / 60) as usize
        );
        assert_eq!(ChunkTier::DAILY.chunk_secs(), 32 * 86_400);
    }
}

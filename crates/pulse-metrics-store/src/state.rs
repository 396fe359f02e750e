//! In-memory state shared by the writer and the readers (under one RwLock,
//! see `disk.rs`): the series directory, the raw tier, and the minute
//! buckets of unsealed hours that the raw tier alone cannot give back (late
//! points were merged into them); the current hour's other minutes are
//! computed from the raw tier when asked for (`State::open_hours`).
//!
//! The raw tier lives in memory because its durable form (the journal) is
//! in write order, which is cheap to write and useless to read; a reader
//! wants one series at a time. The journal is replayed into this at open.

use crate::codec::Agg;
use crate::model::{SeriesKey, Tier};
pub use crate::raw::RawSeries;
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
    /// 20 minutes: a ~440-byte row of 20 packs nine to a 4 KiB page, where
    /// rows of 60 left a third of every page empty (see docs/storage.md).
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

    /// The chunk geometry of a rolled-up tier; `None` for raw, which is
    /// not kept in chunks of buckets.
    pub fn of(tier: Tier) -> Option<ChunkTier> {
        match tier {
            Tier::Raw => None,
            Tier::Minute => Some(ChunkTier::MINUTE),
            Tier::Hourly => Some(ChunkTier::HOURLY),
            Tier::Daily => Some(ChunkTier::DAILY),
        }
    }

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

#[derive(Debug)]
pub struct SeriesEntry {
    pub key: SeriesKey,
    /// The raw tier, compressed.
    pub raw: RawSeries,
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

impl Floors {
    /// Below every floor a store can have.
    pub const BOTTOM: Floors = Floors {
        raw: i64::MIN,
        minute: i64::MIN,
        hourly: i64::MIN,
        daily: i64::MIN,
    };

    /// Raw, minute, hourly and daily, in Unix ms (as reports give them).
    pub fn to_ms(self) -> [i64; 4] {
        [self.raw, self.minute, self.hourly, self.daily].map(|f| f.max(0) * 1000)
    }
}

/// Minute buckets of one unsealed hour, rolled up but not yet on disk. Held
/// only for hours into which late points were merged; an open rebuilds them
/// from the journal, which keeps their raw and late points until the hour is
/// sealed.
pub type OpenHour = Box<[Option<Agg>; 60]>;

#[derive(Debug, Default)]
pub struct State {
    pub series: Vec<SeriesEntry>,
    pub ids: HashMap<SeriesKey, u32>,
    /// `(series, hour start)` -> rolled minute buckets of that unsealed
    /// hour, for the hours late points were merged into (series first: a
    /// query wants one series' open hours). See `open_hours` for the rest.
    pub open: BTreeMap<(u32, i64), OpenHour>,
    pub floors: Floors,
    /// `now` of the last rollup (seconds): the minutes of the current hour
    /// before it are rolled up, and computed from raw when asked for.
    pub rolled_to: i64,
    /// Buckets on disk per rolled-up tier (minute, hourly, daily).
    pub disk_buckets: [u64; 3],
    /// Raw points held for folding after their raw bucket was pruned.
    pub late_points: u64,
}

impl State {
    pub fn raw_count(&self) -> u64 {
        self.series.iter().map(|s| s.raw.len()).sum()
    }

    /// Bytes of memory the raw tier holds.
    pub fn raw_bytes(&self) -> u64 {
        self.series
            .iter()
            .map(|s| s.raw.memory_bytes() as u64)
            .sum()
    }

    /// Drops raw points older than `floor` (seconds); returns how many.
    pub fn drop_raw_below(&mut self, floor: i64) -> u64 {
        self.series
            .iter_mut()
            .map(|s| s.raw.drop_below(floor))
            .sum()
    }

    /// The minute buckets of `sid`'s unsealed hours starting in
    /// `[from, to]` (seconds): the hours held in `open`, and the current
    /// hour's minutes closed by the last rollup, computed from the raw tier,
    /// which always holds every point of an unsealed hour (the raw floor
    /// never passes one). Not keeping those in memory is what lets 40,000
    /// series fit (60 buckets each would be 96 MB).
    pub fn open_hours(&self, sid: u32, from: i64, to: i64) -> Vec<(i64, OpenHour)> {
        let first_hour = floor_to(from, HOUR);
        let mut out: Vec<(i64, OpenHour)> = self
            .open
            .range((sid, first_hour)..=(sid, to))
            .map(|(&(_, h), b)| (h, b.clone()))
            .collect();
        if let Some((hour, buckets)) = self.current_hour(sid)
            && hour >= first_hour
            && hour <= to
            && !self.open.contains_key(&(sid, hour))
        {
            out.push((hour, buckets));
            out.sort_by_key(|(h, _)| *h);
        }
        out
    }

    /// The current hour's rolled-up minutes of `sid` from raw, if any.
    fn current_hour(&self, sid: u32) -> Option<(i64, OpenHour)> {
        let hour = floor_to(self.rolled_to, HOUR);
        let closed = (self.rolled_to - hour) / MINUTE;
        if closed <= 0 || hour < self.floors.minute {
            return None;
        }
        let mask = if closed >= 60 {
            u64::MAX
        } else {
            (1u64 << closed) - 1
        };
        let buckets = self.series.get(sid as usize)?.raw.minute_aggs(hour, mask);
        buckets
            .iter()
            .any(Option::is_some)
            .then(|| (hour, Box::new(buckets)))
    }

    /// Minute buckets held in memory or computed from raw (for statistics).
    pub fn open_buckets(&self) -> u64 {
        let computed: u64 = (0..self.series.len() as u32)
            .filter(|sid| {
                !self
                    .open
                    .contains_key(&(*sid, floor_to(self.rolled_to, HOUR)))
            })
            .filter_map(|sid| self.current_hour(sid))
            .map(|(_, b)| b.iter().flatten().count() as u64)
            .sum();
        computed + self.open_held()
    }

    fn open_held(&self) -> u64 {
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

//! The raw tier of one series in memory: compressed chunks, one per
//! 20-minute window (aligned to UTC, so a window rolls up into exactly one
//! minute chunk and a minute never straddles two windows).
//!
//! A point costs what it carries: the timestamp as the change of the
//! interval since the previous point (one bit for a regular poll), the value
//! as one bit when it repeats and otherwise as the difference of its bit
//! pattern from the previous value in as few bits as it needs (shifted past
//! its trailing zeros when it has many: see `put_change`). A
//! full-precision random walk takes ~7 bytes a point; a counter that does not
//! move, one bit. Held as 16-byte pairs, 40,000 series over two hours did not
//! fit in half a gigabyte; compressed they do (docs/storage.md).
//!
//! Points arrive in time order almost always, and are then appended to the
//! open window's chunk without decoding it. A point for an older second
//! (late, or a rewrite of a second) rebuilds its chunk.

use crate::bits::{BitReader, DecodeError, WordAppender, delta, shifted_delta, undelta, zigzag};
use crate::codec::Agg;

/// Seconds of one chunk's window.
pub const WINDOW: i64 = 1200;
const _: () = assert!(3600 % WINDOW == 0, "windows must tile an hour");

/// A raw point: a series keeps one per second, with the millisecond it was
/// written with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawPoint {
    /// Unix seconds.
    pub ts: i64,
    /// The millisecond within that second it was written with.
    pub milli: u16,
    pub value: f64,
}

impl RawPoint {
    /// A point written at Unix ms `at`.
    pub fn at(at: i64, value: f64) -> RawPoint {
        RawPoint {
            ts: at.div_euclid(1000),
            milli: at.rem_euclid(1000) as u16,
            value,
        }
    }

    /// Its timestamp in Unix ms, as written.
    pub fn ms(&self) -> i64 {
        self.ts * 1000 + i64::from(self.milli)
    }
}

/// Where appending continues: the last point's time, interval and value.
#[derive(Debug, Clone, Copy, Default)]
struct Tail {
    bits: WordAppender,
    last_ms: i64,
    last_delta: i64,
    last_bits: u64,
}

/// Writes a changed value as the difference of its bit pattern from the
/// previous one: `0` and the zigzagged difference (sized), or `1` and the
/// difference shifted past its trailing zeros (`bits::shifted_delta`).
/// Proxmox's memory percentages so take ~2.9 bytes a change instead of
/// ~5.7.
fn put_change(w: &mut WordAppender, out: &mut Vec<u8>, bits: u64, last: u64) {
    if let Some((tz, rest)) = shifted_delta(bits, last) {
        w.put(out, 1, 1);
        w.put(out, u64::from(tz), 6);
        w.put_sized(out, rest);
    } else {
        w.put(out, 0, 1);
        w.put_sized(out, delta(f64::from_bits(bits), f64::from_bits(last)));
    }
}

/// Reads what `put_change` wrote; returns the new bit pattern.
fn get_change(r: &mut BitReader<'_>, last: u64) -> Result<u64, DecodeError> {
    if r.bit()? {
        r.get_shifted(last)
    } else {
        Ok(undelta(r.get_sized()?, f64::from_bits(last)).to_bits())
    }
}

/// The points of one series in one window, encoded.
#[derive(Debug, Clone)]
struct Chunk {
    /// Window start, Unix seconds.
    window: i64,
    len: u32,
    first_ts: i64,
    last_ts: i64,
    bytes: Vec<u8>,
    tail: Tail,
}

impl Chunk {
    /// An empty chunk with room for `capacity` bytes (a series' chunks
    /// are about the same size window after window: sizing the next one
    /// like the last spares the reallocations of a growing vector).
    fn new(window: i64, capacity: usize) -> Chunk {
        Chunk {
            window,
            len: 0,
            first_ts: i64::MAX,
            last_ts: i64::MIN,
            bytes: Vec::with_capacity(capacity),
            tail: Tail::default(),
        }
    }

    /// Appends a point later than every point held.
    fn push(&mut self, p: RawPoint) {
        debug_assert!(p.ts > self.last_ts || self.len == 0);
        let ms = p.ms();
        let bits = p.value.to_bits();
        let t = &mut self.tail;
        let out = &mut self.bytes;
        if self.len == 0 {
            t.bits.put_sized(out, (ms - self.window * 1000) as u64);
            t.bits.put(out, bits, 64);
            t.last_delta = 0;
            self.first_ts = p.ts;
        } else {
            let d = ms - t.last_ms;
            let dod = d - t.last_delta;
            if dod == 0 {
                t.bits.put(out, 0, 1);
            } else {
                t.bits.put(out, 1, 1);
                t.bits.put_sized(out, zigzag(dod));
            }
            if bits == t.last_bits {
                t.bits.put(out, 0, 1);
            } else {
                t.bits.put(out, 1, 1);
                put_change(&mut t.bits, out, bits, t.last_bits);
            }
            t.last_delta = d;
        }
        t.last_ms = ms;
        t.last_bits = bits;
        self.last_ts = p.ts;
        self.len += 1;
    }

    fn decode(&self, mut f: impl FnMut(RawPoint)) -> Result<(), DecodeError> {
        let mut r = BitReader::with_tail(&self.bytes, self.tail.bits.acc, self.tail.bits.n);
        let mut ms = 0i64;
        let mut d = 0i64;
        let mut bits = 0u64;
        for i in 0..self.len {
            if i == 0 {
                ms = self.window * 1000 + r.get_sized()? as i64;
                bits = r.get(64)?;
            } else {
                if r.bit()? {
                    d += crate::bits::unzigzag(r.get_sized()?);
                }
                ms += d;
                if r.bit()? {
                    bits = get_change(&mut r, bits)?;
                }
            }
            f(RawPoint::at(ms, f64::from_bits(bits)));
        }
        Ok(())
    }

    fn points(&self) -> Vec<RawPoint> {
        let mut out = Vec::with_capacity(self.len as usize);
        // Chunks are only ever built by `push`: a decode error is a bug.
        self.decode(|p| out.push(p)).unwrap_or_else(undecodable);
        out
    }

    fn from_points(window: i64, points: &[RawPoint]) -> Chunk {
        let mut c = Chunk::new(window, 0);
        for p in points {
            c.push(*p);
        }
        c.bytes.shrink_to_fit();
        c
    }
}

/// The raw tier of one series: chunks in window order.
#[derive(Debug, Clone, Default)]
pub struct RawSeries {
    chunks: Vec<Chunk>,
    /// Points before this second are dropped (retention); whole chunks go at
    /// once, the chunk straddling the floor is filtered on read.
    floor: i64,
}

fn window_of(ts: i64) -> i64 {
    ts.div_euclid(WINDOW) * WINDOW
}

impl RawSeries {
    /// Inserts or replaces the point of its second; returns whether a point
    /// was replaced.
    pub fn upsert(&mut self, p: RawPoint) -> bool {
        let w = window_of(p.ts);
        let mut capacity = 0;
        match self.chunks.last_mut() {
            Some(last) if last.window == w && p.ts > last.last_ts => {
                last.push(p);
                return false;
            }
            Some(last) if last.window < w => {
                last.bytes.shrink_to_fit();
                capacity = last.bytes.len() + last.bytes.len() / 8 + 8;
            }
            _ => {}
        }
        match self.chunks.binary_search_by_key(&w, |c| c.window) {
            Err(i) => {
                let mut c = Chunk::new(w, capacity);
                c.push(p);
                self.chunks.insert(i, c);
                false
            }
            Ok(i) => {
                let chunk = &mut self.chunks[i];
                let mut pts = chunk.points();
                let replaced = match pts.binary_search_by_key(&p.ts, |q| q.ts) {
                    Ok(j) => {
                        pts[j] = p;
                        true
                    }
                    Err(j) => {
                        pts.insert(j, p);
                        false
                    }
                };
                *chunk = Chunk::from_points(w, &pts);
                replaced
            }
        }
    }

    /// Calls `f` for each point with `from <= ts <= to` (seconds), in order.
    pub fn for_each_in(&self, from: i64, to: i64, mut f: impl FnMut(RawPoint)) {
        let from = from.max(self.floor);
        if from > to {
            return;
        }
        let first = self.chunks.partition_point(|c| c.last_ts < from);
        for c in &self.chunks[first..] {
            if c.first_ts > to {
                break;
            }
            let whole = c.first_ts >= from && c.last_ts <= to;
            c.decode(|p| {
                if whole || (p.ts >= from && p.ts <= to) {
                    f(p)
                }
            })
            .unwrap_or_else(undecodable);
        }
    }

    /// The points with `from <= ts <= to` (seconds).
    pub fn range(&self, from: i64, to: i64) -> Vec<RawPoint> {
        let mut out = Vec::new();
        self.for_each_in(from, to, |p| out.push(p));
        out
    }

    /// Aggregate of the points in `[from, from + len)` (seconds).
    pub fn agg(&self, from: i64, len: i64) -> Option<Agg> {
        let mut acc: Option<Agg> = None;
        self.for_each_in(from, from + len - 1, |p| match &mut acc {
            Some(a) => a.merge(&Agg::of(p.value)),
            None => acc = Some(Agg::of(p.value)),
        });
        acc
    }

    /// The minute buckets of `hour` (seconds) for the minutes in `minutes`
    /// (bit i = minute i), from one pass over the hour's points.
    pub fn minute_aggs(&self, hour: i64, minutes: u64) -> [Option<Agg>; 60] {
        let mut out = [None; 60];
        let minutes = minutes & ((1u64 << 60) - 1);
        if minutes == 0 {
            return out;
        }
        let first = i64::from(minutes.trailing_zeros());
        let last = 63 - i64::from(minutes.leading_zeros());
        self.for_each_in(hour + first * 60, hour + last * 60 + 59, |p| {
            let m = ((p.ts - hour) / 60) as usize;
            if minutes & (1 << m) != 0 {
                let a = Agg::of(p.value);
                match &mut out[m] {
                    Some(acc) => acc.merge(&a),
                    None => out[m] = Some(a),
                }
            }
        });
        out
    }

    /// The oldest point kept.
    pub fn first(&self) -> Option<RawPoint> {
        let mut found = None;
        for c in &self.chunks {
            if c.last_ts < self.floor {
                continue;
            }
            c.decode(|p| {
                if found.is_none() && p.ts >= self.floor {
                    found = Some(p);
                }
            })
            .unwrap_or_else(undecodable);
            if found.is_some() {
                break;
            }
        }
        found
    }

    /// The newest point.
    pub fn last(&self) -> Option<RawPoint> {
        let c = self.chunks.last()?;
        if c.last_ts < self.floor {
            return None;
        }
        Some(RawPoint {
            ts: c.last_ts,
            milli: c.tail.last_ms.rem_euclid(1000) as u16,
            value: f64::from_bits(c.tail.last_bits),
        })
    }

    /// Points kept.
    pub fn len(&self) -> u64 {
        let mut n: u64 = self.chunks.iter().map(|c| u64::from(c.len)).sum();
        if let Some(c) = self.chunks.first()
            && c.first_ts < self.floor
        {
            c.decode(|p| n -= u64::from(p.ts < self.floor))
                .unwrap_or_else(undecodable);
        }
        n
    }

    /// Drops every point before `floor` (seconds); returns how many.
    pub fn drop_below(&mut self, floor: i64) -> u64 {
        if floor <= self.floor {
            return 0;
        }
        let before = self.len();
        self.floor = floor;
        let keep = self.chunks.partition_point(|c| c.last_ts < floor);
        self.chunks.drain(..keep);
        before - self.len()
    }

    /// Bytes of memory the encoded points take (for statistics).
    pub fn encoded_bytes(&self) -> usize {
        self.chunks.iter().map(|c| c.bytes.capacity()).sum()
    }

    /// Bytes of memory held, chunk headers included.
    pub fn memory_bytes(&self) -> usize {
        self.encoded_bytes() + self.chunks.capacity() * std::mem::size_of::<Chunk>()
    }
}

/// What a chunk that does not decode costs: its points from the failure
/// on. Chunks are only ever built by `push`, so this is a bug; the writer
/// thread goes on (a panic would stop every write) and says so loudly, and
/// tests fail on it.
fn undecodable(e: DecodeError) {
    tracing::error!(
        "an in-memory raw chunk does not decode ({}): its points from there on are missing from answers; please report this",
        e.0
    );
    debug_assert!(false, "an in-memory raw chunk does not decode: {}", e.0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        #[test]
        fn keeps_the_last_write_of_each_second_in_order(
            writes in proptest::collection::vec(
                (0i64..20_000_000, prop_oneof![
                    any::<f64>().prop_filter("finite", |v| v.is_finite()),
                    (0i32..4).prop_map(f64::from),
                    // Changes ending in zero bits: coded shifted.
                    (0u64..1 << 21).prop_map(|pages| (pages * 4096) as f64 / 8_589_934_592.0 * 100.0),
                    (0u64..1 << 40).prop_map(|n| n as f64),
                ]), 1..400),
            floor in 0i64..20_000,
        ) {
            let mut s = RawSeries::default();
            let mut model: BTreeMap<i64, RawPoint> = BTreeMap::new();
            for (ms, v) in writes {
                // Mostly in order, as polls are; the range covers many windows.
                let p = RawPoint::at(1_700_000_000_000 + ms, v);
                let replaced = s.upsert(p);
                prop_assert_eq!(replaced, model.insert(p.ts, p).is_some());
            }
            let floor = 1_700_000_000 + floor;
            let dropped = s.drop_below(floor);
            let below = model.range(..floor).count() as u64;
            prop_assert_eq!(dropped, below);
            model.retain(|ts, _| *ts >= floor);
            let got = s.range(i64::MIN, i64::MAX);
            prop_assert_eq!(got.len(), model.len());
            prop_assert_eq!(s.len(), model.len() as u64);
            for (g, e) in got.iter().zip(model.values()) {
                prop_assert_eq!(g.ms(), e.ms());
                prop_assert_eq!(g.value.to_bits(), e.value.to_bits());
            }
            prop_assert_eq!(s.first().map(|p| p.ms()), model.values().next().map(|p| p.ms()));
            prop_assert_eq!(s.last().map(|p| p.ms()), model.values().last().map(|p| p.ms()));
        }
    }

    #[test]
    fn regular_polls_cost_a_bit_when_nothing_moves() {
        let mut s = RawSeries::default();
        for i in 0..240 {
            s.upsert(RawPoint::at(1_800_000_000_000 + i * 5000, 42.5));
        }
        assert_eq!(s.len(), 240);
        // 2 bits a point after the first two.
        let used: usize = s.chunks.iter().map(|c| c.bytes.len() + 8).sum();
        assert!(used <= 80, "{used}");
        let a = s.agg(1_800_000_000, 60).unwrap();
        assert_eq!(a.count, 12);
    }

    #[test]
    fn changes_ending_in_zero_bits_cost_less() {
        // Used memory (whole 4 KiB pages) over an 8 GiB total, in percent,
        // moving by up to a few hundred pages a poll.
        let mut s = RawSeries::default();
        let mut used: i64 = 4 << 30;
        let mut values = Vec::new();
        for i in 0..240i64 {
            used += ((i * 7919) % 257 - 128) * 4096;
            let v = used as f64 / 8_589_934_592.0 * 100.0;
            values.push(v);
            s.upsert(RawPoint::at(1_800_000_000_000 + i * 5000, v));
        }
        let got: Vec<u64> = s
            .range(i64::MIN, i64::MAX)
            .iter()
            .map(|p| p.value.to_bits())
            .collect();
        assert_eq!(got, values.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        let used_bytes: usize = s.chunks.iter().map(|c| c.bytes.len()).sum();
        // Shifted, a change takes ~3 bytes here; unshifted it took ~5.7.
        assert!(
            used_bytes < 240 * 7 / 2,
            "{used_bytes} bytes for 240 points"
        );
    }
}

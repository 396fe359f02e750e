//! Byte layouts of the two kinds of blob the store keeps.
//!
//! * A **log slot** (table `raw_log`) holds flushed raw points in write order.
//!   Every slot is the same size (one page), so a flush rewrites one page in
//!   place instead of allocating pages: that is what keeps the bytes written
//!   per flush near the size of the data (see docs/storage.md).
//! * A **chunk** (tables `minute`, `hourly`, `daily`) holds the buckets of one
//!   series over one span (an hour of minutes, a day of hours, 32 days).
//!   Floats are stored as the difference of their bit patterns from a
//!   predicted value, in as few bits as it needs: slowly moving series
//!   shrink, and every value comes back bit for bit.

/// Bytes of one log slot: one slot per 4 KiB page with room for SQLite's cell
/// and record headers, so an update of a slot never spills to an overflow page.
pub const SLOT_BYTES: usize = 4000;
const SLOT_VERSION: u8 = 3;
const SLOT_HEADER: usize = 3;
/// Worst-case size of a record header (seq, count, base timestamp varints).
const RECORD_HEADER_MAX: usize = 10 + 3 + 10;
/// Chunks carry a CRC-32 of their body since version 4, so that damage is
/// found rather than decoded into plausible numbers; version 3 (no CRC)
/// is still read.
const CHUNK_VERSION: u8 = 4;
const CHUNK_V3: u8 = 3;
const CHUNK_HEADER: usize = 5;

/// Aggregate of some raw values: what every rolled-up bucket stores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agg {
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

impl Agg {
    pub fn of(value: f64) -> Agg {
        Agg {
            count: 1,
            sum: value,
            min: value,
            max: value,
        }
    }

    /// Folds `other` in: counts and sums add, so means stay count-weighted.
    pub fn merge(&mut self, other: &Agg) {
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    pub fn mean(&self) -> f64 {
        self.sum / self.count as f64
    }

    /// The aggregate of a sequence of aggregates, or `None` if it is empty.
    pub fn combine<'a>(mut it: impl Iterator<Item = &'a Agg>) -> Option<Agg> {
        let mut acc = *it.next()?;
        for a in it {
            acc.merge(a);
        }
        Some(acc)
    }
}

/// Malformed blob: the store refuses to guess.
#[derive(Debug)]
pub struct DecodeError(pub &'static str);

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or(DecodeError("truncated"))?;
        self.pos += 1;
        Ok(b)
    }
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError("truncated"))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(DecodeError("truncated"))?;
        self.pos = end;
        Ok(s)
    }
    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError("varint too long"))
    }
    fn f64(&mut self) -> Result<f64, DecodeError> {
        let b = self.bytes(8)?;
        Ok(f64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
}

/// One point as it travels through the log: series id, Unix ms, value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogPoint {
    pub sid: u32,
    pub ts: i64,
    pub value: f64,
}

/// A page-sized log slot being filled.
#[derive(Debug, Clone)]
pub struct Slot {
    buf: Vec<u8>,
}

impl Default for Slot {
    fn default() -> Self {
        Slot::new()
    }
}

impl Slot {
    pub fn new() -> Slot {
        let mut buf = vec![0u8; SLOT_BYTES];
        buf[0] = SLOT_VERSION;
        buf[1..3].copy_from_slice(&(SLOT_HEADER as u16).to_le_bytes());
        Slot { buf }
    }

    fn used(&self) -> usize {
        usize::from(u16::from_le_bytes([self.buf[1], self.buf[2]]))
    }

    pub fn is_empty(&self) -> bool {
        self.used() == SLOT_HEADER
    }

    /// The full blob, always `SLOT_BYTES` long so updates stay in place.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Appends as many of `points` (sorted by time) as fit, as one record of
    /// batch `seq`; returns how many were taken.
    pub fn append(&mut self, seq: u64, points: &[LogPoint]) -> usize {
        let used = self.used();
        let free = SLOT_BYTES - used;
        if points.is_empty() || free <= RECORD_HEADER_MAX {
            return 0;
        }
        let budget = free - RECORD_HEADER_MAX;
        let base_ts = points[0].ts;
        let mut body = Vec::with_capacity(budget.min(points.len() * 10));
        let (mut prev_sid, mut prev_ts) = (0i64, base_ts);
        let mut taken = 0;
        for p in points {
            // One varint carries the series delta and whether the time
            // moved: a poll's points share their second, so most points
            // cost one byte plus the value.
            let ts_delta = p.ts - prev_ts;
            let head = (zigzag(i64::from(p.sid) - prev_sid) << 1) | u64::from(ts_delta != 0);
            let ts_len = if ts_delta != 0 {
                varint_len(zigzag(ts_delta))
            } else {
                0
            };
            if body.len() + varint_len(head) + ts_len + 8 > budget {
                break;
            }
            put_varint(&mut body, head);
            if ts_delta != 0 {
                put_varint(&mut body, zigzag(ts_delta));
            }
            body.extend_from_slice(&p.value.to_le_bytes());
            prev_sid = i64::from(p.sid);
            prev_ts = p.ts;
            taken += 1;
        }
        if taken == 0 {
            return 0;
        }
        let mut rec = Vec::with_capacity(RECORD_HEADER_MAX + body.len());
        put_varint(&mut rec, seq);
        put_varint(&mut rec, taken as u64);
        put_varint(&mut rec, zigzag(base_ts));
        rec.extend_from_slice(&body);
        self.buf[used..used + rec.len()].copy_from_slice(&rec);
        let new_used = (used + rec.len()) as u16;
        self.buf[1..3].copy_from_slice(&new_used.to_le_bytes());
        taken
    }

    /// Parses a stored slot.
    pub fn from_bytes(bytes: &[u8]) -> Result<Slot, DecodeError> {
        if bytes.len() != SLOT_BYTES {
            return Err(DecodeError("log slot has the wrong size"));
        }
        let slot = Slot {
            buf: bytes.to_vec(),
        };
        if slot.buf[0] != SLOT_VERSION {
            return Err(DecodeError("unknown log slot version"));
        }
        let used = slot.used();
        if !(SLOT_HEADER..=SLOT_BYTES).contains(&used) {
            return Err(DecodeError("log slot length out of range"));
        }
        Ok(slot)
    }

    /// The batch sequence number of the first record, if any.
    pub fn first_seq(&self) -> Result<Option<u64>, DecodeError> {
        if self.is_empty() {
            return Ok(None);
        }
        Reader::new(&self.buf[SLOT_HEADER..self.used()])
            .varint()
            .map(Some)
    }

    /// Calls `f(seq, point)` for every point, in write order.
    pub fn for_each(&self, mut f: impl FnMut(u64, LogPoint)) -> Result<(), DecodeError> {
        let mut r = Reader::new(&self.buf[SLOT_HEADER..self.used()]);
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
}

/// The zigzagged difference of two floats' bit patterns. Neighbouring
/// values of a series share sign, exponent and high mantissa bits, so their
/// bit patterns are close as integers; the difference keeps only what
/// changed, and adding it back restores the value bit for bit.
fn delta(value: f64, pred: f64) -> u64 {
    zigzag((value.to_bits() as i64).wrapping_sub(pred.to_bits() as i64))
}

fn undelta(z: u64, pred: f64) -> f64 {
    f64::from_bits((pred.to_bits() as i64).wrapping_add(unzigzag(z)) as u64)
}

/// Bits are appended least significant first.
struct BitWriter {
    out: Vec<u8>,
    acc: u128,
    n: u32,
}

impl BitWriter {
    fn put(&mut self, v: u64, bits: u32) {
        self.acc |= u128::from(v) << self.n;
        self.n += bits;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// A 6-bit length, then that many bits (a length code of 63 means 64).
    fn put_sized(&mut self, v: u64) {
        let len = 64 - v.leading_zeros();
        self.put(u64::from(len.min(63)), 6);
        self.put(v, if len >= 63 { 64 } else { len });
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

struct BitReader<'a> {
    buf: &'a [u8],
    pos: usize,
    acc: u128,
    n: u32,
}

impl BitReader<'_> {
    fn get(&mut self, bits: u32) -> Result<u64, DecodeError> {
        if self.n < bits {
            // Refill a word at a time where the buffer allows.
            if let Some(word) = self.buf.get(self.pos..self.pos + 8) {
                let word = u64::from_le_bytes(word.try_into().expect("8 bytes"));
                self.acc |= u128::from(word) << self.n;
                self.pos += 8;
                self.n += 64;
            }
            while self.n < bits {
                let b = *self
                    .buf
                    .get(self.pos)
                    .ok_or(DecodeError("truncated chunk"))?;
                self.acc |= u128::from(b) << self.n;
                self.pos += 1;
                self.n += 8;
            }
        }
        let v = (self.acc & ((1u128 << bits) - 1)) as u64;
        self.acc >>= bits;
        self.n -= bits;
        Ok(v)
    }

    fn get_sized(&mut self) -> Result<u64, DecodeError> {
        let code = self.get(6)? as u32;
        self.get(if code == 63 { 64 } else { code })
    }
}

/// What the next bucket of a chunk is predicted from: the previous one.
struct Predictor {
    sum: f64,
    mean: f64,
    min: f64,
    max: f64,
    count: u64,
}

impl Predictor {
    fn new() -> Predictor {
        Predictor {
            sum: 0.0,
            mean: 0.0,
            min: 0.0,
            max: 0.0,
            count: 1,
        }
    }

    /// A bucket's min and max are predicted from its own mean and the
    /// previous bucket's spread around its mean (equal to the mean for a
    /// single point): the spread changes less than the values do.
    fn min(&self, mean: f64) -> f64 {
        mean - (self.mean - self.min)
    }

    fn max(&self, mean: f64) -> f64 {
        mean + (self.max - self.mean)
    }

    fn advance(&mut self, a: &Agg) {
        *self = Predictor {
            sum: a.sum,
            mean: a.mean(),
            min: a.min,
            max: a.max,
            count: a.count,
        };
    }
}

/// Encodes the buckets of one chunk (`None` = no data in that bucket).
///
/// After the version byte and the presence bitmap comes a bit stream, per
/// bucket: one bit saying whether the count differs from the previous
/// bucket's (it rarely does) and the count if so, then the sum, min and max,
/// each as a 6-bit length and the difference of its bit pattern from a
/// prediction (see `Predictor`). About 19 bytes per minute bucket of a
/// full-precision random walk against 32 for the plain values.
pub fn encode_chunk(buckets: &[Option<Agg>]) -> Vec<u8> {
    let bitmap_len = buckets.len().div_ceil(8);
    let mut w = BitWriter {
        out: Vec::with_capacity(CHUNK_HEADER + bitmap_len + buckets.len() * 20),
        acc: 0,
        n: 0,
    };
    w.out.push(CHUNK_VERSION);
    w.out.extend_from_slice(&[0; 4]);
    let mut bitmap = vec![0u8; bitmap_len];
    for (i, b) in buckets.iter().enumerate() {
        if b.is_some() {
            bitmap[i / 8] |= 1 << (i % 8);
        }
    }
    w.out.extend_from_slice(&bitmap);
    let mut p = Predictor::new();
    for a in buckets.iter().flatten() {
        if a.count == p.count {
            w.put(0, 1);
        } else {
            w.put(1, 1);
            w.put_sized(a.count);
        }
        let mean = a.mean();
        w.put_sized(delta(a.sum, p.sum));
        w.put_sized(delta(a.min, p.min(mean)));
        w.put_sized(delta(a.max, p.max(mean)));
        p.advance(a);
    }
    let mut out = w.finish();
    let crc = crc32fast::hash(&out[CHUNK_HEADER..]);
    out[1..CHUNK_HEADER].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The part of a chunk after its header (bitmap, then bits), once its
/// version is known and its CRC (version 4) matches.
fn chunk_body(bytes: &[u8]) -> Result<&[u8], DecodeError> {
    match bytes.first() {
        Some(&CHUNK_VERSION) => {
            let body = bytes
                .get(CHUNK_HEADER..)
                .ok_or(DecodeError("truncated chunk"))?;
            let stored = u32::from_le_bytes(bytes[1..CHUNK_HEADER].try_into().expect("4 bytes"));
            if crc32fast::hash(body) != stored {
                return Err(DecodeError("chunk checksum mismatch"));
            }
            Ok(body)
        }
        Some(&CHUNK_V3) => Ok(&bytes[1..]),
        _ => Err(DecodeError("unknown chunk version")),
    }
}

/// Decodes a chunk of `span` buckets.
pub fn decode_chunk(bytes: &[u8], span: usize) -> Result<Vec<Option<Agg>>, DecodeError> {
    let mut out = vec![None; span];
    for_each_bucket(bytes, span, |i, a| out[i] = Some(a))?;
    Ok(out)
}

/// Calls `f(index, bucket)` for each bucket present, without allocating:
/// the read path decodes hundreds of thousands of buckets per chart.
pub fn for_each_bucket(
    bytes: &[u8],
    span: usize,
    mut f: impl FnMut(usize, Agg),
) -> Result<(), DecodeError> {
    let bytes = chunk_body(bytes)?;
    let bitmap_end = span.div_ceil(8);
    let bitmap = bytes
        .get(..bitmap_end)
        .ok_or(DecodeError("truncated chunk"))?;
    let mut r = BitReader {
        buf: bytes,
        pos: bitmap_end,
        acc: 0,
        n: 0,
    };
    let mut p = Predictor::new();
    for i in 0..span {
        if bitmap[i / 8] & (1 << (i % 8)) == 0 {
            continue;
        }
        let count = if r.get(1)? == 1 {
            r.get_sized()?
        } else {
            p.count
        };
        if count == 0 {
            return Err(DecodeError("bucket with zero count"));
        }
        let sum = undelta(r.get_sized()?, p.sum);
        let mean = sum / count as f64;
        let min = undelta(r.get_sized()?, p.min(mean));
        let max = undelta(r.get_sized()?, p.max(mean));
        let a = Agg {
            count,
            sum,
            min,
            max,
        };
        p.advance(&a);
        f(i, a);
    }
    // Only the last byte's zero padding may be left over.
    if r.pos != bytes.len() || r.n >= 8 || r.acc != 0 {
        return Err(DecodeError("trailing bytes after chunk"));
    }
    Ok(())
}

/// Number of buckets present in an encoded chunk (reads only the bitmap).
/// The checksum is verified too, so that opening a store meets damage
/// at once rather than at the first query that reads it.
pub fn chunk_population(bytes: &[u8], span: usize) -> Result<u32, DecodeError> {
    let bitmap = chunk_body(bytes)?
        .get(..span.div_ceil(8))
        .ok_or(DecodeError("truncated chunk"))?;
    Ok(bitmap.iter().map(|b| b.count_ones()).sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn finite() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>().prop_filter("finite", |v| v.is_finite()),
            (-1000i32..1000).prop_map(f64::from),
            Just(0.0),
            Just(-0.0),
        ]
    }

    proptest! {
        #[test]
        fn chunks_round_trip_bit_exact(
            buckets in proptest::collection::vec(
                proptest::option::of((1u64..100_000, finite(), finite(), finite())), 1..61)
        ) {
            let buckets: Vec<Option<Agg>> = buckets
                .into_iter()
                .map(|b| b.map(|(count, sum, min, max)| Agg { count, sum, min, max }))
                .collect();
            let bytes = encode_chunk(&buckets);
            let back = decode_chunk(&bytes, buckets.len()).unwrap();
            prop_assert_eq!(back.len(), buckets.len());
            for (a, b) in buckets.iter().zip(&back) {
                match (a, b) {
                    (None, None) => {}
                    (Some(a), Some(b)) => {
                        prop_assert_eq!(a.count, b.count);
                        prop_assert_eq!(a.sum.to_bits(), b.sum.to_bits());
                        prop_assert_eq!(a.min.to_bits(), b.min.to_bits());
                        prop_assert_eq!(a.max.to_bits(), b.max.to_bits());
                    }
                    _ => prop_assert!(false, "presence differs"),
                }
            }
            prop_assert_eq!(
                chunk_population(&bytes, buckets.len()).unwrap() as usize,
                buckets.iter().flatten().count()
            );
        }

        #[test]
        fn slots_keep_every_point_in_order(
            batches in proptest::collection::vec(
                proptest::collection::vec((0u32..5000, 0i64..4_000_000_000, finite()), 0..300), 1..6)
        ) {
            let mut slots = vec![Slot::new()];
            let mut expected = Vec::new();
            for (seq, batch) in batches.iter().enumerate() {
                let mut pts: Vec<LogPoint> =
                    batch.iter().map(|&(sid, ts, value)| LogPoint { sid, ts, value }).collect();
                pts.sort_by_key(|p| p.ts);
                let mut rest = &pts[..];
                while !rest.is_empty() {
                    let n = slots.last_mut().unwrap().append(seq as u64, rest);
                    if n == 0 {
                        slots.push(Slot::new());
                        continue;
                    }
                    for p in &rest[..n] {
                        expected.push((seq as u64, *p));
                    }
                    rest = &rest[n..];
                }
            }
            let mut got = Vec::new();
            for s in &slots {
                let back = Slot::from_bytes(s.bytes()).unwrap();
                back.for_each(|seq, p| got.push((seq, p))).unwrap();
            }
            prop_assert_eq!(got.len(), expected.len());
            for (g, e) in got.iter().zip(&expected) {
                prop_assert_eq!(g.0, e.0);
                prop_assert_eq!(g.1.sid, e.1.sid);
                prop_assert_eq!(g.1.ts, e.1.ts);
                prop_assert_eq!(g.1.value.to_bits(), e.1.value.to_bits());
            }
        }
    }

    #[test]
    fn slow_series_compress() {
        let mut v = 42.123456789;
        let buckets: Vec<Option<Agg>> = (0..60)
            .map(|i| {
                v += 0.0001 * f64::from(i % 7);
                Some(Agg {
                    count: 12,
                    sum: v * 12.0,
                    min: v - 0.001,
                    max: v + 0.001,
                })
            })
            .collect();
        let bytes = encode_chunk(&buckets);
        assert!(bytes.len() < 60 * 22, "{} bytes", bytes.len());
    }

    #[test]
    fn corrupt_blobs_are_refused() {
        assert!(decode_chunk(&[9, 0, 0], 24).is_err());
        assert!(decode_chunk(&[1, 1, 0, 0], 24).is_err());
        assert!(Slot::from_bytes(&[1, 2, 3]).is_err());
    }

    #[test]
    fn a_flipped_bit_in_a_chunk_is_found_and_version_3_still_reads() {
        let buckets: Vec<Option<Agg>> = (0..60)
            .map(|i| (i % 5 != 0).then(|| Agg::of(f64::from(i) * 1.5)))
            .collect();
        let bytes = encode_chunk(&buckets);
        for i in CHUNK_HEADER..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert_eq!(
                decode_chunk(&bad, 60).unwrap_err().0,
                "chunk checksum mismatch",
                "byte {i}"
            );
        }
        // A chunk written before checksums: the same body without one.
        let mut v3 = vec![CHUNK_V3];
        v3.extend_from_slice(&bytes[CHUNK_HEADER..]);
        assert_eq!(decode_chunk(&v3, 60).unwrap(), buckets);
        assert_eq!(chunk_population(&v3, 60).unwrap(), 48);
        assert_eq!(chunk_population(&bytes, 60).unwrap(), 48);
    }
}

#[cfg(test)]
mod speed {
    #[test]
    #[ignore = "timing probe: cargo test --release --lib codec::speed -- --ignored --nocapture"]
    fn decode_speed() {
        use super::*;
        let mut v = 42.123456789f64;
        let mut state = 0x1234_5678_9abc_def0u64;
        let chunks: Vec<Vec<u8>> = (0..5000)
            .map(|_| {
                let b: Vec<Option<Agg>> = (0..20)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        v += (state % 1000) as f64 / 500.0 - 1.0;
                        Some(Agg {
                            count: 12,
                            sum: v * 12.0,
                            min: v - 1.3,
                            max: v + 0.9,
                        })
                    })
                    .collect();
                encode_chunk(&b)
            })
            .collect();
        let bytes: usize = chunks.iter().map(Vec::len).sum();
        let t = std::time::Instant::now();
        let mut n = 0usize;
        for _ in 0..20 {
            for c in &chunks {
                for_each_bucket(c, 20, |_, a| n += a.count as usize).unwrap();
            }
        }
        let per = t.elapsed().as_nanos() as f64 / (20.0 * 5000.0 * 20.0);
        println!(
            "{:.1} bytes/bucket, {per:.1} ns/bucket ({n})",
            bytes as f64 / 100_000.0
        );
    }
}

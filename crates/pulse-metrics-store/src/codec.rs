//! The byte layout of a rolled-up tier's chunk (tables `minute`, `hourly`,
//! `daily`): the buckets of one series over one span (20 minutes of
//! minutes, a day of hours, 32 days). Floats are stored as the difference of
//! their bit patterns from a predicted value, in as few bits as it needs:
//! slowly moving series shrink, and every value comes back bit for bit.

pub use crate::bits::DecodeError;
use crate::bits::{BitReader, BitWriter, delta, undelta};

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
/// The version byte, a CRC-32 of everything after it (4 bytes, little
/// endian), the presence bitmap, then a bit stream, per present bucket: one
/// bit saying whether the count differs from the previous bucket's (it
/// rarely does) and the count if so, then the sum, min and max, each as a
/// 6-bit length and the difference of its bit pattern from a prediction (see
/// `Predictor`). About 20 bytes per minute bucket of a full-precision random
/// walk against 32 for the plain values (docs/storage.md).
pub fn encode_chunk(buckets: &[Option<Agg>]) -> Vec<u8> {
    let bitmap_len = buckets.len().div_ceil(8);
    let mut w = BitWriter::new(Vec::with_capacity(
        CHUNK_HEADER + bitmap_len + buckets.len() * 20,
    ));
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
            let (Some(crc), Some(body)) = (
                bytes
                    .get(1..CHUNK_HEADER)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok()),
                bytes.get(CHUNK_HEADER..),
            ) else {
                return Err(DecodeError("truncated chunk"));
            };
            let stored = u32::from_le_bytes(crc);
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
    let mut r = BitReader::new(bytes, bitmap_end);
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

/// Number of buckets present in an encoded chunk (reads the bitmap). The
/// checksum is verified too, so that what counts buckets (a prune, a seal,
/// an open of a file that has not saved its counts, `check`) meets damage
/// rather than miscounting.
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

//! Bit- and byte-level primitives shared by every encoded blob: varints,
//! zigzag, bit streams, and the float "bit-pattern delta" that lets slowly
//! moving series shrink while every value comes back bit for bit.

/// Malformed blob: the store refuses to guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// The zigzagged difference of two floats' bit patterns. Neighbouring
/// values of a series share sign, exponent and high mantissa bits, so their
/// bit patterns are close as integers; the difference keeps only what
/// changed, and adding it back restores the value bit for bit.
pub fn delta(value: f64, pred: f64) -> u64 {
    zigzag((value.to_bits() as i64).wrapping_sub(pred.to_bits() as i64))
}

pub fn undelta(z: u64, pred: f64) -> f64 {
    f64::from_bits((pred.to_bits() as i64).wrapping_add(unzigzag(z)) as u64)
}

/// Trailing zero bits of a bit-pattern difference from which it is coded
/// shifted: the shift's 6 bits must pay for themselves.
const SHIFT_FROM: u32 = 7;

/// A bit-pattern difference that ends in `SHIFT_FROM` or more zero bits,
/// as the changes of used bytes over a power-of-two total or of an integer
/// counter do: (those zero bits, the zigzagged difference shifted past
/// them). Written as the shift in 6 bits, then the rest sized; read back
/// with [`BitReader::get_shifted`].
pub fn shifted_delta(bits: u64, last: u64) -> Option<(u32, u64)> {
    let d = (bits as i64).wrapping_sub(last as i64);
    let tz = d.trailing_zeros();
    (tz >= SHIFT_FROM).then(|| (tz, zigzag(d >> tz)))
}

/// Reads bytes and varints from a slice.
pub struct ByteReader<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

impl<'a> ByteReader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        ByteReader { buf, pos: 0 }
    }
    pub fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or(DecodeError("truncated"))?;
        self.pos += 1;
        Ok(b)
    }
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError("truncated"))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(DecodeError("truncated"))?;
        self.pos = end;
        Ok(s)
    }
    pub fn varint(&mut self) -> Result<u64, DecodeError> {
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
    pub fn u64_le(&mut self) -> Result<u64, DecodeError> {
        let b = self.bytes(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    pub fn f64(&mut self) -> Result<f64, DecodeError> {
        self.u64_le().map(f64::from_bits)
    }
}

/// Appends bits to a byte vector, least significant first. The vector's
/// last byte may be partly filled: `bits` says how many bits are used, so
/// a writer can be dropped and resumed later (an open raw chunk is appended
/// to poll after poll).
#[derive(Debug, Clone, Copy, Default)]
pub struct BitCursor {
    /// Bits used in the vector.
    pub bits: u64,
}

impl BitCursor {
    /// Appends the low `n` bits of `v` (`n <= 64`).
    #[inline]
    pub fn put(&mut self, out: &mut Vec<u8>, v: u64, n: u32) {
        if n == 0 {
            return;
        }
        let v = if n == 64 { v } else { v & ((1u64 << n) - 1) };
        let byte = (self.bits / 8) as usize;
        let off = (self.bits % 8) as u32;
        let end = (self.bits + u64::from(n)).div_ceil(8) as usize;
        if out.len() < end {
            out.resize(end, 0);
        }
        let mut x = u128::from(v) << off;
        let mut i = byte;
        while x != 0 {
            out[i] |= x as u8;
            x >>= 8;
            i += 1;
        }
        self.bits += u64::from(n);
    }

    /// A 6-bit length, then that many bits (a length code of 63 means 64).
    #[inline]
    pub fn put_sized(&mut self, out: &mut Vec<u8>, v: u64) {
        let len = 64 - v.leading_zeros();
        self.put(out, u64::from(len.min(63)), 6);
        self.put(out, v, if len >= 63 { 64 } else { len });
    }
}

/// Appends bits to a vector a 64-bit word at a time, least significant
/// first; the word being filled stays in a register until it is full (an
/// open raw chunk is appended to, point by point, for 20 minutes). Read it
/// back with `BitReader::with_tail(&bytes, acc, n)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct WordAppender {
    pub acc: u64,
    /// Bits used in `acc` (0..64).
    pub n: u32,
}

impl WordAppender {
    /// Appends the low `bits` of `v` (`bits <= 64`).
    #[inline]
    pub fn put(&mut self, out: &mut Vec<u8>, v: u64, bits: u32) {
        if bits == 0 {
            return;
        }
        let v = if bits == 64 {
            v
        } else {
            v & ((1u64 << bits) - 1)
        };
        let free = 64 - self.n;
        if bits < free {
            self.acc |= v << self.n;
            self.n += bits;
        } else {
            self.acc |= v << self.n;
            out.extend_from_slice(&self.acc.to_le_bytes());
            self.acc = if free == 64 { 0 } else { v >> free };
            self.n = bits - free;
        }
    }

    /// A 6-bit length, then that many bits (a length code of 63 means 64).
    #[inline]
    pub fn put_sized(&mut self, out: &mut Vec<u8>, v: u64) {
        let len = 64 - v.leading_zeros();
        self.put(out, u64::from(len.min(63)), 6);
        self.put(out, v, if len >= 63 { 64 } else { len });
    }
}

/// Bits are appended least significant first.
pub struct BitWriter {
    pub out: Vec<u8>,
    acc: u128,
    n: u32,
}

impl BitWriter {
    pub fn new(out: Vec<u8>) -> BitWriter {
        BitWriter { out, acc: 0, n: 0 }
    }

    pub fn put(&mut self, v: u64, bits: u32) {
        self.acc |= u128::from(v) << self.n;
        self.n += bits;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// A 6-bit length, then that many bits (a length code of 63 means 64).
    pub fn put_sized(&mut self, v: u64) {
        let len = 64 - v.leading_zeros();
        self.put(u64::from(len.min(63)), 6);
        self.put(v, if len >= 63 { 64 } else { len });
    }

    pub fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

pub struct BitReader<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
    pub acc: u128,
    pub n: u32,
    /// Bits that follow `buf` (an appender's word not flushed yet).
    tail: u64,
    tail_bits: u32,
}

impl<'a> BitReader<'a> {
    pub fn new(buf: &'a [u8], pos: usize) -> BitReader<'a> {
        BitReader {
            buf,
            pos,
            acc: 0,
            n: 0,
            tail: 0,
            tail_bits: 0,
        }
    }

    /// Reads `buf` and then the low `tail_bits` of `tail`.
    pub fn with_tail(buf: &'a [u8], tail: u64, tail_bits: u32) -> BitReader<'a> {
        BitReader {
            tail,
            tail_bits,
            ..BitReader::new(buf, 0)
        }
    }

    #[inline]
    pub fn get(&mut self, bits: u32) -> Result<u64, DecodeError> {
        if bits == 0 {
            return Ok(0);
        }
        if self.n < bits {
            // Refill a word at a time where the buffer allows.
            if let Some(word) = self.buf.get(self.pos..self.pos + 8) {
                let word = u64::from_le_bytes(word.try_into().expect("8 bytes"));
                self.acc |= u128::from(word) << self.n;
                self.pos += 8;
                self.n += 64;
            }
            while self.n < bits {
                match self.buf.get(self.pos) {
                    Some(&b) => {
                        self.acc |= u128::from(b) << self.n;
                        self.pos += 1;
                        self.n += 8;
                    }
                    None if self.tail_bits > 0 => {
                        self.acc |= u128::from(self.tail) << self.n;
                        self.n += self.tail_bits;
                        self.tail_bits = 0;
                    }
                    None => return Err(DecodeError("truncated")),
                }
            }
        }
        let v = (self.acc & ((1u128 << bits) - 1)) as u64;
        self.acc >>= bits;
        self.n -= bits;
        Ok(v)
    }

    #[inline]
    pub fn bit(&mut self) -> Result<bool, DecodeError> {
        Ok(self.get(1)? == 1)
    }

    /// Reads what `shifted_delta` gave (the shift, then the sized rest)
    /// and applies it to `last`; returns the new bit pattern.
    pub fn get_shifted(&mut self, last: u64) -> Result<u64, DecodeError> {
        let tz = self.get(6)? as u32;
        let d = unzigzag(self.get_sized()?).wrapping_shl(tz);
        Ok((last as i64).wrapping_add(d) as u64)
    }

    pub fn get_sized(&mut self) -> Result<u64, DecodeError> {
        let code = self.get(6)? as u32;
        self.get(if code == 63 { 64 } else { code })
    }

    /// Bits consumed from the start of the buffer.
    #[cfg(test)]
    pub fn bit_pos(&self) -> u64 {
        self.pos as u64 * 8 - u64::from(self.n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_and_reader_agree_across_resumes() {
        let mut out = Vec::new();
        let mut c = BitCursor::default();
        let items: Vec<(u64, u32)> = (0..500u64)
            .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15), (i % 64 + 1) as u32))
            .collect();
        for (i, &(v, n)) in items.iter().enumerate() {
            if i % 7 == 0 {
                // A resumed cursor continues in the partly filled last byte.
                let resumed = BitCursor { bits: c.bits };
                c = resumed;
            }
            c.put(&mut out, v, n);
            c.put_sized(&mut out, v >> (i % 60));
        }
        let mut r = BitReader::new(&out, 0);
        for (i, &(v, n)) in items.iter().enumerate() {
            let mask = if n == 64 { u64::MAX } else { (1 << n) - 1 };
            assert_eq!(r.get(n).unwrap(), v & mask);
            assert_eq!(r.get_sized().unwrap(), v >> (i % 60));
        }
        assert_eq!(r.bit_pos(), c.bits);
    }

    #[test]
    fn words_and_their_tail_read_back() {
        let mut out = Vec::new();
        let mut w = WordAppender::default();
        let items: Vec<(u64, u32)> = (0..300u64)
            .map(|i| {
                (
                    i.wrapping_mul(0x2545_F491_4F6C_DD1D),
                    (i * 7 % 64 + 1) as u32,
                )
            })
            .collect();
        for &(v, n) in &items {
            w.put(&mut out, v, n);
            w.put_sized(&mut out, v >> (n % 61));
        }
        assert_eq!(out.len() % 8, 0, "only whole words leave the register");
        let mut r = BitReader::with_tail(&out, w.acc, w.n);
        for &(v, n) in &items {
            let mask = if n == 64 { u64::MAX } else { (1 << n) - 1 };
            assert_eq!(r.get(n).unwrap(), v & mask);
            assert_eq!(r.get_sized().unwrap(), v >> (n % 61));
        }
        assert!(r.get(1).is_err(), "nothing after the tail");
    }

    #[test]
    fn deltas_restore_bits() {
        for (a, b) in [(1.5, 1.25), (-0.0, 0.0), (1e300, -1e-300), (f64::MAX, 3.0)] {
            assert_eq!(undelta(delta(a, b), b).to_bits(), f64::to_bits(a));
        }
    }
}

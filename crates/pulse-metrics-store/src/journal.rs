//! The raw tier's durable form: an append-only journal of flushed batches
//! in segment files beside the database (`<database>-raw/`).
//!
//! A flush appends one record and does not fsync: the bytes are in the
//! page cache when the call returns, which is what survives a killed
//! process. Only whole 64 KiB units go to the segment file; the bytes past
//! the last whole unit go to a staging file in shared memory (`staging.rs`)
//! until more records fill the unit, so each page of the journal is written
//! to the disk once rather than each time the kernel writes back a partly
//! filled one. Segments are fsynced, partial unit included, at each rollup,
//! at roll-over and at close: that is the power-cut bound
//! (docs/storage.md).
//!
//! A record holds one batch: its sequence number, its points sorted by
//! series, then time, each value encoded against the previous value of the
//! same series in the same segment (one bit when it repeats, else the
//! difference of the bit patterns in as few bits as it needs). The first
//! value of a series in a segment is stored whole, so every segment decodes
//! on its own, and the state a writer needs is one value per series.
//!
//! A segment is deleted once every point in it is older than the raw floor
//! and folded into a tier that is durable on disk (see
//! `Writer::release_journal`, run after every rollup and prune).

use crate::bits::{
    BitCursor, BitReader, DecodeError, delta, shifted_delta, undelta, unzigzag, zigzag,
};
use crate::error::{Error, Result};
use crate::staging::{self, SegmentId, Staging, UNIT, write_at};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

/// One point as it travels through the journal: series id, Unix ms, value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogPoint {
    pub sid: u32,
    pub ts: i64,
    pub value: f64,
}

/// Bytes of a record header: body length, CRC-32 of everything after it,
/// sequence number, point count, first timestamp.
pub(crate) const HEADER: usize = 4 + 4 + 8 + 4 + 8;
/// The point count of a rollup mark: a record that holds no points but the
/// `now` of a rollup pass (in the timestamp field), so a pass that wrote
/// nothing to the database still tells the next open how far minutes were
/// rolled up.
pub(crate) const MARK: u32 = u32::MAX;
/// The point count of a note: a record that holds no points but bytes
/// another module keeps in the journal (the remote-write cursors, see
/// `cursors.rs`), so they cost no write of their own: the journal's last
/// page is written anyway. Replay skips notes.
pub(crate) const NOTE: u32 = u32::MAX - 1;
/// Smallest segment before a roll-over; larger fleets get larger segments
/// (`SEGMENT_BYTES_PER_SERIES` each) so that re-stating each series' first
/// value whole stays a small share.
const SEGMENT_MIN_BYTES: u64 = 512 * 1024;
const SEGMENT_BYTES_PER_SERIES: u64 = 256;
const SEGMENT_SUFFIX: &str = ".seg";

/// The journal's directory for a database file.
pub fn dir_of(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-raw");
    PathBuf::from(name)
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::io(context, e)
}

/// What a segment holds, known without reading it again.
#[derive(Debug, Clone)]
pub struct Segment {
    pub path: PathBuf,
    /// The batch that starts it (and names it).
    #[allow(dead_code)]
    pub first_seq: u64,
    pub last_seq: u64,
    /// Newest point (Unix seconds): once it is below the raw floor and the
    /// segment's batches are folded, nothing needs the segment.
    pub max_ts: i64,
    pub bytes: u64,
    /// Points in its batches (what a reader loses if it is deleted unread).
    pub points: u64,
}

/// Per-segment encoder/decoder state: the last value of each series.
#[derive(Debug, Default)]
pub(crate) struct Values {
    last: Vec<u64>,
    seen: Vec<u64>,
}

impl Values {
    fn reset(&mut self) {
        self.seen.iter_mut().for_each(|w| *w = 0);
    }
    fn get(&self, sid: u32) -> Option<u64> {
        let i = sid as usize;
        let seen = self
            .seen
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0);
        seen.then(|| self.last[i])
    }
    fn set(&mut self, sid: u32, bits: u64) {
        let i = sid as usize;
        if self.last.len() <= i {
            self.last.resize(i + 1, 0);
            self.seen.resize((i + 1).div_ceil(64), 0);
        }
        self.last[i] = bits;
        self.seen[i / 64] |= 1 << (i % 64);
    }
}

/// Writes one point's series and time against the previous point's.
fn put_head(c: &mut BitCursor, body: &mut Vec<u8>, p: &LogPoint, prev_sid: i64, prev_ts: i64) {
    let sid = i64::from(p.sid);
    if sid == prev_sid + 1 {
        c.put(body, 1, 1);
    } else {
        c.put(body, 0, 1);
        c.put_sized(body, zigzag(sid - prev_sid - 1));
    }
    if p.ts == prev_ts {
        c.put(body, 0, 1);
    } else {
        c.put(body, 1, 1);
        c.put_sized(body, zigzag(p.ts - prev_ts));
    }
}

/// Writes a value against the previous value of its series in the
/// segment: `0` the same; `10` and the bit-pattern difference (zigzagged,
/// sized); `110` and the whole value (the first in the segment); `111`, the
/// difference's trailing zero bits (6) and the difference shifted by them
/// (zigzagged, sized), when it ends in enough zero bits
/// (`bits::shifted_delta`). Self-describing, so a reader can skip a point without
/// knowing its series' history. Records of earlier versions (without
/// `SHIFTED` in their count) have no `111`, and `11` is the whole value.
fn put_value(c: &mut BitCursor, body: &mut Vec<u8>, bits: u64, last: Option<u64>) {
    let whole = |c: &mut BitCursor, body: &mut Vec<u8>| {
        c.put(body, 0b011, 3);
        c.put(body, bits, 64);
    };
    match last {
        Some(l) if l == bits => c.put(body, 0, 1),
        Some(l) => {
            let d = delta(f64::from_bits(bits), f64::from_bits(l));
            if let Some((tz, rest)) = shifted_delta(bits, l) {
                c.put(body, 0b111, 3);
                c.put(body, u64::from(tz), 6);
                c.put_sized(body, rest);
            } else if 64 - d.leading_zeros() < 56 {
                c.put(body, 0b01, 2);
                c.put_sized(body, d);
            } else {
                whole(c, body);
            }
        }
        None => whole(c, body),
    }
}

/// Set in the point count of a batch record whose values may be shifted
/// (`put_value`); marks and notes (`u32::MAX`, `u32::MAX - 1`) do not
/// carry it, and no batch holds 2^31 points.
const SHIFTED: u32 = 1 << 31;

/// Encodes a batch as a record; the points are sorted by series, then time
/// (series-major: a replay applies a segment series by series).
fn encode(seq: u64, points: &[LogPoint], values: &mut Values) -> Vec<u8> {
    let base = points.first().map_or(0, |p| p.ts);
    let mut body = Vec::with_capacity(points.len() * 8);
    let mut c = BitCursor::default();
    let (mut prev_ts, mut prev_sid) = (base, -1i64);
    for p in points {
        put_head(&mut c, &mut body, p, prev_sid, prev_ts);
        let bits = p.value.to_bits();
        put_value(&mut c, &mut body, bits, values.get(p.sid));
        values.set(p.sid, bits);
        prev_ts = p.ts;
        prev_sid = i64::from(p.sid);
    }
    header(seq, points.len() as u32 | SHIFTED, base, &body)
}

/// Reads one point's series and time.
fn get_head(
    r: &mut BitReader<'_>,
    sid: &mut i64,
    ts: &mut i64,
) -> std::result::Result<u32, DecodeError> {
    if r.bit()? {
        *sid += 1;
    } else {
        let step = unzigzag(r.get_sized()?) + 1;
        if step < 0 {
            return Err(DecodeError("series out of order in a record"));
        }
        *sid += step;
    }
    if r.bit()? {
        *ts += unzigzag(r.get_sized()?);
    }
    u32::try_from(*sid).map_err(|_| DecodeError("series id out of range"))
}

/// Reads one value written by `put_value` (`shifted`: the record's count
/// carries `SHIFTED`).
fn get_value(
    r: &mut BitReader<'_>,
    last: Option<u64>,
    shifted: bool,
) -> std::result::Result<f64, DecodeError> {
    let changed =
        |last: Option<u64>| last.ok_or(DecodeError("a changed value of a series not seen before"));
    let bits = if !r.bit()? {
        last.ok_or(DecodeError("a repeated value of a series not seen before"))?
    } else if !r.bit()? {
        undelta(r.get_sized()?, f64::from_bits(changed(last)?)).to_bits()
    } else if shifted && r.bit()? {
        r.get_shifted(changed(last)?)?
    } else {
        r.get(64)?
    };
    let value = f64::from_bits(bits);
    if value.is_finite() {
        Ok(value)
    } else {
        Err(DecodeError("a value that is not finite"))
    }
}

/// One decoded record.
pub struct Record {
    pub seq: u64,
    pub points: Vec<LogPoint>,
    /// A rollup mark: the pass's `now` (Unix seconds).
    pub rolled_to: Option<i64>,
}

fn header(seq: u64, count: u32, base: i64, body: &[u8]) -> Vec<u8> {
    let mut rec = Vec::with_capacity(HEADER + body.len());
    rec.extend_from_slice(&(body.len() as u32).to_le_bytes());
    rec.extend_from_slice(&[0; 4]);
    rec.extend_from_slice(&seq.to_le_bytes());
    rec.extend_from_slice(&count.to_le_bytes());
    rec.extend_from_slice(&base.to_le_bytes());
    rec.extend_from_slice(body);
    let crc = crc32fast::hash(&rec[8..]);
    rec[4..8].copy_from_slice(&crc.to_le_bytes());
    rec
}

/// Why a segment stopped decoding where it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// The file ends inside a record (a write cut short by a crash or a
    /// full disk).
    Torn { offset: u64 },
    /// A record whose checksum or content is wrong.
    Corrupt { offset: u64, reason: String },
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::Torn { offset } => write!(f, "a record cut short at byte {offset}"),
            Damage::Corrupt { offset, reason } => {
                write!(f, "a damaged record at byte {offset} ({reason})")
            }
        }
    }
}

/// A record's header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Head {
    /// Bytes of the body after the header.
    pub body: usize,
    pub crc: u32,
    pub seq: u64,
    /// Points in the body, or `MARK` or `NOTE`.
    pub count: u32,
    /// Its values may be written shifted (`put_value`).
    pub shifted: bool,
    /// The first point's time (a mark: how far minutes were rolled up).
    pub base: i64,
}

impl Head {
    /// The header at the start of `bytes`, if it holds one.
    pub(crate) fn read(bytes: &[u8]) -> Option<Head> {
        let h: &[u8; HEADER] = bytes.first_chunk()?;
        fn field<const N: usize>(h: &[u8; HEADER], at: usize) -> [u8; N] {
            std::array::from_fn(|i| h[at + i])
        }
        let count = u32::from_le_bytes(field(h, 16));
        let shifted = count != MARK && count != NOTE && count & SHIFTED != 0;
        Some(Head {
            body: u32::from_le_bytes(field(h, 0)) as usize,
            crc: u32::from_le_bytes(field(h, 4)),
            seq: u64::from_le_bytes(field(h, 8)),
            count: if shifted { count & !SHIFTED } else { count },
            shifted,
            base: i64::from_le_bytes(field(h, 20)),
        })
    }
}

/// What starts at the beginning of a buffer of journal bytes.
pub(crate) enum Next<'a> {
    /// A whole record whose checksum holds, with its body; the record
    /// takes `HEADER + head.body` bytes.
    Record(Head, &'a [u8]),
    /// The buffer ends inside a record (torn, or still being written).
    Incomplete,
    /// A whole record whose checksum fails.
    Corrupt,
}

/// Reads the record at the start of `bytes`.
pub(crate) fn next_record(bytes: &[u8]) -> Next<'_> {
    let Some(head) = Head::read(bytes) else {
        return Next::Incomplete;
    };
    let Some(record) = HEADER
        .checked_add(head.body)
        .and_then(|end| bytes.get(..end))
    else {
        return Next::Incomplete;
    };
    if crc32fast::hash(&record[8..]) != head.crc {
        return Next::Corrupt;
    }
    Next::Record(head, &record[HEADER..])
}

/// The records of a segment's bytes, in order, each with its offset, up to
/// the first damage (which is the last item). Notes are skipped: they hold
/// nothing a replay applies.
fn records(bytes: &[u8]) -> impl Iterator<Item = std::result::Result<(u64, Head, &[u8]), Damage>> {
    let mut pos = 0usize;
    let mut damaged = false;
    std::iter::from_fn(move || {
        while pos < bytes.len() && !damaged {
            let offset = pos as u64;
            match next_record(&bytes[pos..]) {
                Next::Record(head, body) => {
                    pos += HEADER + head.body;
                    if head.count != NOTE {
                        return Some(Ok((offset, head, body)));
                    }
                }
                Next::Incomplete => {
                    damaged = true;
                    return Some(Err(Damage::Torn { offset }));
                }
                Next::Corrupt => {
                    damaged = true;
                    return Some(Err(Damage::Corrupt {
                        offset,
                        reason: "checksum mismatch".into(),
                    }));
                }
            }
        }
        None
    })
}

/// Decodes the records of one segment's bytes, stopping at the first
/// damage (returned with the offset where the good part ends).
pub fn decode_segment(bytes: &[u8]) -> (Vec<Record>, Option<Damage>) {
    let mut values = Values::default();
    let mut out = Vec::new();
    for record in records(bytes) {
        let (offset, head, body) = match record {
            Ok(r) => r,
            Err(damage) => return (out, Some(damage)),
        };
        let Head {
            seq,
            count,
            base,
            shifted,
            ..
        } = head;
        if count == MARK {
            out.push(Record {
                seq,
                points: Vec::new(),
                rolled_to: Some(base),
            });
            continue;
        }
        match decode_body(body, count, shifted, base, &mut values) {
            Ok(points) => out.push(Record {
                seq,
                points,
                rolled_to: None,
            }),
            Err(e) => {
                return (
                    out,
                    Some(Damage::Corrupt {
                        offset,
                        reason: e.0.to_string(),
                    }),
                );
            }
        }
    }
    (out, None)
}

pub(crate) fn decode_body(
    body: &[u8],
    count: u32,
    shifted: bool,
    base: i64,
    values: &mut Values,
) -> std::result::Result<Vec<LogPoint>, DecodeError> {
    let mut r = BitReader::new(body, 0);
    let mut out = Vec::with_capacity(count as usize);
    let (mut ts, mut sid) = (base, -1i64);
    for _ in 0..count {
        let id = get_head(&mut r, &mut sid, &mut ts)?;
        let value = get_value(&mut r, values.get(id), shifted)?;
        values.set(id, value.to_bits());
        out.push(LogPoint { sid: id, ts, value });
    }
    Ok(out)
}

/// One point as a replay applies it: (batch, Unix ms, value, series).
pub type Replayed = (u64, i64, f64, u32);

/// Points per piece a series-by-series decode hands over: small enough that
/// a few pieces in flight between threads cost little memory (8 MB each).
const PIECE: usize = 256 * 1024;

/// What a segment holds besides its points.
#[derive(Debug, Default)]
pub struct BySeries {
    /// The largest batch sequence number seen (a replay continues after it).
    pub last_seq: Option<u64>,
    /// The newest rollup mark.
    pub rolled_to: Option<i64>,
    /// The last batch written before it (the mark's sequence number).
    pub rolled_seq: Option<u64>,
    pub max_ts: i64,
    /// Points in its batches.
    pub points: u64,
}

/// One record being read in step with the others.
struct Run<'a> {
    r: BitReader<'a>,
    shifted: bool,
    seq: u64,
    left: u32,
    sid: i64,
    ts: i64,
    /// The next point's series, read ahead (its value is not read yet).
    next: Option<u32>,
}

impl Run<'_> {
    fn advance(&mut self) -> std::result::Result<(), DecodeError> {
        self.next = if self.left == 0 {
            None
        } else {
            self.left -= 1;
            Some(get_head(&mut self.r, &mut self.sid, &mut self.ts)?)
        };
        Ok(())
    }
}

/// Decodes a segment series by series: every record is a run sorted by
/// series, so stepping all runs together (series ascending, records in
/// write order within a series) yields each series' points together
/// without sorting, and each value's history is complete when it is read.
/// Stops at the first damage, like `decode_segment`.
pub fn decode_by_series(
    bytes: &[u8],
    emit: &mut dyn FnMut(Vec<Replayed>) -> Vec<Replayed>,
) -> (BySeries, Option<Damage>) {
    let mut out = BySeries {
        max_ts: i64::MIN,
        ..BySeries::default()
    };
    let mut points: Vec<Replayed> = emit(Vec::new());
    let mut runs: Vec<(u64, Run<'_>)> = Vec::new();
    let mut damage = None;
    let mut total = 0usize;
    for record in records(bytes) {
        let (offset, head, body) = match record {
            Ok(r) => r,
            Err(d) => {
                damage = Some(d);
                break;
            }
        };
        let Head {
            seq,
            count,
            base,
            shifted,
            ..
        } = head;
        out.last_seq = Some(out.last_seq.map_or(seq, |s| s.max(seq)));
        if count == MARK {
            out.rolled_to = Some(out.rolled_to.map_or(base, |r| r.max(base)));
            out.rolled_seq = Some(out.rolled_seq.map_or(seq, |r| r.max(seq)));
        } else {
            total += count as usize;
            runs.push((
                offset,
                Run {
                    r: BitReader::new(body, 0),
                    shifted,
                    seq,
                    left: count,
                    sid: -1,
                    ts: base,
                    next: None,
                },
            ));
        }
    }
    out.points = total as u64;
    let mut values = Values::default();
    let fail = |offset: u64, e: DecodeError| Damage::Corrupt {
        offset,
        reason: e.0.to_string(),
    };
    for (offset, run) in runs.iter_mut() {
        if let Err(e) = run.advance() {
            return (out, Some(fail(*offset, e)));
        }
    }
    while let Some(sid) = runs.iter().filter_map(|(_, r)| r.next).min() {
        for (offset, run) in runs.iter_mut() {
            while run.next == Some(sid) {
                let value = match get_value(&mut run.r, values.get(sid), run.shifted) {
                    Ok(v) => v,
                    Err(e) => return (out, Some(fail(*offset, e))),
                };
                values.set(sid, value.to_bits());
                points.push((run.seq, run.ts, value, sid));
                if points.len() >= PIECE {
                    points = emit(points);
                }
                out.max_ts = out.max_ts.max(run.ts.div_euclid(1000));
                if let Err(e) = run.advance() {
                    return (out, Some(fail(*offset, e)));
                }
            }
        }
    }
    if !points.is_empty() {
        emit(points);
    }
    (out, damage)
}

/// Segment files of a journal directory, oldest first (by their first
/// sequence number, which names them).
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("read {}", dir.display()), e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io(format!("read {}", dir.display())))?;
        if let Some(seq) = first_seq_of(Path::new(&entry.file_name())) {
            out.push((seq, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// A segment's bytes: its file, and past the file's end what is staged
/// for it (`staging.rs`). With `repair` (a writer opening) the staged bytes
/// are written to the file and synced, so the file alone holds them.
pub(crate) fn segment_bytes(path: &Path, repair: bool) -> std::io::Result<Vec<u8>> {
    let first_seq = first_seq_of(path);
    // A writer beside a reader extends the file before it stages what
    // follows: staged bytes that start past the end of the file just read
    // mean the file grew since, so it is read again.
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut file = File::open(path)?;
        let meta = file.metadata()?;
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        std::io::Read::read_to_end(&mut file, &mut bytes)?;
        let Some(staged) = first_seq.and_then(|seq| staging::for_segment(path, &meta, seq)) else {
            return Ok(bytes);
        };
        let Some(extra) = staged.beyond(&bytes) else {
            if staged.offset > bytes.len() as u64 && attempt < 3 {
                continue;
            }
            tracing::warn!(
                "the staged end of {} disagrees with the file; it is ignored",
                path.display()
            );
            return Ok(bytes);
        };
        if extra.is_empty() {
            return Ok(bytes);
        }
        let at = bytes.len() as u64;
        bytes.extend_from_slice(extra);
        if repair {
            let file = OpenOptions::new().write(true).open(path)?;
            write_at(&file, extra, at)?;
            file.sync_data()?;
        }
        return Ok(bytes);
    }
}

/// The first batch a segment file holds, from its name (`None`: not a
/// segment).
fn first_seq_of(path: &Path) -> Option<u64> {
    path.file_name()?
        .to_str()?
        .strip_suffix(SEGMENT_SUFFIX)?
        .parse()
        .ok()
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}{SEGMENT_SUFFIX}")
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("sync {}", dir.display())))
}

/// The segment being appended to.
#[derive(Debug)]
struct Open {
    file: File,
    id: SegmentId,
    /// With staging: the segment's bytes past its last whole unit, from
    /// `tail_at` on (the file holds them only once synced). Without: empty,
    /// and `tail_at` is the end of the segment.
    tail: Vec<u8>,
    tail_at: u64,
    /// Bytes of the segment the file holds.
    on_disk: u64,
    /// An append failed: the next one starts a new segment.
    broken: bool,
}

impl Open {
    /// Appends `record`: whole units to the file, the rest staged; without
    /// staging, all of it to the file. On failure the segment is as it was.
    /// Returns the bytes written to the staging file.
    fn append(&mut self, staging: &mut Option<Staging>, record: &[u8]) -> std::io::Result<u64> {
        let Some(st) = staging else {
            let end = self.tail_at;
            if let Err(e) = write_at(&self.file, record, end) {
                let _ = self.file.set_len(end);
                return Err(e);
            }
            self.tail_at += record.len() as u64;
            self.on_disk = self.tail_at;
            return Ok(0);
        };
        let kept = self.tail.len();
        self.tail.extend_from_slice(record);
        let whole = self.tail.len() / UNIT * UNIT;
        if whole > 0 {
            // What an fsync wrote of the unit is in the file already.
            let from = self
                .on_disk
                .clamp(self.tail_at, self.tail_at + whole as u64);
            let skip = (from - self.tail_at) as usize;
            if let Err(e) = write_at(&self.file, &self.tail[skip..whole], from) {
                self.tail.truncate(kept);
                let _ = self.file.set_len(self.on_disk);
                return Err(e);
            }
            self.on_disk = self.on_disk.max(self.tail_at + whole as u64);
            self.tail.drain(..whole);
            self.tail_at += whole as u64;
        }
        match st.put(self.id, self.tail_at, &self.tail) {
            Ok(n) => Ok(n),
            Err(e) => {
                tracing::warn!(
                    "could not stage the raw journal's last unit ({e}); it is written to the disk from now on"
                );
                *staging = None;
                self.write_tail()?;
                self.tail_at += self.tail.len() as u64;
                self.tail.clear();
                Ok(0)
            }
        }
    }

    /// Writes the staged part of the last unit to the file (what is not
    /// there yet).
    fn write_tail(&mut self) -> std::io::Result<()> {
        let end = self.tail_at + self.tail.len() as u64;
        if self.on_disk < end {
            let skip = (self.on_disk - self.tail_at) as usize;
            write_at(&self.file, &self.tail[skip..], self.on_disk)?;
            self.on_disk = end;
        }
        Ok(())
    }
}

/// The journal a writer appends to.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    /// Every segment, oldest first; the last one is being appended to when
    /// `open` is set.
    segments: Vec<Segment>,
    open: Option<Open>,
    values: Values,
    /// Appended since the last fsync.
    unsynced: bool,
    /// The latest note, written again at the start of every segment, so the
    /// newest segment (never deleted) always holds it.
    preamble: Option<Vec<u8>>,
    /// Where the open segment's partial last unit is kept instead of being
    /// rewritten on the disk (`staging.rs`); opened with the first segment.
    staging: Option<Staging>,
    staging_tried: bool,
    /// Bytes written to the staging file (shared memory, not the disk).
    staged: u64,
}

impl Journal {
    /// A journal over `dir` whose existing segments are `segments` (as
    /// replayed, staged bytes made durable); the next append starts a new
    /// segment, so a torn or foreign tail is never appended to.
    pub fn new(dir: PathBuf, segments: Vec<Segment>) -> Journal {
        Journal {
            dir,
            segments,
            open: None,
            values: Values::default(),
            unsynced: false,
            preamble: None,
            staging: None,
            staging_tried: false,
            staged: 0,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends batch `seq` (points sorted by series, then time); on failure
    /// the segment is as it was, so a retried flush does not leave a torn
    /// record behind it.
    pub fn append(&mut self, seq: u64, points: &[LogPoint], series_count: usize) -> Result<u64> {
        self.start(seq, series_count)?;
        let record = encode(seq, points, &mut self.values);
        let max_ts = points.iter().map(|p| p.ts.div_euclid(1000)).max();
        let n = self.write(seq, &record, max_ts)?;
        if let Some(seg) = self.segments.last_mut() {
            seg.points += points.len() as u64;
        }
        Ok(n)
    }

    /// Appends a note (opaque bytes that replay skips) and keeps it as the
    /// preamble of every later segment; `seq` is the last batch written.
    pub fn note(&mut self, seq: u64, body: &[u8], series_count: usize) -> Result<u64> {
        let record = header(seq, NOTE, 0, body);
        self.preamble = Some(record.clone());
        if self.start(seq, series_count)? {
            // A new segment starts with the preamble: written already.
            return Ok(record.len() as u64);
        }
        self.write(seq, &record, None)
    }

    /// Notes that a rollup pass ran as of `now` (seconds); `seq` is the
    /// last batch written.
    pub fn mark(&mut self, seq: u64, now: i64, series_count: usize) -> Result<u64> {
        self.start(seq, series_count)?;
        self.write(seq, &header(seq, MARK, now, &[]), None)
    }

    /// Rolls over to a new segment when there is none open, it is full or
    /// an append to it failed; says whether it did.
    fn start(&mut self, seq: u64, series_count: usize) -> Result<bool> {
        let limit = SEGMENT_MIN_BYTES.max(SEGMENT_BYTES_PER_SERIES * series_count as u64);
        if self.open.as_ref().is_none_or(|o| o.broken)
            || self.segments.last().is_none_or(|s| s.bytes >= limit)
        {
            self.roll(seq)?;
            return Ok(true);
        }
        Ok(false)
    }

    fn write(&mut self, seq: u64, record: &[u8], max_ts: Option<i64>) -> Result<u64> {
        let (Some(seg), Some(open)) = (self.segments.last_mut(), self.open.as_mut()) else {
            // `start` rolls before every write: this is a bug, not a disk.
            return Err(Error::damaged(
                "the raw journal has no open segment to append to",
            ));
        };
        match open.append(&mut self.staging, record) {
            Ok(staged) => self.staged += staged,
            Err(e) => {
                // Encoding moved the per-series values on: they now disagree
                // with the file, so the next append starts a new segment.
                open.broken = true;
                return Err(Error::io(format!("append to {}", seg.path.display()), e));
            }
        }
        seg.bytes += record.len() as u64;
        seg.last_seq = seg.last_seq.max(seq);
        if let Some(max) = max_ts {
            seg.max_ts = seg.max_ts.max(max);
        }
        self.unsynced = true;
        Ok(record.len() as u64)
    }

    /// Closes the current segment (fsynced) and starts the next one. Its
    /// name is the first batch it holds, or one past the newest segment's
    /// name when that is higher (a rollup mark after a restart carries the
    /// last batch written): names sort in write order and never repeat, and
    /// an existing file is never opened for writing again.
    fn roll(&mut self, first_seq: u64) -> Result<()> {
        self.sync()?;
        std::fs::create_dir_all(&self.dir).map_err(io(format!("create {}", self.dir.display())))?;
        if !self.staging_tried {
            // What a staging file held is durable by now: the replay
            // wrote it to its segment, and every segment since is synced.
            self.staging_tried = true;
            self.staging = Staging::open(&self.dir);
        }
        let first_seq = self
            .segments
            .last()
            .map_or(first_seq, |s| first_seq.max(s.first_seq + 1));
        let path = self.dir.join(segment_name(first_seq));
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let file = opts
            .open(&path)
            .map_err(io(format!("create {}", path.display())))?;
        let id = file
            .metadata()
            .map(|m| SegmentId::of(&m, first_seq))
            .map_err(io(format!("create {}", path.display())))?;
        sync_dir(&self.dir)?;
        self.segments.push(Segment {
            path,
            first_seq,
            last_seq: first_seq,
            max_ts: i64::MIN,
            bytes: 0,
            points: 0,
        });
        self.open = Some(Open {
            file,
            id,
            tail: Vec::new(),
            tail_at: 0,
            on_disk: 0,
            broken: false,
        });
        self.values.reset();
        if let Some(preamble) = self.preamble.clone() {
            self.write(first_seq, &preamble, None)?;
        }
        Ok(())
    }

    /// Makes every append so far survive a power cut: the staged part of
    /// the last unit is written to the file, then the file is fsynced.
    pub fn sync(&mut self) -> Result<()> {
        if let (Some(open), true) = (&mut self.open, self.unsynced) {
            let path = self.segments.last().map_or(Path::new(""), |s| &s.path);
            open.write_tail()
                .and_then(|()| open.file.sync_data())
                .map_err(io(format!("sync {}", path.display())))?;
        }
        self.unsynced = false;
        Ok(())
    }

    /// Syncs, then removes the staging file, which holds nothing the
    /// segments do not: at close.
    pub fn close(&mut self) -> Result<()> {
        self.sync()?;
        if let Some(s) = self.staging.take() {
            s.remove();
        }
        Ok(())
    }

    /// Deletes the closed segments `unneeded` accepts; returns how many.
    pub fn delete(&mut self, unneeded: impl Fn(&Segment) -> bool) -> Result<usize> {
        let open = self.open.is_some();
        let last = self.segments.len().saturating_sub(1);
        let mut gone = Vec::new();
        for (i, s) in self.segments.iter().enumerate() {
            if (open && i == last) || !unneeded(s) {
                continue;
            }
            match std::fs::remove_file(&s.path) {
                Ok(()) => gone.push(i),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => gone.push(i),
                Err(e) => return Err(Error::io(format!("delete {}", s.path.display()), e)),
            }
        }
        for i in gone.iter().rev() {
            self.segments.remove(*i);
        }
        Ok(gone.len())
    }

    /// Bytes written to the staging file since the journal was opened.
    pub fn staged_bytes(&self) -> u64 {
        self.staged
    }

    /// (segments, bytes) on disk.
    pub fn usage(&self) -> (usize, u64) {
        (
            self.segments.len(),
            self.segments.iter().map(|s| s.bytes).sum(),
        )
    }
}

/// Reads every segment of `dir`, oldest first, handing each segment's
/// records (in order) to `f`; returns what the segments hold. The newest segment may end in a
/// torn record (a crash or full disk mid-append): with `repair`, it is cut
/// off there; without (read-only), it is ignored. Damage anywhere else is
/// an error naming the segment and the offset.
pub fn replay(
    dir: &Path,
    repair: bool,
    mut f: impl FnMut(Vec<Record>) -> Result<()>,
) -> Result<Vec<Segment>> {
    pipeline(
        dir,
        repair,
        |b, _| decode_segment(b),
        |(records, _)| f(std::mem::take(records)),
        |records, seg| {
            for r in records {
                seg.points += r.points.len() as u64;
                seg.last_seq = seg.last_seq.max(r.seq);
                if let Some(max) = r.points.iter().map(|p| p.ts.div_euclid(1000)).max() {
                    seg.max_ts = seg.max_ts.max(max);
                }
            }
        },
    )
}

/// What a series-by-series replay hands over, in order: pieces of a
/// segment's points (series ascending, each series' points in write
/// order), then what the segment held besides.
pub enum Piece<'a> {
    Points(&'a [Replayed]),
    Segment(&'a BySeries),
}

enum Msg {
    Points(Vec<Replayed>),
    Done(Segment, BySeries),
}

/// `replay`, with each segment's points handed over series by series
/// (see `decode_by_series`), in pieces: what an open applies. One thread
/// reads and decodes while the caller applies; a few 8 MB pieces are in
/// flight, so a big fleet's journal of hundreds of MB is replayed in little
/// memory.
pub fn replay_by_series(
    dir: &Path,
    repair: bool,
    mut f: impl FnMut(Piece<'_>) -> Result<()>,
) -> Result<Vec<Segment>> {
    let files = list(dir)?;
    let n = files.len();
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Msg>>(2);
        let (back_tx, back_rx) = std::sync::mpsc::sync_channel::<Vec<Replayed>>(2);
        scope.spawn(move || {
            for (i, (first_seq, path)) in files.into_iter().enumerate() {
                let bytes = match segment_bytes(&path, repair) {
                    Ok(b) => b,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && !repair => continue,
                    Err(e) => {
                        let _ = tx.send(Err(Error::io(format!("read {}", path.display()), e)));
                        return;
                    }
                };
                let mut gone = false;
                let mut emit = |piece: Vec<Replayed>| {
                    if !piece.is_empty() && tx.send(Ok(Msg::Points(piece))).is_err() {
                        gone = true;
                    }
                    let mut next = back_rx.try_recv().unwrap_or_default();
                    next.clear();
                    next.reserve(PIECE);
                    next
                };
                let (meta, damage) = decode_by_series(&bytes, &mut emit);
                if gone {
                    return;
                }
                let len = bytes.len() as u64;
                drop(bytes);
                let done = settle(first_seq, path, len, damage, i + 1 == n, repair).map(|seg| {
                    let mut seg = seg;
                    if let Some(l) = meta.last_seq {
                        seg.last_seq = seg.last_seq.max(l);
                    }
                    seg.max_ts = seg.max_ts.max(meta.max_ts);
                    seg.points = meta.points;
                    Msg::Done(seg, meta)
                });
                let failed = done.is_err();
                if tx.send(done).is_err() || failed {
                    return;
                }
            }
        });
        let mut segments = Vec::with_capacity(n);
        for msg in rx {
            match msg? {
                Msg::Points(piece) => {
                    f(Piece::Points(&piece))?;
                    let _ = back_tx.try_send(piece);
                }
                Msg::Done(seg, meta) => {
                    f(Piece::Segment(&meta))?;
                    segments.push(seg);
                }
            }
        }
        Ok(segments)
    })
}

/// A decoded segment's metadata, or the error its damage is: a torn end of
/// the newest segment is cut off (with `repair`) or ignored; damage
/// anywhere else names the segment.
fn settle(
    first_seq: u64,
    path: PathBuf,
    len: u64,
    damage: Option<Damage>,
    last: bool,
    repair: bool,
) -> Result<Segment> {
    let good = match &damage {
        None => len,
        Some(Damage::Torn { offset }) if last => *offset,
        Some(d) => {
            return Err(Error::damaged(format!(
                "raw journal segment {}: {d}",
                path.display()
            )));
        }
    };
    if let Some(d) = &damage {
        tracing::warn!(
            "raw journal segment {} ends in {d} (a crash or full disk during a write); the rest of it is ignored",
            path.display(),
        );
        if repair {
            OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(good))
                .map_err(io(format!("repair {}", path.display())))?;
        }
    }
    Ok(Segment {
        path,
        first_seq,
        last_seq: first_seq,
        max_ts: i64::MIN,
        bytes: good,
        points: 0,
    })
}

/// Decodes a segment's bytes, into a buffer a previous segment filled if
/// one is handed back; says where the good part ends if it is damaged.
type Decode<T> = fn(&[u8], Option<T>) -> (T, Option<Damage>);

/// Reads the segments of `dir` in order, decoding each with `decode` on a
/// thread of its own (the next segment is read and decoded while the
/// caller applies this one: at open, a big fleet's journal is hundreds of
/// MB), and hands each to `apply` in order.
fn pipeline<T: Send>(
    dir: &Path,
    repair: bool,
    decode: Decode<T>,
    mut apply: impl FnMut((&mut T, ())) -> Result<()>,
    describe: fn(&T, &mut Segment),
) -> Result<Vec<Segment>> {
    let files = list(dir)?;
    let n = files.len();
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        // What was applied goes back to be decoded into again: buffers of
        // tens of MB, fresh each time, would cost page faults per segment.
        let (back_tx, back_rx) = std::sync::mpsc::sync_channel::<T>(2);
        scope.spawn(move || {
            for (i, (first_seq, path)) in files.into_iter().enumerate() {
                let reuse = back_rx.try_recv().ok();
                let segment =
                    read_segment(first_seq, path, i + 1 == n, repair, decode, reuse, describe);
                let failed = segment.is_err();
                if tx.send(segment).is_err() || failed {
                    break;
                }
            }
        });
        let mut segments = Vec::with_capacity(n);
        for segment in rx {
            if let Some((seg, mut content)) = segment? {
                apply((&mut content, ()))?;
                segments.push(seg);
                let _ = back_tx.try_send(content);
            }
        }
        Ok(segments)
    })
}

/// Reads and decodes one segment; `None` when it vanished since it was
/// listed (a writer beside a read-only replay deleted it).
fn read_segment<T>(
    first_seq: u64,
    path: PathBuf,
    last: bool,
    repair: bool,
    decode: Decode<T>,
    reuse: Option<T>,
    describe: fn(&T, &mut Segment),
) -> Result<Option<(Segment, T)>> {
    let bytes = match segment_bytes(&path, repair) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !repair => return Ok(None),
        Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
    };
    let (content, damage) = decode(&bytes, reuse);
    let len = bytes.len() as u64;
    drop(bytes);
    let mut seg = settle(first_seq, path, len, damage, last, repair)?;
    describe(&content, &mut seg);
    Ok(Some((seg, content)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    /// Appends batches `seqs`, of `n` points each, 5 s apart.
    fn append_batches(j: &mut Journal, seqs: std::ops::RangeInclusive<u64>, n: u32, series: usize) {
        for seq in seqs {
            j.append(seq, &batch(seq, n, seq as i64 * 5_000), series)
                .unwrap();
        }
    }

    /// The batches a replay of `jdir` finds, in order, and its segments.
    fn replayed(jdir: &Path, repair: bool) -> (Vec<u64>, Vec<Segment>) {
        let mut seqs = Vec::new();
        let segments = replay(jdir, repair, |rs| {
            seqs.extend(rs.iter().map(|r| r.seq));
            Ok(())
        })
        .unwrap();
        (seqs, segments)
    }

    fn batch(seq: u64, n: u32, ts: i64) -> Vec<LogPoint> {
        (0..n)
            .map(|sid| LogPoint {
                sid,
                ts,
                value: (seq * 1000 + u64::from(sid)) as f64 / 7.0,
            })
            .collect()
    }

    proptest! {
        #[test]
        fn records_round_trip_bit_exact(
            batches in proptest::collection::vec(
                proptest::collection::vec(
                    (0u32..3000, 0i64..4_000_000_000_000, prop_oneof![
                        any::<f64>().prop_filter("finite", |v| v.is_finite()),
                        (0i32..3).prop_map(f64::from),
                        (0u64..1 << 21).prop_map(|pages| (pages * 4096) as f64 / 8_589_934_592.0 * 100.0),
                        (0u64..1 << 40).prop_map(|n| n as f64),
                    ]), 0..200), 1..8)
        ) {
            let mut values = Values::default();
            let mut bytes = Vec::new();
            let mut expected = Vec::new();
            for (seq, b) in batches.iter().enumerate() {
                let mut pts: Vec<LogPoint> =
                    b.iter().map(|&(sid, ts, value)| LogPoint { sid, ts, value }).collect();
                pts.sort_by_key(|p| (p.sid, p.ts));
                bytes.extend(encode(seq as u64, &pts, &mut values));
                expected.push((seq as u64, pts));
            }
            let (records, damage) = decode_segment(&bytes);
            prop_assert!(damage.is_none());
            // Series by series: the same points, grouped by series, each
            // series' points in write order.
            let mut got_points: Vec<Replayed> = Vec::new();
            let (_, damage) = decode_by_series(&bytes, &mut |piece| {
                got_points.extend(piece);
                Vec::new()
            });
            prop_assert!(damage.is_none());
            let mut want: Vec<(u64, i64, u64, u32)> = records
                .iter()
                .flat_map(|r| r.points.iter().map(move |p| (r.seq, p.ts, p.value.to_bits(), p.sid)))
                .collect();
            want.sort_by_key(|p| p.3);
            let got: Vec<(u64, i64, u64, u32)> =
                got_points.iter().map(|p| (p.0, p.1, p.2.to_bits(), p.3)).collect();
            prop_assert_eq!(got, want);
            prop_assert_eq!(records.len(), expected.len());
            for (r, (seq, pts)) in records.iter().zip(&expected) {
                prop_assert_eq!(r.seq, *seq);
                prop_assert_eq!(r.points.len(), pts.len());
                for (a, b) in r.points.iter().zip(pts) {
                    prop_assert_eq!((a.sid, a.ts, a.value.to_bits()), (b.sid, b.ts, b.value.to_bits()));
                }
            }
        }
    }

    #[test]
    fn a_poll_costs_about_its_values() {
        let mut values = Values::default();
        let first = encode(1, &batch(1, 255, 1_000), &mut values);
        let second = encode(2, &batch(2, 255, 6_000), &mut values);
        assert!(first.len() > 255 * 8, "first values are whole");
        // Series ids and the shared timestamp cost ~2 bits a point.
        assert!(
            second.len() < first.len(),
            "{} {}",
            second.len(),
            first.len()
        );
    }

    #[test]
    fn torn_and_corrupt_records_are_told_apart() {
        let mut values = Values::default();
        let mut bytes = encode(1, &batch(1, 10, 1_000), &mut values);
        let good = bytes.len() as u64;
        bytes.extend(encode(2, &batch(2, 10, 2_000), &mut values));
        let (recs, damage) = decode_segment(&bytes[..bytes.len() - 3]);
        assert_eq!(recs.len(), 1);
        assert_eq!(damage, Some(Damage::Torn { offset: good }));
        let mut flipped = bytes.clone();
        flipped[good as usize + HEADER + 2] ^= 0x40;
        let (recs, damage) = decode_segment(&flipped);
        assert_eq!(recs.len(), 1);
        assert!(matches!(damage, Some(Damage::Corrupt { offset, .. }) if offset == good));
    }

    #[test]
    fn append_replay_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let jdir = dir.path().join("j");
        let mut j = Journal::new(jdir.clone(), Vec::new());
        append_batches(&mut j, 1..=50, 300, 10_000);
        j.sync().unwrap();
        let (segs, bytes) = j.usage();
        assert!(segs >= 1 && bytes > 0);
        drop(j);
        // A torn tail is cut off on replay with repair.
        let last = list(&jdir).unwrap().pop().unwrap().1;
        let len = std::fs::metadata(&last).unwrap().len();
        OpenOptions::new()
            .append(true)
            .open(&last)
            .unwrap()
            .write_all(&[1, 2, 3])
            .unwrap();
        let (seqs, segments) = replayed(&jdir, true);
        assert_eq!(seqs, (1..=50).collect::<Vec<u64>>());
        assert_eq!(std::fs::metadata(&last).unwrap().len(), len);
        let mut j = Journal::new(jdir.clone(), segments);
        j.append(51, &batch(51, 3, 300_000), 10_000).unwrap();
        // After a restart, a mark naming the last batch starts a segment of
        // its own: it must not replace the one that batch is in.
        let mut j2 = Journal::new(jdir.clone(), replayed(&jdir, true).1);
        j2.mark(51, 300, 10_000).unwrap();
        drop(j2);
        let deleted = j.delete(|s| s.last_seq <= 50).unwrap();
        assert!(deleted >= 1);
        let mut got = Vec::new();
        replay(&jdir, true, |rs| {
            got.extend(rs.iter().map(|r| (r.seq, r.points.len(), r.rolled_to)));
            Ok(())
        })
        .unwrap();
        assert_eq!(got, [(51, 3, None), (51, 0, Some(300))]);
        j.close().unwrap();
    }

    #[test]
    fn the_partial_last_unit_is_staged_until_synced_and_outlives_a_kill() {
        let dir = tempfile::tempdir().unwrap();
        let jdir = dir.path().join("j");
        let mut j = Journal::new(jdir.clone(), Vec::new());
        append_batches(&mut j, 1..=300, 50, 255);
        if j.staging.is_none() {
            eprintln!("/dev/shm is not a tmpfs here: staging is off, nothing to test");
            return;
        }
        let seg = list(&jdir).unwrap().pop().unwrap().1;
        let (_, written) = j.usage();
        let in_file = std::fs::metadata(&seg).unwrap().len();
        assert_eq!(in_file % UNIT as u64, 0, "only whole units reach the file");
        assert!(in_file > 0 && in_file < written && written - in_file < UNIT as u64);
        // A reader sees every batch: the file, then the staged unit.
        assert_eq!(replayed(&jdir, false).0, (1..=300).collect::<Vec<_>>());
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), in_file);
        // Killed before a sync: the next writer's replay puts the staged
        // unit in the file.
        drop(j);
        let (got, segments) = replayed(&jdir, true);
        assert_eq!(got, (1..=300).collect::<Vec<_>>());
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), written);
        // The next writer: its first segment empties the staging file, and
        // a sync puts the partial unit in the file.
        let mut j = Journal::new(jdir.clone(), segments);
        j.append(301, &batch(301, 50, 1_505_000), 255).unwrap();
        let newest = list(&jdir).unwrap().pop().unwrap().1;
        assert_ne!(newest, seg);
        assert_eq!(std::fs::metadata(&newest).unwrap().len(), 0);
        j.sync().unwrap();
        let (_, total) = j.usage();
        assert_eq!(std::fs::metadata(&newest).unwrap().len(), total - written);
        let staged = crate::staging::path_for(&jdir).unwrap();
        assert!(staged.exists());
        j.close().unwrap();
        assert!(!staged.exists(), "close removes the staging file");
        assert_eq!(replayed(&jdir, false).0, (1..=301).collect::<Vec<_>>());
    }

    #[test]
    fn appends_after_a_sync_continue_the_file_where_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let jdir = dir.path().join("j");
        let mut j = Journal::new(jdir.clone(), Vec::new());
        append_batches(&mut j, 1..=100, 50, 255);
        j.sync().unwrap();
        let seg = list(&jdir).unwrap().pop().unwrap().1;
        let len = || std::fs::metadata(&seg).unwrap().len();
        assert_eq!(len(), j.usage().1, "a sync puts every byte in the file");
        append_batches(&mut j, 101..=400, 50, 255);
        if j.staging.is_some() {
            assert!(len() % UNIT as u64 == 0 && len() < j.usage().1);
        }
        assert_eq!(replayed(&jdir, false).0, (1..=400).collect::<Vec<_>>());
        let written = j.usage().1;
        drop(j);
        assert_eq!(replayed(&jdir, true).0, (1..=400).collect::<Vec<_>>());
        assert_eq!(len(), written);
        let _ = crate::staging::Staging::open(&jdir).map(crate::staging::Staging::remove);
    }

    /// A record as the versions before shifted values wrote it: `11` and
    /// the whole value, no `SHIFTED` in the count.
    fn encode_unshifted(seq: u64, points: &[LogPoint], values: &mut Values) -> Vec<u8> {
        let base = points.first().map_or(0, |p| p.ts);
        let mut body = Vec::new();
        let mut c = BitCursor::default();
        let (mut prev_ts, mut prev_sid) = (base, -1i64);
        for p in points {
            put_head(&mut c, &mut body, p, prev_sid, prev_ts);
            let bits = p.value.to_bits();
            match values.get(p.sid) {
                Some(l) if l == bits => c.put(&mut body, 0, 1),
                Some(l) if 64 - delta(p.value, f64::from_bits(l)).leading_zeros() < 56 => {
                    c.put(&mut body, 0b01, 2);
                    c.put_sized(&mut body, delta(p.value, f64::from_bits(l)));
                }
                _ => {
                    c.put(&mut body, 0b11, 2);
                    c.put(&mut body, bits, 64);
                }
            }
            values.set(p.sid, bits);
            prev_ts = p.ts;
            prev_sid = i64::from(p.sid);
        }
        header(seq, points.len() as u32, base, &body)
    }

    #[test]
    fn segments_of_earlier_versions_still_decode() {
        let polls: Vec<Vec<LogPoint>> = (0..50u64)
            .map(|i| {
                (0..20u32)
                    .map(|sid| LogPoint {
                        sid,
                        ts: 1_000_000 + i as i64 * 5_000,
                        // Whole, repeated, shifted-looking and plain changes.
                        value: match sid % 4 {
                            0 => ((i * 7 + u64::from(sid)) * 4096) as f64 / 8_589_934_592.0 * 100.0,
                            1 => 3.0,
                            2 => (i * 1_000_003) as f64,
                            _ => (i as f64 * 0.37 + f64::from(sid)).sin(),
                        },
                    })
                    .collect()
            })
            .collect();
        let mut values = Values::default();
        let old: Vec<u8> = polls
            .iter()
            .enumerate()
            .flat_map(|(seq, pts)| encode_unshifted(seq as u64, pts, &mut values))
            .collect();
        let mut values = Values::default();
        let new: Vec<u8> = polls
            .iter()
            .enumerate()
            .flat_map(|(seq, pts)| encode(seq as u64, pts, &mut values))
            .collect();
        assert!(new.len() < old.len(), "{} vs {}", new.len(), old.len());
        for bytes in [&old, &new] {
            let (records, damage) = decode_segment(bytes);
            assert!(damage.is_none());
            let got: Vec<Vec<(u32, i64, u64)>> = records
                .iter()
                .map(|r| {
                    r.points
                        .iter()
                        .map(|p| (p.sid, p.ts, p.value.to_bits()))
                        .collect()
                })
                .collect();
            let want: Vec<Vec<(u32, i64, u64)>> = polls
                .iter()
                .map(|pts| {
                    pts.iter()
                        .map(|p| (p.sid, p.ts, p.value.to_bits()))
                        .collect()
                })
                .collect();
            assert_eq!(got, want);
            let mut by_series = 0usize;
            let (_, damage) = decode_by_series(bytes, &mut |piece| {
                by_series += piece.len();
                Vec::new()
            });
            assert!(damage.is_none());
            assert_eq!(by_series, 50 * 20);
        }
    }
}

//! Reading the raw journal from a position while the writer appends to it:
//! what a remote-write exporter sends from (`Store::journal_tail`).
//!
//! A tail keeps the segment it is in open, the byte offset it has decoded
//! to and the per-series value state the segment's records are coded
//! against, so each read decodes only what was appended since. It parses
//! complete records only: the writer appends a record with one `write`, and
//! a reader may see the first pages of it before the rest (a torn record is
//! "not yet"). Once a newer segment exists, the current one is final, and
//! the tail moves on. It holds no lock of the store while it reads files.
//!
//! Batch sequence numbers are consecutive, so a tail that finds the next
//! batch it expects gone (its segment was deleted) knows exactly how many
//! batches it missed: it says so with the batches and, as far as the writer
//! counted them, the points ([`Gap`]).
//!
//! # Holds
//! A tail holds the journal from the batch its owner last acknowledged
//! ([`JournalTail::acknowledge`]): the writer keeps every segment holding a
//! later batch for as long as raw retention lasts, counted from the
//! segment's last write, even once its points are rolled up. So a consumer
//! less than raw retention behind loses nothing, also for backfilled points
//! whose own timestamps are old. A segment deleted while a hold still
//! needed it is counted against that hold.

use crate::error::{Error, Result};
use crate::journal::{self, HEADER, MARK, NOTE, Segment, Values, decode_body};
use crate::staging::{self, Staged};
use crate::state::State;
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// One point read back: the series it now answers as (merges followed),
/// Unix ms, value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TailPoint {
    /// The series id; `Store::series_keys` names it.
    pub sid: u32,
    /// Unix ms.
    pub ts: i64,
    /// The point's value.
    pub value: f64,
}

/// One flushed batch.
#[derive(Debug, Clone, PartialEq)]
pub struct TailBatch {
    /// Its sequence number: one more than the batch before it.
    pub seq: u64,
    /// Its points, in the order the journal holds them.
    pub points: Vec<TailPoint>,
}

/// Batches the tail expected and found deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gap {
    /// How many batches are gone.
    pub batches: u64,
    /// Points in the segments deleted while this tail's hold needed them
    /// (0 when they were deleted before the hold existed: unknown).
    pub points: u64,
}

/// What one `read` found.
#[derive(Debug, Default)]
pub struct TailRead {
    /// Whole batches, in sequence order.
    pub batches: Vec<TailBatch>,
    /// Set when batches were skipped because they are gone.
    pub gap: Option<Gap>,
}

/// What is left to read after the tail's position, from record headers
/// only (no body is decoded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unread {
    /// Batches not read yet.
    pub batches: u64,
    /// Points in those batches.
    pub points: u64,
    /// Earliest point of the first unread batch (Unix ms).
    pub oldest_ts: Option<i64>,
}

/// The journal positions consumers still need, shared with the writer.
#[derive(Debug, Default)]
pub struct Holds {
    inner: Mutex<HoldMap>,
}

#[derive(Debug, Default)]
struct HoldMap {
    next_id: u64,
    /// id -> (last acknowledged batch, batches and points lost to deletion)
    holds: HashMap<u64, (u64, Gap)>,
}

impl Holds {
    fn add(&self, acked: u64) -> u64 {
        let mut m = self.inner.lock();
        m.next_id += 1;
        let id = m.next_id;
        m.holds.insert(id, (acked, Gap::default()));
        id
    }

    fn set(&self, id: u64, acked: u64) {
        if let Some(h) = self.inner.lock().holds.get_mut(&id) {
            h.0 = h.0.max(acked);
        }
    }

    fn take_lost(&self, id: u64) -> u64 {
        self.inner
            .lock()
            .holds
            .get_mut(&id)
            .map_or(0, |h| std::mem::take(&mut h.1.points))
    }

    fn remove(&self, id: u64) {
        self.inner.lock().holds.remove(&id);
    }

    /// Whether some hold still needs `seg` and raw retention, counted from
    /// the segment's last write, has not run out for it.
    pub(crate) fn keeps(&self, seg: &Segment, raw_retention: Duration) -> bool {
        let needed = self.inner.lock().holds.values().any(|h| h.0 < seg.last_seq);
        if !needed {
            return false;
        }
        let written = std::fs::metadata(&seg.path).and_then(|m| m.modified());
        match written {
            Ok(t) => SystemTime::now()
                .duration_since(t)
                .is_ok_and(|age| age < raw_retention),
            Err(_) => false,
        }
    }

    /// Counts a deleted segment against every hold that still needed it.
    pub(crate) fn deleted(&self, seg: &Segment) {
        for h in self.inner.lock().holds.values_mut() {
            if h.0 < seg.last_seq {
                h.1.batches += seg.last_seq - h.0.max(seg.first_seq.saturating_sub(1));
                h.1.points += seg.points;
                tracing::warn!(
                    "raw journal segment {} deleted before a remote-write target read it: it is more than raw retention behind",
                    seg.path.display()
                );
            }
        }
    }
}

/// How long an unknown series id is waited for: a batch is appended to the
/// journal just before its new series are published in memory.
const UNKNOWN_SERIES_WAIT: Duration = Duration::from_secs(2);
/// Bytes read from a segment at a time.
const READ_CHUNK: usize = 1 << 20;

/// The segment a tail is in.
struct Open {
    name: u64,
    path: PathBuf,
    file: File,
    /// Bytes read from the file, from `base` on.
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    base: u64,
    /// Offset in `buf` of the first record not decoded yet.
    pos: usize,
    values: Values,
    /// Damage found: the rest of the segment is skipped.
    damaged: bool,
}

/// A reader of the raw journal from a position; see the module docs.
pub struct JournalTail {
    dir: PathBuf,
    shared: Arc<RwLock<State>>,
    holds: Arc<Holds>,
    hold: u64,
    /// The next batch wanted; `None`: the oldest there is.
    want: Option<u64>,
    open: Option<Open>,
    /// After leaving a segment: the next one opened is the first after it.
    next_after: Option<u64>,
}

impl Drop for JournalTail {
    fn drop(&mut self) {
        self.holds.remove(self.hold);
    }
}

impl JournalTail {
    pub(crate) fn new(
        dir: PathBuf,
        shared: Arc<RwLock<State>>,
        holds: Arc<Holds>,
        after: Option<u64>,
    ) -> JournalTail {
        let hold = holds.add(after.unwrap_or(0));
        JournalTail {
            dir,
            shared,
            holds,
            hold,
            want: after.map(|a| a + 1),
            open: None,
            next_after: None,
        }
    }

    /// Says every batch up to `seq` is delivered: the journal need not keep
    /// it for this tail any more.
    pub fn acknowledge(&self, seq: u64) {
        self.holds.set(self.hold, seq);
    }

    /// The next batch this tail will return (or later, if it is gone).
    pub fn position(&self) -> Option<u64> {
        self.want
    }

    /// Reads whole batches after the position until about `max_points`
    /// points (at least one batch when there is one), or the end of what is
    /// written.
    pub fn read(&mut self, max_points: usize) -> Result<TailRead> {
        let mut out = TailRead::default();
        let mut points = 0usize;
        loop {
            if self.open.is_none() && !self.open_next()? {
                return Ok(out);
            }
            let open = self.open.as_mut().expect("opened above");
            while !open.damaged {
                let (rec, body) = match journal::next_record(&open.buf[open.pos..]) {
                    journal::Next::Incomplete => break,
                    journal::Next::Corrupt => {
                        tracing::error!(
                            "raw journal segment {}: checksum mismatch at byte {}; a remote-write reader skips the rest of it",
                            open.path.display(),
                            open.base + open.pos as u64
                        );
                        open.damaged = true;
                        break;
                    }
                    journal::Next::Record(head, body) => (head, body),
                };
                open.pos += HEADER + rec.body;
                if rec.count == MARK || rec.count == NOTE {
                    continue;
                }
                let decoded = match decode_body(
                    body,
                    rec.count,
                    rec.shifted,
                    rec.base,
                    &mut open.values,
                ) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::error!(
                            "raw journal segment {}: batch {} cannot be decoded ({e}); a remote-write reader skips the rest of the segment",
                            open.path.display(),
                            rec.seq
                        );
                        open.damaged = true;
                        break;
                    }
                };
                if self.want.is_some_and(|w| rec.seq < w) {
                    continue;
                }
                if let Some(w) = self.want
                    && rec.seq > w
                {
                    let gap = out.gap.get_or_insert_with(Gap::default);
                    gap.batches += rec.seq - w;
                    gap.points += self.holds.take_lost(self.hold);
                }
                let routed = route(&self.shared, &decoded)?;
                points += routed.len();
                out.batches.push(TailBatch {
                    seq: rec.seq,
                    points: routed,
                });
                self.want = Some(rec.seq + 1);
                if points >= max_points {
                    return Ok(out);
                }
            }
            if !open.damaged && fill(open)? > 0 {
                continue;
            }
            // At the end of what is written: done, unless a newer segment
            // exists, which makes this one final.
            let name = open.name;
            if newer_than(&self.dir, name)?.is_none() {
                return Ok(out);
            }
            let open = self.open.as_mut().expect("still open");
            if !open.damaged && fill(open)? > 0 {
                continue;
            }
            if !open.damaged && open.pos < open.buf.len() {
                tracing::warn!(
                    "raw journal segment {} ends in an incomplete record (a failed write, cut back); a remote-write reader moves on",
                    open.path.display()
                );
            }
            self.open = None;
            self.next_after = Some(name);
        }
    }

    /// What is written after the position, from record headers.
    pub fn unread(&self) -> Result<Unread> {
        let mut out = Unread::default();
        let files = journal::list(&self.dir)?;
        let start = self.open.as_ref().map(|o| (o.name, o.base + o.pos as u64));
        let newest = files.last().map(|(n, _)| *n);
        for (name, path) in files {
            let from = match start {
                Some((n, _)) if name < n => continue,
                Some((n, off)) if name == n => off,
                _ => 0,
            };
            let Ok(mut file) = File::open(&path) else {
                continue;
            };
            // The newest segment's partial last unit may be staged.
            let staged = match (Some(name) == newest, file.metadata()) {
                (true, Ok(meta)) => staging::for_segment(&path, &meta, name),
                _ => None,
            };
            let mut off = from;
            let mut head = [0u8; HEADER];
            loop {
                let n = read_at(&mut file, off, &mut head)?;
                if n < HEADER
                    && past_file(staged.as_ref(), off + n as u64, &mut head[n..]) < HEADER - n
                {
                    break;
                }
                let Some(journal::Head {
                    body,
                    seq,
                    count,
                    base,
                    ..
                }) = journal::Head::read(&head)
                else {
                    break;
                };
                off += (HEADER + body) as u64;
                if count == MARK || count == NOTE || self.want.is_some_and(|w| seq < w) {
                    continue;
                }
                out.batches += 1;
                out.points += u64::from(count);
                out.oldest_ts = Some(out.oldest_ts.map_or(base, |t: i64| t.min(base)));
            }
        }
        Ok(out)
    }
}

impl JournalTail {
    /// Opens the segment to read next: the first after the one just left,
    /// else the one holding the batch wanted; false when there is none.
    fn open_next(&mut self) -> Result<bool> {
        let files = journal::list(&self.dir)?;
        let chosen = match self.next_after.take() {
            Some(after) => files.into_iter().find(|(n, _)| *n > after),
            None => match self.want {
                // The batch wanted is in the last segment named at or
                // before it; if none is, the oldest holds what is left.
                Some(w) => {
                    let at = files.iter().rposition(|(n, _)| *n <= w);
                    match at {
                        Some(i) => files.into_iter().nth(i),
                        None => files.into_iter().next(),
                    }
                }
                None => files.into_iter().next(),
            },
        };
        let Some((name, path)) = chosen else {
            return Ok(false);
        };
        let file = match File::open(&path) {
            Ok(f) => f,
            // Deleted since it was listed: look again from here.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.next_after = Some(name);
                return self.open_next();
            }
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        };
        self.open = Some(Open {
            name,
            path,
            file,
            buf: Vec::new(),
            base: 0,
            pos: 0,
            values: Values::default(),
            damaged: false,
        });
        Ok(true)
    }
}

/// Reads what was appended since the last read; returns the bytes read.
fn fill(open: &mut Open) -> Result<usize> {
    // Drop what is decoded, so the buffer holds about one chunk.
    if open.pos > 0 {
        open.buf.drain(..open.pos);
        open.base += open.pos as u64;
        open.pos = 0;
    }
    let at = open.buf.len();
    let off = open.base + at as u64;
    // Most reads find nothing new: ask the size first, without a buffer.
    let meta = open
        .file
        .metadata()
        .map_err(|e| Error::io(format!("read {}", open.path.display()), e))?;
    let len = meta.len();
    if len <= off {
        return Ok(staged(open, off, &meta));
    }
    let want = usize::try_from(len - off)
        .unwrap_or(READ_CHUNK)
        .min(READ_CHUNK);
    open.buf.resize(at + want, 0);
    let n = read_at(&mut open.file, off, &mut open.buf[at..])?;
    open.buf.truncate(at + n);
    Ok(n)
}

/// Appends to the buffer what is staged for the segment past `off` (the
/// end of its file): the writer keeps a partial last unit in shared memory
/// until the unit fills or is synced (`staging.rs`).
fn staged(open: &mut Open, off: u64, meta: &std::fs::Metadata) -> usize {
    let Some(st) = staging::for_segment(&open.path, meta, open.name) else {
        return 0;
    };
    let new = st.after(off);
    open.buf.extend_from_slice(new);
    new.len()
}

/// Fills `buf` from what is staged at `off`, past the end of the file;
/// returns the bytes copied.
fn past_file(staged: Option<&Staged>, off: u64, buf: &mut [u8]) -> usize {
    let more = staged.map_or(&[][..], |st| st.after(off));
    let n = more.len().min(buf.len());
    buf[..n].copy_from_slice(&more[..n]);
    n
}

/// Reads up to `buf.len()` bytes at `off`, fewer only at the end of the file.
fn read_at(file: &mut File, off: u64, buf: &mut [u8]) -> Result<usize> {
    use std::io::{Seek, SeekFrom};
    let io = |e| Error::io("read a raw journal segment", e);
    file.seek(SeekFrom::Start(off)).map_err(io)?;
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
    Ok(got)
}

/// The next segment after `name`, if one exists.
fn newer_than(dir: &std::path::Path, name: u64) -> Result<Option<u64>> {
    Ok(journal::list(dir)?
        .into_iter()
        .map(|(n, _)| n)
        .find(|n| *n > name))
}

/// The series each point answers as now (a merged series' points are its
/// target's). A batch is journalled just before its new series are
/// published, so an id not known yet is waited for, briefly.
fn route(shared: &RwLock<State>, points: &[journal::LogPoint]) -> Result<Vec<TailPoint>> {
    let waited = std::time::Instant::now();
    loop {
        {
            let st = shared.read();
            let n = st.series.len() as u32;
            if points.iter().all(|p| p.sid < n) {
                return Ok(points
                    .iter()
                    .map(|p| TailPoint {
                        sid: crate::merge::target(&st, p.sid),
                        ts: p.ts,
                        value: p.value,
                    })
                    .collect());
            }
        }
        if waited.elapsed() > UNKNOWN_SERIES_WAIT {
            return Err(Error::damaged(
                "the raw journal names a series the series table does not have",
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

impl crate::Store {
    /// A reader of the raw journal from the batch after `after` (`None`:
    /// from the oldest batch there is), holding the journal from there
    /// (see the module docs of `tail`). Refused for an in-memory store,
    /// which has no journal.
    pub fn journal_tail(&self, after: Option<u64>) -> Result<JournalTail> {
        let Some(path) = self.inner.location.path() else {
            return Err(Error::invalid_input(
                "an in-memory store (metrics.enabled: false) has no raw journal to read",
            ));
        };
        Ok(JournalTail::new(
            journal::dir_of(path),
            self.inner.shared.clone(),
            self.inner.holds.clone(),
            after,
        ))
    }

    /// The keys of series ids as a tail returns them (`None` for an id
    /// not known).
    pub fn series_keys(&self, sids: &[u32]) -> Vec<Option<crate::SeriesKey>> {
        let st = self.inner.shared.read();
        sids.iter()
            .map(|&sid| st.series.get(sid as usize).map(|s| s.key.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::{MetricsConfig, Point, Store};

    fn open(dir: &std::path::Path) -> Store {
        Store::open(MetricsConfig {
            database_path: dir.join("m.db"),
            ..MetricsConfig::default()
        })
        .unwrap()
    }

    fn batch(i: i64, series: usize, t0: i64) -> Vec<Point> {
        (0..series)
            .map(|s| Point {
                resource_type: "vm".into(),
                resource_id: format!("pve1:{s}"),
                metric: "cpu".into(),
                // Full-mantissa values: about 8 bytes a point in the journal.
                value: ((i * 7919 + s as i64 * 104_729) % 100_003) as f64 / 7.3 + 1.0 / 3.0,
                timestamp: t0 + i * 5_000,
            })
            .collect()
    }

    /// Every point comes back once, with its key and exact value, across
    /// segment roll-overs and reads that interleave with writes.
    #[test]
    fn a_tail_reads_every_batch_once_while_the_writer_appends() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let t0 = crate::model::now_ms() - 3_600_000;
        let mut tail = store.journal_tail(None).unwrap();
        let mut got = Vec::new();
        let mut want = Vec::new();
        for i in 0..120 {
            // 1,000 series: ~9 KB a batch, several 512 KiB segments.
            let b = batch(i, 1000, t0);
            want.extend(
                b.iter()
                    .map(|p| (p.resource_id.clone(), p.timestamp, p.value)),
            );
            store.write_batch(&b).unwrap();
            store.flush().unwrap();
            if i % 7 == 0 {
                let r = tail.read(2_500).unwrap();
                assert!(r.gap.is_none());
                got.extend(r.batches);
            }
        }
        loop {
            let r = tail.read(10_000).unwrap();
            if r.batches.is_empty() {
                break;
            }
            got.extend(r.batches);
        }
        let segments = crate::journal::list(&crate::journal::dir_of(&dir.path().join("m.db")))
            .unwrap()
            .len();
        assert!(segments >= 2, "{segments} segments");
        let seqs: Vec<u64> = got.iter().map(|b| b.seq).collect();
        assert_eq!(seqs, (seqs[0]..seqs[0] + 120).collect::<Vec<_>>());
        let mut points = Vec::new();
        for b in &got {
            let sids: Vec<u32> = b.points.iter().map(|p| p.sid).collect();
            let keys = store.series_keys(&sids);
            for (p, k) in b.points.iter().zip(keys) {
                points.push((k.unwrap().resource_id, p.ts, p.value));
            }
        }
        points.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        want.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        assert_eq!(points, want);
        // A tail from a position starts right after it.
        let mut from = store.journal_tail(Some(seqs[100])).unwrap();
        let r = from.read(usize::MAX).unwrap();
        assert_eq!(r.batches.first().map(|b| b.seq), Some(seqs[101]));
        assert_eq!(r.batches.len(), 19);
        assert_eq!(from.unread().unwrap().batches, 0);
        let behind = store.journal_tail(Some(seqs[109])).unwrap();
        let u = behind.unread().unwrap();
        assert_eq!((u.batches, u.points), (10, 10_000));
        assert_eq!(u.oldest_ts, Some(t0 + 110 * 5_000));
    }

    /// Retention keeps what a tail has not acknowledged, for raw retention
    /// counted from the segment's last write; past that the tail is told
    /// how many batches it lost.
    #[test]
    fn holds_keep_segments_and_a_lost_segment_is_a_counted_gap() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let jdir = crate::journal::dir_of(&dir.path().join("m.db"));
        let now = crate::model::now_ms();
        // Points older than raw retention: folded and prunable at once.
        let t0 = now - 5 * 3_600_000;
        let tail = store.journal_tail(Some(0)).unwrap();
        for i in 0..80 {
            store.write_batch(&batch(i, 1000, t0)).unwrap();
            store.flush().unwrap();
        }
        store.maintain(now).unwrap();
        let before = crate::journal::list(&jdir).unwrap();
        assert!(before.len() >= 2);
        store.maintain(now).unwrap();
        assert_eq!(crate::journal::list(&jdir).unwrap(), before, "held");
        // Make every closed segment look older than raw retention.
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3 * 3600);
        for (_, p) in &before[..before.len() - 1] {
            std::fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        store.maintain(now).unwrap();
        let after = crate::journal::list(&jdir).unwrap();
        assert_eq!(after.len(), 1, "{after:?}");
        let mut tail = tail;
        let r = tail.read(usize::MAX).unwrap();
        let gap = r.gap.expect("a gap");
        let first = r.batches.first().map_or(0, |b| b.seq);
        assert_eq!(gap.batches, first - 1);
        assert!(gap.points >= gap.batches * 1000, "{gap:?}");
        assert_eq!(r.batches.len() as u64 + gap.batches, 80);
        // Without a hold, prunable segments go at once.
        drop(tail);
        for i in 80..160 {
            store.write_batch(&batch(i, 1000, t0)).unwrap();
            store.flush().unwrap();
        }
        store.maintain(now).unwrap();
        assert_eq!(crate::journal::list(&jdir).unwrap().len(), 1);
    }

    #[test]
    fn cursors_survive_a_restart_and_segment_roll_overs() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        assert!(store.saved_cursors().unwrap().is_empty());
        let t0 = crate::model::now_ms() - 3_600_000;
        store.write_batch(&batch(0, 10, t0)).unwrap();
        let mut c = crate::Cursors::new();
        c.insert("vm".into(), 1);
        store.save_cursors(&c).unwrap();
        c.insert("vm".into(), 7);
        c.insert("prom".into(), 3);
        store.save_cursors(&c).unwrap();
        assert_eq!(store.saved_cursors().unwrap(), c);
        // Roll over several segments: each starts with the cursors.
        for i in 1..120 {
            store.write_batch(&batch(i, 1000, t0)).unwrap();
            store.flush().unwrap();
        }
        store.close().unwrap();
        let jdir = crate::journal::dir_of(&dir.path().join("m.db"));
        let segs = crate::journal::list(&jdir).unwrap();
        assert!(segs.len() >= 2);
        // Only the newest segment is needed.
        for (_, p) in &segs[..segs.len() - 1] {
            std::fs::remove_file(p).unwrap();
        }
        let store = open(dir.path());
        assert_eq!(store.saved_cursors().unwrap(), c);
    }
}

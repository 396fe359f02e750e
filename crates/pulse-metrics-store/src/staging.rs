//! The journal's unfinished last unit, kept in shared memory instead of
//! being rewritten on the disk.
//!
//! A flush of the typical install appends ~1.8 KB to the open segment
//! every 5 s. The kernel writes dirty pages back about every 30 s, and
//! every time it does, the next append dirties the same, partly filled
//! page (or larger folio) again: each byte of the journal reached the disk
//! ~1.6 times (measured: 1,800-byte appends every 5 s, 50 MB/day of
//! `write_bytes` for 31 MB/day of records; 1.12 times with whole 4 KiB
//! pages, 1.06 with whole 64 KiB units). So the journal writes only whole
//! units of `UNIT` bytes to its segment file; the bytes past the last
//! whole unit go here, a small file on a tmpfs (`/dev/shm`). It survives a killed process as the page
//! cache does, so the kill -9 promise holds. A power cut or reboot loses
//! it, which costs nothing the docs do not already allow: at every
//! fsync (each rollup, each roll-over, close) the journal writes its
//! partial unit to the disk too (and later writes only what follows it).
//!
//! The file has two slots written in turn, each with a checksum, so a
//! process killed mid-write leaves the previous slot readable. A slot
//! names the segment file it belongs to (device, inode and first batch),
//! so nothing staged for one segment, or one database, is ever read into
//! another. It is trusted only when it is a regular file with the journal
//! directory's owner and no access for anyone else.
//!
//! Readers merge it in [`crate::journal::read_segment`]; the writer makes
//! what it holds durable at open, and removes the file at close.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// Where staging files go, when it is a tmpfs.
const SHM: &str = "/dev/shm";
const TMPFS_MAGIC: u64 = 0x0102_1994;
/// What the journal writes to its segment file at a time, past what an
/// fsync wrote: whole units, so the kernel writes each page back once.
pub(crate) const UNIT: usize = 64 * 1024;
const MAGIC: &[u8; 8] = b"PMSTAGE1";
/// magic, generation, device, inode, first batch, offset, length, CRC-32.
const HEAD: usize = 8 + 8 + 8 + 8 + 8 + 8 + 4 + 4;
const SLOT: usize = UNIT + 4096;
const _: () = assert!(HEAD + UNIT <= SLOT);

/// The segment file a slot belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentId {
    dev: u64,
    ino: u64,
    first_seq: u64,
}

impl SegmentId {
    #[cfg(unix)]
    pub(crate) fn of(meta: &std::fs::Metadata, first_seq: u64) -> SegmentId {
        use std::os::unix::fs::MetadataExt;
        SegmentId {
            dev: meta.dev(),
            ino: meta.ino(),
            first_seq,
        }
    }
    #[cfg(not(unix))]
    pub(crate) fn of(_: &std::fs::Metadata, first_seq: u64) -> SegmentId {
        SegmentId {
            dev: 0,
            ino: 0,
            first_seq,
        }
    }
}

/// What a slot holds: the segment's bytes from `offset` on.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Staged {
    pub offset: u64,
    pub bytes: Vec<u8>,
}

impl Staged {
    /// What it adds past the end of `file` (the segment's bytes the file
    /// holds): empty when nothing, `None` when the two disagree (it starts
    /// past the file's end, or differs where they overlap).
    pub(crate) fn beyond<'a>(&'a self, file: &[u8]) -> Option<&'a [u8]> {
        let start = usize::try_from(self.offset).ok()?;
        let overlap = file.len().checked_sub(start)?.min(self.bytes.len());
        (file[start..start + overlap] == self.bytes[..overlap]).then(|| &self.bytes[overlap..])
    }

    /// The staged bytes from segment offset `off` on (none if it is
    /// outside them).
    pub(crate) fn after(&self, off: u64) -> &[u8] {
        off.checked_sub(self.offset)
            .and_then(|skip| usize::try_from(skip).ok())
            .and_then(|skip| self.bytes.get(skip..))
            .unwrap_or_default()
    }
}

/// The staging file of the journal in `journal_dir`, when staging is
/// possible there: `/dev/shm` is a tmpfs (a disk would defeat the purpose)
/// and the directory exists.
pub(crate) fn path_for(journal_dir: &Path) -> Option<PathBuf> {
    let s = rustix::fs::statfs(SHM).ok()?;
    #[allow(clippy::unnecessary_cast)]
    if s.f_type as u64 != TMPFS_MAGIC {
        return None;
    }
    let dir = std::fs::canonicalize(journal_dir).ok()?;
    // FNV-1a: stable across builds, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in dir.as_os_str().as_encoded_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    Some(Path::new(SHM).join(format!("pulse-metrics-{h:016x}.tail")))
}

/// True when `path` is a regular file (not a link) owned by `journal_dir`'s
/// owner and closed to everyone else: a file another user planted in the
/// shared directory is never read or written.
#[cfg(unix)]
fn trusted(path: &Path, journal_dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(m), Ok(d)) = (
        std::fs::symlink_metadata(path),
        std::fs::metadata(journal_dir),
    ) else {
        return false;
    };
    m.file_type().is_file() && m.uid() == d.uid() && m.mode() & 0o077 == 0
}
#[cfg(not(unix))]
fn trusted(_: &Path, _: &Path) -> bool {
    false
}

fn no_follow(opts: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .mode(0o600);
    }
    opts
}

/// The writer's side: where the next slot goes.
#[derive(Debug)]
pub(crate) struct Staging {
    file: File,
    path: PathBuf,
    generation: u64,
}

impl Staging {
    /// Opens (creating it) the staging file of the journal in
    /// `journal_dir`, emptied: call it once what it held is durable in the
    /// segments. `None` when staging is not possible or the file is not
    /// trusted; the journal then writes every append to the disk.
    pub(crate) fn open(journal_dir: &Path) -> Option<Staging> {
        let path = path_for(journal_dir)?;
        let created =
            no_follow(OpenOptions::new().read(true).write(true).create_new(true)).open(&path);
        let file = match created {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if !trusted(&path, journal_dir) {
                    tracing::warn!(
                        "{} is not a private file of this user: the raw journal will append everything to the disk instead",
                        path.display()
                    );
                    return None;
                }
                no_follow(OpenOptions::new().read(true).write(true))
                    .open(&path)
                    .ok()?
            }
            Err(e) => {
                tracing::debug!("no journal staging in {SHM}: {e}");
                return None;
            }
        };
        file.set_len(0).ok()?;
        Some(Staging {
            file,
            path,
            generation: 0,
        })
    }

    /// Stages `bytes` (less than a unit) as segment `seg`'s content from
    /// `offset` on, in the slot not holding the latest; returns the bytes
    /// written to shared memory.
    pub(crate) fn put(&mut self, seg: SegmentId, offset: u64, bytes: &[u8]) -> io::Result<u64> {
        debug_assert!(bytes.len() < UNIT);
        self.generation += 1;
        let mut slot = Vec::with_capacity(HEAD + bytes.len());
        slot.extend_from_slice(MAGIC);
        for v in [self.generation, seg.dev, seg.ino, seg.first_seq, offset] {
            slot.extend_from_slice(&v.to_le_bytes());
        }
        slot.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&slot);
        crc.update(bytes);
        slot.extend_from_slice(&crc.finalize().to_le_bytes());
        slot.extend_from_slice(bytes);
        write_at(&self.file, &slot, (self.generation % 2) * SLOT as u64)?;
        Ok(slot.len() as u64)
    }

    /// Removes the file: at close, once the journal is synced.
    pub(crate) fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Writes `buf` at offset `at` of `file`, whatever its cursor.
#[cfg(unix)]
pub(crate) fn write_at(file: &File, buf: &[u8], at: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, at)
}
#[cfg(not(unix))]
pub(crate) fn write_at(mut file: &File, buf: &[u8], at: u64) -> io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    file.seek(SeekFrom::Start(at))?;
    file.write_all(buf)
}

/// What is staged for the segment file at `path` (its metadata `meta`,
/// named by batch `first_seq`), if anything.
pub(crate) fn for_segment(path: &Path, meta: &std::fs::Metadata, first_seq: u64) -> Option<Staged> {
    read(path.parent()?, SegmentId::of(meta, first_seq))
}

/// The latest intact slot staged for `seg`, if any.
fn read(journal_dir: &Path, seg: SegmentId) -> Option<Staged> {
    let path = path_for(journal_dir)?;
    if !trusted(&path, journal_dir) {
        return None;
    }
    let bytes = std::fs::read(&path).ok()?;
    bytes
        .chunks(SLOT)
        .filter_map(|slot| parse(slot, seg))
        .max_by_key(|(generation, _)| *generation)
        .map(|(_, staged)| staged)
}

fn parse(slot: &[u8], seg: SegmentId) -> Option<(u64, Staged)> {
    let head = slot.get(..HEAD)?;
    if &head[..8] != MAGIC {
        return None;
    }
    let word =
        |i: usize| u64::from_le_bytes(head[8 + 8 * i..16 + 8 * i].try_into().unwrap_or_default());
    let len = u32::from_le_bytes(head[48..52].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(head[52..56].try_into().ok()?);
    let body = slot.get(HEAD..HEAD + len)?;
    let mut h = crc32fast::Hasher::new();
    h.update(&head[..52]);
    h.update(body);
    let id = SegmentId {
        dev: word(1),
        ino: word(2),
        first_seq: word(3),
    };
    (h.finalize() == crc && id == seg).then(|| {
        (
            word(0),
            Staged {
                offset: word(4),
                bytes: body.to_vec(),
            },
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(first_seq: u64) -> SegmentId {
        SegmentId {
            dev: 7,
            ino: 9,
            first_seq,
        }
    }

    #[test]
    fn the_latest_intact_slot_of_the_segment_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let Some(mut s) = Staging::open(dir.path()) else {
            eprintln!("no tmpfs at {SHM}: staging is off here, nothing to test");
            return;
        };
        assert_eq!(read(dir.path(), seg(1)), None);
        s.put(seg(1), 4096, b"abc").unwrap();
        s.put(seg(1), 8192, b"defg").unwrap();
        let got = read(dir.path(), seg(1)).unwrap();
        assert_eq!((got.offset, got.bytes.as_slice()), (8192, &b"defg"[..]));
        // Another segment's slot is never read as this one's.
        assert_eq!(read(dir.path(), seg(2)), None);
        // A slot torn by a kill: the other one is read.
        let path = path_for(dir.path()).unwrap();
        let mut raw = std::fs::read(&path).unwrap();
        raw[HEAD] ^= 1; // slot 0 holds generation 2
        std::fs::write(&path, &raw).unwrap();
        let got = read(dir.path(), seg(1)).unwrap();
        assert_eq!((got.offset, got.bytes.as_slice()), (4096, &b"abc"[..]));
        // Opening again (a writer whose journal is durable) empties it.
        let again = Staging::open(dir.path()).unwrap();
        assert_eq!(read(dir.path(), seg(1)), None);
        again.remove();
        assert!(!path.exists());
        s.remove();
    }

    #[cfg(unix)]
    #[test]
    fn a_file_open_to_others_is_not_trusted() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let Some(mut s) = Staging::open(dir.path()) else {
            return;
        };
        s.put(seg(1), 0, b"x").unwrap();
        let path = path_for(dir.path()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read(dir.path(), seg(1)), None);
        assert!(Staging::open(dir.path()).is_none());
        s.remove();
    }
}

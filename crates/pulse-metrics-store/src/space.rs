//! Telling a full disk from a damaged file. SQLite reports a write that
//! found no room as "database or disk is full", but also, at open, as a
//! plain "disk I/O error" (it cannot size its shared-memory file), which
//! reads like damage and invites deleting a good database.

use crate::error::Error;
use std::path::{Path, PathBuf};

/// Below this many free bytes the file system counts as full: SQLite needs
/// a few pages (WAL, shared memory) to open a database at all.
const FULL_BELOW: u64 = 256 * 1024;

/// The directory holding `db`.
fn dir_of(db: &Path) -> PathBuf {
    match db.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Bytes an unprivileged writer may still use on the file system of `dir`.
#[cfg(unix)]
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let s = rustix::fs::statvfs(dir).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

#[cfg(not(unix))]
pub fn free_bytes(_: &Path) -> Option<u64> {
    None
}

/// `e`, or a disk-full error naming where, when that is what `e` is.
pub fn explain(db: &Path, e: Error) -> Error {
    let dir = dir_of(db);
    let free = free_bytes(&dir);
    let said_full =
        e.sqlite_code() == Some(rusqlite::ErrorCode::DiskFull) || e.os_error() == Some(28); // ENOSPC
    let io_failed = matches!(
        e.sqlite_code(),
        Some(rusqlite::ErrorCode::SystemIoFailure | rusqlite::ErrorCode::CannotOpen)
    ) || e.os_error().is_some();
    if said_full || (io_failed && free.is_some_and(|f| f < FULL_BELOW)) {
        return Error::disk_full(dir, free, e.to_string());
    }
    e
}

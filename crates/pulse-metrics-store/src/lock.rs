//! One writer per database: an exclusive OS lock (`flock`) on a file beside
//! it, `<database>.lock`, held for as long as the store is open and released
//! by the kernel when the process ends, however it ends.
//!
//! Two writers on one file each keep their own picture of the raw log in
//! memory and overwrite each other's slots: acknowledged points vanish while
//! SQLite's integrity check stays "ok". The lock file holds the holder's PID
//! so the refused process can say who holds it. The file is never removed:
//! removing a lock file races with the next process taking it.

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The held lock; dropping it releases the database.
#[derive(Debug)]
pub struct WriterLock {
    _file: File,
}

/// `<database>.lock`.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the writer lock of `db` without waiting; refused with
/// `Error::locked` (naming the holder's PID when it wrote one) if another
/// process holds it.
pub fn acquire(db: &Path) -> Result<WriterLock> {
    let path = lock_path(db);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create directory {}", dir.display()), e))?;
    }
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut file = opts
        .open(&path)
        .map_err(|e| Error::io(format!("open lock file {}", path.display()), e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let pid = text.trim().parse::<u32>().ok();
            return Err(Error::locked(db.to_path_buf(), path, pid));
        }
        Err(TryLockError::Error(e)) => {
            return Err(Error::io(format!("lock {}", path.display()), e));
        }
    }
    // Best effort: the lock is what counts, the PID only helps the message.
    let _ = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()));
    Ok(WriterLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let held = acquire(&db).unwrap();
        let err = acquire(&db).unwrap_err();
        assert!(err.is_locked());
        let text = err.to_string();
        assert!(
            text.contains(&format!("PID {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains("m.db.lock"), "{text}");
        drop(held);
        acquire(&db).unwrap();
    }
}

//! What a process wrote to the files of a directory, told from the outside:
//! sizes looked at over time (bytes appended), and whether a file changed
//! between two looks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Bytes appended to the regular files of one directory since the first
/// look: each file's growth from its size then, or from zero for a file
/// that appeared later. A file deleted meanwhile keeps its last size seen.
#[derive(Debug, Default)]
pub struct Growth {
    /// Per file: (size at the first look or 0, last size seen).
    files: BTreeMap<PathBuf, (u64, u64)>,
    /// Files that appeared after the first look.
    created: usize,
    looked: bool,
}

impl Growth {
    pub fn look(&mut self, dir: &Path) {
        let first = !self.looked;
        self.looked = true;
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let size = meta.len();
            match self.files.get_mut(&e.path()) {
                Some(seen) => seen.1 = size,
                None => {
                    if !first {
                        self.created += 1;
                    }
                    self.files
                        .insert(e.path(), (if first { size } else { 0 }, size));
                }
            }
        }
    }

    /// Bytes appended since the first look.
    pub fn appended(&self) -> u64 {
        self.files
            .values()
            .map(|(from, to)| to.saturating_sub(*from))
            .sum()
    }

    pub fn created(&self) -> usize {
        self.created
    }
}

/// Bytes of the regular files directly in `dir` (0 when it is missing).
pub fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Size and modification time of a file, to tell whether it changed
/// between two looks.
pub fn stamp(path: &Path) -> Option<(u64, SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// The file beside `path` named with `suffix` (`metrics.db-wal`).
pub fn beside(db: &Path, suffix: &str) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

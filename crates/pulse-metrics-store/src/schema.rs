//! Opening the database file: refusing files that are not ours, pragmas,
//! and migrations (plain SQL files applied in order, recorded in
//! `user_version`).

use crate::error::{Error, Result, SqlContext};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Migrations in order; migration `i` brings the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_resources.sql"),
    include_str!("../migrations/0003_journal.sql"),
];
/// The migration that drops the raw log of versions 1 and 2: its batches
/// are copied into the journal first.
const JOURNAL_MIGRATION: usize = 2;
/// The newest schema this build understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;
/// `PRAGMA application_id` of our files ("PMET"), so a file of another
/// program is recognised and refused rather than written into.
const APPLICATION_ID: i32 = 0x504D_4554;
/// Tier chunks are sized so that several fill a page (see
/// `ChunkTier::MINUTE`).
pub const PAGE_SIZE: i64 = 4096;

/// Where the database lives.
#[derive(Debug, Clone)]
pub enum Location {
    File(PathBuf),
    /// A private in-memory database (`metrics.enabled: false`), shared by the
    /// store's connections through SQLite's `memdb` VFS.
    Memory(String),
    /// A file opened for reading only, beside a writer or without one.
    ReadOnly(PathBuf, ReadMode),
}

/// How a read-only store reads its file without writing anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// The WAL holds commits (a writer is running, or stopped without a
    /// checkpoint): read through it, as any WAL reader does. SQLite keeps
    /// this reader's snapshot whole while the writer goes on.
    Shared,
    /// No WAL, or an empty one: the main file holds everything, and is read
    /// as `immutable`. A plain read-only open would create `-wal` and `-shm`
    /// files that outlive it (and needs room for them). A writer running or
    /// starting meanwhile appends to its WAL and only touches the main file
    /// at its next checkpoint, hundreds of commits (minutes) later: far
    /// longer than a read-only command takes.
    Immutable,
}

impl ReadMode {
    /// The mode for `path` as it is now.
    pub fn of(path: &Path) -> ReadMode {
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        match std::fs::metadata(Path::new(&wal)) {
            Ok(m) if m.len() > 0 => ReadMode::Shared,
            _ => ReadMode::Immutable,
        }
    }
}

/// Opens `path` for reading in `mode`; creates nothing.
pub fn open_ro(path: &Path, mode: ReadMode) -> rusqlite::Result<Connection> {
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut uri = String::from("file:");
    for b in abs.to_string_lossy().bytes() {
        match b {
            b'%' | b'?' | b'#' => uri.push_str(&format!("%{b:02X}")),
            _ => uri.push(b as char),
        }
    }
    uri.push_str(match mode {
        ReadMode::Shared => "?mode=ro",
        ReadMode::Immutable => "?mode=ro&immutable=1",
    });
    Connection::open_with_flags(
        &uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
}

/// Refuses a database path that exists but is not a regular file (a
/// directory, `/dev/null`, a socket): nothing is created beside it.
pub fn check_database_path(path: &Path) -> Result<()> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    if meta.is_file() {
        return Ok(());
    }
    let kind = if meta.is_dir() {
        "a directory"
    } else {
        file_kind(&meta)
    };
    Err(Error::config(
        "metrics.database_path",
        format!(
            "{} is {kind}, not a database file; give the path of a file, e.g. {}",
            path.display(),
            if meta.is_dir() {
                path.join("metrics.db")
            } else {
                PathBuf::from("/var/lib/pulse-metrics/metrics.db")
            }
            .display()
        ),
    ))
}

#[cfg(unix)]
fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a named pipe"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

#[cfg(not(unix))]
fn file_kind(_: &std::fs::Metadata) -> &'static str {
    "not a regular file"
}

impl Location {
    pub fn memory() -> Location {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Location::Memory(format!(
            "file:/pulse-metrics-{}-{n}?vfs=memdb",
            std::process::id()
        ))
    }

    pub fn path(&self) -> Option<&Path> {
        match self {
            Location::File(p) | Location::ReadOnly(p, _) => Some(p),
            Location::Memory(_) => None,
        }
    }
}

/// Opens the connection that performs every write, creating and migrating
/// the file if needed. Refuses (and does not touch) a file that is not an
/// SQLite database, is corrupt, belongs to another program or was written by
/// a newer version.
pub fn open_writer(loc: &Location) -> Result<Connection> {
    let conn = match loc {
        Location::ReadOnly(..) => {
            return Err(Error::invalid_input("a read-only store has no writer"));
        }
        Location::File(path) => {
            inspect_existing(path)?;
            create_file(path)?;
            let conn = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .ctx("open database")?;
            // Both must precede the first table; harmless on an existing file.
            conn.pragma_update(None, "page_size", PAGE_SIZE)
                .ctx("set page_size")?;
            conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
                .ctx("set auto_vacuum")?;
            conn.pragma_update(None, "journal_mode", "WAL")
                .ctx("set WAL mode")?;
            // WAL + NORMAL: a commit survives a killed process; fsync happens
            // at checkpoints, not per flush.
            conn.pragma_update(None, "synchronous", "NORMAL")
                .ctx("set synchronous")?;
            // Checkpoints are run by the writer outside of commits (see writer.rs).
            conn.pragma_update(None, "wal_autocheckpoint", 0)
                .ctx("set wal_autocheckpoint")?;
            conn.pragma_update(None, "journal_size_limit", 4 * 1024 * 1024)
                .ctx("set journal_size_limit")?;
            conn
        }
        Location::Memory(uri) => {
            let conn =
                Connection::open_with_flags(uri, memory_flags()).ctx("open memory database")?;
            conn.pragma_update(None, "page_size", PAGE_SIZE)
                .ctx("set page_size")?;
            conn
        }
    };
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .ctx("set busy timeout")?;
    conn.pragma_update(None, "cache_size", -4000)
        .ctx("set cache_size")?;
    conn.pragma_update(None, "temp_store", "MEMORY")
        .ctx("set temp_store")?;
    migrate(&conn, loc)?;
    Ok(conn)
}

/// Opens a read-only connection for queries. With WAL, readers see the last
/// committed state and never wait for the writer.
pub fn open_reader(loc: &Location) -> Result<Connection> {
    let conn = match loc {
        Location::File(path) => Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .ctx("open database for reading")?,
        Location::ReadOnly(path, mode) => open_ro(path, *mode).ctx("open database for reading")?,
        Location::Memory(uri) => {
            Connection::open_with_flags(uri, memory_flags()).ctx("open memory database")?
        }
    };
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .ctx("set busy timeout")?;
    conn.pragma_update(None, "query_only", true)
        .ctx("set query_only")?;
    conn.pragma_update(None, "cache_size", -2000)
        .ctx("set cache_size")?;
    if matches!(loc, Location::File(_) | Location::ReadOnly(..)) {
        // Chunks are read straight from the page cache without a copy, for
        // the first 16 MB of the file (the typical install's whole file at
        // full retention is ~10 MB). Mapped pages a query touched count in
        // the process's resident memory, for each reader: with 64 MB, the
        // queries after 3 hours of a 40,000-series fleet added ~70 MB of
        // the file's pages to the service's RSS.
        conn.pragma_update(None, "mmap_size", 16 * 1024 * 1024)
            .ctx("set mmap_size")?;
    }
    Ok(conn)
}

/// Opens an existing database without writing anything: no file, WAL or
/// shared-memory index is created (see `ReadMode`). A missing or empty
/// file, or one without our tables, is `Error::missing`.
pub fn open_read_only(path: &Path) -> Result<(Connection, ReadMode)> {
    check_database_path(path)?;
    match std::fs::metadata(path) {
        Ok(m) if m.len() > 0 => {}
        Ok(_) => return Err(Error::missing(path.to_path_buf())),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Err(Error::missing(path.to_path_buf()));
        }
        Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
    }
    let mode = ReadMode::of(path);
    identify(path, mode, true)?;
    let conn =
        open_ro(path, mode).map_err(|e| Error::sqlite(format!("open {}", path.display()), e))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .ctx("set busy timeout")?;
    conn.pragma_update(None, "query_only", true)
        .ctx("set query_only")?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .ctx("read user_version")?;
    if version == 0 {
        // An SQLite file without our tables: nothing was ever stored.
        return Err(Error::missing(path.to_path_buf()));
    }
    Ok((conn, mode))
}

fn memory_flags() -> OpenFlags {
    OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
}

/// Creates the directory and an empty file with mode 0600 (metrics reveal
/// what runs on the host); SQLite gives its -wal and -shm files the same mode.
fn create_file(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create directory {}", dir.display()), e))?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
        .map_err(|e| Error::io(format!("create database file {}", path.display()), e))?;
    Ok(())
}

/// Looks at an existing file before a writer opens it.
fn inspect_existing(path: &Path) -> Result<()> {
    identify(path, ReadMode::Shared, true)
}

/// Refuses what is not one of our databases (not SQLite, another
/// program's, a newer version) and, with `quick_check`, one SQLite itself
/// finds corrupt; reads in `mode`, writing nothing.
pub fn identify(path: &Path, mode: ReadMode, quick_check: bool) -> Result<()> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("open {}", path.display()), e)),
    };
    let mut header = [0u8; 16];
    let mut read = 0;
    while read < header.len() {
        match file.read(&mut header[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        }
    }
    if read == 0 {
        return Ok(()); // an empty file is a new database
    }
    if read < 16 || &header != b"SQLite format 3\0" {
        return Err(Error::not_sqlite(path.to_path_buf()));
    }
    // Only SQLite's own verdict makes a file corrupt: any other failure
    // (a full disk, permissions) is reported as what it is.
    let corrupt = |e: rusqlite::Error| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => {
            Error::corrupt(path.to_path_buf(), e.to_string())
        }
        _ => Error::sqlite(format!("cannot read {}", path.display()), e),
    };
    let conn = open_ro(path, mode).map_err(corrupt)?;
    let app_id: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(corrupt)?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(corrupt)?;
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .map_err(corrupt)?;
    let tables: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .map_err(corrupt)?;
    drop(stmt);
    if app_id != APPLICATION_ID && !tables.is_empty() {
        return Err(Error::foreign(path.to_path_buf(), tables));
    }
    if version > SCHEMA_VERSION {
        return Err(Error::newer_version(
            path.to_path_buf(),
            version,
            SCHEMA_VERSION,
        ));
    }
    if !quick_check {
        return Ok(());
    }
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(corrupt)?;
    if check != "ok" {
        return Err(Error::corrupt(path.to_path_buf(), check));
    }
    Ok(())
}

fn migrate(conn: &Connection, loc: &Location) -> Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")
        .ctx("begin migration")?;
    let result = (|| {
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .ctx("read user_version")?;
        if version > SCHEMA_VERSION {
            let path = loc.path().map(Path::to_path_buf).unwrap_or_default();
            return Err(Error::newer_version(path, version, SCHEMA_VERSION));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            if i == JOURNAL_MIGRATION
                && let Some(path) = loc.path()
            {
                crate::legacy::convert(conn, &crate::journal::dir_of(path))?;
            }
            conn.execute_batch(sql)
                .ctx(&format!("apply migration {}", i + 1))?;
        }
        if version < SCHEMA_VERSION {
            conn.pragma_update(None, "user_version", SCHEMA_VERSION)
                .ctx("set user_version")?;
            conn.pragma_update(None, "application_id", APPLICATION_ID)
                .ctx("set application_id")?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT").ctx("commit migration"),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Reads an integer from `meta`, or `default` when absent.
pub fn meta_get(conn: &Connection, key: &str, default: i64) -> Result<i64> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
        .ctx("read meta")?
        .unwrap_or(default))
}

/// Writes an integer to `meta` (inside the caller's transaction).
pub fn meta_set(conn: &Connection, key: &str, value: i64) -> Result<()> {
    conn.prepare_cached("INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
        .and_then(|mut s| s.execute(rusqlite::params![key, value]))
        .ctx("write meta")?;
    Ok(())
}

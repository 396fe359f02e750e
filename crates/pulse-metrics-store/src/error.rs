//! The library's one error type.
//!
//! Opaque on purpose (as in walkdir): callers ask questions of it through
//! accessors (`is_invalid_input`, `is_overloaded`, `point_errors`, ...) instead
//! of matching on variants, so new failure kinds do not break them.

use std::fmt;
use std::path::PathBuf;

/// What went wrong with one point of a batch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PointError {
    /// Position of the point in the batch (or line number, for files).
    pub index: usize,
    /// Human-readable reason naming the field at fault.
    pub reason: String,
}

impl fmt::Display for PointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "point {}: {}", self.index, self.reason)
    }
}

/// An error from the store or its configuration.
#[derive(Debug)]
pub struct Error {
    inner: Box<Inner>,
}

#[derive(Debug)]
enum Inner {
    /// Bad points in a batch; nothing of the batch was stored.
    InvalidPoints(Vec<PointError>),
    /// Any other bad argument (range, tier name, option value).
    InvalidInput(String),
    /// The write queue is full; the caller should retry later.
    Overloaded { pending: usize, capacity: usize },
    /// The store was closed or its writer died.
    Closed,
    /// The file exists but is not an SQLite database.
    NotSqlite { path: PathBuf },
    /// The file is an SQLite database that fails its integrity check.
    Corrupt { path: PathBuf, detail: String },
    /// The file was written by a newer version of pulse-metrics.
    NewerVersion {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// The file is an SQLite database that belongs to another program.
    Foreign { path: PathBuf, tables: Vec<String> },
    /// Stored content that cannot be read back (a damaged journal segment
    /// or chunk), naming where.
    Damaged {
        path: Option<PathBuf>,
        detail: String,
    },
    /// Invalid configuration: the key at fault and the rule it breaks.
    Config { key: String, message: String },
    /// Another process holds the database's writer lock.
    Locked {
        path: PathBuf,
        lock: PathBuf,
        pid: Option<u32>,
    },
    /// A read-only open of a database that does not exist.
    Missing { path: PathBuf },
    /// The file system holding the database has no room left.
    DiskFull {
        dir: PathBuf,
        free: Option<u64>,
        detail: String,
    },
    /// A file operation failed; `context` says which.
    Io {
        context: String,
        source: std::io::Error,
    },
    /// An SQLite call failed; `context` says which.
    Sqlite {
        context: String,
        source: rusqlite::Error,
    },
}

impl Error {
    /// Bad points in a batch, each with its position and reason.
    pub fn invalid_points(errors: Vec<PointError>) -> Error {
        Error::new(Inner::InvalidPoints(errors))
    }
    /// Any other bad argument; `message` says what is wrong.
    pub fn invalid_input(message: impl Into<String>) -> Error {
        Error::new(Inner::InvalidInput(message.into()))
    }
    /// The write queue holds `pending` of its `capacity` points: retry later.
    pub fn overloaded(pending: usize, capacity: usize) -> Error {
        Error::new(Inner::Overloaded { pending, capacity })
    }
    /// The store was closed or its writer died.
    pub fn closed() -> Error {
        Error::new(Inner::Closed)
    }
    /// `path` exists but is not an SQLite database.
    pub(crate) fn not_sqlite(path: PathBuf) -> Error {
        Error::new(Inner::NotSqlite { path })
    }
    /// `path` is an SQLite database that fails its integrity check.
    pub(crate) fn corrupt(path: PathBuf, detail: impl Into<String>) -> Error {
        Error::new(Inner::Corrupt {
            path,
            detail: detail.into(),
        })
    }
    /// `path` has schema version `found`, newer than the `supported` one.
    pub(crate) fn newer_version(path: PathBuf, found: i64, supported: i64) -> Error {
        Error::new(Inner::NewerVersion {
            path,
            found,
            supported,
        })
    }
    /// `path` is an SQLite database of another program (its `tables`).
    pub(crate) fn foreign(path: PathBuf, tables: Vec<String>) -> Error {
        Error::new(Inner::Foreign { path, tables })
    }
    /// Stored content that cannot be read back; `detail` names where.
    pub fn damaged(detail: impl Into<String>) -> Error {
        Error::new(Inner::Damaged {
            path: None,
            detail: detail.into(),
        })
    }
    /// Process `pid` (if known) holds `lock`, the writer lock of `path`.
    pub(crate) fn locked(path: PathBuf, lock: PathBuf, pid: Option<u32>) -> Error {
        Error::new(Inner::Locked { path, lock, pid })
    }
    /// A read-only open of `path`, where no database was ever stored (no
    /// file, an empty one, or one without our tables).
    pub(crate) fn missing(path: PathBuf) -> Error {
        Error::new(Inner::Missing { path })
    }
    /// The file system of `dir` is full (`free` bytes left, if known).
    pub(crate) fn disk_full(dir: PathBuf, free: Option<u64>, detail: impl Into<String>) -> Error {
        Error::new(Inner::DiskFull {
            dir,
            free,
            detail: detail.into(),
        })
    }

    /// Names the database in a damage report that lacks it.
    pub fn at_path(mut self, db: &std::path::Path) -> Error {
        if let Inner::Damaged { path, .. } = &mut *self.inner
            && path.is_none()
        {
            *path = Some(db.to_path_buf());
        }
        self
    }

    /// SQLite's primary result code, if SQLite is what failed.
    pub(crate) fn sqlite_code(&self) -> Option<rusqlite::ErrorCode> {
        match &*self.inner {
            Inner::Sqlite { source, .. } => source.sqlite_error_code(),
            _ => None,
        }
    }

    /// The OS error number, if a file operation is what failed.
    pub(crate) fn os_error(&self) -> Option<i32> {
        match &*self.inner {
            Inner::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
    /// A configuration error naming `key` and the rule it breaks.
    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Error {
        Error::new(Inner::Config {
            key: key.into(),
            message: message.into(),
        })
    }
    /// A file operation failed; `context` says which.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::new(Inner::Io {
            context: context.into(),
            source,
        })
    }
    /// An SQLite call failed; `context` says which.
    pub fn sqlite(context: impl Into<String>, source: rusqlite::Error) -> Error {
        Error::new(Inner::Sqlite {
            context: context.into(),
            source,
        })
    }

    fn new(inner: Inner) -> Error {
        Error {
            inner: Box::new(inner),
        }
    }

    /// The caller sent something wrong (bad points, bad range, bad option):
    /// an HTTP 400 or exit code 2. Nothing was stored or changed.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            *self.inner,
            Inner::InvalidPoints(_) | Inner::InvalidInput(_)
        )
    }

    /// The bounded write queue is full: retry later (HTTP 503).
    pub fn is_overloaded(&self) -> bool {
        matches!(*self.inner, Inner::Overloaded { .. })
    }

    /// The per-point reasons when a batch was refused.
    pub fn point_errors(&self) -> Option<&[PointError]> {
        match &*self.inner {
            Inner::InvalidPoints(errors) => Some(errors),
            _ => None,
        }
    }

    /// A configuration error: the dotted key at fault.
    pub fn config_key(&self) -> Option<&str> {
        match &*self.inner {
            Inner::Config { key, .. } => Some(key),
            _ => None,
        }
    }

    /// The database file was refused at open (not SQLite, corrupt, newer
    /// version, or another program's database); it was left untouched.
    pub fn is_refused_file(&self) -> bool {
        matches!(
            *self.inner,
            Inner::NotSqlite { .. }
                | Inner::Corrupt { .. }
                | Inner::NewerVersion { .. }
                | Inner::Foreign { .. }
        )
    }

    /// Stored data is damaged (see the message for where); the file was
    /// left as it was.
    pub fn is_damaged(&self) -> bool {
        matches!(*self.inner, Inner::Damaged { .. })
    }

    /// The store was closed before the call could complete.
    pub fn is_closed(&self) -> bool {
        matches!(*self.inner, Inner::Closed)
    }

    /// Another process writes this database (exit 1, naming it).
    pub fn is_locked(&self) -> bool {
        matches!(*self.inner, Inner::Locked { .. })
    }

    /// A read-only open found no database: nothing was created.
    pub fn is_missing(&self) -> bool {
        matches!(*self.inner, Inner::Missing { .. })
    }

    /// The disk is full; the database itself is fine.
    pub fn is_disk_full(&self) -> bool {
        matches!(*self.inner, Inner::DiskFull { .. })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.inner {
            Inner::InvalidPoints(errors) => {
                write!(f, "{} invalid point(s), nothing stored", errors.len())?;
                for e in errors.iter().take(10) {
                    write!(f, "; {e}")?;
                }
                if errors.len() > 10 {
                    write!(f, "; and {} more", errors.len() - 10)?;
                }
                Ok(())
            }
            Inner::InvalidInput(m) => f.write_str(m),
            Inner::Overloaded { pending, capacity } => write!(
                f,
                "write queue full ({pending} of {capacity} points pending); retry later"
            ),
            Inner::Closed => f.write_str("the store is closed"),
            Inner::NotSqlite { path } => write!(
                f,
                "{} is not an SQLite database; refusing to open it (the file was not changed)",
                path.display()
            ),
            Inner::Corrupt { path, detail } => write!(
                f,
                "{} is a corrupt SQLite database ({detail}); refusing to open it (the file was not changed)",
                path.display()
            ),
            Inner::NewerVersion {
                path,
                found,
                supported,
            } => write!(
                f,
                "{} was written by a newer pulse-metrics (schema version {found}, this build supports up to {supported}); refusing to open it",
                path.display()
            ),
            Inner::Foreign { path, tables } => write!(
                f,
                "{} is an SQLite database of another program (tables: {}); refusing to open it. To migrate a Pulse metrics.db use `pulse-metrics import-pulse`",
                path.display(),
                tables.join(", ")
            ),
            Inner::Damaged { path, detail } => {
                match path {
                    Some(p) => write!(f, "{} has damaged content: {detail}", p.display())?,
                    None => write!(f, "damaged data: {detail}")?,
                }
                f.write_str(
                    ". Run `pulse-metrics check` to list every damaged part, then `pulse-metrics salvage NEW.db` to copy everything readable into a new file",
                )
            }
            Inner::Config { key, message } => write!(f, "config `{key}`: {message}"),
            Inner::Locked { path, lock, pid } => {
                write!(
                    f,
                    "{} is in use by another pulse-metrics process",
                    path.display()
                )?;
                if let Some(pid) = pid {
                    write!(f, " (PID {pid})")?;
                }
                write!(
                    f,
                    ", which holds its lock file {}: one process writes a database at a time. Stop it first, or read beside it with `query`, `stats` or `export`",
                    lock.display()
                )
            }
            Inner::Missing { path } => write!(
                f,
                "no database at {} (nothing was created); check the path, or --db",
                path.display()
            ),
            Inner::DiskFull { dir, free, detail } => {
                write!(f, "disk full: the file system holding {}", dir.display())?;
                match free {
                    Some(free) => write!(f, " has {free} bytes free")?,
                    None => f.write_str(" has no room")?,
                }
                write!(
                    f,
                    " ({detail}). This is not damage to the database, which was left as it was: free some space there and start again"
                )
            }
            Inner::Io { context, source } => write!(f, "{context}: {source}"),
            Inner::Sqlite { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &*self.inner {
            Inner::Io { source, .. } => Some(source),
            Inner::Sqlite { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach context to rusqlite results.
pub(crate) trait SqlContext<T> {
    fn ctx(self, context: &str) -> Result<T>;
}

impl<T, E: Into<rusqlite::Error>> SqlContext<T> for std::result::Result<T, E> {
    fn ctx(self, context: &str) -> Result<T> {
        self.map_err(|e| Error::sqlite(context, e.into()))
    }
}

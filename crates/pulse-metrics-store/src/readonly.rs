//! Reading a database without writing to it: what `query`, `stats` and
//! `export` do, beside a running service or on a copy of its file.
//!
//! No lock is taken and no file is created or changed: the file is opened
//! read-only (see `schema::ReadMode` for how no `-wal`/`-shm` file appears),
//! the raw log is replayed into memory as at any open, and there is no
//! writer thread, so every write is refused as if the store were closed.

use crate::config::MetricsConfig;
use crate::error::{Error, Result, SqlContext};
use crate::schema::{self, Location, ReadMode};
use crate::writer::{Counters, Queue};
use crate::{Inner, Store, load, space};
use parking_lot::{Mutex, RwLock};
use std::sync::Arc;

impl Store {
    /// Opens an existing database for reading only. A missing (or empty)
    /// file is `Error::missing`, and nothing is created in its place.
    pub fn open_read_only(config: MetricsConfig) -> Result<Store> {
        config.validate()?;
        let path = config.database_path.clone();
        schema::check_database_path(&path)?;
        match std::fs::metadata(&path) {
            Ok(m) if m.len() > 0 => {}
            Ok(_) => return Err(Error::missing(path)),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                return Err(Error::missing(path));
            }
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        }
        let mode = ReadMode::of(&path);
        schema::inspect_existing(&path, mode).map_err(|e| space::explain(&path, e))?;
        let location = Location::ReadOnly(path.clone(), mode);
        let conn = schema::open_reader(&location).map_err(|e| space::explain(&path, e))?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .ctx("read user_version")?;
        if version == 0 {
            // An SQLite file without our tables: nothing was ever stored.
            return Err(Error::missing(path));
        }
        let counters = Arc::new(Counters::default());
        let loaded = load::load(&conn, &counters, &path).map_err(|e| e.at_path(&path))?;
        let queue = Arc::new(Queue::new(&config));
        queue.shutdown();
        Ok(Store {
            inner: Arc::new(Inner {
                location,
                config: Arc::new(RwLock::new(config)),
                shared: Arc::new(RwLock::new(loaded.state)),
                queue,
                counters,
                readers: Mutex::new(vec![conn]),
                writer: Mutex::new(None),
                lock: Mutex::new(None),
            }),
        })
    }

    /// Whether this store was opened with [`Store::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        matches!(self.inner.location, Location::ReadOnly(..))
    }
}

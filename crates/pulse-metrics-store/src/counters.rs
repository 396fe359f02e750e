//! The counters `stats()` and `/metrics` show, and the part of them that
//! survives a restart.
//!
//! Lifetime figures are saved in `meta` with each rollup that writes (one
//! that seals an hour), each prune, each vacuum and at close, never per
//! flush (a page per flush would double the bytes written): after a crash
//! they are at most about a retention interval (an hour) behind.

use crate::error::{Result, SqlContext};
use crate::schema::{meta_get, meta_set};
use parking_lot::Mutex;
use rusqlite::Connection;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// `meta` keys of the saved counters.
mod key {
    pub const TOTAL_WRITES: &str = "total_writes";
    pub const DROPPED_WRITES: &str = "dropped_writes";
    pub const LAST_FLUSH: &str = "last_flush";
    pub const LAST_ROLLUP: &str = "last_rollup";
    pub const LAST_RETENTION: &str = "last_retention";
    pub const LAST_VACUUM: &str = "last_vacuum";
}

#[derive(Default)]
pub struct Counters {
    /// Points accepted, over the life of the file.
    pub total_writes: AtomicU64,
    /// Points refused because the queue was full, over the life of the file.
    pub dropped_writes: AtomicU64,
    pub flushes: AtomicU64,
    pub flush_failures: AtomicU64,
    pub job_failures: AtomicU64,
    /// Unix ms of the last successful flush / rollup / prune / vacuum (0 = never).
    pub last_flush: AtomicI64,
    pub last_rollup: AtomicI64,
    pub last_retention: AtomicI64,
    pub last_vacuum: AtomicI64,
    /// Time-stamped message of the last failure, empty if none.
    pub last_error: Mutex<String>,
    pub journal_segments: AtomicU64,
    pub journal_bytes: AtomicU64,
    pub journal_staged_bytes: AtomicU64,
}

impl Counters {
    /// The counters saved by the last `persist`.
    pub fn restore(conn: &Connection) -> Result<Counters> {
        let c = Counters::default();
        let get = |k| meta_get(conn, k, 0);
        c.total_writes
            .store(get(key::TOTAL_WRITES)?.max(0) as u64, Relaxed);
        c.dropped_writes
            .store(get(key::DROPPED_WRITES)?.max(0) as u64, Relaxed);
        c.last_flush.store(get(key::LAST_FLUSH)?, Relaxed);
        c.last_rollup.store(get(key::LAST_ROLLUP)?, Relaxed);
        c.last_retention.store(get(key::LAST_RETENTION)?, Relaxed);
        c.last_vacuum.store(get(key::LAST_VACUUM)?, Relaxed);
        Ok(c)
    }

    /// Saves the lifetime counters and job times (inside the caller's
    /// transaction).
    pub fn persist(&self, conn: &Connection) -> Result<()> {
        for (k, v) in [
            (key::TOTAL_WRITES, self.total_writes.load(Relaxed) as i64),
            (
                key::DROPPED_WRITES,
                self.dropped_writes.load(Relaxed) as i64,
            ),
            (key::LAST_FLUSH, self.last_flush.load(Relaxed)),
            (key::LAST_ROLLUP, self.last_rollup.load(Relaxed)),
            (key::LAST_RETENTION, self.last_retention.load(Relaxed)),
            (key::LAST_VACUUM, self.last_vacuum.load(Relaxed)),
        ] {
            meta_set(conn, k, v)?;
        }
        Ok(())
    }

    /// Saves in a transaction of its own (at close).
    pub fn persist_now(&self, conn: &Connection) -> Result<()> {
        conn.execute_batch("BEGIN IMMEDIATE").ctx("begin")?;
        match self.persist(conn) {
            Ok(()) => conn.execute_batch("COMMIT").ctx("commit"),
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    pub fn record_error(&self, message: &str) {
        tracing::error!("{message}");
        *self.last_error.lock() = format!(
            "{}: {message}",
            crate::model::format_timestamp(crate::model::now_ms())
        );
    }

    /// The last error's message, without its time stamp.
    pub fn last_error_message(&self) -> String {
        let e = self.last_error.lock();
        e.split_once(": ")
            .map_or(e.as_str(), |(_, m)| m)
            .to_string()
    }
}

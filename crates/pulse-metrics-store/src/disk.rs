//! The write connection and the shared in-memory state, with the one rule
//! for changing the rolled-up tiers on disk ([`Disk::commit_staged`]).
//!
//! # Locking
//! `shared` is a read-write lock over [`State`]: the series directory, the
//! raw tier and the unsealed minute buckets. Readers hold the read lock for
//! a whole query (plus one SQL read transaction per reader connection). The
//! writer takes the write lock briefly to publish a flushed batch into
//! memory, and to commit a change of the tiers on disk together with the
//! matching change of memory. A flush never takes it for I/O: its journal
//! append happens before.

use crate::error::{Result, SqlContext};
use crate::state::State;
use parking_lot::RwLock;
use rusqlite::Connection;
use std::sync::Arc;

/// WAL frames after which a flush checkpoints (about 1 MiB) when it wrote
/// to SQLite at all (new series): keeps the WAL small.
pub const CHECKPOINT_FRAMES: usize = 256;

pub struct Disk {
    pub conn: Connection,
    pub shared: Arc<RwLock<State>>,
    /// In-memory database (`metrics.enabled: false`): nothing to checkpoint.
    pub memory: bool,
    /// Estimated WAL frames since the last checkpoint.
    pub frames: usize,
}

impl Disk {
    /// Changes the tiers on disk: `stage` writes in one IMMEDIATE
    /// transaction, which commits while the state's write lock is held and
    /// `publish` updates the in-memory state under that same lock. Readers
    /// hold the read lock for a whole query, so they see the new rows and the
    /// new state together, never one without the other (which is also why a
    /// query may split itself over several readers). Any failure rolls the
    /// transaction back and leaves the state as it was.
    pub fn commit_staged<T, R>(
        &self,
        what: &str,
        stage: impl FnOnce(&Connection) -> Result<T>,
        publish: impl FnOnce(&mut State, T) -> R,
    ) -> Result<R> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .ctx(&format!("begin {what}"))?;
        let staged = match stage(&self.conn) {
            Ok(v) => v,
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        };
        let mut st = self.shared.write();
        if let Err(e) = self
            .conn
            .execute_batch("COMMIT")
            .ctx(&format!("commit {what}"))
        {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(e);
        }
        Ok(publish(&mut st, staged))
    }

    /// Opens the transaction a change is written in step by step (see
    /// `finish`).
    pub fn begin(&self, what: &str) -> Result<()> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .ctx(&format!("begin {what}"))
    }

    /// Ends the transaction `begin` opened: commits it (`commit`) or rolls
    /// it back (nothing was written), under the state's write lock, with
    /// `publish` updating memory under that same lock, as `commit_staged`
    /// does.
    pub fn finish<R>(
        &self,
        what: &str,
        commit: bool,
        publish: impl FnOnce(&mut State) -> R,
    ) -> Result<R> {
        let mut st = self.shared.write();
        let ended = if commit {
            self.conn
                .execute_batch("COMMIT")
                .ctx(&format!("commit {what}"))
        } else {
            self.conn
                .execute_batch("ROLLBACK")
                .ctx(&format!("end {what}"))
        };
        if let Err(e) = ended {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(e);
        }
        Ok(publish(&mut st))
    }

    /// Rolls back the transaction `begin` opened, after a failure.
    pub fn abort(&self) {
        let _ = self.conn.execute_batch("ROLLBACK");
    }

    /// Runs a WAL checkpoint (`PASSIVE` or `TRUNCATE`). A checkpoint also
    /// makes every commit so far survive a power cut. Failures are logged,
    /// not fatal: the WAL is simply checkpointed later; the result says
    /// whether it happened.
    pub fn checkpoint(&mut self, mode: &str) -> bool {
        if self.memory {
            return true;
        }
        match self
            .conn
            .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                r.get::<_, i64>(0)
            }) {
            Ok(0) => {
                self.frames = 0;
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!("wal checkpoint ({mode}) failed: {e}");
                false
            }
        }
    }
}

//! The durable tiered metrics store behind pulse-metrics: one SQLite file,
//! raw points rolled up into minute, hourly and daily buckets, with almost
//! no disk wear. It knows nothing of HTTP or the command line.
//!
//! ```
//! use pulse_metrics_store::{MetricsConfig, SeriesKey, Store, TimeRange};
//! # let dir = tempfile::tempdir().unwrap();
//! let store = Store::open(MetricsConfig {
//!     database_path: dir.path().join("metrics.db"),
//!     ..MetricsConfig::default()
//! })?;
//! let now = 1_700_000_040_000; // Unix ms, on a minute boundary
//! for i in 0..12 {
//!     store.write("vm", "pve1:101", "cpu", 10.0 + i as f64, now - 60_000 + i * 5_000)?;
//! }
//! store.flush()?; // durable from here on, even if the process is killed
//! store.rollup(now)?; // closed minutes become minute buckets
//! let cpu = SeriesKey::new("vm", "pve1:101", "cpu");
//! let day = store.query(&cpu, TimeRange::last(std::time::Duration::from_secs(86_400), now), None)?;
//! assert_eq!(day.tier, pulse_metrics_store::Tier::Minute);
//! assert_eq!(day.points[0].count, 12);
//! assert_eq!(day.points[0].value, 15.5);
//! # Ok::<(), pulse_metrics_store::Error>(())
//! ```
//!
//! # Modules
//!
//! | module      | owns                                                         |
//! |-------------|--------------------------------------------------------------|
//! | `config`    | [`MetricsConfig`]: the store's options and their rules       |
//! | `error`     | [`Error`], one opaque error type with accessors              |
//! | `model`     | series, points, tiers and their validation rules             |
//! | `schema`    | opening the file, refusing foreign files, pragmas, migrations |
//! | `bits`      | varints, zigzag, bit streams, float bit-pattern deltas       |
//! | `codec`     | the byte layout of tier chunks                               |
//! | `journal`   | the raw tier on disk: append-only segment files              |
//! | `staging`   | the journal's partial last unit, kept in shared memory       |
//! | `raw`       | the raw tier in memory: compressed 20-minute chunks          |
//! | `legacy`    | reading the SQLite raw log of schema versions 1 and 2        |
//! | `state`     | what lives in memory: series, raw points, open hours          |
//! | `disk`      | the write connection, the state lock, committing tier changes |
//! | `queue`     | the bounded queue between callers and the writer             |
//! | `writer`    | the thread owning the write connection and the journal       |
//! | `counters`  | write counters and job times, saved in `meta`                |
//! | `load`      | replaying the journal at open                                |
//! | `rollup`    | raw -> minute -> hourly -> daily                             |
//! | `retention` | pruning and giving space back                                |
//! | `tiers`     | reading/writing tier chunks                                  |
//! | `query`     | tier selection, stitching, `max_points`                      |
//! | `import`    | storing buckets migrated from another store                  |
//! | `resources` | resource metadata (names, nodes, tags), written on change    |
//! | `merge`     | merging one series into another (an id that changed)         |
//! | `guest_ids` | the one-time merge of `{instance}:{node}:{vmid}` guest ids   |
//! | `tail`      | reading the raw journal from a position (remote write)        |
//! | `cursors`   | remote-write targets' positions, kept as journal notes        |
//! | `lock`      | one writer per database: the OS lock beside the file         |
//! | `check`     | verifying a database: SQLite's check and ours, part by part  |
//! | `salvage`   | copying everything readable into a new file                  |
//! | `space`     | telling a full disk from a damaged file                      |
//!
//! See `docs/storage.md` in the repository for the layout and the figures
//! behind it.

#![warn(missing_docs)]

pub mod check;
pub mod config;
pub mod error;
pub mod model;
pub mod salvage;

mod bits;
mod codec;
mod counters;
mod cursors;
mod disk;
mod guest_ids;
mod import;
mod journal;
mod legacy;
mod load;
mod lock;
mod merge;
mod query;
mod queue;
mod raw;
mod resources;
mod retention;
mod rollup;
mod schema;
mod space;
mod staging;
mod state;
mod tail;
mod tiers;
mod writer;

pub use crate::config::{Backend, MetricsConfig, Retention};
use crate::error::SqlContext;
pub use crate::error::{Error, PointError, Result};
pub use crate::model::{HistoryPoint, Point, SeriesKey, Tier};
pub use crate::resources::{Resource, ResourceMap, ResourceMeta, point_from_json};
use counters::Counters;
use parking_lot::{Mutex, RwLock};
use queue::{Pending, Queue, SeriesRef};
use rusqlite::Connection;
use schema::Location;
use serde::Serialize;
use state::{ChunkTier, State};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

pub use cursors::Cursors;
pub use query::{Bucket, cap_buckets, select_tier};
pub use queue::QUEUE_CAPACITY;
pub use tail::{Gap, JournalTail, TailBatch, TailPoint, TailRead, Unread};

/// A time range for a query, with the `now` that tier selection uses
/// (a tier "covers" `start` if `start >= now - retention`). All Unix ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    /// First instant asked for (inclusive).
    pub start: i64,
    /// Last instant asked for (inclusive).
    pub end: i64,
    /// The time retention is measured back from when choosing the tier.
    pub now: i64,
}

impl TimeRange {
    /// The last `duration` before `now`.
    pub fn last(duration: Duration, now: i64) -> TimeRange {
        let d = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX / 2);
        TimeRange {
            start: now.saturating_sub(d),
            end: now,
            now,
        }
    }

    /// An explicit range; refused when `start` is after `end`.
    pub fn between(start: i64, end: i64, now: i64) -> Result<TimeRange> {
        if start > end {
            return Err(Error::invalid_input(format!(
                "start ({}) is after end ({})",
                crate::model::format_timestamp(start),
                crate::model::format_timestamp(end)
            )));
        }
        Ok(TimeRange { start, end, now })
    }
}

/// Which series a `query_many` covers; `None` matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeriesFilter {
    /// Only series of this resource type.
    pub resource_type: Option<String>,
    /// Only series of this resource id.
    pub resource_id: Option<String>,
    /// Only series of this metric.
    pub metric: Option<String>,
    /// Only the series of these resources: resource type -> ids (a page of
    /// a dashboard, whatever their metrics).
    pub resources: Option<HashMap<String, HashSet<String>>>,
}

/// What every query's range and cap must meet, wherever it is answered
/// from (this store, or a remote engine answering in its place).
pub fn check_query(range: TimeRange, max_points: Option<usize>) -> Result<()> {
    if range.start > range.end {
        return Err(Error::invalid_input("start is after end"));
    }
    if max_points == Some(0) {
        return Err(Error::invalid_input("maxPoints must be at least 1"));
    }
    Ok(())
}

impl SeriesFilter {
    /// Whether `key` passes every condition that is set.
    pub fn matches(&self, key: &SeriesKey) -> bool {
        self.resource_type
            .as_ref()
            .is_none_or(|t| *t == key.resource_type)
            && self
                .resource_id
                .as_ref()
                .is_none_or(|i| *i == key.resource_id)
            && self.metric.as_ref().is_none_or(|m| *m == key.metric)
            && self.resources.as_ref().is_none_or(|r| {
                r.get(&key.resource_type)
                    .is_some_and(|ids| ids.contains(&key.resource_id))
            })
    }
}

/// Answer of `query`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct History {
    /// The tier the points come from.
    pub tier: Tier,
    /// The points in time order (empty for an unknown series).
    pub points: Vec<HistoryPoint>,
}

/// Answer of `query_many`: every matching series, in key order (with
/// `query_many_map`, what the caller made of each series' points).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ManyHistory<T = Vec<HistoryPoint>> {
    /// The one tier every series is answered from.
    pub tier: Tier,
    /// Each matching series with its points (or what the caller made of them).
    pub series: Vec<(SeriesKey, T)>,
}

/// One line of `series()`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeriesInfo {
    /// The series.
    #[serde(flatten)]
    pub key: SeriesKey,
    /// Unix ms of the oldest stored point or bucket, if any.
    pub first_timestamp: Option<i64>,
    /// Unix ms of the newest stored point or bucket, if any.
    pub last_timestamp: Option<i64>,
    /// The newest raw value, else the mean of the newest bucket.
    pub last_value: Option<f64>,
}

/// What one rollup pass ([`Store::rollup`]) did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RollupReport {
    /// The `now` the pass ran as of (Unix ms).
    pub now: i64,
    /// Minute buckets (re)computed from raw points.
    pub minute_buckets: usize,
    /// (Hour, series) chunks sealed to disk.
    pub hours_sealed: usize,
    /// Hourly buckets written (set or merged into).
    pub hourly_buckets: usize,
    /// Daily buckets written (set or merged into).
    pub daily_buckets: usize,
    /// Points folded in after their raw minute was pruned.
    pub late_points: usize,
    /// Late points older than every tier's retention, which nothing keeps.
    pub discarded_points: usize,
    /// Oldest raw point kept (Unix ms): raw points past retention are
    /// dropped once rolled up.
    pub raw_floor: i64,
    /// Minute, hourly and daily buckets deleted as past retention: the pass
    /// that seals an hour prunes first, in its own transaction (the
    /// retention pass then finds them gone).
    pub expired_buckets: [u64; 3],
    /// The floors after the pass (raw, minute, hourly, daily; Unix ms), as
    /// [`PruneReport::floors`].
    pub floors: [i64; 4],
    /// Wall-clock time the pass took, in milliseconds.
    pub duration_ms: f64,
}

/// What one retention pass ([`Store::prune`]) removed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneReport {
    /// The `now` the pass ran as of (Unix ms, whole seconds).
    pub now: i64,
    /// Raw points dropped from memory: older than the raw floor.
    pub raw_points: u64,
    /// Minute buckets deleted: older than the minute floor.
    pub minute_buckets: u64,
    /// Hourly buckets deleted: older than the hourly floor.
    pub hourly_buckets: u64,
    /// Daily buckets deleted: older than the daily floor.
    pub daily_buckets: u64,
    /// Raw journal segments deleted: every point in them rolled up and
    /// past raw retention.
    pub journal_segments_deleted: u64,
    /// Free space returned to the file system (beyond a small reuse reserve).
    pub bytes_freed: u64,
    /// Oldest timestamp each tier keeps (raw, minute, hourly, daily), Unix ms.
    pub floors: [i64; 4],
    /// Wall-clock time the pass took, in milliseconds.
    pub duration_ms: f64,
}

/// What giving free pages back to the file system did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReclaimReport {
    /// Bytes of free pages returned to the file system.
    pub bytes_freed: u64,
    /// Free pages left in the file for reuse.
    pub free_pages: u64,
    /// Wall-clock time it took, in milliseconds.
    pub duration_ms: f64,
}

/// What [`Store::maintain`] did, step by step.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MaintainReport {
    /// The rollup pass.
    pub rollup: RollupReport,
    /// The retention pass.
    pub prune: PruneReport,
    /// Free space beyond a small reserve given back.
    pub reclaim: ReclaimReport,
}

/// What [`Store::vacuum`] did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VacuumReport {
    /// Every free page given back.
    pub reclaim: ReclaimReport,
}

/// Storage health, as `/api/metrics-store/stats` shows it. Times are Unix
/// ms, 0 meaning "never"; `lastError` is empty when there was none.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Whether the store is a file (false: in memory, `enabled: false`).
    pub enabled: bool,
    /// The database file, or `:memory:`.
    pub db_path: String,
    /// Bytes of the database file (0 in memory).
    pub db_size: u64,
    /// Bytes of its `-wal` file (0 in memory).
    pub wal_size: u64,
    /// SQLite pages free for reuse inside the file.
    pub free_pages: u64,
    /// Series stored, not counting those merged into another.
    pub series_count: u64,
    /// Raw points held in memory.
    pub raw_count: u64,
    /// Points written older than the raw retention, held until the next
    /// rollup folds them into their buckets (not in `raw_count`).
    pub late_count: u64,
    /// Minute buckets, on disk and in the open hours in memory.
    pub minute_count: u64,
    /// Hourly buckets on disk.
    pub hourly_count: u64,
    /// Daily buckets on disk.
    pub daily_count: u64,
    /// Where the stored data begins (0 when there is none).
    pub oldest_data_timestamp: i64,
    /// Points accepted, over the life of the file.
    pub total_writes: u64,
    /// Points refused because the queue was full, over the life of the file.
    pub dropped_writes: u64,
    /// Accepted points not yet durable, the flush under way included.
    pub buffer_size: u64,
    /// Time of the last successful flush.
    pub last_flush: i64,
    /// Time of the last successful rollup.
    pub last_rollup: i64,
    /// Time of the last successful prune.
    pub last_retention: i64,
    /// Time free pages were last given back (maintenance or vacuum).
    pub last_vacuum: i64,
    /// The last failure, prefixed with its time.
    pub last_error: String,
    /// Successful flushes since the store was opened.
    pub flush_count: u64,
    /// Failed flushes since the store was opened.
    pub flush_failures: u64,
    /// Failed rollups, prunes and vacuums since the store was opened.
    pub job_failures: u64,
    /// Files of the raw journal.
    pub journal_segments: u64,
    /// Bytes of the raw journal's files (not in `db_size`).
    pub journal_bytes: u64,
    /// Bytes the journal wrote to its staging file in shared memory (its
    /// partial last unit; not the disk) since the store was opened: what
    /// to take off `wchar` for the bytes written to files on the disk.
    pub journal_staged_bytes: u64,
    /// Memory the raw tier takes (compressed points and chunk headers).
    pub raw_memory_bytes: u64,
    /// The most points the write queue holds ([`QUEUE_CAPACITY`]).
    pub queue_capacity: u64,
}

/// The metrics store. Cheap to clone; every clone is the same store.
///
/// ```
/// use pulse_metrics_store::{MetricsConfig, SeriesKey, Store, TimeRange};
/// # let dir = tempfile::tempdir().unwrap();
/// let config = MetricsConfig { database_path: dir.path().join("metrics.db"), ..Default::default() };
/// let store = Store::open(config)?;
/// let now = 1_700_000_000_000;
/// store.write("node", "pve1:node1", "cpu", 12.5, now - 5_000)?;
/// store.write("node", "pve1:node1", "cpu", 14.5, now)?;
/// store.flush()?;
/// let cpu = SeriesKey::new("node", "pve1:node1", "cpu");
/// let history = store.query(&cpu, TimeRange::last(std::time::Duration::from_secs(3600), now), None)?;
/// assert_eq!(history.points.len(), 2);
/// assert_eq!(history.points[1].value, 14.5);
/// store.close()?;
/// # Ok::<(), pulse_metrics_store::Error>(())
/// ```
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    location: Location,
    /// Opened with `open_read_only`: answers queries, refuses writes.
    read_only: bool,
    config: Arc<RwLock<MetricsConfig>>,
    shared: Arc<RwLock<State>>,
    queue: Arc<Queue>,
    counters: Arc<Counters>,
    /// Resource metadata; only the writer thread changes it.
    resources: Arc<RwLock<ResourceMap>>,
    /// Accepted points the writer could not flush before it stopped.
    lost: Arc<AtomicU64>,
    /// Journal positions remote-write readers still need.
    holds: Arc<tail::Holds>,
    readers: Mutex<Vec<Connection>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Held while the store may write the file (none in memory or read-only).
    lock: Mutex<Option<lock::WriterLock>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.queue.shutdown();
        if let Some(handle) = self.writer.lock().take() {
            let _ = handle.join();
        }
    }
}

/// Readers kept open for reuse.
const READER_POOL: usize = 8;
/// Series from which an uncapped query is split over several threads, each
/// with its own reader, and at most how many.
const PARALLEL_QUERY_FROM: usize = 32;
const READERS_PER_QUERY: usize = 4;

fn to_secs(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

impl Store {
    /// Opens (creating if needed) the store described by `config`.
    #[tracing::instrument(skip_all, fields(path = %config.database_path.display()))]
    pub fn open(config: MetricsConfig) -> Result<Store> {
        config.validate()?;
        let (location, lock) = if config.enabled {
            schema::check_database_path(&config.database_path)?;
            let lock = lock::acquire(&config.database_path)?;
            (Location::File(config.database_path.clone()), Some(lock))
        } else {
            (Location::memory(), None)
        };
        let path = config.database_path.clone();
        // Damage names the file; a full disk says so rather than "corrupt".
        let explain = |e: Error| space::explain(&path, e.at_path(&path));
        let conn = schema::open_writer(&location).map_err(explain)?;
        guest_ids::migrate(&conn)?;
        let counters = Arc::new(Counters::restore(&conn)?);
        let resources = Arc::new(RwLock::new(resources::load(&conn)?));
        let journal_dir = location.path().map(journal::dir_of);
        let source = match &journal_dir {
            Some(dir) => load::RawSource::Journal { dir, repair: true },
            None => load::RawSource::None,
        };
        let mut loaded = load::load(&conn, source).map_err(explain)?;
        let journal = journal_dir.as_deref().map(|d| loaded.journal(d));
        let load::Loaded {
            state,
            fold,
            next_seq,
            ..
        } = loaded;
        let shared = Arc::new(RwLock::new(state));
        let queue = Arc::new(Queue::new(config.write_buffer, config.flush_interval));
        let config = Arc::new(RwLock::new(config));
        let lost = Arc::new(AtomicU64::new(0));
        let holds = Arc::new(tail::Holds::default());
        let writer = writer::Writer::new(
            writer::WriterParts {
                disk: disk::Disk {
                    conn,
                    shared: shared.clone(),
                    memory: matches!(location, Location::Memory(_)),
                    frames: 0,
                },
                journal,
                fold,
                next_seq,
                queue: queue.clone(),
                counters: counters.clone(),
                config: config.clone(),
                holds: holds.clone(),
            },
            lost.clone(),
        );
        let gone = queue::GoneOnDrop(queue.clone(), lost.clone());
        let handle = std::thread::Builder::new()
            .name("pulse-metrics-writer".into())
            .spawn(move || {
                let _gone = gone;
                writer.run();
            })
            .map_err(|e| Error::io("start writer thread", e))?;
        Ok(Store {
            inner: Arc::new(Inner {
                location,
                read_only: false,
                config,
                shared,
                queue,
                counters,
                resources,
                lost,
                holds,
                readers: Mutex::new(Vec::new()),
                writer: Mutex::new(Some(handle)),
                lock: Mutex::new(lock),
            }),
        })
    }

    /// Opens an existing store for reading only: nothing is created or
    /// written and no lock is taken (the SQLite file is opened read-only,
    /// see `schema::ReadMode`; the raw journal is read into memory as it
    /// is), so it works beside a running service. Writes and jobs are
    /// refused with `Closed`. A missing file is `Error::missing`.
    #[tracing::instrument(skip_all, fields(path = %config.database_path.display()))]
    pub fn open_read_only(config: MetricsConfig) -> Result<Store> {
        config.validate()?;
        let path = config.database_path.clone();
        let explain = |e: Error| space::explain(&path, e.at_path(&path));
        let (conn, mode) = schema::open_read_only(&path).map_err(explain)?;
        let location = Location::ReadOnly(path.clone(), mode);
        let counters = Arc::new(Counters::restore(&conn)?);
        let dir = journal::dir_of(&path);
        let source = if legacy::has_raw_log(&conn)? {
            load::RawSource::Legacy
        } else {
            load::RawSource::Journal {
                dir: &dir,
                repair: false,
            }
        };
        let loaded = load::load(&conn, source).map_err(explain)?;
        let resources = Arc::new(RwLock::new(resources::load(&conn)?));
        let queue = Arc::new(Queue::new(config.write_buffer, config.flush_interval));
        queue.writer_gone();
        Ok(Store {
            inner: Arc::new(Inner {
                location,
                read_only: true,
                config: Arc::new(RwLock::new(config)),
                shared: Arc::new(RwLock::new(loaded.state)),
                queue,
                counters,
                resources,
                lost: Arc::new(AtomicU64::new(0)),
                holds: Arc::default(),
                readers: Mutex::new(vec![conn]),
                writer: Mutex::new(None),
                lock: Mutex::new(None),
            }),
        })
    }

    /// Whether this store was opened with `open_read_only`.
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    /// The configuration in effect.
    pub fn config(&self) -> MetricsConfig {
        self.inner.config.read().clone()
    }

    /// Applies a new `metrics` section without a restart: retention at the
    /// next prune, buffer and flush interval at once. Returns the keys that
    /// only take effect at the next start (`enabled`, `database_path`).
    pub fn reconfigure(&self, config: MetricsConfig) -> Result<Vec<String>> {
        config.validate()?;
        let mut restart = Vec::new();
        {
            let current = self.inner.config.read();
            if config.enabled != current.enabled {
                restart.push("metrics.enabled".to_string());
            }
            if config.database_path != current.database_path {
                restart.push("metrics.database_path".to_string());
            }
            if config.backend != current.backend {
                restart.push("metrics.backend".to_string());
            }
        }
        self.inner
            .queue
            .set_limits(config.write_buffer, config.flush_interval);
        let mut c = self.inner.config.write();
        let (enabled, path, backend) = (c.enabled, c.database_path.clone(), c.backend);
        *c = config;
        // What the running store uses cannot change under it.
        c.enabled = enabled;
        c.database_path = path;
        c.backend = backend;
        Ok(restart)
    }

    /// Writes one point (Unix ms). See `write_batch`.
    pub fn write(
        &self,
        resource_type: &str,
        resource_id: &str,
        metric: &str,
        value: f64,
        timestamp_ms: i64,
    ) -> Result<()> {
        self.write_batch(&[Point {
            resource_type: resource_type.to_string(),
            resource_id: resource_id.to_string(),
            metric: metric.to_string(),
            value,
            timestamp: timestamp_ms,
        }])
        .map(|_| ())
    }

    /// Validates the whole batch, then queues it for the writer. A bad point
    /// refuses the batch (every bad index is named) and nothing is stored; a
    /// full queue refuses it with an `Overloaded` error. Returns how many
    /// points were accepted. Points are durable after the next flush.
    pub fn write_batch(&self, points: &[Point]) -> Result<usize> {
        let errors: Vec<PointError> = points
            .iter()
            .enumerate()
            .filter_map(|(index, p)| {
                p.validate()
                    .err()
                    .map(|reason| PointError { index, reason })
            })
            .collect();
        if !errors.is_empty() {
            return Err(Error::invalid_points(errors));
        }
        if points.is_empty() {
            return Ok(0);
        }
        let pending: Vec<Pending> = {
            let st = self.inner.shared.read();
            points
                .iter()
                .map(|p| {
                    let key = p.series();
                    let series = match st.ids.get(&key) {
                        Some(id) => SeriesRef::Known(*id),
                        None => SeriesRef::New(key),
                    };
                    Pending {
                        series,
                        ts: p.timestamp,
                        value: p.value,
                    }
                })
                .collect()
        };
        match self.inner.queue.push(pending) {
            Ok(()) => {
                self.inner
                    .counters
                    .total_writes
                    .fetch_add(points.len() as u64, Ordering::Relaxed);
                Ok(points.len())
            }
            Err(e) => {
                if e.is_overloaded() {
                    self.inner
                        .counters
                        .dropped_writes
                        .fetch_add(points.len() as u64, Ordering::Relaxed);
                }
                Err(e)
            }
        }
    }

    /// Records what is known about resources (names, nodes, tags...): each
    /// update's present fields replace the stored ones, empty ones clear
    /// them. Validated whole like a batch of points (nothing is stored if
    /// one is bad). Only real changes are written, in one transaction that
    /// is durable when this returns; an update that changes nothing costs
    /// no write. Returns how many resources changed.
    pub fn write_resources(&self, updates: &[Resource]) -> Result<usize> {
        let errors: Vec<String> = updates
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.validate().err().map(|e| format!("resource {i}: {e}")))
            .collect();
        if !errors.is_empty() {
            return Err(Error::invalid_input(format!(
                "{} invalid resource(s), nothing stored; {}",
                errors.len(),
                errors.join("; ")
            )));
        }
        if resources::changes(&self.inner.resources.read(), updates).is_empty() {
            return Ok(0);
        }
        let map = self.inner.resources.clone();
        let updates = updates.to_vec();
        self.inner.queue.run(move |reply| {
            queue::Job::Run(Box::new(move |w: &mut writer::Writer| {
                let _ = reply.send(w.write_resources(&map, &updates));
            }))
        })
    }

    /// Every resource with metadata, in (type, id) order.
    pub fn resources(&self) -> Vec<Resource> {
        self.inner
            .resources
            .read()
            .iter()
            .flat_map(|(t, ids)| {
                ids.iter()
                    .map(|(id, meta)| Resource::new(t.clone(), id.clone(), meta.clone()))
            })
            .collect()
    }

    /// The metadata of one resource, if any is known.
    pub fn resource(&self, resource_type: &str, resource_id: &str) -> Option<ResourceMeta> {
        self.inner
            .resources
            .read()
            .get(resource_type)
            .and_then(|ids| ids.get(resource_id))
            .cloned()
    }

    /// Merges every series of resource `(resource_type, from_id)` into the
    /// series of the same metric of `(resource_type, into_id)`, so that a
    /// resource whose id changed keeps one history: rolled-up buckets add up,
    /// raw points move (of two in the same second, the later write stays),
    /// and later reads and writes under the old id reach the new one. The
    /// old id's metadata is dropped. Points written before the call are
    /// flushed first, so they are merged too. Durable when this returns;
    /// returns the series merged (0 when `from_id` has none).
    pub fn merge_resource(
        &self,
        resource_type: &str,
        from_id: &str,
        into_id: &str,
    ) -> Result<usize> {
        for id in [from_id, into_id] {
            SeriesKey::new(resource_type, id, "m")
                .validate()
                .map_err(Error::invalid_input)?;
        }
        if from_id == into_id {
            return Ok(0);
        }
        self.flush()?;
        let pairs: Vec<(SeriesKey, SeriesKey)> = {
            let st = self.inner.shared.read();
            st.series
                .iter()
                .enumerate()
                .filter(|(i, s)| {
                    s.key.resource_type == resource_type
                        && s.key.resource_id == from_id
                        && !merge::is_merged(&st, *i as u32)
                })
                .map(|(_, s)| {
                    let into = SeriesKey::new(resource_type, into_id, &s.key.metric);
                    (s.key.clone(), into)
                })
                .collect()
        };
        if pairs.is_empty() && self.resource(resource_type, from_id).is_none() {
            return Ok(0);
        }
        let map = self.inner.resources.clone();
        let (t, id) = (resource_type.to_string(), from_id.to_string());
        self.inner.queue.run(move |reply| {
            queue::Job::Run(Box::new(move |w: &mut writer::Writer| {
                let merged = w
                    .merge_series(&pairs)
                    .and_then(|n| w.forget_resource(&map, &t, &id).map(|()| n));
                let _ = reply.send(merged);
            }))
        })
    }

    /// `write_batch` for points arriving live as of `now_ms` (the write
    /// API): a point more than `max_future_skew` ahead of the clock, or
    /// older than the longest retention, refuses the batch like any bad
    /// point. Backfills (`ingest`, imports) use `write_batch`, which keeps
    /// any timestamp and reports what retention discards.
    pub fn write_live(&self, points: &[Point], now_ms: i64) -> Result<usize> {
        let errors: Vec<PointError> = points
            .iter()
            .enumerate()
            .filter_map(|(index, p)| {
                p.validate()
                    .and_then(|()| self.check_live(p, now_ms))
                    .err()
                    .map(|reason| PointError { index, reason })
            })
            .collect();
        if !errors.is_empty() {
            return Err(Error::invalid_points(errors));
        }
        self.write_batch(points)
    }

    /// The rules `write_live` adds for one point, as of `now_ms`, under the
    /// configuration in effect: what a caller checking a batch point by
    /// point (to name every bad one) asks.
    pub fn check_live(&self, point: &Point, now_ms: i64) -> std::result::Result<(), String> {
        let (skew, longest) = {
            let c = self.inner.config.read();
            (c.max_future_skew, c.retention.longest())
        };
        point.check_live(now_ms, skew, longest)
    }

    /// How many series are stored (cheap: no file access).
    pub fn series_count(&self) -> usize {
        self.inner.shared.read().series.len()
    }

    /// Returns once every point written before the call is durable (survives
    /// a killed process).
    pub fn flush(&self) -> Result<()> {
        self.inner.queue.flush()
    }

    /// Flushes everything, stops the writer and truncates the WAL. Other
    /// clones of this store get `Closed` errors afterwards. A final flush
    /// that keeps failing is retried for a few seconds; then the error says
    /// exactly how many accepted points are lost.
    pub fn close(self) -> Result<()> {
        if self.inner.read_only {
            return Ok(());
        }
        let flushed = self.flush();
        self.inner.queue.shutdown();
        if let Some(handle) = self.inner.writer.lock().take() {
            let _ = handle.join();
        }
        self.inner.lock.lock().take();
        let lost = self.inner.lost.load(Ordering::Relaxed);
        if lost > 0 {
            return Err(Error::io(
                "close",
                std::io::Error::other(format!(
                    "{lost} accepted points could not be flushed and are lost ({})",
                    self.inner.counters.last_error_message()
                )),
            ));
        }
        // A flush that failed at first but succeeded while draining lost
        // nothing.
        drop(flushed);
        Ok(())
    }

    fn with_reader<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let pooled = self.inner.readers.lock().pop();
        let conn = match pooled {
            Some(c) => c,
            None => schema::open_reader(&self.inner.location)?,
        };
        // One snapshot for every statement of the query.
        conn.execute_batch("BEGIN").ctx("begin read")?;
        let result = f(&conn);
        let ended = conn.execute_batch("COMMIT").ctx("end read");
        if ended.is_ok() {
            let mut pool = self.inner.readers.lock();
            if pool.len() < READER_POOL {
                pool.push(conn);
            }
        }
        let value = result?;
        ended?;
        Ok(value)
    }

    /// History of one series. An unknown series has no points.
    #[tracing::instrument(skip(self), level = "debug")]
    pub fn query(
        &self,
        series: &SeriesKey,
        range: TimeRange,
        max_points: Option<usize>,
    ) -> Result<History> {
        let many = self.query_sids(
            Some(series),
            &SeriesFilter::default(),
            range,
            max_points,
            &|_, points| points,
        )?;
        let points = many
            .series
            .into_iter()
            .next()
            .map(|(_, p)| p)
            .unwrap_or_default();
        Ok(History {
            tier: many.tier,
            points,
        })
    }

    /// History of every series matching `filter` (for charts: all series of a
    /// resource, or all series), all answered from the same tier.
    #[tracing::instrument(skip(self), level = "debug")]
    pub fn query_many(
        &self,
        filter: &SeriesFilter,
        range: TimeRange,
        max_points: Option<usize>,
    ) -> Result<ManyHistory> {
        self.query_sids(None, filter, range, max_points, &|_, points| points)
    }

    /// `query_many`, handing each series' points to `f` on the thread that
    /// read them, as soon as they are read: a caller that turns them into
    /// something smaller (JSON for a chart) does so in parallel and never
    /// holds every point of every series at once.
    pub fn query_many_map<T: Send>(
        &self,
        filter: &SeriesFilter,
        range: TimeRange,
        max_points: Option<usize>,
        f: &(dyn Fn(&SeriesKey, Vec<HistoryPoint>) -> T + Sync),
    ) -> Result<ManyHistory<T>> {
        self.query_sids(None, filter, range, max_points, f)
    }

    fn query_sids<T: Send>(
        &self,
        one: Option<&SeriesKey>,
        filter: &SeriesFilter,
        range: TimeRange,
        max_points: Option<usize>,
        f: &(dyn Fn(&SeriesKey, Vec<HistoryPoint>) -> T + Sync),
    ) -> Result<ManyHistory<T>> {
        check_query(range, max_points)?;
        let tier = select_tier(range.start, range.now, &self.inner.config.read().retention);
        let st = self.inner.shared.read();
        let mut sids: Vec<u32> = match one {
            Some(key) => st.ids.get(key).copied().into_iter().collect(),
            None => st
                .series
                .iter()
                .enumerate()
                .filter(|(i, s)| filter.matches(&s.key) && !merge::is_merged(&st, *i as u32))
                .map(|(i, _)| i as u32)
                .collect(),
        };
        sids.sort_by(|a, b| st.series[*a as usize].key.cmp(&st.series[*b as usize].key));
        let part = |sids: &[u32]| {
            self.with_reader(|conn| {
                let mut source = query::Source::new(&st, conn, sids);
                let mut out = Vec::with_capacity(sids.len());
                for &sid in sids {
                    let history = source.history(tier, sid, range.start, range.end, max_points)?;
                    let key = &st.series[sid as usize].key;
                    out.push((key.clone(), f(key, history)));
                }
                Ok(out)
            })
        };
        // A chart of every point of every series decodes hundreds of
        // thousands of buckets: split it over the cores. Every part sees the
        // same data, since tiers on disk only change under the state lock
        // held here. Capped answers are small and stay on one thread: a
        // second thread's allocator arena keeps what its part decoded (+5 MB
        // of peak RSS in the workload bench), and one thread already
        // answers 255 series over 24 h in ~20 ms.
        let threads = if sids.len() >= PARALLEL_QUERY_FROM && max_points.is_none() {
            std::thread::available_parallelism().map_or(1, |n| n.get().min(READERS_PER_QUERY))
        } else {
            1
        };
        let chunk = sids.len().div_ceil(threads).max(1);
        let series = if threads > 1 {
            std::thread::scope(|s| {
                let handles: Vec<_> = sids[chunk..]
                    .chunks(chunk)
                    .map(|c| s.spawn(move || part(c)))
                    .collect();
                let mut series = part(&sids[..chunk])?;
                for h in handles {
                    series.extend(h.join().expect("query thread")?);
                }
                Ok::<_, Error>(series)
            })?
        } else {
            part(&sids)?
        };
        Ok(ManyHistory { tier, series })
    }

    /// The series matching `filter` (merged ones not included), in key
    /// order, from memory: no disk read.
    pub fn keys(&self, filter: &SeriesFilter) -> Vec<SeriesKey> {
        let st = self.inner.shared.read();
        let mut keys: Vec<SeriesKey> = st
            .series
            .iter()
            .enumerate()
            .filter(|(i, s)| filter.matches(&s.key) && !merge::is_merged(&st, *i as u32))
            .map(|(_, s)| s.key.clone())
            .collect();
        keys.sort();
        keys
    }

    /// A number that changes whenever the series `keys()` lists change (a
    /// series is created, or merged into another): cheap, for a caller that
    /// keeps what it derives from `keys()` until they change.
    pub fn keys_version(&self) -> u64 {
        let st = self.inner.shared.read();
        // Series are never removed, and a merged series' key leads to the
        // series it was merged into: the listed keys change exactly when
        // one of these two counts grows.
        let merged = st
            .ids
            .iter()
            .filter(|(key, sid)| st.series[**sid as usize].key != **key)
            .count() as u64;
        ((st.series.len() as u64) << 32) | merged
    }

    /// Where the stored data begins (Unix ms, 0 when nothing is stored):
    /// `stats().oldest_data_timestamp` without the rest of the stats.
    pub fn oldest_data_timestamp(&self) -> Result<i64> {
        let st = self.inner.shared.read();
        let oldest = self.with_reader(|conn| tiers::oldest(conn, &st))?;
        Ok(oldest.map_or(0, |t| t * 1000))
    }

    /// Every series with its first and last timestamp and last value
    /// (timestamps in Unix ms).
    pub fn series(&self) -> Result<Vec<SeriesInfo>> {
        self.series_matching(&SeriesFilter::default())
    }

    /// `series()` of the series matching `filter` only (the chunks of the
    /// others are not decoded).
    pub fn series_matching(&self, filter: &SeriesFilter) -> Result<Vec<SeriesInfo>> {
        let st = self.inner.shared.read();
        let n = st.series.len();
        let wanted: Vec<bool> = st.series.iter().map(|s| filter.matches(&s.key)).collect();
        let want = |sid: u32| wanted.get(sid as usize).copied().unwrap_or(false);
        let mut first: Vec<Option<i64>> = vec![None; n];
        let mut last: Vec<Option<(i64, f64)>> = vec![None; n];
        let mut see = |sid: u32, ts: i64, value: f64| {
            let i = sid as usize;
            if first[i].is_none_or(|f| ts < f) {
                first[i] = Some(ts);
            }
            if last[i].is_none_or(|(l, _)| ts >= l) {
                last[i] = Some((ts, value));
            }
        };
        self.with_reader(|conn| {
            for tier in [ChunkTier::DAILY, ChunkTier::HOURLY, ChunkTier::MINUTE] {
                tiers::scan(
                    conn,
                    tier,
                    i64::MIN >> 24,
                    i64::MAX >> 24,
                    want,
                    |chunk, sid, buckets| {
                        for (i, b) in buckets.iter().enumerate() {
                            if let Some(a) = b {
                                see(
                                    sid,
                                    (tier.chunk_start(chunk) + i as i64 * tier.bucket) * 1000,
                                    a.mean(),
                                );
                            }
                        }
                    },
                )?;
            }
            Ok(())
        })?;
        for (&(sid, hour), buckets) in st.open.iter().filter(|((sid, _), _)| want(*sid)) {
            for (m, b) in buckets.iter().enumerate() {
                if let Some(a) = b {
                    see(sid, (hour + 60 * m as i64) * 1000, a.mean());
                }
            }
        }
        for (sid, s) in st.series.iter().enumerate() {
            if !wanted[sid] {
                continue;
            }
            if let (Some(f), Some(l)) = (s.raw.first(), s.raw.last()) {
                see(sid as u32, f.ms(), f.value);
                see(sid as u32, l.ms(), l.value);
            }
        }
        let mut out: Vec<SeriesInfo> = st
            .series
            .iter()
            .enumerate()
            .filter(|(i, _)| wanted[*i] && !merge::is_merged(&st, *i as u32))
            .map(|(i, s)| SeriesInfo {
                key: s.key.clone(),
                first_timestamp: first[i],
                last_timestamp: last[i].map(|(t, _)| t),
                last_value: last[i].map(|(_, v)| v),
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Calls `f` for every stored point of `tier`, series by series in key
    /// order and oldest first (what `export` prints).
    pub fn export(
        &self,
        tier: Tier,
        mut f: impl FnMut(&SeriesKey, &HistoryPoint) -> Result<()>,
    ) -> Result<()> {
        let st = self.inner.shared.read();
        let mut order: Vec<u32> = (0..st.series.len() as u32).collect();
        order.sort_by(|a, b| st.series[*a as usize].key.cmp(&st.series[*b as usize].key));
        if tier == Tier::Raw {
            for sid in order {
                let s = &st.series[sid as usize];
                for p in s.raw.range(i64::MIN, i64::MAX) {
                    let h = HistoryPoint {
                        timestamp: p.ms(),
                        value: p.value,
                        min: p.value,
                        max: p.value,
                        count: 1,
                    };
                    f(&s.key, &h)?;
                }
            }
            return Ok(());
        }
        let Some(t) = ChunkTier::of(tier) else {
            unreachable!("raw is answered above")
        };
        self.with_reader(|conn| {
            let mut per: Vec<Vec<(i64, codec::Agg)>> = vec![Vec::new(); st.series.len()];
            tiers::scan(
                conn,
                t,
                i64::MIN >> 24,
                i64::MAX >> 24,
                |_| true,
                |chunk, sid, buckets| {
                    for (i, b) in buckets.iter().enumerate() {
                        if let Some(a) = b {
                            per[sid as usize]
                                .push((t.chunk_start(chunk) + i as i64 * t.bucket, *a));
                        }
                    }
                },
            )?;
            if tier == Tier::Minute {
                for sid in 0..st.series.len() as u32 {
                    for (hour, buckets) in st.open_hours(sid, i64::MIN / 2, i64::MAX / 2) {
                        let list = &mut per[sid as usize];
                        list.retain(|(ts, _)| *ts < hour || *ts >= hour + 3600);
                        for (m, b) in buckets.iter().enumerate() {
                            if let Some(a) = b {
                                list.push((hour + 60 * m as i64, *a));
                            }
                        }
                    }
                }
            }
            for sid in order {
                let list = &mut per[sid as usize];
                list.sort_by_key(|p| p.0);
                for (ts, a) in list.iter() {
                    let h = HistoryPoint {
                        timestamp: ts * 1000,
                        value: a.mean(),
                        min: a.min,
                        max: a.max,
                        count: a.count,
                    };
                    f(&st.series[sid as usize].key, &h)?;
                }
            }
            Ok(())
        })
    }

    /// Stores rolled-up buckets as they are (migration from another store):
    /// each replaces the bucket of its series and tier that starts at the
    /// same time (timestamps are aligned down to the tier's bucket), so an
    /// import run twice stores each bucket once. `Tier::Raw` is refused: raw
    /// points go through `write_batch`. Returns the buckets stored.
    pub fn import_buckets(
        &self,
        tier: Tier,
        buckets: &[(SeriesKey, HistoryPoint)],
    ) -> Result<usize> {
        if tier == Tier::Raw {
            return Err(Error::invalid_input(
                "raw points are imported with write_batch, not import_buckets",
            ));
        }
        let errors: Vec<PointError> = buckets
            .iter()
            .enumerate()
            .filter_map(|(index, (key, b))| {
                let problem = key.validate().err().or_else(|| {
                    if !(b.value.is_finite() && b.min.is_finite() && b.max.is_finite()) {
                        Some("value, min and max must be finite".to_string())
                    } else if b.count == 0 {
                        Some("count must be at least 1".to_string())
                    } else if b.timestamp < 0 || b.timestamp > crate::model::MAX_TIMESTAMP_MS {
                        Some(format!("timestamp {} out of range", b.timestamp))
                    } else {
                        None
                    }
                });
                problem.map(|reason| PointError { index, reason })
            })
            .collect();
        if !errors.is_empty() {
            return Err(Error::invalid_points(errors));
        }
        if buckets.is_empty() {
            return Ok(0);
        }
        self.inner
            .queue
            .run(|r| queue::Job::Import(tier, buckets.to_vec(), r))
    }

    /// Rolls up every closed bucket as of `now_ms`.
    pub fn rollup(&self, now_ms: i64) -> Result<RollupReport> {
        self.inner
            .queue
            .run(|r| queue::Job::Rollup(to_secs(now_ms), r))
    }

    /// Applies retention as of `now_ms`.
    pub fn prune(&self, now_ms: i64) -> Result<PruneReport> {
        self.inner
            .queue
            .run(|r| queue::Job::Prune(to_secs(now_ms), r))
    }

    /// Rollup, prune, then gives free space beyond a small reserve back and
    /// runs `PRAGMA optimize`.
    pub fn maintain(&self, now_ms: i64) -> Result<MaintainReport> {
        self.inner
            .queue
            .run(|r| queue::Job::Maintain(to_secs(now_ms), r))
    }

    /// Gives every free page back and truncates the WAL.
    pub fn vacuum(&self) -> Result<VacuumReport> {
        self.inner.queue.run(queue::Job::Vacuum)
    }

    /// [`Stats::journal_staged_bytes`] alone, without the queries
    /// [`Store::stats`] makes: for a caller that measures the bytes this
    /// process writes to the disk around every operation.
    pub fn journal_staged_bytes(&self) -> u64 {
        self.inner
            .counters
            .journal_staged_bytes
            .load(Ordering::Relaxed)
    }

    /// [`Stats::late_count`] alone, from memory, without the queries
    /// [`Store::stats`] makes: for a watcher that looks every second.
    pub fn late_count(&self) -> u64 {
        self.inner.shared.read().late_points
    }

    /// Storage health.
    pub fn stats(&self) -> Result<Stats> {
        let c = &self.inner.counters;
        let (db_path, db_size, wal_size) = match &self.inner.location {
            Location::File(p) | Location::ReadOnly(p, _) => {
                let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
                let mut wal = p.clone().into_os_string();
                wal.push("-wal");
                (
                    p.display().to_string(),
                    size(p.clone()),
                    size(PathBuf::from(wal)),
                )
            }
            Location::Memory(_) => (":memory:".to_string(), 0, 0),
        };
        let st = self.inner.shared.read();
        let (free_pages, oldest) = self.with_reader(|conn| {
            let free: i64 = conn
                .pragma_query_value(None, "freelist_count", |r| r.get(0))
                .ctx("freelist_count")?;
            Ok((free.max(0) as u64, tiers::oldest(conn, &st)?))
        })?;
        Ok(Stats {
            enabled: !matches!(self.inner.location, Location::Memory(_)),
            db_path,
            db_size,
            wal_size,
            free_pages,
            series_count: (0..st.series.len() as u32)
                .filter(|sid| !merge::is_merged(&st, *sid))
                .count() as u64,
            raw_count: st.raw_count(),
            late_count: st.late_points,
            minute_count: st.disk_buckets[0] + st.open_buckets(),
            hourly_count: st.disk_buckets[1],
            daily_count: st.disk_buckets[2],
            oldest_data_timestamp: oldest.map_or(0, |t| t * 1000),
            total_writes: c.total_writes.load(Ordering::Relaxed),
            dropped_writes: c.dropped_writes.load(Ordering::Relaxed),
            buffer_size: self.inner.queue.pending_len() as u64,
            last_flush: c.last_flush.load(Ordering::Relaxed),
            last_rollup: c.last_rollup.load(Ordering::Relaxed),
            last_retention: c.last_retention.load(Ordering::Relaxed),
            last_vacuum: c.last_vacuum.load(Ordering::Relaxed),
            last_error: c.last_error.lock().clone(),
            flush_count: c.flushes.load(Ordering::Relaxed),
            flush_failures: c.flush_failures.load(Ordering::Relaxed),
            job_failures: c.job_failures.load(Ordering::Relaxed),
            journal_segments: c.journal_segments.load(Ordering::Relaxed),
            journal_bytes: c.journal_bytes.load(Ordering::Relaxed),
            journal_staged_bytes: c.journal_staged_bytes.load(Ordering::Relaxed),
            raw_memory_bytes: st.raw_bytes(),
            queue_capacity: QUEUE_CAPACITY as u64,
        })
    }
}

//! pulse-metrics: durable, low-wear metrics history for Proxmox dashboards.
//!
//! ```
//! use pulse_metrics::{MetricsConfig, SeriesKey, Store, TimeRange};
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
//! assert_eq!(day.tier, pulse_metrics::Tier::Minute);
//! assert_eq!(day.points[0].count, 12);
//! assert_eq!(day.points[0].value, 15.5);
//! # Ok::<(), pulse_metrics::Error>(())
//! ```
//!
//! # Modules
//!
//! | module         | owns                                                         |
//! |----------------|--------------------------------------------------------------|
//! | `store`        | [`Store`]: the crate `pulse_metrics_store` (SQLite file, tiers, rollup, retention, queries), with its `model`, `error` and options |
//! | `config`       | the configuration's types, defaults, rules, file and UI settings |
//! | `answer`       | the history answer's JSON, shared by the HTTP API and the CLI |
//! | `segments`     | each answered point's tier and bucket width, for gap drawing |
//! | `ingest`       | streaming JSON Lines / CSV point reader, batched writes      |
//! | `export`       | writing a tier as JSON Lines / CSV that `ingest` reads back  |
//! | `pulse_import` | migrating a Pulse (Go) `metrics.db`, read-only, every tier   |
//! | `pulse_ids`    | Pulse's resource ids and type names, mapped onto ours        |
//! | `collectors`   | host and Proxmox samplers writing into the store             |
//! | `remote`       | Prometheus remote write out, and reads from the engine       |
//! | `reads`        | where reads are answered from: the store or the engine       |
//! | `influx`       | InfluxDB line protocol (Proxmox's metric push) onto the store |
//! | `server`       | the service: HTTP API, background jobs, `/metrics`           |
//! | `tls`          | certificate trust for outgoing HTTPS: roots, CA files, pins  |
//! | `ui`           | the embedded web UI                                          |
//!
//! Layers import downward only: `config` uses `store` and `tls` (the rules
//! it checks at startup live in it or below it), the collectors, `influx`,
//! `remote` and `server` use `config`.
//!
//! The store knows nothing of HTTP or the command line (it is a crate of its
//! own, so the compiler refuses an upward import); the service and the CLI
//! are thin layers over it.

pub mod answer;
pub mod collectors;
pub mod config;
pub mod export;
pub mod influx;
pub mod ingest;
pub mod pulse_ids;
pub mod pulse_import;
pub mod reads;
pub mod remote;
pub mod segments;
pub mod server;
pub mod tls;
pub mod ui;

pub use pulse_metrics_store as store;
pub use pulse_metrics_store::{error, model};

pub use config::{Config, MetricsConfig, Retention};
pub use error::{Error, PointError, Result};
pub use model::{HistoryPoint, Point, SeriesKey, Tier};
pub use store::{
    History, MaintainReport, ManyHistory, PruneReport, Resource, ResourceMap, ResourceMeta,
    RollupReport, SeriesFilter, SeriesInfo, Stats, Store, TimeRange, VacuumReport,
};

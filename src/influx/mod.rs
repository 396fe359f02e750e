//! InfluxDB line protocol: what Proxmox VE's External Metric Server pushes
//! (and Telegraf, scripts, any InfluxDB client), onto this store's series.
//!
//! | module  | owns                                                          |
//! |---------|---------------------------------------------------------------|
//! | `parse` | bytes to numbered lines: escaping, field types, precision     |
//! | `map`   | lines to points: Proxmox's onto the collector's series, others by the generic rule |
//! | `push`  | one request end to end: store, counters, status board         |
//!
//! No HTTP or sockets here: the service's `/write`, `/api/v2/write` and UDP
//! listener hand bytes to [`Receiver::push`].
//!
//! ```
//! use pulse_metrics::influx::{Mode, Precision, Receiver};
//! use pulse_metrics::collectors::{Sink, StatusBoard};
//! use std::sync::Arc;
//! # let dir = tempfile::tempdir().unwrap();
//! # let store = pulse_metrics::Store::open(pulse_metrics::MetricsConfig {
//! #     database_path: dir.path().join("m.db"), ..Default::default() })?;
//! let receiver = Receiver::new(Arc::new(store.clone()) as Arc<dyn Sink>, StatusBoard::default());
//! let now_s = pulse_metrics::model::now_ms() / 1000;
//! let body = format!("cpustat,object=nodes,host=pve-a cpu=0.25,iowait=3 {now_s}");
//! let report = receiver.push("pve1", body.as_bytes(), Precision::Seconds, Mode::AllOrNothing).unwrap();
//! assert_eq!(report.points, 1); // node pve1:pve-a, cpu = 25 (%)
//! # Ok::<(), pulse_metrics::Error>(())
//! ```

pub mod map;
pub mod parse;
pub mod push;

pub use map::Mapped;
pub use parse::{Line, Precision, Value};
pub use push::{Mode, PushError, Receiver, Report, board_key, check_instance};

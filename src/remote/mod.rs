//! Past one machine: Prometheus remote write out of the raw journal
//! (`export.remote_write`) and reads answered by the engine
//! (`metrics.backend: remote`), see docs/remote.md.
//!
//! | module    | owns                                                         |
//! |-----------|--------------------------------------------------------------|
//! | `proto`   | the remote-write 1.0 messages (prost) and their snappy body  |
//! | `mapping` | our series as Prometheus names and labels; the info series   |
//! | `client`  | one target's HTTP client (auth, headers, TLS) and answers    |
//! | `sender`  | the per-target loop: journal -> requests, cursor, retries    |
//! | `health`  | per-target health for stats, `/metrics` and the UI           |
//! | `query`   | the engine's Prometheus query API                            |
//! | `backend` | `metrics.backend: remote`: every read answered from it       |

pub mod backend;
pub mod client;
pub mod health;
pub mod mapping;
pub mod proto;
pub mod query;
pub mod sender;

pub use health::{RemoteHealth, TargetHealth};

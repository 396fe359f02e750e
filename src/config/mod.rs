//! Configuration: the types of the one config file and their defaults.
//!
//! | module     | owns                                                        |
//! |------------|-------------------------------------------------------------|
//! | this one   | the types and defaults of the service's sections            |
//! | `file`     | finding, reading (YAML/JSON, `${VAR}`) and merging the file  |
//! | `settings` | `settings.json`: UI changes applied over the file            |
//! | `validate` | the service's rules, each error naming its key              |
//! | `export`   | the `export` section: remote-write targets and their rules   |
//!
//! The `metrics` section is the store's own [`MetricsConfig`], with its rules,
//! from `pulse_metrics_store::config`. Durations are written as strings (`5s`,
//! `5m`, `2h`, `168h`, `90d`) in the file and in the settings API; they are
//! `std::time::Duration` in code.

use crate::error::Result;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

use pulse_metrics_store::config::de as text;
pub use pulse_metrics_store::config::{
    MAX_WRITE_BUFFER, MetricsConfig, Retention, data_dir, duration_text, format_duration,
    parse_duration,
};

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    #[serde(deserialize_with = "text::or_default")]
    pub metrics: MetricsConfig,
    #[serde(deserialize_with = "text::or_default")]
    pub server: ServerConfig,
    #[serde(deserialize_with = "text::or_default")]
    pub collectors: CollectorsConfig,
    #[serde(deserialize_with = "text::or_default")]
    pub export: ExportConfig,
    pub ingest: IngestConfig,
}

/// The `server` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// `host:port`; loopback by default so nothing is exposed by accident.
    #[serde(deserialize_with = "text::string")]
    pub listen: String,
    /// When non-empty, every `/api` route needs it. Empty means none.
    #[serde(deserialize_with = "text::string")]
    pub api_token: String,
    /// Host names (optionally `name:port`) besides loopback names, IP
    /// addresses and the listen address that requests may be addressed to:
    /// the names a reverse proxy forwards. Anything else is refused, which
    /// is what stops DNS rebinding.
    #[serde(deserialize_with = "text::strings")]
    pub allowed_hosts: Vec<String>,
    /// A client must send a whole request header within this time of
    /// connecting, or of its first byte on a kept-alive connection.
    #[serde(with = "duration_text")]
    pub header_read_timeout: Duration,
    /// A kept-alive connection with no request for this long is closed.
    #[serde(with = "duration_text")]
    pub idle_timeout: Duration,
    /// Longest a request may take from its header to the last byte of its
    /// answer (slow bodies, stalled readers); the connection is then closed.
    #[serde(with = "duration_text")]
    pub request_timeout: Duration,
    /// Open connections at most (lowered to what the process's open-file
    /// limit allows). When full, the oldest idle connection is closed to
    /// make room; with none idle, new ones wait in the kernel's queue.
    #[serde(deserialize_with = "text::count")]
    pub max_connections: usize,
    /// Points one `/api/charts` answer may hold; beyond it the request gets
    /// a 400 saying what to do instead.
    #[serde(deserialize_with = "text::count")]
    pub max_answer_points: usize,
    /// Chart and series requests (the reads that touch every series) run
    /// at most this many at a time; the others wait their turn. One already
    /// spreads over the cores, and each holds its answer (tens of MB) until
    /// it is sent.
    #[serde(deserialize_with = "text::count")]
    pub max_heavy_reads: usize,
}

/// The `collectors` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct CollectorsConfig {
    #[serde(deserialize_with = "text::or_default")]
    pub host: HostCollectorConfig,
    #[serde(deserialize_with = "text::or_default")]
    pub proxmox: ProxmoxConfig,
}

/// This machine's own CPU, memory and root-disk usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostCollectorConfig {
    #[serde(deserialize_with = "text::boolean")]
    pub enabled: bool,
    #[serde(with = "duration_text")]
    pub interval: Duration,
}

/// Proxmox VE clusters polled through `/api2/json/cluster/resources`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxmoxConfig {
    #[serde(deserialize_with = "text::boolean")]
    pub enabled: bool,
    #[serde(with = "duration_text")]
    pub interval: Duration,
    #[serde(deserialize_with = "text::or_default")]
    pub instances: Vec<ProxmoxInstance>,
}

/// One Proxmox cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ProxmoxInstance {
    /// Prefix of every series id from this cluster (`pve1:101`).
    #[serde(deserialize_with = "text::string")]
    pub name: String,
    /// `https://host:8006`.
    #[serde(deserialize_with = "text::string")]
    pub url: String,
    /// `user@realm!tokenid`.
    #[serde(deserialize_with = "text::string")]
    pub token_id: String,
    #[serde(deserialize_with = "text::string")]
    pub token_secret: String,
    /// SHA-256 of the server certificate (hex, colons allowed); when set the
    /// certificate is pinned instead of checked against the system roots,
    /// which is how self-signed clusters are verified.
    #[serde(deserialize_with = "text::string")]
    pub fingerprint: String,
    /// Turns certificate verification off. Dangerous; logged loudly.
    #[serde(deserialize_with = "text::boolean")]
    pub insecure_skip_verify: bool,
}

/// The `ingest` section: points pushed to the service by other programs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    #[serde(deserialize_with = "text::or_default")]
    pub influx: InfluxConfig,
}

/// InfluxDB line protocol, as Proxmox VE's External Metric Server sends it.
/// Over HTTP (`/write`, `/api/v2/write`) it is always on; UDP is opt-in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InfluxConfig {
    /// `host:port` to receive line protocol over UDP; empty: no UDP listener.
    /// UDP has no authentication: anyone who can reach the port can write.
    #[serde(deserialize_with = "text::string")]
    pub udp: String,
    /// The instance name (series id prefix) of points received over UDP,
    /// which carries no db / bucket name.
    #[serde(deserialize_with = "text::string")]
    pub udp_instance: String,
}

impl Default for InfluxConfig {
    fn default() -> Self {
        InfluxConfig {
            udp: String::new(),
            // Proxmox's own default bucket name.
            udp_instance: "proxmox".into(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:7656".into(),
            api_token: String::new(),
            allowed_hosts: Vec::new(),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(120),
            max_connections: 512,
            max_answer_points: 2_000_000,
            max_heavy_reads: 1,
        }
    }
}

impl Default for HostCollectorConfig {
    fn default() -> Self {
        HostCollectorConfig {
            enabled: true,
            interval: Duration::from_secs(5),
        }
    }
}

impl Default for ProxmoxConfig {
    fn default() -> Self {
        ProxmoxConfig {
            enabled: false,
            interval: Duration::from_secs(10),
            instances: Vec::new(),
        }
    }
}

mod export;
mod file;
pub mod rules;
pub mod settings;
mod validate;

pub use export::{BasicAuth, ExportConfig, RemoteWriteTarget, TlsConfig};
pub use file::{CONFIG_ENV, ConfigFormat, expand_env, metrics_from_json};
pub use settings::{SettingsFile, UiSettings};
pub use validate::check_listen;

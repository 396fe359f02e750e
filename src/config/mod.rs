//! Configuration: the types of the one config file and their defaults.
//!
//! | module     | owns                                                        |
//! |------------|-------------------------------------------------------------|
//! | this one   | the types, defaults and the duration format                 |
//! | `file`     | finding, reading (YAML/JSON, `${VAR}`), merging and saving   |
//! | `validate` | every rule, each error naming its key                       |
//!
//! Durations are written as strings (`5s`, `5m`, `2h`, `168h`, `90d`) in the
//! file and in the settings API; they are `std::time::Duration` in code.

use crate::error::Result;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

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
}

/// The `metrics` section: everything the store needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// `false` keeps every tier in memory only (history is lost at restart),
    /// for users who want no disk writes at all.
    #[serde(deserialize_with = "text::boolean")]
    pub enabled: bool,
    #[serde(deserialize_with = "text::path")]
    pub database_path: PathBuf,
    #[serde(deserialize_with = "text::or_default")]
    pub retention: Retention,
    /// Pending points that trigger a flush before `flush_interval` is up.
    #[serde(deserialize_with = "text::count")]
    pub write_buffer: usize,
    /// Longest a written point waits before it is flushed (made durable).
    #[serde(with = "duration_text")]
    pub flush_interval: Duration,
    #[serde(with = "duration_text")]
    pub rollup_interval: Duration,
    /// How often retention pruning runs.
    #[serde(with = "duration_text")]
    pub retention_interval: Duration,
    /// How often free space is reclaimed and `PRAGMA optimize` runs.
    #[serde(with = "duration_text")]
    pub vacuum_interval: Duration,
}

/// How long each tier is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    #[serde(with = "duration_text")]
    pub raw: Duration,
    #[serde(with = "duration_text")]
    pub minute: Duration,
    #[serde(with = "duration_text")]
    pub hourly: Duration,
    #[serde(with = "duration_text")]
    pub daily: Duration,
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
    /// Points one `/api/charts` answer may hold when the request gives no
    /// `maxPoints`; beyond it the request gets a 400 saying what to do.
    #[serde(deserialize_with = "text::count")]
    pub max_answer_points: usize,
    /// Chart and series requests (the reads that touch every series) run
    /// at most this many at a time; the others wait their turn.
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
    /// Prefix of every series id from this cluster (`pve1:node1:101`).
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

/// `$PULSE_DATA_DIR`, else `./data`.
pub fn data_dir() -> PathBuf {
    match std::env::var_os("PULSE_DATA_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from("./data"),
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            database_path: data_dir().join("metrics.db"),
            retention: Retention::default(),
            write_buffer: 100,
            flush_interval: Duration::from_secs(5),
            rollup_interval: Duration::from_secs(5 * 60),
            retention_interval: Duration::from_secs(3600),
            vacuum_interval: Duration::from_secs(168 * 3600),
        }
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            raw: Duration::from_secs(2 * 3600),
            minute: Duration::from_secs(24 * 3600),
            hourly: Duration::from_secs(168 * 3600),
            daily: Duration::from_secs(2160 * 3600),
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
            max_heavy_reads: 2,
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

/// Environment variable naming the configuration file when `--config` is not given.
mod file;
mod validate;

pub use file::{CONFIG_ENV, ConfigFormat, expand_env, metrics_from_json};
pub use validate::{MAX_WRITE_BUFFER, check_listen};

/// Field deserializers: `null` means "the default", scalars are accepted as
/// text where that is unambiguous, and `${VAR}` is expanded while a file is
/// being loaded (never for the settings API).
mod text {
    use serde::de::{Deserialize, Deserializer, Error as _, Visitor};
    use std::cell::Cell;
    use std::fmt;
    use std::path::PathBuf;

    thread_local! {
        static LOADING: Cell<bool> = const { Cell::new(false) };
    }

    /// Marks this thread as loading a file until dropped.
    pub(super) struct Loading(bool);

    impl Loading {
        pub(super) fn start() -> Loading {
            Loading(LOADING.replace(true))
        }
    }

    impl Drop for Loading {
        fn drop(&mut self) {
            LOADING.set(self.0);
        }
    }

    pub(super) fn expand_if_loading(s: &str) -> Result<String, String> {
        if LOADING.get() {
            super::expand_env(s)
        } else {
            Ok(s.to_string())
        }
    }

    pub fn or_default<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de> + Default,
    {
        Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
    }

    pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(String::new()),
            Some(s) => expand_if_loading(&s).map_err(D::Error::custom),
        }
    }

    /// A list of strings (`null` is empty), each expanded like `string`.
    pub fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        Option::<Vec<String>>::deserialize(d)?
            .unwrap_or_default()
            .iter()
            .map(|s| expand_if_loading(s).map_err(D::Error::custom))
            .collect()
    }

    pub fn path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        string(d).map(PathBuf::from)
    }

    pub fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = bool;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true or false")
            }
            fn visit_bool<E>(self, b: bool) -> Result<bool, E> {
                Ok(b)
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<bool, E> {
                let s = expand_if_loading(s).map_err(E::custom)?;
                match s.trim().to_ascii_lowercase().as_str() {
                    "true" => Ok(true),
                    "false" => Ok(false),
                    _ => Err(E::custom(format!("{s:?} is not true or false"))),
                }
            }
        }
        d.deserialize_any(V)
    }

    pub fn count<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = usize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a whole number")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<usize, E> {
                usize::try_from(n).map_err(|_| E::custom(format!("{n} is too large")))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<usize, E> {
                u64::try_from(n)
                    .map_err(|_| E::custom(format!("{n} is negative")))
                    .and_then(|n| self.visit_u64(n))
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<usize, E> {
                Err(E::custom(format!("{n} is not a whole number")))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<usize, E> {
                let s = expand_if_loading(s).map_err(E::custom)?;
                s.trim()
                    .parse::<usize>()
                    .map_err(|_| E::custom(format!("{s:?} is not a whole number")))
            }
        }
        d.deserialize_any(V)
    }
}

impl Retention {
    pub fn get(&self, tier: crate::Tier) -> Duration {
        match tier {
            crate::Tier::Raw => self.raw,
            crate::Tier::Minute => self.minute,
            crate::Tier::Hourly => self.hourly,
            crate::Tier::Daily => self.daily,
        }
    }
}

/// Parses `5s`, `5m`, `2h`, `168h`, `90d`, `1h30m`, `250ms`.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration (write e.g. 5s, 5m, 2h, 90d)".into());
    }
    if t.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "{t:?} has no unit (write e.g. {t}s, {t}m, {t}h or {t}d)"
        ));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("{t:?} is not a duration ({e}); write e.g. 5s, 5m, 2h, 168h, 90d"))
}

/// Formats a duration with the largest unit that divides it exactly, up to
/// hours (so the defaults read back as written: `2h`, `24h`, `168h`, `2160h`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Serde adapter: durations as human strings.
pub mod duration_text {
    use serde::{Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    /// Accepts a duration string (`${VAR}` expanded while a file loads); a bare
    /// number is refused with a hint, since `90` could mean seconds or minutes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration such as 5s, 5m, 2h, 168h or 90d")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Duration, E> {
                let s = super::text::expand_if_loading(s).map_err(E::custom)?;
                super::parse_duration(&s).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Duration, E> {
                self.visit_str(&n.to_string())
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Duration, E> {
                self.visit_str(&n.to_string())
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "{n} is not a duration; write e.g. 5s, 5m, 2h, 168h, 90d"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip_as_written() {
        for (text, secs) in [
            ("5s", 5),
            ("5m", 300),
            ("2h", 7200),
            ("168h", 604_800),
            ("2160h", 7_776_000),
        ] {
            let d = parse_duration(text).unwrap();
            assert_eq!(d.as_secs(), secs);
            assert_eq!(format_duration(d), text);
        }
        assert_eq!(parse_duration("90d").unwrap().as_secs(), 90 * 86_400);
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert!(parse_duration("5").unwrap_err().contains("no unit"));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn defaults_are_valid() {
        MetricsConfig::default().validate().unwrap();
    }

    #[test]
    fn retention_rules_name_the_key() {
        let mut c = MetricsConfig::default();
        c.retention.raw = Duration::from_secs(60);
        assert_eq!(
            c.validate().unwrap_err().config_key(),
            Some("metrics.retention.raw")
        );
        let mut c = MetricsConfig::default();
        c.retention.minute = Duration::from_secs(1800);
        assert_eq!(
            c.validate().unwrap_err().config_key(),
            Some("metrics.retention.minute")
        );
        let mut c = MetricsConfig::default();
        c.retention.hourly = Duration::from_secs(3600 * 20);
        assert_eq!(
            c.validate().unwrap_err().config_key(),
            Some("metrics.retention.hourly")
        );
        let mut c = MetricsConfig::default();
        c.retention.daily = Duration::from_secs(3600 * 100);
        assert_eq!(
            c.validate().unwrap_err().config_key(),
            Some("metrics.retention.daily")
        );
        let c = MetricsConfig {
            write_buffer: 0,
            ..MetricsConfig::default()
        };
        assert_eq!(
            c.validate().unwrap_err().config_key(),
            Some("metrics.write_buffer")
        );
        let c = MetricsConfig {
            rollup_interval: Duration::ZERO,
            ..MetricsConfig::default()
        };
        assert_eq!(
            c.validate().unwrap_err().config_key(),
            Some("metrics.rollup_interval")
        );
    }
}

//! Configuration: the types of the one config file, their defaults and
//! validation rules.
//!
//! Durations are written as strings (`5s`, `5m`, `2h`, `168h`, `90d`) in the
//! file and in the settings API; they are `std::time::Duration` in code.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub metrics: MetricsConfig,
    pub server: ServerConfig,
    pub collectors: CollectorsConfig,
}

/// The `metrics` section: everything the store needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// `false` keeps every tier in memory only (history is lost at restart),
    /// for users who want no disk writes at all.
    pub enabled: bool,
    pub database_path: PathBuf,
    pub retention: Retention,
    /// Pending points that trigger a flush before `flush_interval` is up.
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
    pub listen: String,
    /// When non-empty, every `/api` route needs it. Empty means none.
    pub api_token: String,
}

/// The `collectors` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct CollectorsConfig {
    pub host: HostCollectorConfig,
    pub proxmox: ProxmoxConfig,
}

/// This machine's own CPU, memory and root-disk usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostCollectorConfig {
    pub enabled: bool,
    #[serde(with = "duration_text")]
    pub interval: Duration,
}

/// Proxmox VE clusters polled through `/api2/json/cluster/resources`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxmoxConfig {
    pub enabled: bool,
    #[serde(with = "duration_text")]
    pub interval: Duration,
    pub instances: Vec<ProxmoxInstance>,
}

/// One Proxmox cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ProxmoxInstance {
    /// Prefix of every series id from this cluster (`pve1:node1:101`).
    pub name: String,
    /// `https://host:8006`.
    pub url: String,
    /// `user@realm!tokenid`.
    pub token_id: String,
    pub token_secret: String,
    /// SHA-256 of the server certificate (hex, colons allowed); when set the
    /// certificate is pinned instead of checked against the system roots,
    /// which is how self-signed clusters are verified.
    pub fingerprint: String,
    /// Turns certificate verification off. Dangerous; logged loudly.
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

impl Config {
    /// Loads the configuration: from `path`, else from `$PULSE_METRICS_CONFIG`,
    /// else the defaults. YAML (`.yaml`/`.yml`) or JSON (`.json`) by extension;
    /// `${VAR}` expanded from the environment; unknown keys and invalid values
    /// are errors naming the key (`Error::config_key`). Returns the config and
    /// the file it came from.
    pub fn load(path: Option<&std::path::Path>) -> Result<(Config, Option<PathBuf>)> {
        let _ = path;
        Ok((Config::default(), None))
    }

    /// Checks every section; the error names the first key at fault.
    pub fn validate(&self) -> Result<()> {
        self.metrics.validate()
    }

    /// Writes the configuration back to `path` atomically (temp file in the
    /// same directory, fsync, rename), in the format its extension names.
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        let _ = path;
        Err(Error::config("(file)", "saving is not implemented yet"))
    }
}

/// Parses a `metrics` section sent as JSON (the settings API): missing keys
/// keep the values of `current`, unknown keys and bad values are errors naming
/// the key (`metrics.retention.raw`), and the result is validated.
pub fn metrics_from_json(
    value: &serde_json::Value,
    current: &MetricsConfig,
) -> Result<MetricsConfig> {
    let _ = value;
    Ok(current.clone())
}

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);
/// Retentions beyond ten years are a typo, not a plan.
const MAX_RETENTION: Duration = Duration::from_secs(3650 * 86_400);
/// Largest `write_buffer`: more pending points than this per flush only adds latency.
pub const MAX_WRITE_BUFFER: usize = 100_000;

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

impl MetricsConfig {
    /// Checks every rule of the `metrics` section; the error names the key.
    ///
    /// Retentions must let each tier be rolled up before it is pruned: raw
    /// must outlast two rollup intervals (and at least 2m), each tier must
    /// hold at least one bucket of the next (minute >= 1h, hourly >= 24h), and
    /// no tier may be kept shorter than a finer one.
    pub fn validate(&self) -> Result<()> {
        let r = &self.retention;
        let key = |k: &str| format!("metrics.{k}");
        if self.database_path.as_os_str().is_empty() {
            return Err(Error::config(key("database_path"), "must not be empty"));
        }
        if self.write_buffer == 0 || self.write_buffer > MAX_WRITE_BUFFER {
            return Err(Error::config(
                key("write_buffer"),
                format!(
                    "must be between 1 and {MAX_WRITE_BUFFER} points, got {}",
                    self.write_buffer
                ),
            ));
        }
        check_range(
            &key("flush_interval"),
            self.flush_interval,
            Duration::from_millis(100),
            HOUR,
        )?;
        check_range(
            &key("rollup_interval"),
            self.rollup_interval,
            Duration::from_secs(1),
            HOUR,
        )?;
        check_range(
            &key("retention_interval"),
            self.retention_interval,
            MINUTE,
            DAY * 7,
        )?;
        check_range(
            &key("vacuum_interval"),
            self.vacuum_interval,
            HOUR,
            DAY * 366,
        )?;
        let raw_min = (self.rollup_interval * 2).max(Duration::from_secs(120));
        check_range("metrics.retention.raw", r.raw, raw_min, MAX_RETENTION).map_err(|_| {
            Error::config(
                "metrics.retention.raw",
                format!(
                    "must be at least twice the rollup interval ({}) and at least 2m so raw points are rolled up before they are pruned, and at most 3650d; got {}",
                    format_duration(self.rollup_interval),
                    format_duration(r.raw)
                ),
            )
        })?;
        let tiers = [
            (
                "minute",
                r.minute,
                HOUR,
                "one hourly bucket (1h)",
                r.raw,
                "raw",
            ),
            (
                "hourly",
                r.hourly,
                DAY,
                "one daily bucket (24h)",
                r.minute,
                "minute",
            ),
            ("daily", r.daily, DAY, "one day", r.hourly, "hourly"),
        ];
        for (name, value, min, min_text, finer, finer_name) in tiers {
            let k = format!("metrics.retention.{name}");
            if value < min {
                return Err(Error::config(
                    k,
                    format!(
                        "must hold at least {min_text}, got {}",
                        format_duration(value)
                    ),
                ));
            }
            if value < finer {
                return Err(Error::config(
                    k,
                    format!(
                        "must not be shorter than retention.{finer_name} ({}), got {}",
                        format_duration(finer),
                        format_duration(value)
                    ),
                ));
            }
            if value > MAX_RETENTION {
                return Err(Error::config(
                    k,
                    format!("at most 3650d, got {}", format_duration(value)),
                ));
            }
        }
        Ok(())
    }
}

fn check_range(key: &str, value: Duration, min: Duration, max: Duration) -> Result<()> {
    if value < min || value > max {
        return Err(Error::config(
            key,
            format!(
                "must be between {} and {}, got {}",
                format_duration(min),
                format_duration(max),
                format_duration(value)
            ),
        ));
    }
    Ok(())
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
    if ms % 1000 != 0 {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    if s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Serde adapter: durations as human strings.
pub mod duration_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
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
        let mut c = MetricsConfig::default();
        c.write_buffer = 0;
        assert_eq!(
            c.validate().unwrap_err().config_key(),
            Some("metrics.write_buffer")
        );
        let mut c = MetricsConfig::default();
        c.rollup_interval = Duration::ZERO;
        assert_eq!(
            c.validate().unwrap_err().config_key(),
            Some("metrics.rollup_interval")
        );
    }
}

//! The store's options and their rules, kept beside the store (as
//! proxmox-rrd keeps `CacheConfig` beside `Cache`): the service's
//! configuration file embeds [`MetricsConfig`] as its `metrics` section.
//!
//! Durations are written as strings (`5s`, `5m`, `2h`, `168h`, `90d`) in
//! files and in the settings API; they are [`Duration`]s in code.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);
/// Retentions beyond ten years are a typo, not a plan.
const MAX_RETENTION: Duration = Duration::from_secs(3650 * 86_400);
/// Largest `write_buffer`: more pending points than this per flush only adds latency.
pub const MAX_WRITE_BUFFER: usize = 100_000;

/// The `metrics` section: everything the store needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// `false` keeps every tier in memory only (history is lost at restart),
    /// for users who want no disk writes at all.
    #[serde(deserialize_with = "de::boolean")]
    pub enabled: bool,
    /// The SQLite file; its directory also holds the WAL and lock files.
    #[serde(deserialize_with = "de::path")]
    pub database_path: PathBuf,
    /// How long each tier is kept.
    #[serde(deserialize_with = "de::or_default")]
    pub retention: Retention,
    /// Pending points that trigger a flush before `flush_interval` is up.
    #[serde(deserialize_with = "de::count")]
    pub write_buffer: usize,
    /// Longest a written point waits before it is flushed (made durable).
    #[serde(with = "duration_text")]
    pub flush_interval: Duration,
    /// How often closed buckets are rolled up into the coarser tiers.
    #[serde(with = "duration_text")]
    pub rollup_interval: Duration,
    /// How often retention pruning runs.
    #[serde(with = "duration_text")]
    pub retention_interval: Duration,
    /// How often free space is reclaimed and `PRAGMA optimize` runs.
    #[serde(with = "duration_text")]
    pub vacuum_interval: Duration,
    /// Live writes (the write API) stamped further ahead of this machine's
    /// clock are refused: such a point never expires and would stand as
    /// its series' last value for ever.
    #[serde(with = "duration_text")]
    pub max_future_skew: Duration,
}

/// How long each tier is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    /// Every point as written.
    #[serde(with = "duration_text")]
    pub raw: Duration,
    /// One-minute buckets.
    #[serde(with = "duration_text")]
    pub minute: Duration,
    /// One-hour buckets.
    #[serde(with = "duration_text")]
    pub hourly: Duration,
    /// One-day buckets (UTC midnight).
    #[serde(with = "duration_text")]
    pub daily: Duration,
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
            max_future_skew: Duration::from_secs(10 * 60),
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

impl Retention {
    /// How long the longest-kept tier is kept: nothing older is stored.
    pub fn longest(&self) -> Duration {
        self.raw.max(self.minute).max(self.hourly).max(self.daily)
    }

    /// How long `tier` is kept.
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
            &key("max_future_skew"),
            self.max_future_skew,
            Duration::from_secs(1),
            DAY,
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

    /// Creates the database's directory and checks that it is writable (the
    /// WAL and journal files live next to the database). Nothing to do when
    /// the store is in memory (`enabled: false`).
    pub fn ensure_database_dir(&self) -> Result<()> {
        const KEY: &str = "metrics.database_path";
        if !self.enabled {
            return Ok(());
        }
        let path = &self.database_path;
        crate::schema::check_database_path(path)?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).map_err(|e| {
            Error::config(
                KEY,
                format!("cannot create the directory {}: {e}", dir.display()),
            )
        })?;
        let probe = dir.join(format!(".pulse-metrics-probe-{}", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
        {
            Ok(_) => {
                let _ = std::fs::remove_file(&probe);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(Error::config(
                KEY,
                format!("cannot write in the directory {}: {e}", dir.display()),
            )),
        }
    }
}

/// `Err` naming `key` unless `min <= value <= max`.
pub fn check_range(key: &str, value: Duration, min: Duration, max: Duration) -> Result<()> {
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
        // "0" would get the hint "0s", which no setting accepts.
        if t.bytes().all(|b| b == b'0') {
            return Err(format!("{t:?} has no unit (write e.g. 90s, 5m, 2h or 7d)"));
        }
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

    /// Writes the duration as [`format_duration`](super::format_duration) does.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    /// Accepts a duration string; a bare number is refused with a hint,
    /// since `90` could mean seconds or minutes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration such as 5s, 5m, 2h, 168h or 90d")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Duration, E> {
                let s = super::de::expanded(s).map_err(E::custom)?;
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

/// Lenient field deserializers shared with the service's configuration:
/// `null` means "the default", and scalars are accepted as text where that
/// is unambiguous (`"true"`, `"100"`), since environment variables expanded
/// into a file are always text.
///
/// Expansion itself (`${VAR}`) is the file loader's business: it runs the
/// deserialization inside [`expanding`], and every text scalar read by these
/// functions passes through its expander. Expanding while deserializing (not
/// on a parsed tree beforehand) keeps each YAML scalar's text as written:
/// `api_token: 0123` stays `"0123"`.
pub mod de {
    use serde::de::{Deserialize, Deserializer, Error as _, Visitor};
    use std::cell::RefCell;
    use std::fmt;
    use std::path::PathBuf;
    use std::rc::Rc;

    /// Turns a scalar's text into its value (`${VAR}` expansion), or says why not.
    pub type Expander = Rc<dyn Fn(&str) -> Result<String, String>>;

    thread_local! {
        static EXPAND: RefCell<Option<Expander>> = const { RefCell::new(None) };
    }

    /// Runs `f` (a deserialization) with `expand` applied to every text
    /// scalar the deserializers of this module read on this thread.
    pub fn expanding<R>(expand: Expander, f: impl FnOnce() -> R) -> R {
        struct Restore(Option<Expander>);
        impl Drop for Restore {
            fn drop(&mut self) {
                EXPAND.set(self.0.take());
            }
        }
        let _restore = Restore(EXPAND.replace(Some(expand)));
        f()
    }

    /// `s` through the current expander, if any.
    pub(crate) fn expanded(s: &str) -> Result<String, String> {
        let expand = EXPAND.with_borrow(Clone::clone);
        match expand {
            Some(f) => f(s),
            None => Ok(s.to_string()),
        }
    }

    /// `null` or absent: the type's default.
    pub fn or_default<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de> + Default,
    {
        Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
    }

    /// A string; `null` is the empty string.
    pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(String::new()),
            Some(s) => expanded(&s).map_err(D::Error::custom),
        }
    }

    /// A list of strings, each expanded like [`string`]; `null` is empty.
    pub fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        Option::<Vec<String>>::deserialize(d)?
            .unwrap_or_default()
            .iter()
            .map(|s| expanded(s).map_err(D::Error::custom))
            .collect()
    }

    /// A path, written as a string.
    pub fn path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        string(d).map(PathBuf::from)
    }

    /// `true`/`false`, also as text.
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
                let s = expanded(s).map_err(E::custom)?;
                match s.trim().to_ascii_lowercase().as_str() {
                    "true" => Ok(true),
                    "false" => Ok(false),
                    _ => Err(E::custom(format!("{s:?} is not true or false"))),
                }
            }
        }
        d.deserialize_any(V)
    }

    /// A whole number, also as text.
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
                let s = expanded(s).map_err(E::custom)?;
                s.trim()
                    .parse::<usize>()
                    .map_err(|_| E::custom(format!("{s:?} is not a whole number")))
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
        assert!(!parse_duration("0").unwrap_err().contains(" 0s"));
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

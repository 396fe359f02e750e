//! Settings changed from the web UI or with `PUT /api/metrics-store/config`:
//! kept in `<data dir>/settings.json` and applied over the configuration
//! file, which pulse-metrics never writes, so its comments, `${VAR}`
//! references, config management and read-only mounts are left alone.
//!
//! `settings.json` holds only what differs from the file (and the defaults
//! and command-line flags under it), e.g.
//! `{"metrics": {"retention": {"raw": "3h"}}}`: setting a value back to the
//! file's removes it, and "reset to file" removes the file.
//!
//! A start reads the file, applies `settings.json`, then the command-line
//! flags, and checks the result with [`Config::check_startable`]. A change
//! is checked by building exactly what the next start would build and
//! running the same check, so nothing is saved that the next start would
//! refuse.

use super::*;
use crate::error::Error;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The file's name in the data dir.
pub const FILE_NAME: &str = "settings.json";

/// Where the settings are kept: `<data dir>/settings.json`.
pub fn default_path() -> PathBuf {
    data_dir().join(FILE_NAME)
}

/// The `metrics` keys a settings change may touch, dotted.
pub const METRICS_KEYS: [&str; 11] = [
    "enabled",
    "database_path",
    "retention.raw",
    "retention.minute",
    "retention.hourly",
    "retention.daily",
    "write_buffer",
    "flush_interval",
    "rollup_interval",
    "retention_interval",
    "vacuum_interval",
];

/// The content of `settings.json`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UiSettings {
    /// `metrics` keys that differ from the configuration under them, as
    /// the settings API writes them (durations as strings).
    pub metrics: Map<String, Value>,
}

impl UiSettings {
    /// Reads `path`; a missing file means no settings. Errors name the file.
    pub fn load(path: &Path) -> Result<UiSettings> {
        let file_key = || path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(UiSettings::default()),
            Err(e) => {
                return Err(Error::config(
                    file_key(),
                    format!("cannot read the settings saved from the web UI: {e}"),
                ));
            }
        };
        let value: Value = serde_json::from_str(&text).map_err(|e| {
            Error::config(
                file_key(),
                format!(
                    "not valid JSON ({e}); fix it, or delete it to use the configuration file alone"
                ),
            )
        })?;
        let Value::Object(mut top) = value else {
            return Err(Error::config(
                file_key(),
                r#"must be a JSON object such as {"metrics": {"retention": {"raw": "3h"}}}"#,
            ));
        };
        let metrics = match top.remove("metrics") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(_) => {
                return Err(Error::config(
                    format!("{}: metrics", file_key()),
                    "must be a JSON object of metrics settings",
                ));
            }
        };
        if let Some(k) = top.keys().next() {
            return Err(Error::config(
                format!("{}: {k}", file_key()),
                "unknown key: only `metrics` settings are saved from the web UI",
            ));
        }
        Ok(UiSettings { metrics })
    }

    /// The settings that turn `base` into `metrics`: every key whose value
    /// differs.
    pub fn between(base: &MetricsConfig, metrics: &MetricsConfig) -> Result<UiSettings> {
        let (base, metrics) = (as_json(base)?, as_json(metrics)?);
        let mut out = Map::new();
        diff(&base, &metrics, &mut out);
        Ok(UiSettings { metrics: out })
    }

    /// `base` with these settings applied; errors name the key, as a start
    /// reports them.
    pub fn apply(&self, base: &Config) -> Result<Config> {
        let mut config = base.clone();
        if !self.metrics.is_empty() {
            config.metrics =
                metrics_from_json(&Value::Object(self.metrics.clone()), &base.metrics)?;
        }
        Ok(config)
    }

    /// Dotted keys these settings set (`retention.raw`).
    pub fn keys(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        leaf_keys("", &self.metrics, &mut out);
        out
    }

    /// Replaces `path` atomically; with no settings left, removes it.
    pub fn save(&self, path: &Path) -> Result<()> {
        if self.metrics.is_empty() {
            return match std::fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::io(format!("remove {}", path.display()), e)),
            };
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        }
        let doc = serde_json::json!({ "metrics": self.metrics });
        let mut text = serde_json::to_string_pretty(&doc)
            .map_err(|e| Error::config(path.display().to_string(), e.to_string()))?;
        text.push('\n');
        super::file::write_atomically(path, text.as_bytes())
    }
}

fn as_json(m: &MetricsConfig) -> Result<Value> {
    serde_json::to_value(m)
        .map_err(|e| Error::config("metrics", format!("cannot represent the settings: {e}")))
}

fn diff(base: &Value, new: &Value, out: &mut Map<String, Value>) {
    let (Value::Object(b), Value::Object(n)) = (base, new) else {
        return;
    };
    for (k, v) in n {
        match (b.get(k), v) {
            (Some(bv @ Value::Object(_)), Value::Object(_)) => {
                let mut inner = Map::new();
                diff(bv, v, &mut inner);
                if !inner.is_empty() {
                    out.insert(k.clone(), Value::Object(inner));
                }
            }
            (Some(bv), v) if bv == v => {}
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
}

fn leaf_keys(prefix: &str, map: &Map<String, Value>, out: &mut BTreeSet<String>) {
    for (k, v) in map {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::Object(inner) => leaf_keys(&key, inner, out),
            _ => {
                out.insert(key);
            }
        }
    }
}

/// Where each `metrics` setting of a running service comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Source {
    /// Built in: neither the file nor anything else sets it.
    Default,
    /// The configuration file.
    File,
    /// A command-line flag (`--db`), which wins over everything.
    CommandLine,
    /// `settings.json`: changed from the web UI or the settings API.
    Settings,
}

/// What the service needs to change settings: where they are kept and
/// what they apply over.
#[derive(Debug, Clone)]
pub struct SettingsFile {
    /// `settings.json`; `None` keeps changes until restart only.
    pub path: Option<PathBuf>,
    /// The configuration file, if any (read, never written).
    pub config_file: Option<PathBuf>,
    /// The configuration without `settings.json`: the file (or defaults)
    /// with the command-line flags applied. What "reset to file" gives.
    pub base: Config,
    /// Dotted `metrics` keys the configuration file sets.
    pub file_keys: BTreeSet<String>,
    /// Dotted `metrics` keys set by command-line flags, with their values:
    /// already in `base`, and applied again over the settings (flags win).
    pub flags: Vec<(String, Value)>,
}

impl SettingsFile {
    /// Settings over `base` kept in memory only (tests, embedding).
    pub fn in_memory(base: Config) -> SettingsFile {
        SettingsFile {
            path: None,
            config_file: None,
            base,
            file_keys: BTreeSet::new(),
            flags: Vec::new(),
        }
    }

    /// Settings kept at `path` over `base`, read from `config_file`.
    pub fn new(path: PathBuf, config_file: Option<PathBuf>, base: Config) -> SettingsFile {
        let file_keys = config_file
            .as_deref()
            .map(metrics_keys_in_file)
            .unwrap_or_default();
        SettingsFile {
            path: Some(path),
            config_file,
            base,
            file_keys,
            flags: Vec::new(),
        }
    }

    /// Records a command-line flag that sets `metrics.<key>` (already
    /// applied to `base`; applied again over the settings).
    pub fn flag(mut self, key: &str, value: Value) -> SettingsFile {
        self.flags.push((key.to_string(), value));
        self
    }

    /// Whether the key at fault in `e` is one `settings` sets.
    pub fn blames(&self, e: &Error, settings: &UiSettings) -> bool {
        let set = settings.keys();
        self.path.is_some()
            && e.config_key()
                .and_then(|k| k.strip_prefix("metrics."))
                .is_some_and(|k| set.contains(k))
    }

    /// The settings in `path` (none without a path).
    pub fn load(&self) -> Result<UiSettings> {
        match &self.path {
            Some(p) => UiSettings::load(p),
            None => Ok(UiSettings::default()),
        }
    }

    /// What a start builds from these settings: the base, the settings over
    /// it, the flags over both, then every start check
    /// ([`Config::check_startable`]). Errors name the key.
    pub fn startup_config(&self, settings: &UiSettings) -> Result<Config> {
        let config = self.resolved_config(settings)?;
        config.check_startable()?;
        Ok(config)
    }

    /// What `startup_config` builds, validated but without preparing the
    /// database's directory: for the commands that only read it (they
    /// create nothing).
    pub fn reading_config(&self, settings: &UiSettings) -> Result<Config> {
        let config = self.resolved_config(settings)?;
        config.validate()?;
        Ok(config)
    }

    fn resolved_config(&self, settings: &UiSettings) -> Result<Config> {
        let mut config = settings.apply(&self.base)?;
        if !self.flags.is_empty() {
            let mut patch = Map::new();
            for (k, v) in &self.flags {
                patch.insert(k.clone(), v.clone());
            }
            config.metrics = metrics_from_json(&Value::Object(patch), &config.metrics)?;
        }
        Ok(config)
    }

    /// `e` from [`SettingsFile::startup_config`], saying so when the key at
    /// fault is one `settings.json` sets (an admin looks in the config file
    /// first).
    pub fn explain(&self, e: Error, settings: &UiSettings) -> Error {
        if !self.blames(&e, settings) {
            return e;
        }
        let (Some(path), Some(key)) = (&self.path, e.config_key()) else {
            return e;
        };
        let text = e.to_string();
        let message = text
            .strip_prefix(&format!("config `{key}`: "))
            .unwrap_or(&text);
        Error::config(
            key,
            format!(
                "{message} (this value was saved from the web UI in {}: change it on the settings page, or delete that file to use the configuration file alone)",
                path.display()
            ),
        )
    }

    /// Where each `metrics` key's value comes from under `settings`.
    pub fn sources(&self, settings: &UiSettings) -> BTreeMap<&'static str, Source> {
        let set = settings.keys();
        METRICS_KEYS
            .iter()
            .map(|&k| {
                let source = if self.flags.iter().any(|(f, _)| f == k) {
                    Source::CommandLine
                } else if set.contains(k) {
                    Source::Settings
                } else if self.file_keys.contains(k) {
                    Source::File
                } else {
                    Source::Default
                };
                (k, source)
            })
            .collect()
    }
}

/// Dotted `metrics` keys a configuration file sets (non-null); empty when
/// it cannot be read (its errors are reported when it is loaded).
fn metrics_keys_in_file(path: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(text) = std::fs::read_to_string(path) else {
        return out;
    };
    let value: Option<Value> = match ConfigFormat::of(path) {
        Ok(ConfigFormat::Json) => serde_json::from_str(&text).ok(),
        Ok(ConfigFormat::Yaml) => serde_saphyr::from_str(&text).ok(),
        Err(_) => None,
    };
    if let Some(Value::Object(metrics)) = value.as_ref().and_then(|v| v.get("metrics")) {
        let mut present = Map::new();
        for (k, v) in metrics {
            let v = match v {
                Value::Object(inner) => Value::Object(
                    inner
                        .iter()
                        .filter(|(_, x)| !x.is_null())
                        .map(|(a, b)| (a.clone(), b.clone()))
                        .collect(),
                ),
                other => other.clone(),
            };
            if !v.is_null() {
                present.insert(k.clone(), v);
            }
        }
        leaf_keys("", &present, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(dir: &Path) -> Config {
        let mut c = Config::default();
        c.metrics.database_path = dir.join("metrics.db");
        c
    }

    #[test]
    fn only_differences_are_kept_and_applied_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let b = base(dir.path());
        let mut m = b.metrics.clone();
        m.retention.raw = Duration::from_secs(3 * 3600);
        m.write_buffer = 250;
        let s = UiSettings::between(&b.metrics, &m).unwrap();
        assert_eq!(
            Value::Object(s.metrics.clone()),
            serde_json::json!({"retention": {"raw": "3h"}, "write_buffer": 250})
        );
        assert_eq!(
            s.keys().into_iter().collect::<Vec<_>>(),
            ["retention.raw", "write_buffer"]
        );
        assert_eq!(s.apply(&b).unwrap().metrics, m);
        // Back to the file's value: nothing to keep.
        assert!(
            UiSettings::between(&b.metrics, &b.metrics)
                .unwrap()
                .metrics
                .is_empty()
        );

        let path = dir.path().join("data/settings.json");
        s.save(&path).unwrap();
        assert_eq!(UiSettings::load(&path).unwrap(), s);
        UiSettings::default().save(&path).unwrap();
        assert!(!path.exists(), "no settings, no file");
        assert_eq!(UiSettings::load(&path).unwrap(), UiSettings::default());
    }

    #[test]
    fn a_bad_settings_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.json");
        for (text, needle) in [
            ("{nope", "not valid JSON"),
            ("[1]", "must be a JSON object"),
            (r#"{"server": {}}"#, "unknown key"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = UiSettings::load(&path).unwrap_err();
            assert!(e.to_string().contains(needle), "{e}");
            assert!(e.config_key().unwrap().contains("settings.json"), "{e}");
        }
        // Valid JSON, invalid value: the start names the key and the file.
        std::fs::write(&path, r#"{"metrics": {"retention": {"raw": "1m"}}}"#).unwrap();
        let file = SettingsFile::new(path.clone(), None, base(dir.path()));
        let s = file.load().unwrap();
        let e = file.explain(file.startup_config(&s).unwrap_err(), &s);
        assert_eq!(e.config_key(), Some("metrics.retention.raw"));
        let text = e.to_string();
        assert!(text.contains("must be at least"), "{text}");
        assert!(text.contains("saved from the web UI"), "{text}");
        assert!(text.contains("settings.json"), "{text}");
    }

    #[test]
    fn sources_say_where_each_value_comes_from() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.yaml");
        std::fs::write(
            &cfg,
            "# comment\nmetrics:\n  retention: { raw: 4h, minute: }\n  flush_interval: 2s\n",
        )
        .unwrap();
        let file = SettingsFile::new(
            dir.path().join("settings.json"),
            Some(cfg),
            base(dir.path()),
        )
        .flag("database_path", Value::String("/x/m.db".into()));
        let mut s = UiSettings::default();
        s.metrics
            .insert("flush_interval".into(), Value::String("3s".into()));
        let src = file.sources(&s);
        assert_eq!(src["retention.raw"], Source::File);
        assert_eq!(src["retention.minute"], Source::Default);
        assert_eq!(src["flush_interval"], Source::Settings);
        assert_eq!(src["database_path"], Source::CommandLine);
        assert_eq!(src["write_buffer"], Source::Default);
        assert_eq!(src.len(), METRICS_KEYS.len());
    }

    #[test]
    fn the_start_check_refuses_what_a_start_would() {
        let dir = tempfile::tempdir().unwrap();
        let file = SettingsFile::in_memory(base(dir.path()));
        let mut s = UiSettings::default();
        s.metrics.insert(
            "database_path".into(),
            Value::String(dir.path().display().to_string()),
        );
        let e = file.startup_config(&s).unwrap_err();
        assert_eq!(e.config_key(), Some("metrics.database_path"));
        assert!(e.to_string().contains("is a directory"), "{e}");
    }
}

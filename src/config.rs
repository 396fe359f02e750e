//! Configuration: the types of the one config file, their defaults and
//! validation rules.
//!
//! Durations are written as strings (`5s`, `5m`, `2h`, `168h`, `90d`) in the
//! file and in the settings API; they are `std::time::Duration` in code.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
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
pub const CONFIG_ENV: &str = "PULSE_METRICS_CONFIG";

/// The two file formats, chosen by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigFormat {
    /// `.yaml` or `.yml`
    Yaml,
    /// `.json`
    Json,
}

impl ConfigFormat {
    /// The format a file name asks for; any other extension is an error.
    pub fn of(path: &Path) -> Result<ConfigFormat> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("yaml" | "yml") => Ok(ConfigFormat::Yaml),
            Some("json") => Ok(ConfigFormat::Json),
            _ => Err(Error::config(
                path.display().to_string(),
                "the file name must end in .yaml, .yml or .json (the extension chooses the format)",
            )),
        }
    }
}

impl Config {
    /// Loads the configuration: from `path`, else from `$PULSE_METRICS_CONFIG`,
    /// else the defaults. YAML (`.yaml`/`.yml`) or JSON (`.json`) by extension;
    /// `${VAR}` expanded from the environment; unknown keys and invalid values
    /// are errors naming the key (`Error::config_key`). The database directory
    /// is created here, so a path that cannot hold the database fails at load
    /// rather than at the first flush. Returns the config and the file it came
    /// from.
    pub fn load(path: Option<&Path>) -> Result<(Config, Option<PathBuf>)> {
        let path = Config::locate(path);
        let config = match &path {
            Some(p) => Config::from_file(p)?,
            None => Config::default(),
        };
        config.validate()?;
        config.metrics.ensure_database_dir()?;
        Ok((config, path))
    }

    /// The file `load` would read: `path`, else `$PULSE_METRICS_CONFIG` when
    /// set and non-empty.
    pub fn locate(path: Option<&Path>) -> Option<PathBuf> {
        if let Some(p) = path {
            return Some(p.to_path_buf());
        }
        match std::env::var_os(CONFIG_ENV) {
            Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
            _ => None,
        }
    }

    /// Reads and parses one file (format by extension, `${VAR}` expanded)
    /// without validating it, so a caller can apply command-line overrides
    /// first and then call `validate`.
    pub fn from_file(path: &Path) -> Result<Config> {
        let format = ConfigFormat::of(path)?;
        let file_key = || path.display().to_string();
        let bytes = std::fs::read(path)
            .map_err(|e| Error::config(file_key(), format!("cannot read the file: {e}")))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| Error::config(file_key(), "the file is not valid UTF-8"))?;
        Config::parse(&text, format)
    }

    /// Parses configuration text with `${VAR}` expansion (see `expand_env`);
    /// does not validate.
    pub fn parse(text: &str, format: ConfigFormat) -> Result<Config> {
        let _loading = text::Loading::start();
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if is_blank(text, format) {
            return Ok(Config::default());
        }
        match format {
            ConfigFormat::Json => {
                let mut de = serde_json::Deserializer::from_str(text);
                let config: Config = serde_path_to_error::deserialize(&mut de)
                    .map_err(|e| key_error("", &e.path().to_string(), e.inner().to_string()))?;
                de.end()
                    .map_err(|e| Error::config("(file)", format!("invalid JSON: {e}")))?;
                Ok(config)
            }
            ConfigFormat::Yaml => {
                // The path must leave the closure through a side channel:
                // returning the error itself is what stops the parser.
                let mut at: Option<String> = None;
                let parsed = serde_saphyr::with_deserializer_from_str(text, |de| {
                    serde_path_to_error::deserialize::<_, Config>(de).map_err(|e| {
                        at = Some(e.path().to_string());
                        e.into_inner()
                    })
                });
                match (parsed, at) {
                    (Ok(config), _) => Ok(config),
                    (Err(e), Some(path)) => Err(key_error("", &path, yaml_message(&e))),
                    (Err(e), None) => Err(Error::config(
                        "(file)",
                        format!("invalid YAML: {}", yaml_message(&e)),
                    )),
                }
            }
        }
    }

    /// Checks every section; the error names the first key at fault.
    pub fn validate(&self) -> Result<()> {
        self.metrics.validate()?;
        self.server.validate()?;
        self.collectors.validate()
    }

    /// Writes the configuration back to `path` atomically (temp file in the
    /// same directory, fsync, rename, fsync of the directory), in the format
    /// its extension names. An invalid configuration is refused.
    ///
    /// Every key is written, with its current value. Where the file being
    /// replaced held a `${VAR}` reference that still expands to the value
    /// being written, the reference is kept (so a token read from the
    /// environment does not land in the file in clear); any other value is
    /// written expanded. YAML comments are not kept. A symlinked file is
    /// replaced at its target, and keeps its permissions (a new file is
    /// created private, since it may hold tokens).
    pub fn save(&self, path: &Path) -> Result<()> {
        self.validate()?;
        let format = ConfigFormat::of(path)?;
        let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let mut node = tree::Node::from_serialize(self)?;
        if let Ok(old_text) = std::fs::read_to_string(&target)
            && let Ok(old) = tree::Node::parse(&old_text, format)
        {
            node.keep_templates(&old);
        }
        let text = match format {
            ConfigFormat::Yaml => {
                let body = serde_saphyr::to_string(&node)
                    .map_err(|e| Error::config("(file)", format!("cannot write YAML: {e}")))?;
                format!(
                    "# pulse-metrics configuration, written by pulse-metrics (comments are not kept)\n{body}"
                )
            }
            ConfigFormat::Json => {
                let mut body = serde_json::to_string_pretty(&node)
                    .map_err(|e| Error::config("(file)", format!("cannot write JSON: {e}")))?;
                body.push('\n');
                body
            }
        };
        write_atomically(&target, text.as_bytes())
    }
}

/// Whether a file holds nothing but whitespace (and, in YAML, comments or a
/// bare document marker): an empty config file means "all defaults".
fn is_blank(text: &str, format: ConfigFormat) -> bool {
    match format {
        ConfigFormat::Json => text.trim().is_empty(),
        ConfigFormat::Yaml => text.lines().all(|l| {
            let l = l.trim();
            l.is_empty() || l.starts_with('#') || l == "---" || l == "..."
        }),
    }
}

/// Turns a deserialization error at `path` into a config error naming the
/// dotted key. serde reports an unknown key at its parent's path, so the
/// key's own name is appended.
fn key_error(prefix: &str, path: &str, message: String) -> Error {
    let join = |a: &str, b: &str| match (a, b) {
        ("", b) | (".", b) => b.to_string(),
        (a, "") | (a, ".") => a.to_string(),
        (a, b) => format!("{a}.{b}"),
    };
    let mut key = join(prefix, path);
    let mut message = message;
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((name, tail)) = rest.split_once('`')
    {
        if !(key == name || key.ends_with(&format!(".{name}"))) {
            key = join(&key, name);
        }
        message = format!("unknown key{tail}");
    }
    if key.is_empty() {
        key = "(file)".into();
    }
    Error::config(key, message)
}

/// serde-saphyr's messages may carry a multi-line source snippet; a config
/// error is one line, so keep the message and its location.
fn yaml_message(e: &serde_saphyr::Error) -> String {
    let text = e.without_snippet().to_string();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("").to_string();
    match e.location() {
        Some(loc) if !first.contains("line") => {
            format!("{first} (line {}, column {})", loc.line(), loc.column())
        }
        _ => first,
    }
}

/// Expands `${NAME}` (and `${NAME:-default}`) from the environment; `$${`
/// writes a literal `${`. `${PULSE_DATA_DIR}` defaults to `./data`; any other
/// unset variable is an error naming it. A `$` not followed by `{` is kept.
pub fn expand_env(s: &str) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
            continue;
        }
        let Some(body_start) = after.strip_prefix("${") else {
            out.push('$');
            rest = &after[1..];
            continue;
        };
        let Some(close) = body_start.find('}') else {
            return Err(format!(
                "unterminated `${{` in {s:?} (write ${{NAME}}, or $${{ for a literal ${{)"
            ));
        };
        let body = &body_start[..close];
        let (name, default) = match body.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (body, None),
        };
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "`${{{body}}}` is not a variable reference (write ${{NAME}} with A-Z, 0-9 and _, or $${{ for a literal ${{)"
            ));
        }
        let value = match std::env::var(name) {
            Ok(v) if !(v.is_empty() && default.is_some()) => v,
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(format!("environment variable `{name}` is not valid UTF-8"));
            }
            _ => match default {
                Some(d) => d.to_string(),
                None if name == "PULSE_DATA_DIR" => "./data".to_string(),
                None => {
                    return Err(format!(
                        "environment variable `{name}` is not set (referenced as ${{{name}}})"
                    ));
                }
            },
        };
        out.push_str(&value);
        rest = &body_start[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses a `metrics` section sent as JSON (the settings API): missing keys
/// keep the values of `current` (nested `retention` too; `null` also keeps
/// the current value), unknown keys and bad values are errors naming the key
/// (`metrics.retention.raw`), and the result is validated. `${VAR}` is NOT
/// expanded here: the API must not become a way to read the environment.
pub fn metrics_from_json(
    value: &serde_json::Value,
    current: &MetricsConfig,
) -> Result<MetricsConfig> {
    if !value.is_object() {
        return Err(Error::config(
            "metrics",
            "must be a JSON object of metrics settings",
        ));
    }
    let mut merged = serde_json::to_value(current)
        .map_err(|e| Error::config("metrics", format!("cannot represent the settings: {e}")))?;
    merge_json(&mut merged, value);
    let config: MetricsConfig = serde_path_to_error::deserialize(merged)
        .map_err(|e| key_error("metrics", &e.path().to_string(), e.inner().to_string()))?;
    config.validate()?;
    Ok(config)
}

fn merge_json(base: &mut serde_json::Value, patch: &serde_json::Value) {
    match (base, patch) {
        (serde_json::Value::Object(b), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    continue;
                }
                match b.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        merge_json(existing, v)
                    }
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the
/// new file, never a torn one.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config".into());
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        match std::fs::metadata(path) {
            Ok(m) => f.set_permissions(m.permissions())?,
            Err(_) => {
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
                }
            }
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // The rename is durable only once the directory entry is.
        #[cfg(unix)]
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| Error::io(format!("write {}", path.display()), e))
}

impl ServerConfig {
    /// `listen` must be `host:port`; `api_token` must be sendable in a header.
    pub fn validate(&self) -> Result<()> {
        check_listen(&self.listen).map_err(|m| Error::config("server.listen", m))?;
        if self.api_token.trim() != self.api_token {
            return Err(Error::config(
                "server.api_token",
                "must not start or end with whitespace",
            ));
        }
        if self.api_token.chars().any(|c| c.is_control()) {
            return Err(Error::config(
                "server.api_token",
                "must not contain control characters",
            ));
        }
        Ok(())
    }
}

/// Accepts what a socket can bind: `127.0.0.1:7656`, `[::1]:7656`,
/// `0.0.0.0:7656`, or a host name such as `localhost:7656`.
pub fn check_listen(s: &str) -> std::result::Result<(), String> {
    if s.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    let example = "write host:port, e.g. 127.0.0.1:7656, 0.0.0.0:7656 or [::1]:7656";
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("{s:?} has no port; {example}"));
    };
    if port.parse::<u16>().is_err() {
        return Err(format!(
            "{s:?}: port {port:?} is not a number from 0 to 65535; {example}"
        ));
    }
    if host.contains(':') {
        return Err(format!(
            "{s:?}: an IPv6 address goes in brackets, e.g. [::1]:{port}"
        ));
    }
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    if !host_ok {
        return Err(format!(
            "{s:?}: {host:?} is not a host name or IP address; {example}"
        ));
    }
    Ok(())
}

/// Shortest and longest collector polling interval.
const MIN_POLL: Duration = Duration::from_secs(1);

impl CollectorsConfig {
    /// Intervals from 1s to 1h; Proxmox instances need a unique name, an
    /// http(s) URL, a token (when enabled) and a well-formed fingerprint.
    pub fn validate(&self) -> Result<()> {
        check_range(
            "collectors.host.interval",
            self.host.interval,
            MIN_POLL,
            HOUR,
        )?;
        let p = &self.proxmox;
        check_range("collectors.proxmox.interval", p.interval, MIN_POLL, HOUR)?;
        if p.enabled && p.instances.is_empty() {
            return Err(Error::config(
                "collectors.proxmox.instances",
                "proxmox is enabled but no instance is listed; add one (name, url, token_id, token_secret) or set enabled: false",
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, inst) in p.instances.iter().enumerate() {
            let key = |k: &str| format!("collectors.proxmox.instances[{i}].{k}");
            if inst.name.is_empty() {
                return Err(Error::config(key("name"), "must not be empty"));
            }
            if let Some(c) = inst
                .name
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
            {
                return Err(Error::config(
                    key("name"),
                    format!(
                        "character {c:?} not allowed (only A-Z, a-z, 0-9, '_', '.', '-'); the name prefixes every series id"
                    ),
                ));
            }
            if inst.name.len() > 64 {
                return Err(Error::config(key("name"), "at most 64 bytes"));
            }
            if !names.insert(inst.name.as_str()) {
                return Err(Error::config(
                    key("name"),
                    format!(
                        "{:?} is used by another instance; names must be unique",
                        inst.name
                    ),
                ));
            }
            check_url(&inst.url).map_err(|m| Error::config(key("url"), m))?;
            if p.enabled {
                if inst.token_id.is_empty() {
                    return Err(Error::config(
                        key("token_id"),
                        "must not be empty when proxmox is enabled (e.g. root@pam!pulse)",
                    ));
                }
                if inst.token_secret.is_empty() {
                    return Err(Error::config(
                        key("token_secret"),
                        "must not be empty when proxmox is enabled",
                    ));
                }
            }
            if !inst.token_id.is_empty() && !inst.token_id.contains('!') {
                return Err(Error::config(
                    key("token_id"),
                    format!(
                        "{:?} is not an API token id (write user@realm!tokenid)",
                        inst.token_id
                    ),
                ));
            }
            if !inst.fingerprint.is_empty() {
                let hex: String = inst.fingerprint.chars().filter(|c| *c != ':').collect();
                if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(Error::config(
                        key("fingerprint"),
                        "must be empty or a SHA-256 fingerprint: 32 bytes in hex, colons allowed (AA:BB:...)",
                    ));
                }
            }
        }
        Ok(())
    }
}

fn check_url(url: &str) -> std::result::Result<(), String> {
    if url.is_empty() {
        return Err("must not be empty (e.g. https://pve1:8006)".into());
    }
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| format!("{url:?} is not a URL ({e}); write e.g. https://pve1:8006"))?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err(format!("{url:?} must start with https:// (or http://)"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{url:?} has no host"));
    }
    Ok(())
}

impl MetricsConfig {
    /// Creates the database's directory and checks that it is writable (the
    /// WAL and journal files live next to the database). Nothing to do when
    /// the store is in memory (`enabled: false`).
    pub fn ensure_database_dir(&self) -> Result<()> {
        const KEY: &str = "metrics.database_path";
        if !self.enabled {
            return Ok(());
        }
        let path = &self.database_path;
        if path.is_dir() {
            return Err(Error::config(
                KEY,
                format!(
                    "{} is a directory; give the database file, e.g. {}",
                    path.display(),
                    path.join("metrics.db").display()
                ),
            ));
        }
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

/// An order-keeping document tree, so `save` writes keys in the order the
/// types declare them (serde_json's map would sort them) and can carry the
/// old file's `${VAR}` references over.
mod tree {
    use super::ConfigFormat;
    use crate::error::{Error, Result};
    use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
    use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
    use std::fmt;

    #[derive(Debug, Clone, PartialEq)]
    pub enum Node {
        Null,
        Bool(bool),
        Number(serde_json::Number),
        Text(String),
        Seq(Vec<Node>),
        Map(Vec<(String, Node)>),
    }

    impl Node {
        pub fn from_serialize<T: Serialize>(value: &T) -> Result<Node> {
            let json = serde_json::to_string(value).map_err(|e| {
                Error::config("(file)", format!("cannot represent the settings: {e}"))
            })?;
            serde_json::from_str(&json)
                .map_err(|e| Error::config("(file)", format!("cannot represent the settings: {e}")))
        }

        pub fn parse(text: &str, format: ConfigFormat) -> std::result::Result<Node, String> {
            match format {
                ConfigFormat::Json => serde_json::from_str(text).map_err(|e| e.to_string()),
                ConfigFormat::Yaml => serde_saphyr::from_str(text).map_err(|e| e.to_string()),
            }
        }

        fn leaf_text(&self) -> Option<String> {
            match self {
                Node::Bool(b) => Some(b.to_string()),
                Node::Number(n) => Some(n.to_string()),
                Node::Text(s) => Some(s.clone()),
                _ => None,
            }
        }

        /// Where `old` (the file being replaced) has a `${VAR}` reference at
        /// the same place and it expands to this node's value, writes the
        /// reference instead of the value.
        pub fn keep_templates(&mut self, old: &Node) {
            match (self, old) {
                (Node::Map(new), Node::Map(old)) => {
                    for (k, v) in new.iter_mut() {
                        if let Some((_, o)) = old.iter().find(|(ok, _)| ok == k) {
                            v.keep_templates(o);
                        }
                    }
                }
                (Node::Seq(new), Node::Seq(old)) => {
                    for (v, o) in new.iter_mut().zip(old) {
                        v.keep_templates(o);
                    }
                }
                (leaf, Node::Text(template)) if template.contains("${") => {
                    if let (Some(current), Ok(expanded)) =
                        (leaf.leaf_text(), super::expand_env(template))
                        && current == expanded
                    {
                        *leaf = Node::Text(template.clone());
                    }
                }
                _ => {}
            }
        }
    }

    impl Serialize for Node {
        fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            match self {
                Node::Null => s.serialize_unit(),
                Node::Bool(b) => s.serialize_bool(*b),
                Node::Number(n) => n.serialize(s),
                Node::Text(t) => s.serialize_str(t),
                Node::Seq(items) => {
                    let mut seq = s.serialize_seq(Some(items.len()))?;
                    for item in items {
                        seq.serialize_element(item)?;
                    }
                    seq.end()
                }
                Node::Map(entries) => {
                    let mut map = s.serialize_map(Some(entries.len()))?;
                    for (k, v) in entries {
                        map.serialize_entry(k, v)?;
                    }
                    map.end()
                }
            }
        }
    }

    impl<'de> Deserialize<'de> for Node {
        fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Node, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Node;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("any value")
                }
                fn visit_unit<E>(self) -> std::result::Result<Node, E> {
                    Ok(Node::Null)
                }
                fn visit_none<E>(self) -> std::result::Result<Node, E> {
                    Ok(Node::Null)
                }
                fn visit_some<D2: Deserializer<'de>>(
                    self,
                    d: D2,
                ) -> std::result::Result<Node, D2::Error> {
                    Node::deserialize(d)
                }
                fn visit_bool<E>(self, b: bool) -> std::result::Result<Node, E> {
                    Ok(Node::Bool(b))
                }
                fn visit_u64<E>(self, n: u64) -> std::result::Result<Node, E> {
                    Ok(Node::Number(n.into()))
                }
                fn visit_i64<E>(self, n: i64) -> std::result::Result<Node, E> {
                    Ok(Node::Number(n.into()))
                }
                fn visit_f64<E>(self, n: f64) -> std::result::Result<Node, E> {
                    Ok(serde_json::Number::from_f64(n).map_or(Node::Null, Node::Number))
                }
                fn visit_str<E>(self, s: &str) -> std::result::Result<Node, E> {
                    Ok(Node::Text(s.to_string()))
                }
                fn visit_string<E>(self, s: String) -> std::result::Result<Node, E> {
                    Ok(Node::Text(s))
                }
                fn visit_seq<A: SeqAccess<'de>>(
                    self,
                    mut a: A,
                ) -> std::result::Result<Node, A::Error> {
                    let mut items = Vec::new();
                    while let Some(item) = a.next_element()? {
                        items.push(item);
                    }
                    Ok(Node::Seq(items))
                }
                fn visit_map<A: MapAccess<'de>>(
                    self,
                    mut a: A,
                ) -> std::result::Result<Node, A::Error> {
                    let mut entries = Vec::new();
                    while let Some((k, v)) = a.next_entry::<String, Node>()? {
                        entries.push((k, v));
                    }
                    Ok(Node::Map(entries))
                }
            }
            d.deserialize_any(V)
        }
    }
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

#[cfg(test)]
mod load_tests {
    use super::*;

    fn yaml(text: &str) -> Result<Config> {
        Config::parse(text, ConfigFormat::Yaml)
    }

    fn key_of(r: Result<Config>) -> String {
        r.unwrap_err().config_key().unwrap_or("").to_string()
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(key_of(yaml("bogus: 1\n")), "bogus");
        assert_eq!(key_of(yaml("metrics:\n  foo: 1\n")), "metrics.foo");
        assert_eq!(
            key_of(yaml("metrics:\n  retention:\n    raw: 90\n")),
            "metrics.retention.raw"
        );
        assert_eq!(
            key_of(yaml(
                "collectors:\n  proxmox:\n    instances:\n      - name: a\n        urll: x\n"
            )),
            "collectors.proxmox.instances[0].urll"
        );
        let json = Config::parse(
            r#"{"metrics": {"retention": {"daily": "3x"}}}"#,
            ConfigFormat::Json,
        );
        assert_eq!(key_of(json), "metrics.retention.daily");
    }

    #[test]
    fn scalars_keep_their_text() {
        let c = yaml("server:\n  api_token: 0123\n  listen: 127.0.0.1:80\nmetrics:\n  write_buffer: \"250\"\n")
            .unwrap();
        assert_eq!(c.server.api_token, "0123");
        assert_eq!(c.metrics.write_buffer, 250);
        let c = yaml("# nothing\n---\n").unwrap();
        assert_eq!(c, Config::default());
        let c = yaml("server:\n  api_token:\nmetrics:\n").unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn expansion() {
        // SAFETY: these names are used by this test only.
        unsafe {
            std::env::set_var("PM_TEST_SECRET", "s3cr3t");
            std::env::set_var("PM_TEST_EMPTY", "");
        }
        assert_eq!(expand_env("a${PM_TEST_SECRET}b").unwrap(), "as3cr3tb");
        assert_eq!(
            expand_env("$${PM_TEST_SECRET}").unwrap(),
            "${PM_TEST_SECRET}"
        );
        assert_eq!(expand_env("${PM_TEST_EMPTY:-x}").unwrap(), "x");
        assert_eq!(expand_env("${PM_TEST_UNSET_Y:-d/e}").unwrap(), "d/e");
        assert_eq!(expand_env("cost $5").unwrap(), "cost $5");
        assert!(
            expand_env("${PM_TEST_UNSET_Y}")
                .unwrap_err()
                .contains("PM_TEST_UNSET_Y")
        );
        assert!(expand_env("${oops").is_err());
        assert!(expand_env("${a b}").is_err());
        let c = yaml("collectors:\n  proxmox:\n    instances:\n      - {name: a, url: \"https://h:8006\", token_id: \"r@pam!t\", token_secret: \"${PM_TEST_SECRET}\"}\n")
            .unwrap();
        assert_eq!(c.collectors.proxmox.instances[0].token_secret, "s3cr3t");
        let err = yaml("server:\n  api_token: ${PM_TEST_UNSET_Y}\n").unwrap_err();
        assert_eq!(err.config_key(), Some("server.api_token"));
        assert!(err.to_string().contains("PM_TEST_UNSET_Y"), "{err}");
    }

    #[test]
    fn validation_covers_every_section() {
        let mut c = Config::default();
        c.server.listen = "nowhere".into();
        assert_eq!(
            c.validate().unwrap_err().config_key(),
            Some("server.listen")
        );
        for ok in [
            "localhost:7656",
            "[::1]:7656",
            "0.0.0.0:80",
            "pulse.lan:7656",
        ] {
            c.server.listen = ok.into();
            c.validate().unwrap();
        }
        for bad in ["::1:7656", "127.0.0.1:99999", "127.0.0.1", ":80"] {
            c.server.listen = bad.into();
            assert!(c.validate().is_err(), "{bad}");
        }
        let mut c = Config::default();
        c.collectors.host.interval = Duration::from_millis(500);
        assert_eq!(
            c.validate().unwrap_err().config_key(),
            Some("collectors.host.interval")
        );
        let mut c = Config::default();
        c.collectors.proxmox.enabled = true;
        assert_eq!(
            c.validate().unwrap_err().config_key(),
            Some("collectors.proxmox.instances")
        );
        let good = ProxmoxInstance {
            name: "pve1".into(),
            url: "https://pve1:8006".into(),
            token_id: "root@pam!pulse".into(),
            token_secret: "x".into(),
            fingerprint: "AB:".repeat(31) + "AB",
            insecure_skip_verify: false,
        };
        c.collectors.proxmox.instances = vec![good.clone()];
        c.validate().unwrap();
        type Spoil = Box<dyn Fn(&mut ProxmoxInstance)>;
        let cases: Vec<(&str, Spoil)> = vec![
            ("name", Box::new(|i| i.name = "pve 1".into())),
            ("url", Box::new(|i| i.url = "ftp://pve1".into())),
            ("token_id", Box::new(|i| i.token_id = String::new())),
            ("token_secret", Box::new(|i| i.token_secret = String::new())),
            ("fingerprint", Box::new(|i| i.fingerprint = "AB:CD".into())),
        ];
        for (field, spoil) in cases {
            let mut bad = good.clone();
            spoil(&mut bad);
            c.collectors.proxmox.instances = vec![bad];
            assert_eq!(
                c.validate().unwrap_err().config_key(),
                Some(format!("collectors.proxmox.instances[0].{field}").as_str())
            );
        }
        c.collectors.proxmox.instances = vec![good.clone(), good];
        assert_eq!(
            c.validate().unwrap_err().config_key(),
            Some("collectors.proxmox.instances[1].name")
        );
    }

    #[test]
    fn save_round_trips_and_keeps_references() {
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: used by this test only.
        unsafe { std::env::set_var("PM_TEST_TOKEN", "tok-123") };
        for name in ["c.yaml", "c.json"] {
            let path = dir.path().join(name);
            let db = dir.path().join("db/metrics.db");
            let db = db.display();
            let original = if name.ends_with("json") {
                format!(
                    r#"{{"server": {{"api_token": "${{PM_TEST_TOKEN}}"}}, "metrics": {{"write_buffer": 7, "database_path": "{db}"}}}}"#
                )
            } else {
                format!(
                    "server:\n  api_token: ${{PM_TEST_TOKEN}}\nmetrics:\n  write_buffer: 7\n  database_path: {db}\n"
                )
            };
            std::fs::write(&path, original).unwrap();
            let (mut c, from) = Config::load(Some(&path)).unwrap();
            assert_eq!(from.as_deref(), Some(path.as_path()));
            assert_eq!(c.server.api_token, "tok-123");
            c.metrics.retention.raw = Duration::from_secs(3 * 3600);
            c.save(&path).unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.contains("${PM_TEST_TOKEN}"), "{text}");
            assert!(!text.contains("tok-123"), "{text}");
            assert!(text.contains("3h"), "{text}");
            let (again, _) = Config::load(Some(&path)).unwrap();
            assert_eq!(again, c);
            // A changed value replaces the reference.
            c.server.api_token = "other".into();
            c.save(&path).unwrap();
            let (again, _) = Config::load(Some(&path)).unwrap();
            assert_eq!(again.server.api_token, "other");
            let leftovers: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
                .collect();
            assert!(leftovers.is_empty());
        }
        let mut bad = Config::default();
        bad.metrics.write_buffer = 0;
        let path = dir.path().join("bad.yaml");
        assert!(bad.save(&path).is_err());
        assert!(!path.exists());
        assert!(Config::default().save(&dir.path().join("c.toml")).is_err());
    }

    #[test]
    fn metrics_json_merges_over_current() {
        let current = MetricsConfig {
            write_buffer: 42,
            ..MetricsConfig::default()
        };
        let v = serde_json::json!({"retention": {"raw": "3h"}, "flush_interval": "2s"});
        let m = metrics_from_json(&v, &current).unwrap();
        assert_eq!(m.retention.raw, Duration::from_secs(3 * 3600));
        assert_eq!(m.retention.minute, current.retention.minute);
        assert_eq!(m.write_buffer, 42);
        assert_eq!(m.flush_interval, Duration::from_secs(2));
        for (body, key) in [
            (serde_json::json!({"bogus": 1}), "metrics.bogus"),
            (
                serde_json::json!({"retention": {"weekly": "1h"}}),
                "metrics.retention.weekly",
            ),
            (
                serde_json::json!({"retention": {"raw": "1m"}}),
                "metrics.retention.raw",
            ),
            (
                serde_json::json!({"write_buffer": 0}),
                "metrics.write_buffer",
            ),
            (
                serde_json::json!({"rollup_interval": "soon"}),
                "metrics.rollup_interval",
            ),
            (serde_json::json!([1]), "metrics"),
        ] {
            let err = metrics_from_json(&body, &current).unwrap_err();
            assert_eq!(err.config_key(), Some(key), "{body}: {err}");
        }
        // The API never expands variables.
        let v = serde_json::json!({"database_path": "${HOME}/x.db"});
        let m = metrics_from_json(&v, &current).unwrap();
        assert_eq!(m.database_path, PathBuf::from("${HOME}/x.db"));
    }

    #[test]
    fn database_dir_must_be_creatable() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, "x").unwrap();
        let m = MetricsConfig {
            database_path: file.join("sub/metrics.db"),
            ..MetricsConfig::default()
        };
        assert_eq!(
            m.ensure_database_dir().unwrap_err().config_key(),
            Some("metrics.database_path")
        );
        let m = MetricsConfig {
            database_path: dir.path().join("a/b/metrics.db"),
            ..MetricsConfig::default()
        };
        m.ensure_database_dir().unwrap();
        assert!(dir.path().join("a/b").is_dir());
    }
}

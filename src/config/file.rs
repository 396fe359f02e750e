//! Finding, reading and merging the configuration file. pulse-metrics never
//! writes it: settings changed from the UI go to `settings.json`.

use super::*;
use crate::error::Error;
use std::path::Path;

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
        config.check_startable()?;
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

    /// Parses configuration text with `${VAR}` expanded from the process
    /// environment (see `expand_env`); does not validate.
    pub fn parse(text: &str, format: ConfigFormat) -> Result<Config> {
        Config::parse_with_env(text, format, |name| std::env::var(name))
    }

    /// `parse`, with `${VAR}` looked up through `env` instead of the process
    /// environment (tests pass their own variables this way).
    pub fn parse_with_env(
        text: &str,
        format: ConfigFormat,
        env: impl Fn(&str) -> std::result::Result<String, std::env::VarError> + 'static,
    ) -> Result<Config> {
        let expand = std::rc::Rc::new(move |s: &str| expand_env_with(s, &env));
        text::expanding(expand, || Config::parse_expanded(text, format))
    }

    fn parse_expanded(text: &str, format: ConfigFormat) -> Result<Config> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if is_blank(text, format) {
            return Ok(Config::default());
        }
        match format {
            ConfigFormat::Json => {
                let mut de = serde_json::Deserializer::from_str(text);
                let config: Config = serde_path_to_error::deserialize(&mut de).map_err(|e| {
                    let inner = e.inner();
                    if inner.is_syntax() || inner.is_eof() {
                        Error::config("(file)", format!("invalid JSON: {inner}"))
                    } else {
                        key_error("", &e.path().to_string(), inner.to_string())
                    }
                })?;
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
    expand_env_with(s, &|name| std::env::var(name))
}

/// `expand_env` with variables looked up through `env`.
pub fn expand_env_with(
    s: &str,
    env: &dyn Fn(&str) -> std::result::Result<String, std::env::VarError>,
) -> std::result::Result<String, String> {
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
        let value = match env(name) {
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
/// new file, never a torn one (temp file in the same directory, fsync,
/// rename, fsync of the directory). A replaced file keeps its permissions; a
/// new one is readable by its owner only.
pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
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

    /// The test's own environment: two variables set, everything else unset.
    fn test_env(name: &str) -> std::result::Result<String, std::env::VarError> {
        match name {
            "PM_TEST_SECRET" => Ok("s3cr3t".into()),
            "PM_TEST_EMPTY" => Ok(String::new()),
            _ => Err(std::env::VarError::NotPresent),
        }
    }

    #[test]
    fn expansion() {
        let expand = |s: &str| expand_env_with(s, &test_env);
        assert_eq!(expand("a${PM_TEST_SECRET}b").unwrap(), "as3cr3tb");
        assert_eq!(expand("$${PM_TEST_SECRET}").unwrap(), "${PM_TEST_SECRET}");
        assert_eq!(expand("${PM_TEST_EMPTY:-x}").unwrap(), "x");
        assert_eq!(expand("${PM_TEST_UNSET_Y:-d/e}").unwrap(), "d/e");
        assert_eq!(expand("cost $5").unwrap(), "cost $5");
        assert!(
            expand("${PM_TEST_UNSET_Y}")
                .unwrap_err()
                .contains("PM_TEST_UNSET_Y")
        );
        assert!(expand("${oops").is_err());
        assert!(expand("${a b}").is_err());
        let yaml = |text: &str| Config::parse_with_env(text, ConfigFormat::Yaml, test_env);
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

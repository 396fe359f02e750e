//! The `export` section: Prometheus remote-write targets, and the rules of
//! their keys (each error names its dotted key).

use super::*;
use crate::error::Error;
use std::collections::BTreeMap;

/// `export`: where accepted points are sent besides the local store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ExportConfig {
    #[serde(deserialize_with = "text::or_default")]
    pub remote_write: Vec<RemoteWriteTarget>,
}

/// One Prometheus remote-write 1.0 receiver (VictoriaMetrics, Mimir,
/// Thanos Receive, Cortex, Prometheus).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RemoteWriteTarget {
    /// Names the target in health and logs and keys its position in the
    /// raw journal: renaming a target starts it again from the oldest
    /// point the journal holds. Default: `remote` then `remote2`, ... by
    /// position.
    #[serde(deserialize_with = "text::string")]
    pub name: String,
    /// The remote-write endpoint, e.g.
    /// `http://vminsert:8480/insert/0/prometheus/api/v1/write`.
    #[serde(deserialize_with = "text::string")]
    pub url: String,
    /// The engine's Prometheus query API base (`.../api/v1/query_range` is
    /// appended), used to answer reads when `metrics.backend` is `remote`.
    #[serde(deserialize_with = "text::string")]
    pub query_url: String,
    #[serde(deserialize_with = "text::string")]
    pub bearer_token: String,
    #[serde(deserialize_with = "text::or_default")]
    pub basic_auth: BasicAuth,
    /// Extra request headers (a tenant: `X-Scope-OrgID` for Mimir).
    #[serde(deserialize_with = "text::or_default")]
    pub headers: BTreeMap<String, String>,
    #[serde(deserialize_with = "text::or_default")]
    pub tls: TlsConfig,
    /// Most points per request.
    #[serde(deserialize_with = "text::count")]
    pub batch_size: usize,
    /// Longest wait for one request.
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    /// Prefix of every metric name (`pulse_` makes `cpu` `pulse_cpu`).
    #[serde(deserialize_with = "text::string")]
    pub metric_prefix: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct BasicAuth {
    #[serde(deserialize_with = "text::string")]
    pub username: String,
    #[serde(deserialize_with = "text::string")]
    pub password: String,
}

/// How an https target's certificate is checked: the system roots, a CA
/// file, or a pinned SHA-256 fingerprint (as for Proxmox).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(deserialize_with = "text::path")]
    pub ca_file: PathBuf,
    #[serde(deserialize_with = "text::string")]
    pub fingerprint: String,
    #[serde(deserialize_with = "text::boolean")]
    pub insecure_skip_verify: bool,
}

/// Default and limits of `batch_size` and `timeout`.
pub const DEFAULT_BATCH_SIZE: usize = 5_000;
pub const MAX_BATCH_SIZE: usize = 100_000;
const MIN_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_TIMEOUT: Duration = Duration::from_secs(300);

impl Default for RemoteWriteTarget {
    fn default() -> Self {
        RemoteWriteTarget {
            name: String::new(),
            url: String::new(),
            query_url: String::new(),
            bearer_token: String::new(),
            basic_auth: BasicAuth::default(),
            headers: BTreeMap::new(),
            tls: TlsConfig::default(),
            batch_size: DEFAULT_BATCH_SIZE,
            timeout: Duration::from_secs(30),
            metric_prefix: "pulse_".into(),
        }
    }
}

impl RemoteWriteTarget {
    /// The name in effect: `name`, else `remote`, `remote2`, ... by
    /// position (`index` from 0).
    pub fn name_at(&self, index: usize) -> String {
        match (self.name.as_str(), index) {
            ("", 0) => "remote".into(),
            ("", i) => format!("remote{}", i + 1),
            (n, _) => n.to_string(),
        }
    }
}

impl ExportConfig {
    /// Every target's rules; `metrics` is the section they read from.
    pub fn validate(&self, metrics: &MetricsConfig) -> Result<()> {
        let mut names = std::collections::HashSet::new();
        if !self.remote_write.is_empty() && !metrics.enabled {
            return Err(Error::config(
                "export.remote_write",
                "needs metrics.enabled: true: the raw journal on disk is what is sent, and what is resent after an outage",
            ));
        }
        if metrics.backend == pulse_metrics_store::Backend::Remote
            && !self.remote_write.iter().any(|t| !t.query_url.is_empty())
        {
            return Err(Error::config(
                "metrics.backend",
                "remote needs an export.remote_write target with a query_url (the engine's Prometheus query API, e.g. http://vmselect:8481/select/0/prometheus)",
            ));
        }
        for (i, t) in self.remote_write.iter().enumerate() {
            let key = |k: &str| format!("export.remote_write[{i}].{k}");
            let name = t.name_at(i);
            let name_ok = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !name_ok {
                return Err(Error::config(
                    key("name"),
                    format!("{name:?}: 1-64 characters of A-Z, a-z, 0-9, '_', '.', '-'"),
                ));
            }
            if !names.insert(name.clone()) {
                return Err(Error::config(
                    key("name"),
                    format!("{name:?} is used by another target; names must be unique"),
                ));
            }
            check_http_url(
                &t.url,
                "http://vminsert:8480/insert/0/prometheus/api/v1/write",
            )
            .map_err(|m| Error::config(key("url"), m))?;
            if !t.query_url.is_empty() {
                check_http_url(&t.query_url, "http://vmselect:8481/select/0/prometheus")
                    .map_err(|m| Error::config(key("query_url"), m))?;
            }
            if t.bearer_token.chars().any(|c| c.is_control()) {
                return Err(Error::config(
                    key("bearer_token"),
                    "must not contain control characters",
                ));
            }
            if !t.bearer_token.is_empty() && !t.basic_auth.username.is_empty() {
                return Err(Error::config(
                    key("basic_auth"),
                    "give either bearer_token or basic_auth, not both",
                ));
            }
            if t.basic_auth.username.is_empty() != t.basic_auth.password.is_empty() {
                return Err(Error::config(
                    key("basic_auth"),
                    "username and password go together",
                ));
            }
            for (h, v) in &t.headers {
                let hk = key(&format!("headers.{h}"));
                let name = reqwest::header::HeaderName::from_bytes(h.as_bytes())
                    .map_err(|_| Error::config(hk.clone(), "not a valid HTTP header name"))?;
                if reqwest::header::HeaderValue::from_str(v).is_err() {
                    return Err(Error::config(hk, "not a valid HTTP header value"));
                }
                let reserved = [
                    "content-type",
                    "content-encoding",
                    "content-length",
                    "host",
                    "x-prometheus-remote-write-version",
                ];
                if reserved.contains(&name.as_str()) {
                    return Err(Error::config(
                        hk,
                        "is set by pulse-metrics itself and cannot be overridden",
                    ));
                }
            }
            if !t.tls.fingerprint.is_empty() {
                crate::tls::parse_fingerprint(&t.tls.fingerprint)
                    .map_err(|m| Error::config(key("tls.fingerprint"), m))?;
            }
            let tls_set = [
                !t.tls.ca_file.as_os_str().is_empty(),
                !t.tls.fingerprint.is_empty(),
                t.tls.insecure_skip_verify,
            ];
            if tls_set.iter().filter(|b| **b).count() > 1 {
                return Err(Error::config(
                    key("tls"),
                    "give one of ca_file, fingerprint and insecure_skip_verify",
                ));
            }
            if !t.tls.ca_file.as_os_str().is_empty() {
                crate::tls::ca_file_roots(&t.tls.ca_file)
                    .map_err(|m| Error::config(key("tls.ca_file"), m))?;
            }
            if t.batch_size == 0 || t.batch_size > MAX_BATCH_SIZE {
                return Err(Error::config(
                    key("batch_size"),
                    format!(
                        "must be between 1 and {MAX_BATCH_SIZE} points, got {}",
                        t.batch_size
                    ),
                ));
            }
            pulse_metrics_store::config::check_range(
                &key("timeout"),
                t.timeout,
                MIN_TIMEOUT,
                MAX_TIMEOUT,
            )?;
            let p = &t.metric_prefix;
            let prefix_ok = p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !p.starts_with(|c: char| c.is_ascii_digit());
            if !prefix_ok {
                return Err(Error::config(
                    key("metric_prefix"),
                    format!(
                        "{p:?}: only A-Z, a-z, 0-9 and '_', not starting with a digit (a Prometheus metric name)"
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn check_http_url(url: &str, example: &str) -> std::result::Result<(), String> {
    if url.is_empty() {
        return Err(format!("must not be empty (e.g. {example})"));
    }
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| format!("{url:?} is not a URL ({e}); write e.g. {example}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("{url:?} must start with http:// or https://"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{url:?} has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!(
            "{url:?} carries credentials; put them in basic_auth, which is kept out of logs"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Result<Config> {
        let c = Config::parse(text, ConfigFormat::Yaml)?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn targets_parse_with_defaults() {
        let c = yaml(
            "export:\n  remote_write:\n    - url: http://vm:8428/api/v1/write\n    - name: mimir\n      url: https://mimir/api/v1/push\n      headers: {X-Scope-OrgID: \"pulse\"}\n      basic_auth: {username: u, password: p}\n      timeout: 10s\n",
        )
        .unwrap();
        let t = &c.export.remote_write;
        assert_eq!(t[0].name_at(0), "remote");
        assert_eq!(t[0].batch_size, DEFAULT_BATCH_SIZE);
        assert_eq!(t[0].metric_prefix, "pulse_");
        assert_eq!(t[1].name_at(1), "mimir");
        assert_eq!(t[1].headers["X-Scope-OrgID"], "pulse");
        assert_eq!(t[1].timeout, Duration::from_secs(10));
    }

    #[test]
    fn every_bad_key_is_named() {
        let base = "export:\n  remote_write:\n    - url: http://vm:8428/api/v1/write\n";
        for (extra, key) in [
            ("      urll: x\n", "export.remote_write[0].urll"),
            ("      batch_size: 0\n", "export.remote_write[0].batch_size"),
            ("      timeout: 0s\n", "export.remote_write[0].timeout"),
            (
                "      metric_prefix: \"9x\"\n",
                "export.remote_write[0].metric_prefix",
            ),
            ("      name: \"a b\"\n", "export.remote_write[0].name"),
            (
                "      tls: {fingerprint: \"AB:CD\"}\n",
                "export.remote_write[0].tls.fingerprint",
            ),
            (
                "      tls: {ca_file: /nonexistent/ca.pem}\n",
                "export.remote_write[0].tls.ca_file",
            ),
            (
                "      headers: {\"bad header\": x}\n",
                "export.remote_write[0].headers.bad header",
            ),
            (
                "      headers: {Content-Type: x}\n",
                "export.remote_write[0].headers.Content-Type",
            ),
            (
                "      basic_auth: {username: u}\n",
                "export.remote_write[0].basic_auth",
            ),
            (
                "      bearer_token: t\n      basic_auth: {username: u, password: p}\n",
                "export.remote_write[0].basic_auth",
            ),
            (
                "      query_url: ftp://x\n",
                "export.remote_write[0].query_url",
            ),
        ] {
            let err = yaml(&format!("{base}{extra}")).unwrap_err();
            assert_eq!(err.config_key(), Some(key), "{extra}: {err}");
        }
        for (text, key) in [
            (
                "export:\n  remote_write:\n    - url: vm:8428\n",
                "export.remote_write[0].url",
            ),
            (
                "export:\n  remote_write:\n    - url: http://u:p@vm/w\n",
                "export.remote_write[0].url",
            ),
            (
                "export:\n  remote_write:\n    - {name: a, url: \"http://a/w\"}\n    - {name: a, url: \"http://b/w\"}\n",
                "export.remote_write[1].name",
            ),
            (
                "metrics:\n  enabled: false\nexport:\n  remote_write:\n    - url: http://vm/w\n",
                "export.remote_write",
            ),
        ] {
            let err = yaml(text).unwrap_err();
            assert_eq!(err.config_key(), Some(key), "{text}: {err}");
        }
    }
}

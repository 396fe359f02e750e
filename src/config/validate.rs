//! The rules of every section; each error names the dotted key at fault.

use super::*;
use crate::error::Error;

use pulse_metrics_store::config::check_range;

const HOUR: Duration = Duration::from_secs(3600);

impl Config {
    /// Checks every section; the error names the first key at fault.
    pub fn validate(&self) -> Result<()> {
        self.metrics.validate()?;
        self.server.validate()?;
        self.collectors.validate()?;
        self.ingest.influx.validate()?;
        self.export.validate(&self.metrics)
    }

    /// Every check a start makes before it opens the store: [`validate`],
    /// and a database directory that exists (it is created) and is
    /// writable. A settings change runs this too, on what the next start
    /// would build, so nothing is saved that the next start would refuse.
    ///
    /// [`validate`]: Config::validate
    pub fn check_startable(&self) -> Result<()> {
        self.validate()?;
        self.metrics.ensure_database_dir()
    }
}

impl InfluxConfig {
    /// `udp` empty or `host:port`; `udp_instance` a valid instance name.
    pub fn validate(&self) -> Result<()> {
        if !self.udp.is_empty() {
            check_listen(&self.udp).map_err(|m| Error::config("ingest.influx.udp", m))?;
        }
        super::rules::push_instance(&self.udp_instance)
            .map_err(|m| Error::config("ingest.influx.udp_instance", m))
    }
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
        for (i, host) in self.allowed_hosts.iter().enumerate() {
            if super::rules::HostName::parse(host).is_none() {
                return Err(Error::config(
                    format!("server.allowed_hosts[{i}]"),
                    format!(
                        "{host:?} is not a host name or IP address, optionally with :port (e.g. metrics.example.com or metrics.example.com:443); no scheme or path"
                    ),
                ));
            }
        }
        check_range(
            "server.header_read_timeout",
            self.header_read_timeout,
            Duration::from_secs(1),
            Duration::from_secs(300),
        )?;
        check_range(
            "server.idle_timeout",
            self.idle_timeout,
            Duration::from_secs(1),
            HOUR,
        )?;
        check_range(
            "server.request_timeout",
            self.request_timeout,
            Duration::from_secs(5),
            HOUR,
        )?;
        check_count("server.max_connections", self.max_connections, 8, 1_000_000)?;
        check_count(
            "server.max_answer_points",
            self.max_answer_points,
            1_000,
            1_000_000_000,
        )?;
        check_count("server.max_heavy_reads", self.max_heavy_reads, 1, 256)
    }
}

fn check_count(key: &str, value: usize, min: usize, max: usize) -> Result<()> {
    if value < min || value > max {
        return Err(Error::config(
            key,
            format!("must be between {min} and {max}, got {value}"),
        ));
    }
    Ok(())
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
    /// https URL, a token (when enabled) and a well-formed fingerprint.
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
            super::rules::proxmox_fields(inst, p.enabled)
                .map_err(|(field, m)| Error::config(key(field), m))?;
            if !names.insert(inst.name.as_str()) {
                return Err(Error::config(
                    key("name"),
                    format!(
                        "{:?} is used by another instance; names must be unique",
                        inst.name
                    ),
                ));
            }
        }
        Ok(())
    }
}

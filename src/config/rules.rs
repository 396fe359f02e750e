//! Rules the configuration checks at startup and the parts of the service
//! that use the settings apply again: one home for each, so a setting the
//! validation accepts is one the service can use, with the same words.
//! Below the collectors, `influx` and `server` (which use them), above the
//! store and `tls` only.

use super::ProxmoxInstance;
use crate::model::SeriesKey;
use crate::tls;
use std::net::IpAddr;

/// A Proxmox instance's settings, each by its own rule (with `enabled`,
/// the token is required); the error names the field at fault. Config
/// validation and the collector both use it: one rule, one wording.
pub fn proxmox_fields(
    instance: &ProxmoxInstance,
    enabled: bool,
) -> Result<(), (&'static str, String)> {
    fields(instance, enabled).map(|_| ())
}

/// A setting at fault: its field, and what is wrong with it.
type FieldError = (&'static str, String);

/// `proxmox_fields`, keeping what the checks computed: the endpoint and
/// the pinned fingerprint.
fn fields(
    instance: &ProxmoxInstance,
    enabled: bool,
) -> Result<(String, Option<[u8; 32]>), FieldError> {
    instance_name(&instance.name).map_err(|m| ("name", m))?;
    let endpoint = endpoint(&instance.url).map_err(|m| ("url", m))?;
    let token_id = instance.token_id.trim();
    let secret = instance.token_secret.trim();
    if enabled && token_id.is_empty() {
        return Err((
            "token_id",
            "must not be empty when proxmox is enabled (e.g. root@pam!pulse)".into(),
        ));
    }
    if !token_id.is_empty() && !token_id.contains('!') {
        return Err((
            "token_id",
            format!("{token_id:?} is not an API token id (write user@realm!tokenid)"),
        ));
    }
    if enabled && secret.is_empty() {
        return Err((
            "token_secret",
            "must not be empty when proxmox is enabled".into(),
        ));
    }
    // They travel in the Authorization header.
    let header_safe = |t: &str| t.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f));
    for (field, text) in [("token_id", token_id), ("token_secret", secret)] {
        if !header_safe(text) {
            return Err((
                field,
                "contains characters not allowed in an HTTP header".into(),
            ));
        }
    }
    let pin = match instance.fingerprint.trim() {
        "" => None,
        text => Some(tls::parse_fingerprint(text).map_err(|e| ("fingerprint", e))?),
    };
    Ok((endpoint, pin))
}

/// What a Proxmox instance's settings come to, checked.
pub(crate) struct Checked {
    pub endpoint: String,
    pub auth: reqwest::header::HeaderValue,
    pub pin: Option<[u8; 32]>,
}

/// The instance as the collector uses it, by the rules of `proxmox_fields`
/// (the message starts with the field at fault).
pub(crate) fn proxmox_instance(instance: &ProxmoxInstance) -> Result<Checked, String> {
    let (endpoint, pin) = fields(instance, true).map_err(|(field, m)| format!("`{field}`: {m}"))?;
    let token_id = instance.token_id.trim();
    let auth = reqwest::header::HeaderValue::from_str(&format!(
        "PVEAPIToken={token_id}={}",
        instance.token_secret.trim()
    ))
    .map_err(|_| {
        "`token_id` or `token_secret` contains characters not allowed in an HTTP header".to_string()
    })?;
    Ok(Checked {
        endpoint,
        auth,
        pin,
    })
}

/// A cluster's base URL, as written.
fn check_url(url: &str) -> std::result::Result<(), String> {
    if url.is_empty() {
        return Err("must not be empty (e.g. https://pve1:8006)".into());
    }
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| format!("{url:?} is not a URL ({e}); write e.g. https://pve1:8006"))?;
    if parsed.scheme() != "https" {
        return Err(format!(
            "{url:?} must start with https:// (the API token must not travel in clear)"
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{url:?} has no host"));
    }
    Ok(())
}

/// `https://host:8006` (a trailing `/` or `/api2/json` tolerated) ->
/// the cluster/resources endpoint.
pub(crate) fn endpoint(url: &str) -> Result<String, String> {
    check_url(url)?;
    let trimmed = url.trim().trim_end_matches('/');
    let base = trimmed
        .strip_suffix("/api2/json")
        .unwrap_or(trimmed)
        .trim_end_matches('/');
    let endpoint = format!("{base}/api2/json/cluster/resources");
    let parsed = reqwest::Url::parse(&endpoint)
        .map_err(|e| format!("`url` {url:?} is not a valid URL ({e})"))?;
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!(
            "`url` {url:?} must not have a query or fragment; give the cluster's base URL such as https://pve1:8006"
        ));
    }
    Ok(parsed.to_string())
}

/// An instance name (a Proxmox instance's `name`, a pushed db / bucket):
/// it prefixes every series id, so a cluster can be both polled and pushed
/// under one name.
pub fn instance_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty: it prefixes every series id".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "{name:?} holds {c:?}; only A-Z, a-z, 0-9, '_', '.' and '-' are allowed (it prefixes every series id)"
        ));
    }
    if name.len() > 64 {
        return Err(format!("{name:?} is longer than 64 bytes"));
    }
    SeriesKey::new("node", format!("{name}:node"), "cpu")
        .validate()
        .map_err(|e| format!("{name:?} cannot prefix a series id ({e})"))
}

/// A db / bucket name pushed in line protocol, as an instance name.
pub fn push_instance(name: &str) -> Result<(), String> {
    instance_name(name).map_err(|m| format!("the instance name (db / bucket) {m}"))
}

/// A host as written in `Host`, an `Origin` or `server.allowed_hosts`:
/// lower-cased name or IP (IPv6 without brackets), and the port if given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostName {
    pub host: String,
    pub port: Option<u16>,
}

impl HostName {
    /// `name`, `name:port`, `1.2.3.4[:port]`, `[::1][:port]`; None for
    /// anything else (schemes, paths, user info, empty labels).
    pub fn parse(s: &str) -> Option<HostName> {
        let s = s.trim();
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (ip, after) = rest.split_once(']')?;
            ip.parse::<std::net::Ipv6Addr>().ok()?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':')?.parse::<u16>().ok()?),
            };
            (ip.to_string(), port)
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p.parse::<u16>().ok()?)),
                None => (s.to_string(), None),
            }
        };
        let name_ok = !host.is_empty()
            && host.len() <= 253
            && (host.parse::<IpAddr>().is_ok()
                || host.split('.').all(|l| {
                    !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                }));
        name_ok.then(|| HostName {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    pub(crate) fn is_ip(&self) -> bool {
        self.host.parse::<IpAddr>().is_ok()
    }

    /// Whether `self` (an allow-list entry) covers `other`: same name, and
    /// the same port when the entry names one.
    pub(crate) fn covers(&self, other: &HostName) -> bool {
        self.host == other.host && self.port.is_none_or(|p| other.port == Some(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_tolerates_slashes_and_api_suffix() {
        let want = "https://pve1:8006/api2/json/cluster/resources";
        for url in [
            "https://pve1:8006",
            "https://pve1:8006/",
            " https://pve1:8006// ",
            "https://pve1:8006/api2/json",
            "https://pve1:8006/api2/json/",
        ] {
            assert_eq!(endpoint(url).unwrap(), want, "{url}");
        }
        assert_eq!(
            endpoint("https://proxy.example/pve").unwrap(),
            "https://proxy.example/pve/api2/json/cluster/resources"
        );
        assert!(endpoint("http://pve1:8006").unwrap_err().contains("https"));
        assert!(endpoint("pve1:8006").is_err());
        assert!(endpoint("").is_err());
        assert!(endpoint("https://pve1:8006/?a=b").is_err());
    }
}

//! One target's HTTP side: the client (auth, extra headers, TLS as the
//! Proxmox collector does it, timeout) and what a send's answer means.

use crate::config::RemoteWriteTarget;
use crate::tls::{self, Trust};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::time::Duration;

/// What became of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// A 4xx other than 429: the engine refuses these samples and will
    /// refuse them again; they are counted and skipped.
    Refused(String),
    /// 5xx, 429, a timeout or a network error: sent again after a pause
    /// (`Some`: the pause the engine asked for with `Retry-After`).
    Retry(String, Option<Duration>),
}

/// A target's client and where it sends.
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub url: reqwest::Url,
    trust: Trust,
}

impl Client {
    pub fn new(t: &RemoteWriteTarget) -> Result<Client, String> {
        let url = reqwest::Url::parse(&t.url).map_err(|e| format!("url: {e}"))?;
        let trust = if !t.tls.fingerprint.is_empty() {
            Trust::Pinned(tls::parse_fingerprint(&t.tls.fingerprint)?)
        } else if !t.tls.ca_file.as_os_str().is_empty() {
            Trust::CaFile(t.tls.ca_file.clone())
        } else if t.tls.insecure_skip_verify {
            tracing::warn!(
                "remote write {}: TLS CERTIFICATE VERIFICATION IS DISABLED (insecure_skip_verify); set tls.fingerprint or tls.ca_file instead",
                t.url
            );
            Trust::Insecure
        } else {
            Trust::SystemRoots
        };
        let mut headers = HeaderMap::new();
        for (k, v) in &t.headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("{k}: {e}"))?;
            let mut value = HeaderValue::from_str(v).map_err(|e| format!("{k}: {e}"))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let auth = if !t.bearer_token.is_empty() {
            Some(format!("Bearer {}", t.bearer_token))
        } else if !t.basic_auth.username.is_empty() {
            use base64::Engine;
            let pair = format!("{}:{}", t.basic_auth.username, t.basic_auth.password);
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            ))
        } else {
            None
        };
        if let Some(a) = auth {
            let mut v = HeaderValue::from_str(&a)
                .map_err(|_| "credentials: not sendable in a header".to_string())?;
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls::client_config(&trust)?)
            .default_headers(headers)
            .user_agent(concat!("pulse-metrics/", env!("CARGO_PKG_VERSION")))
            // A redirect could carry the credentials elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(t.timeout.min(Duration::from_secs(10)))
            .timeout(t.timeout)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Client { http, url, trust })
    }

    /// Sends one encoded `WriteRequest`.
    pub async fn send(&self, body: Vec<u8>) -> Outcome {
        let sent = self
            .http
            .post(self.url.clone())
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(body)
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => return Outcome::Retry(self.describe(&e), None),
        };
        let status = resp.status();
        if status.is_success() {
            return Outcome::Sent;
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = resp.text().await.unwrap_or_default();
        let text: String = text.trim().chars().take(300).collect();
        let message = format!("HTTP {status}: {text}");
        if status.as_u16() == 429 || status.is_server_error() {
            Outcome::Retry(message, retry_after)
        } else {
            Outcome::Refused(message)
        }
    }

    /// A request failure in words; TLS failures name the fingerprints.
    pub fn describe(&self, e: &reqwest::Error) -> String {
        if let Some(t) = tls::find_tls_error(e) {
            return tls::describe_tls_error(t, &self.trust);
        }
        if e.is_timeout() {
            return "timed out".into();
        }
        if e.is_connect() {
            return format!("cannot connect: {}", root_cause(e));
        }
        format!("request failed: {}", root_cause(e))
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        last = s.to_string();
        next = s.source();
    }
    last
}

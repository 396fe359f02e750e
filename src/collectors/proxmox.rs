//! Proxmox VE collector: polls `GET /api2/json/cluster/resources` of each
//! configured cluster and records its nodes, running guests and available
//! storage, with their names, nodes and tags as metadata (ids and gaps in
//! [`parse_resources`]).
//!
//! Each cluster has its own task, HTTP client and health entry
//! (`proxmox:<name>` on the status board), so one unreachable or misconfigured
//! cluster never holds up another, the host collector or the service.
//! Failures are retried with exponential backoff and logged once per change of
//! state, not once per poll: a cluster that is down for a day must not fill the
//! log.

mod resources;
pub mod sample;
/// Shared with the remote-write client (`crate::remote`).
pub use resources::{Parsed, parse_body, parse_resources};
pub use sample::{COUNTERS, RateState};

use super::{CollectorStatus, Sink, StatusBoard};
use crate::config::{ProxmoxConfig, ProxmoxInstance};
use crate::model::{Point, now_ms};
use crate::store::Resource;
use crate::tls::{self, Trust};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Longest wait between retries of a failing cluster.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Per-request bounds. A poll should never outlive its interval by much, but
/// a TLS handshake to a busy node needs some room even at a 1 s interval.
const MIN_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_TIMEOUT: Duration = Duration::from_secs(10);
/// A zero interval would spin; nothing useful polls faster than this.
const MIN_INTERVAL: Duration = Duration::from_millis(20);
/// Thousands of guests are a few MB; anything far beyond is not Proxmox.
const MAX_BODY_BYTES: usize = 64 << 20;
/// How much of an error page is worth quoting in a status message.
const MAX_ERROR_SNIPPET: usize = 200;

/// Starts one poller per configured cluster; they stop when `shutdown`
/// turns true (or its sender is dropped). Each cluster reports on `board` as
/// `proxmox:<name>`; an instance whose settings are unusable is shown there
/// in state `error` with the reason, and is not polled.
pub fn spawn(
    config: ProxmoxConfig,
    sink: Arc<dyn Sink>,
    board: StatusBoard,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let interval = config.interval.max(MIN_INTERVAL);
    let mut pollers = Vec::new();
    let mut names = HashSet::new();
    for instance in config.instances {
        let key = board_key(&instance.name);
        if !names.insert(instance.name.clone()) {
            // Both would write the same series and share one board entry.
            tracing::error!(
                "proxmox: instance name {:?} is used twice; only the first is polled",
                instance.name
            );
            continue;
        }
        board.update(&key, |s| {
            *s = CollectorStatus::new(key.clone());
            if !config.enabled {
                s.state = crate::collectors::CollectorState::Disabled;
            }
        });
        if !config.enabled {
            continue;
        }
        match Poller::new(instance, interval) {
            Ok(poller) => pollers.push(poller),
            Err(message) => {
                tracing::error!("proxmox: {key} is not polled: {message}");
                board.update(&key, |s| {
                    s.state = crate::collectors::CollectorState::Error;
                    s.last_error = message;
                });
            }
        }
    }
    tokio::spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for poller in pollers {
            tasks.spawn(poller.run(sink.clone(), board.clone(), shutdown.clone()));
        }
        while tasks.join_next().await.is_some() {}
    })
}

fn board_key(name: &str) -> String {
    format!("proxmox:{name}")
}

/// One cluster's settings, checked once at start.
struct Poller {
    name: String,
    key: String,
    endpoint: String,
    trust: Trust,
    client: reqwest::Client,
    interval: Duration,
    timeout: Duration,
}

/// What the log last said about a cluster, so it speaks only on change.
#[derive(Debug, Clone, PartialEq)]
enum Health {
    Starting,
    Ok,
    Failing(String),
}

impl Poller {
    fn new(instance: ProxmoxInstance, interval: Duration) -> Result<Poller, String> {
        let checked = crate::config::rules::proxmox_instance(&instance)?;
        let name = instance.name;
        let endpoint = checked.endpoint;
        let mut auth = checked.auth;
        auth.set_sensitive(true);

        let trust = if let Some(pin) = checked.pin {
            if instance.insecure_skip_verify {
                tracing::warn!(
                    "proxmox {name}: `insecure_skip_verify` is ignored because `fingerprint` is set; the pinned certificate is enforced"
                );
            }
            Trust::Pinned(pin)
        } else if instance.insecure_skip_verify {
            tracing::warn!(
                "proxmox {name}: TLS CERTIFICATE VERIFICATION IS DISABLED for {endpoint} (insecure_skip_verify). \
                 Anyone on the network path can impersonate the cluster and capture the API token. \
                 Set `fingerprint` to the cluster's SHA-256 certificate fingerprint instead."
            );
            Trust::Insecure
        } else {
            Trust::SystemRoots
        };

        let timeout = interval.clamp(MIN_TIMEOUT, MAX_TIMEOUT);
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::AUTHORIZATION, auth);
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls::client_config(&trust)?)
            .default_headers(headers)
            .user_agent(concat!("pulse-metrics/", env!("CARGO_PKG_VERSION")))
            // A redirect could carry the token to another host; Proxmox
            // never redirects its API.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout)
            .timeout(timeout)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Poller {
            key: board_key(&name),
            name,
            endpoint,
            trust,
            client,
            interval,
            timeout,
        })
    }

    async fn run(
        self,
        sink: Arc<dyn Sink>,
        board: StatusBoard,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut rates = RateState::default();
        // Shared storage ids whose per-node history was merged already.
        let mut merged: HashSet<(String, String)> = HashSet::new();
        let mut health = Health::Starting;
        let mut failures: u32 = 0;
        let mut warned_empty = false;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let started = Instant::now();
            let attempt_ms = now_ms();
            let fetched = tokio::select! {
                r = tokio::time::timeout(self.timeout, self.fetch()) => {
                    r.unwrap_or_else(|_| Err(self.timeout_message()))
                }
                _ = stop_requested(&mut shutdown) => break,
            };
            let sample_ms = now_ms();
            let outcome = match fetched
                .and_then(|body| parse_body(&self.name, &body, &rates, sample_ms))
            {
                Ok(parsed) => {
                    rates = parsed.state;
                    if parsed.skipped > 0 {
                        tracing::debug!(
                            "proxmox {}: {} entries without a usable node/vmid/storage name were skipped",
                            self.name,
                            parsed.skipped
                        );
                    }
                    if parsed.listed == 0 && !warned_empty {
                        tracing::warn!(
                            "proxmox {}: the cluster lists no resources; an API token with privilege separation needs the PVEAuditor role on / (see docs/proxmox.md)",
                            self.name
                        );
                    }
                    warned_empty = parsed.listed == 0;
                    let recorded = parsed.recorded;
                    let merges: Vec<(String, String, String)> = parsed
                        .merges
                        .into_iter()
                        .filter(|(_, old, new)| !merged.contains(&(old.clone(), new.clone())))
                        .collect();
                    match merge(&sink, merges).await {
                        Ok(done) => {
                            merged.extend(done);
                            write(&sink, parsed.points, parsed.resources)
                                .await
                                .map(|n| (n, recorded))
                        }
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };

            let insecure = self.trust == Trust::Insecure;
            board.update(&self.key, |s| {
                s.last_attempt = attempt_ms;
                match &outcome {
                    Ok((written, _)) => {
                        s.state = if insecure {
                            crate::collectors::CollectorState::Insecure
                        } else {
                            crate::collectors::CollectorState::Ok
                        };
                        s.last_success = sample_ms;
                        s.last_error.clear();
                        s.consecutive_failures = 0;
                        s.points_written = s.points_written.saturating_add(*written as u64);
                    }
                    Err(message) => {
                        s.state = crate::collectors::CollectorState::Error;
                        s.last_error = message.clone();
                        s.consecutive_failures = s.consecutive_failures.saturating_add(1);
                        s.errors = s.errors.saturating_add(1);
                    }
                }
            });

            let delay = match outcome {
                Ok((_, resources)) => {
                    self.log_ok(&health, resources, failures);
                    health = Health::Ok;
                    failures = 0;
                    self.interval.saturating_sub(started.elapsed())
                }
                Err(message) => {
                    failures = failures.saturating_add(1);
                    let delay = backoff(self.interval, failures);
                    if health != Health::Failing(message.clone()) {
                        tracing::warn!(
                            "proxmox {}: {message} (retrying in {})",
                            self.name,
                            humantime::format_duration(round_ms(delay))
                        );
                    }
                    health = Health::Failing(message);
                    delay
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop_requested(&mut shutdown) => break,
            }
        }
        tracing::debug!("proxmox {}: stopped", self.name);
    }

    fn log_ok(&self, before: &Health, resources: usize, failures: u32) {
        match before {
            Health::Starting => tracing::info!(
                "proxmox {}: polling {} every {} ({resources} resources up)",
                self.name,
                self.endpoint,
                humantime::format_duration(self.interval)
            ),
            Health::Failing(last) => tracing::info!(
                "proxmox {}: recovered after {failures} failed poll(s) (last error: {last})",
                self.name
            ),
            Health::Ok => {}
        }
    }

    fn timeout_message(&self) -> String {
        format!(
            "no answer from {} within {}",
            self.endpoint,
            humantime::format_duration(self.timeout)
        )
    }

    /// One request; the body of a successful answer, or why there is none.
    async fn fetch(&self) -> Result<Vec<u8>, String> {
        let mut response = self
            .client
            .get(&self.endpoint)
            .send()
            .await
            .map_err(|e| self.describe(&e))?;
        let status = response.status();
        if !status.is_success() {
            let mut snippet = Vec::new();
            // The body only adds detail to the message; its failure is moot.
            while let Ok(Some(chunk)) = response.chunk().await {
                snippet.extend_from_slice(&chunk);
                if snippet.len() >= MAX_ERROR_SNIPPET {
                    break;
                }
            }
            return Err(http_error(status, &snippet));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_BODY_BYTES as u64)
        {
            return Err(format!(
                "answer too large ({} bytes, at most {MAX_BODY_BYTES})",
                response.content_length().unwrap_or_default()
            ));
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_BODY_BYTES {
                        return Err(format!(
                            "answer too large (more than {MAX_BODY_BYTES} bytes)"
                        ));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body),
                Err(e) => return Err(format!("reading the answer failed: {}", self.describe(&e))),
            }
        }
    }

    fn describe(&self, e: &reqwest::Error) -> String {
        if let Some(tls_error) = tls::find_tls_error(e) {
            return tls::describe_tls_error(tls_error, &self.trust);
        }
        if e.is_timeout() {
            return self.timeout_message();
        }
        if e.is_connect() {
            return format!("cannot connect to {}: {}", self.endpoint, root_cause(e));
        }
        format!("request to {} failed: {}", self.endpoint, root_cause(e))
    }
}

fn http_error(status: reqwest::StatusCode, body: &[u8]) -> String {
    match status.as_u16() {
        401 => "authentication failed (HTTP 401): check `token_id` and `token_secret`".into(),
        403 => "permission denied (HTTP 403): the API token needs the PVEAuditor role on / (see docs/proxmox.md)".into(),
        _ => {
            let text: String = String::from_utf8_lossy(body)
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(MAX_ERROR_SNIPPET)
                .collect();
            let text = text.trim();
            if text.is_empty() {
                format!("HTTP {status}")
            } else {
                format!("HTTP {status}: {text}")
            }
        }
    }
}

/// The innermost cause, which is what an operator can act on ("Connection
/// refused", "failed to lookup address"); reqwest's own text only says that
/// sending failed.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        last = cause.to_string();
        next = match cause.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as _),
            None => cause.source(),
        };
    }
    last
}

/// Writes the metadata (the store keeps only what changed), then the
/// points; returns the points written.
async fn write(
    sink: &Arc<dyn Sink>,
    points: Vec<Point>,
    resources: Vec<Resource>,
) -> Result<usize, String> {
    let sink = sink.clone();
    // The sink may block (a store flushing to disk); keep that off the
    // runtime's worker threads.
    let done = tokio::task::spawn_blocking(move || {
        sink.write_resources(&resources)
            .map_err(|e| format!("the store refused the resource metadata: {e}"))?;
        if points.is_empty() {
            return Ok(0);
        }
        sink.write(&points)
            .map_err(|e| format!("the store refused the points: {e}"))
    })
    .await;
    done.unwrap_or_else(|e| Err(format!("writing to the store failed: {e}")))
}

/// Merges the per-node history of shared storage into its one series,
/// before its first points are written; returns the merges done.
async fn merge(
    sink: &Arc<dyn Sink>,
    merges: Vec<(String, String, String)>,
) -> Result<Vec<(String, String)>, String> {
    if merges.is_empty() {
        return Ok(Vec::new());
    }
    let sink = sink.clone();
    let done = tokio::task::spawn_blocking(move || {
        let mut done = Vec::new();
        for (resource_type, old, new) in merges {
            let n = sink
                .merge_resource(&resource_type, &old, &new)
                .map_err(|e| format!("merging the history of {old} into {new} failed: {e}"))?;
            if n > 0 {
                tracing::info!("proxmox: shared storage {new} continues the history of {old}");
            }
            done.push((old, new));
        }
        Ok(done)
    })
    .await;
    done.unwrap_or_else(|e| Err(format!("writing to the store failed: {e}")))
}

/// Doubles per consecutive failure, from twice the interval up to
/// `MAX_BACKOFF` (or the interval itself, if that is longer).
fn backoff(interval: Duration, failures: u32) -> Duration {
    let cap = MAX_BACKOFF.max(interval);
    let factor = 1u32 << failures.min(16);
    interval.saturating_mul(factor).min(cap)
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis().try_into().unwrap_or(u64::MAX))
}

async fn stop_requested(shutdown: &mut watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let s = Duration::from_secs;
        assert_eq!(backoff(s(10), 1), s(20));
        assert_eq!(backoff(s(10), 2), s(40));
        assert_eq!(backoff(s(10), 5), s(300));
        assert_eq!(backoff(s(10), u32::MAX), s(300));
        assert_eq!(backoff(s(600), 3), s(600));
    }

    #[test]
    fn http_errors_say_what_to_fix() {
        let s = |c| reqwest::StatusCode::from_u16(c).unwrap();
        assert!(http_error(s(401), b"").contains("token_secret"));
        assert!(http_error(s(403), b"").contains("PVEAuditor"));
        let m = http_error(s(500), b"boom\n\x00 more");
        assert_eq!(m, "HTTP 500 Internal Server Error: boom   more");
        assert_eq!(
            http_error(s(502), &[b'x'; 1000]).len(),
            "HTTP 502 Bad Gateway: ".len() + MAX_ERROR_SNIPPET
        );
    }

    fn instance() -> ProxmoxInstance {
        ProxmoxInstance {
            name: "pve1".into(),
            url: "https://pve1:8006".into(),
            token_id: "root@pam!pulse".into(),
            token_secret: "secret".into(),
            fingerprint: String::new(),
            insecure_skip_verify: false,
        }
    }

    #[test]
    fn unusable_settings_are_refused_with_the_key() {
        let i = Duration::from_secs(10);
        assert!(Poller::new(instance(), i).is_ok());
        assert_eq!(
            crate::config::rules::proxmox_fields(&instance(), true),
            Ok(())
        );
        type Change = fn(&mut ProxmoxInstance);
        let cases: [(Change, &str); 7] = [
            (|c| c.name.clear(), "`name`"),
            (|c| c.name = "a\u{7}".into(), "`name`"),
            (|c| c.url = "http://pve1".into(), "`url`"),
            (|c| c.token_id = "root@pam".into(), "`token_id`"),
            (|c| c.token_secret.clear(), "`token_secret`"),
            (|c| c.token_secret = "a\nb".into(), "HTTP header"),
            (|c| c.fingerprint = "12:34".into(), "fingerprint"),
        ];
        for (change, needle) in cases {
            let mut c = instance();
            change(&mut c);
            // Config validation refuses it for the same field, in the same words.
            let (field, message) = crate::config::rules::proxmox_fields(&c, true).unwrap_err();
            assert_eq!(
                Poller::new(c.clone(), i).err(),
                Some(format!("`{field}`: {message}"))
            );
            let err = Poller::new(c, i).err().expect("refused");
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn timeout_follows_the_interval_within_bounds() {
        let p = Poller::new(instance(), Duration::from_millis(100))
            .ok()
            .unwrap();
        assert_eq!(p.timeout, MIN_TIMEOUT);
        let p = Poller::new(instance(), Duration::from_secs(5))
            .ok()
            .unwrap();
        assert_eq!(p.timeout, Duration::from_secs(5));
        let p = Poller::new(instance(), Duration::from_secs(60))
            .ok()
            .unwrap();
        assert_eq!(p.timeout, MAX_TIMEOUT);
    }
}

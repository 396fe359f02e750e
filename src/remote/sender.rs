//! The exporter: one task per target reads the raw journal from the
//! target's cursor, sends the points as remote-write requests, and moves
//! the cursor on only when the engine has answered 2xx (at least once: a
//! restart or an outage sends the unacknowledged requests again). A 5xx, a
//! 429 or a network error is retried with a growing pause (1 s to 1 min, or
//! what `Retry-After` asks); any other 4xx is counted and skipped, since the
//! engine would refuse the same samples forever.
//!
//! Cursors are saved in the raw journal (`Store::save_cursors`) at most
//! every [`SAVE_EVERY`] and at shutdown: a kill -9 resends at most that
//! much.

use super::client::{Client, Outcome};
use super::health::{RemoteHealth, stamped};
use super::mapping;
use super::proto::{Label, Sample, TimeSeries, WriteRequest};
use crate::config::RemoteWriteTarget;
use crate::store::{Cursors, JournalTail, Store, TailRead};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Longest a cursor change waits before it is saved.
pub const SAVE_EVERY: Duration = Duration::from_secs(10);
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Pause when there is nothing new to send.
const IDLE: Duration = Duration::from_millis(500);
/// How often the backlog figure is recomputed from the journal.
const BACKLOG_EVERY: Duration = Duration::from_secs(5);
/// Resource metadata is checked for changes this often, and sent anyway
/// this often, so an engine that lost it (or a new one) has it again.
const INFO_CHECK_EVERY: Duration = Duration::from_secs(10);
const INFO_RESEND_EVERY: Duration = Duration::from_secs(300);

/// Starts one task per target and the cursor saver; they end when `stop`
/// turns true (the saver saves a last time).
pub fn spawn(
    store: Store,
    targets: &[RemoteWriteTarget],
    health: RemoteHealth,
    stop: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let saved = match store.saved_cursors() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(
                "cannot read the remote-write cursors from the raw journal: {e}; targets start from the oldest point it holds"
            );
            Cursors::new()
        }
    };
    let names: Vec<String> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| t.name_at(i))
        .collect();
    // Only configured targets keep a cursor.
    let cursors: Cursors = saved
        .into_iter()
        .filter(|(n, _)| names.contains(n))
        .collect();
    let cursors = Arc::new(Mutex::new(cursors));
    let mut tasks = Vec::new();
    for (t, name) in targets.iter().zip(names) {
        let target = Target {
            name: name.clone(),
            config: t.clone(),
            store: store.clone(),
            health: health.clone(),
            cursors: cursors.clone(),
        };
        health.update(&name, |h| {
            h.url = t.url.clone();
            h.cursor = target.cursors.lock().get(&name).copied().unwrap_or(0);
        });
        tasks.push(tokio::spawn(target.run(stop.clone())));
    }
    tasks.push(tokio::spawn(save_loop(store, cursors, stop)));
    tasks
}

async fn save_loop(store: Store, cursors: Arc<Mutex<Cursors>>, mut stop: watch::Receiver<bool>) {
    let mut saved: Option<Cursors> = None;
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(SAVE_EVERY) => false,
            _ = stop.wait_for(|v| *v) => true,
        };
        let now = cursors.lock().clone();
        if saved.as_ref() != Some(&now) {
            let s = store.clone();
            let c = now.clone();
            match tokio::task::spawn_blocking(move || s.save_cursors(&c)).await {
                Ok(Ok(())) => saved = Some(now),
                Ok(Err(e)) => tracing::warn!("cannot save the remote-write cursors: {e}"),
                Err(e) => tracing::warn!("cursor save task failed: {e}"),
            }
        }
        if stopping {
            return;
        }
    }
}

struct Target {
    name: String,
    config: RemoteWriteTarget,
    store: Store,
    health: RemoteHealth,
    cursors: Arc<Mutex<Cursors>>,
}

/// A request read from the journal and not yet acknowledged.
struct Pending {
    body: Vec<u8>,
    last_seq: u64,
    points: u64,
    oldest_ts: Option<i64>,
}

impl Target {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let client = match Client::new(&self.config) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("remote write {}: cannot start: {e}", self.name);
                self.health.update(&self.name, |h| {
                    h.state = "error".into();
                    h.last_error = stamped(&format!("cannot start: {e}"));
                });
                return;
            }
        };
        let cursor = self.cursors.lock().get(&self.name).copied();
        let mut tail = match self.store.journal_tail(cursor) {
            Ok(t) => Some(t),
            Err(e) => {
                self.health.update(&self.name, |h| {
                    h.state = "error".into();
                    h.last_error = stamped(&format!("cannot read the raw journal: {e}"));
                });
                return;
            }
        };
        tracing::info!(
            "remote write {}: sending to {} from {}",
            self.name,
            self.config.url,
            match cursor {
                Some(c) => format!("after batch {c}"),
                None => "the oldest point the raw journal holds".into(),
            }
        );
        let mut labels: HashMap<u32, Vec<Label>> = HashMap::new();
        let mut pending: Option<Pending> = None;
        let mut backoff = MIN_BACKOFF;
        let mut backlog_at = Instant::now() - BACKLOG_EVERY;
        let mut info = InfoState::default();
        loop {
            if *stop.borrow() {
                return;
            }
            if info.due() {
                self.send_info(&client, &mut info, &mut stop).await;
            }
            if pending.is_none() {
                let (t, read) = match self.read(tail.take().expect("tail")).await {
                    Some(r) => r,
                    None => return,
                };
                tail = Some(t);
                let read = match read {
                    Ok(r) => r,
                    Err(e) => {
                        self.failing(&format!("reading the raw journal failed: {e}"), false);
                        if sleep_or_stop(&mut stop, MIN_BACKOFF).await {
                            return;
                        }
                        continue;
                    }
                };
                if let Some(gap) = read.gap {
                    tracing::error!(
                        "remote write {}: {} batches ({} points) were deleted from the raw journal before they were sent: the target was more than raw retention behind",
                        self.name,
                        gap.batches,
                        gap.points
                    );
                    self.health.update(&self.name, |h| {
                        h.skipped_batches += gap.batches;
                        h.skipped_points += gap.points;
                        h.last_error = stamped(&format!(
                            "{} batches ({} points) lost: more than raw retention behind",
                            gap.batches, gap.points
                        ));
                    });
                }
                pending = self.request(&read, &mut labels);
            }
            if backlog_at.elapsed() >= BACKLOG_EVERY {
                backlog_at = Instant::now();
                self.update_backlog(&mut tail, pending.as_ref()).await;
            }
            let Some(p) = pending.as_ref() else {
                self.health.update(&self.name, |h| {
                    if h.state != "retrying" || h.backlog_points == 0 {
                        h.state = "ok".into();
                    }
                });
                if sleep_or_stop(&mut stop, IDLE).await {
                    return;
                }
                continue;
            };
            let outcome = tokio::select! {
                o = client.send(p.body.clone()) => o,
                _ = stop.wait_for(|v| *v) => return,
            };
            match outcome {
                Outcome::Sent => {
                    let p = pending.take().expect("pending");
                    self.acknowledge(tail.as_ref().expect("tail"), p.last_seq);
                    self.health.update(&self.name, |h| {
                        h.sent_points += p.points;
                        h.last_success = crate::model::now_ms();
                        h.state = "ok".into();
                        h.backlog_points = h.backlog_points.saturating_sub(p.points);
                    });
                    backoff = MIN_BACKOFF;
                }
                Outcome::Refused(m) => {
                    let p = pending.take().expect("pending");
                    tracing::warn!(
                        "remote write {}: the engine refused {} points ({m}); they are counted and skipped",
                        self.name,
                        p.points
                    );
                    self.acknowledge(tail.as_ref().expect("tail"), p.last_seq);
                    self.health.update(&self.name, |h| {
                        h.failed_points += p.points;
                        h.last_error = stamped(&format!("{} points refused: {m}", p.points));
                        h.state = "ok".into();
                    });
                    backoff = MIN_BACKOFF;
                }
                Outcome::Retry(m, asked) => {
                    let pause = asked.unwrap_or(backoff).clamp(MIN_BACKOFF, MAX_BACKOFF);
                    self.failing(&format!("{m}; retrying in {}s", pause.as_secs()), true);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    if sleep_or_stop(&mut stop, pause).await {
                        return;
                    }
                }
            }
        }
    }

    /// Reads the next request's worth of batches off the async threads;
    /// `None` when the read task died.
    async fn read(&self, mut tail: JournalTail) -> Option<(JournalTail, crate::Result<TailRead>)> {
        let n = self.config.batch_size;
        match tokio::task::spawn_blocking(move || {
            let r = tail.read(n);
            (tail, r)
        })
        .await
        {
            Ok(r) => Some(r),
            Err(e) => {
                self.failing(&format!("the journal read task failed: {e}"), false);
                None
            }
        }
    }

    fn acknowledge(&self, tail: &JournalTail, seq: u64) {
        tail.acknowledge(seq);
        self.cursors.lock().insert(self.name.clone(), seq);
        self.health.update(&self.name, |h| h.cursor = seq);
    }

    fn failing(&self, message: &str, retrying: bool) {
        tracing::warn!("remote write {}: {message}", self.name);
        self.health.update(&self.name, |h| {
            h.last_error = stamped(message);
            if retrying {
                h.retries += 1;
                h.state = "retrying".into();
            }
        });
    }

    /// The batches read as one request: each series' samples in time
    /// order, one per millisecond (of two, the later write).
    fn request(&self, read: &TailRead, labels: &mut HashMap<u32, Vec<Label>>) -> Option<Pending> {
        let last_seq = read.batches.last()?.seq;
        let mut by_series: HashMap<u32, Vec<Sample>> = HashMap::new();
        let mut points = 0u64;
        let mut oldest_ts: Option<i64> = None;
        for b in &read.batches {
            for p in &b.points {
                by_series.entry(p.sid).or_default().push(Sample {
                    value: p.value,
                    timestamp: p.ts,
                });
                points += 1;
                oldest_ts = Some(oldest_ts.map_or(p.ts, |t| t.min(p.ts)));
            }
        }
        let missing: Vec<u32> = by_series
            .keys()
            .copied()
            .filter(|sid| !labels.contains_key(sid))
            .collect();
        for (sid, key) in missing.iter().zip(self.store.series_keys(&missing)) {
            if let Some(key) = key {
                labels.insert(
                    *sid,
                    mapping::series_labels(&self.config.metric_prefix, &key),
                );
            }
        }
        let mut sids: Vec<u32> = by_series.keys().copied().collect();
        sids.sort_unstable();
        let mut request = WriteRequest::default();
        for sid in sids {
            let Some(l) = labels.get(&sid) else {
                continue;
            };
            let mut samples = by_series.remove(&sid).unwrap_or_default();
            // Stable: of two samples of one millisecond, the later write
            // is kept.
            samples.sort_by_key(|s| s.timestamp);
            let mut kept: Vec<Sample> = Vec::with_capacity(samples.len());
            for s in samples {
                match kept.last_mut() {
                    Some(last) if last.timestamp == s.timestamp => *last = s,
                    _ => kept.push(s),
                }
            }
            request.timeseries.push(TimeSeries {
                labels: l.clone(),
                samples: kept,
            });
        }
        Some(Pending {
            body: super::proto::encode(&request),
            last_seq,
            points,
            oldest_ts,
        })
    }

    async fn update_backlog(&self, tail: &mut Option<JournalTail>, pending: Option<&Pending>) {
        let Some(t) = tail.take() else { return };
        let (t, unread) = match tokio::task::spawn_blocking(move || {
            let u = t.unread();
            (t, u)
        })
        .await
        {
            Ok(r) => r,
            Err(_) => return,
        };
        *tail = Some(t);
        let Ok(u) = unread else { return };
        let points = u.points + pending.map_or(0, |p| p.points);
        let oldest = match (pending.and_then(|p| p.oldest_ts), u.oldest_ts) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let seconds = oldest.map_or(0.0, |ts| {
            ((crate::model::now_ms() - ts).max(0) as f64 / 1000.0).round()
        });
        self.health.update(&self.name, |h| {
            h.backlog_points = points;
            h.backlog_seconds = if points == 0 { 0.0 } else { seconds };
        });
    }

    /// Sends every resource's info series when the metadata changed or a
    /// while has passed; a failure is retried at the next check.
    async fn send_info(
        &self,
        client: &Client,
        info: &mut InfoState,
        stop: &mut watch::Receiver<bool>,
    ) {
        info.checked = Some(Instant::now());
        let store = self.store.clone();
        let Ok(resources) = tokio::task::spawn_blocking(move || store.resources()).await else {
            return;
        };
        let fingerprint = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            serde_json::to_string(&resources)
                .unwrap_or_default()
                .hash(&mut h);
            h.finish()
        };
        let stale = info.sent.is_none_or(|t| t.elapsed() >= INFO_RESEND_EVERY);
        if resources.is_empty() || (!stale && info.fingerprint == Some(fingerprint)) {
            return;
        }
        let now = crate::model::now_ms();
        for chunk in resources.chunks(self.config.batch_size.max(1)) {
            let request = WriteRequest {
                timeseries: chunk
                    .iter()
                    .map(|r| TimeSeries {
                        labels: mapping::info_labels(&self.config.metric_prefix, r),
                        samples: vec![Sample {
                            value: 1.0,
                            timestamp: now,
                        }],
                    })
                    .collect(),
            };
            let outcome = tokio::select! {
                o = client.send(super::proto::encode(&request)) => o,
                _ = stop.wait_for(|v| *v) => return,
            };
            if let Outcome::Retry(m, _) | Outcome::Refused(m) = outcome {
                tracing::debug!(
                    "remote write {}: resource metadata not sent ({m})",
                    self.name
                );
                return;
            }
        }
        info.fingerprint = Some(fingerprint);
        info.sent = Some(Instant::now());
    }
}

#[derive(Default)]
struct InfoState {
    checked: Option<Instant>,
    sent: Option<Instant>,
    fingerprint: Option<u64>,
}

impl InfoState {
    fn due(&self) -> bool {
        self.checked.is_none_or(|t| t.elapsed() >= INFO_CHECK_EVERY)
    }
}

/// Sleeps `d`; true when `stop` turned true meanwhile.
async fn sleep_or_stop(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|v| *v) => true,
    }
}

//! Each remote-write target's health, as `/api/metrics-store/stats`
//! (`remoteWrite`), `/metrics` and the UI's storage-health panel show it.

use parking_lot::Mutex;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetHealth {
    pub name: String,
    /// The endpoint (credentials are never part of it).
    pub url: String,
    /// `starting`, `ok`, `retrying` (the engine is down or refuses for
    /// now: nothing is lost while raw retention lasts) or `error` (the
    /// target cannot run: its message says why).
    pub state: String,
    /// Points written and not yet acknowledged by the engine.
    pub backlog_points: u64,
    /// How far behind, in the points' own time (seconds; 0 when caught up).
    pub backlog_seconds: f64,
    /// Unix ms of the last acknowledged request (0 = never).
    pub last_success: i64,
    /// The last failure, time-stamped; empty when there was none.
    pub last_error: String,
    /// Points the engine acknowledged, since start.
    pub sent_points: u64,
    /// Points the engine refused with a 4xx (counted and skipped).
    pub failed_points: u64,
    /// Requests sent again after a 5xx, a 429 or a network error.
    pub retries: u64,
    /// Batches (and their points, as far as counted) deleted from the raw
    /// journal before they were sent: the target was more than raw
    /// retention behind.
    pub skipped_batches: u64,
    pub skipped_points: u64,
    /// The last raw-journal batch acknowledged (0 = none yet).
    pub cursor: u64,
}

/// Every target's health, by name. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct RemoteHealth(Arc<Mutex<BTreeMap<String, TargetHealth>>>);

impl RemoteHealth {
    pub fn update(&self, name: &str, f: impl FnOnce(&mut TargetHealth)) {
        let mut map = self.0.lock();
        let entry = map.entry(name.to_string()).or_insert_with(|| TargetHealth {
            name: name.to_string(),
            state: "starting".into(),
            ..TargetHealth::default()
        });
        f(entry);
    }

    pub fn snapshot(&self) -> Vec<TargetHealth> {
        self.0.lock().values().cloned().collect()
    }
}

/// `2026-01-01T00:00:00.000Z: message`, as the store's `lastError`.
pub fn stamped(message: &str) -> String {
    format!(
        "{}: {message}",
        crate::model::format_timestamp(crate::model::now_ms())
    )
}

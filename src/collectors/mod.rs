//! Collectors: programs that sample something on an interval and write the
//! samples into the store. Each reports its health on a shared status board,
//! which `/api/metrics-store/stats` and the UI show; a failing collector
//! never stops the others or the service.

pub mod host;
pub mod proxmox;

use crate::model::Point;
use crate::store::Resource;
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Where collectors put their samples.
pub trait Sink: Send + Sync + 'static {
    fn write(&self, points: &[Point]) -> crate::Result<usize>;

    /// What is known about resources (names, nodes, tags); a sink stores
    /// only what changed. Returns the resources that changed.
    fn write_resources(&self, _resources: &[Resource]) -> crate::Result<usize> {
        Ok(0)
    }

    /// Merges the history of resource `from_id` into `into_id` (an id that
    /// changed); returns the series merged.
    fn merge_resource(
        &self,
        _resource_type: &str,
        _from_id: &str,
        _into_id: &str,
    ) -> crate::Result<usize> {
        Ok(0)
    }

    /// Makes what was written visible and durable now rather than at the
    /// next flush interval (a fresh install's first sample).
    fn flush(&self) -> crate::Result<()> {
        Ok(())
    }
}

impl Sink for crate::Store {
    /// Samples arrive live: a point stamped too far ahead of this clock or
    /// older than every retention refuses the batch (`Store::write_live`),
    /// as on the write API.
    fn write(&self, points: &[Point]) -> crate::Result<usize> {
        self.write_live(points, crate::model::now_ms())
    }

    fn write_resources(&self, resources: &[Resource]) -> crate::Result<usize> {
        crate::Store::write_resources(self, resources)
    }

    fn merge_resource(
        &self,
        resource_type: &str,
        from_id: &str,
        into_id: &str,
    ) -> crate::Result<usize> {
        crate::Store::merge_resource(self, resource_type, from_id, into_id)
    }

    fn flush(&self) -> crate::Result<()> {
        crate::Store::flush(self)
    }
}

/// Health of one collector (for Proxmox: of one cluster).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectorStatus {
    /// `host`, `proxmox:<instance name>` (polled), or `influx:<instance>`
    /// (pushed in line protocol).
    pub name: String,
    /// `starting`, `ok`, `error` or `disabled`.
    pub state: String,
    /// Unix ms of the last successful poll (0 = never).
    pub last_success: i64,
    /// Unix ms of the last poll attempt (0 = never).
    pub last_attempt: i64,
    /// The last failure's message; empty once a poll succeeds again.
    pub last_error: String,
    pub consecutive_failures: u32,
    /// Points written since start.
    pub points_written: u64,
    /// Failures since start: failed polls, refused pushes, bad lines
    /// skipped from UDP.
    pub errors: u64,
}

impl CollectorStatus {
    pub fn new(name: impl Into<String>) -> CollectorStatus {
        CollectorStatus {
            name: name.into(),
            state: "starting".into(),
            last_success: 0,
            last_attempt: 0,
            last_error: String::new(),
            consecutive_failures: 0,
            points_written: 0,
            errors: 0,
        }
    }
}

/// The shared status board: one entry per collector, keyed by name.
#[derive(Debug, Clone, Default)]
pub struct StatusBoard(Arc<Mutex<BTreeMap<String, CollectorStatus>>>);

impl StatusBoard {
    pub fn update(&self, name: &str, f: impl FnOnce(&mut CollectorStatus)) {
        let mut map = self.0.lock();
        let entry = map
            .entry(name.to_string())
            .or_insert_with(|| CollectorStatus::new(name));
        f(entry);
    }

    pub fn snapshot(&self) -> Vec<CollectorStatus> {
        self.0.lock().values().cloned().collect()
    }
}

//! One Proxmox resource's reading turned into points: the percentages, and
//! the byte rates from cumulative counters with their reset rules.
//!
//! Shared by the API poller (`resources`, which reads `cluster/resources`)
//! and the line-protocol push (`crate::influx`, which reads what Proxmox's
//! External Metric Server sends), so a cluster recorded either way gets the
//! same values under the same rules. Pure: no clock, no network.

use crate::model::Point;
use std::collections::HashMap;

/// Cumulative byte counters, turned into bytes per second.
pub const COUNTERS: [&str; 4] = ["netin", "netout", "diskread", "diskwrite"];

/// How far a guest's uptime may lag behind the wall clock before we call it a
/// restart. Proxmox refreshes these values from `pvestatd` every ~10 s, and a
/// busy host (slow storage) can delay that; a false alarm only costs one rate
/// point, a missed restart a wrong one.
const RESTART_SLACK_SECS: f64 = 60.0;

/// What kind of Proxmox resource a reading is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Node,
    Qemu,
    Lxc,
    Storage,
}

impl Kind {
    /// The resourceType its series are stored under.
    pub fn resource_type(self) -> &'static str {
        match self {
            Kind::Node => "node",
            Kind::Qemu => "vm",
            Kind::Lxc => "container",
            Kind::Storage => "storage",
        }
    }
}

/// The raw figures of one resource at one moment, as Proxmox reports them.
/// Each is a finite, non-negative number or absent; absent ones give no point.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// 0..1 fraction of the resource's cores.
    pub cpu: Option<f64>,
    pub mem: Option<f64>,
    pub maxmem: Option<f64>,
    pub disk: Option<f64>,
    pub maxdisk: Option<f64>,
    /// Cumulative bytes, in the order of [`COUNTERS`].
    pub counters: [Option<f64>; 4],
    /// Seconds.
    pub uptime: Option<f64>,
}

/// The counters last seen per series id. Only resources that were up are
/// kept, so one that was stopped (or, for the poller, missing) in between
/// starts over: no rate on its first sample back.
#[derive(Debug, Clone, Default)]
pub struct RateState {
    samples: HashMap<String, Sample>,
}

impl RateState {
    /// Resources whose counters are remembered.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn get(&self, id: &str) -> Option<&Sample> {
        self.samples.get(id)
    }

    pub fn insert(&mut self, id: String, sample: Sample) {
        self.samples.insert(id, sample);
    }

    pub fn remove(&mut self, id: &str) -> Option<Sample> {
        self.samples.remove(id)
    }

    /// Forgets resources last seen before `cutoff_ms`.
    pub fn forget_before(&mut self, cutoff_ms: i64) {
        self.samples.retain(|_, s| s.time_ms >= cutoff_ms);
    }
}

/// One resource's counters at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    time_ms: i64,
    uptime: Option<f64>,
    counters: [Option<f64>; 4],
}

impl Sample {
    /// Unix ms of the reading it came from.
    pub fn time_ms(&self) -> i64 {
        self.time_ms
    }
}

/// The points of one reading at `now_ms`, and the sample to remember for
/// the next one's rates (None when the reading has no counters at all).
///
/// `cpu` becomes a percentage; `memory` and `disk` are `mem / maxmem` and
/// `disk / maxdisk` in percent (none when the maximum is 0); storage has
/// `disk` only. Rates need `prev`: a counter that went down was reset and
/// gets no point, a restart (uptime) gives no rates at all, and a reading
/// identical to `prev` (Proxmox had not refreshed) gives none either and
/// keeps `prev`, so the next rate spans the real interval.
pub fn record(
    kind: Kind,
    id: &str,
    reading: &Reading,
    prev: Option<&Sample>,
    now_ms: i64,
) -> (Vec<Point>, Option<Sample>) {
    let mut points = Vec::new();
    let mut push = |metric: &str, value: f64| {
        let point = Point {
            resource_type: kind.resource_type().to_string(),
            resource_id: id.to_string(),
            metric: metric.to_string(),
            value,
            timestamp: now_ms,
        };
        // One bad point would make the store refuse the whole batch.
        if point.validate().is_ok() {
            points.push(point);
        }
    };

    if kind != Kind::Storage {
        if let Some(cpu) = reading.cpu {
            push("cpu", cpu * 100.0);
        }
        if let Some(pct) = percent(reading.mem, reading.maxmem) {
            push("memory", pct);
        }
    }
    // Proxmox cannot see inside a VM's disks and reports `disk: 0` for every
    // qemu guest; charting that as 0 % would be a lie, so it is left out.
    let unknown_vm_disk = kind == Kind::Qemu && reading.disk == Some(0.0);
    if !unknown_vm_disk && let Some(pct) = percent(reading.disk, reading.maxdisk) {
        push("disk", pct);
    }
    if kind == Kind::Storage || reading.counters.iter().all(Option::is_none) {
        return (points, None);
    }

    let current = Sample {
        time_ms: now_ms,
        uptime: reading.uptime.filter(|u| *u > 0.0),
        counters: reading.counters,
    };
    let remembered = match prev {
        None => current,
        Some(before) if is_stale(before, &current) => before.clone(),
        Some(before) => {
            let dt_secs = (now_ms - before.time_ms) as f64 / 1000.0;
            if dt_secs > 0.0 && !restarted(before, &current, dt_secs) {
                for (i, name) in COUNTERS.iter().enumerate() {
                    // A counter that went down was reset (or wrapped): no
                    // point rather than a negative or huge one.
                    if let (Some(old), Some(new)) = (before.counters[i], current.counters[i])
                        && new >= old
                    {
                        push(name, (new - old) / dt_secs);
                    }
                }
            }
            current
        }
    };
    (points, Some(remembered))
}

fn is_stale(before: &Sample, current: &Sample) -> bool {
    current.uptime.is_some()
        && current.uptime == before.uptime
        && current.counters == before.counters
}

/// A restart zeroes the counters; the uptime going back, or advancing far
/// less than the time between samples, gives it away even when the new
/// counters happen to be higher than the old ones.
fn restarted(before: &Sample, current: &Sample, dt_secs: f64) -> bool {
    match (before.uptime, current.uptime) {
        (Some(old), Some(new)) => new < old || new + RESTART_SLACK_SECS < old + dt_secs,
        _ => false,
    }
}

fn percent(used: Option<f64>, max: Option<f64>) -> Option<f64> {
    let (used, max) = (used?, max?);
    if max <= 0.0 {
        return None;
    }
    let pct = used / max * 100.0;
    pct.is_finite().then_some(pct)
}

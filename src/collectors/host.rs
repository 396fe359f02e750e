//! This machine as resource type `node` (id = hostname, also recorded as its
//! name): `cpu`, `memory`, `disk` (percent of the root filesystem), every
//! `collectors.host.interval`.
//!
//! - cpu: all cores' usage in percent since the previous sample (sysinfo
//!   needs two refreshes at least `MINIMUM_CPU_UPDATE_INTERVAL` apart, so the
//!   first sample waits that long, well under a second).
//! - memory: used / total x 100.
//! - disk: used / total x 100 of the filesystem mounted at `/`, with used =
//!   total - free blocks: the figure Proxmox reports for a node's root disk,
//!   so this host's line matches the Proxmox nodes beside it. (sysinfo is the
//!   fallback off Unix: total - available, which counts the root reserve.)

use super::{Sink, StatusBoard};
use crate::config::HostCollectorConfig;
use crate::model::{Point, now_ms};
use crate::store::{Resource, ResourceMeta};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use sysinfo::{Disks, System};

/// The name this collector reports under on the status board.
pub const NAME: &str = "host";

/// Fallback id when the host name cannot be read or is not a valid id.
const FALLBACK_ID: &str = "localhost";

/// Starts the host collector; it stops when `shutdown` turns true.
pub fn spawn(
    config: HostCollectorConfig,
    sink: Arc<dyn Sink>,
    board: StatusBoard,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    board.update(NAME, |s| s.state = "starting".into());
    tokio::spawn(async move {
        let interval = config.interval.max(Duration::from_secs(1));
        let mut sampler = match tokio::task::spawn_blocking(Sampler::new).await {
            Ok(s) => s,
            Err(e) => {
                board.update(NAME, |s| {
                    s.state = "error".into();
                    s.last_error = format!("cannot start: {e}");
                });
                return;
            }
        };
        tracing::info!(id = %sampler.id, ?interval, "host collector started");
        // The CPU baseline was taken in `new`; the first real sample comes as
        // soon as sysinfo can compute a usage.
        let first = sysinfo::MINIMUM_CPU_UPDATE_INTERVAL.max(Duration::from_millis(250));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + first, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut wrote_once = false;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
            let attempt = now_ms();
            let (back, points) = match tokio::task::spawn_blocking(move || {
                let points = sampler.sample(now_ms());
                (sampler, points)
            })
            .await
            {
                Ok(r) => r,
                Err(e) => {
                    board.update(NAME, |s| {
                        s.state = "error".into();
                        s.last_error = format!("sampling failed: {e}");
                    });
                    break;
                }
            };
            sampler = back;
            let sink = sink.clone();
            // The first sample is flushed at once: a fresh install shows
            // this host within a second, not after a flush interval. Its
            // name goes with it (the store would skip it later as unchanged).
            let first = !wrote_once;
            let name = first.then(|| sampler.resource());
            let written = match points {
                Ok(points) => tokio::task::spawn_blocking(move || {
                    let n = sink.write(&points).map_err(|e| e.to_string())?;
                    if first {
                        sink.flush().map_err(|e| e.to_string())?;
                    }
                    if let Some(r) = name {
                        sink.write_resources(&[r]).map_err(|e| e.to_string())?;
                    }
                    Ok(n)
                })
                .await
                .unwrap_or_else(|e| Err(format!("write task failed: {e}"))),
                Err(e) => Err(e),
            };
            wrote_once |= written.is_ok();
            board.update(NAME, |s| {
                s.last_attempt = attempt;
                match &written {
                    Ok(n) => {
                        s.state = "ok".into();
                        s.last_success = attempt;
                        s.last_error.clear();
                        s.consecutive_failures = 0;
                        s.points_written += *n as u64;
                    }
                    Err(e) => {
                        s.state = "error".into();
                        s.last_error = e.clone();
                        s.consecutive_failures = s.consecutive_failures.saturating_add(1);
                        s.errors = s.errors.saturating_add(1);
                    }
                }
            });
            if let Err(e) = &written {
                tracing::warn!("host collector: {e}");
            }
        }
        tracing::debug!("host collector stopped");
    })
}

/// Holds sysinfo's state between samples (the CPU usage is a difference).
struct Sampler {
    id: String,
    /// None where sysinfo cannot read this system at all.
    system: Option<System>,
    disks: Option<Disks>,
}

impl Sampler {
    fn new() -> Sampler {
        let id = host_id(System::host_name().ok());
        let system = match System::new() {
            Ok(mut s) => {
                // The baseline the first CPU usage is measured against.
                s.refresh_cpu_usage();
                Some(s)
            }
            Err(e) => {
                tracing::warn!("sysinfo cannot read this system ({e}): no cpu or memory samples");
                None
            }
        };
        let disks = match Disks::new_with_refreshed_list() {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::warn!("cannot list disks: {e}; no disk samples");
                None
            }
        };
        Sampler { id, system, disks }
    }

    /// This host's metadata: its name (the id is the name).
    fn resource(&self) -> Resource {
        Resource::new(
            "node",
            &self.id,
            ResourceMeta {
                name: Some(self.id.clone()),
                ..ResourceMeta::default()
            },
        )
    }

    fn sample(&mut self, now: i64) -> Result<Vec<Point>, String> {
        let mut points = Vec::with_capacity(3);
        let mut point = |metric: &str, value: f64| {
            if value.is_finite() {
                points.push(Point {
                    resource_type: "node".into(),
                    resource_id: self.id.clone(),
                    metric: metric.into(),
                    value: value.clamp(0.0, 100.0),
                    timestamp: now,
                });
            }
        };
        if let Some(system) = &mut self.system {
            system.refresh_cpu_usage();
            system.refresh_memory();
            if !system.cpus().is_empty() {
                point("cpu", f64::from(system.global_cpu_usage()));
            }
            let total = system.total_memory();
            if total > 0 {
                point("memory", system.used_memory() as f64 / total as f64 * 100.0);
            }
        }
        if let Some(percent) = root_used_percent() {
            point("disk", percent);
        } else if let Some(disks) = &mut self.disks {
            disks.refresh(true);
            if let Some(root) = disks
                .iter()
                .find(|d| d.mount_point() == Path::new("/"))
                .filter(|d| d.total_space() > 0)
            {
                let total = root.total_space() as f64;
                let used = total - root.available_space() as f64;
                point("disk", used / total * 100.0);
            }
        }
        if points.is_empty() {
            return Err("no host metric could be read".into());
        }
        Ok(points)
    }
}

/// Used percent of `/` as Proxmox computes it: (blocks - free) / blocks.
#[cfg(unix)]
fn root_used_percent() -> Option<f64> {
    let st = rustix::fs::statvfs("/").ok()?;
    if st.f_blocks == 0 {
        return None;
    }
    let used = st.f_blocks.saturating_sub(st.f_bfree);
    Some(used as f64 / st.f_blocks as f64 * 100.0)
}

#[cfg(not(unix))]
fn root_used_percent() -> Option<f64> {
    None
}

/// The host name if it is a valid resource id, else `localhost`.
fn host_id(name: Option<String>) -> String {
    match name {
        Some(n) if !n.is_empty() && n.len() <= 256 && !n.chars().any(char::is_control) => n,
        _ => FALLBACK_ID.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_id_falls_back_when_unusable() {
        assert_eq!(host_id(Some("pve1".into())), "pve1");
        assert_eq!(host_id(None), "localhost");
        assert_eq!(host_id(Some(String::new())), "localhost");
        assert_eq!(host_id(Some("a\nb".into())), "localhost");
    }

    #[test]
    fn the_host_is_named_after_itself() {
        let s = Sampler::new();
        let r = s.resource();
        assert_eq!(
            (r.resource_type.as_str(), r.resource_id.as_str()),
            ("node", s.id.as_str())
        );
        assert_eq!(r.meta.name.as_deref(), Some(s.id.as_str()));
        assert_eq!(r.validate(), Ok(()));
    }

    #[test]
    fn samples_are_percentages_of_this_machine() {
        let mut s = Sampler::new();
        std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL.max(Duration::from_millis(250)));
        let points = s.sample(1_700_000_000_000).expect("host metrics readable");
        let metrics: Vec<&str> = points.iter().map(|p| p.metric.as_str()).collect();
        assert!(metrics.contains(&"cpu"), "{metrics:?}");
        assert!(metrics.contains(&"memory"), "{metrics:?}");
        #[cfg(unix)]
        assert!(metrics.contains(&"disk"), "{metrics:?}");
        for p in &points {
            assert_eq!(p.resource_type, "node");
            assert!((0.0..=100.0).contains(&p.value), "{p:?}");
            p.validate().unwrap();
        }
    }
}

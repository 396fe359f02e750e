//! Parsed lines onto series: Proxmox's own lines onto the series the API
//! collector writes, every other line by the generic rule.
//!
//! **Proxmox** (a line with an `object` tag; pve-manager `PVE/Status/InfluxDB.pm`):
//!
//! | object | tags | measurement: fields used | series |
//! |---|---|---|---|
//! | `nodes` | `host=NODE` | `cpustat`: `cpu`; `memory`: `memused`/`memtotal`; `blockstat`: `used`/`blocks` | `node` `{instance}:{NODE}`: `cpu`, `memory`, `disk` |
//! | `qemu`, `lxc` | `vmid`, `nodename`, `host=NAME` | `system`: `status`, `cpu`, `mem`/`maxmem`, `disk`/`maxdisk`, `netin`, `netout`, `diskread`, `diskwrite`, `uptime` | `vm` / `container` `{instance}:{vmid}` |
//! | `storages` | `nodename`, `host=STORAGE` | `system`: `used`/`total`, `shared`, `active` | `storage` `{instance}:{STORAGE}` (shared) or `{instance}:{NODE}:{STORAGE}` |
//!
//! Percentages and rates follow the collector's rules exactly
//! (`collectors::proxmox::sample`). Every other Proxmox line (per-NIC and
//! per-disk counters, `ballooninfo`, a node's `system`, unknown objects) is
//! counted as ignored, never refused: nothing Proxmox sends fails a batch.
//!
//! **Generic** (any line without an `object` tag): resourceType = the
//! measurement; resourceId = `{instance}` followed by `:key=value,...` of the
//! tags in key order (just `{instance}` without tags); one point per numeric
//! field, metric = the field key; booleans are 1 and 0; strings are counted
//! as ignored. A name that cannot be a resourceType, resourceId or metric is
//! an error naming the line.

use super::parse::{Line, Value};
use crate::collectors::proxmox::sample::{self, Kind, RateState, Reading, Sample};
use crate::ingest::LineError;
use crate::model::{Point, SeriesKey};
use crate::store::{Resource, ResourceMeta};
use std::collections::HashMap;

/// What one batch of lines becomes.
#[derive(Debug, Default)]
pub struct Mapped {
    pub points: Vec<Point>,
    /// The line each point came from (same order as `points`).
    pub point_lines: Vec<u64>,
    /// What the batch says about its Proxmox resources (name, node,
    /// instance, status, template, tags); the last line about one wins.
    pub resources: Vec<Resource>,
    /// Lines that carried nothing stored (by rule, not by error).
    pub ignored: usize,
    /// Lines that cannot be mapped; the batch's other lines are still mapped.
    pub errors: Vec<LineError>,
    /// Counter samples to remember once the points are stored (None:
    /// forget, the resource is down).
    pub rates: Vec<(String, Option<Sample>)>,
}

/// Maps `lines` of one request for `instance`. `rates` holds the counters
/// remembered from earlier requests; within the batch, a resource's later
/// lines see its earlier ones.
pub fn map(instance: &str, lines: &[Line], rates: &RateState) -> Mapped {
    let mut m = Mapper {
        instance,
        rates,
        pending: HashMap::new(),
        out: Mapped::default(),
    };
    for line in lines {
        let before = m.out.points.len();
        let handled = match line.tag("object") {
            Some(object) => m.proxmox(object, line),
            None => m.generic(line),
        };
        let added = m.out.points.len() - before;
        m.out
            .point_lines
            .extend(std::iter::repeat_n(line.number, added));
        if !handled {
            m.out.ignored += 1;
        }
    }
    let Mapper {
        pending, mut out, ..
    } = m;
    out.rates = pending.into_iter().collect();
    out
}

struct Mapper<'a> {
    instance: &'a str,
    rates: &'a RateState,
    /// This batch's own counter samples, newer than `rates`.
    pending: HashMap<String, Option<Sample>>,
    out: Mapped,
}

impl Mapper<'_> {
    /// One Proxmox line; false when it carried nothing to store.
    fn proxmox(&mut self, object: &str, line: &Line) -> bool {
        match object {
            "nodes" => self.node(line),
            "qemu" => self.guest(Kind::Qemu, line),
            "lxc" => self.guest(Kind::Lxc, line),
            "storages" => self.storage(line),
            _ => false,
        }
    }

    fn node(&mut self, line: &Line) -> bool {
        let Some(node) = line.tag("host") else {
            return false;
        };
        let Some(id) = self.id(Kind::Node, &[node]) else {
            return false;
        };
        let reading = match line.measurement.as_str() {
            "cpustat" => Reading {
                cpu: number(line, "cpu"),
                ..Reading::default()
            },
            "memory" => Reading {
                mem: number(line, "memused"),
                maxmem: number(line, "memtotal"),
                ..Reading::default()
            },
            "blockstat" => Reading {
                disk: number(line, "used"),
                maxdisk: number(line, "blocks"),
                ..Reading::default()
            },
            "system" => {
                // Only the uptime: nothing charted, but the node is up.
                self.seen(Kind::Node, &id, node_meta(node));
                return true;
            }
            _ => return false,
        };
        self.seen(Kind::Node, &id, node_meta(node));
        let (points, _) = sample::record(Kind::Node, &id, &reading, None, line.timestamp);
        self.out.points.extend(points);
        true
    }

    fn guest(&mut self, kind: Kind, line: &Line) -> bool {
        if line.measurement != "system" {
            return false;
        }
        let Some(vmid) = line
            .tag("vmid")
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        else {
            return false;
        };
        let Some(id) = self.id(kind, &[vmid]) else {
            return false;
        };
        let status = text(line, "status");
        self.seen(
            kind,
            &id,
            ResourceMeta {
                name: text(line, "name")
                    .or_else(|| line.tag("host"))
                    .map(Into::into),
                node: line.tag("nodename").map(Into::into),
                status: status.map(Into::into),
                // Proxmox sends `template=1` for templates only.
                template: Some(number(line, "template").is_some_and(|t| t > 0.0)),
                // Its tag list, `;`-separated (`,` and spaces also parse).
                tags: text(line, "tags").map(|t| {
                    t.split([';', ',', ' '])
                        .filter(|t| !t.is_empty())
                        .map(Into::into)
                        .collect()
                }),
                ..ResourceMeta::default()
            },
        );
        if status != Some("running") {
            // A stopped guest writes nothing (a gap) and starts its rates
            // over when it is back, as with the collector.
            self.pending.insert(id, None);
            return true;
        }
        let reading = Reading {
            cpu: number(line, "cpu"),
            mem: number(line, "mem"),
            maxmem: number(line, "maxmem"),
            disk: number(line, "disk"),
            maxdisk: number(line, "maxdisk"),
            counters: sample::COUNTERS.map(|c| number(line, c)),
            uptime: number(line, "uptime"),
        };
        let prev = match self.pending.get(&id) {
            Some(p) => p.as_ref(),
            None => self.rates.get(&id),
        };
        let (points, remembered) = sample::record(kind, &id, &reading, prev, line.timestamp);
        self.out.points.extend(points);
        if let Some(s) = remembered {
            self.pending.insert(id, Some(s));
        }
        true
    }

    fn storage(&mut self, line: &Line) -> bool {
        if line.measurement != "system" {
            return false;
        }
        let (Some(node), Some(storage)) = (line.tag("nodename"), line.tag("host")) else {
            return false;
        };
        let shared = number(line, "shared").is_some_and(|s| s > 0.0);
        let id = if shared {
            self.id(Kind::Storage, &[storage])
        } else {
            self.id(Kind::Storage, &[node, storage])
        };
        let Some(id) = id else {
            return false;
        };
        // Proxmox pushes active storages only; `active=0` is honoured anyway.
        let active = number(line, "active").is_none_or(|a| a > 0.0);
        self.seen(
            Kind::Storage,
            &id,
            ResourceMeta {
                name: Some(storage.into()),
                // Shared storage belongs to the cluster, not to one node.
                node: (!shared).then(|| node.into()),
                status: Some(if active { "available" } else { "unavailable" }.into()),
                ..ResourceMeta::default()
            },
        );
        if !active {
            return true;
        }
        let reading = Reading {
            disk: number(line, "used"),
            maxdisk: number(line, "total"),
            ..Reading::default()
        };
        let (points, _) = sample::record(Kind::Storage, &id, &reading, None, line.timestamp);
        self.out.points.extend(points);
        true
    }

    /// `{instance}:{part}:{part}`, if it is a valid series id.
    fn id(&self, kind: Kind, parts: &[&str]) -> Option<String> {
        let mut id = self.instance.to_string();
        for p in parts {
            if p.is_empty() {
                return None;
            }
            id.push(':');
            id.push_str(p);
        }
        SeriesKey::new(kind.resource_type(), &id, "cpu")
            .validate()
            .is_ok()
            .then_some(id)
    }

    /// Records what a line says about a resource; a later line about the
    /// same resource replaces an earlier one's fields.
    fn seen(&mut self, kind: Kind, id: &str, mut meta: ResourceMeta) {
        meta.instance = Some(self.instance.to_string());
        let resources = &mut self.out.resources;
        let found = resources
            .iter_mut()
            .find(|r| r.resource_type == kind.resource_type() && r.resource_id == id);
        match found {
            Some(r) => r.meta = r.meta.updated(&meta),
            None => resources.push(Resource::new(kind.resource_type(), id, meta)),
        }
    }

    /// The documented rule for any other client; false when nothing in the
    /// line is numeric.
    fn generic(&mut self, line: &Line) -> bool {
        let bad = |reason: String| LineError {
            line: line.number,
            reason,
        };
        let resource_type = line.measurement.as_str();
        let mut id = self.instance.to_string();
        let mut tags: Vec<&(String, String)> = line.tags.iter().collect();
        tags.sort();
        for (i, (k, v)) in tags.iter().enumerate() {
            id.push(if i == 0 { ':' } else { ',' });
            id.push_str(k);
            id.push('=');
            id.push_str(v);
        }
        let mut points = Vec::new();
        for (key, value) in &line.fields {
            let v = match value {
                Value::Number(n) => *n,
                Value::Bool(b) => f64::from(u8::from(*b)),
                Value::Text(_) => continue,
            };
            let point = Point {
                resource_type: resource_type.to_string(),
                resource_id: id.clone(),
                metric: key.clone(),
                value: v,
                timestamp: line.timestamp,
            };
            if let Err(e) = point.series().validate() {
                let what = if e.starts_with("resourceType") {
                    format!("the measurement {resource_type:?} cannot be a resourceType")
                } else if e.starts_with("resourceId") {
                    format!("the tags make the resourceId {id:?}, which is not valid")
                } else {
                    format!("the field {key:?} cannot be a metric name")
                };
                self.out.errors.push(bad(format!("{what} ({e})")));
                return true;
            }
            points.push(point);
        }
        let any = !points.is_empty();
        self.out.points.extend(points);
        any
    }
}

fn node_meta(node: &str) -> ResourceMeta {
    ResourceMeta {
        name: Some(node.into()),
        node: Some(node.into()),
        // It pushes, so it is up.
        status: Some("online".into()),
        ..ResourceMeta::default()
    }
}

/// A finite, non-negative number, as the collector accepts.
fn number(line: &Line, key: &str) -> Option<f64> {
    line.field(key)
        .and_then(Value::number)
        .filter(|v| v.is_finite() && *v >= 0.0)
}

fn text<'a>(line: &'a Line, key: &str) -> Option<&'a str> {
    line.field(key)
        .and_then(Value::text)
        .filter(|s| !s.is_empty())
}

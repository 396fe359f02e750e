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
use std::collections::HashMap;

/// What one batch of lines becomes.
#[derive(Debug, Default)]
pub struct Mapped {
    pub points: Vec<Point>,
    /// The line each point came from (same order as `points`).
    pub point_lines: Vec<u64>,
    /// Resources the batch describes (names, nodes), latest first seen last.
    pub resources: Vec<Seen>,
    /// Lines that carried nothing stored (by rule, not by error).
    pub ignored: usize,
    /// Lines that cannot be mapped; the batch's other lines are still mapped.
    pub errors: Vec<LineError>,
    /// Counter samples to remember once the points are stored (None:
    /// forget, the resource is down).
    pub rates: Vec<(String, Option<Sample>)>,
}

/// What a push says about a resource besides its figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub resource_type: &'static str,
    pub resource_id: String,
    /// Display name (guest name, node or storage name).
    pub name: Option<String>,
    pub node: Option<String>,
    pub status: Option<String>,
    /// Proxmox's guest tags, `;`-separated as it sends them.
    pub tags: Option<String>,
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
                self.seen(
                    Kind::Node,
                    &id,
                    Some(node),
                    Some(node),
                    Some("online"),
                    None,
                );
                return true;
            }
            _ => return false,
        };
        self.seen(
            Kind::Node,
            &id,
            Some(node),
            Some(node),
            Some("online"),
            None,
        );
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
        let name = text(line, "name").or_else(|| line.tag("host"));
        let node = line.tag("nodename");
        let tags = text(line, "tags");
        self.seen(kind, &id, name, node, status, tags);
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
        let status = if active { "available" } else { "unavailable" };
        let node_meta = (!shared).then_some(node);
        self.seen(
            Kind::Storage,
            &id,
            Some(storage),
            node_meta,
            Some(status),
            None,
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

    fn seen(
        &mut self,
        kind: Kind,
        id: &str,
        name: Option<&str>,
        node: Option<&str>,
        status: Option<&str>,
        tags: Option<&str>,
    ) {
        let seen = Seen {
            resource_type: kind.resource_type(),
            resource_id: id.to_string(),
            name: name.map(str::to_string),
            node: node.map(str::to_string),
            status: status.map(str::to_string),
            tags: tags.map(str::to_string),
        };
        let resources = &mut self.out.resources;
        match resources
            .iter_mut()
            .find(|s| s.resource_type == seen.resource_type && s.resource_id == seen.resource_id)
        {
            Some(old) => *old = seen,
            None => resources.push(seen),
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

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
//! Ids and metadata are exactly the poller's (`collectors::proxmox`
//! `resources`), so a cluster polled and pushed under one instance name is
//! one set of series. Every node pushes its own view of a shared storage;
//! like the poller, which records it once per poll from the first node that
//! has it, one node's lines record it (see [`Memory`]), and its per-node ids
//! of earlier versions are merged into the one series.
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
use std::collections::{HashMap, HashSet};

/// How long the node recording a shared storage keeps it after its last
/// line: three pvestatd rounds. Then another node that has it takes over
/// (the first went down or lost the storage), leaving a gap of at most this.
pub const TAKEOVER_MS: i64 = 30_000;

/// What a push remembers of one instance between requests.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    /// Counters last seen per series id.
    pub rates: RateState,
    /// Shared storage id -> the node whose lines record it, and the time
    /// of its last line.
    pub recorders: HashMap<String, (String, i64)>,
    /// `(old id, new id)` merges done already.
    pub merged: HashSet<(String, String)>,
}

impl Memory {
    /// Forgets counters and recorders last seen before `cutoff_ms`.
    pub fn forget_before(&mut self, cutoff_ms: i64) {
        self.rates.forget_before(cutoff_ms);
        self.recorders.retain(|_, (_, last)| *last >= cutoff_ms);
    }
}

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
    /// Shared storage id -> (node recording it, time of its line), to
    /// remember once the points are stored.
    pub recorders: Vec<(String, (String, i64))>,
    /// `(resourceType, old id, new id)`: per-node ids of a shared storage
    /// (as earlier versions of the poller wrote them) whose history belongs
    /// to its one series; not yet in [`Memory::merged`].
    pub merges: Vec<(String, String, String)>,
}

/// Maps `lines` of one request for `instance`. `memory` holds what earlier
/// requests left (counters, shared storage recorders); within the batch, a
/// resource's later lines see its earlier ones.
pub fn map(instance: &str, lines: &[Line], memory: &Memory) -> Mapped {
    let mut m = Mapper {
        instance,
        memory,
        pending: HashMap::new(),
        recorders: HashMap::new(),
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
        pending,
        recorders,
        mut out,
        ..
    } = m;
    out.rates = pending.into_iter().collect();
    out.recorders = recorders.into_iter().collect();
    out
}

struct Mapper<'a> {
    instance: &'a str,
    memory: &'a Memory,
    /// This batch's own counter samples, newer than `memory`'s.
    pending: HashMap<String, Option<Sample>>,
    /// This batch's own shared storage recorders, newer than `memory`'s.
    recorders: HashMap<String, (String, i64)>,
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
                // vmstatus sends `tags` only when the guest has some, so
                // none sent means none left: an empty list clears them, as
                // the poller does.
                tags: Some(
                    text(line, "tags")
                        .unwrap_or_default()
                        .split([';', ',', ' '])
                        .filter(|t| !t.is_empty())
                        .map(Into::into)
                        .collect(),
                ),
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
            None => self.memory.rates.get(&id),
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
        if shared && let Some(old) = self.id(Kind::Storage, &[node, storage]) {
            self.merge(Kind::Storage, old, &id);
        }
        // Proxmox pushes active storages only; `active=0` is honoured anyway.
        let active = number(line, "active").is_none_or(|a| a > 0.0);
        let records = active && (!shared || self.records_shared(&id, node, line.timestamp));
        if shared && !records && self.recorded_elsewhere(&id, node, line.timestamp) {
            // Another node's lines speak for it.
            return true;
        }
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
        if !records {
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

    /// The recorder of shared storage `id` as this batch sees it.
    fn recorder(&self, id: &str) -> Option<&(String, i64)> {
        self.recorders
            .get(id)
            .or_else(|| self.memory.recorders.get(id))
    }

    /// Whether another node recorded shared storage `id` less than
    /// [`TAKEOVER_MS`] before `ts`.
    fn recorded_elsewhere(&self, id: &str, node: &str, ts: i64) -> bool {
        self.recorder(id)
            .is_some_and(|(n, last)| n != node && ts - last <= TAKEOVER_MS)
    }

    /// Whether `node`'s line at `ts` records shared storage `id` (taking it
    /// over when no other node did lately).
    fn records_shared(&mut self, id: &str, node: &str, ts: i64) -> bool {
        if self.recorded_elsewhere(id, node, ts) {
            return false;
        }
        let last = match self.recorder(id) {
            Some((n, last)) if n == node => ts.max(*last),
            _ => ts,
        };
        self.recorders
            .insert(id.to_string(), (node.to_string(), last));
        true
    }

    /// Asks for `old`'s history to be merged into `new`, once.
    fn merge(&mut self, kind: Kind, old: String, new: &str) {
        let pair = (old, new.to_string());
        let asked = self
            .out
            .merges
            .iter()
            .any(|(_, o, n)| *o == pair.0 && *n == pair.1);
        if !asked && !self.memory.merged.contains(&pair) {
            let (old, new) = pair;
            self.out
                .merges
                .push((kind.resource_type().to_string(), old, new));
        }
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
        // As the poller: the node's name, no `node` of its own.
        name: Some(node.into()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::influx::parse::{Precision, parse};

    const T: i64 = 1_700_000_000;

    fn run(body: &str, memory: &Memory) -> Mapped {
        let parsed = parse(body.as_bytes(), Precision::Seconds, 0);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        map("pve1", &parsed.lines, memory)
    }

    /// `memory` with what a stored push `m` leaves, as `push` keeps it.
    fn remember(memory: &mut Memory, m: Mapped) {
        for (id, s) in m.rates {
            match s {
                Some(s) => memory.rates.insert(id, s),
                None => {
                    memory.rates.remove(&id);
                }
            }
        }
        memory.recorders.extend(m.recorders);
        memory
            .merged
            .extend(m.merges.into_iter().map(|(_, old, new)| (old, new)));
    }

    fn value(m: &Mapped, t: &str, id: &str, metric: &str) -> Option<f64> {
        m.points
            .iter()
            .find(|p| p.resource_type == t && p.resource_id == id && p.metric == metric)
            .map(|p| p.value)
    }

    #[test]
    fn generic_lines_follow_the_documented_rule() {
        let m = run(
            &format!(
                "cpu,host=h1,cpu=cpu0 usage_idle=99.5,usage_user=0.5 {T}\n\
                 uptime seconds=42i,up=true,down=f {T}\n\
                 note,host=h1 text=\"only a string\" {T}\n"
            ),
            &Memory::default(),
        );
        assert!(m.errors.is_empty(), "{:?}", m.errors);
        // Tags in key order, `key=value` joined by commas after the instance.
        assert_eq!(
            value(&m, "cpu", "pve1:cpu=cpu0,host=h1", "usage_idle"),
            Some(99.5)
        );
        assert_eq!(
            value(&m, "cpu", "pve1:cpu=cpu0,host=h1", "usage_user"),
            Some(0.5)
        );
        // No tags: the instance alone.
        assert_eq!(value(&m, "uptime", "pve1", "seconds"), Some(42.0));
        assert_eq!(value(&m, "uptime", "pve1", "up"), Some(1.0));
        assert_eq!(value(&m, "uptime", "pve1", "down"), Some(0.0));
        assert_eq!(m.points.len(), 5);
        assert_eq!(m.point_lines, [1, 1, 2, 2, 2]);
        // A line with nothing numeric is counted, not refused.
        assert_eq!(m.ignored, 1);
        assert!(m.resources.is_empty());
    }

    #[test]
    fn generic_names_that_cannot_be_series_are_errors_naming_the_line() {
        let long_tag = "v".repeat(300);
        for (line, needle) in [
            ("bad/measurement v=1", "resourceType"),
            ("m bad/field=1", "metric"),
            (&*format!("m,t={long_tag} v=1"), "resourceId"),
        ] {
            let body = format!("ok v=1 {T}\n{line} {T}\n");
            let m = run(&body, &Memory::default());
            assert_eq!(m.errors.len(), 1, "{line}");
            assert_eq!(m.errors[0].line, 2);
            assert!(m.errors[0].reason.contains(needle), "{}", m.errors[0]);
            assert_eq!(m.point_lines, [1], "the bad line adds no point");
        }
    }

    #[test]
    fn proxmox_lines_that_carry_nothing_we_store_are_ignored_not_refused() {
        let m = run(
            &format!(
                "nics,object=nodes,host=pve-a,instance=eno1 receive=1,transmit=2,type=\"physical\" {T}\n\
                 ballooninfo,object=qemu,vmid=101,nodename=pve-a actual=1 {T}\n\
                 system,object=sdn,host=x a=1 {T}\n\
                 system,object=qemu,nodename=pve-a cpu=0.5,status=\"running\" {T}\n\
                 system,object=lxc,vmid=abc,nodename=pve-a cpu=0.5,status=\"running\" {T}\n\
                 system,object=storages,host=local used=1,total=2 {T}\n\
                 cpustat,object=nodes cpu=0.5 {T}\n"
            ),
            &Memory::default(),
        );
        assert!(m.errors.is_empty());
        assert!(m.points.is_empty(), "{:?}", m.points);
        assert_eq!(m.ignored, 7);
    }

    #[test]
    fn storage_ids_and_activity() {
        let m = run(
            &format!(
                "system,object=storages,nodename=pve-a,host=local,type=dir active=1,shared=0,used=1,total=4 {T}\n\
                 system,object=storages,nodename=pve-a,host=nfs,type=nfs active=1,shared=1,used=3,total=4 {T}\n\
                 system,object=storages,nodename=pve-a,host=gone,type=nfs active=0,shared=1,used=3,total=4 {T}\n"
            ),
            &Memory::default(),
        );
        assert_eq!(value(&m, "storage", "pve1:pve-a:local", "disk"), Some(25.0));
        assert_eq!(value(&m, "storage", "pve1:nfs", "disk"), Some(75.0));
        assert_eq!(m.points.len(), 2, "an inactive storage writes nothing");
        let gone = m
            .resources
            .iter()
            .find(|r| r.resource_id == "pve1:gone")
            .unwrap();
        assert_eq!(gone.meta.status.as_deref(), Some("unavailable"));
        assert_eq!(m.ignored, 0);
    }

    #[test]
    fn a_guests_samples_in_one_batch_give_rates_between_them() {
        let line = |t: i64, up: u64, netin: u64| {
            format!(
                "system,object=lxc,vmid=200,nodename=n,host=ct cpu=0.1,status=\"running\",uptime={up},netin={netin},netout=0 {t}\n"
            )
        };
        let body = line(T, 100, 1000) + &line(T + 10, 110, 11_000);
        let m = run(&body, &Memory::default());
        let rates: Vec<f64> = m
            .points
            .iter()
            .filter(|p| p.metric == "netin")
            .map(|p| p.value)
            .collect();
        assert_eq!(rates, [1000.0]);
        // What is remembered is the newer sample: the next batch's rate
        // starts there.
        let mut state = Memory::default();
        remember(&mut state, m);
        let next = run(&line(T + 20, 120, 16_000), &state);
        assert_eq!(value(&next, "container", "pve1:200", "netin"), Some(500.0));
        // Stopped: forgotten.
        let stopped = run(
            &format!("system,object=lxc,vmid=200,nodename=n status=\"stopped\",cpu=0 {T}\n"),
            &state,
        );
        assert!(stopped.points.is_empty());
        assert_eq!(stopped.rates, [("pve1:200".to_string(), None)]);
    }

    fn storage_line(node: &str, storage: &str, shared: u8, used: u64, t: i64) -> String {
        format!(
            "system,object=storages,nodename={node},host={storage},type=rbd active=1,shared={shared},used={used},total=1000 {t}\n"
        )
    }

    #[test]
    fn a_shared_storage_is_recorded_from_one_node_until_it_stops_pushing() {
        let mut memory = Memory::default();
        let disk = |m: &Mapped| value(m, "storage", "pve1:ceph", "disk");
        // pve-a pushes first: it records ceph.
        let a = run(&storage_line("pve-a", "ceph", 1, 100, T), &memory);
        assert_eq!(disk(&a), Some(10.0));
        remember(&mut memory, a);
        // pve-b's view of the same storage, a few seconds later: not twice.
        let b = run(&storage_line("pve-b", "ceph", 1, 101, T + 3), &memory);
        assert_eq!(disk(&b), None, "{:?}", b.points);
        assert_eq!(b.ignored, 0, "it is Proxmox's own series, not ignored");
        assert!(b.resources.is_empty(), "{:?}", b.resources);
        remember(&mut memory, b);
        // pve-a's next round records it again; its local storage is its own.
        let body = storage_line("pve-a", "ceph", 1, 102, T + 10)
            + &storage_line("pve-a", "local", 0, 500, T + 10);
        let a = run(&body, &memory);
        assert_eq!(disk(&a), Some(10.2));
        assert_eq!(value(&a, "storage", "pve1:pve-a:local", "disk"), Some(50.0));
        remember(&mut memory, a);
        let b = run(&storage_line("pve-b", "ceph", 1, 103, T + 13), &memory);
        assert_eq!(disk(&b), None);
        // pve-a went down: after TAKEOVER_MS without its lines, pve-b takes
        // over, and keeps it when pve-a is back.
        let late = T + 10 + TAKEOVER_MS / 1000 + 1;
        let b = run(&storage_line("pve-b", "ceph", 1, 104, late), &memory);
        assert_eq!(disk(&b), Some(10.4));
        remember(&mut memory, b);
        let a = run(&storage_line("pve-a", "ceph", 1, 105, late + 2), &memory);
        assert_eq!(disk(&a), None);
        // Two nodes in one body: the first one records it.
        let both = storage_line("pve-c", "nfs", 1, 1, T) + &storage_line("pve-d", "nfs", 1, 2, T);
        let m = run(&both, &Memory::default());
        let nfs: Vec<f64> = m.points.iter().map(|p| p.value).collect();
        assert_eq!(nfs, [0.1]);
        memory.forget_before((late + 1) * 1000);
        assert!(memory.recorders.is_empty());
    }

    #[test]
    fn per_node_ids_of_a_shared_storage_are_merged_once() {
        let mut memory = Memory::default();
        let body = storage_line("pve-a", "ceph", 1, 1, T)
            + &storage_line("pve-a", "ceph", 1, 1, T + 10)
            + &storage_line("pve-a", "local", 0, 1, T);
        let a = run(&body, &memory);
        assert_eq!(
            a.merges,
            [(
                "storage".to_string(),
                "pve1:pve-a:ceph".to_string(),
                "pve1:ceph".to_string()
            )]
        );
        remember(&mut memory, a);
        // Done: not asked again. Another node's copy is, though it does not
        // record the storage.
        assert!(
            run(&storage_line("pve-a", "ceph", 1, 1, T + 20), &memory)
                .merges
                .is_empty()
        );
        let b = run(&storage_line("pve-b", "ceph", 1, 1, T + 21), &memory);
        assert_eq!(b.merges[0].1, "pve1:pve-b:ceph");
        assert!(b.points.is_empty());
    }

    #[test]
    fn metadata_is_what_the_poller_records() {
        let m = run(
            &format!(
                "cpustat,object=nodes,host=pve-a cpu=0.1 {T}\n\
                 system,object=qemu,vmid=101,nodename=pve-a,host=web status=\"running\",name=\"web\",cpu=0.1 {T}\n\
                 system,object=lxc,vmid=200,nodename=pve-a,host=ct status=\"stopped\",name=\"ct\",tags=\"a;b\" {T}\n\
                 system,object=storages,nodename=pve-a,host=ceph active=1,shared=1,used=1,total=2 {T}\n"
            ),
            &Memory::default(),
        );
        let meta = |t: &str, id: &str| {
            m.resources
                .iter()
                .find(|r| r.resource_type == t && r.resource_id == id)
                .unwrap_or_else(|| panic!("{t} {id}: {:?}", m.resources))
                .meta
                .clone()
        };
        let text = |s: &str| Some(s.to_string());
        // A node has a name, no node of its own.
        assert_eq!(
            meta("node", "pve1:pve-a"),
            ResourceMeta {
                name: text("pve-a"),
                instance: text("pve1"),
                status: text("online"),
                ..ResourceMeta::default()
            }
        );
        // No tags sent: none left (an empty list clears stored ones).
        assert_eq!(
            meta("vm", "pve1:101"),
            ResourceMeta {
                name: text("web"),
                node: text("pve-a"),
                instance: text("pve1"),
                status: text("running"),
                template: Some(false),
                tags: Some(vec![]),
            }
        );
        assert_eq!(
            meta("container", "pve1:200").tags,
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(
            meta("storage", "pve1:ceph"),
            ResourceMeta {
                name: text("ceph"),
                instance: text("pve1"),
                status: text("available"),
                ..ResourceMeta::default()
            }
        );
    }
}

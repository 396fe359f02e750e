//! Turns one `GET /api2/json/cluster/resources` answer into points and
//! resource metadata.
//!
//! Pure: the payload, the previous poll's counters and the poll time go in;
//! points, metadata and the counters to remember come out. No network, no
//! clock, so every rule (ids, percentages, rates, resets, gaps) is testable
//! directly.
//!
//! Series ids:
//! * node `{instance}:{node}` (type `node`);
//! * guest `{instance}:{vmid}` (`vm` for qemu, `container` for lxc): a VMID
//!   is unique in a cluster, so a guest keeps its series when it migrates;
//!   its node is metadata;
//! * storage `{instance}:{storage}` when Proxmox flags it `shared` (it lists
//!   such a storage once per node; it is recorded once), else
//!   `{instance}:{node}:{storage}` (`storage`).
//!
//! Gaps: a stopped guest, unavailable storage, and every guest and storage
//! of a node the same answer lists as not `online` write nothing. pmxcfs
//! keeps a dead node's entries for minutes and reports its guests `running`
//! with frozen values; recording them would draw a flat line where the
//! truth is "unknown".
//!
//! The payload comes from another program over the network, so nothing in it
//! is trusted: any field may be missing, of the wrong type, negative or
//! absurdly large. A bad field drops that one metric; an entry that cannot
//! be named drops that entry; only a payload without a `data` list fails the
//! poll.

use super::sample::{self, Kind, RateState, Reading};
use crate::model::{Point, SeriesKey};
use crate::store::{Resource, ResourceMeta};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};

/// The result of one payload.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    /// Every point of this poll, all stamped with the poll time.
    pub points: Vec<Point>,
    /// What to pass as `prev` next time.
    pub state: RateState,
    /// Entries in `data`, of any type or status.
    pub listed: usize,
    /// Resources that were up and were recorded.
    pub recorded: usize,
    /// Entries of a known type that could not be given a valid series id.
    pub skipped: usize,
    /// Guests and storage not recorded because their node is not online.
    pub on_offline_nodes: usize,
    /// What is known about every node, guest and storage listed (except
    /// those of nodes that are not online, whose entries are stale).
    pub resources: Vec<Resource>,
    /// `(resourceType, old id, new id)`: a shared storage's per-node ids of
    /// earlier versions, whose history belongs to its one series now.
    pub merges: Vec<(String, String, String)>,
}

/// Parses the raw body; malformed JSON is an error naming the position.
pub fn parse_body(
    instance: &str,
    body: &[u8],
    prev: &RateState,
    now_ms: i64,
) -> Result<Parsed, String> {
    let payload: Value = serde_json::from_slice(body)
        .map_err(|e| format!("malformed JSON from cluster/resources: {e}"))?;
    parse_resources(instance, &payload, prev, now_ms)
}

/// Points for every node, running guest and available storage in `payload`
/// (ids and gaps as the module says), and what is known about each.
pub fn parse_resources(
    instance: &str,
    payload: &Value,
    prev: &RateState,
    now_ms: i64,
) -> Result<Parsed, String> {
    let data = match payload.get("data") {
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(format!(
                "unexpected cluster/resources answer: `data` is {}, expected a list",
                kind_of(other)
            ));
        }
        None => {
            return Err(format!(
                "unexpected cluster/resources answer: expected an object with a `data` list, got {}",
                kind_of(payload)
            ));
        }
    };
    let mut out = Parsed {
        listed: data.len(),
        ..Parsed::default()
    };
    let offline: HashSet<&str> = data
        .iter()
        .filter(|e| type_of(e) == Some("node") && text(e, "status") != Some("online"))
        .filter_map(|e| text(e, "node").or_else(|| id_part(e, 1)))
        .collect();
    // A shared storage: its metadata, whether it was recorded yet.
    let mut shared: BTreeMap<String, (Resource, bool)> = BTreeMap::new();
    for entry in data {
        let found = match classify(instance, entry) {
            Entry::Ignored => continue,
            Entry::Unnamed => {
                out.skipped += 1;
                continue;
            }
            Entry::Found(found) => found,
        };
        if found.kind != Kind::Node && found.node.is_some_and(|n| offline.contains(n)) {
            out.on_offline_nodes += 1;
            continue;
        }
        let meta = Resource::new(found.resource_type, &found.id, found.meta.clone());
        if found.shared {
            if let Some(node) = found.node {
                let old = format!("{instance}:{node}:{}", found.name);
                out.merges
                    .push((found.resource_type.to_string(), old, found.id.clone()));
            }
            let (seen, recorded) = shared
                .entry(found.id.clone())
                .or_insert_with(|| (meta, false));
            if *recorded || !found.up {
                continue;
            }
            // Recorded from the first node that has it available.
            *recorded = true;
            seen.meta.status = found.meta.status.clone();
        } else {
            out.resources.push(meta);
            if !found.up {
                continue;
            }
        }
        out.recorded += 1;
        record(&found, entry, prev, now_ms, &mut out);
    }
    out.resources
        .extend(shared.into_values().map(|(meta, _)| meta));
    Ok(out)
}

/// A node, guest or storage entry that can be named.
struct Found<'a> {
    kind: Kind,
    resource_type: &'static str,
    id: String,
    /// Its node (for a node, itself).
    node: Option<&'a str>,
    /// The node's, guest's (VMID) or storage's own name in its id.
    name: String,
    /// Storage flagged `shared`.
    shared: bool,
    /// Its status is the one that is recorded (online, running, available).
    up: bool,
    meta: ResourceMeta,
}

enum Entry<'a> {
    /// Another type.
    Ignored,
    /// A known type that lacks what its series id needs.
    Unnamed,
    Found(Box<Found<'a>>),
}

/// `type`, always present in real answers, or the prefix of `id`.
fn type_of(entry: &Value) -> Option<&str> {
    text(entry, "type").or_else(|| id_part(entry, 0))
}

/// Part `n` of `id` (`qemu/101`, `storage/pve1/local`).
fn id_part(entry: &Value, n: usize) -> Option<&str> {
    text(entry, "id")?
        .split('/')
        .nth(n)
        .filter(|s| !s.is_empty())
}

fn classify<'a>(instance: &str, entry: &'a Value) -> Entry<'a> {
    if !entry.is_object() {
        return Entry::Ignored;
    }
    let (kind, up_status) = match type_of(entry) {
        Some("node") => (Kind::Node, "online"),
        Some("qemu") => (Kind::Qemu, "running"),
        Some("lxc") => (Kind::Lxc, "running"),
        Some("storage") => (Kind::Storage, "available"),
        _ => return Entry::Ignored,
    };
    let resource_type = kind.resource_type();
    let status = text(entry, "status");
    let mut meta = ResourceMeta {
        instance: Some(instance.to_string()),
        status: status.map(str::to_string),
        ..ResourceMeta::default()
    };
    let mut shared = false;
    let (node, name) = match kind {
        Kind::Node => {
            let node = text(entry, "node").or_else(|| id_part(entry, 1));
            (node, node.map(str::to_string))
        }
        Kind::Qemu | Kind::Lxc => {
            let vmid = vmid(entry).or_else(|| id_part(entry, 1).and_then(|s| s.parse().ok()));
            meta.name = text(entry, "name").map(str::to_string);
            meta.template = Some(number(entry, "template").is_some_and(|t| t != 0.0));
            // Proxmox separates tags with `;` (older versions also `,` or
            // spaces); none listed means none left, so an empty list clears.
            meta.tags = Some(
                text(entry, "tags")
                    .unwrap_or_default()
                    .split([';', ',', ' '])
                    .filter(|t| !t.is_empty())
                    .map(str::to_string)
                    .collect(),
            );
            (text(entry, "node"), vmid.map(|v: u64| v.to_string()))
        }
        Kind::Storage => {
            shared = number(entry, "shared").is_some_and(|s| s != 0.0);
            let node = text(entry, "node").or_else(|| id_part(entry, 1));
            let storage = text(entry, "storage").or_else(|| id_part(entry, 2));
            meta.name = storage.map(str::to_string);
            (node, storage.map(str::to_string))
        }
    };
    let id = match (kind, node, &name) {
        (Kind::Node, Some(node), _) => format!("{instance}:{node}"),
        (Kind::Qemu | Kind::Lxc, Some(_), Some(vmid)) => format!("{instance}:{vmid}"),
        (Kind::Storage, _, Some(storage)) if shared => format!("{instance}:{storage}"),
        (Kind::Storage, Some(node), Some(storage)) => format!("{instance}:{node}:{storage}"),
        _ => return Entry::Unnamed,
    };
    if kind == Kind::Node {
        meta.name = node.map(str::to_string);
    } else if !shared {
        meta.node = node.map(str::to_string);
    }
    let resource = Resource::new(resource_type, &id, meta.clone());
    if SeriesKey::new(resource_type, &id, "cpu")
        .validate()
        .is_err()
    {
        return Entry::Unnamed;
    }
    if let Err(e) = resource.validate() {
        // A name or tag Proxmox would not produce: keep the numbers.
        tracing::debug!("proxmox {instance}: metadata of {id} not kept: {e}");
        meta = ResourceMeta::default();
    }
    Entry::Found(Box::new(Found {
        kind,
        resource_type,
        id,
        node,
        name: name.unwrap_or_default(),
        shared,
        up: status == Some(up_status),
        meta,
    }))
}

fn record(res: &Found, entry: &Value, prev: &RateState, now_ms: i64, out: &mut Parsed) {
    let reading = Reading {
        cpu: number(entry, "cpu"),
        mem: number(entry, "mem"),
        maxmem: number(entry, "maxmem"),
        disk: number(entry, "disk"),
        maxdisk: number(entry, "maxdisk"),
        counters: sample::COUNTERS.map(|name| number(entry, name)),
        uptime: number(entry, "uptime"),
    };
    let (points, remembered) =
        sample::record(res.kind, &res.id, &reading, prev.get(&res.id), now_ms);
    out.points.extend(points);
    if let Some(s) = remembered {
        out.state.insert(res.id.clone(), s);
    }
}

/// A non-negative finite number; Proxmox sometimes sends numbers as strings.
fn number(entry: &Value, key: &str) -> Option<f64> {
    let v = match entry.get(key)? {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    (v.is_finite() && v >= 0.0).then_some(v)
}

fn vmid(entry: &Value) -> Option<u64> {
    match entry.get("vmid")? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn text<'a>(entry: &'a Value, key: &str) -> Option<&'a str> {
    entry.get(key)?.as_str().filter(|s| !s.is_empty())
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::sample::COUNTERS;
    use super::*;
    use serde_json::json;

    const T0: i64 = 1_700_000_000_000;

    fn value(points: &[Point], id: &str, metric: &str) -> Option<f64> {
        let found: Vec<f64> = points
            .iter()
            .filter(|p| p.resource_id == id && p.metric == metric)
            .map(|p| p.value)
            .collect();
        assert!(found.len() <= 1, "{id}/{metric} written twice: {found:?}");
        found.first().copied()
    }

    fn vm(uptime: u64, netin: u64, netout: u64, diskread: u64, diskwrite: u64) -> Value {
        json!({"id": "qemu/101", "type": "qemu", "node": "node1", "vmid": 101, "name": "web",
               "status": "running", "cpu": 0.25, "maxcpu": 4, "mem": 1073741824u64,
               "maxmem": 4294967296u64, "disk": 0, "maxdisk": 34359738368u64,
               "netin": netin, "netout": netout, "diskread": diskread, "diskwrite": diskwrite,
               "uptime": uptime})
    }

    fn payload(items: Vec<Value>) -> Value {
        json!({ "data": items })
    }

    fn parse(items: Vec<Value>, prev: &RateState, now: i64) -> Parsed {
        parse_resources("pve1", &payload(items), prev, now).unwrap()
    }

    #[test]
    fn realistic_payload_gives_pulse_ids_and_values() {
        let items = vec![
            json!({"id": "node/node1", "type": "node", "node": "node1", "status": "online",
                   "cpu": 0.0512, "maxcpu": 8, "mem": 8589934592u64, "maxmem": 34359738368u64,
                   "disk": 10737418240u64, "maxdisk": 107374182400u64, "uptime": 86400,
                   "level": "", "cgroup-mode": 2}),
            vm(1000, 1, 2, 3, 4),
            json!({"id": "lxc/200", "type": "lxc", "node": "node1", "vmid": 200, "name": "ct",
                   "status": "running", "cpu": 0.5, "maxcpu": 2, "mem": 268435456u64,
                   "maxmem": 536870912u64, "disk": 1073741824u64, "maxdisk": 8589934592u64,
                   "netin": 10, "netout": 20, "diskread": 30, "diskwrite": 40, "uptime": 500}),
            json!({"id": "storage/node1/local-lvm", "type": "storage", "node": "node1",
                   "storage": "local-lvm", "status": "available", "disk": 25, "maxdisk": 100,
                   "plugintype": "lvmthin", "content": "images,rootdir", "shared": 0}),
            json!({"id": "sdn/node1/localnetwork", "type": "sdn", "node": "node1",
                   "sdn": "localnetwork", "status": "ok"}),
            json!({"id": "pool/prod", "type": "pool", "pool": "prod"}),
        ];
        let p = parse(items, &RateState::default(), T0);
        assert_eq!(p.listed, 6);
        assert_eq!(p.recorded, 4);
        assert_eq!(p.skipped, 0);
        assert!(p.points.iter().all(|pt| pt.timestamp == T0));
        let kinds: Vec<(&str, &str)> = p
            .points
            .iter()
            .map(|pt| (pt.resource_type.as_str(), pt.resource_id.as_str()))
            .collect();
        assert!(kinds.contains(&("node", "pve1:node1")));
        assert!(kinds.contains(&("vm", "pve1:101")));
        assert!(kinds.contains(&("container", "pve1:200")));
        assert!(kinds.contains(&("storage", "pve1:node1:local-lvm")));
        assert!((value(&p.points, "pve1:node1", "cpu").unwrap() - 5.12).abs() < 1e-9);
        assert_eq!(value(&p.points, "pve1:node1", "memory"), Some(25.0));
        assert_eq!(value(&p.points, "pve1:node1", "disk"), Some(10.0));
        assert_eq!(value(&p.points, "pve1:101", "cpu"), Some(25.0));
        assert_eq!(value(&p.points, "pve1:101", "memory"), Some(25.0));
        // qemu reports disk 0 because it cannot know: not charted.
        assert_eq!(value(&p.points, "pve1:101", "disk"), None);
        assert_eq!(value(&p.points, "pve1:200", "memory"), Some(50.0));
        assert_eq!(value(&p.points, "pve1:200", "disk"), Some(12.5));
        assert_eq!(value(&p.points, "pve1:node1:local-lvm", "disk"), Some(25.0));
        // The first sample has no rate.
        for c in COUNTERS {
            assert_eq!(value(&p.points, "pve1:101", c), None);
        }
        // Nothing else: 3 node + 2 vm + 3 container + 1 storage.
        assert_eq!(p.points.len(), 9, "{:#?}", p.points);
        assert_eq!(p.state.len(), 2);
    }

    #[test]
    fn rates_are_bytes_per_second_between_polls() {
        let first = parse(
            vec![vm(1000, 1000, 2000, 0, 500)],
            &RateState::default(),
            T0,
        );
        let second = parse(
            vec![vm(1010, 11_000, 2000, 4096, 1_500)],
            &first.state,
            T0 + 10_000,
        );
        let id = "pve1:101";
        assert_eq!(value(&second.points, id, "netin"), Some(1000.0));
        assert_eq!(value(&second.points, id, "netout"), Some(0.0));
        assert_eq!(value(&second.points, id, "diskread"), Some(409.6));
        assert_eq!(value(&second.points, id, "diskwrite"), Some(100.0));
        assert!(second.points.iter().all(|p| p.timestamp == T0 + 10_000));
    }

    #[test]
    fn a_counter_going_down_is_a_reset_not_a_negative_rate() {
        let first = parse(
            vec![vm(1000, 5000, 5000, 5000, 5000)],
            &RateState::default(),
            T0,
        );
        let second = parse(
            vec![vm(1010, 100, 6000, 5000, 5000)],
            &first.state,
            T0 + 10_000,
        );
        let id = "pve1:101";
        assert_eq!(value(&second.points, id, "netin"), None);
        assert_eq!(value(&second.points, id, "netout"), Some(100.0));
        // The counter restarts from the new value.
        let third = parse(
            vec![vm(1020, 1100, 6000, 5000, 5000)],
            &second.state,
            T0 + 20_000,
        );
        assert_eq!(value(&third.points, id, "netin"), Some(100.0));
    }

    #[test]
    fn a_restart_gives_no_rate_even_when_counters_grew() {
        let first = parse(
            vec![vm(1000, 100, 100, 100, 100)],
            &RateState::default(),
            T0,
        );
        // Uptime went back: restarted. New counters are higher than the old
        // ones, so only the uptime reveals it.
        let second = parse(
            vec![vm(5, 1_000_000, 1_000_000, 1_000_000, 1_000_000)],
            &first.state,
            T0 + 10_000,
        );
        assert!(
            second
                .points
                .iter()
                .all(|p| !COUNTERS.contains(&p.metric.as_str())),
            "{:?}",
            second.points
        );
        assert_eq!(value(&second.points, "pve1:101", "cpu"), Some(25.0));
        let third = parse(
            vec![vm(15, 1_010_000, 1_000_000, 1_000_000, 1_000_000)],
            &second.state,
            T0 + 20_000,
        );
        assert_eq!(value(&third.points, "pve1:101", "netin"), Some(1000.0));

        // Restarted during a long outage of ours: uptime is higher than
        // before but far less than the time that passed.
        let late = parse(
            vec![vm(1200, 2_000_000, 100, 100, 100)],
            &first.state,
            T0 + 3_600_000,
        );
        assert_eq!(value(&late.points, "pve1:101", "netin"), None);
        // No restart over the same hour: the rate spans the whole hour.
        let steady = parse(
            vec![vm(4600, 3_600_100, 100, 100, 100)],
            &first.state,
            T0 + 3_600_000,
        );
        assert_eq!(value(&steady.points, "pve1:101", "netin"), Some(1000.0));
    }

    #[test]
    fn stopped_guests_leave_a_gap_and_start_over() {
        let id = "pve1:101";
        let first = parse(vec![vm(1000, 0, 0, 0, 0)], &RateState::default(), T0);
        let mut stopped = vm(0, 0, 0, 0, 0);
        stopped["status"] = json!("stopped");
        stopped["cpu"] = json!(0);
        let second = parse(vec![stopped], &first.state, T0 + 10_000);
        assert!(second.points.is_empty(), "{:?}", second.points);
        assert!(second.state.is_empty());
        // Back up: first sample again, so no rate.
        let third = parse(vec![vm(10, 5000, 0, 0, 0)], &second.state, T0 + 20_000);
        assert_eq!(value(&third.points, id, "cpu"), Some(25.0));
        assert_eq!(value(&third.points, id, "netin"), None);
        // A guest missing from the list is treated the same way.
        let gone = parse(vec![], &third.state, T0 + 30_000);
        assert!(gone.points.is_empty());
        let back = parse(vec![vm(30, 9000, 0, 0, 0)], &gone.state, T0 + 40_000);
        assert_eq!(value(&back.points, id, "netin"), None);
    }

    #[test]
    fn a_repeated_sample_is_not_a_zero_rate() {
        let id = "pve1:101";
        let first = parse(vec![vm(1000, 0, 0, 0, 0)], &RateState::default(), T0);
        // Proxmox had not refreshed yet: identical uptime and counters.
        let same = parse(vec![vm(1000, 0, 0, 0, 0)], &first.state, T0 + 5_000);
        assert_eq!(value(&same.points, id, "netin"), None);
        assert_eq!(value(&same.points, id, "cpu"), Some(25.0));
        let fresh = parse(vec![vm(1010, 10_000, 0, 0, 0)], &same.state, T0 + 10_000);
        assert_eq!(value(&fresh.points, id, "netin"), Some(1000.0));
        // An idle guest whose uptime moves on gets a real zero.
        let idle = parse(vec![vm(1020, 10_000, 0, 0, 0)], &fresh.state, T0 + 20_000);
        assert_eq!(value(&idle.points, id, "netin"), Some(0.0));
    }

    #[test]
    fn status_other_than_up_writes_nothing() {
        let items = vec![
            json!({"id": "node/n2", "type": "node", "node": "n2", "status": "offline", "cpu": 0.1, "mem": 1, "maxmem": 2}),
            json!({"id": "node/n3", "type": "node", "node": "n3", "cpu": 0.1}),
            json!({"id": "lxc/300", "type": "lxc", "node": "n1", "vmid": 300, "status": "unknown", "cpu": 0.1}),
            json!({"id": "qemu/301", "type": "qemu", "node": "n1", "vmid": 301, "status": "paused-ish", "cpu": 0.1}),
            json!({"id": "storage/n1/nfs", "type": "storage", "node": "n1", "storage": "nfs", "status": "unknown", "disk": 1, "maxdisk": 2}),
        ];
        let p = parse(items, &RateState::default(), T0);
        assert!(p.points.is_empty(), "{:?}", p.points);
        assert_eq!(p.recorded, 0);
    }

    #[test]
    fn zero_or_missing_maximum_skips_the_percentage() {
        let items = vec![
            json!({"id": "lxc/200", "type": "lxc", "node": "n1", "vmid": 200, "status": "running",
                   "cpu": 0.1, "mem": 5, "maxmem": 0, "disk": 5}),
            json!({"id": "storage/n1/s", "type": "storage", "node": "n1", "storage": "s",
                   "status": "available", "disk": 0, "maxdisk": 0}),
        ];
        let p = parse(items, &RateState::default(), T0);
        let metrics: Vec<&str> = p.points.iter().map(|p| p.metric.as_str()).collect();
        assert_eq!(metrics, ["cpu"]);
    }

    #[test]
    fn ids_fall_back_to_the_id_field_and_strings_are_numbers() {
        let items = vec![
            json!({"id": "qemu/105", "type": "qemu", "node": "n1", "status": "running", "cpu": "0.5"}),
            json!({"id": "node/n9", "type": "node", "status": "online", "cpu": 0.1}),
            json!({"id": "storage/n1/local", "type": "storage", "status": "available", "disk": 1, "maxdisk": 4}),
            json!({"id": "lxc/7", "node": "n1", "vmid": "7", "status": "running", "cpu": 1}),
        ];
        let p = parse(items, &RateState::default(), T0);
        assert_eq!(value(&p.points, "pve1:105", "cpu"), Some(50.0));
        assert_eq!(value(&p.points, "pve1:n9", "cpu"), Some(10.0));
        assert_eq!(value(&p.points, "pve1:n1:local", "disk"), Some(25.0));
        assert_eq!(value(&p.points, "pve1:7", "cpu"), Some(100.0));
        assert_eq!(
            p.points
                .iter()
                .find(|pt| pt.resource_id == "pve1:7")
                .unwrap()
                .resource_type,
            "container"
        );
    }

    #[test]
    fn hostile_payloads_never_panic_and_store_only_valid_points() {
        let huge = "x".repeat(300);
        let items = vec![
            json!(null),
            json!(42),
            json!("qemu/101"),
            json!([1, 2]),
            json!({}),
            json!({"type": "qemu", "status": "running"}),
            json!({"type": "qemu", "status": "running", "node": "n1", "vmid": -5}),
            json!({"type": "qemu", "status": "running", "node": "n1", "vmid": 1.5}),
            json!({"type": "qemu", "status": "running", "node": huge, "vmid": 1}),
            json!({"type": "qemu", "status": "running", "node": "bad\nnode", "vmid": 1}),
            json!({"type": 7, "status": "running", "node": "n1", "vmid": 1}),
            json!({"type": "qemu", "status": ["running"], "node": "n1", "vmid": 1}),
            json!({"type": "lxc", "status": "running", "node": "n1", "vmid": 2,
                   "cpu": -1, "mem": 1e308, "maxmem": 1e-308, "disk": "NaN", "maxdisk": "inf",
                   "netin": {"a": 1}, "netout": true, "diskread": -7, "diskwrite": 1e300,
                   "uptime": "soon"}),
            json!({"type": "lxc", "status": "running", "node": "n1", "vmid": 3,
                   "cpu": 18446744073709551615u64, "mem": 18446744073709551615u64,
                   "maxmem": 1, "netin": 18446744073709551615u64}),
        ];
        let first = parse(items.clone(), &RateState::default(), T0);
        let second = parse(items, &first.state, T0 + 1000);
        for p in first.points.iter().chain(&second.points) {
            assert!(p.validate().is_ok(), "{p:?}");
        }
        // Guests without a vmid; one with an unusable node name is still
        // recorded (its node is not in its id), without metadata.
        assert!(first.skipped >= 3, "{}", first.skipped);
        // The hostile container with unusable fields still records what it can.
        assert!(
            first
                .points
                .iter()
                .any(|p| p.resource_id == "pve1:3" && p.metric == "cpu")
        );

        for bad in [
            json!(null),
            json!([]),
            json!({"data": null}),
            json!({"data": {"a": 1}}),
            json!({"errors": {"x": "y"}}),
        ] {
            let err = parse_resources("pve1", &bad, &RateState::default(), T0).unwrap_err();
            assert!(err.contains("data"), "{err}");
        }
        for body in [
            &b""[..],
            b"<html>502 Bad Gateway</html>",
            b"{\"data\": [",
            b"\xff\xfe",
        ] {
            let err = parse_body("pve1", body, &RateState::default(), T0).unwrap_err();
            assert!(err.starts_with("malformed JSON"), "{err}");
        }
        // Nesting beyond serde_json's limit is an error, not a stack overflow.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse_body("pve1", deep.as_bytes(), &RateState::default(), T0).is_err());
    }

    #[test]
    fn a_clock_going_back_gives_no_rate() {
        let first = parse(vec![vm(1000, 0, 0, 0, 0)], &RateState::default(), T0);
        let back = parse(vec![vm(1010, 1000, 0, 0, 0)], &first.state, T0 - 5_000);
        assert_eq!(value(&back.points, "pve1:101", "netin"), None);
        let next = parse(vec![vm(1020, 2000, 0, 0, 0)], &back.state, T0 + 5_000);
        assert_eq!(value(&next.points, "pve1:101", "netin"), Some(100.0));
    }

    #[test]
    fn node_counters_get_rates_when_present() {
        let node = |uptime: u64, netin: u64| {
            json!({"id": "node/n1", "type": "node", "node": "n1", "status": "online",
                   "cpu": 0.1, "netin": netin, "uptime": uptime})
        };
        let first = parse(vec![node(100, 0)], &RateState::default(), T0);
        let second = parse(vec![node(110, 5000)], &first.state, T0 + 10_000);
        assert_eq!(value(&second.points, "pve1:n1", "netin"), Some(500.0));
    }

    fn meta<'a>(p: &'a Parsed, t: &str, id: &str) -> Option<&'a ResourceMeta> {
        let found: Vec<&Resource> = p
            .resources
            .iter()
            .filter(|r| r.resource_type == t && r.resource_id == id)
            .collect();
        assert!(found.len() <= 1, "{t}/{id} listed twice: {found:?}");
        found.first().map(|r| &r.meta)
    }

    fn node(name: &str, status: &str) -> Value {
        json!({"id": format!("node/{name}"), "type": "node", "node": name, "status": status,
               "cpu": 0.1, "mem": 1, "maxmem": 4})
    }

    fn store_on(node: &str, storage: &str, shared: u8, status: &str, used: u64) -> Value {
        json!({"id": format!("storage/{node}/{storage}"), "type": "storage", "node": node,
               "storage": storage, "status": status, "shared": shared,
               "disk": used, "maxdisk": 100})
    }

    #[test]
    fn shared_storage_is_one_series_and_local_storage_one_per_node() {
        let items = vec![
            node("n1", "online"),
            node("n2", "online"),
            node("n3", "online"),
            store_on("n1", "ceph", 1, "unavailable", 0),
            store_on("n2", "ceph", 1, "available", 40),
            store_on("n3", "ceph", 1, "available", 41),
            store_on("n1", "local", 0, "available", 10),
            store_on("n2", "local", 0, "available", 20),
            store_on("n3", "local", 0, "available", 30),
        ];
        let p = parse(items, &RateState::default(), T0);
        let storage: Vec<(&str, f64)> = p
            .points
            .iter()
            .filter(|pt| pt.resource_type == "storage")
            .map(|pt| (pt.resource_id.as_str(), pt.value))
            .collect();
        // The shared one once, from the first node that has it available.
        assert_eq!(
            storage,
            [
                ("pve1:ceph", 40.0),
                ("pve1:n1:local", 10.0),
                ("pve1:n2:local", 20.0),
                ("pve1:n3:local", 30.0)
            ]
        );
        let ceph = meta(&p, "storage", "pve1:ceph").unwrap();
        assert_eq!(ceph.node, None);
        assert_eq!(ceph.name.as_deref(), Some("ceph"));
        assert_eq!(ceph.status.as_deref(), Some("available"));
        assert_eq!(
            meta(&p, "storage", "pve1:n2:local")
                .unwrap()
                .node
                .as_deref(),
            Some("n2")
        );
        // Earlier versions kept one series per node: those are merged.
        let merges: Vec<&str> = p.merges.iter().map(|(_, old, _)| old.as_str()).collect();
        assert_eq!(merges, ["pve1:n1:ceph", "pve1:n2:ceph", "pve1:n3:ceph"]);
        assert!(
            p.merges
                .iter()
                .all(|(t, _, new)| t == "storage" && new == "pve1:ceph")
        );
    }

    #[test]
    fn a_node_that_is_not_online_leaves_a_gap_for_its_guests_and_storage() {
        let mut frozen = vm(5000, 1, 1, 1, 1);
        frozen["node"] = json!("n2");
        let items = vec![
            node("n1", "online"),
            node("n2", "offline"),
            frozen,
            store_on("n2", "local", 0, "available", 10),
            store_on("n2", "nfs", 1, "available", 10),
            store_on("n1", "nfs", 1, "available", 12),
        ];
        let p = parse(items, &RateState::default(), T0);
        let ids: Vec<&str> = p.points.iter().map(|pt| pt.resource_id.as_str()).collect();
        assert!(
            !ids.iter()
                .any(|id| *id == "pve1:101" || *id == "pve1:n2:local"),
            "{ids:?}"
        );
        assert_eq!(p.on_offline_nodes, 3);
        // The shared storage is still seen through the node that is up.
        assert_eq!(value(&p.points, "pve1:nfs", "disk"), Some(12.0));
        // The dead node's entries are stale: no metadata from them either,
        // but the node itself is known to be offline.
        assert!(meta(&p, "vm", "pve1:101").is_none());
        assert!(meta(&p, "storage", "pve1:n2:local").is_none());
        assert_eq!(
            meta(&p, "node", "pve1:n2").unwrap().status.as_deref(),
            Some("offline")
        );
        assert!(value(&p.points, "pve1:n2", "cpu").is_none());
        assert!(p.state.get("pve1:101").is_none());
    }

    #[test]
    fn a_migrated_guest_keeps_its_series_and_its_rates() {
        let first = parse(vec![vm(1000, 1000, 0, 0, 0)], &RateState::default(), T0);
        assert_eq!(
            meta(&first, "vm", "pve1:101").unwrap().node.as_deref(),
            Some("node1")
        );
        let mut moved = vm(1010, 11_000, 0, 0, 0);
        moved["node"] = json!("node2");
        let second = parse(vec![moved], &first.state, T0 + 10_000);
        assert_eq!(value(&second.points, "pve1:101", "cpu"), Some(25.0));
        assert_eq!(value(&second.points, "pve1:101", "netin"), Some(1000.0));
        assert_eq!(
            meta(&second, "vm", "pve1:101").unwrap().node.as_deref(),
            Some("node2")
        );
    }

    #[test]
    fn names_tags_and_templates_are_metadata() {
        let mut web = vm(1000, 0, 0, 0, 0);
        web["tags"] = json!("prod;web");
        let template = json!({"id": "qemu/9000", "type": "qemu", "node": "node1", "vmid": 9000,
            "name": "debian-tpl", "status": "stopped", "template": 1, "cpu": 0});
        let p = parse(
            vec![node("node1", "online"), web, template],
            &RateState::default(),
            T0,
        );
        let web = meta(&p, "vm", "pve1:101").unwrap();
        assert_eq!(
            web,
            &ResourceMeta {
                name: Some("web".into()),
                node: Some("node1".into()),
                instance: Some("pve1".into()),
                status: Some("running".into()),
                template: Some(false),
                tags: Some(vec!["prod".into(), "web".into()]),
            }
        );
        let tpl = meta(&p, "vm", "pve1:9000").unwrap();
        assert_eq!(tpl.template, Some(true));
        assert_eq!(tpl.tags, Some(vec![]), "no tags listed clears them");
        assert_eq!(tpl.status.as_deref(), Some("stopped"));
        // A template never runs: metadata, no points.
        assert!(p.points.iter().all(|pt| pt.resource_id != "pve1:9000"));
        let n = meta(&p, "node", "pve1:node1").unwrap();
        assert_eq!(n.name.as_deref(), Some("node1"));
        for r in &p.resources {
            assert_eq!(r.validate(), Ok(()), "{r:?}");
        }
    }
}

//! Turns one `GET /api2/json/cluster/resources` answer into points.
//!
//! Pure: the payload, the previous poll's counters and the poll time go in;
//! points and the counters to remember come out. No network, no clock, so
//! every rule (ids, percentages, rates, resets, gaps) is testable directly.
//!
//! The payload comes from another program over the network, so nothing in it
//! is trusted: any field may be missing, of the wrong type, negative or
//! absurdly large. A bad field drops that one metric; an entry that cannot
//! be named drops that entry; only a payload without a `data` list fails the
//! poll.

use super::sample::{self, Kind, RateState, Reading};
use crate::model::{Point, SeriesKey};
use serde_json::Value;

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

/// Points for every node, running guest and available storage in `payload`.
///
/// Series ids follow Pulse: node `instance:node` (`node`), guest
/// `instance:node:vmid` (`vm` for qemu, `container` for lxc), storage
/// `instance:node:storage` (`storage`).
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
    for entry in data {
        match classify(instance, entry) {
            Entry::Ignored => {}
            Entry::Unnamed => out.skipped += 1,
            Entry::Up(res) => {
                out.recorded += 1;
                record(&res, entry, prev, now_ms, &mut out);
            }
        }
    }
    Ok(out)
}

struct Resource {
    kind: Kind,
    id: String,
}

enum Entry {
    /// Another type, or not up (stopped guests write nothing: a gap).
    Ignored,
    /// A known type that lacks what its series id needs.
    Unnamed,
    Up(Resource),
}

fn classify(instance: &str, entry: &Value) -> Entry {
    if !entry.is_object() {
        return Entry::Ignored;
    }
    let raw_id = text(entry, "id");
    // `type` is always present in real answers; the id prefix is a fallback.
    let type_name = text(entry, "type").or_else(|| raw_id.and_then(|id| id.split('/').next()));
    let (kind, resource_type, up_status) = match type_name {
        Some("node") => (Kind::Node, "node", "online"),
        Some("qemu") => (Kind::Qemu, "vm", "running"),
        Some("lxc") => (Kind::Lxc, "container", "running"),
        Some("storage") => (Kind::Storage, "storage", "available"),
        _ => return Entry::Ignored,
    };
    if text(entry, "status") != Some(up_status) {
        return Entry::Ignored;
    }
    let id_part = |n: usize| raw_id.and_then(|id| id.split('/').nth(n));
    let id = match kind {
        Kind::Node => text(entry, "node")
            .or_else(|| id_part(1))
            .map(|node| format!("{instance}:{node}")),
        Kind::Qemu | Kind::Lxc => {
            let vmid = vmid(entry).or_else(|| id_part(1).and_then(|s| s.parse::<u64>().ok()));
            match (text(entry, "node"), vmid) {
                (Some(node), Some(vmid)) => Some(format!("{instance}:{node}:{vmid}")),
                _ => None,
            }
        }
        Kind::Storage => {
            let node = text(entry, "node").or_else(|| id_part(1));
            let storage = text(entry, "storage").or_else(|| id_part(2));
            match (node, storage) {
                (Some(node), Some(storage)) => Some(format!("{instance}:{node}:{storage}")),
                _ => None,
            }
        }
    };
    match id {
        Some(id) if SeriesKey::new(resource_type, &id, "cpu").validate().is_ok() => {
            Entry::Up(Resource { kind, id })
        }
        _ => Entry::Unnamed,
    }
}

fn record(res: &Resource, entry: &Value, prev: &RateState, now_ms: i64, out: &mut Parsed) {
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
        assert!(kinds.contains(&("vm", "pve1:node1:101")));
        assert!(kinds.contains(&("container", "pve1:node1:200")));
        assert!(kinds.contains(&("storage", "pve1:node1:local-lvm")));
        assert!((value(&p.points, "pve1:node1", "cpu").unwrap() - 5.12).abs() < 1e-9);
        assert_eq!(value(&p.points, "pve1:node1", "memory"), Some(25.0));
        assert_eq!(value(&p.points, "pve1:node1", "disk"), Some(10.0));
        assert_eq!(value(&p.points, "pve1:node1:101", "cpu"), Some(25.0));
        assert_eq!(value(&p.points, "pve1:node1:101", "memory"), Some(25.0));
        // qemu reports disk 0 because it cannot know: not charted.
        assert_eq!(value(&p.points, "pve1:node1:101", "disk"), None);
        assert_eq!(value(&p.points, "pve1:node1:200", "memory"), Some(50.0));
        assert_eq!(value(&p.points, "pve1:node1:200", "disk"), Some(12.5));
        assert_eq!(value(&p.points, "pve1:node1:local-lvm", "disk"), Some(25.0));
        // The first sample has no rate.
        for c in COUNTERS {
            assert_eq!(value(&p.points, "pve1:node1:101", c), None);
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
        let id = "pve1:node1:101";
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
        let id = "pve1:node1:101";
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
        assert_eq!(value(&second.points, "pve1:node1:101", "cpu"), Some(25.0));
        let third = parse(
            vec![vm(15, 1_010_000, 1_000_000, 1_000_000, 1_000_000)],
            &second.state,
            T0 + 20_000,
        );
        assert_eq!(
            value(&third.points, "pve1:node1:101", "netin"),
            Some(1000.0)
        );

        // Restarted during a long outage of ours: uptime is higher than
        // before but far less than the time that passed.
        let late = parse(
            vec![vm(1200, 2_000_000, 100, 100, 100)],
            &first.state,
            T0 + 3_600_000,
        );
        assert_eq!(value(&late.points, "pve1:node1:101", "netin"), None);
        // No restart over the same hour: the rate spans the whole hour.
        let steady = parse(
            vec![vm(4600, 3_600_100, 100, 100, 100)],
            &first.state,
            T0 + 3_600_000,
        );
        assert_eq!(
            value(&steady.points, "pve1:node1:101", "netin"),
            Some(1000.0)
        );
    }

    #[test]
    fn stopped_guests_leave_a_gap_and_start_over() {
        let id = "pve1:node1:101";
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
        let id = "pve1:node1:101";
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
        assert_eq!(value(&p.points, "pve1:n1:105", "cpu"), Some(50.0));
        assert_eq!(value(&p.points, "pve1:n9", "cpu"), Some(10.0));
        assert_eq!(value(&p.points, "pve1:n1:local", "disk"), Some(25.0));
        assert_eq!(value(&p.points, "pve1:n1:7", "cpu"), Some(100.0));
        assert_eq!(
            p.points
                .iter()
                .find(|pt| pt.resource_id == "pve1:n1:7")
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
        assert!(first.skipped >= 4, "{}", first.skipped);
        // The hostile container with unusable fields still records what it can.
        assert!(
            first
                .points
                .iter()
                .any(|p| p.resource_id == "pve1:n1:3" && p.metric == "cpu")
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
        assert_eq!(value(&back.points, "pve1:node1:101", "netin"), None);
        let next = parse(vec![vm(1020, 2000, 0, 0, 0)], &back.state, T0 + 5_000);
        assert_eq!(value(&next.points, "pve1:node1:101", "netin"), Some(100.0));
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
}

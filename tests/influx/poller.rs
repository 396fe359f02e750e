//! One cluster recorded both ways: by the API poller (its
//! `cluster/resources` answers, through the collector's own mapping) and by
//! the push (what each node's pvestatd hands Proxmox's InfluxDB plugin, built
//! by `pve_influx.pl`, over HTTP). Both must leave the very same series,
//! values and resource metadata, so a cluster can move from one to the other,
//! or run both, without a seam.

use super::*;
use pulse_metrics::collectors::proxmox::{RateState, parse_resources};
use pulse_metrics::{MetricsConfig, Resource};
use serde_json::json;

const INSTANCE: &str = "pve1";
const NODES: [&str; 3] = ["pve-a", "pve-b", "pve-c"];
const GIB: u64 = 1 << 30;

struct Guest {
    kind: &'static str,
    vmid: u64,
    name: &'static str,
    node: &'static str,
    status: &'static str,
    tags: Option<&'static str>,
    template: bool,
    uptime: u64,
    /// netin, netout, diskread, diskwrite
    counters: [u64; 4],
}

impl Guest {
    fn running(&self) -> bool {
        self.status == "running"
    }
    fn cpu(&self) -> f64 {
        if self.running() { 0.25 } else { 0.0 }
    }
    fn mem(&self) -> u64 {
        if self.running() { GIB } else { 0 }
    }
    /// Proxmox reports 0 for a VM's disk (it cannot see inside).
    fn disk(&self) -> u64 {
        if self.kind == "lxc" && self.running() {
            2 * GIB
        } else {
            0
        }
    }
}

/// The cluster at round `r` (0 or 1, 10 s apart): web01 migrates from pve-a
/// to pve-b, db01 loses its tag, a stopped guest and a template on pve-c.
fn guests(r: u64) -> Vec<Guest> {
    vec![
        Guest {
            kind: "qemu",
            vmid: 101,
            name: "web01",
            node: if r == 0 { "pve-a" } else { "pve-b" },
            status: "running",
            tags: Some("prod;web"),
            template: false,
            uptime: 1000 + 10 * r,
            counters: [
                1_000_000 + 100_000 * r,
                2_000_000 + 50_000 * r,
                10_000_000 + 409_600 * r,
                20_000_000,
            ],
        },
        Guest {
            kind: "lxc",
            vmid: 200,
            name: "db01",
            node: "pve-b",
            status: "running",
            tags: (r == 0).then_some("prod"),
            template: false,
            uptime: 500 + 10 * r,
            counters: [1000 + 10_000 * r, 500, 4096, 8192 + 81_920 * r],
        },
        Guest {
            kind: "qemu",
            vmid: 300,
            name: "batch",
            node: "pve-c",
            status: "stopped",
            tags: None,
            template: false,
            uptime: 0,
            counters: [0; 4],
        },
        Guest {
            kind: "qemu",
            vmid: 9000,
            name: "debian 12 tpl",
            node: "pve-c",
            status: "stopped",
            tags: None,
            template: true,
            uptime: 0,
            counters: [0; 4],
        },
    ]
}

struct Storage {
    name: &'static str,
    plugin: &'static str,
    shared: u8,
    used: u64,
    total: u64,
}

/// Node `i`'s storages at round `r`: a shared one (the same figures from
/// every node) and a local one.
fn storages(i: usize, r: u64) -> [Storage; 2] {
    [
        Storage {
            name: "cephfs",
            plugin: "cephfs",
            shared: 1,
            used: 300 * GIB + r * GIB,
            total: 1000 * GIB,
        },
        Storage {
            name: "local-lvm",
            plugin: "lvmthin",
            shared: 0,
            used: 10 * GIB * (i as u64 + 1),
            total: 100 * GIB,
        },
    ]
}

/// Node `i`'s cpu (0..1), memory used and root disk used.
fn node_figures(i: usize, r: u64) -> (f64, u64, u64) {
    let i = i as u64 + 1;
    (0.125 * i as f64, 8 * GIB * i + r * GIB, 20 * GIB * i)
}
const NODE_MAXMEM: u64 = 64 * GIB;
const NODE_MAXDISK: u64 = 100 * GIB;

/// `GET /cluster/resources` at round `r`.
fn cluster_resources(r: u64) -> Value {
    let mut data = Vec::new();
    for (i, n) in NODES.iter().enumerate() {
        let (cpu, mem, disk) = node_figures(i, r);
        data.push(json!({"id": format!("node/{n}"), "type": "node", "node": n,
            "status": "online", "cpu": cpu, "maxcpu": 16, "mem": mem, "maxmem": NODE_MAXMEM,
            "disk": disk, "maxdisk": NODE_MAXDISK, "uptime": 864_000 + 10 * r, "level": ""}));
    }
    for g in guests(r) {
        let [netin, netout, diskread, diskwrite] = g.counters;
        let mut e = json!({"id": format!("{}/{}", g.kind, g.vmid), "type": g.kind,
            "vmid": g.vmid, "name": g.name, "node": g.node, "status": g.status,
            "template": u8::from(g.template), "cpu": g.cpu(), "maxcpu": 2, "mem": g.mem(),
            "maxmem": 4 * GIB, "disk": g.disk(), "maxdisk": 8 * GIB, "netin": netin,
            "netout": netout, "diskread": diskread, "diskwrite": diskwrite,
            "uptime": g.uptime});
        if let Some(tags) = g.tags {
            e["tags"] = json!(tags);
        }
        data.push(e);
    }
    for (i, n) in NODES.iter().enumerate() {
        for s in storages(i, r) {
            data.push(
                json!({"id": format!("storage/{n}/{}", s.name), "type": "storage",
                "node": n, "storage": s.name, "status": "available", "shared": s.shared,
                "plugintype": s.plugin, "content": "images,rootdir", "disk": s.used,
                "maxdisk": s.total}),
            );
        }
    }
    json!({ "data": data })
}

/// What pvestatd on each node hands the metric plugins at round `r`
/// (`ctime` seconds): per node its four transactions (node, qemu, lxc,
/// storage), as in `proxmox.rs`.
fn pushes(r: u64, ctime: i64) -> Vec<Value> {
    let mut transactions = Vec::new();
    for (i, n) in NODES.iter().enumerate() {
        let (cpu, mem, disk) = node_figures(i, r);
        transactions.push(json!([{"kind": "node", "node": n, "ctime": ctime, "data": {
            "uptime": 864_000 + 10 * r,
            "cpustat": {"cpu": cpu, "cpus": 16, "user": 1234, "idle": 98765, "wait": 0.001},
            "memory": {"memtotal": NODE_MAXMEM, "memused": mem, "memfree": NODE_MAXMEM - mem},
            "blockstat": {"blocks": NODE_MAXDISK, "used": disk, "bfree": NODE_MAXDISK - disk},
            "nics": {"eno1": {"receive": 1000 * r, "transmit": 2000 * r, "type": "physical"}}
        }}]));
        for kind in ["qemu", "lxc"] {
            let calls: Vec<Value> = guests(r)
                .iter()
                .filter(|g| g.kind == kind && g.node == *n)
                .map(|g| {
                    let [netin, netout, diskread, diskwrite] = g.counters;
                    let mut data = json!({"vmid": g.vmid, "status": g.status, "name": g.name,
                        "cpus": 2, "cpu": g.cpu(), "mem": g.mem(), "maxmem": 4 * GIB,
                        "disk": g.disk(), "maxdisk": 8 * GIB, "uptime": g.uptime,
                        "netin": netin, "netout": netout, "diskread": diskread,
                        "diskwrite": diskwrite});
                    if kind == "qemu" {
                        data["qmpstatus"] = json!(g.status);
                    } else {
                        data["type"] = json!("lxc");
                    }
                    // vmstatus sets these only when they apply.
                    if g.template {
                        data["template"] = json!(1);
                    }
                    if let Some(tags) = g.tags {
                        data["tags"] = json!(tags);
                    }
                    json!({"kind": kind, "vmid": g.vmid, "node": n, "ctime": ctime,
                           "data": data})
                })
                .collect();
            if !calls.is_empty() {
                transactions.push(Value::Array(calls));
            }
        }
        let calls: Vec<Value> = storages(i, r)
            .iter()
            .map(|s| {
                json!({"kind": "storage", "node": n, "storeid": s.name, "ctime": ctime,
                       "data": {"type": s.plugin, "total": s.total, "used": s.used,
                                "avail": s.total - s.used, "shared": s.shared,
                                "content": "images,rootdir", "active": 1, "enabled": 1}})
            })
            .collect();
        transactions.push(Value::Array(calls));
    }
    transactions
}

/// A store of an earlier version kept the shared storage once per node.
fn seed_old_history(store: &Store, at_ms: i64) {
    for n in NODES {
        store
            .write(
                "storage",
                &format!("{INSTANCE}:{n}:cephfs"),
                "disk",
                25.0,
                at_ms,
            )
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poller_and_the_push_record_one_cluster_the_same() {
    let t0 = pulse_metrics::model::now_ms() / 1000 - 120;
    let old_ms = (t0 - 600) * 1000;
    let transactions: Vec<Value> = (0..2u64)
        .flat_map(|r| pushes(r, t0 + 10 * r as i64))
        .collect();
    let Some(payloads) = pve_payloads(&json!({"transactions": transactions})) else {
        return;
    };

    // Pushed: each node's transactions over HTTP v2, bucket = instance.
    let dir = tempfile::tempdir().unwrap();
    let s = Service::start(test_config(dir.path())).await;
    seed_old_history(&s.store, old_ms);
    for p in &payloads {
        let body = p["body"].as_str().unwrap().as_bytes().to_vec();
        let (status, answer) = s
            .post(&format!("/api/v2/write?org=o&bucket={INSTANCE}"), &[], body)
            .await;
        assert_eq!(status, 204, "{answer}");
    }

    // Polled: the collector's mapping of the same two moments, written as
    // its poll loop writes them (merges, then metadata, then points).
    let polled_dir = tempfile::tempdir().unwrap();
    let polled = Store::open(MetricsConfig {
        database_path: polled_dir.path().join("metrics.db"),
        ..MetricsConfig::default()
    })
    .unwrap();
    seed_old_history(&polled, old_ms);
    let mut rates = RateState::default();
    for r in 0..2u64 {
        let now = (t0 + 10 * r as i64) * 1000;
        let parsed = parse_resources(INSTANCE, &cluster_resources(r), &rates, now).unwrap();
        for (t, old, new) in &parsed.merges {
            polled.merge_resource(t, old, new).unwrap();
        }
        polled.write_resources(&parsed.resources).unwrap();
        polled.write_batch(&parsed.points).unwrap();
        rates = parsed.state;
    }

    let pushed_points = stored(&s.store).await;
    let polled_points = stored(&polled).await;
    let pushed_meta = s.store.resources();
    let polled_meta = polled.resources();

    // Not two empty stores: what the cluster is, as the CONTRACT names it.
    let t1 = (t0 + 10) * 1000;
    let ids: std::collections::BTreeSet<(&str, &str)> = polled_points
        .keys()
        .into_iter()
        .map(|(t, id, _)| (t, id))
        .collect();
    let want: std::collections::BTreeSet<(&str, &str)> = [
        ("container", "pve1:200"),
        ("node", "pve1:pve-a"),
        ("node", "pve1:pve-b"),
        ("node", "pve1:pve-c"),
        ("storage", "pve1:cephfs"),
        ("storage", "pve1:pve-a:local-lvm"),
        ("storage", "pve1:pve-b:local-lvm"),
        ("storage", "pve1:pve-c:local-lvm"),
        ("vm", "pve1:101"),
    ]
    .into_iter()
    .collect();
    assert_eq!(ids, want);
    assert_eq!(
        polled_points.get("vm", "pve1:101", "netin"),
        [(t1, 10_000.0)]
    );
    // The shared storage once per moment, continuing its per-node history.
    assert_eq!(
        polled_points.get("storage", "pve1:cephfs", "disk"),
        [
            (old_ms, 25.0),
            (t0 * 1000, 30.0),
            (t1, 301.0 / 1000.0 * 100.0)
        ]
    );
    let web = polled.resource("vm", "pve1:101").unwrap();
    assert_eq!(web.node.as_deref(), Some("pve-b"));

    // The same series with the same points and values, both ways.
    assert_eq!(
        pushed_points.keys(),
        polled_points.keys(),
        "series pushed (left) and polled (right)"
    );
    for (key, points) in &polled_points.0 {
        assert_eq!(pushed_points.0[key], *points, "{key:?} pushed vs polled");
    }
    // The same metadata: names, nodes, status, templates, tags.
    let by_id = |rs: &[Resource]| -> BTreeMap<(String, String), pulse_metrics::ResourceMeta> {
        rs.iter()
            .map(|r| {
                (
                    (r.resource_type.clone(), r.resource_id.clone()),
                    r.meta.clone(),
                )
            })
            .collect()
    };
    let (pushed_meta, polled_meta) = (by_id(&pushed_meta), by_id(&polled_meta));
    assert_eq!(
        pushed_meta.keys().collect::<Vec<_>>(),
        polled_meta.keys().collect::<Vec<_>>(),
        "resources pushed (left) and polled (right)"
    );
    for (key, meta) in &polled_meta {
        assert_eq!(pushed_meta[key], *meta, "{key:?} pushed (left) vs polled");
    }
    // Including a tag removed between the rounds and a template.
    assert_eq!(
        polled_meta[&("container".into(), "pve1:200".into())].tags,
        None
    );
    assert_eq!(
        polled_meta[&("vm".into(), "pve1:9000".into())].template,
        Some(true)
    );
    polled.close().unwrap();
    s.stop().await;
}

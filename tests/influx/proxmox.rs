//! What Proxmox VE pushes, built the way pve-manager builds it from the data
//! pvestatd hands its metric plugins (node: `update_node_status`'s
//! `$node_metric`; guests: `PVE::QemuServer::vmstatus(undef, 1)` and
//! `PVE::LXC::vmstatus()` entries; storage: `PVE::Storage::storage_info`
//! entries), sent over HTTP v1, HTTP v2 and UDP.

use super::*;
use serde_json::json;

/// Seconds, whole, as pvestatd's `time()`.
fn ctime_now(ago_s: i64) -> i64 {
    pulse_metrics::model::now_ms() / 1000 - ago_s
}

/// `update_node_status`'s hash: /proc/stat, /proc/meminfo, Filesys::Df in
/// bytes and /proc/net/dev, as read by PVE::ProcFSTools.
fn node_metric(cpu: f64) -> Value {
    json!({
        "uptime": 864000,
        "cpustat": {
            "user": 123456789, "nice": 1234, "system": 2345678, "idle": 987654321,
            "iowait": 34567, "irq": 0, "softirq": 45678, "steal": 0, "guest": 0,
            "guest_nice": 0, "sum": 0, "used": 125882379, "total": 1113571267,
            "ctime": 1700000000.12345, "cpu": cpu, "wait": 0.000123456789012345,
            "avg1": "0.52", "avg5": "0.48", "avg15": "0.41", "cpus": 16
        },
        "memory": {
            "memtotal": 67_430_096_896_u64, "memfree": 3_221_225_472_u64,
            "memavailable": 50_572_572_672_u64, "memused": 16_857_524_224_u64,
            "memshared": 0, "swaptotal": 8_589_930_496_u64, "swapfree": 8_589_930_496_u64,
            "swapused": 0, "arcsize": 4_294_967_296_u64, "arcmin": 2_107_190_528_u64,
            "arcmax": 33_715_048_448_u64
        },
        "blockstat": {
            "blocks": 100_861_726_720_u64, "bfree": 60_517_036_032_u64,
            "bavail": 55_367_696_384_u64, "used": 40_344_690_688_u64, "per": 42,
            "user_blocks": 95_712_387_072_u64, "user_bfree": 55_367_696_384_u64,
            "user_bavail": 55_367_696_384_u64, "user_used": 40_344_690_688_u64,
            "files": 6_291_456, "ffree": 5_987_654, "favail": 5_987_654,
            "fused": 303_802, "fper": 5
        },
        "nics": {
            "lo": {"receive": 123456, "transmit": 123456, "type": "virtual"},
            "eno1": {"receive": 987_654_321_u64, "transmit": 123_456_789, "type": "physical"},
            "vmbr0": {"receive": 887_654_321_u64, "transmit": 113_456_789, "type": "virtual"},
            "tap101i0": {"receive": 2_000_000, "transmit": 1_000_000, "type": "virtual"},
            "fwbr101i0": {"receive": 0, "transmit": 0, "type": "virtual"}
        }
    })
}

/// A running VM as `PVE::QemuServer::vmstatus(undef, 1)` reports it, QMP
/// answers included (booleans and lists of QMP are skipped by Proxmox).
fn qemu(uptime: u64, netin: u64, netout: u64, diskread: u64, diskwrite: u64) -> Value {
    json!({
        "vmid": 101, "pid": 12345, "status": "running", "qmpstatus": "running",
        "name": "web01", "tags": "prod;web", "cpus": 4, "cpu": 0.25,
        "maxmem": 4_294_967_296_u64, "mem": 2_147_483_648_u64, "memhost": 2_500_000_000_u64,
        "balloon": 4_294_967_296_u64, "freemem": 1_073_741_824, "balloon_min": 2_147_483_648_u64,
        "shares": 1000, "disk": 0, "maxdisk": 34_359_738_368_u64, "uptime": uptime,
        "netin": netin, "netout": netout, "diskread": diskread, "diskwrite": diskwrite,
        "pressurecpusome": 0.12, "pressurecpufull": 0, "pressureiosome": 1.5,
        "pressureiofull": 1.25, "pressurememorysome": 0, "pressurememoryfull": 0,
        "running-machine": "pc-i440fx-9.0+pve0", "running-qemu": "9.0.2", "serial": 1,
        "nics": {"tap101i0": {"netin": netin, "netout": netout}},
        "blockstat": {
            "scsi0": {
                "rd_bytes": diskread, "wr_bytes": diskwrite, "rd_operations": 1000,
                "wr_operations": 2000, "flush_operations": 30, "rd_total_time_ns": 123456789,
                "wr_total_time_ns": 987654321, "flush_total_time_ns": 1234,
                "rd_merged": 0, "wr_merged": 0, "idle_time_ns": 5_000_000_000_u64,
                "failed_rd_operations": 0, "failed_wr_operations": 0,
                "invalid_rd_operations": 0, "invalid_wr_operations": 0,
                "account_invalid": true, "account_failed": true, "timed_stats": []
            },
            "ide2": {"rd_bytes": 0, "wr_bytes": 0, "account_invalid": false, "timed_stats": []}
        },
        "ballooninfo": {
            "actual": 4_294_967_296_u64, "max_mem": 4_294_967_296_u64,
            "total_mem": 4_100_000_000_u64, "free_mem": 1_952_516_352_u64,
            "mem_swapped_in": 0, "mem_swapped_out": 0, "major_page_faults": 120,
            "minor_page_faults": 345678, "last_update": 1_700_000_000
        },
        "proxmox-support": {
            "pbs-dirty-bitmap": true, "pbs-dirty-bitmap-migration": true,
            "pbs-library-version": "1.4.1 (UNKNOWN)", "pbs-masterkey": true,
            "query-bitmap-info": true, "backup-max-workers": true
        }
    })
}

/// A stopped template VM: everything zero, no QMP data.
fn qemu_stopped() -> Value {
    json!({
        "vmid": 102, "status": "stopped", "qmpstatus": "stopped", "name": "db template",
        "template": 1, "cpus": 2, "cpu": 0, "maxmem": 2_147_483_648_u64, "mem": 0,
        "memhost": 0, "disk": 0, "maxdisk": 10_737_418_240_u64, "uptime": 0,
        "netin": 0, "netout": 0
    })
}

/// A running container as `PVE::LXC::vmstatus()` reports it (pressure values
/// are the strings read from cgroup files).
fn lxc(uptime: u64, netin: u64) -> Value {
    json!({
        "vmid": 200, "type": "lxc", "pid": 4242, "status": "running", "name": "ct200",
        "tags": "infra", "cpus": 2, "cpu": 0.5, "mem": 268_435_456, "swap": 0,
        "maxmem": 536_870_912, "maxswap": 536_870_912, "disk": 1_073_741_824,
        "maxdisk": 8_589_934_592_u64, "uptime": uptime, "netin": netin, "netout": 500,
        "diskread": 4096, "diskwrite": 8192, "pressurecpusome": "0.00",
        "pressurecpufull": "0.00", "pressureiosome": "0.10", "pressureiofull": "0.05",
        "pressurememorysome": "0.00", "pressurememoryfull": "0.00"
    })
}

/// `PVE::Storage::storage_info` entries (only active ones are pushed).
fn storage(kind: &str, shared: u8, used: u64, total: u64, content: &str) -> Value {
    json!({
        "type": kind, "total": total, "avail": total - used, "used": used,
        "shared": shared, "content": content, "active": 1, "enabled": 1
    })
}

/// One pvestatd round of node `node` at `ctime`: its four transactions
/// (node, qemu, lxc, storage), as pvestatd runs them.
fn round(ctime: i64, node: &str, vm: Value, ct: Value) -> Value {
    json!([
        [{"kind": "node", "node": node, "ctime": ctime, "data": node_metric(0.0512345678901234)}],
        [
            {"kind": "qemu", "vmid": 101, "node": node, "ctime": ctime, "data": vm},
            {"kind": "qemu", "vmid": 102, "node": node, "ctime": ctime, "data": qemu_stopped()}
        ],
        [{"kind": "lxc", "vmid": 200, "node": node, "ctime": ctime, "data": ct}],
        [
            {"kind": "storage", "node": node, "storeid": "local", "ctime": ctime,
             "data": storage("dir", 0, 25_000_000_000, 100_000_000_000, "backup,iso,vztmpl")},
            {"kind": "storage", "node": node, "storeid": "ceph-pool", "ctime": ctime,
             "data": storage("rbd", 1, 300, 1000, "images,rootdir")}
        ]
    ])
}

/// Two rounds 10 s apart, as Proxmox pushes every pvestatd cycle.
fn two_rounds(t0: i64, mtu: u32) -> Option<Vec<Value>> {
    let first = round(
        t0,
        "pve-a",
        qemu(1000, 1_000_000, 2_000_000, 10_000_000, 20_000_000),
        lxc(500, 1000),
    );
    let second = round(
        t0 + 10,
        "pve-a",
        qemu(1010, 1_100_000, 2_050_000, 10_409_600, 20_000_000),
        lxc(510, 11_000),
    );
    let mut transactions = first.as_array().unwrap().clone();
    transactions.extend(second.as_array().unwrap().iter().cloned());
    pve_payloads(&json!({"mtu": mtu, "transactions": transactions}))
}

/// Names, nodes and status, as resource metadata.
fn check_resources(store: &pulse_metrics::Store, inst: &str) {
    use pulse_metrics::ResourceMeta;
    let meta = |t: &str, id: &str| {
        store
            .resource(t, &format!("{inst}:{id}"))
            .unwrap_or_else(|| panic!("no metadata for {t} {inst}:{id}: {:?}", store.resources()))
    };
    let text = |s: &str| Some(s.to_string());
    let tags = |t: &[&str]| Some(t.iter().map(|s| s.to_string()).collect());
    // As the poller records a node: its name, no node of its own.
    assert_eq!(
        meta("node", "pve-a"),
        ResourceMeta {
            name: text("pve-a"),
            instance: text(inst),
            status: text("online"),
            ..ResourceMeta::default()
        }
    );
    assert_eq!(
        meta("vm", "101"),
        ResourceMeta {
            name: text("web01"),
            node: text("pve-a"),
            instance: text(inst),
            status: text("running"),
            template: Some(false),
            tags: tags(&["prod", "web"]),
        }
    );
    // Stopped, a template, and a name with a space (escaped by Proxmox).
    assert_eq!(
        meta("vm", "102"),
        ResourceMeta {
            name: text("db template"),
            node: text("pve-a"),
            instance: text(inst),
            status: text("stopped"),
            template: Some(true),
            tags: None,
        }
    );
    let ct = meta("container", "200");
    assert_eq!((ct.name, ct.tags), (text("ct200"), tags(&["infra"])));
    assert_eq!(meta("storage", "pve-a:local").node, text("pve-a"));
    let ceph = meta("storage", "ceph-pool");
    assert_eq!((ceph.name, ceph.node), (text("ceph-pool"), None));
}

/// What two rounds must give, for instance `inst`.
fn check_two_rounds(stored: &Stored, inst: &str, t0: i64) {
    let (a, b) = (t0 * 1000, (t0 + 10) * 1000);
    let node = format!("{inst}:pve-a");
    let vm = format!("{inst}:101");
    let ct = format!("{inst}:200");
    let local = format!("{inst}:pve-a:local");
    let ceph = format!("{inst}:ceph-pool");

    // Node: cpu from cpustat (Perl prints 15 significant digits), memory
    // memused/memtotal, disk used/blocks (Filesys::Df, as pvestatd's dused).
    for ts in [a, b] {
        let cpu = stored.at("node", &node, "cpu", ts).expect("node cpu");
        assert!(close(cpu, 5.12345678901234), "{cpu}");
        let mem = stored.at("node", &node, "memory", ts).unwrap();
        assert!(
            close(mem, 16_857_524_224.0 / 67_430_096_896.0 * 100.0),
            "{mem}"
        );
        let disk = stored.at("node", &node, "disk", ts).unwrap();
        assert!(
            close(disk, 40_344_690_688.0 / 100_861_726_720.0 * 100.0),
            "{disk}"
        );
    }
    // VM 101: cpu, memory, no disk (Proxmox reports 0 for VMs), rates on
    // the second round only.
    assert_eq!(stored.at("vm", &vm, "cpu", a), Some(25.0));
    assert_eq!(stored.at("vm", &vm, "memory", a), Some(50.0));
    assert!(stored.get("vm", &vm, "disk").is_empty());
    assert_eq!(stored.get("vm", &vm, "netin"), [(b, 10_000.0)]);
    assert_eq!(stored.get("vm", &vm, "netout"), [(b, 5_000.0)]);
    assert_eq!(stored.get("vm", &vm, "diskread"), [(b, 40_960.0)]);
    assert_eq!(stored.get("vm", &vm, "diskwrite"), [(b, 0.0)]);
    // The stopped template writes nothing.
    assert!(
        stored
            .keys()
            .iter()
            .all(|(_, id, _)| *id != format!("{inst}:102")),
        "{:?}",
        stored.keys()
    );
    // Container 200.
    assert_eq!(stored.at("container", &ct, "cpu", a), Some(50.0));
    assert_eq!(stored.at("container", &ct, "memory", a), Some(50.0));
    assert_eq!(stored.at("container", &ct, "disk", a), Some(12.5));
    assert_eq!(stored.get("container", &ct, "netin"), [(b, 1000.0)]);
    assert_eq!(stored.get("container", &ct, "netout"), [(b, 0.0)]);
    // Storage: local per node, shared once for the cluster.
    assert_eq!(stored.at("storage", &local, "disk", a), Some(25.0));
    assert_eq!(stored.at("storage", &ceph, "disk", a), Some(30.0));

    // Exactly these series: nothing from nics, blockstat, ballooninfo,
    // proxmox-support or the node's system line.
    let mut want: Vec<(String, String, String)> = Vec::new();
    for m in ["cpu", "memory", "disk"] {
        want.push(("node".into(), node.clone(), m.into()));
        want.push(("container".into(), ct.clone(), m.into()));
    }
    for m in ["cpu", "memory", "netin", "netout", "diskread", "diskwrite"] {
        want.push(("vm".into(), vm.clone(), m.into()));
    }
    for m in ["netin", "netout", "diskread", "diskwrite"] {
        want.push(("container".into(), ct.clone(), m.into()));
    }
    want.push(("storage".into(), local.clone(), "disk".into()));
    want.push(("storage".into(), ceph.clone(), "disk".into()));
    want.sort();
    let got: Vec<(String, String, String)> = stored.0.keys().cloned().collect();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxmox_over_http_v2_with_its_token_header() {
    let t0 = ctime_now(60);
    let Some(payloads) = two_rounds(t0, 1500) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s = Service::with_token(dir.path()).await;
    // Proxmox's "test connection": GET /health with the token.
    let (status, health) = s.get("/health").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "pass");

    let auth = format!("Token {TOKEN}");
    let (mut points, mut ignored) = (0, 0);
    for p in &payloads {
        let body = p["body"].as_str().unwrap().to_string();
        // As Proxmox sends it: a POST with the token and no content type.
        let r = s
            .http
            .post(s.url("/api/v2/write?org=proxmox&bucket=pve1"))
            .header("authorization", &auth)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 204);
        let header = |name: &str| -> usize { r.headers()[name].to_str().unwrap().parse().unwrap() };
        points += header("x-pulse-metrics-points");
        ignored += header("x-pulse-metrics-ignored");
    }
    let stored = s.points().await;
    assert_eq!(points, stored.count());
    // Per round: 5 node nics, 2 guest blockstat, nics, ballooninfo and
    // proxmox-support lines.
    assert_eq!(ignored, 2 * (5 + 2 + 1 + 1 + 1));
    check_two_rounds(&stored, "pve1", t0);
    check_resources(&s.store, "pve1");

    // The push shows on the status board like a collector.
    let c = s.collector("influx:pve1").await;
    assert_eq!(c["state"], "ok", "{c}");
    assert_eq!(c["pointsWritten"], s.points().await.count(), "{c}");
    assert_eq!(c["errors"], 0, "{c}");
    assert!(c["lastSuccess"].as_i64().unwrap() > 0, "{c}");
    // And on /metrics.
    let metrics = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("pulse_metrics_collector_influx_pve1_points_total "),
        "{metrics}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxmox_over_http_v1() {
    let t0 = ctime_now(90);
    let Some(payloads) = two_rounds(t0, 1500) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s = Service::with_token(dir.path()).await;
    for p in &payloads {
        let body = p["body"].as_str().unwrap().as_bytes().to_vec();
        let path = format!("/write?db=cluster-b&u=proxmox&p={TOKEN}");
        let (status, answer) = s.post(&path, &[], body).await;
        assert_eq!(status, 204, "{answer}");
    }
    check_two_rounds(&s.points().await, "cluster-b", t0);
    check_resources(&s.store, "cluster-b");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxmox_over_udp_in_mtu_sized_datagrams() {
    let t0 = ctime_now(120);
    // A small MTU splits every transaction into several datagrams, as on a
    // real network.
    let Some(payloads) = two_rounds(t0, 600) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut c = test_config(dir.path());
    c.ingest.influx.udp = "127.0.0.1:0".into();
    c.ingest.influx.udp_instance = "pve-udp".into();
    let s = Service::start(c).await;
    assert_eq!(s.collector("influx:pve-udp").await["state"], "listening");

    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut sent = 0;
    for p in &payloads {
        for d in p["datagrams"].as_array().unwrap() {
            let d = d.as_str().unwrap();
            assert!(
                d.len() < 600 - 50 + 400,
                "a datagram stays near the MTU: {}",
                d.len()
            );
            sock.send_to(d.as_bytes(), s.udp_addr()).await.unwrap();
            sent += 1;
            // The rounds' order matters for the rates, as on a real node
            // where they are 10 s apart.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    assert!(sent > payloads.len(), "payloads were split: {sent}");
    // 6 node, 8 VM, 10 container and 4 storage points.
    let want = 28;
    let mut stored = s.points().await;
    for _ in 0..200 {
        if stored.count() >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        stored = s.points().await;
    }
    assert_eq!(stored.count(), want);
    check_two_rounds(&stored, "pve-udp", t0);
    check_resources(&s.store, "pve-udp");
    let c = s.collector("influx:pve-udp").await;
    assert_eq!(c["state"], "ok", "{c}");
    assert_eq!(c["errors"], 0, "{c}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxmox_rates_follow_the_collectors_reset_rules() {
    let t0 = ctime_now(300);
    let vm = |u, n| qemu(u, n, 0, 0, 0);
    let call = |t: i64, data: Value| json!([{"kind": "qemu", "vmid": 101, "node": "pve-a", "ctime": t, "data": data}]);
    let mut stopped = qemu_stopped();
    stopped["vmid"] = json!(101);
    let transactions = json!([
        call(t0, vm(1000, 1_000_000)),
        // Counter went down (reset): no netin point.
        call(t0 + 10, vm(1010, 500)),
        call(t0 + 20, vm(1020, 10_500)),
        // Restarted (uptime went back) with higher counters: no rates.
        call(t0 + 30, vm(5, 9_000_000)),
        call(t0 + 40, vm(15, 9_010_000)),
        // Stopped, then back: the first sample back gives no rate.
        call(t0 + 50, stopped),
        call(t0 + 60, vm(5, 100)),
        call(t0 + 70, vm(15, 2100)),
        // Migrated to another node: same series (id has no node).
        json!([{"kind": "qemu", "vmid": 101, "node": "pve-b", "ctime": t0 + 80,
                "data": vm(25, 4100)}]),
    ]);
    let Some(payloads) = pve_payloads(&json!({"transactions": transactions})) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s = Service::start(test_config(dir.path())).await;
    for p in &payloads {
        let body = p["body"].as_str().unwrap().as_bytes().to_vec();
        let (status, answer) = s.post("/api/v2/write?org=o&bucket=pve1", &[], body).await;
        assert_eq!(status, 204, "{answer}");
    }
    let stored = s.points().await;
    let ms = |dt: i64| (t0 + dt) * 1000;
    assert_eq!(
        stored.get("vm", "pve1:101", "netin"),
        [
            (ms(20), 1000.0),
            (ms(40), 1000.0),
            (ms(70), 200.0),
            (ms(80), 200.0)
        ]
    );
    assert_eq!(stored.get("vm", "pve1:101", "cpu").len(), 8);
    // The node is metadata, and follows the migration.
    let meta = s.store.resource("vm", "pve1:101").unwrap();
    assert_eq!(meta.node.as_deref(), Some("pve-b"));
    assert_eq!(meta.status.as_deref(), Some("running"));
    s.stop().await;
}

//! Line protocol push: how long one request takes end to end in the
//! service's receiver (parse, map, metadata, store queue), for what Proxmox
//! sends and for the largest body accepted. Proxmox waits 1 s by default
//! (its metric server `timeout`) before it calls a push failed.
//!
//! `cargo bench --bench influx` (release build). Prints the figures; the
//! last line is one JSON object with them.

use pulse_metrics::collectors::{Sink, StatusBoard};
use pulse_metrics::influx::{Mode, Precision, Receiver};
use pulse_metrics::model::now_ms;
use pulse_metrics::{MetricsConfig, Store};
use std::fmt::Write;
use std::sync::Arc;
use std::time::Instant;

const ROUNDS: usize = 30;

/// One pvestatd round of one node with `vms` VMs and `cts` containers, in
/// the shape Proxmox's InfluxDB plugin gives it (all measurements, nested
/// QMP data included), at `t` seconds.
fn proxmox_round(node: &str, vms: usize, cts: usize, t: i64, k: u64) -> String {
    let ns = t * 1_000_000_000;
    let mut s = String::new();
    let tags = format!("object=nodes,host={node}");
    let _ = writeln!(
        s,
        "cpustat,{tags} avg1=0.52,avg15=0.41,avg5=0.48,cpu=0.0512345678901234,cpus=16,ctime=1700000000.12345,guest=0,guest_nice=0,idle={},iowait=34567,irq=0,nice=1234,softirq=45678,steal=0,sum=0,system=2345678,total=1113571267,used=125882379,user=123456789,wait=0.000123456789012345 {ns}",
        987_654_321 + k
    );
    let _ = writeln!(
        s,
        "memory,{tags} arcmax=33715048448,arcmin=2107190528,arcsize=4294967296,memavailable=50572572672,memfree=3221225472,memshared=0,memtotal=67430096896,memused=16857524224,swapfree=8589930496,swapused=0,swaptotal=8589930496 {ns}"
    );
    let _ = writeln!(
        s,
        "blockstat,{tags} bavail=55367696384,bfree=60517036032,blocks=100861726720,favail=5987654,ffree=5987654,files=6291456,fper=5,fused=303802,per=42,used=40344690688,user_bavail=55367696384,user_bfree=55367696384,user_blocks=95712387072,user_used=40344690688 {ns}"
    );
    for nic in ["lo", "eno1", "eno2", "vmbr0", "vmbr1"] {
        let _ = writeln!(
            s,
            "nics,{tags},instance={nic} receive={},transmit={},type=\"physical\" {ns}",
            1000 * k,
            2000 * k
        );
    }
    let _ = writeln!(s, "system,{tags} uptime={} {ns}", 864_000 + k * 10);
    for v in 0..vms {
        let vmid = 100 + v;
        let tags = format!("object=qemu,vmid={vmid},nodename={node},host=vm{vmid}");
        let _ = writeln!(
            s,
            "system,{tags} balloon=4294967296,balloon_min=2147483648,cpu=0.25,cpus=4,disk=0,diskread={},diskwrite={},freemem=1073741824,maxdisk=34359738368,maxmem=4294967296,mem=2147483648,memhost=2500000000,name=\"vm{vmid}\",netin={},netout={},pid=12345,pressurecpufull=0,pressurecpusome=0.12,pressureiofull=1.25,pressureiosome=1.5,pressurememoryfull=0,pressurememorysome=0,qmpstatus=\"running\",running-machine=\"pc-i440fx-9.0+pve0\",running-qemu=\"9.0.2\",serial=1,shares=1000,status=\"running\",tags=\"prod;web\",uptime={} {ns}",
            4096 * k,
            8192 * k,
            10_000 * k,
            5_000 * k,
            1000 + k * 10
        );
        let _ = writeln!(
            s,
            "nics,{tags},instance=tap{vmid}i0 netin={},netout={} {ns}",
            10_000 * k,
            5_000 * k
        );
        for drive in ["scsi0", "ide2"] {
            let _ = writeln!(
                s,
                "blockstat,{tags},instance={drive} failed_rd_operations=0,failed_wr_operations=0,flush_operations=30,flush_total_time_ns=1234,idle_time_ns=5000000000,invalid_rd_operations=0,invalid_wr_operations=0,rd_bytes={},rd_merged=0,rd_operations=1000,rd_total_time_ns=123456789,wr_bytes={},wr_merged=0,wr_operations=2000,wr_total_time_ns=987654321 {ns}",
                4096 * k,
                8192 * k
            );
        }
        let _ = writeln!(
            s,
            "ballooninfo,{tags} actual=4294967296,free_mem=1952516352,last_update=1700000000,major_page_faults=120,max_mem=4294967296,mem_swapped_in=0,mem_swapped_out=0,minor_page_faults=345678,total_mem=4100000000 {ns}"
        );
        let _ = writeln!(
            s,
            "proxmox-support,{tags} pbs-library-version=\"1.4.1 (UNKNOWN)\" {ns}"
        );
    }
    for c in 0..cts {
        let vmid = 1000 + c;
        let _ = writeln!(
            s,
            "system,object=lxc,vmid={vmid},nodename={node},host=ct{vmid} cpu=0.5,cpus=2,disk=1073741824,diskread={},diskwrite={},maxdisk=8589934592,maxmem=536870912,maxswap=536870912,mem=268435456,name=\"ct{vmid}\",netin={},netout={},pid=4242,pressurecpufull=0.00,pressurecpusome=0.00,pressureiofull=0.05,pressureiosome=0.10,pressurememoryfull=0.00,pressurememorysome=0.00,status=\"running\",swap=0,tags=\"infra\",type=\"lxc\",uptime={} {ns}",
            4096 * k,
            8192 * k,
            1000 * k,
            500 * k,
            500 + k * 10
        );
    }
    for (store, shared) in [("local", 0), ("local-lvm", 0), ("ceph", 1), ("nfs", 1)] {
        let _ = writeln!(
            s,
            "system,object=storages,nodename={node},host={store},type=dir active=1,avail=75000000000,content=\"images,rootdir\",enabled=1,shared={shared},total=100000000000,type=\"dir\",used=25000000000 {ns}"
        );
    }
    s
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(MetricsConfig {
        database_path: dir.path().join("metrics.db"),
        ..MetricsConfig::default()
    })
    .unwrap();
    let receiver = Receiver::new(
        Arc::new(store.clone()) as Arc<dyn Sink>,
        StatusBoard::default(),
    );
    let t0 = now_ms() / 1000 - 3600;

    // What one node of a mid-sized cluster sends every 10 s.
    let mut times = Vec::new();
    let mut bytes = 0;
    let mut points = 0;
    for r in 0..ROUNDS {
        let body = proxmox_round("pve-a", 50, 20, t0 + 10 * r as i64, r as u64 + 1);
        bytes = body.len();
        let started = Instant::now();
        let report = receiver
            .push(
                "pve1",
                body.as_bytes(),
                Precision::Nanoseconds,
                Mode::AllOrNothing,
            )
            .unwrap();
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        points = report.points;
    }
    times.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
    println!(
        "proxmox round (1 node, 50 VMs, 20 CTs, 4 storages): {bytes} bytes, {points} points; p50 {p50:.2} ms, p99 {p99:.2} ms"
    );

    // The largest body accepted: 8 MiB of Telegraf-style lines.
    let mut big = String::new();
    let mut lines = 0;
    let t = t0 + 600;
    while big.len() < 8 * 1024 * 1024 - 200 {
        let h = lines % 500;
        let _ = writeln!(
            big,
            "cpu,cpu=cpu{},host=server{h:03} usage_idle=98.5,usage_user=1.25,usage_system=0.25 {}",
            lines % 16,
            (t + (lines / 8000) as i64) * 1_000_000_000
        );
        lines += 1;
    }
    let started = Instant::now();
    let report = receiver
        .push(
            "lab",
            big.as_bytes(),
            Precision::Nanoseconds,
            Mode::AllOrNothing,
        )
        .unwrap();
    let big_ms = started.elapsed().as_secs_f64() * 1000.0;
    let rate = report.points as f64 / (big_ms / 1000.0);
    println!(
        "8 MiB body: {} bytes, {lines} lines, {} points in {big_ms:.0} ms ({:.2} M points/s)",
        big.len(),
        report.points,
        rate / 1e6
    );
    println!(
        "{{\"proxmoxRoundBytes\":{bytes},\"proxmoxRoundPoints\":{points},\"proxmoxRoundP50Ms\":{p50:.2},\"proxmoxRoundP99Ms\":{p99:.2},\"bigBodyBytes\":{},\"bigBodyPoints\":{},\"bigBodyMs\":{big_ms:.0},\"bigBodyPointsPerSecond\":{rate:.0}}}",
        big.len(),
        report.points
    );
    store.close().unwrap();
}

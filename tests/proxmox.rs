//! The Proxmox collector against a fake Proxmox API: an HTTPS server with a
//! freshly generated self-signed certificate whose answers each test scripts.

use parking_lot::Mutex;
use pulse_metrics::collectors::CollectorState;
use pulse_metrics::collectors::{CollectorStatus, Sink, StatusBoard, proxmox};
use pulse_metrics::config::{ProxmoxConfig, ProxmoxInstance};
use pulse_metrics::{MetricsConfig, Point, Resource, SeriesKey, Store, TimeRange};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

const TOKEN_ID: &str = "pulse@pve!monitor";
const SECRET: &str = "0b4c1e2a-5d6f-4a7b-8c9d-0e1f2a3b4c5d";
const STEP: Duration = Duration::from_millis(50);

// ---------------------------------------------------------------- fake API

/// One scripted answer.
#[derive(Clone)]
enum Reply {
    /// 200 with this JSON body.
    Json(Value),
    /// This status with an empty body.
    Status(u16),
    /// 200 with this body, JSON or not.
    Raw(&'static str),
    /// Never answers within any sane timeout.
    Hang,
}

#[derive(Default)]
struct Script {
    /// Each request takes the next reply; the last one repeats forever.
    replies: VecDeque<Reply>,
    /// (path, Authorization header) of every request that got past TLS.
    requests: Vec<(String, String)>,
}

struct FakePve {
    addr: SocketAddr,
    fingerprint: String,
    script: Arc<Mutex<Script>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakePve {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakePve {
    async fn start(replies: Vec<Reply>) -> FakePve {
        let certified =
            rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
                .unwrap();
        let cert = certified.cert.der().clone();
        let fingerprint = Sha256::digest(cert.as_ref())
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let script = Arc::new(Mutex::new(Script {
            replies: replies.into(),
            requests: Vec::new(),
        }));
        let shared = script.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let script = shared.clone();
                tokio::spawn(async move {
                    // A client that rejects our certificate aborts here.
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        serve(tls, script).await;
                    }
                });
            }
        });
        FakePve {
            addr,
            fingerprint,
            script,
            task,
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}/", self.addr.port())
    }

    fn requests(&self) -> Vec<(String, String)> {
        self.script.lock().requests.clone()
    }

    fn instance(&self, name: &str) -> ProxmoxInstance {
        ProxmoxInstance {
            name: name.into(),
            url: self.url(),
            token_id: TOKEN_ID.into(),
            token_secret: SECRET.into(),
            fingerprint: self.fingerprint.clone(),
            insecure_skip_verify: false,
        }
    }
}

/// A minimal HTTP/1.1 responder: one request per connection.
async fn serve(
    mut tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    script: Arc<Mutex<Script>>,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tls.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let path = head
        .lines()
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or_default()
        .to_string();
    let auth = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("authorization")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_default();
    let reply = {
        let mut s = script.lock();
        s.requests.push((path.clone(), auth.clone()));
        if auth != format!("PVEAPIToken={TOKEN_ID}={SECRET}") {
            Reply::Status(401)
        } else if path != "/api2/json/cluster/resources" {
            Reply::Status(501)
        } else if s.replies.len() > 1 {
            s.replies.pop_front().unwrap()
        } else {
            s.replies.front().cloned().unwrap_or(Reply::Status(500))
        }
    };
    let (status, body) = match reply {
        Reply::Json(v) => (200, v.to_string()),
        Reply::Status(code) => (code, String::new()),
        Reply::Raw(text) => (200, text.to_string()),
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            return;
        }
    };
    let response = format!(
        "HTTP/1.1 {status} Scripted\r\nContent-Type: application/json;charset=UTF-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tls.write_all(response.as_bytes()).await;
    let _ = tls.shutdown().await;
}

// ---------------------------------------------------------------- payloads

fn node(name: &str, uptime: u64) -> Value {
    json!({"id": format!("node/{name}"), "type": "node", "node": name, "status": "online",
           "cpu": 0.125, "maxcpu": 16, "mem": 17179869184u64, "maxmem": 68719476736u64,
           "disk": 21474836480u64, "maxdisk": 107374182400u64, "uptime": uptime,
           "level": "", "id_extra": null})
}

struct Guest {
    kind: &'static str,
    vmid: u64,
    status: &'static str,
    uptime: u64,
    /// netin, netout, diskread, diskwrite
    counters: [u64; 4],
}

fn guest(g: &Guest) -> Value {
    let [netin, netout, diskread, diskwrite] = g.counters;
    let running = g.status == "running";
    json!({"id": format!("{}/{}", g.kind, g.vmid), "type": g.kind, "node": "pve-a",
           "vmid": g.vmid, "name": format!("guest{}", g.vmid), "status": g.status,
           "cpu": if running { 0.5 } else { 0.0 }, "maxcpu": 2,
           "mem": if running { 536870912u64 } else { 0 }, "maxmem": 2147483648u64,
           "disk": if g.kind == "lxc" { 1073741824u64 } else { 0 }, "maxdisk": 10737418240u64,
           "netin": netin, "netout": netout, "diskread": diskread, "diskwrite": diskwrite,
           "uptime": g.uptime, "template": 0})
}

fn vm(status: &'static str, uptime: u64, counters: [u64; 4]) -> Value {
    guest(&Guest {
        kind: "qemu",
        vmid: 101,
        status,
        uptime,
        counters,
    })
}

fn storage() -> Value {
    json!({"id": "storage/pve-a/local-zfs", "type": "storage", "node": "pve-a",
           "storage": "local-zfs", "status": "available", "plugintype": "zfspool",
           "content": "images,rootdir", "shared": 0, "disk": 30, "maxdisk": 120})
}

/// Every poll lists the node, so its `cpu` timestamps tell the polls apart.
fn resources(guests: Vec<Value>) -> Reply {
    let mut data = vec![node("pve-a", 100_000)];
    data.extend(guests);
    data.push(storage());
    Reply::Json(json!({ "data": data }))
}

// ---------------------------------------------------------------- harness

/// Keeps every point and resource update it is given, and passes them on
/// to `store` when there is one.
#[derive(Default)]
struct Recorder {
    points: Mutex<Vec<Point>>,
    resources: Mutex<Vec<Vec<Resource>>>,
    refuse: AtomicBool,
    store: Option<Store>,
}

impl Sink for Recorder {
    fn write(&self, points: &[Point]) -> pulse_metrics::Result<usize> {
        if self.refuse.load(Ordering::SeqCst) {
            return Err(pulse_metrics::Error::config(
                "test",
                "write queue full; retry later",
            ));
        }
        if let Some(store) = &self.store {
            store.write_batch(points)?;
        }
        self.points.lock().extend_from_slice(points);
        Ok(points.len())
    }

    fn write_resources(&self, resources: &[Resource]) -> pulse_metrics::Result<usize> {
        self.resources.lock().push(resources.to_vec());
        match &self.store {
            Some(store) => store.write_resources(resources),
            None => Ok(0),
        }
    }

    fn merge_resource(&self, t: &str, from: &str, into: &str) -> pulse_metrics::Result<usize> {
        match &self.store {
            Some(store) => store.merge_resource(t, from, into),
            None => Ok(0),
        }
    }
}

impl Recorder {
    fn points(&self) -> Vec<Point> {
        self.points.lock().clone()
    }

    /// Poll time -> the points of that poll.
    fn polls(&self) -> BTreeMap<i64, Vec<Point>> {
        let mut polls: BTreeMap<i64, Vec<Point>> = BTreeMap::new();
        for p in self.points() {
            polls.entry(p.timestamp).or_default().push(p);
        }
        polls
    }
}

fn find(points: &[Point], id: &str, metric: &str) -> Option<f64> {
    points
        .iter()
        .find(|p| p.resource_id == id && p.metric == metric)
        .map(|p| p.value)
}

struct Running {
    board: StatusBoard,
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

impl Running {
    fn status(&self, name: &str) -> CollectorStatus {
        self.board
            .snapshot()
            .into_iter()
            .find(|s| s.name == format!("proxmox:{name}"))
            .unwrap_or_else(|| panic!("no board entry for {name}: {:?}", self.board.snapshot()))
    }

    /// Waits until `name`'s status satisfies `done`; fails after 10 s.
    async fn wait(&self, name: &str, done: impl Fn(&CollectorStatus) -> bool) -> CollectorStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.status(name);
            if done(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting; last status {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(2), self.handle)
            .await
            .expect("collector stops promptly")
            .unwrap();
    }
}

fn run(instances: Vec<ProxmoxInstance>, sink: Arc<dyn Sink>, interval: Duration) -> Running {
    let board = StatusBoard::default();
    let (stop, shutdown) = watch::channel(false);
    let config = ProxmoxConfig {
        enabled: true,
        interval,
        instances,
    };
    let handle = proxmox::spawn(config, sink, board.clone(), shutdown);
    Running {
        board,
        stop,
        handle,
    }
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn ids_and_values_land_as_pulse_expects() {
    let lxc = guest(&Guest {
        kind: "lxc",
        vmid: 200,
        status: "running",
        uptime: 50,
        counters: [1, 2, 3, 4],
    });
    let stopped = guest(&Guest {
        kind: "qemu",
        vmid: 102,
        status: "stopped",
        uptime: 0,
        counters: [0; 4],
    });
    let fake = FakePve::start(vec![resources(vec![
        vm("running", 1000, [10, 20, 30, 40]),
        lxc,
        stopped,
        json!({"id": "sdn/pve-a/localnetwork", "type": "sdn", "node": "pve-a", "status": "ok"}),
    ])])
    .await;
    let sink = Arc::new(Recorder::default());
    let running = run(vec![fake.instance("pve1")], sink.clone(), STEP);
    let status = running.wait("pve1", |s| s.last_success > 0).await;
    let board = running.board.clone();
    running.stop().await;
    assert_eq!(status.state, CollectorState::Ok);
    assert_eq!(status.last_error, "");
    assert_eq!(status.consecutive_failures, 0);

    let (path, auth) = fake.requests()[0].clone();
    assert_eq!(path, "/api2/json/cluster/resources");
    assert_eq!(auth, format!("PVEAPIToken={TOKEN_ID}={SECRET}"));

    let polls = sink.polls();
    let first = polls.values().next().unwrap();
    let mut series: Vec<(String, String, String)> = first
        .iter()
        .map(|p| {
            (
                p.resource_type.clone(),
                p.resource_id.clone(),
                p.metric.clone(),
            )
        })
        .collect();
    series.sort();
    let want: Vec<(String, String, String)> = [
        ("container", "pve1:200", "cpu"),
        ("container", "pve1:200", "disk"),
        ("container", "pve1:200", "memory"),
        ("node", "pve1:pve-a", "cpu"),
        ("node", "pve1:pve-a", "disk"),
        ("node", "pve1:pve-a", "memory"),
        ("storage", "pve1:pve-a:local-zfs", "disk"),
        ("vm", "pve1:101", "cpu"),
        ("vm", "pve1:101", "memory"),
    ]
    .iter()
    .map(|(t, i, m)| (t.to_string(), i.to_string(), m.to_string()))
    .collect();
    assert_eq!(series, want);
    assert_eq!(find(first, "pve1:pve-a", "cpu"), Some(12.5));
    assert_eq!(find(first, "pve1:pve-a", "memory"), Some(25.0));
    assert_eq!(find(first, "pve1:pve-a", "disk"), Some(20.0));
    assert_eq!(find(first, "pve1:101", "cpu"), Some(50.0));
    assert_eq!(find(first, "pve1:101", "memory"), Some(25.0));
    assert_eq!(find(first, "pve1:200", "disk"), Some(10.0));
    assert_eq!(find(first, "pve1:pve-a:local-zfs", "disk"), Some(25.0));
    // The stopped guest never appears.
    assert!(sink.points().iter().all(|p| p.resource_id != "pve1:102"));
    let last = board.snapshot().pop().unwrap();
    assert_eq!(last.points_written, sink.points().len() as u64);
}

#[tokio::test]
async fn rates_are_right_across_two_polls() {
    let fake = FakePve::start(vec![
        resources(vec![vm("running", 1000, [1_000, 5_000, 0, 1 << 20])]),
        resources(vec![vm("running", 1010, [101_000, 5_000, 4_096, 3 << 20])]),
    ])
    .await;
    let sink = Arc::new(Recorder::default());
    let running = run(vec![fake.instance("pve1")], sink.clone(), STEP);
    running.wait("pve1", |s| s.points_written > 0).await;
    // Give it a few more polls: the repeated second payload is the same
    // Proxmox sample, which must not produce further (zero) rates.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sink.polls().len() < 4 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    running.stop().await;

    let polls = sink.polls();
    let times: Vec<i64> = polls.keys().copied().collect();
    let (t1, t2) = (times[0], times[1]);
    let dt = (t2 - t1) as f64 / 1000.0;
    assert!(dt > 0.0);
    let id = "pve1:101";
    assert_eq!(
        find(&polls[&t1], id, "netin"),
        None,
        "first sample has no rate"
    );
    let second = &polls[&t2];
    let close = |got: Option<f64>, want: f64| {
        let got = got.expect("rate written");
        assert!(
            (got - want).abs() <= want.abs() * 1e-9 + 1e-9,
            "got {got}, want {want}"
        );
    };
    close(find(second, id, "netin"), 100_000.0 / dt);
    close(find(second, id, "netout"), 0.0);
    close(find(second, id, "diskread"), 4_096.0 / dt);
    close(find(second, id, "diskwrite"), (2 << 20) as f64 / dt);
    let rate_points = sink
        .points()
        .iter()
        .filter(|p| proxmox::COUNTERS.contains(&p.metric.as_str()))
        .count();
    assert_eq!(rate_points, 4, "only the second poll had a new sample");
}

#[tokio::test]
async fn a_counter_reset_and_a_guest_restart_give_no_spike() {
    let fake = FakePve::start(vec![
        resources(vec![vm(
            "running",
            1000,
            [900_000, 900_000, 900_000, 900_000],
        )]),
        // netin went down (reset); the others moved on normally.
        resources(vec![vm("running", 1010, [10, 901_000, 901_000, 901_000])]),
        // Restarted: uptime went back; counters are even higher than before.
        resources(vec![vm("running", 3, [5_000_000; 4])]),
        resources(vec![vm("running", 13, [5_001_000; 4])]),
    ])
    .await;
    let sink = Arc::new(Recorder::default());
    let running = run(vec![fake.instance("pve1")], sink.clone(), STEP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while sink.polls().len() < 4 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    running.stop().await;

    let polls = sink.polls();
    let rounds: Vec<&Vec<Point>> = polls.values().take(4).collect();
    let rates = |points: &[Point]| -> Vec<String> {
        let mut m: Vec<String> = points
            .iter()
            .filter(|p| p.resource_id == "pve1:101")
            .filter(|p| proxmox::COUNTERS.contains(&p.metric.as_str()))
            .map(|p| p.metric.clone())
            .collect();
        m.sort();
        m
    };
    assert!(rates(rounds[0]).is_empty());
    assert_eq!(rates(rounds[1]), ["diskread", "diskwrite", "netout"]);
    assert!(rates(rounds[2]).is_empty(), "restart: {:?}", rounds[2]);
    assert_eq!(
        rates(rounds[3]),
        ["diskread", "diskwrite", "netin", "netout"]
    );
    // No rate anywhere is negative, and none exceeds what 1000 bytes per
    // poll can give at the observed poll spacing.
    let times: Vec<i64> = polls.keys().copied().collect();
    let min_dt = times.windows(2).map(|w| w[1] - w[0]).min().unwrap() as f64 / 1000.0;
    for p in sink.points() {
        if proxmox::COUNTERS.contains(&p.metric.as_str()) {
            assert!(p.value >= 0.0 && p.value <= 1000.0 / min_dt + 1e-6, "{p:?}");
        }
    }
}

#[tokio::test]
async fn a_stopped_guest_leaves_a_gap() {
    let fake = FakePve::start(vec![
        resources(vec![vm("running", 1000, [1_000; 4])]),
        resources(vec![vm("stopped", 0, [0; 4])]),
        resources(vec![vm("running", 5, [2_000; 4])]),
        resources(vec![vm("running", 15, [3_000; 4])]),
    ])
    .await;
    let sink = Arc::new(Recorder::default());
    let running = run(vec![fake.instance("pve1")], sink.clone(), STEP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while sink.polls().len() < 4 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    running.stop().await;

    let polls = sink.polls();
    let rounds: Vec<&Vec<Point>> = polls.values().take(4).collect();
    let id = "pve1:101";
    let has = |r: &[Point], m: &str| find(r, id, m).is_some();
    assert!(has(rounds[0], "cpu"));
    assert!(
        rounds[1].iter().all(|p| p.resource_id != id),
        "stopped guest wrote {:?}",
        rounds[1]
    );
    // The node still wrote in that poll, so the guest's absence is a gap.
    assert!(find(rounds[1], "pve1:pve-a", "cpu").is_some());
    assert!(has(rounds[2], "cpu"));
    assert!(
        !has(rounds[2], "netin"),
        "first sample after the gap has no rate"
    );
    assert!(has(rounds[3], "netin"));
}

#[tokio::test]
async fn a_wrong_token_is_an_error_and_stores_nothing() {
    let fake = FakePve::start(vec![resources(vec![vm("running", 1, [0; 4])])]).await;
    let mut instance = fake.instance("pve1");
    instance.token_secret = "not-the-secret".into();
    let sink = Arc::new(Recorder::default());
    let running = run(vec![instance], sink.clone(), STEP);
    let s = running.wait("pve1", |s| s.consecutive_failures >= 1).await;
    running.stop().await;
    assert_eq!(s.state, CollectorState::Error);
    assert!(s.last_error.contains("HTTP 401"), "{}", s.last_error);
    assert!(s.last_error.contains("token"), "{}", s.last_error);
    assert_eq!(s.last_success, 0);
    assert!(s.last_attempt > 0);
    assert_eq!(s.points_written, 0);
    assert!(sink.points().is_empty());
    // The server did see the (wrong) token, in the Proxmox format.
    assert_eq!(
        fake.requests()[0].1,
        format!("PVEAPIToken={TOKEN_ID}=not-the-secret")
    );
}

#[tokio::test]
async fn forbidden_is_reported_with_the_privilege_to_grant() {
    let fake = FakePve::start(vec![Reply::Status(403)]).await;
    let sink = Arc::new(Recorder::default());
    let running = run(vec![fake.instance("pve1")], sink.clone(), STEP);
    let s = running.wait("pve1", |s| s.consecutive_failures >= 1).await;
    running.stop().await;
    assert_eq!(s.state, CollectorState::Error);
    assert!(
        s.last_error.contains("403") && s.last_error.contains("PVEAuditor"),
        "{}",
        s.last_error
    );
    assert!(sink.points().is_empty());
}

#[tokio::test]
async fn a_wrong_fingerprint_is_an_error_and_sends_nothing() {
    let fake = FakePve::start(vec![resources(vec![vm("running", 1, [0; 4])])]).await;
    let mut instance = fake.instance("pve1");
    let wrong = ["AB"; 32].join(":");
    instance.fingerprint = wrong.to_lowercase().replace(':', "");
    let sink = Arc::new(Recorder::default());
    let running = run(vec![instance], sink.clone(), STEP);
    let s = running.wait("pve1", |s| s.consecutive_failures >= 1).await;
    running.stop().await;
    assert_eq!(s.state, CollectorState::Error);
    assert_eq!(
        s.last_error,
        format!(
            "certificate fingerprint mismatch: expected {wrong}, got {}",
            fake.fingerprint
        )
    );
    assert!(sink.points().is_empty());
    assert!(
        fake.requests().is_empty(),
        "the token must not be sent to an unverified server"
    );
}

#[tokio::test]
async fn a_self_signed_cluster_without_a_fingerprint_is_not_trusted() {
    let fake = FakePve::start(vec![resources(vec![vm("running", 1, [0; 4])])]).await;
    let mut instance = fake.instance("pve1");
    instance.fingerprint.clear();
    let sink = Arc::new(Recorder::default());
    let running = run(vec![instance], sink.clone(), STEP);
    let s = running.wait("pve1", |s| s.consecutive_failures >= 1).await;
    running.stop().await;
    assert_eq!(s.state, CollectorState::Error);
    assert!(s.last_error.contains("not trusted"), "{}", s.last_error);
    assert!(s.last_error.contains("fingerprint"), "{}", s.last_error);
    assert!(sink.points().is_empty());
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn insecure_skip_verify_accepts_the_certificate_and_says_so() {
    let fake = FakePve::start(vec![resources(vec![vm("running", 1, [0; 4])])]).await;
    let mut instance = fake.instance("pve1");
    instance.fingerprint.clear();
    instance.insecure_skip_verify = true;
    let sink = Arc::new(Recorder::default());
    let running = run(vec![instance], sink.clone(), STEP);
    let s = running.wait("pve1", |s| s.last_success > 0).await;
    running.stop().await;
    assert_eq!(s.state, CollectorState::Insecure);
    assert_eq!(s.last_error, "");
    assert!(find(&sink.points(), "pve1:101", "cpu").is_some());
}

#[tokio::test]
async fn a_timeout_is_an_error_and_stores_nothing() {
    let fake = FakePve::start(vec![Reply::Hang]).await;
    let sink = Arc::new(Recorder::default());
    let started = Instant::now();
    let running = run(vec![fake.instance("pve1")], sink.clone(), STEP);
    let s = running.wait("pve1", |s| s.consecutive_failures >= 1).await;
    // The timeout is bounded (1 s at short intervals), not the server's 30 s.
    assert!(started.elapsed() < Duration::from_secs(5));
    running.stop().await;
    assert_eq!(s.state, CollectorState::Error);
    assert!(s.last_error.contains("no answer"), "{}", s.last_error);
    assert!(s.last_error.contains("within 1s"), "{}", s.last_error);
    assert!(sink.points().is_empty());
}

#[tokio::test]
async fn garbage_json_is_an_error_and_stores_nothing() {
    for (reply, needle) in [
        (
            Reply::Raw("<html><body>502 Bad Gateway</body></html>"),
            "malformed JSON",
        ),
        (
            Reply::Raw("{\"data\": [{\"type\": \"node\""),
            "malformed JSON",
        ),
        (Reply::Raw("{\"data\": null}"), "`data` is null"),
        (Reply::Raw("[]"), "with a `data` list, got a list"),
    ] {
        let fake = FakePve::start(vec![reply]).await;
        let sink = Arc::new(Recorder::default());
        let running = run(vec![fake.instance("pve1")], sink.clone(), STEP);
        let s = running.wait("pve1", |s| s.consecutive_failures >= 1).await;
        running.stop().await;
        assert_eq!(s.state, CollectorState::Error);
        assert!(s.last_error.contains(needle), "{needle}: {}", s.last_error);
        assert!(sink.points().is_empty());
    }
}

#[tokio::test]
async fn failures_back_off_and_recovery_clears_the_error() {
    let fake = FakePve::start(vec![
        Reply::Status(500),
        Reply::Status(500),
        Reply::Status(500),
        resources(vec![]),
    ])
    .await;
    let sink = Arc::new(Recorder::default());
    let interval = Duration::from_millis(40);
    let started = Instant::now();
    let running = run(vec![fake.instance("pve1")], sink.clone(), interval);
    let failing = running.wait("pve1", |s| s.consecutive_failures == 3).await;
    assert_eq!(failing.state, CollectorState::Error);
    assert!(
        failing.last_error.contains("HTTP 500"),
        "{}",
        failing.last_error
    );
    let ok = running
        .wait("pve1", |s| s.state == CollectorState::Ok)
        .await;
    // Retries waited 2, 4 and 8 intervals rather than one each.
    assert!(
        started.elapsed() >= interval * 14,
        "recovered after {:?}",
        started.elapsed()
    );
    running.stop().await;
    assert_eq!(ok.consecutive_failures, 0);
    assert_eq!(ok.last_error, "");
    assert!(ok.last_success >= ok.last_attempt);
    assert!(fake.requests().len() >= 4);
}

#[tokio::test]
async fn one_broken_cluster_does_not_stop_the_others() {
    let fake = FakePve::start(vec![resources(vec![vm("running", 1, [0; 4])])]).await;
    // A port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut down = fake.instance("down");
    down.url = format!("https://127.0.0.1:{closed}");
    let mut misconfigured = fake.instance("plain");
    misconfigured.url = format!("http://127.0.0.1:{}", fake.addr.port());
    let sink = Arc::new(Recorder::default());
    let running = run(
        vec![down, misconfigured, fake.instance("good")],
        sink.clone(),
        STEP,
    );
    running.wait("good", |s| s.last_success > 0).await;
    let down = running.wait("down", |s| s.consecutive_failures >= 1).await;
    let plain = running.status("plain");
    running.stop().await;
    assert_eq!(down.state, CollectorState::Error);
    assert!(
        down.last_error.contains("cannot connect"),
        "{}",
        down.last_error
    );
    assert_eq!(plain.state, CollectorState::Error);
    assert!(plain.last_error.contains("https"), "{}", plain.last_error);
    assert!(
        sink.points()
            .iter()
            .all(|p| p.resource_id.starts_with("good:"))
    );
    assert!(!sink.points().is_empty());
}

#[tokio::test]
async fn a_refusing_store_is_a_poll_failure_not_a_crash() {
    let fake = FakePve::start(vec![resources(vec![vm("running", 1, [0; 4])])]).await;
    let sink = Arc::new(Recorder::default());
    sink.refuse.store(true, Ordering::SeqCst);
    let running = run(vec![fake.instance("pve1")], sink.clone(), STEP);
    let s = running.wait("pve1", |s| s.consecutive_failures >= 1).await;
    assert_eq!(s.state, CollectorState::Error);
    assert!(s.last_error.contains("store refused"), "{}", s.last_error);
    assert_eq!(s.points_written, 0);
    sink.refuse.store(false, Ordering::SeqCst);
    running
        .wait("pve1", |s| s.state == CollectorState::Ok)
        .await;
    let board = running.board.clone();
    running.stop().await;
    let s = board.snapshot().pop().unwrap();
    assert!(s.points_written > 0);
    // Only what the store accepted counts as written.
    assert_eq!(s.points_written, sink.points().len() as u64);
}

#[tokio::test]
async fn shutdown_interrupts_a_hanging_request() {
    let fake = FakePve::start(vec![Reply::Hang]).await;
    let sink = Arc::new(Recorder::default());
    // A long interval makes the request timeout 10 s.
    let running = run(vec![fake.instance("pve1")], sink, Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.requests().is_empty() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let asked = Instant::now();
    running.stop().await;
    assert!(asked.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn points_land_in_a_real_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(MetricsConfig {
        database_path: dir.path().join("metrics.db"),
        ..MetricsConfig::default()
    })
    .unwrap();
    let fake = FakePve::start(vec![resources(vec![vm("running", 1000, [0; 4])])]).await;
    let running = run(
        vec![fake.instance("pve1")],
        Arc::new(store.clone()),
        // One poll only: the next one is a minute away.
        Duration::from_secs(60),
    );
    let s = running.wait("pve1", |s| s.points_written > 0).await;
    running.stop().await;
    assert_eq!(s.state, CollectorState::Ok);
    store.flush().unwrap();
    let now = pulse_metrics::model::now_ms();
    let range = TimeRange::last(Duration::from_secs(3600), now + 1000);
    let cpu = store
        .query(&SeriesKey::new("vm", "pve1:101", "cpu"), range, None)
        .unwrap();
    assert_eq!(cpu.points.len(), 1, "{:?}", cpu.points);
    assert_eq!(cpu.points[0].value, 50.0);
    assert!((cpu.points[0].timestamp - s.last_success).abs() < 1000);
    let storage = store
        .query(
            &SeriesKey::new("storage", "pve1:pve-a:local-zfs", "disk"),
            range,
            None,
        )
        .unwrap();
    assert_eq!(storage.points[0].value, 25.0);
    // node cpu/memory/disk, vm cpu/memory, storage disk; the unchanged
    // counters of later polls are the same sample, so no rates.
    assert_eq!(store.series().unwrap().len(), 6);
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn failures_are_logged_once_per_change_of_state() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    // Thread-local, and this test's runtime runs every task on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);

    let fake = FakePve::start(vec![
        Reply::Status(500),
        Reply::Status(500),
        Reply::Status(500),
        Reply::Status(502),
        Reply::Status(502),
        resources(vec![]),
    ])
    .await;
    let sink = Arc::new(Recorder::default());
    let running = run(
        vec![fake.instance("pve1")],
        sink.clone(),
        Duration::from_millis(10),
    );
    running
        .wait("pve1", |s| s.state == CollectorState::Ok)
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while sink.polls().len() < 3 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    running.stop().await;

    let log = String::from_utf8(capture.0.lock().clone()).unwrap();
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(count("WARN"), 2, "{log}");
    assert_eq!(count("HTTP 500"), 1, "{log}");
    assert_eq!(
        count("WARN pulse_metrics::collectors::proxmox: proxmox pve1: HTTP 502"),
        1,
        "{log}"
    );
    assert_eq!(count("recovered after 5 failed poll(s)"), 1, "{log}");
    assert_eq!(log.lines().count(), 3, "{log}");
    assert!(
        !log.contains(SECRET),
        "the token secret must never be logged"
    );
}

// ------------------------------------------------------ a cluster as people know it

fn node_on(name: &str, status: &str) -> Value {
    let mut n = node(name, 100_000);
    n["status"] = json!(status);
    n
}

fn named(kind: &str, vmid: u64, name: &str, node: &str, status: &str, tags: &str) -> Value {
    let running = status == "running";
    json!({"id": format!("{kind}/{vmid}"), "type": kind, "vmid": vmid, "name": name,
           "node": node, "status": status, "tags": tags, "template": 0,
           "cpu": if running { 0.25 } else { 0.0 }, "maxcpu": 2,
           "mem": if running { 1073741824u64 } else { 0 }, "maxmem": 4294967296u64,
           "netin": 1000, "netout": 1000, "diskread": 0, "diskwrite": 0,
           "uptime": if running { 5000 } else { 0 }})
}

fn storage_on(node: &str, storage: &str, shared: u8, used: u64) -> Value {
    json!({"id": format!("storage/{node}/{storage}"), "type": "storage", "node": node,
           "storage": storage, "status": "available", "shared": shared,
           "plugintype": if shared == 1 { "cephfs" } else { "lvmthin" },
           "disk": used, "maxdisk": 400})
}

/// Three nodes with a shared and a local storage each; `web01` on `web_node`;
/// `batch` on pve-c, which is `c_status`.
fn cluster(web_node: &str, c_status: &str) -> Reply {
    let mut template = named("qemu", 9000, "debian-12-tpl", "pve-c", "stopped", "");
    template["template"] = json!(1);
    let mut data = vec![
        node_on("pve-a", "online"),
        node_on("pve-b", "online"),
        node_on("pve-c", c_status),
        named("qemu", 101, "web01", web_node, "running", "prod;web"),
        named("lxc", 200, "db01", "pve-b", "running", "prod"),
        // Still `running` with frozen values when pve-c is down.
        named("qemu", 300, "batch", "pve-c", "running", ""),
        template,
    ];
    for (i, n) in ["pve-a", "pve-b", "pve-c"].iter().enumerate() {
        data.push(storage_on(n, "cephfs", 1, 100));
        data.push(storage_on(n, "local-lvm", 0, 10 * (i as u64 + 1)));
    }
    Reply::Json(json!({ "data": data }))
}

#[tokio::test]
async fn a_cluster_is_recorded_as_people_know_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(MetricsConfig {
        database_path: dir.path().join("metrics.db"),
        ..MetricsConfig::default()
    })
    .unwrap();
    // A store of an earlier version kept the shared storage once per node.
    let old_time = pulse_metrics::model::now_ms() - 600_000;
    for n in ["pve-a", "pve-b", "pve-c"] {
        store
            .write(
                "storage",
                &format!("pve1:{n}:cephfs"),
                "disk",
                25.0,
                old_time,
            )
            .unwrap();
    }
    // Poll 1: all up, web01 on pve-a. Then web01 has migrated to pve-b and
    // pve-c is offline, its guest still listed `running`.
    let fake = FakePve::start(vec![
        cluster("pve-a", "online"),
        cluster("pve-b", "offline"),
    ])
    .await;
    let sink = Arc::new(Recorder {
        store: Some(store.clone()),
        ..Recorder::default()
    });
    let running = run(vec![fake.instance("pve1")], sink.clone(), STEP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while sink.polls().len() < 3 {
        assert!(Instant::now() < deadline, "{:?}", running.status("pve1"));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    running.stop().await;
    store.flush().unwrap();

    // The series: one per guest across its migration, the shared storage
    // once (with the history of its per-node copies), local storage per node.
    let mut ids: Vec<(String, String)> = store
        .series()
        .unwrap()
        .into_iter()
        .map(|s| (s.key.resource_type, s.key.resource_id))
        .collect();
    ids.dedup();
    let want: Vec<(String, String)> = [
        ("container", "pve1:200"),
        ("node", "pve1:pve-a"),
        ("node", "pve1:pve-b"),
        ("node", "pve1:pve-c"),
        ("storage", "pve1:cephfs"),
        ("storage", "pve1:pve-a:local-lvm"),
        ("storage", "pve1:pve-b:local-lvm"),
        ("storage", "pve1:pve-c:local-lvm"),
        ("vm", "pve1:101"),
        ("vm", "pve1:300"),
    ]
    .iter()
    .map(|(t, i)| (t.to_string(), i.to_string()))
    .collect();
    assert_eq!(ids, want);
    let now = pulse_metrics::model::now_ms();
    let cephfs = store
        .query(
            &SeriesKey::new("storage", "pve1:cephfs", "disk"),
            TimeRange::last(Duration::from_secs(3600), now + 1000),
            None,
        )
        .unwrap();
    assert_eq!(cephfs.points[0].timestamp, old_time);
    assert_eq!(cephfs.points.last().unwrap().value, 25.0);

    // Every poll: web01 in one series; the shared storage once; nothing
    // from pve-c once it is offline, though its guest says `running`.
    let polls = sink.polls();
    for (i, points) in polls.values().enumerate() {
        let has = |id: &str| points.iter().any(|p| p.resource_id == id);
        assert!(has("pve1:101"), "poll {i}");
        assert_eq!(
            points
                .iter()
                .filter(|p| p.resource_id == "pve1:cephfs")
                .count(),
            1,
            "poll {i}"
        );
        assert_eq!(has("pve1:300"), i == 0, "poll {i}");
        assert_eq!(has("pve1:pve-c:local-lvm"), i == 0, "poll {i}");
        assert_eq!(has("pve1:pve-c"), i == 0, "poll {i}");
        assert!(!has("pve1:9000"), "a template never runs");
    }

    // The names and the rest of what people know.
    let meta = |t: &str, id: &str| store.resource(t, id).unwrap_or_else(|| panic!("{t}/{id}"));
    let web = meta("vm", "pve1:101");
    assert_eq!(web.name.as_deref(), Some("web01"));
    assert_eq!(web.node.as_deref(), Some("pve-b"));
    assert_eq!(web.instance.as_deref(), Some("pve1"));
    assert_eq!(web.tags, Some(vec!["prod".to_string(), "web".to_string()]));
    assert_eq!(web.template, Some(false));
    assert_eq!(meta("container", "pve1:200").name.as_deref(), Some("db01"));
    let tpl = meta("vm", "pve1:9000");
    assert_eq!(
        (tpl.name.as_deref(), tpl.template),
        (Some("debian-12-tpl"), Some(true))
    );
    // What was last known from pve-c before it went down.
    assert_eq!(meta("vm", "pve1:300").node.as_deref(), Some("pve-c"));
    assert_eq!(
        meta("node", "pve1:pve-c").status.as_deref(),
        Some("offline")
    );
    assert_eq!(meta("storage", "pve1:cephfs").node, None);
    assert_eq!(
        meta("storage", "pve1:pve-b:local-lvm").node.as_deref(),
        Some("pve-b")
    );
    assert!(store.resource("storage", "pve1:pve-a:cephfs").is_none());
    store.close().unwrap();
}

// ------------------------------------------------ Pulse's history, then ours

/// A Pulse (Go store) metrics.db with `rows` of
/// (resource_type, resource_id, metric_type, value, unix seconds, tier).
fn pulse_file(path: &std::path::Path, rows: &[(&str, &str, &str, f64, i64, &str)]) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE metrics (id INTEGER PRIMARY KEY AUTOINCREMENT, resource_type TEXT NOT NULL,
           resource_id TEXT NOT NULL, metric_type TEXT NOT NULL, value REAL NOT NULL,
           min_value REAL, max_value REAL, timestamp INTEGER NOT NULL, tier TEXT NOT NULL DEFAULT 'raw');
         CREATE TABLE metrics_meta (key TEXT PRIMARY KEY, value TEXT);",
    )
    .unwrap();
    for (t, id, m, v, ts, tier) in rows {
        conn.execute(
            "INSERT INTO metrics (resource_type, resource_id, metric_type, value, timestamp, tier) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![t, id, m, v, ts, tier],
        )
        .unwrap();
    }
}

#[tokio::test]
async fn pulse_history_and_the_collectors_are_one_series_per_resource() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(MetricsConfig {
        database_path: dir.path().join("metrics.db"),
        ..MetricsConfig::default()
    })
    .unwrap();
    // Pulse called the cluster `homelab`; our collector instance is `pve1`.
    let s = pulse_metrics::model::now_ms() / 1000;
    let src = dir.path().join("pulse.db");
    pulse_file(
        &src,
        &[
            // guests instance:node:vmid, 101 migrated from pve-a to pve-b
            ("vm", "homelab:pve-a:101", "cpu", 11.0, s - 1800, "raw"),
            ("vm", "homelab:pve-a:101", "cpu", 12.0, s - 7200, "minute"),
            ("vm", "homelab:pve-b:101", "cpu", 13.0, s - 1200, "raw"),
            // nodes instance-node (v5's cluster-node has the same shape)
            ("node", "homelab-pve-a", "cpu", 21.0, s - 1800, "raw"),
            ("node", "homelab-pve-b", "cpu", 22.0, s - 1800, "raw"),
            // storage instance-node-storage, node-storage, instance-cluster-storage
            (
                "storage",
                "homelab-pve-a-local-lvm",
                "usage",
                31.0,
                s - 1800,
                "raw",
            ),
            ("storage", "pve-b-local-lvm", "usage", 32.0, s - 1800, "raw"),
            (
                "storage",
                "homelab-cluster-cephfs",
                "usage",
                33.0,
                s - 1800,
                "raw",
            ),
            (
                "storage",
                "homelab-cluster-cephfs",
                "usage",
                34.0,
                s - 90_000,
                "hourly",
            ),
            // a node nobody has heard of, with a hyphen: no one way to split it
            (
                "storage",
                "homelab-pve-x-y-z",
                "usage",
                35.0,
                s - 1800,
                "raw",
            ),
            // v6 renamed types
            ("docker-host", "h1", "cpu", 5.0, s - 1800, "raw"),
        ],
    );
    let report =
        pulse_metrics::pulse_import::import_pulse_as(&store, &src, Some("pve1"), |_| {}).unwrap();
    assert_eq!(report.skipped, 0, "{report:?}");
    assert_eq!(report.ids_mapped, 8, "{report:?}");
    assert_eq!(report.resources_described, 6, "{report:?}");
    let kept: Vec<&str> = report
        .ids_kept
        .iter()
        .map(|k| k.resource_id.as_str())
        .collect();
    assert_eq!(kept, ["homelab-pve-x-y-z"]);
    let web = store.resource("vm", "pve1:101").unwrap();
    assert_eq!(web.node.as_deref(), Some("pve-b"), "seen there last");
    assert_eq!(web.instance.as_deref(), Some("pve1"));
    assert_eq!(
        store
            .resource("storage", "pve1:pve-a:local-lvm")
            .unwrap()
            .name
            .as_deref(),
        Some("local-lvm")
    );

    // Then the collector takes over.
    let reply = Reply::Json(json!({"data": [
        node_on("pve-a", "online"),
        node_on("pve-b", "online"),
        named("qemu", 101, "web01", "pve-b", "running", ""),
        storage_on("pve-a", "local-lvm", 0, 100),
        storage_on("pve-b", "local-lvm", 0, 100),
        storage_on("pve-a", "cephfs", 1, 100),
        storage_on("pve-b", "cephfs", 1, 100),
    ]}));
    let fake = FakePve::start(vec![reply]).await;
    let running = run(vec![fake.instance("pve1")], Arc::new(store.clone()), STEP);
    running.wait("pve1", |st| st.points_written > 0).await;
    running.stop().await;
    store.flush().unwrap();

    let now = pulse_metrics::model::now_ms();
    let series: BTreeMap<(String, String, String), usize> = store
        .series()
        .unwrap()
        .into_iter()
        .map(|i| {
            let points = store
                .query(
                    &i.key,
                    TimeRange::between(now - 3 * 3_600_000, now + 1000, now + 1000).unwrap(),
                    None,
                )
                .unwrap()
                .points
                .len();
            (
                (i.key.resource_type, i.key.resource_id, i.key.metric),
                points,
            )
        })
        .collect();
    let ids: Vec<(&str, &str, &str)> = series
        .keys()
        .map(|(t, i, m)| (t.as_str(), i.as_str(), m.as_str()))
        .collect();
    assert_eq!(
        ids,
        [
            ("dockerHost", "h1", "cpu"),
            ("node", "pve1:pve-a", "cpu"),
            ("node", "pve1:pve-a", "disk"),
            ("node", "pve1:pve-a", "memory"),
            ("node", "pve1:pve-b", "cpu"),
            ("node", "pve1:pve-b", "disk"),
            ("node", "pve1:pve-b", "memory"),
            ("storage", "homelab-pve-x-y-z", "disk"),
            ("storage", "pve1:cephfs", "disk"),
            ("storage", "pve1:pve-a:local-lvm", "disk"),
            ("storage", "pve1:pve-b:local-lvm", "disk"),
            ("vm", "pve1:101", "cpu"),
            ("vm", "pve1:101", "memory"),
        ]
    );
    // One series each: Pulse's points, then the collector's.
    let count =
        |t: &str, id: &str, m: &str| series[&(t.to_string(), id.to_string(), m.to_string())];
    assert!(count("vm", "pve1:101", "cpu") >= 3, "{series:?}");
    for (t, id) in [
        ("node", "pve1:pve-a"),
        ("node", "pve1:pve-b"),
        ("storage", "pve1:cephfs"),
        ("storage", "pve1:pve-a:local-lvm"),
        ("storage", "pve1:pve-b:local-lvm"),
    ] {
        let m = if t == "node" { "cpu" } else { "disk" };
        assert!(count(t, id, m) >= 2, "{t} {id}: {series:?}");
    }
    let cpu = store
        .query(
            &SeriesKey::new("vm", "pve1:101", "cpu"),
            TimeRange::between((s - 1800) * 1000, now + 1000, now + 1000).unwrap(),
            None,
        )
        .unwrap();
    let values: Vec<f64> = cpu.points.iter().map(|p| p.value).collect();
    assert_eq!(
        &values[..2],
        [11.0, 13.0],
        "Pulse's points on both nodes, then ours"
    );
    assert!(values[2..].iter().all(|v| *v == 25.0), "{values:?}");
    store.close().unwrap();
}

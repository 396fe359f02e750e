//! The protocol's rules end to end: escaping and field types onto series,
//! malformed lines (400 naming them, nothing stored), the body limit, gzip,
//! auth, parameters, and UDP's per-line leniency.

use super::*;
use serde_json::json;
use std::io::Write;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn now_s() -> i64 {
    pulse_metrics::model::now_ms() / 1000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escaping_and_types_map_onto_generic_series() {
    let dir = tempfile::tempdir().unwrap();
    let s = Service::start(test_config(dir.path())).await;
    let ts = now_s() - 20;
    let body = format!(
        concat!(
            "# every escape and type\n",
            "sensors,room\\ name=living\\ room\\,\\ north,eq\\=k=a\\=b ",
            "float=21.5,neg=-3.25,exp=1.5e+03,bare=7,int=-42i,uint=18446744073709551615u,",
            "yes=true,no=F,note=\"a \\\"quoted\\\" \\\\ string\" {ts}\n",
            "\n",
            "sensors,room\\ name=living\\ room\\,\\ north,eq\\=k=a\\=b float=22.5 {ts2}\r\n",
            "meteo,lieu=Zürich temp=-1.5 {ts}\n",
        ),
        ts = ts * 1_000_000_000,
        ts2 = (ts + 5) * 1_000_000_000,
    );
    let (status, answer) = s
        .post(
            "/write?db=lab",
            &[("content-type", "text/plain; charset=utf-8")],
            body.into_bytes(),
        )
        .await;
    assert_eq!(status, 204, "{answer}");
    let stored = s.points().await;
    let id = "lab:eq=k=a=b,room name=living room, north";
    let ms = ts * 1000;
    assert_eq!(
        stored.get("sensors", id, "float"),
        [(ms, 21.5), (ms + 5000, 22.5)]
    );
    assert_eq!(stored.at("sensors", id, "neg", ms), Some(-3.25));
    assert_eq!(stored.at("sensors", id, "exp", ms), Some(1500.0));
    assert_eq!(stored.at("sensors", id, "bare", ms), Some(7.0));
    assert_eq!(stored.at("sensors", id, "int", ms), Some(-42.0));
    assert_eq!(stored.at("sensors", id, "uint", ms), Some(u64::MAX as f64));
    assert_eq!(stored.at("sensors", id, "yes", ms), Some(1.0));
    assert_eq!(stored.at("sensors", id, "no", ms), Some(0.0));
    // Strings are not numbers: not stored (counted as ignored only when a
    // line has nothing else).
    assert!(stored.get("sensors", id, "note").is_empty());
    assert_eq!(stored.get("meteo", "lab:lieu=Zürich", "temp"), [(ms, -1.5)]);
    assert_eq!(stored.keys().len(), 9, "{:?}", stored.keys());

    // A measurement must be a resourceType name: `météo` is not ASCII.
    let (status, answer) = s
        .post(
            "/write?db=lab&precision=s",
            &[],
            format!("ok v=1 {ts}\nmétéo,lieu=Zürich temp=-1.5 {ts}\n").into_bytes(),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["details"][0]["line"], 2, "{answer}");
    assert!(
        answer["details"][0]["error"]
            .as_str()
            .unwrap()
            .contains("resourceType"),
        "{answer}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_line_refuses_the_whole_request_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = Service::start(test_config(dir.path())).await;
    let ts = now_s() - 20;
    let good = format!("cpustat,object=nodes,host=pve-a cpu=0.5 {ts}\nm v=1 {ts}\n");
    for (bad, line, needle) in [
        ("m v=1.2.3", 3, "1.2.3"),
        ("m v=\"unterminated", 3, "m v="),
        ("m", 3, "not line protocol"),
        ("m,t=a,t=b v=1", 3, "twice"),
        ("m v=1 12x", 3, "unexpected"),
        ("bad\\ measure v=1", 3, "resourceType"),
        ("m bad\\ field=1", 3, "metric"),
        ("m v=1 -5", 3, "precision=s"),
    ] {
        let body = format!("{good}{bad}\nm v=2 {ts}\n");
        let (status, answer) = s
            .post("/write?db=pve1&precision=s", &[], body.into_bytes())
            .await;
        assert_eq!(status, 400, "{bad}: {answer}");
        let msg = answer["error"].as_str().unwrap();
        assert!(msg.contains("nothing stored"), "{msg}");
        let details = answer["details"].as_array().unwrap();
        assert_eq!(details.len(), 1, "{answer}");
        assert_eq!(details[0]["line"], line, "{answer}");
        let reason = details[0]["error"].as_str().unwrap();
        assert!(reason.contains(needle), "{bad}: {reason}");
    }
    // Several bad lines are all named.
    let body = format!("m v=x {ts}\n{good}m v=1..2\n");
    let (status, answer) = s
        .post("/write?db=pve1&precision=s", &[], body.into_bytes())
        .await;
    assert_eq!(status, 400);
    let lines: Vec<&Value> = answer["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["line"])
        .collect();
    assert_eq!(lines, [&json!(1), &json!(4)], "{answer}");
    // Not valid UTF-8.
    let mut body = good.clone().into_bytes();
    body.extend_from_slice(b"m,t=\xff v=1\n");
    let (status, answer) = s
        .post("/api/v2/write?bucket=pve1&precision=s", &[], body)
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        answer["details"][0],
        json!({"line": 3, "error": "not valid UTF-8"})
    );

    assert_eq!(
        s.points().await.count(),
        0,
        "nothing of any refused request is stored"
    );
    // The refusals are on the status board.
    let c = s.collector("influx:pve1").await;
    assert_eq!(c["state"], "error", "{c}");
    assert!(c["errors"].as_u64().unwrap() >= 10, "{c}");
    assert!(c["lastError"].as_str().unwrap().contains("line"), "{c}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_limit_and_compressed_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let s = Service::start(test_config(dir.path())).await;
    let ts = now_s() - 20;
    // 9 MiB of valid lines: 413, nothing stored.
    let line = format!("m,host=h v=1 {ts}\n");
    let big = line.repeat(9 * 1024 * 1024 / line.len() + 1);
    assert!(big.len() > 9 * 1024 * 1024);
    let (status, answer) = s
        .post("/write?db=big&precision=s", &[], big.clone().into_bytes())
        .await;
    assert_eq!(status, 413, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("8 MiB"),
        "{answer}"
    );
    // The same gzipped is small on the wire, but the limit is on what it
    // expands to.
    let packed = gzip(big.as_bytes());
    assert!(packed.len() < 1024 * 1024);
    let (status, answer) = s
        .post(
            "/api/v2/write?bucket=big&precision=s",
            &[("content-encoding", "gzip")],
            packed,
        )
        .await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(s.points().await.count(), 0);

    // A gzip body within the limit is read like a plain one.
    let body = format!("m,host=gz v=1 {ts}\nm,host=gz v=2 {}\n", ts + 1);
    let (status, answer) = s
        .post(
            "/api/v2/write?bucket=zip&precision=s",
            &[("content-encoding", "gzip"), ("content-type", "text/plain")],
            gzip(body.as_bytes()),
        )
        .await;
    assert_eq!(status, 204, "{answer}");
    // Deflate too.
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(format!("m,host=df v=3 {ts}\n").as_bytes())
        .unwrap();
    let (status, answer) = s
        .post(
            "/write?db=zip&precision=s",
            &[("content-encoding", "deflate")],
            e.finish().unwrap(),
        )
        .await;
    assert_eq!(status, 204, "{answer}");
    let stored = s.points().await;
    assert_eq!(
        stored.get("m", "zip:host=gz", "v"),
        [(ts * 1000, 1.0), ((ts + 1) * 1000, 2.0)]
    );
    assert_eq!(stored.get("m", "zip:host=df", "v"), [(ts * 1000, 3.0)]);
    // Labelled gzip but not gzip: refused, nothing stored.
    let (status, _) = s
        .post(
            "/write?db=zip",
            &[("content-encoding", "gzip")],
            b"m v=1".to_vec(),
        )
        .await;
    assert_eq!(status, 400);
    // An encoding nobody decodes here.
    let (status, _) = s
        .post(
            "/write?db=zip",
            &[("content-encoding", "br")],
            b"m v=1".to_vec(),
        )
        .await;
    assert_eq!(status, 415);
    assert_eq!(s.points().await.count(), 3);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_accepts_every_influx_form_of_the_token() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let s = Service::with_token(dir.path()).await;
    let ts = now_s() - 20;
    let body = || format!("m v=1 {ts}").into_bytes();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("admin:{TOKEN}"))
    );
    let token = format!("Token {TOKEN}");
    let user_pass = format!("Token proxmox:{TOKEN}");
    let bearer = format!("Bearer {TOKEN}");
    let p = format!("/write?db=a&precision=s&u=x&p={TOKEN}");
    let ok: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "/api/v2/write?bucket=a&precision=s",
            vec![("authorization", token.as_str())],
        ),
        (
            "/api/v2/write?bucket=a&precision=s",
            vec![("authorization", user_pass.as_str())],
        ),
        (
            "/write?db=a&precision=s",
            vec![("authorization", basic.as_str())],
        ),
        (
            "/write?db=a&precision=s",
            vec![("authorization", bearer.as_str())],
        ),
        ("/write?db=a&precision=s", vec![("x-api-token", TOKEN)]),
        (p.as_str(), vec![]),
    ];
    for (path, headers) in &ok {
        let (status, answer) = s.post(path, headers, body()).await;
        assert_eq!(status, 204, "{path} {headers:?}: {answer}");
    }
    let wrong: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("/api/v2/write?bucket=a&precision=s", vec![]),
        (
            "/api/v2/write?bucket=a&precision=s",
            vec![("authorization", "Token nope")],
        ),
        ("/write?db=a&precision=s&u=x&p=nope", vec![]),
        (
            "/write?db=a&precision=s",
            vec![("authorization", "Basic !!")],
        ),
    ];
    for (path, headers) in &wrong {
        let (status, answer) = s.post(path, headers, body()).await;
        assert_eq!(status, 401, "{path} {headers:?}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("token"),
            "{answer}"
        );
    }
    // Proxmox's connection test sends its token to /health: a wrong one
    // fails there already, a right one (or none) passes.
    let health = |auth: Option<String>| {
        let mut req = s.http.get(s.url("/health"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(health(Some("Token nope".into())).await, 401);
    assert_eq!(health(Some(token.clone())).await, 200);
    assert_eq!(health(None).await, 200);
    let ping = s.http.get(s.url("/ping")).send().await.unwrap();
    assert_eq!(ping.status().as_u16(), 204);

    // Every accepted write wrote one point in the same second: one stored.
    assert_eq!(s.points().await.get("m", "a", "v"), [(ts * 1000, 1.0)]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let s = Service::start(test_config(dir.path())).await;
    let ts = now_s() - 20;
    let body = || format!("m v=1 {ts}").into_bytes();
    for (path, status, needle) in [
        ("/write", 400, "db is required"),
        ("/write?db=", 400, "db is required"),
        ("/api/v2/write?org=x", 400, "bucket is required"),
        ("/write?db=a%20b", 400, "' '"),
        ("/write?db=a:b", 400, "':'"),
        ("/write?db=ok&precision=d", 400, "precision"),
    ] {
        let (got, answer) = s.post(path, &[], body()).await;
        assert_eq!(got, status, "{path}: {answer}");
        let msg = format!("{answer}");
        assert!(msg.contains(needle), "{path}: {msg}");
    }
    // A v1-compatible bucket `db/retention-policy` names the instance `db`.
    let (got, answer) = s
        .post("/api/v2/write?bucket=pve1/autogen&precision=s", &[], body())
        .await;
    assert_eq!(got, 204, "{answer}");
    assert_eq!(s.points().await.keys(), [("m", "pve1", "v")]);
    // GET is not a write.
    let r = s.http.get(s.url("/write?db=x")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 405);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_keeps_good_lines_and_counts_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = test_config(dir.path());
    c.ingest.influx.udp = "127.0.0.1:0".into();
    let s = Service::start(c).await;
    let ts = (now_s() - 20) * 1_000_000_000;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let datagram = format!(
        "cpustat,object=nodes,host=pve-a cpu=0.5 {ts}\nthis is not line protocol\nmemory,object=nodes,host=pve-a memused=1,memtotal=4 {ts}\nm v=1.2.3\n"
    );
    sock.send_to(datagram.as_bytes(), s.udp_addr())
        .await
        .unwrap();
    sock.send_to(b"\xff\xfe garbage", s.udp_addr())
        .await
        .unwrap();
    let mut board = s.collector("influx:proxmox").await;
    for _ in 0..200 {
        if board["errors"].as_u64() == Some(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        board = s.collector("influx:proxmox").await;
    }
    assert_eq!(board["errors"], 3, "{board}");
    assert!(
        board["lastError"].as_str().unwrap().contains("line 1"),
        "{board}"
    );
    let stored = s.points().await;
    let ms = ts / 1_000_000;
    assert_eq!(stored.get("node", "proxmox:pve-a", "cpu"), [(ms, 50.0)]);
    assert_eq!(stored.get("node", "proxmox:pve-a", "memory"), [(ms, 25.0)]);
    assert_eq!(stored.count(), 2);
    assert_eq!(board["pointsWritten"], 2, "{board}");
    s.stop().await;
}

#[test]
fn the_ingest_keys_are_checked_naming_them() {
    use pulse_metrics::config::{Config, ConfigFormat};
    let load =
        |yaml: &str| Config::parse(yaml, ConfigFormat::Yaml).and_then(|c| c.validate().map(|()| c));
    let c = load("ingest:\n  influx:\n    udp: 0.0.0.0:8089\n    udp_instance: pve1\n").unwrap();
    assert_eq!(c.ingest.influx.udp, "0.0.0.0:8089");
    assert_eq!(c.ingest.influx.udp_instance, "pve1");
    let d = Config::default();
    assert_eq!(
        (
            d.ingest.influx.udp.as_str(),
            d.ingest.influx.udp_instance.as_str()
        ),
        ("", "proxmox")
    );
    for (yaml, key, needle) in [
        (
            "ingest:\n  influx:\n    udp: 8089\n",
            "ingest.influx.udp",
            "no port",
        ),
        (
            "ingest:\n  influx:\n    udp_instance: \"a b\"\n",
            "ingest.influx.udp_instance",
            "' '",
        ),
        (
            "ingest:\n  influx:\n    udp_instance: \"\"\n",
            "ingest.influx.udp_instance",
            "empty",
        ),
        (
            "ingest:\n  influx:\n    tcp: x\n",
            "ingest.influx.tcp",
            "unknown key",
        ),
    ] {
        let e = load(yaml).unwrap_err();
        assert_eq!(e.config_key(), Some(key), "{yaml}: {e}");
        assert!(e.to_string().contains(needle), "{yaml}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_address_in_use_stops_the_start() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut c = test_config(dir.path());
    c.ingest.influx.udp = taken.local_addr().unwrap().to_string();
    let store = Store::open(c.metrics.clone()).unwrap();
    let settings = pulse_metrics::config::SettingsFile::in_memory(c.clone());
    let app = App::new(store, c, settings);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let e = server::run(listener, app, std::future::pending())
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("ingest.influx.udp"), "{e:#}");
}

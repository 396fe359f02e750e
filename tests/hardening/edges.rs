//! Case 10: the smaller edges.

use super::{JSON, Sandbox, ago, points, request, service, values};
use crate::cli_support::{BIN, RawResponse, point};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

#[test]
fn expect_100_continue_with_a_body_over_the_limit_gets_413_first() {
    let sb = Sandbox::new();
    let svc = service(&sb, "", None);
    let mut s = TcpStream::connect(&svc.addr).unwrap();
    s.write_all(
        format!(
            "POST /api/metrics-store/write HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            svc.addr,
            9 * 1024 * 1024
        )
        .as_bytes(),
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    let r = RawResponse::parse(&buf[..n]);
    assert_eq!(r.status, 413, "{r:?}");
    assert!(r.body.contains("8 MiB"), "{r:?}");
    // Within the limit, the client is invited to send.
    let mut s = TcpStream::connect(&svc.addr).unwrap();
    let body = points(&[("e1", 1.0, ago(10))]);
    s.write_all(
        format!(
            "POST /api/metrics-store/write?sync=true HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
            svc.addr,
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = s.read(&mut buf).unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100 Continue"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    s.write_all(&body).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(String::from_utf8_lossy(&rest).contains("{\"accepted\":1}"));
    assert_eq!(svc.stop(), 0);
}

#[test]
fn compressed_bodies_are_decoded_or_refused_never_misread() {
    let sb = Sandbox::new();
    let svc = service(&sb, "", None);
    let ts = ago(20);
    let gzip = |bytes: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    };
    let r = request(
        &svc,
        "POST",
        "/api/metrics-store/write?sync=true",
        &[JSON, ("Content-Encoding", "gzip")],
        &gzip(&points(&[("z1", 5.0, ts)])),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(values(&svc, "z1"), vec![5.0]);

    // An encoding we cannot read: 415, nothing stored.
    let r = request(
        &svc,
        "POST",
        "/api/metrics-store/write?sync=true",
        &[JSON, ("Content-Encoding", "br")],
        &points(&[("z2", 6.0, ts)]),
    );
    assert_eq!(r.status, 415, "{r:?}");
    assert!(r.json()["error"].as_str().unwrap().contains("gzip"));
    // Plain JSON labelled gzip is not read as JSON.
    let r = request(
        &svc,
        "POST",
        "/api/metrics-store/write?sync=true",
        &[JSON, ("Content-Encoding", "gzip")],
        &points(&[("z2", 6.0, ts)]),
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(values(&svc, "z2"), Vec::<f64>::new());
    // A gzip bomb stops at the body limit.
    let r = request(
        &svc,
        "POST",
        "/api/metrics-store/write",
        &[JSON, ("Content-Encoding", "gzip")],
        &gzip(&vec![b' '; 9 * 1024 * 1024]),
    );
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(svc.stop(), 0);
}

/// `ingest` with its stderr a pipe nobody reads (SIGPIPE ignored, as
/// under many supervisors) used to panic halfway.
#[test]
fn ingest_with_a_closed_stderr_exits_with_an_error_not_a_panic() {
    let sb = Sandbox::new();
    let db = sb.path("m.db");
    let good = sb.write("good.jsonl", point("vm", "a", "cpu", 1.0, ago(60)));
    let bad = sb.write("bad.jsonl", "{\"resourceType\": 5}\n");
    let run = |file: &std::path::Path| {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut c = std::process::Command::new("sh");
        c.arg("-c")
            .arg("trap '' PIPE && exec \"$0\" \"$@\"")
            .arg(BIN)
            .args([
                "--db",
                db.to_str().unwrap(),
                "ingest",
                file.to_str().unwrap(),
            ])
            .current_dir(sb.dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(writer);
        let out = c.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, stdout) = run(&bad);
    assert_eq!(code, Some(2), "bad input: {stdout}");
    // Stored, but the report on stderr was lost: an error, not a panic (101).
    let (code, stdout) = run(&good);
    assert_eq!(code, Some(1), "{stdout}");
    assert_eq!(
        stdout.trim(),
        "{\"accepted\":1,\"invalid\":0,\"discarded\":0}"
    );
}

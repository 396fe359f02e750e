//! Case 4: without a token (the default) any web page could change the
//! data: a cross-site `text/plain` POST was stored, and through DNS
//! rebinding (`Host: evil.example`) a page lowered the retention and ran
//! maintenance.

use super::{JSON, Sandbox, ago, get, points, request, service, values};

#[test]
fn a_foreign_host_is_refused_naming_the_setting() {
    let sb = Sandbox::new();
    let svc = service(&sb, "server:\n  allowed_hosts: [metrics.lan]\n", None);
    let port = svc.addr.rsplit_once(':').unwrap().1.to_string();
    let before = get(&svc, "/api/metrics-store/config").json();

    // DNS rebinding: the browser sends the attacker's name.
    let evil = format!("evil.example:{port}");
    let r = request(
        &svc,
        "GET",
        "/api/metrics-store/stats",
        &[("Host", &evil)],
        b"",
    );
    assert_eq!(r.status, 403, "{r:?}");
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("server.allowed_hosts")
    );
    let r = request(
        &svc,
        "PUT",
        "/api/metrics-store/config",
        &[("Host", &evil), JSON],
        br#"{"retention":{"raw":"10m","minute":"1h","hourly":"24h","daily":"24h"}}"#,
    );
    assert_eq!(r.status, 403, "{r:?}");
    let r = request(
        &svc,
        "POST",
        "/api/metrics-store/maintenance",
        &[("Host", &evil)],
        b"",
    );
    assert_eq!(r.status, 403, "{r:?}");
    let r = request(&svc, "GET", "/", &[("Host", &evil)], b"");
    assert_eq!(r.status, 403, "the UI too: {r:?}");
    assert_eq!(get(&svc, "/api/metrics-store/config").json(), before);

    // Loopback names, addresses and configured names are ours.
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        format!("192.168.1.20:{port}"),
        "metrics.lan".to_string(),
        format!("METRICS.lan:{port}"),
    ] {
        let r = request(
            &svc,
            "GET",
            "/api/metrics-store/stats",
            &[("Host", &host)],
            b"",
        );
        assert_eq!(r.status, 200, "Host {host}: {r:?}");
    }
    assert_eq!(svc.stop(), 0);
}

#[test]
fn cross_site_writes_are_refused_and_scripts_keep_working() {
    let sb = Sandbox::new();
    let svc = service(&sb, "", None);
    let ts = ago(30);
    // A script (no Origin) stores 77.
    let r = request(
        &svc,
        "POST",
        "/api/metrics-store/write?sync=true",
        &[JSON],
        &points(&[("101", 77.0, ts)]),
    );
    assert_eq!(r.status, 200, "{r:?}");

    // A form on another site: text/plain, its Origin.
    let zero = points(&[("101", 0.0, ts)]);
    let r = request(
        &svc,
        "POST",
        "/api/metrics-store/write?sync=true",
        &[
            ("Origin", "http://evil.example"),
            ("Content-Type", "text/plain"),
        ],
        &zero,
    );
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.json()["error"].as_str().unwrap().contains("another site"));
    // The same with JSON (needs a preflight, which we never grant).
    let r = request(
        &svc,
        "POST",
        "/api/metrics-store/write?sync=true",
        &[("Origin", "http://evil.example"), JSON],
        &zero,
    );
    assert_eq!(r.status, 403, "{r:?}");
    // A page on another port of this machine is another site too.
    let r = request(
        &svc,
        "POST",
        "/api/metrics-store/maintenance",
        &[("Origin", "http://127.0.0.1:1")],
        b"",
    );
    assert_eq!(r.status, 403, "{r:?}");
    let r = request(
        &svc,
        "PUT",
        "/api/metrics-store/config",
        &[("Origin", "null"), JSON],
        br#"{"retention":{"raw":"10m"}}"#,
    );
    assert_eq!(r.status, 403, "{r:?}");
    // Without an Origin, a non-JSON body is refused before it is read.
    let r = request(
        &svc,
        "POST",
        "/api/metrics-store/write?sync=true",
        &[("Content-Type", "text/plain")],
        &zero,
    );
    assert_eq!(r.status, 415, "{r:?}");
    let r = request(
        &svc,
        "POST",
        "/api/metrics-store/write?sync=true",
        &[],
        &zero,
    );
    assert_eq!(r.status, 415, "no content type: {r:?}");
    assert_eq!(
        values(&svc, "101"),
        vec![77.0],
        "a refused write changed data"
    );

    // The UI's own requests (its Origin is the address it was loaded from).
    let own = format!("http://{}", svc.addr);
    let r = request(
        &svc,
        "POST",
        "/api/metrics-store/write?sync=true",
        &[("Origin", &own), JSON],
        &points(&[("101", 78.0, ts)]),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = request(
        &svc,
        "POST",
        "/api/metrics-store/maintenance",
        &[("Origin", &own)],
        b"",
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(values(&svc, "101"), vec![78.0]);
    assert_eq!(svc.stop(), 0);
}

#[test]
fn pages_cannot_be_framed_or_sniffed() {
    let sb = Sandbox::new();
    let svc = service(&sb, "", None);
    for path in ["/", "/api/metrics-store/stats"] {
        let r = get(&svc, path);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(
            r.header("content-security-policy"),
            Some("frame-ancestors 'none'"),
            "{path}"
        );
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
    }
    assert_eq!(svc.stop(), 0);
}

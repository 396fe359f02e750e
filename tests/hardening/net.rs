//! Case 3: sockets that send nothing, or half a header, used to stay open
//! for ever; at the descriptor limit `accept` failed and every request
//! hung, `/healthz` included.

use super::{Sandbox, get, service};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// This process opens over a thousand sockets: lift its own soft limit.
fn allow_many_sockets() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let l = getrlimit(Resource::Nofile);
    let want = 4096.min(l.maximum.unwrap_or(u64::MAX));
    if l.current.is_some_and(|c| c < want) {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(want),
                maximum: l.maximum,
            },
        )
        .expect("raise this test's open-file limit");
    }
}

/// Whether the server has closed `s` (EOF or reset) by `deadline`.
fn closed_by(s: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            // A 408 or similar before the close is fine.
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn a_thousand_idle_or_half_header_sockets_neither_starve_the_service_nor_stay_open() {
    allow_many_sockets();
    let sb = Sandbox::new();
    let timeout = Duration::from_secs(3);
    let svc = service(
        &sb,
        "server:\n  header_read_timeout: 3s\n  idle_timeout: 3s\n",
        Some(256),
    );
    let started = Instant::now();
    let mut sockets = Vec::new();
    for i in 0..1000 {
        let addr = svc.addr.parse().unwrap();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        if i % 2 == 1 {
            s.write_all(b"GET /api/metrics-store/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: ")
                .unwrap();
        }
        sockets.push(s);
    }

    // A client arriving after them is answered within a second.
    let mut probe = TcpStream::connect(&svc.addr).unwrap();
    probe
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    probe
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let read = probe.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        read.is_ok() && answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"),
        "/healthz did not answer within 1 s ({read:?}): {answer:?}\n{}",
        svc.log_text()
    );

    // Every one of the thousand is closed by the server within the timeout
    // (counted from when the last was opened, plus scheduling slack).
    let deadline = Instant::now() + timeout + Duration::from_secs(2);
    let open: Vec<usize> = sockets
        .iter_mut()
        .enumerate()
        .filter_map(|(i, s)| (!closed_by(s, deadline)).then_some(i))
        .collect();
    assert!(
        open.is_empty(),
        "{} of 1000 sockets still open {:?} after they were opened (first: {:?})",
        open.len(),
        started.elapsed(),
        &open[..open.len().min(10)]
    );

    // The service is unharmed: it answers, and kept no descriptors.
    let r = get(&svc, "/api/metrics-store/stats");
    assert_eq!(r.status, 200, "{r:?}");
    let fds = std::fs::read_dir(format!("/proc/{}/fd", svc.child.id()))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(
        fds < 64,
        "the service holds {fds} descriptors after the flood"
    );
    let log = svc.log_text();
    assert!(
        !log.contains("Too many open files"),
        "the service ran out of descriptors:\n{log}"
    );
    assert_eq!(svc.stop(), 0);
}

#[test]
fn a_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let sb = Sandbox::new();
    let svc = service(
        &sb,
        "server:\n  header_read_timeout: 2s\n  idle_timeout: 4s\n",
        None,
    );
    let mut s = TcpStream::connect(&svc.addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let answered = Instant::now();
    // Still open past the header timeout: an idle kept-alive connection
    // has the (longer) idle timeout.
    assert!(!closed_by(&mut s, answered + Duration::from_secs(3)));
    assert!(closed_by(&mut s, answered + Duration::from_secs(7)));
    assert_eq!(svc.stop(), 0);
}

//! The fault-injection suite of issue 10: every case drives the real
//! binary (`pulse-metrics ... serve`, or a one-shot command) the way an
//! operator, a hostile web page or a failing disk would.
//!
//! | module    | cases                                                        |
//! |-----------|--------------------------------------------------------------|
//! | `net`     | idle and half-header sockets at a low descriptor limit       |
//! | `web`     | Host allow-list, foreign Origin, content types, frame headers |
//! | `answers` | the cap on points per chart answer                           |
//! | `disk`    | a full disk: at start, in the queue, at shutdown             |
//! | `damage`  | a damaged journal segment and chunk: check and salvage       |
//! | `edges`   | `Expect: 100-continue`, compressed bodies, a closed stderr   |
//! | `writers` | one writer per database; readers beside it, creating nothing |
//! | `points`  | timestamps in seconds, from the future, older than retention |

#[path = "../cli_support/mod.rs"]
mod cli_support;

mod answers;
mod damage;
mod disk;
mod edges;
mod net;
mod points;
mod web;
mod writers;

use cli_support::{BIN, RawResponse, Sandbox, Service, raw_http};
use std::process::Command;

/// A service on `127.0.0.1:0` over `<sandbox>/data/metrics.db`, with the
/// host collector off (every series is one the test wrote) and `extra`
/// YAML appended to the config file (top-level sections other than
/// `collectors`). With `fd_limit`, it runs under `ulimit -n`.
pub fn service(sb: &Sandbox, extra: &str, fd_limit: Option<u32>) -> Service {
    let config = sb.write(
        "config.yaml",
        format!("collectors:\n  host:\n    enabled: false\n{extra}"),
    );
    let db = sb.default_db();
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
        "serve",
        "--listen",
        "127.0.0.1:0",
    ];
    let command = match fd_limit {
        None => sb.command(&args),
        Some(n) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                .arg(BIN)
                .args(args)
                .current_dir(sb.dir.path())
                .env_remove("PULSE_METRICS_CONFIG")
                .env_remove("PULSE_DATA_DIR");
            c
        }
    };
    Service::start(command)
}

/// A request with a body, as a browser or script would send it.
pub fn request(
    svc: &Service,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> RawResponse {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {}\r\n", svc.addr));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    raw_http(&svc.addr, &bytes)
}

pub fn get(svc: &Service, path: &str) -> RawResponse {
    request(svc, "GET", path, &[], b"")
}

pub const JSON: (&str, &str) = ("Content-Type", "application/json");

/// A write body of one point per `(id, value, timestamp)`.
pub fn points(list: &[(&str, f64, i64)]) -> Vec<u8> {
    let points: Vec<serde_json::Value> = list
        .iter()
        .map(|(id, value, ts)| {
            serde_json::json!({"resourceType": "vm", "resourceId": id, "metric": "cpu", "value": value, "timestamp": ts})
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "points": points })).unwrap()
}

/// Unix ms now, on a whole second, `secs` seconds ago.
pub fn ago(secs: i64) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    (now - secs) * 1000
}

/// The values stored for `vm/<id>/cpu` over the last 2 hours.
pub fn values(svc: &Service, id: &str) -> Vec<f64> {
    let r = get(
        svc,
        &format!("/api/metrics-store/history?resourceType=vm&resourceId={id}&metric=cpu&range=2h"),
    );
    assert_eq!(r.status, 200, "{r:?}");
    r.json()["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["value"].as_f64().unwrap())
        .collect()
}

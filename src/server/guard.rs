//! What a request must look like before any handler sees it: addressed to
//! this service (`Host`), not sent by another site (`Origin`), JSON where
//! JSON is expected, within the size limit, in an encoding we can read.
//!
//! Without a token (the default) the API trusts whoever can reach it, and a
//! browser on the same machine can be made to reach it by any web page: a
//! cross-site form POST, or DNS rebinding (a page whose name resolves to
//! 127.0.0.1 talks to us as "its own origin"). The `Host` allow-list stops
//! rebinding (the browser sends the attacker's name); the `Origin` check and
//! the JSON content type stop cross-site writes (a "simple" cross-site
//! request cannot send `application/json`). Scripts and collectors send no
//! `Origin` and are not affected.

use super::App;
use super::api::{ApiError, BODY_LIMIT};
use crate::config::ServerConfig;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub use crate::config::rules::HostName;

/// The names this service answers to. Fixed for the life of the process.
#[derive(Debug, Clone, Default)]
pub struct HostPolicy {
    /// `server.allowed_hosts`.
    names: Vec<HostName>,
    /// The listen address's host, any port.
    listen: Option<HostName>,
}

impl HostPolicy {
    /// `server.allowed_hosts` plus the listen address's host (when it is a
    /// name: IP addresses are always allowed).
    pub fn new(server: &ServerConfig) -> HostPolicy {
        let names = server
            .allowed_hosts
            .iter()
            .filter_map(|h| HostName::parse(h))
            .collect();
        let listen = HostName::parse(&server.listen).map(|l| HostName {
            host: l.host,
            port: None,
        });
        HostPolicy { names, listen }
    }

    /// Loopback names, any IP address (a rebinding page cannot make the
    /// browser send an address as `Host`: the browser sends the page's own
    /// name), and the configured names.
    fn allows_host(&self, host: &HostName) -> bool {
        host.is_ip()
            || host.host == "localhost"
            || host.host.ends_with(".localhost")
            || self
                .names
                .iter()
                .chain(&self.listen)
                .any(|n| n.covers(host))
    }

    /// An `Origin` is our own when it names the host the request was sent
    /// to (same name and port) or a configured name (a reverse proxy may
    /// rewrite `Host` but not `Origin`).
    fn allows_origin(&self, origin: &str, host: Option<&HostName>) -> bool {
        let Ok(url) = reqwest::Url::parse(origin) else {
            return false;
        };
        let Some(name) = url.host_str() else {
            return false;
        };
        let name = name.trim_start_matches('[').trim_end_matches(']');
        let origin = HostName {
            host: name.to_ascii_lowercase(),
            port: url.port_or_known_default(),
        };
        let same = host.is_some_and(|h| {
            h.host == origin.host && h.port.or(url.port_or_known_default()) == origin.port
        });
        same || self.names.iter().any(|n| n.covers(&origin))
    }
}

fn forbidden(message: String) -> Response {
    ApiError::new(StatusCode::FORBIDDEN, message).into_response()
}

/// The outermost check of every request: `Host`, `Origin` on state-changing
/// methods, the body's declared size and encoding; and the headers that
/// keep our pages out of other sites' frames on every answer.
pub async fn check_request(State(app): State<App>, req: Request, next: Next) -> Response {
    let mut resp = match refuse(&app.state.hosts, req.headers(), req.method()) {
        Some(refused) => refused,
        None => next.run(req).await,
    };
    let h = resp.headers_mut();
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("frame-ancestors 'none'"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

fn refuse(hosts: &HostPolicy, headers: &HeaderMap, method: &Method) -> Option<Response> {
    // HTTP/1.0 clients may send no Host; browsers always do.
    let host = match headers.get(header::HOST) {
        None => None,
        Some(v) => {
            let text = v.to_str().unwrap_or("");
            match HostName::parse(text) {
                Some(h) if hosts.allows_host(&h) => Some(h),
                _ => {
                    return Some(forbidden(format!(
                        "Host {text:?} is not a name this service answers to; if it is reached through a reverse proxy or a DNS name, add that name to server.allowed_hosts"
                    )));
                }
            }
        }
    };
    let changes_state = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if changes_state && let Some(origin) = headers.get(header::ORIGIN) {
        let text = origin.to_str().unwrap_or("");
        if !hosts.allows_origin(text, host.as_ref()) {
            return Some(forbidden(format!(
                "requests from another site are refused (Origin {text:?}); scripts send no Origin, and a reverse proxy's name goes in server.allowed_hosts"
            )));
        }
    }
    // A client that asks before sending (`Expect: 100-continue`) gets the
    // 413 before anything reads the body, instead of an invitation to send
    // it. Others are answered once the limit is reached, as they expect to
    // send before they read.
    let asks_first = headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if asks_first
        && let Some(len) = headers.get(header::CONTENT_LENGTH)
        && let Some(len) = len.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok())
        && len > BODY_LIMIT as u64
    {
        return Some(
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "request body of {len} bytes is over the {BODY_LIMIT} byte (8 MiB) limit; send smaller batches"
                ),
            )
            .into_response(),
        );
    }
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let v = value.to_str().unwrap_or("").trim();
        if !(v == "gzip" || v == "deflate" || v.eq_ignore_ascii_case("identity")) {
            return Some(
                ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!(
                        "Content-Encoding {v:?} is not supported: send the body as is, or with gzip or deflate"
                    ),
                )
                .into_response(),
            );
        }
    }
    None
}

/// For endpoints that read a JSON body: anything but `application/json`
/// is a 415, checked before the body is read.
pub async fn require_json(req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_json);
    if ok {
        next.run(req).await
    } else {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the body with `Content-Type: application/json`",
        )
        .into_response()
    }
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allowed: &[&str]) -> HostPolicy {
        HostPolicy::new(&ServerConfig {
            allowed_hosts: allowed.iter().map(|s| s.to_string()).collect(),
            ..ServerConfig::default()
        })
    }

    #[test]
    fn host_names_parse() {
        let h = HostName::parse("Metrics.Example.com:8443").unwrap();
        assert_eq!(
            (h.host.as_str(), h.port),
            ("metrics.example.com", Some(8443))
        );
        let h = HostName::parse("[::1]:7656").unwrap();
        assert_eq!((h.host.as_str(), h.port), ("::1", Some(7656)));
        for bad in ["", "http://x", "x/y", "a..b", "x:port", "[::1", "user@x"] {
            assert!(HostName::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn hosts_allowed_and_refused() {
        let p = policy(&["metrics.lan", "proxy.example:443"]);
        let ok = |h: &str| p.allows_host(&HostName::parse(h).unwrap());
        assert!(ok("localhost:7656"));
        assert!(ok("app.localhost"));
        assert!(ok("127.0.0.1:7656"));
        assert!(ok("192.168.1.5:7656"));
        assert!(ok("[::1]:7656"));
        assert!(ok("metrics.lan:7656"));
        assert!(ok("proxy.example:443"));
        assert!(!ok("proxy.example:8080"));
        assert!(!ok("evil.example:7656"));
    }

    #[test]
    fn origins() {
        let p = policy(&["metrics.lan"]);
        let host = HostName::parse("127.0.0.1:7656");
        assert!(p.allows_origin("http://127.0.0.1:7656", host.as_ref()));
        assert!(!p.allows_origin("http://127.0.0.1:7655", host.as_ref()));
        assert!(!p.allows_origin("http://localhost:7656", host.as_ref()));
        assert!(!p.allows_origin("http://evil.example", host.as_ref()));
        assert!(!p.allows_origin("null", host.as_ref()));
        assert!(p.allows_origin("https://metrics.lan", host.as_ref()));
        let host = HostName::parse("metrics.lan");
        assert!(p.allows_origin("http://metrics.lan", host.as_ref()));
    }
}

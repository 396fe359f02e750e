//! InfluxDB's write endpoints over HTTP, so Proxmox VE's External Metric
//! Server (and any InfluxDB client) can push to us: `POST /write` (v1),
//! `POST /api/v2/write` (v2), and the `GET /health` and `/ping` probes those
//! clients make. Parsing and mapping are `crate::influx`'s.
//!
//! Line protocol is sent as `text/plain` or with no content type at all
//! (Proxmox sets none), so these routes take any; gzip and deflate bodies are
//! decoded, and the 8 MiB limit applies to the decoded body.

use super::App;
use super::api::{ApiError, Params, read_body, token_matches};
use crate::influx::{Mode, Precision, PushError};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

/// At most this many bad lines are listed in a 400 answer.
const MAX_DETAILS: usize = 1000;

/// The routes, for the service's router.
pub fn routes() -> Router<App> {
    Router::new()
        .route("/write", post(write_v1))
        .route("/api/v2/write", post(write_v2))
        .route("/health", get(health))
        .route("/ping", get(ping).head(ping))
        .layer(tower_http::decompression::RequestDecompressionLayer::new())
}

type Query_ = Result<Query<Vec<(String, String)>>, QueryRejection>;

/// InfluxDB 1.x: `db` is the instance; `u`/`p` (or a header) carry the token.
async fn write_v1(
    State(app): State<App>,
    headers: HeaderMap,
    query: Query_,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let params = Params::from(query)?;
    authorize(&app, &headers, &params)?;
    let instance = params.get("db").unwrap_or_default();
    if instance.is_empty() {
        return Err(ApiError::bad_request(
            "db is required: the database name is the instance name, the prefix of every series id (e.g. /write?db=pve1)",
        ));
    }
    push(app, instance.to_string(), &params, body).await
}

/// InfluxDB 2.x: `bucket` is the instance (`org` is accepted and unused);
/// `Authorization: Token ...` carries the token.
async fn write_v2(
    State(app): State<App>,
    headers: HeaderMap,
    query: Query_,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let params = Params::from(query)?;
    authorize(&app, &headers, &params)?;
    // InfluxDB 1.8's compatibility API names a bucket `db/retention-policy`.
    let bucket = params.get("bucket").unwrap_or_default();
    let instance = bucket.split('/').next().unwrap_or_default();
    if instance.is_empty() {
        return Err(ApiError::bad_request(
            "bucket is required: the bucket name is the instance name, the prefix of every series id (e.g. /api/v2/write?org=proxmox&bucket=pve1)",
        ));
    }
    push(app, instance.to_string(), &params, body).await
}

async fn push(
    app: App,
    instance: String,
    params: &Params,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let precision = Precision::parse(params.get("precision").unwrap_or_default())
        .map_err(ApiError::bad_request)?;
    let body = read_body(body)?;
    let receiver = app.state.influx.clone();
    let report = tokio::task::spawn_blocking(move || {
        receiver.push(&instance, &body, precision, Mode::AllOrNothing)
    })
    .await
    .map_err(|e| {
        tracing::error!("line protocol write task failed: {e}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error while writing",
        )
    })?
    .map_err(push_error)?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    h.insert("x-pulse-metrics-points", HeaderValue::from(report.points));
    h.insert("x-pulse-metrics-ignored", HeaderValue::from(report.ignored));
    Ok(resp)
}

fn push_error(e: PushError) -> ApiError {
    let message = e.to_string();
    match e {
        PushError::Instance(m) => ApiError::bad_request(m),
        PushError::Lines(lines) | PushError::Store { lines, .. } if !lines.is_empty() => {
            let details = lines
                .iter()
                .take(MAX_DETAILS)
                .map(|l| json!({"line": l.line, "error": l.reason}))
                .collect();
            ApiError::bad_request(message).with_details(details)
        }
        PushError::Lines(_) => ApiError::bad_request(message),
        PushError::Store { error, .. } => ApiError::from_store(error),
    }
}

/// With `server.api_token` set, a write needs it: as the API's own
/// `Authorization: Bearer` / `X-API-Token`, as InfluxDB's
/// `Authorization: Token <token>` (or `Token <user>:<token>`, the form
/// Proxmox's docs give for v1-style credentials), as Basic auth with the
/// token as password, or as v1's `p=` query parameter.
fn authorize(app: &App, headers: &HeaderMap, params: &Params) -> Result<(), ApiError> {
    let Some(token) = app.state.token.as_deref() else {
        return Ok(());
    };
    if token_matches(headers, token) || influx_credentials(headers, params, token) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNAUTHORIZED,
        "missing or wrong token: give server.api_token as Proxmox's InfluxDB `token` (Authorization: Token <token>), as v1 password (p=<token>), or as Authorization: Bearer <token>",
    ))
}

fn influx_credentials(headers: &HeaderMap, params: &Params, token: &str) -> bool {
    use base64::Engine;
    let mut given: Vec<Vec<u8>> = Vec::new();
    for value in headers.get_all(header::AUTHORIZATION) {
        let v = value.as_bytes().trim_ascii();
        let Some(space) = v.iter().position(|b| *b == b' ') else {
            continue;
        };
        let (scheme, rest) = (&v[..space], v[space..].trim_ascii());
        if scheme.eq_ignore_ascii_case(b"token") {
            given.push(rest.to_vec());
            given.extend(password(rest));
        } else if scheme.eq_ignore_ascii_case(b"basic")
            && let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest)
        {
            given.extend(password(&decoded));
        }
    }
    if let Some(p) = params.get("p") {
        given.push(p.as_bytes().to_vec());
    }
    // Every candidate is checked, so the time taken does not tell which.
    given.iter().fold(false, |ok, g| ok | same_secret(g, token))
}

/// The part after the first `:` of `user:password`.
fn password(credentials: &[u8]) -> Option<Vec<u8>> {
    let colon = credentials.iter().position(|b| *b == b':')?;
    Some(credentials[colon + 1..].to_vec())
}

fn same_secret(given: &[u8], token: &str) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    Sha256::digest(given)
        .ct_eq(&Sha256::digest(token.as_bytes()))
        .into()
}

/// InfluxDB 2.x's health check, which Proxmox calls when a metric server is
/// added or edited ("test connection"). A wrong token is refused here too,
/// so that test catches it; without credentials it passes, as InfluxDB's.
async fn health(State(app): State<App>, headers: HeaderMap, query: Query_) -> Response {
    let sent_credentials = headers.contains_key(header::AUTHORIZATION)
        || headers.contains_key("x-api-token")
        || query
            .as_ref()
            .is_ok_and(|Query(q)| q.iter().any(|(k, _)| k == "p"));
    if sent_credentials
        && let Ok(params) = Params::from(query)
        && let Err(e) = authorize(&app, &headers, &params)
    {
        return e.into_response();
    }
    axum::Json(json!({
        "name": "pulse-metrics",
        "message": "ready for writes (InfluxDB line protocol)",
        "status": "pass",
        "checks": [],
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

/// InfluxDB 1.x's liveness probe.
async fn ping() -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(
        "x-influxdb-build",
        HeaderValue::from_static("pulse-metrics"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &[(&str, &str)]) -> Params {
        Params::from(Ok(Query(
            q.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )))
        .ok()
        .unwrap()
    }

    #[test]
    fn influx_credential_forms() {
        use base64::Engine;
        let t = "s3cret";
        let with = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            h
        };
        let none = params(&[]);
        assert!(influx_credentials(&with("Token s3cret"), &none, t));
        assert!(influx_credentials(&with("token  s3cret "), &none, t));
        assert!(influx_credentials(&with("Token proxmox:s3cret"), &none, t));
        let basic = base64::engine::general_purpose::STANDARD.encode("any:s3cret");
        assert!(influx_credentials(
            &with(&format!("Basic {basic}")),
            &none,
            t
        ));
        assert!(influx_credentials(
            &HeaderMap::new(),
            &params(&[("u", "x"), ("p", "s3cret")]),
            t
        ));

        assert!(!influx_credentials(&HeaderMap::new(), &none, t));
        assert!(!influx_credentials(&with("Token s3cre"), &none, t));
        assert!(!influx_credentials(&with("Token s3cret:x"), &none, t));
        assert!(!influx_credentials(&with("Tokens3cret"), &none, t));
        let wrong = base64::engine::general_purpose::STANDARD.encode("s3cret:no");
        assert!(!influx_credentials(
            &with(&format!("Basic {wrong}")),
            &none,
            t
        ));
        assert!(!influx_credentials(&with("Basic !!!"), &none, t));
        assert!(!influx_credentials(
            &HeaderMap::new(),
            &params(&[("u", "s3cret")]),
            t
        ));
    }
}

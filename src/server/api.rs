//! The HTTP API: router, auth, request logging and every handler.
//!
//! Errors are JSON `{"error": "...", "details": [...]}`. Every store call
//! runs on the blocking pool (the store's methods block on SQLite or on its
//! writer thread). Request data is never unwrapped: anything a client sends
//! ends in a 2xx or a 4xx naming the problem.

use super::{App, charts, guard, listing, prom};
use crate::answer;
use crate::config::{self, Config, MetricsConfig};
use crate::model::{Point, Tier, now_ms};
use crate::pulse_ids::stored_metrics;
use crate::reads::Reads;
use crate::store::{Resource, ResourceMap, SeriesFilter, TimeRange, point_from_json};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, MatchedPath, Query, Request, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

/// Largest request body: bodies over 8 MiB are refused with 413 (docs/api.md).
pub const BODY_LIMIT: usize = 8 * 1024 * 1024;
/// At most this many per-point errors are listed in a 400 answer; the
/// message still gives the total.
const MAX_DETAILS: usize = 1000;
/// The ranges `/api/charts` accepts, as Pulse's front end sends them.
pub const CHART_RANGES: [(&str, u64); 11] = [
    ("5m", 300),
    ("15m", 900),
    ("30m", 1800),
    ("1h", 3600),
    ("4h", 4 * 3600),
    ("8h", 8 * 3600),
    ("12h", 12 * 3600),
    ("24h", 24 * 3600),
    ("7d", 7 * 86_400),
    ("30d", 30 * 86_400),
    ("90d", 90 * 86_400),
];
/// Pulse's default when the front end sends no range.
const DEFAULT_CHART_RANGE: &str = "1h";

/// The whole service's router.
pub fn router(app: App) -> Router {
    let json = || middleware::from_fn(guard::require_json);
    let api = Router::new()
        .route("/metrics-store/write", post(write.layer(json())))
        .route("/metrics-store/history", get(history))
        .route("/metrics-store/series", get(series))
        .route("/metrics-store/stats", get(stats))
        .route(
            "/metrics-store/config",
            get(get_config)
                .put(put_config.layer(json()))
                .delete(delete_config),
        )
        .route("/metrics-store/config/sources", get(config_sources))
        .route("/metrics-store/maintenance", post(maintenance))
        .route("/charts", get(charts))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(app.clone(), auth));
    Router::new()
        .nest("/api", api)
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .merge(super::influx::routes())
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(app.clone())
        .merge(crate::ui::router())
        .layer(tower_http::decompression::RequestDecompressionLayer::new())
        .layer(middleware::from_fn_with_state(
            app.clone(),
            guard::check_request,
        ))
        .layer(middleware::from_fn_with_state(app, log_requests))
        .layer(compression())
}

/// gzip or brotli, whichever the client prefers, for every answer worth it
/// (a 24 h dashboard answer shrinks ~10x). Level 5: brotli's default (11)
/// takes about a second per megabyte; 5 compresses nearly as well in
/// milliseconds, and gzip 5 is close to its default 6.
fn compression() -> tower_http::compression::CompressionLayer {
    tower_http::compression::CompressionLayer::new()
        .quality(tower_http::CompressionLevel::Precise(5))
}

// ---------------------------------------------------------------- errors

/// A JSON error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    details: Vec<Value>,
    retry_after: Option<u64>,
}

/// Store errors as answers (see `ApiError::from_store`), so `?` works on
/// the rules shared with the command line.
impl From<crate::Error> for ApiError {
    fn from(e: crate::Error) -> ApiError {
        ApiError::from_store(e)
    }
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            details: Vec::new(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn with_details(mut self, details: Vec<Value>) -> ApiError {
        self.details = details;
        self
    }

    /// Maps a store error to its status: bad input 400 (with per-point
    /// details), a full queue 503 + `Retry-After`, a closed store 503,
    /// anything else 500.
    pub(crate) fn from_store(e: crate::Error) -> ApiError {
        if let Some(points) = e.point_errors() {
            return ApiError::bad_request(e.to_string()).with_details(point_details(
                points.iter().map(|p| (p.index, p.reason.clone())),
            ));
        }
        if e.is_invalid_input() {
            return ApiError::bad_request(e.to_string());
        }
        if e.is_overloaded() {
            let mut err = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
            err.retry_after = Some(1);
            return err;
        }
        if e.is_closed() {
            let mut err = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the service is shutting down; retry later",
            );
            err.retry_after = Some(5);
            return err;
        }
        tracing::error!("store error: {e}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.message, "details": self.details});
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

type ApiResult = Result<Response, ApiError>;

fn point_details(errors: impl Iterator<Item = (usize, String)>) -> Vec<Value> {
    errors
        .take(MAX_DETAILS)
        .map(|(index, reason)| json!({"index": index, "error": reason}))
        .collect()
}

/// Runs a blocking store call on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("request task failed: {e}");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error while answering the request",
            ))
        }
    }
}

/// Longest a read waits for its turn before it is answered 503.
const READ_QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits for a turn among the reads sharing `limit`: each holds a SQLite
/// reader, and heavy ones megabytes of answer. The permit is held until the
/// answer is sent.
async fn read_turn(
    limit: &std::sync::Arc<tokio::sync::Semaphore>,
) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    match tokio::time::timeout(READ_QUEUE_TIMEOUT, limit.clone().acquire_owned()).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => {
            let mut err = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many reads waiting; retry shortly",
            );
            err.retry_after = Some(1);
            Err(err)
        }
    }
}

/// A JSON answer from bytes serialized off the async threads.
fn json_bytes(bytes: Vec<u8>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response()
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(value).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the answer: {e}"),
        )
    })
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {}", req.uri().path()),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

// ---------------------------------------------------------- middleware

/// Every `/api` route needs the token when one is configured. Both sides
/// are hashed first so the comparison takes the same time whatever the
/// length or content of the guess.
async fn auth(State(app): State<App>, req: Request, next: Next) -> Response {
    let Some(token) = app.state.token.as_deref() else {
        return next.run(req).await;
    };
    if token_matches(req.headers(), token) {
        next.run(req).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong API token: send `Authorization: Bearer <token>` or `X-API-Token: <token>`",
        )
        .into_response()
    }
}

pub(crate) fn token_matches(headers: &HeaderMap, token: &str) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    let want = Sha256::digest(token.as_bytes());
    let check = |given: &[u8]| -> bool { Sha256::digest(given).ct_eq(&want).into() };
    let mut ok = false;
    for value in headers.get_all(header::AUTHORIZATION) {
        let v = value.as_bytes();
        if v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ") {
            ok |= check(v[7..].trim_ascii());
        }
    }
    for value in headers.get_all("x-api-token") {
        ok |= check(value.as_bytes().trim_ascii());
    }
    ok
}

/// One log line and one Prometheus count per request. The route label is
/// the matched pattern, not the raw path.
async fn log_requests(State(app): State<App>, req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    let route = route.unwrap_or_else(|| {
        if path.starts_with("/api") {
            "/api/unmatched".to_string()
        } else {
            "other".to_string()
        }
    });
    app.state.prom.record(method.as_str(), &route, status);
    let elapsed = started.elapsed();
    let ms = elapsed.as_secs_f64() * 1000.0;
    // A dashboard refreshes every 10 s: routine requests would bury
    // everything else at INFO.
    if status >= 400 {
        tracing::warn!(%method, %path, status, ms, "request refused or failed");
    } else if elapsed > SLOW_REQUEST {
        tracing::warn!(%method, %path, status, ms, "slow request");
    } else {
        tracing::debug!(%method, %path, status, ms, "request");
    }
    resp
}

/// Requests taking longer than this are logged as warnings.
const SLOW_REQUEST: Duration = Duration::from_secs(1);

// ------------------------------------------------------------- params

/// Query parameters in order; the first of a repeated name wins.
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    pub(crate) fn from(
        q: Result<Query<Vec<(String, String)>>, QueryRejection>,
    ) -> Result<Params, ApiError> {
        match q {
            Ok(Query(v)) => Ok(Params(v)),
            Err(e) => Err(ApiError::bad_request(format!(
                "malformed query string: {e}"
            ))),
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A non-empty value, or None when absent or empty.
    fn text(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }

    fn bool(&self, name: &str) -> Result<bool, ApiError> {
        match self.get(name) {
            None => Ok(false),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "" | "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" => Ok(false),
                _ => Err(ApiError::bad_request(format!(
                    "{name}: expected true or false, got {v:?}"
                ))),
            },
        }
    }

    /// `type`, `search`, `sort`, `limit` and `offset`: which resources a
    /// page of `/api/charts` or `/series` holds ([`listing`]).
    fn listing(&self) -> Result<listing::Request, ApiError> {
        listing::Request::from_params(
            self.get("type"),
            self.get("search"),
            self.get("sort"),
            self.get("limit"),
            self.get("offset"),
        )
        .map_err(ApiError::bad_request)
    }

    fn max_points(&self) -> Result<Option<usize>, ApiError> {
        match self.get("maxPoints") {
            None => Ok(None),
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if n >= 1 => Ok(Some(n)),
                _ => Err(ApiError::bad_request(format!(
                    "maxPoints: must be a whole number of at least 1, got {v:?}"
                ))),
            },
        }
    }
}

/// What range a query asked for.
struct Window {
    range: TimeRange,
    /// The `range` parameter as given (null when start/end were used).
    label: Option<String>,
}

/// The charts' window: `answer::window`, with `range` one of Pulse's
/// list (default 1h; an unknown one is answered with the list).
fn window(p: &Params, now: i64) -> Result<Window, ApiError> {
    let chart_range = |r: Option<&str>| {
        let r = r.unwrap_or(DEFAULT_CHART_RANGE);
        let Some(&(_, secs)) = CHART_RANGES.iter().find(|(name, _)| *name == r) else {
            let names: Vec<&str> = CHART_RANGES.iter().map(|(n, _)| *n).collect();
            return Err(ApiError::bad_request(format!(
                "range: unknown range {r:?}; expected one of {}",
                names.join(", ")
            ))
            .with_details(names.iter().map(|n| json!(n)).collect()));
        };
        Ok(answer::Window::Last {
            text: r.to_string(),
            duration: Duration::from_secs(secs),
        })
    };
    let w = answer::window(p.text("range"), p.text("start"), p.text("end"), chart_range)?;
    Ok(match w {
        answer::Window::Last { text, duration } => Window {
            range: TimeRange::last(duration, now),
            label: Some(text),
        },
        answer::Window::Between { start, end } => Window {
            range: TimeRange::between(start, end, now).map_err(ApiError::from_store)?,
            label: None,
        },
    })
}

// ------------------------------------------------------------- write

enum WriteFailure {
    Refused(ApiError),
    /// Accepted but `sync=true` could not make the points durable.
    NotDurable(usize, crate::Error),
}

async fn write(
    State(app): State<App>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let params = Params::from(query)?;
    let sync = params.bool("sync")?;
    let store = app.state.store.clone();
    let (points, resources) = parse_points(&read_body(body)?, |p| store.check_live(p, now_ms()))?;
    let described = resources.len();
    let outcome = tokio::task::spawn_blocking(move || {
        // Everything was validated: metadata first (durable when it
        // returns), so a point is never shown without the name sent with it.
        if !resources.is_empty() {
            store
                .write_resources(&resources)
                .map_err(|e| WriteFailure::Refused(ApiError::from_store(e)))?;
        }
        let n = store
            .write_live(&points, now_ms())
            .map_err(|e| WriteFailure::Refused(ApiError::from_store(e)))?;
        if sync {
            store.flush().map_err(|e| WriteFailure::NotDurable(n, e))?;
        }
        Ok(n)
    })
    .await;
    match outcome {
        Ok(Ok(n)) if described == 0 => Ok(axum::Json(json!({"accepted": n})).into_response()),
        Ok(Ok(n)) => Ok(axum::Json(json!({"accepted": n, "resources": described})).into_response()),
        Ok(Err(WriteFailure::Refused(e))) => Err(e),
        Ok(Err(WriteFailure::NotDurable(n, e))) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "{n} points were accepted but are not durable yet ({e}); they stay queued and are retried"
            ),
        )),
        Err(e) => {
            tracing::error!("write task failed: {e}");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error while writing",
            ))
        }
    }
}

pub(crate) fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "request body over the {BODY_LIMIT} byte (8 MiB) limit; send smaller batches"
                ),
            )
        } else {
            ApiError::bad_request(format!("cannot read the request body: {e}"))
        }
    })
}

fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("empty body: expected JSON"));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))
}

/// `{"points": [...], "resources": [...]}` (either may be left out) ->
/// points and metadata updates (the resource records, then the `name` and
/// `node` given on points), or a 400 naming every bad entry: bad by the
/// rules of every point, or by `check` (the rules of live writes).
fn parse_points(
    bytes: &[u8],
    check: impl Fn(&Point) -> Result<(), String>,
) -> Result<(Vec<Point>, Vec<Resource>), ApiError> {
    let body = parse_json(bytes)?;
    let Some(obj) = body.as_object() else {
        return Err(ApiError::bad_request(
            r#"body must be a JSON object {"points": [...]}"#,
        ));
    };
    if let Some(key) = obj.keys().find(|k| *k != "points" && *k != "resources") {
        return Err(ApiError::bad_request(format!(
            "unknown field `{key}` (expected points, resources)"
        )));
    }
    let list = |name: &str, what: &str| match obj.get(name) {
        Some(Value::Array(list)) => Ok(Some(list)),
        Some(_) => Err(ApiError::bad_request(format!(
            "`{name}` must be an array of {what} objects"
        ))),
        None => Ok(None),
    };
    let (points_in, resources_in) = (list("points", "point")?, list("resources", "resource")?);
    if points_in.is_none() && resources_in.is_none() {
        return Err(ApiError::bad_request(
            r#"missing `points`: expected {"points": [{"resourceType", "resourceId", "metric", "value", "timestamp"}]}"#,
        ));
    }
    let mut points = Vec::new();
    let mut named = Vec::new();
    let mut bad = Vec::new();
    for (i, v) in points_in.into_iter().flatten().enumerate() {
        match point_from_json(v).and_then(|(p, r)| check(&p).map(|()| (p, r))) {
            Ok((p, r)) => {
                points.push(p);
                named.extend(r);
            }
            Err(reason) => bad.push(json!({"index": i, "error": reason})),
        }
    }
    let mut resources = Vec::new();
    for (i, v) in resources_in.into_iter().flatten().enumerate() {
        match Resource::from_json(v) {
            Ok(r) => resources.push(r),
            Err(reason) => bad.push(json!({"resource": i, "error": reason})),
        }
    }
    if !bad.is_empty() {
        let records = bad.iter().filter(|b| b.get("resource").is_some()).count();
        let message = match (bad.len() - records, records) {
            (p, 0) => format!("{p} invalid point(s), nothing stored"),
            (0, r) => format!("{r} invalid resource record(s), nothing stored"),
            (p, r) => {
                format!("{p} invalid point(s) and {r} invalid resource record(s), nothing stored")
            }
        };
        bad.truncate(MAX_DETAILS);
        return Err(ApiError::bad_request(message).with_details(bad));
    }
    resources.extend(named);
    Ok((points, resources))
}

// ----------------------------------------------------------- history

async fn history(
    State(app): State<App>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let p = Params::from(query)?;
    let resource_type = p
        .text("resourceType")
        .ok_or_else(|| ApiError::bad_request("resourceType is required"))?;
    let resource_id = p
        .text("resourceId")
        .ok_or_else(|| ApiError::bad_request("resourceId is required"))?;
    // The same rules as `pulse-metrics query` (crate::answer).
    let mut request = answer::HistoryRequest::from_params(
        resource_type,
        resource_id,
        p.get("metric"),
        p.get("range"),
        p.get("start"),
        p.get("end"),
        now_ms(),
        p.get("maxPoints"),
    )
    .map_err(ApiError::from_store)?;
    request.segments = p.bool("segments")?;
    let _turn = read_turn(&app.state.light_reads).await?;
    let reads = app.state.reads.clone();
    let bytes = blocking(move || {
        let answer = answer::history(&reads, &request).map_err(ApiError::from_store)?;
        to_json(&answer)
    })
    .await?;
    Ok(json_bytes(bytes))
}

// ------------------------------------------------------------ charts

async fn charts(
    State(app): State<App>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let p = Params::from(query)?;
    let max_points = p.max_points()?;
    let wanted = p.listing()?;
    let now = now_ms();
    let w = window(&p, now)?;
    let turn = read_turn(&app.state.heavy_reads).await?;
    let local = app.state.store.clone();
    let store = app.state.reads.clone();
    let limit = app.state.max_answer_points;
    let listed = app.state.listed.clone();
    let late_count = app.state.jobs.late_waiting();
    let parts = blocking(move || {
        let (start, end) = (w.range.start, w.range.end);
        let page = listing::page(
            &listed.listed(&store).map_err(ApiError::from_store)?,
            &listing::meta_index(store.resources().map_err(ApiError::from_store)?),
            &wanted,
            |t, metric, rows| chart_values(&store, t, metric, rows, w.range, max_points),
        )?;
        // Only the page's series are read: a page of 50 rows costs what
        // those rows cost, whatever the number of resources.
        let filter = match wanted.is_everything() {
            true => SeriesFilter::default(),
            false => SeriesFilter {
                resources: Some(listing::resource_set(page.rows.iter().map(|r| &r.listed))),
                ..SeriesFilter::default()
            },
        };
        // Uncapped from the store: each series is capped on the reader
        // thread by `charts::series`, which needs every point's tier first.
        // An answer that could be over the limit is counted before any of
        // it is turned into JSON: a refused request costs no memory. The
        // estimate knows the local tiers only: a remote engine's answer is
        // always counted.
        if store.is_remote() || !surely_fits(&local, &filter, w.range, max_points, limit) {
            let counted = store
                .query_many_map(&filter, w.range, None, &|_, points| {
                    let tiers = crate::segments::label(&points);
                    crate::segments::cap(&points, &tiers, start, end, max_points).len()
                })
                .map_err(ApiError::from_store)?;
            let total: usize = counted.series.iter().map(|(_, n)| n).sum();
            if total > limit {
                return Err(too_many_points(
                    total,
                    counted.series.len(),
                    limit,
                    max_points,
                ));
            }
        }
        let many = store
            .query_many_map(&filter, w.range, None, &|_, points| {
                charts::series(&points, start, end, max_points)
            })
            .map_err(ApiError::from_store)?;
        let oldest = store
            .oldest_data_timestamp()
            .map_err(ApiError::from_store)?;
        // What is known about the resources in the answer, by the type
        // they are answered under.
        let mut meta = ResourceMap::new();
        for row in &page.rows {
            if let Some(m) = &row.meta {
                meta.entry(row.listed.resource_type.clone())
                    .or_default()
                    .insert(row.listed.resource_id.clone(), m.clone());
            }
        }
        Ok(charts::encode(
            &many.series,
            &meta,
            now,
            &charts::ChartStats {
                oldest_data_timestamp: oldest,
                tier: many.tier,
                range: w.label,
                range_seconds: (w.range.end - w.range.start) / 1000,
                late_count,
            },
            &page.json(),
        ))
    })
    .await?;
    let length: usize = parts.iter().map(Bytes::len).sum();
    // The turn is given back once the last byte is sent, so answers waiting
    // for slow clients count against the limit too.
    let chunks = parts.into_iter().map(move |chunk| {
        let _ = &turn;
        Ok::<_, Infallible>(chunk)
    });
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CONTENT_LENGTH, HeaderValue::from(length)),
        ],
        Body::from_stream(futures_util::stream::iter(chunks)),
    )
        .into_response())
}

/// The value each of `rows` (of canonical type `t`) shows last for `metric`
/// on the dashboard: the last point of its series over `range` capped at
/// `max_points`, rounded as the answer rounds it; `None` without points.
/// Of a series stored under a Pulse name and one under ours, ours wins, as
/// in the answer.
fn chart_values(
    store: &Reads,
    t: &str,
    metric: &str,
    rows: &[&listing::Listed],
    range: TimeRange,
    max_points: Option<usize>,
) -> Result<HashMap<String, Option<f64>>, ApiError> {
    let mut out = HashMap::new();
    for stored in stored_metrics(t, metric) {
        let filter = listing::metric_filter(stored, rows);
        let many = store
            .query_many_map(&filter, range, max_points, &|_, points| {
                points.last().map(|p| charts::chart_value(p.value))
            })
            .map_err(ApiError::from_store)?;
        for (key, v) in many.series {
            keep_value(&mut out, stored != metric, key.resource_id, v);
        }
    }
    Ok(out)
}

/// A series under our metric name replaces what was there; one under
/// Pulse's name only fills a gap.
fn keep_value(out: &mut HashMap<String, Option<f64>>, renamed: bool, id: String, v: Option<f64>) {
    if renamed {
        out.entry(id).or_insert(v);
    } else {
        out.insert(id, v);
    }
}

/// Whether an answer over the series `filter` keeps cannot hold more than `limit`
/// points: at most one point a second in raw and one a bucket in a tier
/// (plus an hour of raw edge not yet rolled up), or `maxPoints` a series.
fn surely_fits(
    store: &crate::store::Store,
    filter: &SeriesFilter,
    range: TimeRange,
    max_points: Option<usize>,
    limit: usize,
) -> bool {
    let tier = crate::store::select_tier(range.start, range.now, &store.config().retention);
    let secs = usize::try_from((range.end - range.start) / 1000).unwrap_or(usize::MAX);
    let by_time = (secs / tier.bucket_secs() as usize).saturating_add(if tier == Tier::Raw {
        0
    } else {
        3600
    });
    let per_series = max_points.map_or(by_time, |n| n.min(by_time));
    let series = match filter.resources {
        None => store.series_count(),
        // A page: its series only.
        Some(_) => store.keys(filter).len(),
    };
    series.saturating_mul(per_series.saturating_add(1)) <= limit
}

/// The 400 for a chart answer over `server.max_answer_points`.
fn too_many_points(
    total: usize,
    series: usize,
    limit: usize,
    max_points: Option<usize>,
) -> ApiError {
    let fit = (limit / series.max(1)).max(1);
    let advice = match max_points {
        None => format!(
            "add maxPoints (at most {fit} for these {series} series) or ask for a shorter range"
        ),
        Some(n) => format!("lower maxPoints from {n} to at most {fit}, or ask for a shorter range"),
    };
    ApiError::bad_request(format!(
        "the answer would hold {total} points from {series} series, over the limit of {limit} (server.max_answer_points): {advice}"
    ))
}

// ------------------------------------------------------ small endpoints

async fn series(
    State(app): State<App>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let wanted = Params::from(query)?.listing()?;
    let _turn = read_turn(&app.state.heavy_reads).await?;
    let store = app.state.reads.clone();
    let listed = app.state.listed.clone();
    let bytes = blocking(move || {
        let index = listing::meta_index(store.resources().map_err(ApiError::from_store)?);
        let page = listing::page(
            &listed.listed(&store).map_err(ApiError::from_store)?,
            &index,
            &wanted,
            |t, metric, rows| {
                // Sorted by the newest value of each series.
                let mut out = HashMap::new();
                for stored in stored_metrics(t, metric) {
                    let filter = listing::metric_filter(stored, rows);
                    let series = store
                        .series_matching(&filter)
                        .map_err(ApiError::from_store)?;
                    for s in series {
                        keep_value(&mut out, stored != metric, s.key.resource_id, s.last_value);
                    }
                }
                Ok::<_, ApiError>(out)
            },
        )?;
        let mut meta = ResourceMap::new();
        let series = if wanted.is_everything() {
            meta.extend(
                index
                    .into_iter()
                    .map(|(t, ids)| (t, ids.into_iter().collect())),
            );
            store.series().map_err(ApiError::from_store)?
        } else {
            for row in &page.rows {
                let id = &row.listed.resource_id;
                for t in &row.listed.stored_types {
                    if let Some(m) = index.get(t).and_then(|ids| ids.get(id)) {
                        meta.entry(t.clone())
                            .or_default()
                            .insert(id.clone(), m.clone());
                    }
                }
            }
            let filter = SeriesFilter {
                resources: Some(listing::resource_set(page.rows.iter().map(|r| &r.listed))),
                ..SeriesFilter::default()
            };
            store
                .series_matching(&filter)
                .map_err(ApiError::from_store)?
        };
        to_json(&json!({ "series": series, "meta": meta, "page": page.json() }))
    })
    .await?;
    Ok(json_bytes(bytes))
}

async fn stats(State(app): State<App>) -> ApiResult {
    let _turn = read_turn(&app.state.light_reads).await?;
    let store = app.state.store.clone();
    let stats = blocking(move || store.stats().map_err(ApiError::from_store)).await?;
    let mut v = serde_json::to_value(&stats).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode stats: {e}"),
        )
    })?;
    if let Some(obj) = v.as_object_mut() {
        obj.insert("collectors".into(), json!(app.state.board.snapshot()));
        obj.insert("remoteWrite".into(), json!(app.state.remote.snapshot()));
    }
    Ok(axum::Json(v).into_response())
}

async fn get_config(State(app): State<App>) -> ApiResult {
    Ok(axum::Json(app.state.store.config()).into_response())
}

/// Validates the change as the next start would (the file, `settings.json`
/// with the change, the command-line flags, then every start check), saves
/// what now differs from the file to `settings.json` atomically, then
/// applies it live. Nothing is saved or applied when a check or the save
/// fails; the configuration file is never written.
async fn put_config(State(app): State<App>, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let value = parse_json(&read_body(body)?)?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "body must be a JSON object: the metrics section (e.g. {\"retention\": {\"raw\": \"4h\"}})",
        ));
    }
    let mut current = app.state.config.lock().await;
    let settings = &app.state.settings;
    let wanted: MetricsConfig =
        config::metrics_from_json(&value, &current.metrics).map_err(config_error)?;
    let saved =
        config::UiSettings::between(&settings.base.metrics, &wanted).map_err(config_error)?;
    change_settings(&app, &mut current, saved, "changed").await
}

/// Reset to file: forgets every setting saved from the UI (removes
/// `settings.json`) and applies the configuration file's values live.
async fn delete_config(State(app): State<App>) -> ApiResult {
    let mut current = app.state.config.lock().await;
    change_settings(
        &app,
        &mut current,
        config::UiSettings::default(),
        "reset to the file",
    )
    .await
}

/// Checks `saved` as the next start would, keeps it, applies it, and
/// answers the new section with `restartRequired` and `persisted`.
async fn change_settings(
    app: &App,
    current: &mut Config,
    saved: config::UiSettings,
    what: &str,
) -> ApiResult {
    let settings = app.state.settings.clone();
    let (next, persisted) = blocking(move || {
        // What the next start would build, with its checks: one function
        // for both, so nothing is kept that a start would refuse.
        let next = settings.startup_config(&saved).map_err(config_error)?;
        let persisted = match &settings.path {
            Some(path) => {
                saved.save(path).map_err(|e| {
                    tracing::error!("saving the settings to {} failed: {e}", path.display());
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!(
                            "cannot save the settings to {}: {e}; nothing was changed",
                            path.display()
                        ),
                    )
                })?;
                true
            }
            None => false,
        };
        Ok((next, persisted))
    })
    .await?;
    let store = app.state.store.clone();
    let applied = crate::remote::backend::local_store_config(&next.metrics);
    let restart = blocking(move || store.reconfigure(applied).map_err(config_error)).await?;
    let new_metrics = next.metrics.clone();
    *current = next;
    tracing::info!(persisted, ?restart, "settings {what} through the API");
    let mut v = serde_json::to_value(&new_metrics).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode config: {e}"),
        )
    })?;
    if let Some(obj) = v.as_object_mut() {
        obj.insert("restartRequired".into(), json!(restart));
        obj.insert("persisted".into(), json!(persisted));
    }
    Ok(axum::Json(v).into_response())
}

/// Where each `metrics` setting comes from, the configuration file's values
/// ("reset to file" restores them) and where both files are.
async fn config_sources(State(app): State<App>) -> ApiResult {
    let settings = app.state.settings.clone();
    let current = app.state.config.lock().await.metrics.clone();
    let v = blocking(move || {
        let saved =
            config::UiSettings::between(&settings.base.metrics, &current).map_err(config_error)?;
        let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
        Ok(json!({
            "configFile": path(&settings.config_file),
            "settingsFile": path(&settings.path),
            "sources": settings.sources(&saved),
            "file": settings.base.metrics,
            "settings": saved.metrics,
        }))
    })
    .await?;
    Ok(axum::Json(v).into_response())
}

fn config_error(e: crate::Error) -> ApiError {
    let key = e.config_key().unwrap_or("metrics").to_string();
    ApiError::bad_request(format!("invalid configuration: {e}"))
        .with_details(vec![json!({"key": key, "error": e.to_string()})])
}

async fn maintenance(State(app): State<App>) -> ApiResult {
    let store = app.state.store.clone();
    let report = blocking(move || store.maintain(now_ms()).map_err(ApiError::from_store)).await?;
    Ok(axum::Json(report).into_response())
}

async fn metrics(State(app): State<App>) -> ApiResult {
    let a = app.clone();
    let text = blocking(move || {
        prom::render(
            &a.state.store,
            &a.state.board,
            &a.state.remote,
            &a.state.jobs,
            &a.state.prom,
        )
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics"))
    })
    .await?;
    Ok((
        [(header::CONTENT_TYPE, prom::CONTENT_TYPE)],
        Body::from(text),
    )
        .into_response())
}

/// 200 `ok` while the store answers and its writer keeps up: points waiting
/// longer than twice the flush interval (at least 30 s) mean the writer is
/// stuck or dead. Checked without forcing a flush, so frequent probes cost
/// no disk writes.
async fn healthz(State(app): State<App>) -> Response {
    let store = app.state.store.clone();
    let started = app.state.started_ms;
    let light = app.state.light_reads.clone();
    let checked = tokio::time::timeout(Duration::from_secs(5), async move {
        let _turn = read_turn(&light).await?;
        blocking(move || {
            let s = store.stats().map_err(ApiError::from_store)?;
            let limit = (store.config().flush_interval * 2).max(Duration::from_secs(30));
            let since = now_ms() - s.last_flush.max(started);
            if s.buffer_size > 0 && since > limit.as_millis() as i64 {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "writer stalled: {} points waiting, last flush {} s ago; last error: {}",
                        s.buffer_size,
                        since / 1000,
                        s.last_error
                    ),
                ));
            }
            Ok(())
        })
        .await
    })
    .await;
    match checked {
        Ok(Ok(())) => (StatusCode::OK, "ok").into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store not answering").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_is_503_with_retry_after() {
        let resp = ApiError::from_store(crate::Error::overloaded(500_000, 500_000)).into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        let resp = ApiError::from_store(crate::Error::closed()).into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(resp.headers().contains_key(header::RETRY_AFTER));
    }

    #[test]
    fn store_point_errors_become_details() {
        let e = crate::Error::invalid_points(vec![crate::PointError {
            index: 3,
            reason: "value: must be a finite number".into(),
        }]);
        let api = ApiError::from_store(e);
        assert_eq!(api.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            api.details,
            vec![json!({"index": 3, "error": "value: must be a finite number"})]
        );
    }

    #[test]
    fn token_headers() {
        let mut h = HeaderMap::new();
        assert!(!token_matches(&h, "t0k"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer t0k"),
        );
        assert!(token_matches(&h, "t0k"));
        assert!(!token_matches(&h, "t0k2"));
        let mut h = HeaderMap::new();
        h.insert("x-api-token", HeaderValue::from_static("t0k"));
        assert!(token_matches(&h, "t0k"));
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic t0k"));
        assert!(!token_matches(&h, "t0k"));
    }
}

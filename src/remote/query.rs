//! The engine's Prometheus query API (`/api/v1/query`, `/api/v1/query_range`,
//! `/api/v1/series`), through the target's client (auth, tenant headers,
//! TLS). Requests are POSTed form-encoded, so long selectors fit; every
//! call blocks (the service calls it from its blocking pool).

use super::client::Client;
use crate::error::{Error, Result};
use serde_json::Value;
use std::collections::BTreeMap;

/// One series of an answer: its labels and its `(ms, value)` samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub samples: Vec<(i64, f64)>,
}

pub struct PromApi {
    client: Client,
    base: String,
}

fn remote_error(what: impl Into<String>) -> Error {
    Error::io(
        "the remote engine's query API",
        std::io::Error::other(what.into()),
    )
}

/// Seconds with millisecond precision, as the query API takes times.
pub fn secs(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

impl PromApi {
    pub fn new(client: Client, query_url: &str) -> PromApi {
        PromApi {
            client,
            base: query_url.trim_end_matches('/').to_string(),
        }
    }

    fn call(&self, path: &str, params: &[(&str, String)]) -> Result<Value> {
        let mut form = reqwest::Url::parse("http://x/").expect("a URL");
        for (k, v) in params {
            form.query_pairs_mut().append_pair(k, v);
        }
        let body = form.query().unwrap_or("").to_string();
        let url = format!("{}{path}", self.base);
        let http = self.client.http.clone();
        let answer = block_on(async move {
            let resp = http
                .post(&url)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            let status = resp.status();
            let text = resp.text().await.map_err(|e| format!("{url}: {e}"))?;
            if !status.is_success() {
                let text: String = text.chars().take(300).collect();
                return Err(format!("{url}: HTTP {status}: {text}"));
            }
            serde_json::from_str::<Value>(&text).map_err(|e| format!("{url}: not JSON: {e}"))
        });
        let mut v = answer.map_err(remote_error)?;
        if v["status"] != "success" {
            return Err(remote_error(format!("{path}: {}", v["error"])));
        }
        Ok(v["data"].take())
    }

    /// An instant query at `at_ms`: a vector or a matrix, as series.
    pub fn query(&self, expr: &str, at_ms: i64) -> Result<Vec<Series>> {
        let data = self.call(
            "/api/v1/query",
            &[("query", expr.to_string()), ("time", secs(at_ms))],
        )?;
        parse_result(&data)
    }

    /// A range query: samples at `start + k * step` up to `end` (ms).
    pub fn query_range(&self, expr: &str, start: i64, end: i64, step: i64) -> Result<Vec<Series>> {
        let data = self.call(
            "/api/v1/query_range",
            &[
                ("query", expr.to_string()),
                ("start", secs(start)),
                ("end", secs(end)),
                ("step", secs(step)),
                // VictoriaMetrics: no response cache, so two answers never
                // differ by what a cache held (other engines ignore it).
                ("nocache", "1".into()),
            ],
        )?;
        parse_result(&data)
    }

    /// The label sets of series matching `selector` with samples in
    /// `[start, end]`.
    pub fn series(
        &self,
        selector: &str,
        start: i64,
        end: i64,
    ) -> Result<Vec<BTreeMap<String, String>>> {
        let data = self.call(
            "/api/v1/series",
            &[
                ("match[]", selector.to_string()),
                ("start", secs(start)),
                ("end", secs(end)),
            ],
        )?;
        let list = data
            .as_array()
            .ok_or_else(|| remote_error("/api/v1/series: not a list"))?;
        Ok(list.iter().map(labels_of).collect())
    }
}

/// Runs a request from blocking code: on the service's runtime from its
/// blocking pool, or on a runtime of its own (the command line).
fn block_on<T>(fut: impl std::future::Future<Output = T>) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => h.block_on(fut),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for one request")
            .block_on(fut),
    }
}

fn labels_of(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn sample(v: &Value) -> Result<(i64, f64)> {
    let t = v[0]
        .as_f64()
        .ok_or_else(|| remote_error("a sample without a time"))?;
    let x: f64 = v[1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| remote_error("a sample without a value"))?;
    Ok(((t * 1000.0).round() as i64, x))
}

fn parse_result(data: &Value) -> Result<Vec<Series>> {
    let kind = data["resultType"].as_str().unwrap_or("");
    let result = data["result"]
        .as_array()
        .ok_or_else(|| remote_error("an answer without a result"))?;
    let mut out = Vec::with_capacity(result.len());
    for r in result {
        let samples = match kind {
            "matrix" => r["values"]
                .as_array()
                .map(|vs| vs.iter().map(sample).collect::<Result<Vec<_>>>())
                .transpose()?
                .unwrap_or_default(),
            "vector" => vec![sample(&r["value"])?],
            other => return Err(remote_error(format!("an answer of type {other:?}"))),
        };
        out.push(Series {
            labels: labels_of(&r["metric"]),
            samples,
        });
    }
    Ok(out)
}

//! `GET /metrics`: the store's own counters and the HTTP request counts in
//! the Prometheus text format (0.0.4), encoded by `prometheus-client`.

use super::jobs::{JobCounters, JobKind};
use crate::collectors::StatusBoard;
use crate::store::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// `Content-Type` of the classic Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

type RequestLabels = Vec<(&'static str, String)>;

/// HTTP request counts by method, matched route and status. The route is
/// the router's pattern (never the raw path), so label cardinality stays
/// bounded whatever clients send.
#[derive(Debug, Default, Clone)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
}

impl HttpMetrics {
    pub fn record(&self, method: &str, route: &str, status: u16) {
        let method = match method {
            "GET" | "POST" | "PUT" | "DELETE" | "HEAD" | "OPTIONS" | "PATCH" => method,
            _ => "other",
        };
        self.requests
            .get_or_create(&vec![
                ("method", method.to_string()),
                ("route", route.to_string()),
                ("status", status.to_string()),
            ])
            .inc();
    }
}

/// Reads the store's stats at scrape time.
#[derive(Debug)]
struct StoreCollector {
    store: StoreHandle,
    board: StatusBoard,
    jobs: Arc<JobsView>,
}

/// `Store` is not `Debug`; the collector trait wants it.
struct StoreHandle(Store);

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

#[derive(Debug)]
struct JobsView(Vec<(JobKind, u64, u64)>);

fn gauge<N>(e: &mut DescriptorEncoder, name: &str, help: &str, v: N) -> std::fmt::Result
where
    ConstGauge<N>: EncodeMetric,
{
    let g = ConstGauge::new(v);
    let m = e.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    let m = e.encode_descriptor(name, help, None, c.metric_type())?;
    c.encode(m)
}

impl Collector for StoreCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let s = match self.store.0.stats() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("stats for /metrics failed: {e}");
                return Ok(());
            }
        };
        let secs = |ms: i64| ms as f64 / 1000.0;
        counter(
            &mut e,
            "pulse_metrics_writes",
            "Points accepted since start",
            s.total_writes,
        )?;
        counter(
            &mut e,
            "pulse_metrics_dropped_writes",
            "Points refused because the write queue was full",
            s.dropped_writes,
        )?;
        counter(
            &mut e,
            "pulse_metrics_flushes",
            "Successful flushes",
            s.flush_count,
        )?;
        counter(
            &mut e,
            "pulse_metrics_flush_failures",
            "Failed flushes",
            s.flush_failures,
        )?;
        counter(
            &mut e,
            "pulse_metrics_job_failures",
            "Failed rollup/retention/vacuum/maintenance jobs",
            s.job_failures,
        )?;
        gauge(
            &mut e,
            "pulse_metrics_buffer_points",
            "Points waiting to be flushed",
            s.buffer_size,
        )?;
        gauge(
            &mut e,
            "pulse_metrics_queue_capacity_points",
            "Write queue capacity",
            s.queue_capacity,
        )?;
        gauge(
            &mut e,
            "pulse_metrics_db_size_bytes",
            "Database file size",
            s.db_size,
        )?;
        gauge(
            &mut e,
            "pulse_metrics_wal_size_bytes",
            "WAL file size",
            s.wal_size,
        )?;
        gauge(
            &mut e,
            "pulse_metrics_free_pages",
            "Free pages in the database file",
            s.free_pages,
        )?;
        gauge(
            &mut e,
            "pulse_metrics_series",
            "Series stored",
            s.series_count,
        )?;
        for (tier, n) in [
            ("raw", s.raw_count),
            ("minute", s.minute_count),
            ("hourly", s.hourly_count),
            ("daily", s.daily_count),
        ] {
            gauge(
                &mut e,
                &format!("pulse_metrics_{tier}_rows"),
                &format!("Points or buckets in the {tier} tier"),
                n,
            )?;
        }
        gauge(
            &mut e,
            "pulse_metrics_oldest_data_timestamp_seconds",
            "Unix time of the oldest stored point (0 = none)",
            secs(s.oldest_data_timestamp),
        )?;
        for (what, ms) in [
            ("flush", s.last_flush),
            ("rollup", s.last_rollup),
            ("retention", s.last_retention),
            ("vacuum", s.last_vacuum),
        ] {
            gauge(
                &mut e,
                &format!("pulse_metrics_last_{what}_timestamp_seconds"),
                &format!("Unix time of the last successful {what} (0 = never)"),
                secs(ms),
            )?;
        }
        for (kind, runs, failures) in &self.jobs.0 {
            counter(
                &mut e,
                &format!("pulse_metrics_job_{}_runs", kind.name()),
                &format!("Scheduled {} runs", kind.name()),
                *runs,
            )?;
            counter(
                &mut e,
                &format!("pulse_metrics_job_{}_failures", kind.name()),
                &format!("Scheduled {} runs that failed", kind.name()),
                *failures,
            )?;
        }
        for c in self.board.snapshot() {
            let name = sanitize(&c.name);
            gauge(
                &mut e,
                &format!("pulse_metrics_collector_{name}_up"),
                &format!("1 when the {} collector's last poll succeeded", c.name),
                i64::from(c.state == "ok"),
            )?;
            counter(
                &mut e,
                &format!("pulse_metrics_collector_{name}_points"),
                &format!("Points written by the {} collector", c.name),
                c.points_written,
            )?;
            counter(
                &mut e,
                &format!("pulse_metrics_collector_{name}_errors"),
                &format!(
                    "Failed polls, refused pushes and skipped bad lines of {}",
                    c.name
                ),
                c.errors,
            )?;
            gauge(
                &mut e,
                &format!("pulse_metrics_collector_{name}_last_success_timestamp_seconds"),
                &format!(
                    "Unix time of the last successful poll or push of {} (0 = never)",
                    c.name
                ),
                secs(c.last_success),
            )?;
        }
        Ok(())
    }
}

/// Metric names allow `[a-zA-Z0-9_]`; collector names may hold `:` or `-`.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Encodes every metric. Blocking (reads the store's stats): call it off the
/// async threads.
pub fn render(
    store: &Store,
    board: &StatusBoard,
    jobs: &JobCounters,
    http: &HttpMetrics,
) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register(
        "pulse_metrics_http_requests",
        "HTTP requests by method, route and status",
        http.requests.clone(),
    );
    let view = JobsView(
        JobKind::ALL
            .into_iter()
            .map(|k| {
                let c = jobs.get(k);
                (k, c.runs, c.failures)
            })
            .collect(),
    );
    registry.register_collector(Box::new(StoreCollector {
        store: StoreHandle(store.clone()),
        board: board.clone(),
        jobs: Arc::new(view),
    }));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}

//! The history answer: one shape for `GET /api/metrics-store/history` and
//! `pulse-metrics query`, so the two can never drift apart.
//!
//! ```json
//! {"resourceType":"vm","resourceId":"pve1:101","metric":"cpu","range":"1h",
//!  "start":1700000000000,"end":1700003600000,"tier":"raw",
//!  "points":[{"timestamp":1700000000000,"value":12.5,"min":12.5,"max":12.5,"count":1}]}
//! ```
//! Without a metric, `"metric": null` and `"metrics": {"cpu": [points], ...}`
//! replace `"points"`. A resource with metadata (name, node, ...) also has
//! `"meta": {"name": "web01", ...}`. Pulse's resource type aliases are
//! understood (`docker`, `system-container`, `oci-container`,
//! `app-container`, `docker-host`, and storage `usage` for `disk`): the
//! answer is the canonical name's. Asked with `segments`, the answer also says which tier
//! and bucket width each run of points stands for (`crate::segments`):
//! `"segments": [{"start","tier","width"}]`, or `{"cpu": [...], ...}` beside
//! `"metrics"`.

use crate::config::parse_duration;
use crate::error::{Error, Result};
use crate::model::{HistoryPoint, SeriesKey, Tier, parse_timestamp};
use crate::pulse_ids::{canonical_metric, canonical_type, stored_metrics, stored_types};
use crate::reads::Reads;
use crate::segments::Segment;
use crate::store::{ResourceMeta, SeriesFilter, TimeRange};
use serde::Serialize;
use std::collections::BTreeMap;

/// The span a history request covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Window {
    /// The last `duration` before `now`; `text` is echoed as `"range"`.
    Last {
        text: String,
        duration: std::time::Duration,
    },
    /// An explicit `[start, end]`, Unix ms.
    Between { start: i64, end: i64 },
}

/// A validated history request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRequest {
    pub resource_type: String,
    pub resource_id: String,
    /// `None`: every metric of the resource.
    pub metric: Option<String>,
    pub window: Window,
    /// The time tier selection and `Window::Last` count from (Unix ms).
    pub now: i64,
    /// Caps points per series (at least 1).
    pub max_points: Option<usize>,
    /// Also answer `segments` (off unless set after `from_params`).
    pub segments: bool,
}

impl HistoryRequest {
    /// Builds a request from text parameters as they arrive on the command
    /// line or in a query string, with the history endpoint's rules: either
    /// `range` (any duration longer than 0s: `1h`, `48h`, `30d`) or `start`
    /// and `end` together (Unix ms or RFC 3339); empty values count as
    /// absent. Errors are invalid input naming the parameter (HTTP 400,
    /// exit code 2).
    #[allow(clippy::too_many_arguments)]
    pub fn from_params(
        resource_type: &str,
        resource_id: &str,
        metric: Option<&str>,
        range: Option<&str>,
        start: Option<&str>,
        end: Option<&str>,
        now: i64,
        max_points: Option<&str>,
    ) -> Result<HistoryRequest> {
        if metric == Some("") {
            return Err(Error::invalid_input("metric: must not be empty"));
        }
        let resource_type = canonical_type(resource_type);
        let metric = metric.map(|m| canonical_metric(resource_type, m));
        let probe = SeriesKey::new(resource_type, resource_id, metric.unwrap_or("cpu"));
        probe.validate().map_err(Error::invalid_input)?;
        let window = window(range, start, end, any_duration)?;
        let max_points = match max_points {
            None => None,
            Some(text) => match text.trim().parse::<usize>() {
                Ok(n) if n >= 1 => Some(n),
                _ => {
                    return Err(Error::invalid_input(format!(
                        "maxPoints: must be a whole number of at least 1, got {text:?}"
                    )));
                }
            },
        };
        Ok(HistoryRequest {
            resource_type: resource_type.to_string(),
            resource_id: resource_id.to_string(),
            metric: metric.map(str::to_string),
            window,
            now,
            max_points,
            segments: false,
        })
    }

    /// The `[start, end]` and `now` the store is asked for. A range reaching
    /// back before 1970 starts at 1970: nothing older can be stored, and the
    /// store's work grows with the span asked for.
    pub fn time_range(&self) -> TimeRange {
        match &self.window {
            Window::Last { duration, .. } => {
                let mut range = TimeRange::last(*duration, self.now);
                range.start = range.start.clamp(0, range.end.max(0));
                range
            }
            Window::Between { start, end } => TimeRange {
                start: *start,
                end: *end,
                now: self.now,
            },
        }
    }
}

fn present(v: Option<&str>) -> Option<&str> {
    v.filter(|s| !s.is_empty())
}

/// The one rule for the time window of every read: `range`, or `start`
/// and `end` together (Unix ms or RFC 3339, `start` not after `end`), not
/// both; empty values count as absent. What `range` may be (and whether it
/// may be absent) is `range_rule`'s: history takes any duration and needs
/// one (`any_duration`); the charts take Pulse's list and default to 1h.
pub fn window<E: From<Error>>(
    range: Option<&str>,
    start: Option<&str>,
    end: Option<&str>,
    range_rule: impl FnOnce(Option<&str>) -> std::result::Result<Window, E>,
) -> std::result::Result<Window, E> {
    let (range, start, end) = (present(range), present(start), present(end));
    if range.is_some() && (start.is_some() || end.is_some()) {
        return Err(Error::invalid_input("give either range or start and end, not both").into());
    }
    match (start, end) {
        (Some(s), Some(e)) => {
            let start =
                parse_timestamp(s).map_err(|m| Error::invalid_input(format!("start: {m}")))?;
            let end = parse_timestamp(e).map_err(|m| Error::invalid_input(format!("end: {m}")))?;
            if start > end {
                return Err(Error::invalid_input(format!(
                    "start ({}) is after end ({})",
                    crate::model::format_timestamp(start),
                    crate::model::format_timestamp(end)
                ))
                .into());
            }
            Ok(Window::Between { start, end })
        }
        (Some(_), None) => {
            Err(Error::invalid_input("end is missing: start and end go together").into())
        }
        (None, Some(_)) => {
            Err(Error::invalid_input("start is missing: start and end go together").into())
        }
        (None, None) => range_rule(range),
    }
}

/// History's `range`: any duration longer than 0s, and required.
pub fn any_duration(range: Option<&str>) -> Result<Window> {
    let Some(r) = range else {
        return Err(Error::invalid_input(
            "range (e.g. 1h, 24h, 7d) or start and end is required",
        ));
    };
    let duration = parse_duration(r).map_err(|e| Error::invalid_input(format!("range: {e}")))?;
    if duration.is_zero() {
        return Err(Error::invalid_input("range: must be longer than 0s"));
    }
    Ok(Window::Last {
        text: r.to_string(),
        duration,
    })
}

/// The history answer, serialized as the JSON docs/api.md documents.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryAnswer {
    pub resource_type: String,
    pub resource_id: String,
    pub metric: Option<String>,
    /// The range text given, or `null` when start/end were given.
    pub range: Option<String>,
    pub start: i64,
    pub end: i64,
    pub tier: Tier,
    /// Present when a metric was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points: Option<Vec<HistoryPoint>>,
    /// Present when no metric was asked for: every metric of the resource.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<BTreeMap<String, Vec<HistoryPoint>>>,
    /// Present when asked for: the tier and bucket width of each run of
    /// points, in the shape of `points` or `metrics`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segments: Option<Segments>,
    /// What is known about the resource (name, node, ...), if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<ResourceMeta>,
}

/// `segments` of a history answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Segments {
    One(Vec<Segment>),
    PerMetric(BTreeMap<String, Vec<Segment>>),
}

/// The runs of one tier and width of a series capped at `max`, from its
/// uncapped points (the capped values come from the store, exact).
fn segments_of(points: &[HistoryPoint], range: TimeRange, max: Option<usize>) -> Vec<Segment> {
    let tiers = crate::segments::label(points);
    let capped = crate::segments::cap(points, &tiers, range.start, range.end, max);
    crate::segments::segments(&capped)
}

/// Answers a history request from the store or the remote engine.
pub fn history(store: &Reads, request: &HistoryRequest) -> Result<HistoryAnswer> {
    let range = request.time_range();
    let max = request.max_points;
    // The type the resource is stored under: the canonical one, else a
    // Pulse alias of it that has series.
    let id = &request.resource_id;
    let of = |t: &str| SeriesFilter {
        resource_type: Some(t.to_string()),
        resource_id: Some(id.clone()),
        ..SeriesFilter::default()
    };
    let types = stored_types(&request.resource_type);
    let stored_type = types
        .iter()
        .find(|t| store.keys(&of(t)).is_ok_and(|k| !k.is_empty()))
        .copied()
        .unwrap_or(&request.resource_type);
    let (tier, points, metrics, segments) = match &request.metric {
        Some(metric) => {
            let metric = stored_metrics(stored_type, metric)
                .into_iter()
                .find(|m| {
                    let f = SeriesFilter {
                        metric: Some(m.to_string()),
                        ..of(stored_type)
                    };
                    store.keys(&f).is_ok_and(|k| !k.is_empty())
                })
                .unwrap_or(metric);
            let key = SeriesKey::new(stored_type, id, metric);
            let h = store.query(&key, range, max)?;
            let segments = match request.segments {
                true => {
                    let all = store.query(&key, range, None)?;
                    Some(Segments::One(segments_of(&all.points, range, max)))
                }
                false => None,
            };
            (h.tier, Some(h.points), None, segments)
        }
        None => {
            let filter = of(stored_type);
            let many = store.query_many(&filter, range, max)?;
            // Pulse's names answer as ours, never over a series of that name.
            let mut metrics: BTreeMap<String, Vec<HistoryPoint>> = BTreeMap::new();
            for (key, points) in many.series {
                let name = canonical_metric(stored_type, &key.metric).to_string();
                if name == key.metric {
                    metrics.insert(name, points);
                } else {
                    metrics.entry(name).or_insert(points);
                }
            }
            let segments = match request.segments {
                true => {
                    let all = store.query_many_map(&filter, range, None, &|_, points| {
                        segments_of(&points, range, max)
                    })?;
                    let per_metric = all
                        .series
                        .into_iter()
                        .map(|(k, s)| (canonical_metric(stored_type, &k.metric).to_string(), s));
                    Some(Segments::PerMetric(per_metric.collect()))
                }
                false => None,
            };
            (many.tier, None, Some(metrics), segments)
        }
    };
    Ok(HistoryAnswer {
        resource_type: request.resource_type.clone(),
        resource_id: request.resource_id.clone(),
        metric: request.metric.clone(),
        range: match &request.window {
            Window::Last { text, .. } => Some(text.clone()),
            Window::Between { .. } => None,
        },
        start: range.start,
        end: range.end,
        tier,
        points,
        metrics,
        segments,
        meta: store.resource(stored_type, id)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    const NOW: i64 = 1_700_000_000_000;

    fn req(range: Option<&str>, start: Option<&str>, end: Option<&str>) -> Result<HistoryRequest> {
        HistoryRequest::from_params(
            "vm",
            "pve1:node1:101",
            Some("cpu"),
            range,
            start,
            end,
            NOW,
            None,
        )
    }

    #[test]
    fn parameters_are_checked() {
        let r = req(Some("48h"), None, None).unwrap();
        assert_eq!(r.time_range().start, NOW - 48 * 3_600_000);
        let r = req(Some("99999999999d"), None, None).unwrap();
        assert_eq!((r.time_range().start, r.time_range().end), (0, NOW));
        let r = req(None, Some("2023-11-14T00:00:00Z"), Some("1699920000000")).unwrap();
        assert_eq!(
            r.window,
            Window::Between {
                start: 1_699_920_000_000,
                end: 1_699_920_000_000
            }
        );
        assert!(req(Some("1h"), Some("1"), None).is_err());
        assert!(
            req(Some("often"), None, None)
                .unwrap_err()
                .to_string()
                .contains("range")
        );
        assert!(
            req(None, Some("5"), Some("4"))
                .unwrap_err()
                .to_string()
                .contains("after")
        );
        assert!(req(None, None, Some("4")).is_err());
        assert!(req(None, Some("4"), None).is_err());
        assert!(
            req(None, None, None)
                .unwrap_err()
                .to_string()
                .contains("required")
        );
        assert!(req(Some("0s"), None, None).is_err());
        assert_eq!(
            req(Some("1h"), Some(""), Some("")).unwrap().window,
            Window::Last {
                text: "1h".into(),
                duration: std::time::Duration::from_secs(3600)
            }
        );
        let bad_max =
            HistoryRequest::from_params("vm", "1", None, Some("1h"), None, None, NOW, Some("0"));
        assert!(bad_max.unwrap_err().to_string().contains("maxPoints"));
        let bad_type =
            HistoryRequest::from_params("v m", "1", None, Some("1h"), None, None, NOW, None);
        assert!(bad_type.unwrap_err().is_invalid_input());
    }

    #[test]
    fn json_shape() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(crate::MetricsConfig {
            database_path: dir.path().join("m.db"),
            ..Default::default()
        })
        .unwrap();
        store.write("vm", "1", "cpu", 1.5, NOW - 1000).unwrap();
        store.write("vm", "1", "mem", 2.5, NOW - 1000).unwrap();
        store.flush().unwrap();
        let one =
            HistoryRequest::from_params("vm", "1", Some("cpu"), Some("1h"), None, None, NOW, None)
                .unwrap();
        let v = serde_json::to_value(history(&Reads::Local(store.clone()), &one).unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"resourceType":"vm","resourceId":"1","metric":"cpu","range":"1h",
                "start": NOW - 3_600_000, "end": NOW, "tier":"raw",
                "points":[{"timestamp": NOW - 1000, "value":1.5,"min":1.5,"max":1.5,"count":1}]})
        );
        let all = HistoryRequest::from_params(
            "vm",
            "1",
            None,
            None,
            Some("0"),
            Some(&NOW.to_string()),
            NOW,
            None,
        )
        .unwrap();
        let v = serde_json::to_value(history(&Reads::Local(store.clone()), &all).unwrap()).unwrap();
        assert_eq!(v["range"], serde_json::Value::Null);
        assert_eq!(v["metric"], serde_json::Value::Null);
        assert!(v.get("points").is_none());
        assert_eq!(v["metrics"]["mem"][0]["value"], 2.5);
        assert_eq!(v["metrics"]["cpu"][0]["value"], 1.5);
        assert!(v.get("segments").is_none(), "only when asked for");

        let mut all = all;
        all.segments = true;
        let v = serde_json::to_value(history(&Reads::Local(store.clone()), &all).unwrap()).unwrap();
        assert_eq!(
            v["segments"]["cpu"],
            serde_json::json!([{"start": NOW - 1000, "tier": "raw", "width": 1000}])
        );
        let mut one = one;
        one.segments = true;
        let v = serde_json::to_value(history(&Reads::Local(store.clone()), &one).unwrap()).unwrap();
        assert_eq!(v["segments"][0]["tier"], "raw");
        assert!(v.get("meta").is_none(), "nothing known about vm 1");

        // Metadata comes along; Pulse's aliases answer as the canonical name.
        store
            .write("storage", "s1", "disk", 40.0, NOW - 1000)
            .unwrap();
        store.flush().unwrap();
        let meta = ResourceMeta {
            name: Some("local-lvm".into()),
            ..ResourceMeta::default()
        };
        store
            .write_resources(&[crate::store::Resource::new("storage", "s1", meta)])
            .unwrap();
        let usage = HistoryRequest::from_params(
            "storage",
            "s1",
            Some("usage"),
            Some("1h"),
            None,
            None,
            NOW,
            None,
        )
        .unwrap();
        let v =
            serde_json::to_value(history(&Reads::Local(store.clone()), &usage).unwrap()).unwrap();
        assert_eq!(v["metric"], "disk");
        assert_eq!(v["points"][0]["value"], 40.0);
        assert_eq!(v["meta"], serde_json::json!({"name": "local-lvm"}));
        for (alias, canonical) in [
            ("docker", "dockerContainer"),
            ("app-container", "dockerContainer"),
            ("system-container", "container"),
            ("oci-container", "container"),
            ("docker-host", "dockerHost"),
        ] {
            let r =
                HistoryRequest::from_params(alias, "c1", None, Some("1h"), None, None, NOW, None)
                    .unwrap();
            assert_eq!(r.resource_type, canonical);
        }
    }
}

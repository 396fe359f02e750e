//! The data model shared by every interface: series, points, tiers, and the
//! validation rules of points and names (documented in docs/api.md; one
//! place, so the HTTP API, the CLI and the library refuse exactly the same
//! things with the same words).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Identity of a series: `(resourceType, resourceId, metric)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeriesKey {
    /// The kind of resource (`node`, `vm`, `storage`, ...).
    pub resource_type: String,
    /// The resource, unique within its type.
    pub resource_id: String,
    /// What is measured (`cpu`, `memory`, ...).
    pub metric: String,
}

impl SeriesKey {
    /// A key from its three names (not validated: see [`SeriesKey::validate`]).
    pub fn new(
        resource_type: impl Into<String>,
        resource_id: impl Into<String>,
        metric: impl Into<String>,
    ) -> SeriesKey {
        SeriesKey {
            resource_type: resource_type.into(),
            resource_id: resource_id.into(),
            metric: metric.into(),
        }
    }

    /// Checks the three names against the rules (docs/api.md: a type or metric
    /// is 1-64 of `[A-Za-z0-9_.-]`, an id 1-256 bytes without control
    /// characters); the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        check_name("resourceType", &self.resource_type)?;
        check_resource_id(&self.resource_id)?;
        check_name("metric", &self.metric)
    }
}

impl fmt::Display for SeriesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.resource_type, self.resource_id, self.metric
        )
    }
}

/// One measurement as written by a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Point {
    /// The series' resource type.
    pub resource_type: String,
    /// The series' resource id.
    pub resource_id: String,
    /// The series' metric.
    pub metric: String,
    /// The measured value (must be finite).
    pub value: f64,
    /// Unix time in milliseconds.
    pub timestamp: i64,
}

impl Point {
    /// A point of `series` (not validated: see [`Point::validate`]).
    pub fn new(series: &SeriesKey, value: f64, timestamp_ms: i64) -> Point {
        Point {
            resource_type: series.resource_type.clone(),
            resource_id: series.resource_id.clone(),
            metric: series.metric.clone(),
            value,
            timestamp: timestamp_ms,
        }
    }

    /// The key of the series it belongs to.
    pub fn series(&self) -> SeriesKey {
        SeriesKey::new(&self.resource_type, &self.resource_id, &self.metric)
    }

    /// Checks every field; the message names the first field at fault.
    pub fn validate(&self) -> Result<(), String> {
        check_name("resourceType", &self.resource_type)?;
        check_resource_id(&self.resource_id)?;
        check_name("metric", &self.metric)?;
        check_value(self.value)?;
        check_timestamp(self.timestamp)?;
        if self.timestamp < MIN_POINT_MS {
            let example = if self.timestamp > 0 {
                format!(" (e.g. {}000)", self.timestamp)
            } else {
                String::new()
            };
            return Err(format!(
                "timestamp: {} looks like seconds: send Unix milliseconds{example}",
                self.timestamp
            ));
        }
        Ok(())
    }

    /// The rules for a point arriving live (the write API) as of `now_ms`,
    /// beyond `validate`: not more than `max_future_skew` ahead of the
    /// clock, and not older than the longest retention (it could only be
    /// discarded).
    pub fn check_live(
        &self,
        now_ms: i64,
        max_future_skew: std::time::Duration,
        longest_retention: std::time::Duration,
    ) -> Result<(), String> {
        let ahead = self.timestamp.saturating_sub(now_ms);
        if ahead > max_future_skew.as_millis() as i64 {
            return Err(format!(
                "timestamp: {} is {}s ahead of this server's clock, more than metrics.max_future_skew ({}s); check the sender's clock",
                format_timestamp(self.timestamp),
                ahead / 1000,
                max_future_skew.as_secs()
            ));
        }
        let age = now_ms.saturating_sub(self.timestamp);
        if age > longest_retention.as_millis() as i64 {
            return Err(format!(
                "timestamp: {} is older than the longest retention ({}h): it could only be discarded",
                format_timestamp(self.timestamp),
                longest_retention.as_secs() / 3600
            ));
        }
        Ok(())
    }

    /// Builds a point from one JSON object of the write API or a JSON Lines
    /// file. Each problem is reported with the field name, so a client sees
    /// "value: must be a finite number" rather than a parser offset.
    pub fn from_json(v: &serde_json::Value) -> Result<Point, String> {
        let obj = v
            .as_object()
            .ok_or_else(|| format!("expected a JSON object, got {}", json_kind(v)))?;
        for key in obj.keys() {
            if !matches!(
                key.as_str(),
                "resourceType" | "resourceId" | "metric" | "value" | "timestamp"
            ) {
                return Err(format!(
                    "unknown field `{key}` (expected resourceType, resourceId, metric, value, timestamp, and optionally name, node)"
                ));
            }
        }
        let text = |name: &str| -> Result<String, String> {
            match obj.get(name) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(format!(
                    "{name}: must be a string, got {}",
                    json_kind(other)
                )),
                None => Err(format!("{name}: missing")),
            }
        };
        let resource_type = text("resourceType")?;
        let resource_id = text("resourceId")?;
        let metric = text("metric")?;
        let value = match obj.get("value") {
            Some(serde_json::Value::Number(n)) => n
                .as_f64()
                .ok_or_else(|| "value: must be a finite number".to_string())?,
            Some(serde_json::Value::String(s)) => {
                return Err(format!(
                    "value: must be a finite number, got the string {s:?}"
                ));
            }
            Some(other) => {
                return Err(format!(
                    "value: must be a finite number, got {}",
                    json_kind(other)
                ));
            }
            None => return Err("value: missing".into()),
        };
        let timestamp = match obj.get("timestamp") {
            Some(serde_json::Value::Number(n)) => match n.as_i64() {
                Some(ms) => ms,
                None => {
                    return Err(format!(
                        "timestamp: must be an integer number of milliseconds, got {n}"
                    ));
                }
            },
            Some(serde_json::Value::String(s)) => {
                parse_timestamp(s).map_err(|e| format!("timestamp: {e}"))?
            }
            Some(other) => {
                return Err(format!(
                    "timestamp: must be milliseconds or an RFC 3339 string, got {}",
                    json_kind(other)
                ));
            }
            None => return Err("timestamp: missing".into()),
        };
        let point = Point {
            resource_type,
            resource_id,
            metric,
            value,
            timestamp,
        };
        point.validate()?;
        Ok(point)
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Largest accepted timestamp: the last millisecond of year 9999.
pub const MAX_TIMESTAMP_MS: i64 = 253_402_300_799_999;
/// Smallest timestamp a point may carry (1973-03-03): anything below is
/// almost surely Unix seconds sent where milliseconds belong.
pub const MIN_POINT_MS: i64 = 100_000_000_000;

pub(crate) fn check_name(field: &str, s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("{field}: must not be empty"));
    }
    if s.len() > 64 {
        return Err(format!("{field}: {} bytes, at most 64 allowed", s.len()));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "{field}: character {c:?} not allowed (only A-Z, a-z, 0-9, '_', '.', '-')"
        ));
    }
    Ok(())
}

pub(crate) fn check_resource_id(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("resourceId: must not be empty".into());
    }
    if s.len() > 256 {
        return Err(format!(
            "resourceId: {} bytes, at most 256 allowed",
            s.len()
        ));
    }
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(format!("resourceId: control character {c:?} not allowed"));
    }
    Ok(())
}

fn check_value(v: f64) -> Result<(), String> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(format!("value: must be a finite number, got {v}"))
    }
}

fn check_timestamp(ms: i64) -> Result<(), String> {
    if ms < 0 {
        return Err(format!(
            "timestamp: {ms} is before 1970-01-01 (timestamps are Unix milliseconds)"
        ));
    }
    if ms > MAX_TIMESTAMP_MS {
        return Err(format!("timestamp: {ms} is after year 9999"));
    }
    Ok(())
}

/// Parses a timestamp given as text: Unix milliseconds or RFC 3339.
pub fn parse_timestamp(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        check_timestamp(ms)?;
        return Ok(ms);
    }
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    let t = time::OffsetDateTime::parse(s, rfc3339)
        .or_else(|e| {
            // An unencoded `+01:00` in a URL query arrives as ` 01:00`.
            if s.contains(' ') {
                time::OffsetDateTime::parse(&s.replace(' ', "+"), rfc3339).map_err(|_| e)
            } else {
                Err(e)
            }
        })
        .map_err(|e| format!("{s:?} is neither Unix milliseconds nor an RFC 3339 time ({e})"))?;
    let ms = i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000_000))
        .map_err(|_| format!("{s:?} is out of range"))?;
    check_timestamp(ms)?;
    Ok(ms)
}

/// Formats Unix milliseconds as RFC 3339 UTC (for messages and exports).
pub fn format_timestamp(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => t
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| ms.to_string()),
        Err(_) => ms.to_string(),
    }
}

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The storage tiers, finest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Points as written.
    Raw,
    /// One bucket per minute.
    Minute,
    /// One bucket per hour.
    Hourly,
    /// One bucket per day.
    Daily,
}

impl Tier {
    /// Every tier, finest first.
    pub const ALL: [Tier; 4] = [Tier::Raw, Tier::Minute, Tier::Hourly, Tier::Daily];

    /// The lowercase name, as it is written in JSON.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Tier::Raw => "raw",
            Tier::Minute => "minute",
            Tier::Hourly => "hourly",
            Tier::Daily => "daily",
        }
    }

    /// Width of one bucket in seconds (raw points are kept per second).
    pub fn bucket_secs(self) -> i64 {
        match self {
            Tier::Raw => 1,
            Tier::Minute => 60,
            Tier::Hourly => 3_600,
            Tier::Daily => 86_400,
        }
    }

    /// Position from the finest tier: raw 0, minute 1, hourly 2, daily 3.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Tier {
    type Err = String;
    fn from_str(s: &str) -> Result<Tier, String> {
        match s {
            "raw" => Ok(Tier::Raw),
            "minute" => Ok(Tier::Minute),
            "hourly" => Ok(Tier::Hourly),
            "daily" => Ok(Tier::Daily),
            _ => Err(format!(
                "unknown tier {s:?} (expected raw, minute, hourly or daily)"
            )),
        }
    }
}

/// One point of a history answer: a raw point or a rolled-up bucket.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HistoryPoint {
    /// Unix milliseconds: the raw point's second, or the bucket's start.
    pub timestamp: i64,
    /// The mean of the raw values the point stands for.
    pub value: f64,
    /// The smallest raw value it stands for.
    pub min: f64,
    /// The largest raw value it stands for.
    pub max: f64,
    /// How many raw points the value stands for.
    pub count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_contract() {
        assert!(
            SeriesKey::new("node", "pve1:node1:101", "cpu")
                .validate()
                .is_ok()
        );
        assert!(
            SeriesKey::new("dockerHost", "h/1 x", "netin")
                .validate()
                .is_ok()
        );
        let err = SeriesKey::new("", "x", "cpu").validate().unwrap_err();
        assert!(err.contains("resourceType"), "{err}");
        let err = SeriesKey::new("vm", "", "cpu").validate().unwrap_err();
        assert!(err.contains("resourceId"), "{err}");
        let err = SeriesKey::new("vm", "a\nb", "cpu").validate().unwrap_err();
        assert!(err.contains("control"), "{err}");
        let err = SeriesKey::new("vm", "x", "cpu usage")
            .validate()
            .unwrap_err();
        assert!(err.contains("metric"), "{err}");
        assert!(SeriesKey::new("a".repeat(64), "x", "m").validate().is_ok());
        assert!(SeriesKey::new("a".repeat(65), "x", "m").validate().is_err());
        assert!(SeriesKey::new("a", "é".repeat(128), "m").validate().is_ok());
        assert!(
            SeriesKey::new("a", "é".repeat(129), "m")
                .validate()
                .is_err()
        );
    }

    #[test]
    fn json_points_name_their_fault() {
        let ok = serde_json::json!({"resourceType":"vm","resourceId":"1","metric":"cpu","value":1.5,"timestamp":1_700_000_000_000i64});
        assert_eq!(Point::from_json(&ok).unwrap().timestamp, 1_700_000_000_000);
        let rfc = serde_json::json!({"resourceType":"vm","resourceId":"1","metric":"cpu","value":1,"timestamp":"2024-01-01T00:00:01+01:00"});
        assert_eq!(Point::from_json(&rfc).unwrap().timestamp, 1_704_063_601_000);
        for (bad, needle) in [
            (
                serde_json::json!({"resourceType":"vm","resourceId":"1","metric":"cpu","value":"NaN","timestamp":1}),
                "value",
            ),
            (
                serde_json::json!({"resourceType":"vm","resourceId":"1","metric":"cpu","value":null,"timestamp":1}),
                "value",
            ),
            (
                serde_json::json!({"resourceType":"vm","resourceId":"1","metric":"cpu","timestamp":1}),
                "value: missing",
            ),
            (
                serde_json::json!({"resourceType":"vm","resourceId":"1","metric":"cpu","value":1,"timestamp":1.5}),
                "timestamp",
            ),
            (
                serde_json::json!({"resourceType":"vm","resourceId":"1","metric":"cpu","value":1,"timestamp":-5}),
                "1970",
            ),
            (
                serde_json::json!({"resourceType":"vm","resourceId":"","metric":"cpu","value":1,"timestamp":1}),
                "resourceId",
            ),
            (
                serde_json::json!({"resourceType":"vm","resourceId":"1","metric":"cpu","value":1,"timestamp":1,"extra":2}),
                "extra",
            ),
            (serde_json::json!([1, 2]), "object"),
            (
                serde_json::json!({"resourceType":"vm","resourceId":"1","metric":"cpu","value":1,"timestamp":1_700_000_000}),
                "looks like seconds: send Unix milliseconds",
            ),
            (
                serde_json::json!({"resourceType":"vm","resourceId":"1","metric":"cpu","value":1,"timestamp":0}),
                "looks like seconds",
            ),
        ] {
            let err = Point::from_json(&bad).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn timestamps_parse_both_ways() {
        assert_eq!(parse_timestamp("1700000000000").unwrap(), 1_700_000_000_000);
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(
            parse_timestamp("2024-02-29T23:59:59.5Z").unwrap(),
            1_709_251_199_500
        );
        assert!(parse_timestamp("yesterday").is_err());
        assert_eq!(
            format_timestamp(1_709_251_199_500),
            "2024-02-29T23:59:59.5Z"
        );
    }
}

//! The `/api/charts` body in Pulse's shape, written by hand.
//!
//! A 24 h chart of a typical install is 255 series x 1440 points, about
//! 15 MiB of JSON; through serde's map machinery that took ~21 ms, more than
//! the whole latency budget. Only the point arrays are bulky: each is written
//! by hand ([`array`], `[{"timestamp":ms,"value":v}]` with numbers formatted
//! exactly as serde_json formats them) on the store's reader thread that
//! read its series (`Store::query_many_map`), so the encoding runs in
//! parallel with the query and no buffer of the whole answer is ever made.
//! [`encode`] then lays the small structure around the arrays and answers
//! the body as a list of pieces to send one after the other.

use crate::model::{HistoryPoint, SeriesKey, Tier};
use axum::body::Bytes;
use serde::Serialize;
use std::collections::BTreeMap;

/// What the answer's `stats` object says besides `pointCount`, which
/// [`encode`] counts.
pub struct ChartStats {
    pub oldest_data_timestamp: i64,
    pub tier: Tier,
    pub range: Option<String>,
    pub range_seconds: i64,
}

/// The `stats` object as sent.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatsJson<'a> {
    oldest_data_timestamp: i64,
    tier: Tier,
    point_count: usize,
    range: &'a Option<String>,
    range_seconds: i64,
}

/// One series' points as Pulse's JSON array.
#[derive(Debug, Clone)]
pub struct ChartArray {
    points: usize,
    json: Bytes,
}

/// `[{"timestamp":ms,"value":v},...]` for `points`.
pub fn array(points: &[HistoryPoint]) -> ChartArray {
    // 13-digit timestamps and values of up to 17 digits: ~44 bytes a point.
    let mut out = Vec::with_capacity(points.len() * 44 + 2);
    let mut int = itoa::Buffer::new();
    let mut float = zmij::Buffer::new();
    out.push(b'[');
    for (i, p) in points.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"timestamp\":");
        out.extend_from_slice(int.format(p.timestamp).as_bytes());
        out.extend_from_slice(b",\"value\":");
        // serde_json writes what JSON cannot hold as null.
        if p.value.is_finite() {
            out.extend_from_slice(float.format_finite(p.value).as_bytes());
        } else {
            out.extend_from_slice(b"null");
        }
        out.push(b'}');
    }
    out.push(b']');
    ChartArray {
        points: points.len(),
        json: Bytes::from(out),
    }
}

type ByMetric<'a> = BTreeMap<&'a str, &'a ChartArray>;
type ById<'a> = BTreeMap<&'a str, ByMetric<'a>>;

/// Pulse's maps, in the order they are written, then the types Pulse has
/// no map for.
#[derive(Default)]
struct Answer<'a> {
    data: ById<'a>,
    node_data: ById<'a>,
    storage_data: ById<'a>,
    docker_data: ById<'a>,
    docker_host_data: ById<'a>,
    guest_types: BTreeMap<&'a str, &'static str>,
    resources: BTreeMap<&'a str, ById<'a>>,
}

/// The body as pieces: structure written here, arrays as they were made.
#[derive(Default)]
struct Pieces {
    done: Vec<Bytes>,
    open: Vec<u8>,
    points: usize,
}

impl Pieces {
    fn raw(&mut self, b: &[u8]) {
        self.open.extend_from_slice(b);
    }

    fn json<T: Serialize + ?Sized>(&mut self, v: &T) {
        serde_json::to_writer(&mut self.open, v).expect("small values always encode");
    }

    fn key(&mut self, k: &str) {
        self.json(k);
        self.raw(b":");
    }

    fn array(&mut self, a: &ChartArray) {
        self.done.push(Bytes::from(std::mem::take(&mut self.open)));
        self.done.push(a.json.clone());
        self.points += a.points;
    }

    fn by_id(&mut self, map: &ById) {
        self.raw(b"{");
        for (i, (id, metrics)) in map.iter().enumerate() {
            if i > 0 {
                self.raw(b",");
            }
            self.key(id);
            self.raw(b"{");
            for (j, (metric, array)) in metrics.iter().enumerate() {
                if j > 0 {
                    self.raw(b",");
                }
                self.key(metric);
                self.array(array);
            }
            self.raw(b"}");
        }
        self.raw(b"}");
    }
}

/// The whole answer for `series`, as pieces to send one after the other
/// (joining them would copy megabytes for nothing).
pub fn encode(series: &[(SeriesKey, ChartArray)], now: i64, stats: &ChartStats) -> Vec<Bytes> {
    let mut a = Answer::default();
    for (key, array) in series {
        let t = key.resource_type.as_str();
        let map = match t {
            "vm" | "container" => {
                a.guest_types
                    .insert(&key.resource_id, if t == "vm" { "vm" } else { "container" });
                &mut a.data
            }
            "node" => &mut a.node_data,
            "storage" => &mut a.storage_data,
            "dockerContainer" => &mut a.docker_data,
            "dockerHost" => &mut a.docker_host_data,
            other => a.resources.entry(other).or_default(),
        };
        map.entry(&key.resource_id)
            .or_default()
            .insert(&key.metric, array);
    }

    let mut p = Pieces::default();
    p.raw(b"{");
    for (name, map) in [
        ("data", &a.data),
        ("nodeData", &a.node_data),
        ("storageData", &a.storage_data),
        ("dockerData", &a.docker_data),
        ("dockerHostData", &a.docker_host_data),
    ] {
        p.key(name);
        p.by_id(map);
        p.raw(b",");
    }
    p.key("guestTypes");
    p.json(&a.guest_types);
    p.raw(b",");
    p.key("resources");
    p.raw(b"{");
    for (i, (t, map)) in a.resources.iter().enumerate() {
        if i > 0 {
            p.raw(b",");
        }
        p.key(t);
        p.by_id(map);
    }
    p.raw(b"},");
    p.key("timestamp");
    p.json(&now);
    p.raw(b",");
    p.key("stats");
    let points = p.points;
    p.json(&StatsJson {
        oldest_data_timestamp: stats.oldest_data_timestamp,
        tier: stats.tier,
        point_count: points,
        range: &stats.range,
        range_seconds: stats.range_seconds,
    });
    p.raw(b"}");
    let mut pieces = p.done;
    pieces.push(Bytes::from(p.open));
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn pt(timestamp: i64, value: f64) -> HistoryPoint {
        HistoryPoint {
            timestamp,
            value,
            min: value,
            max: value,
            count: 1,
        }
    }

    /// The body for `series`, joined.
    fn body(series: &[(SeriesKey, Vec<HistoryPoint>)], now: i64) -> Vec<u8> {
        let arrays: Vec<(SeriesKey, ChartArray)> =
            series.iter().map(|(k, p)| (k.clone(), array(p))).collect();
        encode(&arrays, now, &stats()).concat()
    }

    fn stats() -> ChartStats {
        ChartStats {
            oldest_data_timestamp: 5,
            tier: Tier::Minute,
            range: Some("1h".into()),
            range_seconds: 3600,
        }
    }

    /// serde_json's own encoding of the same shape, built independently.
    fn expected(series: &[(SeriesKey, Vec<HistoryPoint>)], now: i64) -> Value {
        let mut v = json!({
            "data": {}, "nodeData": {}, "storageData": {}, "dockerData": {},
            "dockerHostData": {}, "guestTypes": {}, "resources": {}, "timestamp": now,
        });
        let mut count = 0;
        for (k, pts) in series {
            count += pts.len();
            let arr: Vec<Value> = pts
                .iter()
                .map(|p| json!({"timestamp": p.timestamp, "value": p.value}))
                .collect();
            let slot = match k.resource_type.as_str() {
                "vm" | "container" => {
                    v["guestTypes"][&k.resource_id] = json!(k.resource_type);
                    &mut v["data"]
                }
                "node" => &mut v["nodeData"],
                "storage" => &mut v["storageData"],
                "dockerContainer" => &mut v["dockerData"],
                "dockerHost" => &mut v["dockerHostData"],
                other => &mut v["resources"][other],
            };
            slot[&k.resource_id][&k.metric] = Value::Array(arr);
        }
        v["stats"] = json!({
            "oldestDataTimestamp": 5, "tier": "minute", "pointCount": count,
            "range": "1h", "rangeSeconds": 3600,
        });
        v
    }

    #[test]
    fn every_map_is_present_when_nothing_is_stored() {
        let out = body(&[], 42);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, expected(&[], 42));
    }

    #[test]
    fn matches_serde_json_for_every_kind_of_resource() {
        let mut series = Vec::new();
        let kinds = [
            "vm",
            "container",
            "node",
            "storage",
            "dockerContainer",
            "dockerHost",
            "pbs",
            "k8s\"pod",
        ];
        for (n, t) in kinds.iter().enumerate() {
            for id in 0..3 {
                for m in ["cpu", "memory", "ne\\tin"] {
                    let pts = (0..(n + id) as i64 * 3)
                        .map(|i| pt(1_700_000_000_000 + i * 60_000, i as f64 / 7.0 + 0.1))
                        .chain([pt(1, 50.0), pt(2, -0.0), pt(3, 1e-9), pt(4, 12345678.9)])
                        .collect();
                    series.push((
                        SeriesKey::new(*t, format!("pve:node{n}:{id}\u{e9}"), m),
                        pts,
                    ));
                }
            }
        }
        series.sort_by(|a, b| a.0.cmp(&b.0));
        let out = body(&series, 7);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, expected(&series, 7));
    }

    #[test]
    fn numbers_are_written_as_serde_json_writes_them() {
        let pts = vec![pt(-5, 50.0), pt(1_700_000_000_123, 0.1 + 0.2), pt(9, 1e300)];
        let series = vec![(SeriesKey::new("node", "n", "cpu"), pts.clone())];
        let out = String::from_utf8(body(&series, 0)).unwrap();
        let arr: Vec<Value> = pts
            .iter()
            .map(|p| json!({"timestamp": p.timestamp, "value": p.value}))
            .collect();
        let want = format!(
            "\"nodeData\":{{\"n\":{{\"cpu\":{}}}}}",
            serde_json::to_string(&arr).unwrap()
        );
        assert!(out.contains(&want), "{out}\n{want}");
    }
}

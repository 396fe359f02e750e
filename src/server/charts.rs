//! The `/api/charts` body in Pulse's shape, written by hand.
//!
//! A 24 h chart of a typical install is 255 series x 1440 points, about
//! 15 MiB of JSON; through serde's map machinery that took ~21 ms, more than
//! the whole latency budget. Only the point arrays are bulky: each is written
//! by hand ([`array()`], `[{"timestamp":ms,"value":v}]` with numbers formatted
//! exactly as serde_json formats them) on the store's reader thread that
//! read its series (`Store::query_many_map`), so the encoding runs in
//! parallel with the query and no buffer of the whole answer is ever made.
//! [`encode`] then lays the small structure around the arrays and answers
//! the body as a list of pieces to send one after the other.
//!
//! Chart values are rounded to 4 significant digits ([`chart_value`]): a
//! bucket mean such as `30.602750000000004` draws the same as `30.6`, and the
//! noise digits were a third of the bytes. `/history` and `export` stay exact.
//!
//! Beside Pulse's maps the answer has `buckets`: per series, the time of its
//! newest point and the runs of points of one tier and bucket width
//! ([`crate::segments`]), so a chart tells a missing bucket from a coarser
//! one and a stopped resource from a running one at any range; `meta`:
//! what is known about each resource in the answer (name, node, ...), by
//! type then id; and `page`: which resources of how many the answer holds,
//! in the dashboard's order ([`crate::server::listing`]).
//!
//! Series stored under one of Pulse's type aliases (`docker`,
//! `system-container`, ...) are answered under the canonical type, and a
//! storage's `usage` as `disk` (as Pulse's own chart answer does).

use crate::model::{HistoryPoint, SeriesKey, Tier};
use crate::pulse_ids::{canonical_metric, canonical_type};
use crate::segments::{self, Segment};
use crate::server::listing::PageJson;
use crate::store::ResourceMap;
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
    /// Points written older than the raw retention and not folded into
    /// their buckets yet (stats `lateCount`): older ranges lack them until
    /// the service folds them, within a flush interval.
    pub late_count: u64,
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
    late_count: u64,
}

/// One series of the answer: its points as Pulse's JSON array and its entry
/// of `buckets`.
#[derive(Debug, Clone)]
pub struct ChartArray {
    points: usize,
    json: Bytes,
    buckets: Bytes,
}

/// A series' entry of `buckets`.
#[derive(Serialize)]
struct BucketsJson {
    /// Timestamp of the newest point read (before `maxPoints` merged it
    /// into a bucket stamped with the bucket's start); null without points.
    last: Option<i64>,
    segments: Vec<Segment>,
}

/// One series' answer from its uncapped, stitched points over
/// `[start, end]`, capped at `max` points as the store caps them.
pub fn series(points: &[HistoryPoint], start: i64, end: i64, max: Option<usize>) -> ChartArray {
    let tiers = segments::label(points);
    let capped = segments::cap(points, &tiers, start, end, max);
    let buckets = serde_json::to_vec(&BucketsJson {
        last: points.last().map(|p| p.timestamp),
        segments: segments::segments(&capped),
    })
    .expect("small values always encode");
    let mut out = array(capped.iter().map(|c| &c.point));
    out.buckets = Bytes::from(buckets);
    out
}

/// Powers of ten that are exact doubles, 1e-22 to 1e22.
const POW10: [f64; 45] = {
    let mut t = [0.0; 45];
    let mut i = 0;
    while i < 45 {
        let e = i as i32 - 22;
        let mut p = 1.0;
        let mut k = 0;
        while k < e.unsigned_abs() {
            p *= 10.0;
            k += 1;
        }
        t[i] = if e < 0 { 1.0 / p } else { p };
        i += 1;
    }
    t
};

/// `v` rounded to 4 significant digits: what a chart can show. Runs for
/// every point of an answer, so the magnitude comes from a table rather
/// than `log10`.
pub fn chart_value(v: f64) -> f64 {
    let a = v.abs();
    if a == 0.0 || !a.is_finite() || !(1e-18..1e22).contains(&a) {
        return if a == 0.0 || !a.is_finite() {
            v
        } else {
            format!("{v:.3e}").parse().unwrap_or(v)
        };
    }
    // 10^e <= a < 10^(e+1); the power 10^(3 - e) scales a to 4 digits.
    let e = POW10.partition_point(|p| *p <= a) as i32 - 1 - 22;
    let shift = 3 - e;
    // Exact powers of ten make the division or product below correctly
    // rounded, so the result prints as at most 4 digits.
    if shift >= 0 {
        let p = POW10[(shift + 22) as usize];
        (v * p).round() / p
    } else {
        let p = POW10[(22 - shift) as usize];
        (v / p).round() * p
    }
}

/// `[{"timestamp":ms,"value":v},...]` for `points`, values rounded by
/// [`chart_value`].
pub fn array<'a>(points: impl ExactSizeIterator<Item = &'a HistoryPoint>) -> ChartArray {
    // 13-digit timestamps and values of up to 6 characters: ~36 bytes a point.
    let n = points.len();
    let mut out = Vec::with_capacity(n * 36 + 2);
    let mut int = itoa::Buffer::new();
    let mut float = zmij::Buffer::new();
    out.push(b'[');
    for (i, p) in points.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"timestamp\":");
        out.extend_from_slice(int.format(p.timestamp).as_bytes());
        out.extend_from_slice(b",\"value\":");
        // serde_json writes what JSON cannot hold as null.
        let v = chart_value(p.value);
        if v.is_finite() {
            out.extend_from_slice(float.format_finite(v).as_bytes());
        } else {
            out.extend_from_slice(b"null");
        }
        out.push(b'}');
    }
    out.push(b']');
    ChartArray {
        points: n,
        json: Bytes::from(out),
        buckets: Bytes::from_static(b"{\"last\":null,\"segments\":[]}"),
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
    /// Every series again, by its own resource type, for `buckets`.
    by_type: BTreeMap<&'a str, ById<'a>>,
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

    /// `{id: {metric: entry of buckets}}`.
    fn buckets_by_id(&mut self, map: &ById) {
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
                self.raw(&array.buckets);
            }
            self.raw(b"}");
        }
        self.raw(b"}");
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
pub fn encode(
    series: &[(SeriesKey, ChartArray)],
    meta: &ResourceMap,
    now: i64,
    stats: &ChartStats,
    page: &PageJson,
) -> Vec<Bytes> {
    let mut a = Answer::default();
    for (key, array) in series {
        let t = canonical_type(&key.resource_type);
        let metric = canonical_metric(t, &key.metric);
        // A renamed metric never hides a series stored under the name itself.
        let renamed = metric != key.metric;
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
        let metrics = map.entry(&key.resource_id).or_default();
        if !renamed || !metrics.contains_key(metric) {
            metrics.insert(metric, array);
        }
        let metrics = a
            .by_type
            .entry(t)
            .or_default()
            .entry(&key.resource_id)
            .or_default();
        if !renamed || !metrics.contains_key(metric) {
            metrics.insert(metric, array);
        }
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
    p.key("buckets");
    p.raw(b"{");
    for (i, (t, map)) in a.by_type.iter().enumerate() {
        if i > 0 {
            p.raw(b",");
        }
        p.key(t);
        p.buckets_by_id(map);
    }
    p.raw(b"},");
    p.key("meta");
    p.json(meta);
    p.raw(b",");
    p.key("page");
    p.json(page);
    p.raw(b",");
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
        late_count: stats.late_count,
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

    /// The body for `series` (uncapped), joined.
    fn body(series: &[(SeriesKey, Vec<HistoryPoint>)], now: i64) -> Vec<u8> {
        let arrays: Vec<(SeriesKey, ChartArray)> = series
            .iter()
            .map(|(k, p)| (k.clone(), super::series(p, 0, now, None)))
            .collect();
        encode(&arrays, &ResourceMap::new(), now, &stats(), &page()).concat()
    }

    fn page() -> PageJson<'static> {
        PageJson {
            total: 7,
            offset: 2,
            limit: Some(3),
            items: vec![crate::server::listing::Item {
                resource_type: "vm",
                resource_id: "pve1:101",
            }],
            groups: &[],
        }
    }

    fn stats() -> ChartStats {
        ChartStats {
            oldest_data_timestamp: 5,
            tier: Tier::Minute,
            range: Some("1h".into()),
            range_seconds: 3600,
            late_count: 12,
        }
    }

    /// serde_json's own encoding of the same shape, built independently.
    fn expected(series: &[(SeriesKey, Vec<HistoryPoint>)], now: i64) -> Value {
        let mut v = json!({
            "data": {}, "nodeData": {}, "storageData": {}, "dockerData": {},
            "dockerHostData": {}, "guestTypes": {}, "resources": {}, "buckets": {},
            "meta": {}, "timestamp": now,
            "page": {"total": 7, "offset": 2, "limit": 3, "groups": [],
                     "items": [{"resourceType": "vm", "resourceId": "pve1:101"}]},
        });
        let mut count = 0;
        for (k, pts) in series {
            count += pts.len();
            let arr: Vec<Value> = pts
                .iter()
                .map(|p| json!({"timestamp": p.timestamp, "value": chart_value(p.value)}))
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
            let tiers = segments::label(pts);
            let capped = segments::cap(pts, &tiers, 0, now, None);
            v["buckets"][&k.resource_type][&k.resource_id][&k.metric] = json!({
                "last": pts.last().map(|p| p.timestamp),
                "segments": segments::segments(&capped),
            });
        }
        v["stats"] = json!({
            "oldestDataTimestamp": 5, "tier": "minute", "pointCount": count,
            "range": "1h", "rangeSeconds": 3600, "lateCount": 12,
        });
        v
    }

    #[test]
    fn pulse_aliases_are_answered_under_canonical_names_with_metadata() {
        let series: Vec<(SeriesKey, ChartArray)> = [
            ("docker", "c1", "cpu", 1.0),
            ("oci-container", "pve1:200", "cpu", 2.0),
            ("storage", "pve1:ceph", "usage", 3.0),
            ("storage", "pve1:nfs", "disk", 4.0),
            ("storage", "pve1:nfs", "usage", 5.0),
        ]
        .iter()
        .map(|(t, id, m, v)| {
            (
                SeriesKey::new(*t, *id, *m),
                super::series(&[pt(1000, *v)], 0, 2000, None),
            )
        })
        .collect();
        let mut meta = ResourceMap::new();
        meta.entry("storage".into()).or_default().insert(
            "pve1:ceph".into(),
            crate::store::ResourceMeta {
                name: Some("ceph".into()),
                ..Default::default()
            },
        );
        let out = encode(&series, &meta, 2000, &stats(), &page()).concat();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["dockerData"]["c1"]["cpu"][0]["value"], 1.0);
        assert_eq!(v["data"]["pve1:200"]["cpu"][0]["value"], 2.0);
        assert_eq!(v["guestTypes"]["pve1:200"], "container");
        assert_eq!(v["storageData"]["pve1:ceph"]["disk"][0]["value"], 3.0);
        // A series stored as `disk` is not hidden by one stored as `usage`.
        assert_eq!(v["storageData"]["pve1:nfs"]["disk"][0]["value"], 4.0);
        assert_eq!(v["meta"]["storage"]["pve1:ceph"]["name"], "ceph");
        assert!(v["resources"].as_object().unwrap().is_empty(), "{v}");
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
                    let pts = [pt(1, 50.0), pt(2, -0.0), pt(3, 1e-9), pt(4, 12345678.9)]
                        .into_iter()
                        .chain(
                            (0..(n + id) as i64 * 3)
                                .map(|i| pt(1_700_000_000_000 + i * 60_000, i as f64 / 7.0 + 0.1)),
                        )
                        .collect();
                    series.push((
                        SeriesKey::new(*t, format!("pve:node{n}:{id}\u{e9}"), m),
                        pts,
                    ));
                }
            }
        }
        series.sort_by(|a, b| a.0.cmp(&b.0));
        let out = body(&series, 1_700_000_000_000 + 3_600_000);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, expected(&series, 1_700_000_000_000 + 3_600_000));
    }

    #[test]
    fn values_are_rounded_to_four_significant_digits() {
        for (v, want) in [
            (30.602750000000004, "30.6"),
            (0.1 + 0.2, "0.3"),
            (99.99, "99.99"),
            (99.996, "100.0"),
            (12345678.9, "12350000.0"),
            (-0.000123456, "-0.0001235"),
            (1e300, "1e+300"),
            (1e-20 * 1.23456, "1.235e-20"),
            (9999.5, "10000.0"),
            (1.0, "1.0"),
            (0.001, "0.001"),
            (123456.0, "123500.0"),
            (5e-324, "5e-324"),
            (0.0, "0.0"),
        ] {
            assert_eq!(serde_json::to_string(&chart_value(v)).unwrap(), want, "{v}");
        }
        let pts = vec![pt(-5, 30.602750000000004), pt(1_700_000_000_123, 0.1 + 0.2)];
        let series = vec![(SeriesKey::new("node", "n", "cpu"), pts)];
        let out = String::from_utf8(body(&series, 1_700_000_001_000)).unwrap();
        let want = r#""nodeData":{"n":{"cpu":[{"timestamp":-5,"value":30.6},{"timestamp":1700000000123,"value":0.3}]}}"#;
        assert!(out.contains(want), "{out}");
    }

    #[test]
    fn capped_series_match_the_store_s_cap() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(crate::MetricsConfig {
            database_path: dir.path().join("m.db"),
            ..Default::default()
        })
        .unwrap();
        let now = 1_700_006_400_000i64;
        let points: Vec<crate::Point> = (0..3_000i64)
            .map(|i| crate::Point {
                resource_type: "vm".into(),
                resource_id: "1".into(),
                metric: "cpu".into(),
                value: (i % 97) as f64 / 3.0,
                timestamp: now - 10 * 3_600_000 + i * 12_000,
            })
            .collect();
        store.write_batch(&points).unwrap();
        store.flush().unwrap();
        store.rollup(now).unwrap();
        let key = SeriesKey::new("vm", "1", "cpu");
        let range = crate::TimeRange::last(std::time::Duration::from_secs(12 * 3600), now);
        let capped = store.query(&key, range, Some(100)).unwrap().points;
        let all = store.query(&key, range, None).unwrap().points;
        let ours = super::series(&all, range.start, range.end, Some(100));
        let v: Value = serde_json::from_slice(&ours.json).unwrap();
        let got = v.as_array().unwrap();
        assert_eq!(got.len(), capped.len());
        for (g, want) in got.iter().zip(&capped) {
            assert_eq!(g["timestamp"], want.timestamp);
            let g = g["value"].as_f64().unwrap();
            assert!(
                (g - want.value).abs() <= 5e-4 * want.value.abs(),
                "{g} {want:?}"
            );
        }
        let b: Value = serde_json::from_slice(&ours.buckets).unwrap();
        assert_eq!(b["last"], all.last().unwrap().timestamp);
        // Minute buckets (the open minute's raw points merge into the last
        // of them), all in 7.2-minute buckets.
        let segs = b["segments"].as_array().unwrap();
        assert_eq!(segs[0]["tier"], "minute", "{b}");
        assert_eq!(segs[0]["start"], capped[0].timestamp, "{b}");
        assert!(segs.iter().all(|s| s["width"] == 432_000), "{b}");
        store.close().unwrap();
    }
}

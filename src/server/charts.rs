//! The `/api/charts` body in Pulse's shape, written by hand.
//!
//! A 24 h chart of a typical install is 255 series x 1440 points, about
//! 15 MiB of JSON; through serde's map machinery that took ~21 ms, more than
//! the whole latency budget. Only the point arrays are bulky, so the small
//! structure around them is laid out first as a list of segments, and the
//! arrays (`[{"timestamp":ms,"value":v}]`, numbers formatted exactly as
//! serde_json formats them) are then written straight into buffers, split
//! across the available cores.

use crate::model::SeriesKey;
use crate::model::{HistoryPoint, Tier};
use serde::Serialize;
use std::collections::BTreeMap;

/// Below this many points a second thread costs more than it saves.
const PARALLEL_FROM: usize = 50_000;

/// What the answer's `stats` object says.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChartStats {
    pub oldest_data_timestamp: i64,
    pub tier: Tier,
    pub point_count: usize,
    pub range: Option<String>,
    pub range_seconds: i64,
}

type ByMetric<'a> = BTreeMap<&'a str, &'a [HistoryPoint]>;
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

/// The document as written in order: structure bytes, and point arrays
/// left to be written in parallel.
enum Segment<'a> {
    Bytes(Vec<u8>),
    Points(&'a [HistoryPoint]),
}

#[derive(Default)]
struct Layout<'a> {
    segments: Vec<Segment<'a>>,
    points: usize,
}

impl<'a> Layout<'a> {
    fn raw(&mut self, b: &[u8]) {
        match self.segments.last_mut() {
            Some(Segment::Bytes(v)) => v.extend_from_slice(b),
            _ => self.segments.push(Segment::Bytes(b.to_vec())),
        }
    }

    fn json<T: Serialize + ?Sized>(&mut self, v: &T) {
        let mut buf = Vec::new();
        serde_json::to_writer(&mut buf, v).expect("small values always encode");
        self.raw(&buf);
    }

    fn key(&mut self, k: &str) {
        self.json(k);
        self.raw(b":");
    }

    fn by_id(&mut self, map: &ById<'a>) {
        self.raw(b"{");
        for (i, (id, metrics)) in map.iter().enumerate() {
            if i > 0 {
                self.raw(b",");
            }
            self.key(id);
            self.raw(b"{");
            for (j, (metric, points)) in metrics.iter().enumerate() {
                if j > 0 {
                    self.raw(b",");
                }
                self.key(metric);
                self.points += points.len();
                self.segments.push(Segment::Points(points));
            }
            self.raw(b"}");
        }
        self.raw(b"}");
    }
}

/// The whole answer for `series`, as parts to send one after the other
/// (joining them would copy megabytes for nothing). `stats.point_count` is
/// filled here.
pub fn encode(
    series: &[(SeriesKey, Vec<HistoryPoint>)],
    now: i64,
    mut stats: ChartStats,
) -> Vec<Vec<u8>> {
    let mut a = Answer::default();
    for (key, points) in series {
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
            .insert(&key.metric, points);
    }

    let mut l = Layout::default();
    l.raw(b"{");
    for (name, map) in [
        ("data", &a.data),
        ("nodeData", &a.node_data),
        ("storageData", &a.storage_data),
        ("dockerData", &a.docker_data),
        ("dockerHostData", &a.docker_host_data),
    ] {
        l.key(name);
        l.by_id(map);
        l.raw(b",");
    }
    l.key("guestTypes");
    l.json(&a.guest_types);
    l.raw(b",");
    l.key("resources");
    l.raw(b"{");
    for (i, (t, map)) in a.resources.iter().enumerate() {
        if i > 0 {
            l.raw(b",");
        }
        l.key(t);
        l.by_id(map);
    }
    l.raw(b"},");
    l.key("timestamp");
    l.json(&now);
    l.raw(b",");
    l.key("stats");
    stats.point_count = l.points;
    l.json(&stats);
    l.raw(b"}");
    render(&l)
}

/// Writes the segments out, in as many contiguous parts (of about equal
/// points) as there are cores to use.
fn render(l: &Layout) -> Vec<Vec<u8>> {
    let threads = if l.points < PARALLEL_FROM {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
    };
    let mut bounds = vec![0];
    let mut acc = 0;
    for (i, s) in l.segments.iter().enumerate() {
        if bounds.len() < threads && acc * threads >= l.points * bounds.len() {
            bounds.push(i);
        }
        if let Segment::Points(p) = s {
            acc += p.len();
        }
    }
    bounds.push(l.segments.len());
    // ~42 bytes a point: 13-digit timestamp, a value of up to 17 digits.
    let size = |segs: &[Segment]| -> usize {
        segs.iter()
            .map(|s| match s {
                Segment::Bytes(b) => b.len(),
                Segment::Points(p) => p.len() * 44 + 2,
            })
            .sum()
    };
    std::thread::scope(|s| {
        let rest: Vec<_> = bounds
            .windows(2)
            .skip(1)
            .map(|w| {
                let segs = &l.segments[w[0]..w[1]];
                s.spawn(move || write_segments(Vec::with_capacity(size(segs)), segs))
            })
            .collect();
        let segs = &l.segments[..bounds[1]];
        let first = write_segments(Vec::with_capacity(size(segs)), segs);
        std::iter::once(first)
            .chain(rest.into_iter().map(|h| h.join().expect("chart encoder")))
            .collect()
    })
}

fn write_segments(mut out: Vec<u8>, segments: &[Segment]) -> Vec<u8> {
    let mut int = itoa::Buffer::new();
    let mut float = zmij::Buffer::new();
    for s in segments {
        let points = match s {
            Segment::Bytes(b) => {
                out.extend_from_slice(b);
                continue;
            }
            Segment::Points(p) => p,
        };
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
    }
    out
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

    fn stats() -> ChartStats {
        ChartStats {
            oldest_data_timestamp: 5,
            tier: Tier::Minute,
            point_count: 0,
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
        let out = encode(&[], 42, stats()).concat();
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
        let out = encode(&series, 7, stats()).concat();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, expected(&series, 7));
    }

    #[test]
    fn numbers_are_written_as_serde_json_writes_them() {
        let pts = vec![pt(-5, 50.0), pt(1_700_000_000_123, 0.1 + 0.2), pt(9, 1e300)];
        let series = vec![(SeriesKey::new("node", "n", "cpu"), pts.clone())];
        let out = String::from_utf8(encode(&series, 0, stats()).concat()).unwrap();
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

    #[test]
    fn a_large_answer_split_across_threads_is_whole() {
        // Enough points to take the parallel path.
        let series: Vec<(SeriesKey, Vec<HistoryPoint>)> = (0..100)
            .map(|i| {
                (
                    SeriesKey::new("vm", format!("g{i:03}"), "cpu"),
                    (0..1000).map(|j| pt(j * 1000, (i * j) as f64)).collect(),
                )
            })
            .collect();
        let parts = encode(&series, 1, stats());
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        assert_eq!(parts.len(), threads);
        let out = parts.concat();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, expected(&series, 1));
    }
}

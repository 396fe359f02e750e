//! `metrics.backend: remote`: every read answered from the engine's
//! Prometheus query API, in our answer shapes and with the store's rules
//! (docs/remote.md):
//!
//! * the tier (bucket width) is chosen as the store chooses it, from
//!   `metrics.retention`; a raw answer is the raw samples in `[start, end]`;
//! * a bucket of a rolled-up tier is the count, sum, min and max of the raw
//!   samples in it (`count_over_time`, `sum_over_time`, `min_over_time`,
//!   `max_over_time` over the bucket, evaluated at its end), its mean
//!   `sum / count`; buckets not closed yet are answered from the finer
//!   tiers, as the store answers the part it has not rolled up;
//! * `maxPoints` merges with the store's own code (`cap_buckets`).
//!
//! So the numbers are those the SQLite store gives for the same raw points
//! (a mean may differ in its last digits: the engine adds in its own
//! order), and two instances over one engine answer identically.

use super::client::Client;
use super::mapping::{self, ID_LABEL, INFO_METRIC, TYPE_LABEL};
use super::query::{PromApi, Series};
use crate::config::RemoteWriteTarget;
use crate::error::Result;
use crate::model::{HistoryPoint, SeriesKey, Tier};
use crate::store::{
    Bucket, History, ManyHistory, Resource, ResourceMeta, Retention, SeriesFilter, SeriesInfo,
    TimeRange, cap_buckets, select_tier,
};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The store's options in remote mode: what was asked, but the rolled-up
/// tiers kept as short as the rules allow (the engine keeps the history;
/// the local store is the send buffer, raw retention its length, and rolls
/// up only so that the journal can be released).
pub fn local_store_config(metrics: &crate::config::MetricsConfig) -> crate::config::MetricsConfig {
    let mut m = metrics.clone();
    if m.backend == crate::store::Backend::Remote {
        let r = &mut m.retention;
        r.minute = r.raw.max(Duration::from_secs(3600));
        r.hourly = r.minute.max(Duration::from_secs(86_400));
        r.daily = r.hourly;
    }
    m
}

/// How long the oldest-data figure is kept before it is asked again.
const OLDEST_TTL: Duration = Duration::from_secs(60);

pub struct RemoteReader {
    api: PromApi,
    prefix: String,
    /// Tier selection, as the store would make it.
    retention: Retention,
    /// Whether the engine's range windows include their start (`[t-w, t]`,
    /// Prometheus 2) or not (`(t-w, t]`, VictoriaMetrics, Prometheus 3).
    closed_windows: OnceLock<bool>,
    oldest: Mutex<Option<(Instant, i64)>>,
}

/// The metric name a one-metric selector (`{__name__="x",...}`) names.
fn sel_name(sel: &str) -> String {
    sel.strip_prefix("{__name__=\"")
        .and_then(|r| r.split_once('"'))
        .map(|(n, _)| n.replace("\\\\", "\\"))
        .unwrap_or_default()
}

/// `"` and `\` escaped for a PromQL string.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn regex_escaped(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

impl RemoteReader {
    pub fn new(
        target: &RemoteWriteTarget,
        retention: Retention,
    ) -> std::result::Result<RemoteReader, String> {
        let client = Client::new(target)?;
        Ok(RemoteReader {
            api: PromApi::new(client, &target.query_url),
            prefix: target.metric_prefix.clone(),
            retention,
            closed_windows: OnceLock::new(),
            oldest: Mutex::new(None),
        })
    }

    /// The selector of our series matching `filter` (never the info series).
    fn selector(&self, filter: &SeriesFilter) -> String {
        let mut parts = Vec::new();
        match &filter.metric {
            Some(m) => parts.push(format!(
                "__name__={}",
                quoted(&mapping::metric_name(&self.prefix, m))
            )),
            None => {
                parts.push(format!(
                    "__name__=~{}",
                    quoted(&format!("{}.+", regex_escaped(&self.prefix)))
                ));
                parts.push(format!(
                    "__name__!={}",
                    quoted(&format!("{}{INFO_METRIC}", self.prefix))
                ));
            }
        }
        if let Some(t) = &filter.resource_type {
            parts.push(format!("{TYPE_LABEL}={}", quoted(t)));
        }
        if let Some(i) = &filter.resource_id {
            parts.push(format!("{ID_LABEL}={}", quoted(i)));
        }
        format!("{{{}}}", parts.join(","))
    }

    /// One selector per metric of `keys`, each also matching `filter`.
    fn selectors<'a>(
        &self,
        filter: &SeriesFilter,
        keys: impl Iterator<Item = &'a SeriesKey>,
    ) -> Vec<String> {
        let metrics: std::collections::BTreeSet<&str> = keys.map(|k| k.metric.as_str()).collect();
        metrics
            .into_iter()
            .map(|m| {
                self.selector(&SeriesFilter {
                    metric: Some(m.to_string()),
                    ..filter.clone()
                })
            })
            .collect()
    }

    fn key_of(&self, labels: &BTreeMap<String, String>) -> Option<SeriesKey> {
        let metric = mapping::our_metric(&self.prefix, labels.get("__name__")?)?;
        Some(SeriesKey::new(
            labels.get(TYPE_LABEL)?.as_str(),
            labels.get(ID_LABEL)?.as_str(),
            metric,
        ))
    }

    /// How far back series are looked for: the longest retention.
    fn lookback(&self) -> i64 {
        self.retention.daily.as_millis() as i64
    }

    /// The series matching `filter` with samples within the longest
    /// retention before `now`, in key order.
    pub fn keys(&self, filter: &SeriesFilter, now: i64) -> Result<Vec<SeriesKey>> {
        let found = self
            .api
            .series(&self.selector(filter), now - self.lookback(), now)?;
        // The selector narrows by type, id and metric; a page's resources
        // are kept here.
        let mut keys: Vec<SeriesKey> = found
            .iter()
            .filter_map(|l| self.key_of(l))
            .filter(|k| filter.matches(k))
            .collect();
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    fn closed_windows(&self) -> Result<bool> {
        if let Some(c) = self.closed_windows.get() {
            return Ok(*c);
        }
        // A 10 s window over 1 s steps at an aligned time holds 11 steps
        // when it includes its start, 10 when it does not.
        let at = crate::model::now_ms() / 10_000 * 10_000;
        let r = self.api.query("count_over_time(vector(1)[10s:1s])", at)?;
        let n = r
            .first()
            .and_then(|s| s.samples.first())
            .map_or(10.0, |s| s.1);
        let closed = n > 10.5;
        let _ = self.closed_windows.set(closed);
        Ok(closed)
    }

    /// Every point of the series matching `filter` over `range`, per series,
    /// in time order: the raw samples for the raw tier, else buckets of
    /// `tier` that are closed by `range.now` and the finer tiers after.
    fn collect(
        &self,
        tier: Tier,
        sels: &[String],
        from: i64,
        to: i64,
        now: i64,
        out: &mut BTreeMap<SeriesKey, Vec<Bucket>>,
    ) -> Result<()> {
        if from > to {
            return Ok(());
        }
        if tier == Tier::Raw {
            let span = to - from + 1;
            for s in sels
                .iter()
                .map(|sel| self.api.query(&format!("{sel}[{span}ms]"), to))
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .flatten()
            {
                let Some(key) = self.key_of(&s.labels) else {
                    continue;
                };
                let list = out.entry(key).or_default();
                for (ts, v) in s.samples {
                    if ts >= from && ts <= to {
                        list.push(Bucket {
                            timestamp: ts,
                            count: 1,
                            sum: v,
                            min: v,
                            max: v,
                        });
                    }
                }
            }
            return Ok(());
        }
        let w = tier.bucket_secs() * 1000;
        let first = from.div_euclid(w) * w + if from.rem_euclid(w) == 0 { 0 } else { w };
        let last = (to.div_euclid(w) * w).min(now.div_euclid(w) * w - w);
        let mut cursor = from;
        if first <= last {
            let window = if self.closed_windows()? { w - 1 } else { w };
            // One metric at a time: functions drop the metric name, and
            // two metrics of one resource would collide without it.
            let fetch = |f: &str| -> Result<Vec<Series>> {
                let mut out = Vec::new();
                for sel in sels {
                    let mut part = self.api.query_range(
                        &format!("{f}({sel}[{window}ms] offset 1ms)"),
                        first + w,
                        last + w,
                        w,
                    )?;
                    let name = sel_name(sel);
                    for s in &mut part {
                        s.labels.insert("__name__".into(), name.clone());
                    }
                    out.extend(part);
                }
                Ok(out)
            };
            let counts = fetch("count_over_time")?;
            let sums = fetch("sum_over_time")?;
            let mins = fetch("min_over_time")?;
            let maxs = fetch("max_over_time")?;
            let by_key = |list: Vec<Series>| -> BTreeMap<SeriesKey, BTreeMap<i64, f64>> {
                list.into_iter()
                    .filter_map(|s| {
                        Some((self.key_of(&s.labels)?, s.samples.into_iter().collect()))
                    })
                    .collect()
            };
            let (sums, mins, maxs) = (by_key(sums), by_key(mins), by_key(maxs));
            for s in counts {
                let Some(key) = self.key_of(&s.labels) else {
                    continue;
                };
                let list = out.entry(key.clone()).or_default();
                for (t, n) in s.samples {
                    let get = |m: &BTreeMap<SeriesKey, BTreeMap<i64, f64>>| {
                        m.get(&key).and_then(|v| v.get(&t)).copied()
                    };
                    let (Some(sum), Some(min), Some(max)) = (get(&sums), get(&mins), get(&maxs))
                    else {
                        continue;
                    };
                    if n >= 1.0 {
                        list.push(Bucket {
                            timestamp: t - w,
                            count: n as u64,
                            sum,
                            min,
                            max,
                        });
                    }
                }
            }
            cursor = last + w;
        }
        let finer = Tier::ALL[tier.index() - 1];
        self.collect(finer, sels, cursor.max(from), to, now, out)
    }

    /// `Store::query_many_map`, from the engine.
    pub fn query_many_map<T: Send>(
        &self,
        filter: &SeriesFilter,
        range: TimeRange,
        max_points: Option<usize>,
        f: &(dyn Fn(&SeriesKey, Vec<HistoryPoint>) -> T + Sync),
    ) -> Result<ManyHistory<T>> {
        crate::store::check_query(range, max_points)?;
        let tier = select_tier(range.start, range.now, &self.retention);
        let mut points: BTreeMap<SeriesKey, Vec<Bucket>> = self
            .keys(filter, range.now)?
            .into_iter()
            .map(|k| (k, Vec::new()))
            .collect();
        let sels = self.selectors(filter, points.keys());
        self.collect(tier, &sels, range.start, range.end, range.now, &mut points)?;
        // The selectors are by metric: a page keeps its resources only.
        points.retain(|k, _| filter.matches(k));
        let series = points
            .into_iter()
            .map(|(key, mut list)| {
                list.sort_by_key(|b| b.timestamp);
                let h = cap_buckets(&list, range.start, range.end, max_points);
                let v = f(&key, h);
                (key, v)
            })
            .collect();
        Ok(ManyHistory { tier, series })
    }

    /// `Store::query`, from the engine.
    pub fn query(
        &self,
        key: &SeriesKey,
        range: TimeRange,
        max_points: Option<usize>,
    ) -> Result<History> {
        let filter = SeriesFilter {
            resource_type: Some(key.resource_type.clone()),
            resource_id: Some(key.resource_id.clone()),
            metric: Some(key.metric.clone()),
            resources: None,
        };
        let many = self.query_many_map(&filter, range, max_points, &|_, p| p)?;
        let points = many
            .series
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, p)| p)
            .unwrap_or_default();
        Ok(History {
            tier: many.tier,
            points,
        })
    }

    /// Where the engine's data begins (Unix ms, 0 when it holds none):
    /// narrowed from days to the raw sample; kept for a minute.
    pub fn oldest_data_timestamp(&self, now: i64) -> Result<i64> {
        if let Some((at, v)) = *self.oldest.lock()
            && at.elapsed() < OLDEST_TTL
        {
            return Ok(v);
        }
        let all = SeriesFilter::default();
        let keys = self.keys(&all, now)?;
        let sels = self.selectors(&all, keys.iter());
        let sel = self.selector(&all);
        let mut from = now - self.lookback();
        let mut to = now;
        let mut found = 0;
        for w in [86_400_000i64, 3_600_000, 60_000] {
            let first = from.div_euclid(w) * w;
            let mut earliest: Option<i64> = None;
            for sel in &sels {
                let expr = format!("sum(count_over_time({sel}[{w}ms]))");
                let r = self
                    .api
                    .query_range(&expr, first + w, to.div_euclid(w) * w + w, w)?;
                let t = r
                    .iter()
                    .flat_map(|s| s.samples.iter())
                    .filter(|s| s.1 > 0.0)
                    .map(|s| s.0)
                    .min();
                earliest = match (earliest, t) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            let Some(t) = earliest else {
                break;
            };
            // The window ending at `t` is the first with data.
            from = t - w;
            to = t;
            found = from;
        }
        if found > 0 {
            let r = self.api.query(&format!("{sel}[{}ms]", to - from + 1), to)?;
            if let Some(t) = r.iter().flat_map(|s| s.samples.iter()).map(|s| s.0).min() {
                found = t;
            }
        }
        *self.oldest.lock() = Some((Instant::now(), found));
        Ok(found)
    }

    /// Every series with its last value; the first and last timestamps are
    /// those of the first and last minute that has data (the newest raw
    /// sample when it is within raw retention).
    pub fn series(&self, now: i64) -> Result<Vec<SeriesInfo>> {
        let filter = SeriesFilter::default();
        let sel = self.selector(&filter);
        let keys = self.keys(&filter, now)?;
        let sels = self.selectors(&filter, keys.iter());
        let mut info: BTreeMap<SeriesKey, SeriesInfo> = keys
            .into_iter()
            .map(|k| {
                let i = SeriesInfo {
                    key: k.clone(),
                    first_timestamp: None,
                    last_timestamp: None,
                    last_value: None,
                };
                (k, i)
            })
            .collect();
        let day = 86_400_000i64;
        let from = (now - self.lookback()).div_euclid(day) * day;
        let per_metric = |expr: &dyn Fn(&str) -> String, range: bool| -> Result<Vec<Series>> {
            let mut out = Vec::new();
            for sel in &sels {
                let mut part = if range {
                    self.api.query_range(
                        &expr(sel),
                        from + day,
                        now.div_euclid(day) * day + day,
                        day,
                    )?
                } else {
                    self.api.query(&expr(sel), now)?
                };
                for s in &mut part {
                    s.labels.insert("__name__".into(), sel_name(sel));
                }
                out.extend(part);
            }
            Ok(out)
        };
        for s in per_metric(&|sel| format!("count_over_time({sel}[{day}ms])"), true)? {
            if let Some(k) = self.key_of(&s.labels)
                && let Some(i) = info.get_mut(&k)
            {
                i.first_timestamp = s.samples.first().map(|p| p.0 - day);
                i.last_timestamp = s.samples.last().map(|p| p.0 - day);
            }
        }
        let raw = self.retention.raw.as_millis() as i64;
        let lookback = self.lookback();
        for s in per_metric(&|sel| format!("last_over_time({sel}[{lookback}ms])"), false)? {
            if let Some(k) = self.key_of(&s.labels)
                && let Some(i) = info.get_mut(&k)
            {
                i.last_value = s.samples.first().map(|p| p.1);
            }
        }
        for s in self.api.query(&format!("{sel}[{raw}ms]"), now)? {
            if let Some(k) = self.key_of(&s.labels)
                && let Some(i) = info.get_mut(&k)
                && let Some(&(ts, v)) = s.samples.last()
            {
                i.last_timestamp = Some(ts);
                i.last_value = Some(v);
                if i.first_timestamp.is_none() {
                    i.first_timestamp = s.samples.first().map(|p| p.0);
                }
            }
        }
        Ok(info.into_values().collect())
    }

    /// What the info series say about each resource: of its label sets,
    /// the one sent last in the past half hour (it is resent every few
    /// minutes), else one of those within the longest retention.
    pub fn resources(&self, now: i64) -> Result<Vec<Resource>> {
        let name = format!("{}{INFO_METRIC}", self.prefix);
        let mut best: BTreeMap<(String, String), (f64, BTreeMap<String, String>)> = BTreeMap::new();
        let recent = format!("max_over_time(timestamp({name})[30m:1m])");
        let all = format!("last_over_time({name}[{}ms])", self.lookback());
        for (expr, recent) in [(recent, true), (all, false)] {
            for s in self.api.query(&expr, now)? {
                let (Some(t), Some(i)) = (s.labels.get(TYPE_LABEL), s.labels.get(ID_LABEL)) else {
                    continue;
                };
                let k = (t.clone(), i.clone());
                let at = if recent {
                    s.samples.first().map_or(0.0, |p| p.1)
                } else {
                    f64::MIN
                };
                match best.get(&k) {
                    Some((b, _)) if *b > at || !recent => {}
                    _ => {
                        let mut labels = s.labels;
                        labels.remove("__name__");
                        best.insert(k, (at, labels));
                    }
                }
            }
        }
        Ok(best
            .into_iter()
            .map(|((t, i), (_, l))| {
                let get = |n: &str| l.get(n).cloned().filter(|v| !v.is_empty());
                let meta = ResourceMeta {
                    name: get("name"),
                    node: get("node"),
                    instance: get("instance"),
                    status: get("status"),
                    template: get("template").map(|v| v == "true"),
                    tags: get("tags").map(|v| v.split(',').map(str::to_string).collect()),
                };
                Resource::new(t, i, meta)
            })
            .collect())
    }
}

//! Which resources a page of `/api/charts` or `/api/metrics-store/series`
//! holds, and in what order: their type filter, search, sort and paging.
//!
//! A page is a run of *resources* (the rows of the dashboard), never of
//! series: a resource comes with all its metrics or not at all. The whole
//! list is in the order the web UI shows it, so that paging through it is
//! stable: by type (nodes, VMs, containers, storage, Docker hosts, Docker
//! containers, then any other type by name), then within a type by name
//! (the metadata's name, else the id's last part) in natural order without
//! regard to case, then by id; or, when asked, by the newest value of one
//! metric in the range. The search matches what the dashboard's filter
//! matched when it ran in the browser: the id, name, node, instance and
//! tags, as a case-insensitive substring.
//!
//! Resources are listed under the canonical type they are answered as
//! (Pulse's aliases folded, [`canonical_type`]), with every type their
//! series are stored under.

use crate::pulse_ids::{canonical_metric, canonical_type, stored_types};
use crate::reads::Reads;
use crate::store::{Resource, ResourceMeta, Result, SeriesFilter, SeriesKey};
use parking_lot::Mutex;
use serde::Serialize;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// The order of the dashboard's groups; other types follow, by name.
pub const TYPE_ORDER: [&str; 6] = [
    "node",
    "vm",
    "container",
    "storage",
    "dockerHost",
    "dockerContainer",
];
/// Longest accepted search text (bytes), as a resource name.
pub const MAX_SEARCH: usize = 256;

/// What a request asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    /// Canonical types to keep; `None` keeps every type.
    pub types: Option<BTreeSet<String>>,
    /// Lower-case text a resource's id, name, node, instance or a tag must
    /// contain; `None` keeps every resource.
    pub search: Option<String>,
    pub sort: Sorts,
    pub offset: usize,
    /// Most resources in the page; `None`: all from `offset` on.
    pub limit: Option<usize>,
}

impl Request {
    /// Whether the request selects every resource, as an answer without
    /// any of these parameters does.
    pub fn is_everything(&self) -> bool {
        self.types.is_none() && self.search.is_none() && self.offset == 0 && self.limit.is_none()
    }

    /// Parses the parameters (each optional): `type` (names separated by
    /// commas; Pulse's aliases understood), `search`, `sort` (see
    /// [`Sorts::parse`]), `limit` and `offset`. The message names the
    /// parameter at fault.
    pub fn from_params(
        types: Option<&str>,
        search: Option<&str>,
        sort: Option<&str>,
        limit: Option<&str>,
        offset: Option<&str>,
    ) -> Result<Request, String> {
        let types = match types.filter(|t| !t.is_empty()) {
            None => None,
            Some(list) => {
                let mut set = BTreeSet::new();
                for t in list.split(',') {
                    SeriesKey::new(t, "x", "m")
                        .validate()
                        .map_err(|e| format!("type: {}", e.trim_start_matches("resourceType: ")))?;
                    set.insert(canonical_type(t).to_string());
                }
                Some(set)
            }
        };
        let search = match search.map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(s) if s.len() > MAX_SEARCH => {
                return Err(format!(
                    "search: {} bytes, at most {MAX_SEARCH} allowed",
                    s.len()
                ));
            }
            Some(s) => Some(s.to_lowercase()),
        };
        let number = |name: &str, v: Option<&str>| -> Result<Option<usize>, String> {
            match v {
                None | Some("") => Ok(None),
                Some(v) => v.trim().parse::<usize>().map(Some).map_err(|_| {
                    format!("{name}: must be a whole number of at least 0, got {v:?}")
                }),
            }
        };
        Ok(Request {
            types,
            search,
            sort: match sort.filter(|s| !s.is_empty()) {
                None => Sorts::default(),
                Some(s) => Sorts::parse(s)?,
            },
            offset: number("offset", offset)?.unwrap_or(0),
            limit: number("limit", limit)?,
        })
    }
}

/// What rows of one type are ordered by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// The name shown (metadata name, else the id's last part), then the id.
    Name,
    /// The newest value of this (canonical) metric in the range answered;
    /// a resource without one comes last when descending, first when
    /// ascending; equal values by name.
    Metric(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sort {
    pub key: Key,
    pub descending: bool,
}

const BY_NAME: Sort = Sort {
    key: Key::Name,
    descending: false,
};

/// The sort of each type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sorts {
    /// For every type not named in `by_type`.
    all: Option<Sort>,
    by_type: BTreeMap<String, Sort>,
}

impl Sorts {
    /// `sort`: entries separated by commas, each `[TYPE:]KEY[:asc|desc]`,
    /// where `KEY` is `name` or a metric (`vm:cpu:desc,node:name:desc`;
    /// `cpu:desc` sorts every type by cpu). Without a direction, ascending.
    pub fn parse(text: &str) -> Result<Sorts, String> {
        let mut sorts = Sorts::default();
        for entry in text.split(',') {
            let mut parts: Vec<&str> = entry.split(':').collect();
            let descending = match parts.last() {
                Some(&"desc") if parts.len() > 1 => {
                    parts.pop();
                    true
                }
                Some(&"asc") if parts.len() > 1 => {
                    parts.pop();
                    false
                }
                _ => false,
            };
            let (t, key) = match parts[..] {
                [key] => (None, key),
                [t, key] => (Some(t), key),
                _ => {
                    return Err(format!(
                        "sort: {entry:?} is not [TYPE:]KEY[:asc|desc] (e.g. vm:cpu:desc or name)"
                    ));
                }
            };
            let probe = SeriesKey::new(t.unwrap_or("vm"), "x", key);
            probe.validate().map_err(|e| format!("sort: {e}"))?;
            let t = t.map(canonical_type);
            let key = match key {
                "name" => Key::Name,
                m => Key::Metric(canonical_metric(t.unwrap_or(""), m).to_string()),
            };
            let sort = Sort { key, descending };
            match t {
                None => sorts.all = Some(sort),
                Some(t) => {
                    sorts.by_type.insert(t.to_string(), sort);
                }
            }
        }
        Ok(sorts)
    }

    /// How rows of canonical type `t` are ordered.
    pub fn of(&self, t: &str) -> Sort {
        let sort = self
            .by_type
            .get(t)
            .or(self.all.as_ref())
            .cloned()
            .unwrap_or(BY_NAME);
        match sort.key {
            // A storage's `usage` is its `disk`, whichever way it was asked.
            Key::Metric(m) => Sort {
                key: Key::Metric(canonical_metric(t, &m).to_string()),
                ..sort
            },
            Key::Name => sort,
        }
    }
}

/// One resource as its series make it, under the type it is answered as:
/// what [`listed`] derives from the store's keys, kept in a [`Cache`] while
/// they stay the same.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    /// The canonical type.
    pub resource_type: String,
    pub resource_id: String,
    /// The types its series are stored under: the canonical one first,
    /// and/or Pulse's aliases of it.
    pub stored_types: Vec<String>,
    /// Its (canonical) metrics.
    pub metrics: Vec<String>,
}

/// Resource metadata by stored type, then id.
pub type MetaIndex = HashMap<String, HashMap<String, ResourceMeta>>;

/// `resources` (as `Store::resources` lists them) by type and id.
/// The series of `metric` (as stored) of `rows`: what a sort by a metric
/// reads.
pub fn metric_filter(stored: &str, rows: &[&Listed]) -> SeriesFilter {
    SeriesFilter {
        metric: Some(stored.to_string()),
        resources: Some(resource_set(rows.iter().copied())),
        ..SeriesFilter::default()
    }
}

pub fn meta_index(resources: Vec<Resource>) -> MetaIndex {
    let mut meta = MetaIndex::new();
    for r in resources {
        meta.entry(r.resource_type)
            .or_default()
            .insert(r.resource_id, r.meta);
    }
    meta
}

/// A row of a page: a resource and what is known about it (from the first
/// of its stored types that has any).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub listed: Listed,
    pub meta: Option<ResourceMeta>,
}

/// A resource with its metadata, while a list is filtered and ordered.
#[derive(Clone, Copy)]
struct Entry<'a> {
    listed: &'a Listed,
    meta: Option<&'a ResourceMeta>,
}

impl<'a> Entry<'a> {
    fn new(listed: &'a Listed, index: &'a MetaIndex) -> Entry<'a> {
        let meta = listed
            .stored_types
            .iter()
            .find_map(|t| index.get(t).and_then(|ids| ids.get(&listed.resource_id)));
        Entry { listed, meta }
    }

    /// The name the dashboard shows first: the metadata's name, else the
    /// id's last part after a colon.
    fn name(&self) -> &'a str {
        match self.meta.and_then(|m| m.name.as_deref()) {
            Some(n) if !n.is_empty() => n,
            _ => last_part(&self.listed.resource_id),
        }
    }

    fn matches(&self, search: &str) -> bool {
        let has = |s: &str| s.to_lowercase().contains(search);
        if has(&self.listed.resource_id) {
            return true;
        }
        let Some(m) = self.meta else { return false };
        [&m.name, &m.node, &m.instance]
            .into_iter()
            .flatten()
            .any(|s| has(s))
            || m.tags.iter().flatten().any(|t| has(t))
    }
}

/// `pve1:node1:local` -> `local`; an id without a colon (or ending in one)
/// is its own last part, as in the UI's `splitId`.
fn last_part(id: &str) -> &str {
    match id.rfind(':') {
        Some(i) if i > 0 && i + 1 < id.len() => &id[i + 1..],
        _ => id,
    }
}

/// Every resource that has a series (`keys` in key order, merged series
/// left out). One pass: a resource's series are adjacent in key order, but
/// for those stored under one of Pulse's aliases of their type.
pub fn listed(keys: &[SeriesKey]) -> Vec<Listed> {
    let mut rows: Vec<Listed> = Vec::new();
    // Rows of the types Pulse has other names for, to find a resource's
    // row again under the next name.
    let mut aliased: HashMap<(&str, &str), usize> = HashMap::new();
    for k in keys {
        let t = canonical_type(&k.resource_type);
        let i = match rows.last() {
            Some(r)
                if r.resource_id == k.resource_id
                    && r.stored_types.last() == Some(&k.resource_type) =>
            {
                rows.len() - 1
            }
            _ => {
                let named_twice = t != k.resource_type || stored_types(t).len() > 1;
                match aliased.get(&(t, k.resource_id.as_str())) {
                    Some(&i) if named_twice => {
                        rows[i].stored_types.push(k.resource_type.clone());
                        i
                    }
                    _ => {
                        rows.push(Listed {
                            resource_type: t.to_string(),
                            resource_id: k.resource_id.clone(),
                            stored_types: vec![k.resource_type.clone()],
                            metrics: Vec::new(),
                        });
                        if named_twice {
                            aliased.insert((t, &k.resource_id), rows.len() - 1);
                        }
                        rows.len() - 1
                    }
                }
            }
        };
        let metric = canonical_metric(t, &k.metric);
        if !rows[i].metrics.iter().any(|m| m == metric) {
            rows[i].metrics.push(metric.to_string());
        }
    }
    for row in rows.iter_mut().filter(|r| r.stored_types.len() > 1) {
        // The canonical type first: its metadata wins over an alias's.
        let t = row.resource_type.clone();
        row.stored_types
            .sort_by(|a, b| (*a != t, a).cmp(&(*b != t, b)));
    }
    rows
}

/// [`listed`] of the store's keys, made again only when they change
/// (`Store::keys_version`): listing 40,000 series is most of a page's
/// cost otherwise.
#[derive(Default)]
pub struct Cache(Mutex<Option<(u64, Arc<Vec<Listed>>)>>);

impl Cache {
    /// The whole list over `reads`: kept until the local store's series
    /// change; a remote engine's is made at each call (its series change
    /// without this process knowing).
    pub fn listed(&self, reads: &Reads) -> Result<Arc<Vec<Listed>>> {
        let store = match reads {
            Reads::Local(store) => store,
            Reads::Remote(_) => {
                return Ok(Arc::new(listed(&reads.keys(&SeriesFilter::default())?)));
            }
        };
        let version = store.keys_version();
        if let Some((v, list)) = &*self.0.lock()
            && *v == version
        {
            return Ok(list.clone());
        }
        // Read after the version: a change in between is kept under the
        // older version, and made again at the next call.
        let list = Arc::new(listed(&store.keys(&SeriesFilter::default())));
        *self.0.lock() = Some((version, list.clone()));
        Ok(list)
    }
}

/// One type's rows in the whole (filtered) list.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    pub resource_type: String,
    /// Where the type's rows begin in the whole list.
    pub start: usize,
    /// How many of its resources match.
    pub total: usize,
    /// Every metric of the type's resources, whatever the search, so a
    /// table's columns stay put while searching.
    pub metrics: BTreeSet<String>,
}

/// A page of the list.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The page's rows, in order.
    pub rows: Vec<Row>,
    /// Resources matching type and search.
    pub total: usize,
    pub offset: usize,
    pub limit: Option<usize>,
    /// Each type with matching resources, in order.
    pub groups: Vec<Group>,
}

fn type_rank(t: &str) -> (usize, &str) {
    match TYPE_ORDER.iter().position(|o| *o == t) {
        Some(i) => (i, ""),
        None => (TYPE_ORDER.len(), t),
    }
}

fn compare_types(a: &str, b: &str) -> Ordering {
    let (ra, ta) = type_rank(a);
    let (rb, tb) = type_rank(b);
    ra.cmp(&rb).then_with(|| compare_names(ta, tb))
}

/// What rows sort by when by name: the name shown, then the id, in natural
/// order, then byte by byte: a total order (ids are unique within a type).
/// Made once per row, so a sort of thousands of rows compares bytes.
fn name_key(e: &Entry) -> (Vec<u8>, Vec<u8>, String, String) {
    (
        natural_key(e.name()),
        natural_key(&e.listed.resource_id),
        e.name().to_string(),
        e.listed.resource_id.clone(),
    )
}

/// A value's place: missing values lowest, so first ascending and last
/// descending; numbers in `f64::total_cmp`'s order.
fn value_key(v: Option<f64>, descending: bool) -> (u8, u64) {
    let ordered = |x: f64| {
        let b = x.to_bits();
        if b >> 63 == 1 { !b } else { b | 1 << 63 }
    };
    match (v, descending) {
        (None, false) => (0, 0),
        (Some(x), false) => (1, ordered(x)),
        (Some(x), true) => (0, !ordered(x)),
        (None, true) => (1, 0),
    }
}

/// Filters `all` by `request`'s types and search, orders each type as asked
/// and cuts the page. `values(type, metric, rows)` gives the newest value
/// of `metric` in the range for the rows of a type sorted by that metric
/// (by id; `None`: no point in the range).
pub fn page<E>(
    all: &[Listed],
    meta: &MetaIndex,
    request: &Request,
    mut values: impl FnMut(&str, &str, &[&Listed]) -> Result<HashMap<String, Option<f64>>, E>,
) -> Result<Page, E> {
    let wanted = |row: &Listed| {
        request
            .types
            .as_ref()
            .is_none_or(|t| t.contains(&row.resource_type))
    };
    // A table's columns: every metric of its type, whatever the search.
    let mut columns: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    let mut by_type: HashMap<&str, Vec<Entry>> = HashMap::new();
    for row in all.iter().filter(|r| wanted(r)) {
        columns
            .entry(&row.resource_type)
            .or_default()
            .extend(row.metrics.iter().map(String::as_str));
        let entry = Entry::new(row, meta);
        if request.search.as_deref().is_none_or(|s| entry.matches(s)) {
            by_type.entry(&row.resource_type).or_default().push(entry);
        }
    }
    let mut types: Vec<(&str, Vec<Entry>)> = by_type.into_iter().collect();
    types.sort_by(|a, b| compare_types(a.0, b.0));

    let total: usize = types.iter().map(|(_, rows)| rows.len()).sum();
    let offset = request.offset.min(total);
    let end = request
        .limit
        .map_or(total, |l| offset.saturating_add(l).min(total));
    let mut groups = Vec::with_capacity(types.len());
    let mut out = Vec::with_capacity(end - offset);
    let mut start = 0;
    for (t, mut rows) in types {
        let n = rows.len();
        // Only a type with rows in the page needs ordering.
        if start < end && start + n > offset {
            let sort = request.sort.of(t);
            match &sort.key {
                Key::Name => {
                    rows.sort_by_cached_key(name_key);
                    if sort.descending {
                        rows.reverse();
                    }
                }
                Key::Metric(m) => {
                    let listed: Vec<&Listed> = rows.iter().map(|e| e.listed).collect();
                    let v = values(t, m, &listed)?;
                    // Equal values by name, ascending whichever the direction.
                    rows.sort_by_cached_key(|e| {
                        let value = v.get(&e.listed.resource_id).copied().flatten();
                        (value_key(value, sort.descending), name_key(e))
                    });
                }
            }
            let from = offset.saturating_sub(start);
            let to = (end - start).min(n);
            out.extend(rows[from..to].iter().map(|e| Row {
                listed: e.listed.clone(),
                meta: e.meta.cloned(),
            }));
        }
        groups.push(Group {
            resource_type: t.to_string(),
            start,
            total: n,
            metrics: columns
                .remove(t)
                .unwrap_or_default()
                .into_iter()
                .map(str::to_string)
                .collect(),
        });
        start += n;
    }
    Ok(Page {
        rows: out,
        total,
        offset,
        limit: request.limit,
        groups,
    })
}

/// The series filter's resource set for `rows`: stored type -> ids.
pub fn resource_set<'a>(
    rows: impl IntoIterator<Item = &'a Listed>,
) -> HashMap<String, HashSet<String>> {
    let mut set: HashMap<String, HashSet<String>> = HashMap::new();
    for row in rows {
        for t in &row.stored_types {
            set.entry(t.clone())
                .or_default()
                .insert(row.resource_id.clone());
        }
    }
    set
}

/// A page as the answers carry it under `page`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PageJson<'a> {
    pub total: usize,
    pub offset: usize,
    pub limit: Option<usize>,
    /// The page's resources in order, under the type they are answered as.
    pub items: Vec<Item<'a>>,
    pub groups: &'a [Group],
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Item<'a> {
    pub resource_type: &'a str,
    pub resource_id: &'a str,
}

impl Page {
    pub fn json(&self) -> PageJson<'_> {
        PageJson {
            total: self.total,
            offset: self.offset,
            limit: self.limit,
            items: self
                .rows
                .iter()
                .map(|r| Item {
                    resource_type: &r.listed.resource_type,
                    resource_id: &r.listed.resource_id,
                })
                .collect(),
            groups: &self.groups,
        }
    }
}

/// Natural order without regard to case, close to the browser's
/// `Intl.Collator(undefined, {numeric: true, sensitivity: "base"})` that
/// ordered the dashboard before: runs of digits compare as numbers (`vm2`
/// before `vm10`, `01` equal to `1`), letters by their lower case, and
/// spaces before punctuation before digits before letters.
pub fn compare_names(a: &str, b: &str) -> Ordering {
    natural_key(a).cmp(&natural_key(b))
}

/// Bytes that compare as [`compare_names`] compares `s`: each run of
/// digits as its class, its length without leading zeros and its digits;
/// each other character as its class and its lower case in UTF-8 (which
/// keeps the order of code points, and no character's bytes begin
/// another's).
fn natural_key(s: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(s.len() * 2);
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if c.is_ascii_digit() {
            let run = rest.bytes().take_while(u8::is_ascii_digit).count();
            let digits = rest[..run].trim_start_matches('0');
            key.push(class(c));
            key.extend_from_slice(&(digits.len() as u32).to_be_bytes());
            key.extend_from_slice(digits.as_bytes());
            rest = &rest[run..];
        } else {
            key.push(class(c));
            let mut buf = [0; 4];
            key.extend_from_slice(fold(c).encode_utf8(&mut buf).as_bytes());
            rest = &rest[c.len_utf8()..];
        }
    }
    key
}

fn class(c: char) -> u8 {
    if c.is_whitespace() {
        0
    } else if c.is_ascii_digit() {
        2
    } else if c.is_alphanumeric() {
        3
    } else {
        1
    }
}

fn fold(c: char) -> char {
    c.to_lowercase().next().unwrap_or(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: Option<&str>, node: Option<&str>, tags: &[&str]) -> ResourceMeta {
        ResourceMeta {
            name: name.map(str::to_string),
            node: node.map(str::to_string),
            instance: Some("pve1".into()),
            tags: (!tags.is_empty()).then(|| tags.iter().map(|t| t.to_string()).collect()),
            ..ResourceMeta::default()
        }
    }

    /// A small fleet: keys and metadata as the store lists them.
    fn fleet() -> (Vec<SeriesKey>, Vec<Resource>) {
        let mut keys = Vec::new();
        let mut res = Vec::new();
        for (t, id, name, node, tags, metrics) in [
            (
                "node",
                "pve1:node2",
                Some("node2"),
                None,
                &[][..],
                &["cpu", "memory"][..],
            ),
            ("node", "pve1:node10", Some("node10"), None, &[], &["cpu"]),
            (
                "vm",
                "pve1:101",
                Some("web01"),
                Some("node1"),
                &["prod", "web"],
                &["cpu", "memory"],
            ),
            (
                "vm",
                "pve1:102",
                Some("Web02"),
                Some("node2"),
                &[],
                &["cpu", "disk"],
            ),
            (
                "vm",
                "pve1:103",
                Some("db01"),
                Some("node3"),
                &["prod"],
                &["cpu"],
            ),
            ("vm", "pve1:104", None, None, &[], &["cpu"]),
            (
                "oci-container",
                "pve1:200",
                Some("proxy"),
                Some("node1"),
                &[],
                &["cpu"],
            ),
            (
                "container",
                "pve1:201",
                Some("dns"),
                Some("node3"),
                &[],
                &["cpu"],
            ),
            ("storage", "pve1:ceph", Some("ceph"), None, &[], &["usage"]),
            ("pbs", "backup1", None, None, &[], &["cpu"]),
            ("docker", "c1", None, None, &[], &["cpu"]),
        ] {
            for m in metrics {
                keys.push(SeriesKey::new(t, id, *m));
            }
            if name.is_some() || node.is_some() {
                res.push(Resource::new(t, id, meta(name, node, tags)));
            }
        }
        keys.sort();
        (keys, res)
    }

    fn ids(page: &Page) -> Vec<&str> {
        page.rows
            .iter()
            .map(|r| r.listed.resource_id.as_str())
            .collect()
    }

    fn run(req: &Request) -> Page {
        let (keys, res) = fleet();
        page(&listed(&keys), &meta_index(res), req, |_, _, rows| {
            // The value of a row: its id's digits, if any.
            Ok::<_, ()>(
                rows.iter()
                    .map(|r| {
                        let v = last_part(&r.resource_id).parse::<f64>().ok();
                        (r.resource_id.clone(), v)
                    })
                    .collect(),
            )
        })
        .unwrap()
    }

    fn req(
        types: Option<&str>,
        search: Option<&str>,
        sort: Option<&str>,
        limit: Option<&str>,
        offset: Option<&str>,
    ) -> Request {
        Request::from_params(types, search, sort, limit, offset).unwrap()
    }

    #[test]
    fn everything_in_dashboard_order() {
        let p = run(&Request::default());
        assert_eq!(
            ids(&p),
            [
                "pve1:node2",
                "pve1:node10",
                "pve1:104",
                "pve1:103",
                "pve1:101",
                "pve1:102",
                "pve1:201",
                "pve1:200",
                "pve1:ceph",
                "c1",
                "backup1"
            ],
            "types in the dashboard's order, names naturally without regard to case"
        );
        assert_eq!(p.total, 11);
        let groups: Vec<(&str, usize, usize)> = p
            .groups
            .iter()
            .map(|g| (g.resource_type.as_str(), g.start, g.total))
            .collect();
        assert_eq!(
            groups,
            [
                ("node", 0, 2),
                ("vm", 2, 4),
                ("container", 6, 2),
                ("storage", 8, 1),
                ("dockerContainer", 9, 1),
                ("pbs", 10, 1)
            ]
        );
        let storage = &p.groups[3];
        assert_eq!(storage.metrics, BTreeSet::from(["disk".to_string()]));
        // Aliases are answered under the canonical type, with their stored one.
        let proxy = &p.rows[7];
        assert_eq!(
            (
                proxy.listed.resource_type.as_str(),
                proxy.listed.stored_types.clone()
            ),
            ("container", vec!["oci-container".to_string()])
        );
        assert_eq!(proxy.meta.as_ref().unwrap().name.as_deref(), Some("proxy"));
    }

    #[test]
    fn pages_cut_the_ordered_list() {
        let all = ids(&run(&Request::default()))
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        let mut seen = Vec::new();
        for offset in (0..12).step_by(3) {
            let p = run(&req(None, None, None, Some("3"), Some(&offset.to_string())));
            assert_eq!(p.total, 11);
            assert_eq!(p.offset, offset.min(11));
            seen.extend(ids(&p).into_iter().map(String::from));
        }
        assert_eq!(seen, all, "pages in turn give the whole list once");
        let past = run(&req(None, None, None, Some("5"), Some("50")));
        assert!(past.rows.is_empty());
        assert_eq!((past.total, past.offset), (11, 11));
        let none = run(&req(None, None, None, Some("0"), None));
        assert!(none.rows.is_empty());
        assert_eq!(none.groups.len(), 6, "totals without rows");
    }

    #[test]
    fn search_matches_names_ids_nodes_tags_and_instances_without_case() {
        for (search, want) in [
            ("web", vec!["pve1:101", "pve1:102"]),
            ("WEB0", vec!["pve1:101", "pve1:102"]),
            ("prod", vec!["pve1:103", "pve1:101"]),
            ("node3", vec!["pve1:103", "pve1:201"]),
            (
                "pve1:10",
                vec!["pve1:104", "pve1:103", "pve1:101", "pve1:102"],
            ),
            ("ODE1", vec!["pve1:node10", "pve1:101", "pve1:200"]),
            ("backup", vec!["backup1"]),
            ("zebra", vec![]),
        ] {
            let p = run(&req(None, Some(search), None, None, None));
            assert_eq!(ids(&p), want, "search {search:?}");
            assert_eq!(p.total, want.len());
        }
        // Every pve1 resource has instance pve1 in its metadata.
        assert_eq!(run(&req(None, Some("pve1"), None, None, None)).total, 9);
        // A group's columns stay those of the whole type.
        let p = run(&req(None, Some("db01"), None, None, None));
        assert_eq!(p.groups.len(), 1);
        assert_eq!(
            p.groups[0].metrics,
            BTreeSet::from(["cpu", "disk", "memory"].map(String::from))
        );
    }

    #[test]
    fn type_filter_takes_lists_and_pulse_aliases() {
        let p = run(&req(Some("system-container"), None, None, None, None));
        assert_eq!(ids(&p), ["pve1:201", "pve1:200"]);
        let p = run(&req(Some("node,docker"), None, None, None, None));
        assert_eq!(ids(&p), ["pve1:node2", "pve1:node10", "c1"]);
        assert_eq!(p.groups[1].start, 2);
        assert!(
            run(&req(Some("nothing"), None, None, None, None))
                .rows
                .is_empty()
        );
        let bad = Request::from_params(Some("v m"), None, None, None, None).unwrap_err();
        assert!(bad.starts_with("type: character ' '"), "{bad}");
    }

    #[test]
    fn sorts_by_name_or_metric_per_type() {
        let p = run(&req(Some("vm"), None, Some("vm:name:desc"), None, None));
        assert_eq!(ids(&p), ["pve1:102", "pve1:101", "pve1:103", "pve1:104"]);
        // By value (here the id's digits), highest first; then by name.
        let p = run(&req(None, None, Some("vm:cpu:desc"), Some("4"), Some("2")));
        assert_eq!(ids(&p), ["pve1:104", "pve1:103", "pve1:102", "pve1:101"]);
        let p = run(&req(None, None, Some("cpu"), None, None));
        // Nodes have no number: all missing, so by name.
        assert_eq!(
            &ids(&p)[..6],
            [
                "pve1:node2",
                "pve1:node10",
                "pve1:101",
                "pve1:102",
                "pve1:103",
                "pve1:104"
            ]
        );
        // Missing values lowest: last when descending.
        let p = run(&req(None, None, Some("cpu:desc"), None, None));
        assert_eq!(&ids(&p)[8..], ["pve1:ceph", "c1", "backup1"]);
        for bad in ["vm:cpu:up:desc", "v m:cpu", ":desc", "vm:"] {
            assert!(
                Sorts::parse(bad).unwrap_err().starts_with("sort: "),
                "{bad}"
            );
        }
        let s = Sorts::parse("storage:usage:desc").unwrap();
        assert_eq!(s.of("storage").key, Key::Metric("disk".into()));
        assert!(!Sorts::parse("cpu").unwrap().of("vm").descending);
    }

    #[test]
    fn parameters_are_checked() {
        let err = |t, s, so, l, o| Request::from_params(t, s, so, l, o).unwrap_err();
        assert!(err(None, None, None, Some("-1"), None).starts_with("limit: "));
        assert!(err(None, None, None, None, Some("x")).starts_with("offset: "));
        let long = "x".repeat(300);
        assert!(err(None, Some(long.as_str()), None, None, None).starts_with("search: 300 bytes"));
        let r = req(Some(""), Some("  "), Some(""), Some(""), Some(""));
        assert!(r.is_everything());
        assert!(!req(None, None, None, Some("5"), None).is_everything());
    }

    #[test]
    fn natural_order_without_case() {
        let mut names = vec![
            "vm10", "VM2", "vm1", "web-2", "web2", "Web", "a b", "ab", "x01", "x1", "é",
        ];
        names.sort_by(|a, b| compare_names(a, b));
        assert_eq!(
            names,
            [
                "a b", "ab", "vm1", "VM2", "vm10", "Web", "web-2", "web2", "x01", "x1", "é"
            ]
        );
        assert_eq!(compare_names("x01", "x1"), Ordering::Equal);
        assert_eq!(compare_names("abc", "ABC"), Ordering::Equal);
        assert_eq!(compare_names("ab", "abc"), Ordering::Less);
        assert_eq!(compare_names("abc", "ab"), Ordering::Greater);
        assert_eq!(compare_names("", ""), Ordering::Equal);
    }
}

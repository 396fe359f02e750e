//! Resource metadata: what is known about a resource `(resourceType,
//! resourceId)` beyond its numbers — the name people know it by, the node it
//! runs on, its cluster, status, template flag and tags.
//!
//! Collectors send what they know on every poll; the store compares it with
//! what it holds and writes only what changed, in a transaction of its own
//! on the writer thread. A poll that changes nothing costs no disk write.
//!
//! An update names only the fields it knows: an absent field keeps the
//! stored value, an empty one (`""`, `[]`) clears it.

use crate::error::{Error, Result, SqlContext};
use crate::model::{Point, check_name, check_resource_id};
use crate::writer::Writer;
use parking_lot::RwLock;
use rusqlite::{Connection, TransactionBehavior};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Longest accepted name, node, instance or status (bytes).
pub const MAX_TEXT: usize = 256;
/// Most tags per resource, and longest tag (bytes).
pub const MAX_TAGS: usize = 64;
pub const MAX_TAG: usize = 128;

/// What is known about one resource. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceMeta {
    /// The display name (a Proxmox guest's `name`, a host's hostname).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The node it runs on (a guest's current node; for local storage the
    /// node that has it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The collector instance (Proxmox cluster) it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The status as last reported (`running`, `stopped`, `online`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Whether it is a template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<bool>,
    /// Its tags (a Proxmox guest's `tags`, one per entry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

impl ResourceMeta {
    /// Whether nothing is known.
    pub fn is_empty(&self) -> bool {
        *self == ResourceMeta::default()
    }

    /// Checks every field; the message names the field at fault.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (field, value) in [
            ("name", &self.name),
            ("node", &self.node),
            ("instance", &self.instance),
            ("status", &self.status),
        ] {
            if let Some(v) = value {
                check_text(field, v, MAX_TEXT)?;
            }
        }
        if let Some(tags) = &self.tags {
            if tags.len() > MAX_TAGS {
                return Err(format!(
                    "tags: {} tags, at most {MAX_TAGS} allowed",
                    tags.len()
                ));
            }
            for tag in tags {
                if tag.is_empty() {
                    return Err("tags: a tag must not be empty".into());
                }
                check_text("tags", tag, MAX_TAG)?;
            }
        }
        Ok(())
    }

    /// `self` with `update` applied: a field present in `update` replaces
    /// this one, an empty one clears it.
    pub fn updated(&self, update: &ResourceMeta) -> ResourceMeta {
        let text = |old: &Option<String>, new: &Option<String>| match new {
            None => old.clone(),
            Some(v) if v.is_empty() => None,
            Some(v) => Some(v.clone()),
        };
        ResourceMeta {
            name: text(&self.name, &update.name),
            node: text(&self.node, &update.node),
            instance: text(&self.instance, &update.instance),
            status: text(&self.status, &update.status),
            template: update.template.or(self.template),
            tags: match &update.tags {
                None => self.tags.clone(),
                Some(t) if t.is_empty() => None,
                Some(t) => Some(t.clone()),
            },
        }
    }
}

fn check_text(field: &str, v: &str, max: usize) -> std::result::Result<(), String> {
    if v.len() > max {
        return Err(format!("{field}: {} bytes, at most {max} allowed", v.len()));
    }
    if let Some(c) = v.chars().find(|c| c.is_control()) {
        return Err(format!("{field}: control character {c:?} not allowed"));
    }
    Ok(())
}

/// A resource and (an update of) its metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    /// The resource type, as in its series' keys.
    pub resource_type: String,
    /// The resource id, as in its series' keys.
    pub resource_id: String,
    /// What is known about it (or the update to apply).
    #[serde(flatten)]
    pub meta: ResourceMeta,
}

impl Resource {
    /// A resource and its metadata (not validated: see [`Resource::validate`]).
    pub fn new(
        resource_type: impl Into<String>,
        resource_id: impl Into<String>,
        meta: ResourceMeta,
    ) -> Resource {
        Resource {
            resource_type: resource_type.into(),
            resource_id: resource_id.into(),
            meta,
        }
    }

    /// Checks the resource's names as a point's, and every field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        check_name("resourceType", &self.resource_type)?;
        check_resource_id(&self.resource_id)?;
        self.meta.validate()
    }

    /// A resource record of the write API (an entry of `resources`) or of a
    /// JSON Lines file (`{"resource": {...}}`): `resourceType`, `resourceId`
    /// and any of `name`, `node`, `instance`, `status` (strings), `template`
    /// (a boolean) and `tags` (a list of strings). The message names the
    /// field at fault.
    pub fn from_json(v: &Value) -> std::result::Result<Resource, String> {
        const FIELDS: [&str; 8] = [
            "resourceType",
            "resourceId",
            "name",
            "node",
            "instance",
            "status",
            "template",
            "tags",
        ];
        let obj = v
            .as_object()
            .ok_or_else(|| format!("expected a JSON object, got {}", kind(v)))?;
        if let Some(key) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(format!(
                "unknown field `{key}` (expected {})",
                FIELDS.join(", ")
            ));
        }
        let required = |name: &str| match obj.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(format!("{name}: must be a string, got {}", kind(other))),
            None => Err(format!("{name}: missing")),
        };
        let r = Resource {
            resource_type: required("resourceType")?,
            resource_id: required("resourceId")?,
            meta: ResourceMeta {
                name: optional_text(obj, "name")?,
                node: optional_text(obj, "node")?,
                instance: optional_text(obj, "instance")?,
                status: optional_text(obj, "status")?,
                template: match obj.get("template") {
                    None | Some(Value::Null) => None,
                    Some(Value::Bool(b)) => Some(*b),
                    Some(other) => {
                        return Err(format!(
                            "template: must be true or false, got {}",
                            kind(other)
                        ));
                    }
                },
                tags: match obj.get("tags") {
                    None | Some(Value::Null) => None,
                    Some(Value::Array(list)) => Some(
                        list.iter()
                            .map(|t| match t {
                                Value::String(s) => Ok(s.clone()),
                                other => Err(format!(
                                    "tags: every tag must be a string, got {}",
                                    kind(other)
                                )),
                            })
                            .collect::<std::result::Result<_, _>>()?,
                    ),
                    Some(other) => {
                        return Err(format!(
                            "tags: must be a list of strings, got {}",
                            kind(other)
                        ));
                    }
                },
            },
        };
        r.validate()?;
        Ok(r)
    }
}

fn optional_text(
    obj: &serde_json::Map<String, Value>,
    name: &str,
) -> std::result::Result<Option<String>, String> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("{name}: must be a string, got {}", kind(other))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A point object of the write API or a JSON Lines file, which may also
/// name its resource with `name` and `node`: the point, and the metadata
/// update those fields make (none when neither is given).
pub fn point_from_json(v: &Value) -> std::result::Result<(Point, Option<Resource>), String> {
    let Some(obj) = v
        .as_object()
        .filter(|o| o.contains_key("name") || o.contains_key("node"))
    else {
        return Ok((Point::from_json(v)?, None));
    };
    let name = optional_text(obj, "name")?;
    let node = optional_text(obj, "node")?;
    let mut rest = obj.clone();
    rest.remove("name");
    rest.remove("node");
    let point = Point::from_json(&Value::Object(rest))?;
    let meta = ResourceMeta {
        name,
        node,
        ..ResourceMeta::default()
    };
    meta.validate()?;
    let r =
        (!meta.is_empty()).then(|| Resource::new(&point.resource_type, &point.resource_id, meta));
    Ok((point, r))
}

/// Every resource's metadata: type -> id -> metadata.
pub type ResourceMap = BTreeMap<String, BTreeMap<String, ResourceMeta>>;

/// Reads the stored metadata (at open).
pub fn load(conn: &Connection) -> Result<ResourceMap> {
    let mut stmt = conn
        .prepare(
            "SELECT resource_type, resource_id, name, node, instance, status, template, tags FROM resources",
        )
        .ctx("read resources")?;
    let mut rows = stmt.query([]).ctx("read resources")?;
    let mut map = ResourceMap::new();
    while let Some(row) = rows.next().ctx("read resources")? {
        let tags: Option<String> = row.get(7).ctx("read resources")?;
        let tags = match tags {
            None => None,
            Some(json) => Some(serde_json::from_str::<Vec<String>>(&json).map_err(|e| {
                Error::io(
                    "database content",
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("resource tags are not a JSON list of strings: {e}"),
                    ),
                )
            })?),
        };
        let meta = ResourceMeta {
            name: row.get(2).ctx("read resources")?,
            node: row.get(3).ctx("read resources")?,
            instance: row.get(4).ctx("read resources")?,
            status: row.get(5).ctx("read resources")?,
            template: row
                .get::<_, Option<i64>>(6)
                .ctx("read resources")?
                .map(|t| t != 0),
            tags,
        };
        map.entry(row.get(0).ctx("read resources")?)
            .or_default()
            .insert(row.get(1).ctx("read resources")?, meta);
    }
    Ok(map)
}

/// The updates among `updates` that would change `map`, as the metadata to
/// store (the last update of a resource wins over earlier ones).
pub fn changes(map: &ResourceMap, updates: &[Resource]) -> Vec<(String, String, ResourceMeta)> {
    let mut next: BTreeMap<(&str, &str), ResourceMeta> = BTreeMap::new();
    for u in updates {
        let key = (u.resource_type.as_str(), u.resource_id.as_str());
        let current = match next.get(&key) {
            Some(m) => m.clone(),
            None => map
                .get(key.0)
                .and_then(|ids| ids.get(key.1))
                .cloned()
                .unwrap_or_default(),
        };
        next.insert(key, current.updated(&u.meta));
    }
    next.into_iter()
        .filter(|((t, id), meta)| {
            let stored = map.get(*t).and_then(|ids| ids.get(*id));
            match stored {
                Some(s) => s != meta,
                None => !meta.is_empty(),
            }
        })
        .map(|((t, id), meta)| (t.to_string(), id.to_string(), meta))
        .collect()
}

/// Writes `changed` (inside the caller's transaction): a resource left with
/// no metadata loses its row.
pub fn store(conn: &Connection, changed: &[(String, String, ResourceMeta)]) -> Result<()> {
    let mut upsert = conn
        .prepare_cached(
            "INSERT INTO resources (resource_type, resource_id, name, node, instance, status, template, tags)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (resource_type, resource_id) DO UPDATE SET
               name = excluded.name, node = excluded.node, instance = excluded.instance,
               status = excluded.status, template = excluded.template, tags = excluded.tags",
        )
        .ctx("prepare resource write")?;
    let mut delete = conn
        .prepare_cached("DELETE FROM resources WHERE resource_type = ?1 AND resource_id = ?2")
        .ctx("prepare resource delete")?;
    for (t, id, meta) in changed {
        if meta.is_empty() {
            delete.execute([t, id]).ctx("delete resource")?;
            continue;
        }
        let tags = meta
            .tags
            .as_ref()
            .map(|t| serde_json::to_string(t).expect("strings always encode"));
        upsert
            .execute(rusqlite::params![
                t,
                id,
                meta.name,
                meta.node,
                meta.instance,
                meta.status,
                meta.template.map(i64::from),
                tags
            ])
            .ctx("write resource")?;
    }
    Ok(())
}

/// Makes committed changes visible to readers.
pub fn publish(map: &mut ResourceMap, changed: Vec<(String, String, ResourceMeta)>) {
    for (t, id, meta) in changed {
        if meta.is_empty() {
            if let Some(ids) = map.get_mut(&t) {
                ids.remove(&id);
                if ids.is_empty() {
                    map.remove(&t);
                }
            }
        } else {
            map.entry(t).or_default().insert(id, meta);
        }
    }
}

impl Writer {
    /// Stores what `updates` change, in a transaction of its own, then
    /// publishes it. Only this thread changes `map`, so what it compares
    /// against is what is on disk.
    pub fn write_resources(
        &mut self,
        map: &RwLock<ResourceMap>,
        updates: &[Resource],
    ) -> Result<usize> {
        let changed = changes(&map.read(), updates);
        if changed.is_empty() {
            return Ok(0);
        }
        let tx = self
            .conn()
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("begin resource write")?;
        store(&tx, &changed)?;
        tx.commit().ctx("commit resource write")?;
        let n = changed.len();
        publish(&mut map.write(), changed);
        Ok(n)
    }

    /// Drops all metadata of one resource (its id was merged into another).
    pub fn forget_resource(
        &mut self,
        map: &RwLock<ResourceMap>,
        resource_type: &str,
        resource_id: &str,
    ) -> Result<()> {
        let known = map
            .read()
            .get(resource_type)
            .is_some_and(|ids| ids.contains_key(resource_id));
        if !known {
            return Ok(());
        }
        let gone = vec![(
            resource_type.to_string(),
            resource_id.to_string(),
            ResourceMeta::default(),
        )];
        let tx = self
            .conn()
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("begin resource write")?;
        store(&tx, &gone)?;
        tx.commit().ctx("commit resource write")?;
        publish(&mut map.write(), gone);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: Option<&str>, node: Option<&str>) -> ResourceMeta {
        ResourceMeta {
            name: name.map(str::to_string),
            node: node.map(str::to_string),
            ..ResourceMeta::default()
        }
    }

    #[test]
    fn absent_fields_keep_and_empty_ones_clear() {
        let stored = ResourceMeta {
            name: Some("web01".into()),
            node: Some("pve-a".into()),
            tags: Some(vec!["prod".into()]),
            template: Some(false),
            ..ResourceMeta::default()
        };
        let moved = stored.updated(&meta(None, Some("pve-b")));
        assert_eq!(moved.name.as_deref(), Some("web01"));
        assert_eq!(moved.node.as_deref(), Some("pve-b"));
        assert_eq!(moved.template, Some(false));
        let cleared = moved.updated(&ResourceMeta {
            name: Some(String::new()),
            tags: Some(vec![]),
            ..ResourceMeta::default()
        });
        assert_eq!(cleared.name, None);
        assert_eq!(cleared.tags, None);
        assert_eq!(cleared.node.as_deref(), Some("pve-b"));
    }

    #[test]
    fn only_real_changes_are_listed() {
        let mut map = ResourceMap::new();
        let r = |id: &str, m: ResourceMeta| Resource::new("vm", id, m);
        let first = changes(&map, &[r("pve1:101", meta(Some("web01"), Some("a")))]);
        assert_eq!(first.len(), 1);
        publish(&mut map, first);
        assert!(changes(&map, &[r("pve1:101", meta(Some("web01"), Some("a")))]).is_empty());
        assert!(changes(&map, &[r("pve1:101", meta(Some("web01"), None))]).is_empty());
        // Nothing known about a new resource is no change either.
        assert!(changes(&map, &[r("pve1:102", ResourceMeta::default())]).is_empty());
        // Two updates of one resource in a batch: both apply, in order.
        let two = changes(
            &map,
            &[
                r("pve1:101", meta(None, Some("b"))),
                r("pve1:101", meta(Some("web02"), None)),
            ],
        );
        assert_eq!(two.len(), 1);
        assert_eq!(two[0].2, meta(Some("web02"), Some("b")));
        // Clearing everything removes the resource.
        let gone = changes(
            &map,
            &[r(
                "pve1:101",
                ResourceMeta {
                    name: Some(String::new()),
                    node: Some(String::new()),
                    ..ResourceMeta::default()
                },
            )],
        );
        publish(&mut map, gone);
        assert!(map.is_empty());
    }

    #[test]
    fn fields_are_checked_by_name() {
        let ok = Resource::new("vm", "pve1:101", meta(Some("web01"), Some("pve-a")));
        assert_eq!(ok.validate(), Ok(()));
        let cases = [
            (
                Resource::new("v m", "x", ResourceMeta::default()),
                "resourceType",
            ),
            (
                Resource::new("vm", "", ResourceMeta::default()),
                "resourceId",
            ),
            (Resource::new("vm", "x", meta(Some("a\nb"), None)), "name"),
            (
                Resource::new("vm", "x", meta(None, Some(&"n".repeat(257)))),
                "node",
            ),
            (
                Resource::new(
                    "vm",
                    "x",
                    ResourceMeta {
                        tags: Some(vec![String::new()]),
                        ..ResourceMeta::default()
                    },
                ),
                "tags",
            ),
            (
                Resource::new(
                    "vm",
                    "x",
                    ResourceMeta {
                        tags: Some(vec!["t".into(); MAX_TAGS + 1]),
                        ..ResourceMeta::default()
                    },
                ),
                "tags",
            ),
        ];
        for (r, field) in cases {
            let err = r.validate().unwrap_err();
            assert!(err.starts_with(field), "{err}");
        }
    }

    #[test]
    fn records_from_json_name_their_fault() {
        let ok = serde_json::json!({"resourceType": "vm", "resourceId": "pve1:101",
            "name": "web01", "node": "pve-a", "template": false, "tags": ["prod"]});
        let r = Resource::from_json(&ok).unwrap();
        assert_eq!(r.meta.name.as_deref(), Some("web01"));
        assert_eq!(r.meta.tags, Some(vec!["prod".to_string()]));
        for (bad, needle) in [
            (
                serde_json::json!({"resourceType": "vm"}),
                "resourceId: missing",
            ),
            (
                serde_json::json!({"resourceType": "vm", "resourceId": 5}),
                "resourceId: must be a string",
            ),
            (
                serde_json::json!({"resourceType": "vm", "resourceId": "x", "name": 1}),
                "name: must be a string",
            ),
            (
                serde_json::json!({"resourceType": "vm", "resourceId": "x", "template": "yes"}),
                "template",
            ),
            (
                serde_json::json!({"resourceType": "vm", "resourceId": "x", "tags": "a;b"}),
                "tags",
            ),
            (
                serde_json::json!({"resourceType": "vm", "resourceId": "x", "tags": [1]}),
                "tags",
            ),
            (
                serde_json::json!({"resourceType": "vm", "resourceId": "x", "colour": "red"}),
                "colour",
            ),
            (serde_json::json!([1]), "object"),
        ] {
            let err = Resource::from_json(&bad).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn points_may_name_their_resource() {
        let plain = serde_json::json!({"resourceType": "vm", "resourceId": "pve1:101",
            "metric": "cpu", "value": 1, "timestamp": 1_700_000_000_000i64});
        assert_eq!(point_from_json(&plain).unwrap().1, None);
        let mut named = plain.clone();
        named["name"] = "web01".into();
        named["node"] = "pve-a".into();
        let (p, r) = point_from_json(&named).unwrap();
        assert_eq!(p.metric, "cpu");
        let r = r.unwrap();
        assert_eq!(
            (r.resource_type.as_str(), r.resource_id.as_str()),
            ("vm", "pve1:101")
        );
        assert_eq!(r.meta, meta(Some("web01"), Some("pve-a")));
        named["node"] = serde_json::json!(7);
        assert!(point_from_json(&named).unwrap_err().starts_with("node:"));
        named["node"] = "a\nb".into();
        assert!(point_from_json(&named).unwrap_err().starts_with("node:"));
        let mut extra = plain;
        extra["colour"] = "red".into();
        assert!(point_from_json(&extra).unwrap_err().contains("name, node"));
    }

    #[test]
    fn json_shape_is_flat_and_sparse() {
        let r = Resource::new(
            "vm",
            "pve1:101",
            ResourceMeta {
                name: Some("web01".into()),
                template: Some(false),
                tags: Some(vec!["prod".into()]),
                ..ResourceMeta::default()
            },
        );
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"resourceType": "vm", "resourceId": "pve1:101",
                "name": "web01", "template": false, "tags": ["prod"]})
        );
        let back: Resource = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    fn wal_size(dir: &std::path::Path) -> u64 {
        std::fs::metadata(dir.join("m.db-wal")).map_or(0, |m| m.len())
    }

    #[test]
    fn the_store_writes_only_changes_and_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::MetricsConfig {
            database_path: dir.path().join("m.db"),
            ..Default::default()
        };
        let store = crate::Store::open(config.clone()).unwrap();
        let web = |node: &str| {
            Resource::new(
                "vm",
                "pve1:101",
                ResourceMeta {
                    name: Some("web01".into()),
                    node: Some(node.into()),
                    instance: Some("pve1".into()),
                    status: Some("running".into()),
                    template: Some(false),
                    tags: Some(vec!["prod".into(), "web".into()]),
                },
            )
        };
        assert_eq!(store.write_resources(&[web("pve-a")]).unwrap(), 1);
        let after_first = wal_size(dir.path());
        assert!(after_first > 0);
        // The same poll again: nothing to write, and nothing written.
        for _ in 0..20 {
            assert_eq!(store.write_resources(&[web("pve-a")]).unwrap(), 0);
        }
        assert_eq!(wal_size(dir.path()), after_first);
        // A migration is a change.
        assert_eq!(store.write_resources(&[web("pve-b")]).unwrap(), 1);
        assert!(wal_size(dir.path()) > after_first);
        // A bad batch stores nothing, not even its good part.
        let bad = Resource::new("vm", "pve1:102", meta(Some("x\u{1}"), None));
        let err = store.write_resources(&[web("pve-c"), bad]).unwrap_err();
        assert!(err.is_invalid_input());
        assert!(err.to_string().contains("resource 1: name"), "{err}");
        assert_eq!(
            store.resource("vm", "pve1:101").unwrap().node.as_deref(),
            Some("pve-b")
        );
        store.close().unwrap();

        let store = crate::Store::open(config).unwrap();
        assert_eq!(store.resources(), vec![web("pve-b")]);
        assert_eq!(store.resource("vm", "pve1:999"), None);
        store.close().unwrap();
    }

    #[test]
    fn memory_only_stores_keep_metadata_too() {
        let store = crate::Store::open(crate::MetricsConfig {
            enabled: false,
            ..Default::default()
        })
        .unwrap();
        let r = Resource::new("node", "pve1:pve-a", meta(Some("pve-a"), None));
        assert_eq!(store.write_resources(std::slice::from_ref(&r)).unwrap(), 1);
        assert_eq!(store.resources(), vec![r]);
    }
}

//! Pulse's names for things, and ours: the resource ids every Pulse version
//! (v5.0 to v6.3) has written, mapped onto the collectors' ids, and the
//! resource type and metric aliases its front ends send.
//!
//! | Pulse id                         | ours                              |
//! |----------------------------------|-----------------------------------|
//! | guest `instance:node:vmid`       | `instance:vmid` (node as metadata) |
//! | node `instance-node`, `cluster-node` (v5), `scope-node` (v6) | `instance:node` |
//! | storage `instance-node-storage`, `node-storage` | `instance:node:storage` |
//! | shared storage `instance-cluster-storage` | `instance:storage`         |
//!
//! The hyphenated forms are ambiguous when instance or node names hold
//! hyphens themselves (`pve-a`, `local-lvm`). They are split where the file
//! says how: guest ids name their instance and node with colons, so the
//! pairs learnt from them (and from node ids they explain) decide how a
//! node or storage id splits. An id that still splits more than one way,
//! or not at all, is kept as it is and reported.

use crate::store::ResourceMeta;
use std::collections::{BTreeMap, BTreeSet};

/// The canonical type for one of Pulse's resource type names (v5.1 `docker`;
/// v6 `system-container`, `oci-container`, `app-container`, `docker-host`).
pub fn canonical_type(t: &str) -> &str {
    match t {
        "docker" | "app-container" => "dockerContainer",
        "system-container" | "oci-container" => "container",
        "docker-host" => "dockerHost",
        other => other,
    }
}

/// The names a resource of canonical type `t` may be stored under: `t`
/// itself first, then Pulse's aliases of it.
pub fn stored_types(t: &str) -> Vec<&str> {
    let aliases: &[&str] = match t {
        "dockerContainer" => &["docker", "app-container"],
        "container" => &["system-container", "oci-container"],
        "dockerHost" => &["docker-host"],
        _ => &[],
    };
    std::iter::once(t).chain(aliases.iter().copied()).collect()
}

/// The names canonical metric `m` may be stored under: itself, then
/// Pulse's (a storage's `usage`).
pub fn stored_metrics<'a>(resource_type: &str, m: &'a str) -> Vec<&'a str> {
    match (resource_type, m) {
        ("storage", "disk") => vec!["disk", "usage"],
        (_, m) => vec![m],
    }
}

/// The canonical metric name: Pulse stores a storage's used percent as
/// `usage` (and calls it `disk` only in its chart answer).
pub fn canonical_metric<'a>(resource_type: &str, metric: &'a str) -> &'a str {
    match (resource_type, metric) {
        ("storage", "usage") => "disk",
        (_, m) => m,
    }
}

/// How one Pulse id maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapping {
    /// Our id, and what the Pulse id says about the resource.
    Mapped(String, ResourceMeta),
    /// Not one of the schemes of its type: kept as it is.
    Unchanged,
    /// One of the hyphenated schemes, but it splits more than one way (or
    /// none): kept as it is, and reported.
    Ambiguous(String),
}

/// What the ids of one file say about its instances and nodes.
#[derive(Debug, Clone, Default)]
pub struct PulseIds {
    /// `--instance`: the collector instance every resource belongs to.
    instance: Option<String>,
    /// Pulse instance -> the nodes seen under it.
    nodes: BTreeMap<String, BTreeSet<String>>,
}

/// `instance:node:vmid` -> (instance, node, vmid).
fn guest_parts(id: &str) -> Option<(&str, &str, &str)> {
    let mut parts = id.rsplitn(3, ':');
    let vmid = parts.next()?;
    let node = parts.next()?;
    let instance = parts.next()?;
    let numeric = !vmid.is_empty() && vmid.bytes().all(|b| b.is_ascii_digit());
    (numeric && !node.is_empty() && !instance.is_empty()).then_some((instance, node, vmid))
}

impl PulseIds {
    /// Learns from every `(resourceType, resourceId)` of a file (types as
    /// Pulse wrote them); `instance` is `--instance`.
    pub fn learn<'a>(
        instance: Option<&str>,
        ids: impl IntoIterator<Item = (&'a str, &'a str)> + Clone,
    ) -> PulseIds {
        let mut me = PulseIds {
            instance: instance.map(str::to_string),
            nodes: BTreeMap::new(),
        };
        if let Some(i) = instance {
            me.nodes.entry(i.to_string()).or_default();
        }
        for (t, id) in ids.clone() {
            if matches!(canonical_type(t), "vm" | "container")
                && let Some((inst, node, _)) = guest_parts(id)
            {
                me.nodes
                    .entry(inst.to_string())
                    .or_default()
                    .insert(node.to_string());
            }
        }
        // Node ids that split one way name more nodes, which storage ids
        // need (a node with no guest).
        let learned: Vec<(String, String)> = ids
            .into_iter()
            .filter(|(t, _)| *t == "node")
            .filter_map(|(_, id)| me.node(id).map(|(p, n)| (p.to_string(), n.to_string())))
            .collect();
        for (p, n) in learned {
            me.nodes.entry(p).or_default().insert(n);
        }
        me
    }

    /// The instance our id carries for Pulse instance `p`.
    fn ours<'a>(&'a self, p: &'a str) -> &'a str {
        self.instance.as_deref().unwrap_or(p)
    }

    fn meta(&self, p: &str, name: Option<&str>, node: Option<&str>) -> ResourceMeta {
        ResourceMeta {
            name: name.map(str::to_string),
            node: node.map(str::to_string),
            instance: Some(self.ours(p).to_string()),
            ..ResourceMeta::default()
        }
    }

    /// `p-node` -> (p, node), if it splits exactly one way.
    fn node<'a>(&'a self, id: &'a str) -> Option<(&'a str, &'a str)> {
        let splits = |known_only: bool| -> Vec<(&'a str, &'a str)> {
            self.nodes
                .iter()
                .filter_map(|(p, nodes)| {
                    let rest = id.strip_prefix(p.as_str())?.strip_prefix('-')?;
                    (!rest.is_empty() && (!known_only || nodes.contains(rest)))
                        .then_some((p.as_str(), rest))
                })
                .collect()
        };
        let known = splits(true);
        if known.len() == 1 {
            return Some(known[0]);
        }
        if !known.is_empty() {
            return None;
        }
        let any = splits(false);
        if any.len() == 1 {
            return Some(any[0]);
        }
        if any.is_empty() && self.nodes.is_empty() {
            // Nothing to learn from: only an id with a single hyphen splits.
            let mut parts = id.split('-');
            if let (Some(p), Some(n), None) = (parts.next(), parts.next(), parts.next())
                && !p.is_empty()
                && !n.is_empty()
            {
                return Some((p, n));
            }
        }
        None
    }

    /// Storage id -> (p, node or None for shared, storage), if it splits
    /// exactly one way.
    fn storage<'a>(&'a self, id: &'a str) -> Option<(&'a str, Option<&'a str>, &'a str)> {
        let mut found: Vec<(&'a str, Option<&'a str>, &'a str)> = Vec::new();
        for (p, nodes) in &self.nodes {
            if let Some(rest) = id
                .strip_prefix(p.as_str())
                .and_then(|r| r.strip_prefix('-'))
            {
                if let Some(s) = rest.strip_prefix("cluster-").filter(|s| !s.is_empty()) {
                    found.push((p, None, s));
                }
                for n in nodes {
                    if let Some(s) = rest
                        .strip_prefix(n.as_str())
                        .and_then(|r| r.strip_prefix('-'))
                        .filter(|s| !s.is_empty())
                    {
                        found.push((p, Some(n), s));
                    }
                }
            }
            // `node-storage`: Pulse's form without the instance.
            for n in nodes {
                if let Some(s) = id
                    .strip_prefix(n.as_str())
                    .and_then(|r| r.strip_prefix('-'))
                    .filter(|s| !s.is_empty())
                {
                    found.push((p, Some(n), s));
                }
            }
        }
        found.sort();
        found.dedup();
        (found.len() == 1).then(|| found[0])
    }

    /// Maps one Pulse id (type already canonical).
    pub fn map(&self, resource_type: &str, id: &str) -> Mapping {
        match resource_type {
            "vm" | "container" => match guest_parts(id) {
                Some((p, node, vmid)) => Mapping::Mapped(
                    format!("{}:{vmid}", self.ours(p)),
                    self.meta(p, None, Some(node)),
                ),
                None => Mapping::Unchanged,
            },
            // Our own ids, or another program's, carry colons; Pulse's don't.
            "node" | "storage" if id.contains(':') || !id.contains('-') => Mapping::Unchanged,
            "node" => match self.node(id) {
                Some((p, node)) => Mapping::Mapped(
                    format!("{}:{node}", self.ours(p)),
                    self.meta(p, Some(node), None),
                ),
                None => Mapping::Ambiguous(
                    "instance-node id whose instance and node cannot be told apart".into(),
                ),
            },
            "storage" => match self.storage(id) {
                Some((p, Some(node), s)) => Mapping::Mapped(
                    format!("{}:{node}:{s}", self.ours(p)),
                    self.meta(p, Some(s), Some(node)),
                ),
                Some((p, None, s)) => {
                    Mapping::Mapped(format!("{}:{s}", self.ours(p)), self.meta(p, Some(s), None))
                }
                None => Mapping::Ambiguous(
                    "storage id whose instance, node and storage cannot be told apart".into(),
                ),
            },
            _ => Mapping::Unchanged,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped(m: Mapping) -> String {
        match m {
            Mapping::Mapped(id, _) => id,
            other => panic!("not mapped: {other:?}"),
        }
    }

    const FILE: [(&str, &str); 9] = [
        ("vm", "pve1:pve-a:101"),
        ("container", "pve1:pve-b:200"),
        ("vm", "homelab:node1:300"),
        ("node", "pve1-pve-a"),
        ("node", "pve1-pve-c"),
        ("node", "homelab-node1"),
        ("storage", "pve1-pve-a-local-lvm"),
        ("storage", "pve-c-local-zfs"),
        ("storage", "pve1-cluster-ceph-fs"),
    ];

    #[test]
    fn every_scheme_maps_with_what_the_file_teaches() {
        let ids = PulseIds::learn(None, FILE);
        assert_eq!(mapped(ids.map("vm", "pve1:pve-a:101")), "pve1:101");
        assert_eq!(mapped(ids.map("container", "pve1:pve-b:200")), "pve1:200");
        assert_eq!(mapped(ids.map("node", "pve1-pve-a")), "pve1:pve-a");
        // No guest on pve-c, but only one known instance prefixes it.
        assert_eq!(mapped(ids.map("node", "pve1-pve-c")), "pve1:pve-c");
        assert_eq!(mapped(ids.map("node", "homelab-node1")), "homelab:node1");
        assert_eq!(
            mapped(ids.map("storage", "pve1-pve-a-local-lvm")),
            "pve1:pve-a:local-lvm"
        );
        // `node-storage`, pve-c known from its node id.
        assert_eq!(
            mapped(ids.map("storage", "pve-c-local-zfs")),
            "pve1:pve-c:local-zfs"
        );
        assert_eq!(
            mapped(ids.map("storage", "pve1-cluster-ceph-fs")),
            "pve1:ceph-fs"
        );
        match ids.map("vm", "pve1:pve-a:101") {
            Mapping::Mapped(_, meta) => {
                assert_eq!(meta.node.as_deref(), Some("pve-a"));
                assert_eq!(meta.instance.as_deref(), Some("pve1"));
            }
            other => panic!("{other:?}"),
        }
        // Other schemes and ids of ours pass through.
        assert_eq!(ids.map("vm", "pve1:101"), Mapping::Unchanged);
        assert_eq!(ids.map("node", "pve1:pve-a"), Mapping::Unchanged);
        assert_eq!(ids.map("dockerHost", "a-b-c"), Mapping::Unchanged);
    }

    #[test]
    fn the_instance_option_names_the_collector_instance() {
        let ids = PulseIds::learn(Some("prod"), FILE);
        assert_eq!(mapped(ids.map("vm", "pve1:pve-a:101")), "prod:101");
        assert_eq!(mapped(ids.map("node", "pve1-pve-a")), "prod:pve-a");
        assert_eq!(
            mapped(ids.map("storage", "pve1-cluster-ceph-fs")),
            "prod:ceph-fs"
        );
        match ids.map("storage", "pve1-pve-a-local-lvm") {
            Mapping::Mapped(id, meta) => {
                assert_eq!(id, "prod:pve-a:local-lvm");
                assert_eq!(meta.instance.as_deref(), Some("prod"));
                assert_eq!(meta.name.as_deref(), Some("local-lvm"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ids_that_split_several_ways_are_kept_and_said_so() {
        // Instances `a` and `a-b` both prefix `a-b-c`.
        let ids = PulseIds::learn(
            None,
            [("vm", "a:x:1"), ("vm", "a-b:y:2"), ("node", "a-b-c")],
        );
        assert!(matches!(ids.map("node", "a-b-c"), Mapping::Ambiguous(_)));
        // Nothing to learn from and two hyphens.
        let ids = PulseIds::learn(None, [("node", "pve1-pve-a")]);
        assert!(matches!(
            ids.map("node", "pve1-pve-a"),
            Mapping::Ambiguous(_)
        ));
        let ids = PulseIds::learn(None, [("node", "pve1-node1")]);
        assert_eq!(mapped(ids.map("node", "pve1-node1")), "pve1:node1");
        // Storage of an unknown node.
        let ids = PulseIds::learn(None, FILE);
        assert!(matches!(
            ids.map("storage", "pve1-pve-z-local"),
            Mapping::Ambiguous(_)
        ));
    }

    #[test]
    fn aliases_become_canonical_names() {
        assert_eq!(canonical_type("docker"), "dockerContainer");
        assert_eq!(canonical_type("app-container"), "dockerContainer");
        assert_eq!(canonical_type("oci-container"), "container");
        assert_eq!(canonical_type("system-container"), "container");
        assert_eq!(canonical_type("docker-host"), "dockerHost");
        assert_eq!(canonical_type("vm"), "vm");
        assert_eq!(canonical_metric("storage", "usage"), "disk");
        assert_eq!(canonical_metric("vm", "usage"), "usage");
    }
}

//! The one-time migration of guest ids from `{instance}:{node}:{vmid}` to
//! `{instance}:{vmid}`, run at open on files written before it.
//!
//! A VMID is unique in a cluster; with the node in the id, a migrated guest
//! started a new series on every node it ran on. Each `vm`/`container`
//! series of that shape is merged into the series of its new id (the series
//! of one VMID on several nodes become one), and the node it was seen on
//! last (the most recently created of its series) becomes the resource's
//! `node` metadata. Runs once: a later write of an old-style id (by a
//! script) is not merged again, though it still lands in the merged series
//! if its old series was merged.

use super::merge::{merge_chunks, routes, stored_id};
use super::resources::{self, Resource, ResourceMeta};
use super::schema::{meta_get, meta_set};
use super::writer::insert_series;
use crate::error::{Result, SqlContext};
use crate::model::SeriesKey;
use rusqlite::Connection;
use std::collections::BTreeMap;

/// `meta` key recording that the migration ran.
const DONE: &str = "guest_ids_by_vmid";

/// The guest types whose ids carry a VMID.
const GUEST_TYPES: [&str; 2] = ["vm", "container"];

/// `{instance}:{node}:{vmid}` -> (`{instance}:{vmid}`, instance, node).
/// Node names cannot hold a colon (they are host names); an instance name
/// might, so the id is split from the right.
pub fn split_guest_id(id: &str) -> Option<(String, &str, &str)> {
    let mut parts = id.rsplitn(3, ':');
    let vmid = parts.next()?;
    let node = parts.next()?;
    let instance = parts.next()?;
    let numeric = !vmid.is_empty() && vmid.bytes().all(|b| b.is_ascii_digit());
    if !numeric || node.is_empty() || instance.is_empty() {
        return None;
    }
    Some((format!("{instance}:{vmid}"), instance, node))
}

/// Runs the migration if this file has not had it; returns the series
/// merged. One transaction: all or nothing.
pub fn migrate(conn: &Connection) -> Result<usize> {
    if meta_get(conn, DONE, 0)? != 0 {
        return Ok(0);
    }
    conn.execute_batch("BEGIN IMMEDIATE")
        .ctx("begin guest id migration")?;
    match plan_and_merge(conn) {
        Ok(n) => {
            conn.execute_batch("COMMIT")
                .ctx("commit guest id migration")?;
            if n > 0 {
                tracing::info!("merged {n} guest series into ids without their node");
            }
            Ok(n)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

fn plan_and_merge(conn: &Connection) -> Result<usize> {
    let mut rows: Vec<(SeriesKey, Option<u32>)> = Vec::new();
    {
        let mut stmt = conn
            .prepare(
                "SELECT resource_type, resource_id, metric, merged_into FROM series ORDER BY id",
            )
            .ctx("read series")?;
        let mut q = stmt.query([]).ctx("read series")?;
        while let Some(r) = q.next().ctx("read series")? {
            let key = SeriesKey::new(
                r.get::<_, String>(0).ctx("read series")?,
                r.get::<_, String>(1).ctx("read series")?,
                r.get::<_, String>(2).ctx("read series")?,
            );
            let merged: Option<i64> = r.get(3).ctx("read series")?;
            rows.push((key, merged.map(|m| m as u32)));
        }
    }
    let route = routes(&rows.iter().map(|(_, m)| *m).collect::<Vec<_>>())?;
    let mut pairs: BTreeMap<u32, u32> = BTreeMap::new();
    let mut new_series: Vec<SeriesKey> = Vec::new();
    let mut new_ids: BTreeMap<SeriesKey, u32> = BTreeMap::new();
    // (type, new id) -> (series id it was last seen under, instance, node).
    let mut last_seen: BTreeMap<(String, String), (u32, String, String)> = BTreeMap::new();
    for (sid, (key, merged)) in rows.iter().enumerate() {
        let sid = sid as u32;
        if merged.is_some() || !GUEST_TYPES.contains(&key.resource_type.as_str()) {
            continue;
        }
        let Some((new_id, instance, node)) = split_guest_id(&key.resource_id) else {
            continue;
        };
        let new_key = SeriesKey::new(&key.resource_type, &new_id, &key.metric);
        let target = match stored_id(conn, &new_key)? {
            Some(t) => route[t as usize],
            None => *new_ids.entry(new_key.clone()).or_insert_with(|| {
                new_series.push(new_key.clone());
                (rows.len() + new_series.len() - 1) as u32
            }),
        };
        pairs.insert(sid, target);
        let seen = last_seen
            .entry((key.resource_type.clone(), new_id))
            .or_insert_with(|| (sid, instance.to_string(), node.to_string()));
        if sid >= seen.0 {
            *seen = (sid, instance.to_string(), node.to_string());
        }
    }
    if pairs.is_empty() {
        meta_set(conn, DONE, 1)?;
        return Ok(0);
    }
    insert_series(conn, rows.len(), &new_series)?;
    let counts = crate::tiers::restore_counts(conn)?;
    let deltas = merge_chunks(conn, &pairs)?;
    crate::tiers::save_counts(conn, crate::tiers::add_counts(counts, deltas))?;
    let updates: Vec<Resource> = last_seen
        .into_iter()
        .map(|((t, id), (_, instance, node))| {
            Resource::new(
                t,
                id,
                ResourceMeta {
                    node: Some(node),
                    instance: Some(instance),
                    ..ResourceMeta::default()
                },
            )
        })
        .collect();
    let changed = resources::changes(&resources::load(conn)?, &updates);
    resources::store(conn, &changed)?;
    meta_set(conn, DONE, 1)?;
    Ok(pairs.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_ids_split_from_the_right() {
        assert_eq!(
            split_guest_id("pve1:node1:101"),
            Some(("pve1:101".into(), "pve1", "node1"))
        );
        assert_eq!(
            split_guest_id("a:b:node-2:7"),
            Some(("a:b:7".into(), "a:b", "node-2"))
        );
        for id in [
            "pve1:101",
            "pve1:node1:web",
            "pve1::101",
            ":node1:101",
            "pve1:node1:",
            "101",
        ] {
            assert_eq!(split_guest_id(id), None, "{id}");
        }
    }
}

//! The raw log as a ring of page-sized slots.
//!
//! Each flush appends its points to the current slot and rewrites that slot
//! in place: one page per flush in the common case, no page allocation, no
//! B-tree rebalancing, no freelist churn. A slot is reused once every point
//! in it has been rolled up and pruned (its `live` count is zero). The ring
//! grows by inserting slots when none is free and shrinks at pruning when
//! many are free.

use super::codec::{LogPoint, Slot};
use std::collections::BTreeSet;

/// One slot row to write.
pub struct SlotWrite {
    pub id: u32,
    /// The row does not exist yet (INSERT rather than in-place UPDATE).
    pub insert: bool,
    pub bytes: Vec<u8>,
}

/// What a flush will do to the ring, applied only once its transaction
/// commits (so a failed flush leaves the ring as it was).
pub struct Plan {
    pub writes: Vec<SlotWrite>,
    /// Slot of each point, in the order given.
    pub slot_of: Vec<u32>,
    current: (u32, Slot),
    taken_free: Vec<u32>,
    taken_vacant: Vec<u32>,
    grew_to: usize,
}

#[derive(Debug, Default)]
pub struct Ring {
    /// Points still needed, per slot id (index). Meaningless for vacant ids.
    live: Vec<u32>,
    /// Existing rows that hold nothing needed.
    free: BTreeSet<u32>,
    /// Ids below `live.len()` without a row (deleted when the ring shrank).
    vacant: BTreeSet<u32>,
    /// The slot being filled and its content.
    current: Option<(u32, Slot)>,
}

impl Ring {
    /// Rebuilds the ring at open: `slots` are (id, live count) of every row;
    /// `current` is the newest slot if it still has room.
    pub fn restore(slots: &[(u32, u32)], current: Option<(u32, Slot)>) -> Ring {
        let len = slots
            .iter()
            .map(|&(id, _)| id as usize + 1)
            .max()
            .unwrap_or(0);
        let mut ring = Ring {
            live: vec![0; len],
            ..Ring::default()
        };
        let mut present = vec![false; len];
        for &(id, live) in slots {
            ring.live[id as usize] = live;
            present[id as usize] = true;
        }
        for (id, p) in present.iter().enumerate() {
            if !p {
                ring.vacant.insert(id as u32);
            }
        }
        ring.current = current;
        for &(id, live) in slots {
            if live == 0 && ring.current.as_ref().map(|c| c.0) != Some(id) {
                ring.free.insert(id);
            }
        }
        ring
    }

    /// Lays `points` out as one batch `seq`.
    pub fn plan(&self, seq: u64, points: &[LogPoint]) -> Plan {
        let mut plan = Plan {
            writes: Vec::new(),
            slot_of: Vec::with_capacity(points.len()),
            current: (0, Slot::new()),
            taken_free: Vec::new(),
            taken_vacant: Vec::new(),
            grew_to: self.live.len(),
        };
        let mut free = self.free.iter();
        let mut vacant = self.vacant.iter();
        let (mut id, mut slot, mut insert) = match &self.current {
            Some((id, slot)) => (*id, slot.clone(), false),
            None => next_slot(&mut free, &mut vacant, &mut plan),
        };
        assert!(!points.is_empty(), "an empty flush has nothing to lay out");
        let mut dirty = false;
        let mut rest = points;
        loop {
            let n = slot.append(seq, rest);
            if n > 0 {
                dirty = true;
                plan.slot_of.extend(std::iter::repeat_n(id, n));
                rest = &rest[n..];
            }
            if rest.is_empty() {
                break;
            }
            assert!(
                n > 0 || !slot.is_empty(),
                "an empty slot always takes a point"
            );
            if dirty {
                plan.writes.push(SlotWrite {
                    id,
                    insert,
                    bytes: slot.bytes().to_vec(),
                });
            }
            (id, slot, insert) = next_slot(&mut free, &mut vacant, &mut plan);
            dirty = false;
        }
        if dirty {
            plan.writes.push(SlotWrite {
                id,
                insert,
                bytes: slot.bytes().to_vec(),
            });
        }
        plan.current = (id, slot);
        plan
    }

    /// Applies a plan whose transaction committed. Every point written
    /// starts out needed; callers `release` the ones that are not.
    pub fn commit(&mut self, plan: Plan) {
        for id in &plan.taken_free {
            self.free.remove(id);
        }
        for id in &plan.taken_vacant {
            self.vacant.remove(id);
        }
        if plan.grew_to > self.live.len() {
            self.live.resize(plan.grew_to, 0);
        }
        for &id in &plan.slot_of {
            self.live[id as usize] += 1;
        }
        let old = self.current.as_ref().map(|c| c.0);
        self.current = Some(plan.current);
        let new = self.current.as_ref().map(|c| c.0);
        let left: Vec<u32> = plan
            .writes
            .iter()
            .map(|w| w.id)
            .chain(old)
            .filter(|&id| Some(id) != new)
            .collect();
        for id in left {
            if self.live[id as usize] == 0 {
                self.free.insert(id);
            }
        }
    }

    /// A point of `slot` is no longer needed.
    pub fn release(&mut self, slot: u32) {
        let live = &mut self.live[slot as usize];
        debug_assert!(*live > 0, "slot {slot} released more than it holds");
        *live = live.saturating_sub(1);
        if *live == 0 && self.current.as_ref().map(|c| c.0) != Some(slot) {
            self.free.insert(slot);
        }
    }

    /// Free rows beyond what the ring needs to absorb a burst: the highest
    /// ids, to be deleted so their pages can be reclaimed.
    pub fn surplus(&self) -> Vec<u32> {
        let rows = self.live.len() - self.vacant.len();
        let busy = rows - self.free.len();
        let keep = (busy / 2).max(64);
        self.free
            .iter()
            .rev()
            .take(self.free.len().saturating_sub(keep))
            .copied()
            .collect()
    }

    /// Rows in `ids` were deleted.
    pub fn deleted(&mut self, ids: &[u32]) {
        for id in ids {
            self.free.remove(id);
            self.vacant.insert(*id);
        }
        while let Some(&last) = self.vacant.last() {
            if last as usize + 1 != self.live.len() {
                break;
            }
            self.vacant.remove(&last);
            self.live.pop();
        }
    }

    /// (rows, free rows) for statistics.
    pub fn usage(&self) -> (usize, usize) {
        (self.live.len() - self.vacant.len(), self.free.len())
    }
}

fn next_slot(
    free: &mut std::collections::btree_set::Iter<'_, u32>,
    vacant: &mut std::collections::btree_set::Iter<'_, u32>,
    plan: &mut Plan,
) -> (u32, Slot, bool) {
    if let Some(&id) = free.next() {
        plan.taken_free.push(id);
        return (id, Slot::new(), false);
    }
    if let Some(&id) = vacant.next() {
        plan.taken_vacant.push(id);
        return (id, Slot::new(), true);
    }
    let id = plan.grew_to as u32;
    plan.grew_to += 1;
    (id, Slot::new(), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(n: usize, ts: i64) -> Vec<LogPoint> {
        (0..n)
            .map(|i| LogPoint {
                sid: i as u32,
                ts,
                value: i as f64,
            })
            .collect()
    }

    #[test]
    fn small_flushes_share_one_slot_and_big_ones_spill() {
        let mut ring = Ring::default();
        let plan = ring.plan(1, &pts(10, 100));
        assert_eq!(plan.writes.len(), 1);
        assert!(plan.writes[0].insert);
        ring.commit(plan);
        let plan = ring.plan(2, &pts(10, 105));
        assert_eq!(plan.writes.len(), 1);
        assert!(
            !plan.writes[0].insert,
            "the current slot is rewritten in place"
        );
        assert_eq!(plan.writes[0].id, 0);
        ring.commit(plan);
        let plan = ring.plan(3, &pts(1000, 110));
        assert!(plan.writes.len() >= 3);
        assert_eq!(plan.slot_of.len(), 1000);
        ring.commit(plan);
    }

    #[test]
    fn released_slots_are_reused_before_growing() {
        let mut ring = Ring::default();
        let plan = ring.plan(1, &pts(800, 1));
        let slots = plan.slot_of.clone();
        ring.commit(plan);
        let first = slots[0];
        for &s in slots.iter().filter(|&&s| s == first) {
            ring.release(s);
        }
        assert_eq!(ring.usage().1, 1);
        let plan = ring.plan(2, &pts(800, 2));
        assert!(plan.writes.iter().any(|w| w.id == first && !w.insert));
    }
}

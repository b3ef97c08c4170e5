//! Where a Redis Cluster's re-drive stands in its hash slots: which part
//! of each shard's slots it looks at next, and what each part's re-drive
//! indexes held when last looked at (`redrive_index`).

use std::collections::HashMap;
use std::sync::Mutex;

/// Parts a shard's slots are looked at in on a cluster, one a pass: an
/// empty index still costs a look, and 16,384 of them every pass of every
/// instance cost Redis more than the re-drive needs. A due mark then waits
/// up to this many passes (8 s at the default `redrive_every_ms`, beside a
/// grace of 30 s or more).
pub(crate) const SLOT_PARTS: usize = 8;

/// Most entries either map of [`SlotScan`] holds: room for every part of
/// the most shards a topology may have (4,096) under two shard counts at
/// once (a reload that changed `shards`). Reaching it forgets everything:
/// the rotation starts again at part 0 and the gauge counts from scratch.
const MAX_TRACKED: usize = 2 * 4096 * SLOT_PARTS;

/// Users in some re-drive indexes and their oldest entry (unix ms).
type Indexed = (u64, Option<i64>);
/// A part of a shard's slots: (shards, shard, part).
type SlotPart = (u32, u32, usize);

/// Where a cluster's re-drive stands in its slots.
#[derive(Default)]
pub(crate) struct SlotScan {
    /// Per (shards, shard): the part of its slots looked at next.
    next: Mutex<HashMap<(u32, u32), usize>>,
    /// Per (shards, shard, part): users in its slot indexes and their
    /// oldest entry, when last looked at.
    seen: Mutex<HashMap<SlotPart, Indexed>>,
}

impl SlotScan {
    /// The part of `shard`'s slots to look at now; the next call gets the
    /// next one.
    pub(super) fn take_part(&self, shards: u32, shard: u32) -> usize {
        let mut next = self.next.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if next.len() >= MAX_TRACKED && !next.contains_key(&(shards, shard)) {
            next.clear();
        }
        let part = next.entry((shards, shard)).or_insert(0);
        let now = *part;
        *part = (now + 1) % SLOT_PARTS;
        now
    }

    pub(super) fn record(&self, shards: u32, shard: u32, part: usize, users: u64, oldest: Option<i64>) {
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() >= MAX_TRACKED && !seen.contains_key(&(shards, shard, part)) {
            seen.clear();
        }
        seen.insert((shards, shard, part), (users, oldest));
    }

    /// What the slot indexes of `shards` shards held when last looked at.
    pub(super) fn seen(&self, shards: u32) -> Vec<Indexed> {
        let seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.iter().filter(|((of, _, _), _)| *of == shards).map(|(_, &counted)| counted).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_go_round_and_what_is_kept_stays_bounded() {
        let scan = SlotScan::default();
        let parts: Vec<usize> = (0..SLOT_PARTS + 1).map(|_| scan.take_part(16, 3)).collect();
        assert_eq!(parts, (0..SLOT_PARTS).chain([0]).collect::<Vec<_>>());
        scan.record(16, 3, 0, 5, Some(100));
        scan.record(16, 4, 0, 2, None);
        scan.record(8, 3, 0, 7, Some(50));
        let mut seen = scan.seen(16);
        seen.sort();
        assert_eq!(seen, [(2, None), (5, Some(100))]);
        // Shard counts that change without end never grow either map
        // past its bound.
        for shards in 1..=(MAX_TRACKED as u32 + 10) {
            scan.take_part(shards, 0);
            scan.record(shards, 0, 0, 1, None);
        }
        assert!(scan.next.lock().unwrap().len() <= MAX_TRACKED);
        assert!(scan.seen.lock().unwrap().len() <= MAX_TRACKED);
    }
}

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
        let part = next.entry((shards, shard)).or_insert(0);
        let now = *part;
        *part = (now + 1) % SLOT_PARTS;
        now
    }

    pub(super) fn record(&self, shards: u32, shard: u32, part: usize, users: u64, oldest: Option<i64>) {
        self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert((shards, shard, part), (users, oldest));
    }

    /// What the slot indexes of `shards` shards held when last looked at.
    pub(super) fn seen(&self, shards: u32) -> Vec<Indexed> {
        let seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.iter().filter(|((of, _, _), _)| *of == shards).map(|(_, &counted)| counted).collect()
    }
}

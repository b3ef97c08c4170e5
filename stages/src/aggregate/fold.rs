//! The last-write-wins fold of the aggregate stage, per uid shard.
//!
//! In `ids` mode a pending item is one 24-byte entry (uid, oid, and the
//! business's number in this fold packed with view_at in one word) in a `hashbrown` table: with
//! the table's control byte, 25 bytes per bucket, so between about 29 and
//! 57 bytes per pending item at any load factor the table allows. In `full`
//! mode the whole record is kept.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;
use model::{keys, record::item_key, Op, Record};

/// Bits of a packed word that hold view_at (unix ms up to year 10889).
const VIEW_BITS: u32 = 48;
const VIEW_MASK: u64 = (1 << VIEW_BITS) - 1;

/// One pending item of `ids` mode.
#[derive(Debug, Clone, Copy)]
struct PendingRef {
    uid: u64,
    oid: u64,
    /// business id << 48 | view_at.
    packed: u64,
}

impl PendingRef {
    fn business(&self) -> u16 {
        (self.packed >> VIEW_BITS) as u16
    }
    fn view_at(&self) -> i64 {
        (self.packed & VIEW_MASK) as i64
    }
}

#[derive(Default)]
struct Shard {
    refs: HashTable<PendingRef>,
    /// `full` mode, or an item the compact entry cannot hold.
    records: HashMap<(u64, String), Record>,
}

impl Shard {
    fn len(&self) -> usize {
        self.refs.len() + self.records.len()
    }
}

/// Folds `record` into `shard`'s whole records (a newer or equal view
/// wins); whether it is a new pending item.
fn fold_whole(shard: &mut Shard, record: Record) -> bool {
    match shard.records.entry((record.uid, record.item_key())) {
        std::collections::hash_map::Entry::Occupied(mut entry) => {
            if record.view_at >= entry.get().view_at {
                entry.insert(record);
            }
            false
        }
        std::collections::hash_map::Entry::Vacant(entry) => {
            entry.insert(record);
            true
        }
    }
}

/// Pending items of every shard.
pub struct Fold {
    shards: Vec<Shard>,
    pending: usize,
    keep_records: bool,
    /// Each business seen, numbered in the order first seen (not the
    /// registry's ids: those may change by a reload while entries are
    /// pending, and these never do).
    business_numbers: HashMap<String, u16>,
    business_names: Vec<Arc<str>>,
    hasher: hashbrown::DefaultHashBuilder,
}

impl Fold {
    /// A fold over `shards` shards; `keep_records` for the `full` payload.
    pub fn new(shards: u32, keep_records: bool) -> Self {
        Fold {
            shards: (0..shards.max(1)).map(|_| Shard::default()).collect(),
            pending: 0,
            keep_records,
            business_numbers: HashMap::new(),
            business_names: Vec::new(),
            hasher: hashbrown::DefaultHashBuilder::default(),
        }
    }

    /// The number of `business` in this fold, given on first sight; `None`
    /// past 65,536 businesses (such a report is kept whole).
    fn business_number(&mut self, business: &str) -> Option<u16> {
        if let Some(&number) = self.business_numbers.get(business) {
            return Some(number);
        }
        let number = u16::try_from(self.business_names.len()).ok()?;
        self.business_names.push(Arc::from(business));
        self.business_numbers.insert(business.to_owned(), number);
        Some(number)
    }

    /// Number of shards.
    pub fn shard_count(&self) -> u32 {
        self.shards.len() as u32
    }

    /// Pending items over all shards.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Pending items of `shard`.
    pub fn shard_len(&self, shard: u32) -> usize {
        self.shards.get(shard as usize).map_or(0, Shard::len)
    }

    /// The shard holding the most pending items.
    pub fn largest_shard(&self) -> Option<u32> {
        (0..self.shard_count()).filter(|&s| self.shard_len(s) > 0).max_by_key(|&s| self.shard_len(s))
    }

    /// Folds one report in; returns its shard. A report not newer than
    /// the pending one for the same item is dropped (it lost already).
    pub fn upsert(&mut self, record: Record) -> u32 {
        let shard_index = keys::shard_of(record.uid, self.shard_count());
        let compact = (!self.keep_records && (0..=VIEW_MASK as i64).contains(&record.view_at))
            .then(|| self.business_number(&record.business))
            .flatten();
        let shard = &mut self.shards[shard_index as usize];
        match compact {
            Some(business) => {
                let packed = u64::from(business) << VIEW_BITS | record.view_at as u64;
                let (uid, oid) = (record.uid, record.oid);
                let hash = self.hasher.hash_one((uid, oid, business));
                let same = |entry: &PendingRef| entry.uid == uid && entry.oid == oid && entry.business() == business;
                match shard.refs.find_mut(hash, same) {
                    Some(entry) if record.view_at >= entry.view_at() => entry.packed = packed,
                    Some(_) => {}
                    None => {
                        let hasher = &self.hasher;
                        shard.refs.insert_unique(hash, PendingRef { uid, oid, packed }, |e| hasher.hash_one((e.uid, e.oid, e.business())));
                        self.pending += 1;
                    }
                }
            }
            None => self.pending += usize::from(fold_whole(shard, record)),
        }
        shard_index
    }

    /// Folds one report in as a whole record even in `ids` mode: its item
    /// is no longer in Redis for the job to re-read (the write that recorded
    /// it trimmed it at once). It replaces an older compact entry of the
    /// same item, and loses to a newer one.
    pub fn upsert_whole(&mut self, record: Record) -> u32 {
        let shard_index = keys::shard_of(record.uid, self.shard_count());
        let shard = &mut self.shards[shard_index as usize];
        if let Some(&business) = self.business_numbers.get(&record.business) {
            let (uid, oid) = (record.uid, record.oid);
            let hash = self.hasher.hash_one((uid, oid, business));
            let same = |entry: &PendingRef| entry.uid == uid && entry.oid == oid && entry.business() == business;
            if let Ok(entry) = shard.refs.find_entry(hash, same) {
                if entry.get().view_at() > record.view_at {
                    return shard_index;
                }
                entry.remove();
                self.pending -= 1;
            }
        }
        self.pending += usize::from(fold_whole(shard, record));
        shard_index
    }

    /// Takes every pending item of `shard` as ops (`UpsertRef` in `ids`
    /// mode, `Upsert` otherwise), leaving the shard empty. Its tables go
    /// with them: a drained table keeps its allocation, and shards flushed
    /// one after another would each hold their busiest window's buckets
    /// with nothing in them (the bytes per pending item rose to 130–145 in
    /// the production regime). Growing again costs a move of each entry
    /// per doubling, far less than the window's Redis and Kafka work.
    pub fn take(&mut self, shard: u32) -> Vec<Op> {
        let Some(state) = self.shards.get_mut(shard as usize) else { return Vec::new() };
        let Shard { refs, records } = std::mem::take(state);
        let mut ops = Vec::with_capacity(refs.len() + records.len());
        for entry in refs {
            let name = self.business_names.get(usize::from(entry.business())).map_or("?", |name| name);
            ops.push(Op::UpsertRef { uid: entry.uid, item: item_key(name, entry.oid), view_at: entry.view_at() });
        }
        ops.extend(records.into_values().map(Op::Upsert));
        self.pending -= ops.len();
        ops
    }

    /// Bytes the pending items occupy: table allocations, plus the heap
    /// parts of whole records.
    pub fn memory_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                let records = shard.records.capacity() * (std::mem::size_of::<((u64, String), Record)>() + 1);
                let heap: usize = shard
                    .records
                    .iter()
                    .map(|((_, item), r)| item.capacity() + r.business.capacity() + r.device.as_ref().map_or(0, String::capacity))
                    .sum();
                shard.refs.allocation_size() + records + heap
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(uid: u64, business: &str, oid: u64, view_at: i64) -> Record {
        Record { uid, business: business.into(), oid, sub_id: None, progress: view_at, duration: None, device: None, view_at }
    }

    fn fold(keep_records: bool) -> Fold {
        Fold::new(4, keep_records)
    }

    #[test]
    fn latest_view_per_item_wins_in_both_modes() {
        for keep_records in [false, true] {
            let mut fold = fold(keep_records);
            let shard = fold.upsert(report(7, "archive", 1, 100));
            fold.upsert(report(7, "archive", 1, 300));
            fold.upsert(report(7, "archive", 1, 200));
            fold.upsert(report(7, "pgc", 1, 50));
            assert_eq!(fold.pending(), 2);
            let ops = fold.take(shard);
            let mut views: Vec<(String, i64)> = ops
                .iter()
                .map(|op| match op {
                    Op::UpsertRef { item, view_at, .. } => (item.clone(), *view_at),
                    Op::Upsert(r) => (r.item_key(), r.view_at),
                    other => panic!("{other:?}"),
                })
                .collect();
            views.sort();
            assert_eq!(views, vec![("archive:1".to_owned(), 300), ("pgc:1".to_owned(), 50)]);
            assert!(ops.iter().all(|op| matches!(op, Op::UpsertRef { .. }) != keep_records));
            assert_eq!(fold.pending(), 0);
        }
    }

    #[test]
    fn a_record_trimmed_at_once_travels_whole_in_ids_mode() {
        let mut fold = fold(false);
        let shard = fold.upsert(report(7, "archive", 1, 10));
        // A newer view, trimmed by its own write: replaces the compact
        // entry with the whole record.
        fold.upsert_whole(report(7, "archive", 1, 20));
        // An older one loses to what is pending.
        fold.upsert_whole(report(7, "archive", 2, 5));
        // (A later compact report of an item held whole waits beside it;
        // the job's window keeps the newer of the two.)
        fold.upsert(report(7, "archive", 2, 6));
        fold.upsert_whole(report(7, "archive", 2, 4));
        assert_eq!(fold.pending(), 3);
        let mut ops: Vec<String> = fold
            .take(shard)
            .iter()
            .map(|op| match op {
                Op::Upsert(record) => format!("whole {}@{}", record.oid, record.view_at),
                Op::UpsertRef { item, view_at, .. } => format!("ref {item}@{view_at}"),
                other => format!("{other:?}"),
            })
            .collect();
        ops.sort();
        assert_eq!(ops, vec!["ref archive:2@6", "whole 1@20", "whole 2@5"]);
        assert_eq!(fold.pending(), 0);
    }

    #[test]
    fn shards_follow_the_shared_shard_function() {
        let mut fold = fold(false);
        for uid in 1..=100 {
            assert_eq!(fold.upsert(report(uid, "archive", 1, 1)), keys::shard_of(uid, 4));
        }
        let total: usize = (0..4).map(|s| fold.shard_len(s)).sum();
        assert_eq!(total, 100);
        let largest = fold.largest_shard().unwrap();
        assert!((0..4).all(|s| fold.shard_len(s) <= fold.shard_len(largest)));
    }

    #[test]
    fn ids_mode_stays_under_64_bytes_per_pending_item() {
        // Measured at every size from 1,000 to 200,000 pending items, so a
        // table just after growing (its emptiest) is included.
        let mut fold = Fold::new(64, false);
        let mut worst: f64 = 0.0;
        for uid in 1..=200_000u64 {
            fold.upsert(report(uid, "archive", uid * 7, 1_700_000_000_000));
            if uid >= 1000 && uid % 97 == 0 {
                worst = worst.max(fold.memory_bytes() as f64 / fold.pending() as f64);
            }
        }
        assert!(worst <= 64.0, "worst {worst:.1} bytes per pending item");
    }

    #[test]
    fn a_taken_shard_holds_no_memory_so_flushing_shards_in_turn_stays_under_64_bytes() {
        // The production regime: every user once per window, the shards
        // flushed one after another while the others fill.
        let shards = 16;
        let mut fold = Fold::new(shards, false);
        let mut worst: f64 = 0.0;
        let mut uid = 0u64;
        for window in 0..3 {
            for shard in 0..shards {
                for _ in 0..20_000 {
                    uid += 1;
                    fold.upsert(report(uid % 100_000, "archive", uid, 1_700_000_000_000 + window));
                }
                let taken = fold.take(shard);
                assert!(taken.iter().all(|op| keys::shard_of(op.uid(), shards) == shard));
                assert_eq!(fold.shard_len(shard), 0);
                if fold.pending() >= 1000 {
                    worst = worst.max(fold.memory_bytes() as f64 / fold.pending() as f64);
                }
            }
        }
        assert!(worst <= 64.0, "worst {worst:.1} bytes per pending item");
    }
}

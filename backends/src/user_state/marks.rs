//! The marks as data: which mark field an op settles, what a delivered
//! flush carried of each user, and the ops a re-drive ships for the marks
//! it claimed. `marks.lua` (beside this file) says how the marks are kept
//! in Redis.

use std::collections::BTreeMap;

use model::{codec, Op};

/// Mark field of a clear.
const CLEAR: &str = "~clear";
/// Mark field of a recording switch.
const SWITCH: &str = "~switch";
/// Prefix of a delete's mark field (then the item).
const DELETE: &str = "~del|";
/// Prefix of a business clear's mark field (then the business).
const CLEAR_BUSINESS: &str = "~clear|";

/// One mark a delivered flush settles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carried {
    /// The mark field (`marks.lua`).
    pub field: String,
    /// The version carried: the view_at, or the mutation's effective time.
    pub version: i64,
    /// The flush carried the whole record or the mutation (not a reference
    /// the job must still re-read from Redis).
    pub whole: bool,
}

/// The mark field and version an op settles.
fn carried(op: &Op) -> Carried {
    let (field, version, whole) = match op {
        Op::Upsert(record) => (record.item_key(), record.view_at, true),
        Op::UpsertRef { item, view_at, .. } => (item.clone(), *view_at, false),
        Op::Delete { item, at, .. } => (format!("{DELETE}{item}"), *at, true),
        Op::Clear { business: None, at, .. } => (CLEAR.to_owned(), *at, true),
        Op::Clear { business: Some(business), at, .. } => (format!("{CLEAR_BUSINESS}{business}"), *at, true),
        Op::SetRecording { at, .. } => (SWITCH.to_owned(), *at, true),
    };
    Carried { field, version, whole }
}

/// What a flush carried, per user (ascending uid).
pub fn carried_by_user(ops: &[Op]) -> Vec<(u64, Vec<Carried>)> {
    let mut users: BTreeMap<u64, Vec<Carried>> = BTreeMap::new();
    for op in ops {
        users.entry(op.uid()).or_default().push(carried(op));
    }
    users.into_iter().collect()
}

/// One mark a re-drive claimed, as `claim.lua` answers it.
#[derive(Debug, Clone)]
pub struct ClaimedMark {
    /// The mark field.
    pub field: String,
    /// Its version.
    pub version: i64,
    /// The record (an item), the paused flag (`~switch`), empty (a clear
    /// or delete); `None` when the record is gone (expired).
    pub payload: Option<Vec<u8>>,
}

/// What one re-drive pass over a shard found.
#[derive(Debug, Default)]
pub struct Redriven {
    /// Users looked at (due in the index).
    pub examined: usize,
    /// The ops to ship again, per user in the order the aggregate needs
    /// (clear, business clears, deletes, switch, then records).
    pub ops: Vec<Op>,
    /// Users whose marks were claimed.
    pub users: usize,
    /// Marks claimed.
    pub items: usize,
    /// Marks whose record was gone (expired): dropped, nothing to ship.
    pub missing: usize,
    /// Marks whose record could not be decoded (uid, field, why): not
    /// shipped, and the store drops their marks.
    pub undecodable: Vec<(u64, String, String)>,
}

impl Redriven {
    /// Adds one user's claimed marks.
    pub fn add_user(&mut self, uid: u64, marks: Vec<ClaimedMark>) {
        if marks.is_empty() {
            return;
        }
        self.users += 1;
        self.items += marks.len();
        let mut clears = Vec::new();
        let mut first = Vec::new();
        let mut records = Vec::new();
        for mark in marks {
            let Some(payload) = mark.payload else {
                self.missing += 1;
                continue;
            };
            let at = mark.version;
            if mark.field == CLEAR {
                clears.insert(0, Op::Clear { uid, business: None, at });
            } else if let Some(business) = mark.field.strip_prefix(CLEAR_BUSINESS) {
                clears.push(Op::Clear { uid, business: Some(business.to_owned()), at });
            } else if mark.field == SWITCH {
                first.push(Op::SetRecording { uid, paused: payload == b"1", at });
            } else if let Some(item) = mark.field.strip_prefix(DELETE) {
                first.push(Op::Delete { uid, item: item.to_owned(), at });
            } else {
                match codec::decode_record(&payload) {
                    Ok(record) => records.push(Op::Upsert(record)),
                    Err(error) => self.undecodable.push((uid, mark.field, error.to_string())),
                }
            }
        }
        self.ops.extend(clears);
        self.ops.extend(first);
        self.ops.extend(records);
    }
}

/// How many users have pending marks, and how old the oldest is.
#[derive(Debug, Clone, Copy, Default)]
pub struct PendingStats {
    /// Users in the re-drive index (they may have pending marks).
    pub users: u64,
    /// Unix ms of the index's oldest entry.
    pub oldest_ms: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(uid: u64, oid: u64, view_at: i64) -> model::Record {
        model::Record { uid, business: "archive".into(), oid, sub_id: None, progress: 1, duration: None, device: None, view_at }
    }

    #[test]
    fn a_flush_settles_one_field_per_op_per_user() {
        let ops = vec![
            Op::UpsertRef { uid: 2, item: "archive:1".into(), view_at: 5 },
            Op::Upsert(record(1, 3, 7)),
            Op::Delete { uid: 2, item: "archive:9".into(), at: 8 },
            Op::Clear { uid: 1, business: None, at: 9 },
            Op::SetRecording { uid: 1, paused: true, at: 10 },
            Op::Clear { uid: 2, business: Some("pgc".into()), at: 11 },
        ];
        let users = carried_by_user(&ops);
        assert_eq!(users.iter().map(|(uid, marks)| (*uid, marks.len())).collect::<Vec<_>>(), vec![(1, 3), (2, 3)]);
        let fields: Vec<(&str, i64, bool)> = users[1].1.iter().map(|c| (c.field.as_str(), c.version, c.whole)).collect();
        assert_eq!(fields, vec![("archive:1", 5, false), ("~del|archive:9", 8, true), ("~clear|pgc", 11, true)]);
        assert_eq!(users[0].1[1], Carried { field: "~clear".into(), version: 9, whole: true });
    }

    #[test]
    fn a_claim_becomes_ops_with_mutations_first() {
        let mut redriven = Redriven::default();
        let mark = |field: &str, version, payload: Option<&[u8]>| ClaimedMark {
            field: field.into(),
            version,
            payload: payload.map(<[u8]>::to_vec),
        };
        let encoded = codec::encode_record(&record(4, 1, 20));
        redriven.add_user(
            4,
            vec![
                mark("archive:1", 20, Some(&encoded)),
                mark("archive:2", 21, None),
                mark("~switch", 11, Some(b"1")),
                mark("~clear", 12, Some(b"")),
                mark("~del|archive:3", 13, Some(b"")),
                mark("~clear|pgc", 14, Some(b"")),
            ],
        );
        assert_eq!((redriven.users, redriven.items, redriven.missing), (1, 6, 1));
        let kinds: Vec<String> = redriven
            .ops
            .iter()
            .map(|op| match op {
                Op::Clear { business: None, at, .. } => format!("clear@{at}"),
                Op::Clear { business: Some(business), at, .. } => format!("clear {business}@{at}"),
                Op::SetRecording { paused, at, .. } => format!("paused={paused}@{at}"),
                Op::Delete { item, at, .. } => format!("delete {item}@{at}"),
                Op::Upsert(record) => format!("upsert {}@{}", record.item_key(), record.view_at),
                Op::UpsertRef { .. } => "ref".into(),
            })
            .collect();
        assert_eq!(kinds, vec!["clear@12", "clear pgc@14", "paused=true@11", "delete archive:3@13", "upsert archive:1@20"]);
    }
}

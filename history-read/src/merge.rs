//! Which HBase cells a cache-aside read may show: decoded records that
//! Redis does not hold (Redis wins for an item it holds) and that no
//! realtime delete or clear marker hides (the job may not have written the
//! delete to HBase yet). Pure, so the rules are tested without stores.

use std::collections::{HashMap, HashSet};

use model::{codec, Record};

use backends::history_table::RecordCell;

use crate::events::UndecodableRecord;

/// A record that may go in a page, with its sort key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its view_at (the sort key, then the item).
    pub view_at: i64,
    /// Item key `business:oid`.
    pub item: String,
    /// The record.
    pub record: Record,
}

/// What an HBase row offers a page.
#[derive(Debug, Default)]
pub struct HbaseFound {
    /// Visible records Redis lacks.
    pub candidates: Vec<Candidate>,
    /// Every visible HBase item is also in Redis.
    pub all_in_redis: bool,
}

/// A stored record, or `None` (counted and logged) when it cannot be read.
pub(crate) fn decode(uid: u64, item: &str, bytes: &[u8]) -> Option<Record> {
    match codec::decode_record(bytes) {
        Ok(record) => Some(record),
        Err(error) => {
            UndecodableRecord { uid, item, error: &error }.emit();
            None
        }
    }
}

/// The visible records of `cells` (a read of the user's records) that
/// Redis does not hold.
pub fn hbase_candidates(
    uid: u64,
    cells: Vec<RecordCell>,
    markers: &HashMap<String, i64>,
    cleared_at: i64,
    in_redis: &HashSet<String>,
) -> HbaseFound {
    let mut found = HbaseFound { candidates: Vec::new(), all_in_redis: true };
    for cell in cells {
        let item = cell.item.as_str();
        let Some(record) = decode(uid, item, &cell.value) else { continue };
        let view_at = record.view_at;
        let hidden = view_at <= cleared_at || markers.get(item).is_some_and(|&at| view_at <= at);
        if hidden {
            continue;
        }
        if in_redis.contains(item) {
            continue;
        }
        found.all_in_redis = false;
        found.candidates.push(Candidate { view_at, item: item.to_owned(), record });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(oid: u64, view_at: i64) -> RecordCell {
        let record = Record { uid: 7, business: "archive".into(), oid, sub_id: None, progress: 1, duration: None, device: None, view_at };
        RecordCell { item: format!("archive:{oid}"), view_at, value: model::codec::encode_record(&record) }
    }

    #[test]
    fn redis_wins_and_markers_hide() {
        let cells = vec![cell(1, 10), cell(2, 20), cell(3, 30), cell(4, 40), cell(5, 50)];
        let markers: HashMap<String, i64> = [("archive:2".to_owned(), 20), ("archive:3".to_owned(), 29)].into();
        let in_redis: HashSet<String> = ["archive:5".to_owned()].into();
        let found = hbase_candidates(7, cells, &markers, 10, &in_redis);
        let items: Vec<&str> = found.candidates.iter().map(|c| c.item.as_str()).collect();
        // 1: cleared (10 <= 10); 2: deleted at its view; 3: viewed after
        // its delete; 4: visible; 5: Redis holds it.
        assert_eq!(items, vec!["archive:3", "archive:4"]);
        assert!(!found.all_in_redis);
    }

    #[test]
    fn a_row_redis_fully_holds_is_noted() {
        let in_redis: HashSet<String> = ["archive:1".to_owned()].into();
        let found = hbase_candidates(7, vec![cell(1, 10)], &HashMap::new(), -1, &in_redis);
        assert!(found.candidates.is_empty() && found.all_in_redis);
        let garbage = RecordCell { item: "archive:9".into(), view_at: 1, value: vec![0xff, 0xff] };
        assert!(hbase_candidates(7, vec![garbage], &HashMap::new(), -1, &HashSet::new()).all_in_redis);
    }
}

//! The history table's row layout, the one place that knows it:
//! - one row per user, keyed `model::keys::hbase_row` (4 hex chars of
//!   md5(uid), then the decimal uid);
//! - family `r`: one column per item (`r:<business>:<oid>`), its value the
//!   encoded record, its cell timestamp the view's `view_at`;
//! - family `m`: the recording switch (`m:paused`, `1` or `0`, at the
//!   switch's time).
//!
//! Writers build a user's changes with [`RowMutation`]'s domain methods
//! (a record, an item's delete, a clear of all or of one business, the
//! switch); readers name what they read with [`Wanted`] and take
//! [`RecordCell`]s and the switch back out of the cells; the retention
//! sweep asks for a row's deletes past retention ([`expired_deletes`]); a
//! rejected row turns back into ops ([`RowMutation::as_ops`]).

use std::collections::{BTreeSet, HashMap};

use model::{codec, keys, Op};

use super::mutation::{Column, RowMutation, TableCell};

/// Family of history records.
pub const RECORDS_FAMILY: &str = "r";
/// Family of per-user meta (the recording switch).
pub const META_FAMILY: &str = "m";
/// The recording switch's column.
const PAUSED: &str = "m:paused";

/// The column of `item`'s record.
fn record_column(item: &str) -> Column {
    format!("{RECORDS_FAMILY}:{item}")
}

/// The item of a record column (`None`: not a record).
fn item_of(column: &str) -> Option<&str> {
    column.strip_prefix(RECORDS_FAMILY)?.strip_prefix(':')
}

/// What a read of a user's row asks for.
#[derive(Debug, Clone, Copy)]
pub enum Wanted<'a> {
    /// Every record.
    Records,
    /// The records of these items.
    Items(&'a [String]),
    /// The recording switch.
    Paused,
    /// Every record and the switch.
    Everything,
    /// The records of these items and the switch.
    ItemsAndPaused(&'a [String]),
}

impl Wanted<'_> {
    /// The columns to read (`family` or `family:qualifier`).
    pub fn columns(&self) -> Vec<Column> {
        match self {
            Wanted::Records => vec![RECORDS_FAMILY.to_owned()],
            Wanted::Items(items) => items.iter().map(|item| record_column(item)).collect(),
            Wanted::Paused => vec![PAUSED.to_owned()],
            Wanted::Everything => vec![RECORDS_FAMILY.to_owned(), META_FAMILY.to_owned()],
            Wanted::ItemsAndPaused(items) => items.iter().map(|item| record_column(item)).chain([PAUSED.to_owned()]).collect(),
        }
    }
}

/// A record a read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordCell {
    /// Its item key `business:oid`.
    pub item: String,
    /// Its view's time (the cell timestamp).
    pub view_at: i64,
    /// The encoded record.
    pub value: Vec<u8>,
}

/// The records among `cells`, in their order.
pub fn records(cells: Vec<TableCell>) -> Vec<RecordCell> {
    cells
        .into_iter()
        .filter_map(|cell| {
            let item = item_of(&cell.column)?.to_owned();
            Some(RecordCell { item, view_at: cell.timestamp, value: cell.value })
        })
        .collect()
}

/// The recording switch among `cells` (`None`: never set).
pub fn paused(cells: &[TableCell]) -> Option<bool> {
    cells.iter().find(|cell| cell.column == PAUSED).map(|cell| cell.value == b"1")
}

impl RowMutation {
    /// An empty mutation of `uid`'s row.
    pub fn of_user(uid: u64) -> Self {
        RowMutation { row: keys::hbase_row(uid), ..RowMutation::default() }
    }

    /// Writes `item`'s record (`value`, encoded) viewed at `view_at`.
    pub fn put_record(&mut self, item: &str, view_at: i64, value: Vec<u8>) {
        self.puts.push((record_column(item), view_at, value));
    }

    /// Hides `item`'s records viewed at or before `at`.
    pub fn delete_record(&mut self, item: &str, at: i64) {
        self.column_deletes.push((record_column(item), at));
    }

    /// Hides every record viewed at or before `at` (a family delete, not a
    /// row delete: the recording switch survives it).
    pub fn clear_records(&mut self, at: i64) {
        self.column_deletes.push((RECORDS_FAMILY.to_owned(), at));
    }

    /// Hides `business`'s records viewed at or before `at`: HBase has no
    /// prefix delete, so a column delete for each of the business's items
    /// the row holds (`held`, from a read of its records) or this mutation
    /// writes.
    pub fn clear_business(&mut self, business: &str, at: i64, held: &[RecordCell]) {
        let prefix = format!("{business}:");
        let written = self.puts.iter().filter_map(|(column, _, _)| item_of(column).map(str::to_owned));
        let items: BTreeSet<String> = held.iter().map(|cell| cell.item.clone()).chain(written).collect();
        for item in items.iter().filter(|item| item.starts_with(&prefix)) {
            self.delete_record(item, at);
        }
    }

    /// Sets the recording switch at `at`.
    pub fn set_paused(&mut self, paused: bool, at: i64) {
        self.puts.push((PAUSED.to_owned(), at, vec![u8::from(paused) + b'0']));
    }

    /// The view times of the records it writes.
    pub fn record_times(&self) -> impl Iterator<Item = i64> + '_ {
        self.puts.iter().filter(|(column, _, _)| item_of(column).is_some()).map(|(_, at, _)| *at)
    }

    /// The user whose row it changes (`None`: not a history row key).
    pub fn uid(&self) -> Option<u64> {
        keys::uid_of_hbase_row(&self.row)
    }

    /// The mutation as merge ops again (for a dead-letter topic); a record
    /// that does not decode is left out.
    pub fn as_ops(&self) -> Vec<Op> {
        let uid = self.uid().unwrap_or(0);
        let mut ops = Vec::new();
        for (column, at) in &self.column_deletes {
            match item_of(column) {
                Some(item) => ops.push(Op::Delete { uid, item: item.to_owned(), at: *at }),
                None => ops.push(Op::Clear { uid, business: None, at: *at }),
            }
        }
        for (column, at, value) in &self.puts {
            match item_of(column) {
                Some(_) => ops.extend(codec::decode_record(value).ok().map(Op::Upsert)),
                None => ops.push(Op::SetRecording { uid, paused: value.as_slice() == b"1", at: *at }),
            }
        }
        ops
    }
}

/// The deletes that hide `row`'s records (`cells`, a read of its records)
/// past their business's retention at `now`, or `None` when none is: each
/// a column delete at the business's cutoff, the newest instant past
/// retention, so it hides what `model::past_retention` says is past it and
/// a newer view of the item stays.
pub fn expired_deletes(row: &str, cells: &[TableCell], retention_ms: &HashMap<String, i64>, now: i64) -> Option<RowMutation> {
    let column_deletes: Vec<(Column, i64)> = cells
        .iter()
        .filter_map(|cell| {
            let item = item_of(&cell.column)?;
            let business = item.split_once(':').map_or(item, |(business, _)| business);
            let retention = *retention_ms.get(business)?;
            let cutoff = now.saturating_sub(retention) - 1;
            model::past_retention(cell.timestamp, retention, now).then(|| (cell.column.clone(), cutoff))
        })
        .collect();
    (!column_deletes.is_empty()).then(|| RowMutation { row: row.to_owned(), puts: Vec::new(), column_deletes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(uid: u64, business: &str, oid: u64, view_at: i64) -> model::Record {
        model::Record { uid, business: business.into(), oid, sub_id: None, progress: 3, duration: None, device: None, view_at }
    }

    #[test]
    fn a_mutation_turns_back_into_the_ops_it_was_built_from() {
        let mut row = RowMutation::of_user(42);
        let upsert = record(42, "archive", 7, 1_000);
        row.put_record("archive:7", 1_000, codec::encode_record(&upsert));
        row.delete_record("pgc:1", 900);
        row.clear_records(800);
        row.set_paused(true, 1_100);
        assert_eq!(row.uid(), Some(42));
        assert_eq!(row.record_times().collect::<Vec<_>>(), vec![1_000]);
        assert_eq!(
            row.as_ops(),
            vec![
                Op::Delete { uid: 42, item: "pgc:1".into(), at: 900 },
                Op::Clear { uid: 42, business: None, at: 800 },
                Op::Upsert(upsert),
                Op::SetRecording { uid: 42, paused: true, at: 1_100 },
            ]
        );
    }

    #[test]
    fn a_business_clear_deletes_its_items_held_or_written_and_no_other() {
        let mut row = RowMutation::of_user(1);
        row.put_record("pgc:5", 10, Vec::new());
        row.put_record("archive:5", 10, Vec::new());
        let held = records(vec![
            TableCell { column: "r:pgc:1".into(), timestamp: 5, value: Vec::new() },
            TableCell { column: "r:pgcx:1".into(), timestamp: 5, value: Vec::new() },
            TableCell { column: "m:paused".into(), timestamp: 5, value: b"1".to_vec() },
        ]);
        row.clear_business("pgc", 20, &held);
        assert_eq!(row.column_deletes, vec![("r:pgc:1".to_owned(), 20), ("r:pgc:5".to_owned(), 20)]);
    }

    #[test]
    fn reads_take_records_and_the_switch_out_of_cells() {
        let cells = vec![
            TableCell { column: "r:archive:1".into(), timestamp: 5, value: b"x".to_vec() },
            TableCell { column: "m:paused".into(), timestamp: 6, value: b"0".to_vec() },
        ];
        assert_eq!(paused(&cells), Some(false));
        assert_eq!(records(cells), vec![RecordCell { item: "archive:1".into(), view_at: 5, value: b"x".to_vec() }]);
        assert_eq!(Wanted::ItemsAndPaused(&["archive:1".to_owned()]).columns(), vec!["r:archive:1", "m:paused"]);
    }

    #[test]
    fn only_records_past_their_business_retention_are_deleted_at_its_cutoff() {
        let day = 86_400_000;
        let retention = HashMap::from([("archive".to_owned(), day)]);
        let now = 10 * day;
        let cells = vec![
            TableCell { column: "r:archive:1".into(), timestamp: now - 2 * day, value: Vec::new() },
            TableCell { column: "r:archive:2".into(), timestamp: now - 1_000, value: Vec::new() },
            TableCell { column: "r:unknown:3".into(), timestamp: 1, value: Vec::new() },
        ];
        let deletes = expired_deletes("row", &cells, &retention, now).unwrap();
        assert_eq!(deletes.column_deletes, vec![("r:archive:1".to_owned(), now - day - 1)]);
        assert!(expired_deletes("row", &cells[1..], &retention, now).is_none());
    }
}

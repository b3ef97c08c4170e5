//! The history table with HBase's timestamp semantics, and its embedded
//! on-disk implementation (fjall, an LSM tree), used by `--embedded` and,
//! later, behind the project's HBase-Thrift-compatible server.
//!
//! Semantics kept from HBase, for the latest version of a cell: the highest
//! timestamp wins (an equal one replaces); a column delete at T hides the
//! column's cells with timestamp <= T, a row delete at T hides every cell
//! of the row with timestamp <= T, including cells written later with an
//! older timestamp. Storing only the newest cell per column plus the two
//! kinds of marker gives exactly that answer, because a marker that hides
//! the newest cell hides every older one too.

use std::path::Path;

use fjall::{Config, Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};

/// A column: `family:qualifier`, e.g. `r:archive:7`.
pub type Column = String;

/// One visible cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    /// `family:qualifier`.
    pub column: Column,
    /// Cell timestamp (view_at for records).
    pub timestamp: i64,
    /// The value.
    pub value: Vec<u8>,
}

/// Changes to one row, applied together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowMutation {
    /// Row key.
    pub row: String,
    /// Cells to write: column, timestamp, value.
    pub puts: Vec<(Column, i64, Vec<u8>)>,
    /// Column deletes: column, timestamp (hides cells at or before it).
    pub column_deletes: Vec<(Column, i64)>,
    /// Row delete at this timestamp, if any.
    pub row_delete: Option<i64>,
}

impl RowMutation {
    /// Cells this mutation writes.
    pub fn cell_count(&self) -> usize {
        self.puts.len()
    }
}

/// A table operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("history table: {0}")]
pub struct TableError(pub String);

impl From<fjall::Error> for TableError {
    fn from(error: fjall::Error) -> Self {
        TableError(error.to_string())
    }
}

/// The embedded table: three fjall partitions in one keyspace on disk.
pub struct EmbeddedTable {
    keyspace: Keyspace,
    /// row \0 column -> timestamp (8 bytes, big endian) ++ value.
    cells: PartitionHandle,
    /// row \0 column -> timestamp of the newest column delete.
    column_markers: PartitionHandle,
    /// row -> timestamp of the newest row delete.
    row_markers: PartitionHandle,
}

fn cell_key(row: &str, column: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(row.len() + 1 + column.len());
    key.extend_from_slice(row.as_bytes());
    key.push(0);
    key.extend_from_slice(column.as_bytes());
    key
}

fn timestamp_of(bytes: &[u8]) -> Option<i64> {
    bytes.get(..8).and_then(|head| head.try_into().ok()).map(i64::from_be_bytes)
}

impl EmbeddedTable {
    /// Opens (or creates) the table in `dir`; what was written before a
    /// restart is there after it.
    pub fn open(dir: &Path) -> Result<Self, TableError> {
        std::fs::create_dir_all(dir).map_err(|error| TableError(format!("cannot create {}: {error}", dir.display())))?;
        let keyspace = Config::new(dir).open()?;
        let cells = keyspace.open_partition("cells", PartitionCreateOptions::default())?;
        let column_markers = keyspace.open_partition("column_markers", PartitionCreateOptions::default())?;
        let row_markers = keyspace.open_partition("row_markers", PartitionCreateOptions::default())?;
        Ok(EmbeddedTable { keyspace, cells, column_markers, row_markers })
    }

    fn marker(&self, partition: &PartitionHandle, key: &[u8]) -> Result<Option<i64>, TableError> {
        Ok(partition.get(key)?.and_then(|bytes| timestamp_of(&bytes)))
    }

    /// Applies `mutations` atomically and durably (synced to disk before it
    /// returns, so a caller may commit what they came from).
    pub fn mutate_rows(&self, mutations: &[RowMutation]) -> Result<(), TableError> {
        let mut batch = self.keyspace.batch();
        for mutation in mutations {
            // Markers only ever move forward; visibility is decided on read.
            if let Some(at) = mutation.row_delete {
                if self.marker(&self.row_markers, mutation.row.as_bytes())?.is_none_or(|marker| at > marker) {
                    batch.insert(&self.row_markers, mutation.row.as_bytes(), at.to_be_bytes());
                }
            }
            for (column, at) in &mutation.column_deletes {
                let key = cell_key(&mutation.row, column);
                if self.marker(&self.column_markers, &key)?.is_none_or(|marker| *at > marker) {
                    batch.insert(&self.column_markers, key, at.to_be_bytes());
                }
            }
            for (column, timestamp, value) in &mutation.puts {
                let key = cell_key(&mutation.row, column);
                let newest = self.cells.get(&key)?.and_then(|bytes| timestamp_of(&bytes));
                // Keep the newest version; an equal timestamp replaces.
                if newest.is_none_or(|newest| *timestamp >= newest) {
                    let mut stored = Vec::with_capacity(8 + value.len());
                    stored.extend_from_slice(&timestamp.to_be_bytes());
                    stored.extend_from_slice(value);
                    batch.insert(&self.cells, key, stored);
                }
            }
        }
        batch.commit()?;
        self.keyspace.persist(PersistMode::SyncAll)?;
        Ok(())
    }

    /// The visible cells of `row` (newest version of each column not hidden
    /// by a delete marker), in column order.
    pub fn get_row(&self, row: &str) -> Result<Vec<Cell>, TableError> {
        let row_marker = self.marker(&self.row_markers, row.as_bytes())?;
        let mut prefix = row.as_bytes().to_vec();
        prefix.push(0);
        let mut cells = Vec::new();
        for entry in self.cells.prefix(&prefix) {
            let (key, stored) = entry?;
            let Some(timestamp) = timestamp_of(&stored) else { continue };
            let column_marker = self.marker(&self.column_markers, &key)?;
            let hidden = row_marker.is_some_and(|at| timestamp <= at) || column_marker.is_some_and(|at| timestamp <= at);
            if !hidden {
                let column = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
                cells.push(Cell { column, timestamp, value: stored[8..].to_vec() });
            }
        }
        Ok(cells)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(row: &str, column: &str, timestamp: i64, value: &str) -> RowMutation {
        RowMutation { row: row.into(), puts: vec![(column.into(), timestamp, value.as_bytes().to_vec())], ..RowMutation::default() }
    }

    fn visible(table: &EmbeddedTable, row: &str) -> Vec<(String, i64, String)> {
        table.get_row(row).unwrap().into_iter().map(|c| (c.column, c.timestamp, String::from_utf8(c.value).unwrap())).collect()
    }

    #[test]
    fn highest_timestamp_wins_whatever_the_arrival_order() {
        let dir = tempfile::tempdir().unwrap();
        let table = EmbeddedTable::open(dir.path()).unwrap();
        table.mutate_rows(&[put("u1", "r:a", 20, "new")]).unwrap();
        table.mutate_rows(&[put("u1", "r:a", 10, "old")]).unwrap();
        assert_eq!(visible(&table, "u1"), vec![("r:a".into(), 20, "new".into())]);
        table.mutate_rows(&[put("u1", "r:a", 20, "replay")]).unwrap();
        assert_eq!(
            visible(&table, "u1"),
            vec![("r:a".into(), 20, "replay".into())],
            "an equal timestamp replaces (replays are idempotent)"
        );
    }

    #[test]
    fn delete_markers_hide_older_cells_even_written_later() {
        let dir = tempfile::tempdir().unwrap();
        let table = EmbeddedTable::open(dir.path()).unwrap();
        table.mutate_rows(&[put("u1", "r:a", 10, "a"), put("u1", "r:b", 10, "b")]).unwrap();
        table.mutate_rows(&[RowMutation { row: "u1".into(), column_deletes: vec![("r:a".into(), 15)], ..RowMutation::default() }]).unwrap();
        table.mutate_rows(&[put("u1", "r:a", 12, "late")]).unwrap();
        assert_eq!(visible(&table, "u1"), vec![("r:b".into(), 10, "b".into())]);
        table.mutate_rows(&[put("u1", "r:a", 16, "again")]).unwrap();
        assert_eq!(visible(&table, "u1").len(), 2, "a newer view after the delete is visible");
        table.mutate_rows(&[RowMutation { row: "u1".into(), row_delete: Some(100), ..RowMutation::default() }]).unwrap();
        table.mutate_rows(&[put("u1", "r:c", 99, "late")]).unwrap();
        assert!(visible(&table, "u1").is_empty(), "a clear hides everything at or before it");
        table.mutate_rows(&[put("u1", "r:c", 101, "after")]).unwrap();
        assert_eq!(visible(&table, "u1"), vec![("r:c".into(), 101, "after".into())]);
    }

    #[test]
    fn survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let table = EmbeddedTable::open(dir.path()).unwrap();
            table.mutate_rows(&[put("u9", "r:x", 5, "kept")]).unwrap();
        }
        let table = EmbeddedTable::open(dir.path()).unwrap();
        assert_eq!(visible(&table, "u9"), vec![("r:x".into(), 5, "kept".into())]);
    }
}

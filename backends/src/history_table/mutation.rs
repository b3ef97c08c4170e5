//! What goes to and comes from the history table: row mutations with
//! HBase's per-cell timestamps, the cells a read finds, and errors that say
//! whether trying again can help, whichever store is behind the table (an
//! HBase Thrift gateway, or the embedded store of `--embedded`).

/// A column: `family:qualifier`, e.g. `r:archive:7`.
pub type Column = String;

/// Changes to one row, applied together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowMutation {
    /// Row key.
    pub row: String,
    /// Cells to write: column, timestamp, value.
    pub puts: Vec<(Column, i64, Vec<u8>)>,
    /// Column deletes: column, timestamp (hides cells at or before it).
    /// A bare family (`r`, no qualifier) deletes the whole family, as
    /// HBase's Thrift gateway does: that is how a clear is written, so the
    /// user's meta family (the pause flag) survives it.
    pub column_deletes: Vec<(Column, i64)>,
}

impl RowMutation {
    /// Cells this mutation writes.
    pub fn cell_count(&self) -> usize {
        self.puts.len()
    }
}

/// One visible cell a read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCell {
    /// `family:qualifier`.
    pub column: Column,
    /// Its timestamp (a record's view_at).
    pub timestamp: i64,
    /// Its value.
    pub value: Vec<u8>,
}

/// A row a scan found: its key and its visible cells.
pub type ScannedRow = (String, Vec<TableCell>);

/// A table operation that failed, and whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The store is away or failing; the same write may succeed later.
    #[error("history table: {0}")]
    Transient(String),
    /// The store refused the write itself (e.g. an unknown column family);
    /// it will never succeed as it is.
    #[error("history table rejected the write: {0}")]
    Rejected(String),
}

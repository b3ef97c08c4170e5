//! The history table in the embedded on-disk store (`hbase-compat`'s, the
//! same store the HBase-compatible server serves): what `--embedded` and
//! the tests use in place of an HBase gateway.

use std::sync::Arc;

use hbase_compat::store::{Change, ColumnFilter, Store, StoreError, TimedRow};

use super::layout::{META_FAMILY, RECORDS_FAMILY};
use super::mutation::{RowMutation, ScannedRow, TableCell, TableError};

impl From<StoreError> for TableError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NoSuchFamily { .. } => TableError::Rejected(error.to_string()),
            other => TableError::Transient(other.to_string()),
        }
    }
}

/// A table of an embedded store.
#[derive(Clone)]
pub struct EmbeddedTable {
    /// The store, shared by every table opened in its directory.
    store: Arc<Store>,
    /// The table's name.
    table: String,
}

impl EmbeddedTable {
    /// Table `table` of `store`.
    pub fn new(store: Arc<Store>, table: &str) -> Self {
        EmbeddedTable { store, table: table.to_owned() }
    }

    /// Creates the table (families `r` and `m`, one version each) unless
    /// it exists.
    pub(super) fn ensure_table(&self) -> Result<(), TableError> {
        let families = [(format!("{RECORDS_FAMILY}:").into_bytes(), 1), (format!("{META_FAMILY}:").into_bytes(), 1)];
        match self.store.create_table(self.table.as_bytes(), &families) {
            Ok(()) | Err(StoreError::TableExists(_)) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    pub(super) async fn mutate_rows(&self, rows: Vec<RowMutation>) -> Result<(), TableError> {
        let table = self.clone();
        let rows: Vec<TimedRow> = rows.into_iter().map(timed_row).collect();
        tokio::task::spawn_blocking(move || table.store.apply(table.table.as_bytes(), &rows).map_err(TableError::from))
            .await
            .map_err(|error| TableError::Transient(format!("write task failed: {error}")))?
    }

    pub(super) async fn read_row(&self, row: String, columns: Vec<String>) -> Result<Vec<TableCell>, TableError> {
        let table = self.clone();
        let filter = ColumnFilter::new(columns.into_iter().map(String::into_bytes).collect());
        let cells = tokio::task::spawn_blocking(move || match table.store.get_row(table.table.as_bytes(), row.as_bytes(), &filter, None) {
            // Nothing persisted yet: the table comes with the job.
            Err(StoreError::NoSuchTable(_)) => Ok(Vec::new()),
            other => other.map_err(TableError::from),
        })
        .await
        .map_err(|error| TableError::Transient(format!("read task failed: {error}")))??;
        Ok(cells.into_iter().map(table_cell).collect())
    }
}

impl EmbeddedTable {
    pub(super) async fn scan_rows(&self, after: Option<String>, limit: usize, columns: Vec<String>) -> Result<Vec<ScannedRow>, TableError> {
        let table = self.clone();
        let filter = ColumnFilter::new(columns.into_iter().map(String::into_bytes).collect());
        let rows = tokio::task::spawn_blocking(move || {
            let after = after.map(String::into_bytes);
            match table.store.scan(table.table.as_bytes(), b"", after.as_deref(), b"", b"", &filter, None, limit) {
                Err(StoreError::NoSuchTable(_)) => Ok(Vec::new()),
                other => other.map_err(TableError::from),
            }
        })
        .await
        .map_err(|error| TableError::Transient(format!("scan task failed: {error}")))??;
        Ok(rows
            .into_iter()
            .map(|(row, cells)| (String::from_utf8_lossy(&row).into_owned(), cells.into_iter().map(table_cell).collect()))
            .collect())
    }
}

fn table_cell(cell: hbase_compat::store::Cell) -> TableCell {
    TableCell { column: String::from_utf8_lossy(&cell.column).into_owned(), timestamp: cell.timestamp, value: cell.value }
}

/// A row mutation as changes of the embedded store, each at its time.
fn timed_row(mutation: RowMutation) -> TimedRow {
    let mut changes: Vec<(Change, i64)> = Vec::new();
    changes.extend(mutation.column_deletes.into_iter().map(|(column, at)| (Change::Delete { column: column.into_bytes() }, at)));
    changes.extend(mutation.puts.into_iter().map(|(column, at, value)| (Change::Put { column: column.into_bytes(), value }, at)));
    (mutation.row.into_bytes(), changes)
}

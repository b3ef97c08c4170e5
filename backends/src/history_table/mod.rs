//! The history table (HBase's `history` by default): one row per user.
//! The persist stage writes it; the read side falls back to it; the
//! retention sweep trims it.
//!
//! - `layout`: the row layout (row key, families, columns) and its domain
//!   API: a user's records written, deleted, cleared; a read's records and
//!   recording switch; deletes past retention. No other module knows it.
//! - `mutation`: row mutations, cells, and errors that say whether a retry
//!   can help.
//! - `thrift`: the table through an HBase Thrift1 gateway.
//! - `embedded` (feature `embedded`): the table in the embedded on-disk
//!   store of `--embedded` and the tests.

mod layout;
mod mutation;
mod thrift;

#[cfg(feature = "embedded")]
mod embedded;

use std::sync::Arc;

use model::keys;

pub use layout::{expired_deletes, paused, records, RecordCell, Wanted, META_FAMILY, RECORDS_FAMILY};
pub use mutation::{Column, RowMutation, ScannedRow, TableCell, TableError};
pub use thrift::ThriftTable;

#[cfg(feature = "embedded")]
pub use embedded::EmbeddedTable;

/// Where history rows live.
#[derive(Clone)]
pub enum HistoryTable {
    /// A table behind an HBase Thrift1 gateway.
    Thrift(Arc<ThriftTable>),
    /// A table of the embedded on-disk store.
    #[cfg(feature = "embedded")]
    Embedded(EmbeddedTable),
}

impl HistoryTable {
    /// Creates the table unless it exists (one attempt; callers retry).
    pub async fn ensure_table(&self) -> Result<(), TableError> {
        match self {
            HistoryTable::Thrift(table) => {
                let table = table.clone();
                tokio::task::spawn_blocking(move || table.ensure_table())
                    .await
                    .map_err(|error| TableError::Transient(format!("table check failed: {error}")))?
            }
            #[cfg(feature = "embedded")]
            HistoryTable::Embedded(table) => table.ensure_table(),
        }
    }

    /// Applies `rows` (idempotent: every cell carries its own timestamp).
    pub async fn mutate_rows(&self, rows: Vec<RowMutation>) -> Result<(), TableError> {
        match self {
            HistoryTable::Thrift(table) => table.mutate_rows(rows).await,
            #[cfg(feature = "embedded")]
            HistoryTable::Embedded(table) => table.mutate_rows(rows).await,
        }
    }

    /// The visible cells of `uid`'s row in `columns` (`family` or
    /// `family:qualifier`; empty: all).
    pub async fn read_row(&self, uid: u64, columns: Vec<String>) -> Result<Vec<TableCell>, TableError> {
        let row = keys::hbase_row(uid);
        match self {
            HistoryTable::Thrift(table) => table.read_row(row, columns).await,
            #[cfg(feature = "embedded")]
            HistoryTable::Embedded(table) => table.read_row(row, columns).await,
        }
    }

    /// What `uid`'s row holds of `wanted`.
    pub async fn read(&self, uid: u64, wanted: Wanted<'_>) -> Result<Vec<TableCell>, TableError> {
        self.read_row(uid, wanted.columns()).await
    }

    /// Up to `limit` rows after `after` (exclusive; `None`: from the first
    /// row), in row order, with their visible cells in `columns`.
    pub async fn scan_rows(&self, after: Option<String>, limit: usize, columns: Vec<String>) -> Result<Vec<ScannedRow>, TableError> {
        match self {
            HistoryTable::Thrift(table) => table.scan_rows(after, limit, columns).await,
            #[cfg(feature = "embedded")]
            HistoryTable::Embedded(table) => table.scan_rows(after, limit, columns).await,
        }
    }
}

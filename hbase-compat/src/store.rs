//! A multi-version, multi-table cell store with HBase's semantics, on disk
//! (fjall, an LSM tree), behind the HBase-Thrift-compatible server.
//!
//! - A cell version is (table, row, `family:qualifier`, timestamp) → value;
//!   reads return, per column, the newest version (below an optional
//!   exclusive timestamp bound) not hidden by a delete marker.
//! - A column delete at T hides that column's versions with timestamp <= T;
//!   a row delete at T hides every version of the row with timestamp <= T,
//!   including versions written after the delete with an older timestamp.
//! - Each family keeps at most its `max_versions` newest versions.
//!
//! Keys use an order-preserving escape (0x00 → 0x00 0xFF, terminator
//! 0x00 0x01), so rows scan in HBase's byte order whatever bytes they hold.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use fjall::{Config, Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};

use crate::group_sync::GroupSync;

/// Versions a family keeps when its descriptor says nothing (HBase's
/// Thrift default).
pub const DEFAULT_MAX_VERSIONS: i32 = 3;

/// A store operation that failed; the message is safe to send a client.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The table does not exist.
    #[error("table {0:?} does not exist")]
    NoSuchTable(String),
    /// The table exists already.
    #[error("table {0:?} already exists")]
    TableExists(String),
    /// A column names a family the table does not have.
    #[error("column {column:?}: table {table:?} has no family {family:?}")]
    NoSuchFamily {
        /// The table.
        table: String,
        /// The column as given.
        column: String,
        /// Its family.
        family: String,
    },
    /// The disk store failed.
    #[error("storage: {0}")]
    Storage(String),
    /// Another process has the store's directory open.
    #[error("{dir} is in use by another process ({holder}); run one histflow --embedded or hbase-compat-server per data directory")]
    InUse {
        /// The directory.
        dir: String,
        /// Who holds it, as its lock file says.
        holder: String,
    },
}

impl From<fjall::Error> for StoreError {
    fn from(error: fjall::Error) -> Self {
        StoreError::Storage(error.to_string())
    }
}

/// One visible cell of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    /// `family:qualifier`.
    pub column: Vec<u8>,
    /// Version timestamp.
    pub timestamp: i64,
    /// Value.
    pub value: Vec<u8>,
}

/// Changes to one row, each at its own timestamp.
pub type TimedRow = (Vec<u8>, Vec<(Change, i64)>);

/// A row a scan found: its key and visible cells.
pub type ScannedRow = (Vec<u8>, Vec<Cell>);

/// One change, as a Thrift `Mutation` carries it.
#[derive(Debug, Clone)]
pub enum Change {
    /// Write a version of `column` at the mutation's timestamp.
    Put {
        /// `family:qualifier`.
        column: Vec<u8>,
        /// Value.
        value: Vec<u8>,
    },
    /// Delete `column`'s versions at or before the mutation's timestamp.
    Delete {
        /// `family:qualifier`.
        column: Vec<u8>,
    },
    /// Delete every version of the row at or before the timestamp.
    DeleteRow,
}

/// Which columns a read wants: `family:qualifier` exactly, or every column
/// of `family` (written `family` or `family:`). Empty: all.
#[derive(Debug, Clone, Default)]
pub struct ColumnFilter(Vec<Vec<u8>>);

impl ColumnFilter {
    /// A filter of the given specifiers.
    pub fn new(columns: Vec<Vec<u8>>) -> Self {
        ColumnFilter(columns)
    }

    fn admits(&self, column: &[u8]) -> bool {
        self.0.is_empty()
            || self.0.iter().any(|wanted| match wanted.iter().position(|&byte| byte == b':') {
                // `family:qualifier`: exactly that column.
                Some(colon) if colon + 1 < wanted.len() => wanted.as_slice() == column,
                // `family:`: every column of the family.
                Some(colon) => column.starts_with(&wanted[..=colon]),
                // `family`: the same.
                None => column.len() > wanted.len() && column.starts_with(wanted) && column[wanted.len()] == b':',
            })
    }
}

fn push_escaped(key: &mut Vec<u8>, part: &[u8]) {
    for &byte in part {
        key.push(byte);
        if byte == 0 {
            key.push(0xff);
        }
    }
    key.extend_from_slice(&[0, 1]);
}

/// Splits off the first escaped part of `key`; returns (part, rest).
fn take_escaped(key: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let mut part = Vec::new();
    let mut index = 0;
    while index < key.len() {
        match (key[index], key.get(index + 1)) {
            (0, Some(0xff)) => {
                part.push(0);
                index += 2;
            }
            (0, Some(1)) => return Some((part, &key[index + 2..])),
            (byte, _) => {
                part.push(byte);
                index += 1;
            }
        }
    }
    None
}

fn prefix(parts: &[&[u8]]) -> Vec<u8> {
    let mut key = Vec::new();
    for part in parts {
        push_escaped(&mut key, part);
    }
    key
}

/// Newest first: versions of a column sort by descending timestamp.
fn inverted(timestamp: i64) -> [u8; 8] {
    (u64::MAX - timestamp.max(0) as u64).to_be_bytes()
}

fn timestamp_of(inverted: &[u8]) -> Option<i64> {
    let bytes: [u8; 8] = inverted.get(..8)?.try_into().ok()?;
    Some((u64::MAX - u64::from_be_bytes(bytes)) as i64)
}

fn family_of(column: &[u8]) -> &[u8] {
    column.split(|&b| b == b':').next().unwrap_or(column)
}

/// Where a family delete's marker lives: `family:`.
fn family_marker_column(column: &[u8]) -> Vec<u8> {
    let mut marker = family_of(column).to_vec();
    marker.push(b':');
    marker
}

/// The store.
pub struct Store {
    keyspace: Keyspace,
    /// table → family → max versions, as text lines `family\tmax`.
    tables: PartitionHandle,
    /// esc(table) esc(row) esc(column) inverted(ts) → value.
    cells: PartitionHandle,
    /// esc(table) esc(row) esc(column or empty) → newest delete time.
    markers: PartitionHandle,
    /// Writes read before they write (markers, version pruning): one at a
    /// time keeps each mutation atomic.
    write_lock: Mutex<()>,
    /// The journal syncs the writes share.
    sync: GroupSync,
    /// The directory's lock, held while the store is open: two processes
    /// writing one LSM tree would corrupt it.
    _lock: std::fs::File,
}

/// The lock file in a store's directory; it names its holder.
const LOCK_FILE: &str = "histflow.lock";

/// Takes `dir`'s lock, or names the process that holds it.
fn lock(dir: &Path) -> Result<std::fs::File, StoreError> {
    use std::io::{Read, Seek, Write};
    let path = dir.join(LOCK_FILE);
    let storage = |error: std::io::Error| StoreError::Storage(format!("cannot lock {}: {error}", path.display()));
    let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(storage)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let holder = if holder.is_empty() { "it did not say who it is".to_owned() } else { holder.to_owned() };
            return Err(StoreError::InUse { dir: dir.display().to_string(), holder });
        }
        Err(std::fs::TryLockError::Error(error)) => return Err(storage(error)),
    }
    file.set_len(0).map_err(storage)?;
    file.rewind().map_err(storage)?;
    let program = std::env::args().next().unwrap_or_default();
    write!(file, "pid {} ({program})", std::process::id()).map_err(storage)?;
    Ok(file)
}

impl Store {
    /// Opens (or creates) the store in `dir`, which no other process may
    /// have open ([`StoreError::InUse`] names the one that has).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|error| StoreError::Storage(format!("cannot create {}: {error}", dir.display())))?;
        let lock = lock(dir)?;
        let keyspace = Config::new(dir).open()?;
        let tables = keyspace.open_partition("tables", PartitionCreateOptions::default())?;
        let cells = keyspace.open_partition("cells", PartitionCreateOptions::default())?;
        let markers = keyspace.open_partition("markers", PartitionCreateOptions::default())?;
        Ok(Store { keyspace, tables, cells, markers, write_lock: Mutex::new(()), sync: GroupSync::default(), _lock: lock })
    }

    /// Every table name, sorted.
    pub fn table_names(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.tables.iter().map(|entry| Ok(entry?.0.to_vec())).collect()
    }

    /// The families of `table` with their max versions.
    pub fn families(&self, table: &[u8]) -> Result<BTreeMap<Vec<u8>, i32>, StoreError> {
        let stored = self.tables.get(table)?.ok_or_else(|| StoreError::NoSuchTable(String::from_utf8_lossy(table).into_owned()))?;
        Ok(String::from_utf8_lossy(&stored)
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .map(|(family, max)| (family.as_bytes().to_vec(), max.parse().unwrap_or(DEFAULT_MAX_VERSIONS)))
            .collect())
    }

    /// Creates `table` with `families` (name, max versions).
    pub fn create_table(&self, table: &[u8], families: &[(Vec<u8>, i32)]) -> Result<(), StoreError> {
        let _guard = self.write_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.tables.get(table)?.is_some() {
            return Err(StoreError::TableExists(String::from_utf8_lossy(table).into_owned()));
        }
        let text: String = families
            .iter()
            .map(|(name, max)| {
                format!("{}\t{}\n", String::from_utf8_lossy(family_of(name)), if *max > 0 { *max } else { DEFAULT_MAX_VERSIONS })
            })
            .collect();
        self.tables.insert(table, text.as_bytes())?;
        self.keyspace.persist(PersistMode::SyncAll)?;
        Ok(())
    }

    /// Drops `table` and all its data.
    pub fn delete_table(&self, table: &[u8]) -> Result<(), StoreError> {
        let _guard = self.write_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.families(table)?;
        let start = prefix(&[table]);
        let mut batch = self.keyspace.batch();
        for partition in [&self.cells, &self.markers] {
            for entry in partition.prefix(&start) {
                batch.remove(partition, entry?.0);
            }
        }
        batch.remove(&self.tables, table);
        batch.commit()?;
        self.keyspace.persist(PersistMode::SyncAll)?;
        Ok(())
    }

    fn marker(&self, key: &[u8]) -> Result<Option<i64>, StoreError> {
        Ok(self.markers.get(key)?.and_then(|bytes| bytes.get(..8).and_then(|b| b.try_into().ok()).map(i64::from_be_bytes)))
    }

    /// Applies `changes` to rows of `table`, each at `timestamp`, atomically
    /// and durably (synced before it returns).
    pub fn mutate(&self, table: &[u8], rows: &[(Vec<u8>, Vec<Change>)], timestamp: i64) -> Result<(), StoreError> {
        let rows: Vec<TimedRow> =
            rows.iter().map(|(row, changes)| (row.clone(), changes.iter().map(|change| (change.clone(), timestamp)).collect())).collect();
        self.apply(table, &rows)
    }

    /// Applies changes each at its own timestamp (HBase's per-cell
    /// timestamps), atomically and durably: one batch, synced before it
    /// returns (the sync shared with the writes committed beside it).
    pub fn apply(&self, table: &[u8], rows: &[TimedRow]) -> Result<(), StoreError> {
        let ticket = self.commit(table, rows)?;
        self.sync.wait_durable(ticket, || self.keyspace.persist(PersistMode::SyncAll))?;
        Ok(())
    }

    /// Commits `rows` as one batch (not yet synced); its sync ticket.
    fn commit(&self, table: &[u8], rows: &[TimedRow]) -> Result<u64, StoreError> {
        let _guard = self.write_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let families = self.families(table)?;
        let family_max = |column: &[u8]| {
            families.get(family_of(column)).copied().ok_or_else(|| StoreError::NoSuchFamily {
                table: String::from_utf8_lossy(table).into_owned(),
                column: String::from_utf8_lossy(column).into_owned(),
                family: String::from_utf8_lossy(family_of(column)).into_owned(),
            })
        };
        let mut batch = self.keyspace.batch();
        // Markers raised earlier in this same batch (not yet readable).
        let mut raised: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
        let mut raise = |key: Vec<u8>, at: i64, batch: &mut fjall::Batch| -> Result<(), StoreError> {
            let current = match raised.get(&key) {
                Some(&at) => Some(at),
                None => self.marker(&key)?,
            };
            if current.is_none_or(|marker| at > marker) {
                batch.insert(&self.markers, key.clone(), at.to_be_bytes());
                raised.insert(key, at);
            }
            Ok(())
        };
        for (row, changes) in rows {
            for (change, timestamp) in changes {
                let timestamp = *timestamp;
                match change {
                    Change::Put { column, value } => {
                        let max_versions = usize::try_from(family_max(column)?).unwrap_or(1).max(1);
                        let column_prefix = prefix(&[table, row, column]);
                        let mut key = column_prefix.clone();
                        key.extend_from_slice(&inverted(timestamp));
                        // Versions sort newest first; keep the newest
                        // max_versions, this one included.
                        let mut versions: Vec<Vec<u8>> =
                            self.cells.prefix(&column_prefix).map(|entry| entry.map(|(k, _)| k.to_vec())).collect::<Result<_, _>>()?;
                        versions.push(key.clone());
                        versions.sort();
                        versions.dedup();
                        let mut keep_new = true;
                        for stale in versions.iter().skip(max_versions) {
                            if *stale == key {
                                keep_new = false;
                            } else {
                                batch.remove(&self.cells, stale.clone());
                            }
                        }
                        if keep_new {
                            batch.insert(&self.cells, key, value.clone());
                        }
                    }
                    Change::Delete { column } => {
                        family_max(column)?;
                        // `family` or `family:` (no qualifier) deletes the
                        // whole family, as HBase's gateway does; its marker
                        // is kept under `family:`.
                        let target = match column.iter().position(|&byte| byte == b':') {
                            Some(colon) if colon + 1 < column.len() => column.clone(),
                            _ => family_marker_column(column),
                        };
                        raise(prefix(&[table, row, &target]), timestamp, &mut batch)?;
                    }
                    Change::DeleteRow => raise(prefix(&[table, row, b""]), timestamp, &mut batch)?,
                }
            }
        }
        batch.commit()?;
        Ok(self.sync.committed())
    }

    /// Row delete at `timestamp`: hides every version of the row at or
    /// before it.
    pub fn delete_row(&self, table: &[u8], row: &[u8], timestamp: i64) -> Result<(), StoreError> {
        self.apply(table, &[(row.to_vec(), vec![(Change::DeleteRow, timestamp)])])
    }

    /// The visible cells of `row`: per column the newest version with a
    /// timestamp below `before` (when given) not hidden by a marker.
    pub fn get_row(&self, table: &[u8], row: &[u8], columns: &ColumnFilter, before: Option<i64>) -> Result<Vec<Cell>, StoreError> {
        self.families(table)?;
        let row_prefix = prefix(&[table, row]);
        self.visible_cells(&row_prefix, columns, before)
    }

    /// Up to `max` visible versions of one column, newest first, below
    /// `before` when given.
    pub fn column_versions(
        &self,
        table: &[u8],
        row: &[u8],
        column: &[u8],
        before: Option<i64>,
        max: usize,
    ) -> Result<Vec<Cell>, StoreError> {
        self.families(table)?;
        let row_marker = self.marker(&prefix(&[table, row, b""]))?;
        let marker =
            self.marker(&prefix(&[table, row, column]))?.max(self.marker(&prefix(&[table, row, &family_marker_column(column)]))?);
        let column_prefix = prefix(&[table, row, column]);
        let mut versions = Vec::new();
        for entry in self.cells.prefix(&column_prefix) {
            let (key, value) = entry?;
            let Some(timestamp) = timestamp_of(&key[column_prefix.len()..]) else { continue };
            let hidden = row_marker.is_some_and(|at| timestamp <= at) || marker.is_some_and(|at| timestamp <= at);
            if before.is_none_or(|bound| timestamp < bound) && !hidden {
                versions.push(Cell { column: column.to_vec(), timestamp, value: value.to_vec() });
                if versions.len() >= max {
                    break;
                }
            }
        }
        Ok(versions)
    }

    fn visible_cells(&self, row_prefix: &[u8], columns: &ColumnFilter, before: Option<i64>) -> Result<Vec<Cell>, StoreError> {
        let mut row_marker_key = row_prefix.to_vec();
        push_escaped(&mut row_marker_key, b"");
        let row_marker = self.marker(&row_marker_key)?;
        let mut cells: Vec<Cell> = Vec::new();
        let mut current: Option<(Vec<u8>, Option<i64>)> = None;
        for entry in self.cells.prefix(row_prefix) {
            let (key, value) = entry?;
            let Some((column, rest)) = take_escaped(&key[row_prefix.len()..]) else { continue };
            let Some(timestamp) = timestamp_of(rest) else { continue };
            if current.as_ref().is_none_or(|(seen, _)| *seen != column) {
                // The newer of the column's own marker and its family's.
                let mut column_key = row_prefix.to_vec();
                push_escaped(&mut column_key, &column);
                let mut family_key = row_prefix.to_vec();
                push_escaped(&mut family_key, &family_marker_column(&column));
                let marker = self.marker(&column_key)?.max(self.marker(&family_key)?);
                current = Some((column.clone(), marker));
            }
            if cells.last().is_some_and(|cell| cell.column == column) || !columns.admits(&column) {
                continue;
            }
            let column_marker = current.as_ref().and_then(|(_, marker)| *marker);
            let below = before.is_none_or(|bound| timestamp < bound);
            let hidden = row_marker.is_some_and(|at| timestamp <= at) || column_marker.is_some_and(|at| timestamp <= at);
            if below && !hidden {
                cells.push(Cell { column, timestamp, value: value.to_vec() });
            }
        }
        Ok(cells)
    }

    /// Up to `limit` rows of `table` with at least one visible cell, in row
    /// order, from `start` (inclusive) or after `after` (exclusive), before
    /// `stop` (exclusive, empty = no end), starting with `row_prefix`.
    #[allow(clippy::too_many_arguments)]
    pub fn scan(
        &self,
        table: &[u8],
        start: &[u8],
        after: Option<&[u8]>,
        stop: &[u8],
        row_prefix: &[u8],
        columns: &ColumnFilter,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<ScannedRow>, StoreError> {
        self.families(table)?;
        let table_prefix = prefix(&[table]);
        let mut from = table_prefix.clone();
        match after {
            // Just past every key of the `after` row: its terminator is
            // 0x00 0x01; the next row's escaped form sorts after 0x00 0x02.
            Some(after) => {
                let mut after_key = table_prefix.clone();
                for &byte in after {
                    after_key.push(byte);
                    if byte == 0 {
                        after_key.push(0xff);
                    }
                }
                after_key.extend_from_slice(&[0, 2]);
                from = after_key;
            }
            None => push_escaped(&mut from, start),
        }
        let mut rows = Vec::new();
        let mut last_row: Option<Vec<u8>> = None;
        for entry in self.cells.range(from..) {
            let (key, _) = entry?;
            if !key.starts_with(&table_prefix) {
                break;
            }
            let Some((row, _)) = take_escaped(&key[table_prefix.len()..]) else { continue };
            if last_row.as_deref() == Some(row.as_slice()) {
                continue;
            }
            if !stop.is_empty() && row.as_slice() >= stop {
                break;
            }
            if !row_prefix.is_empty() && !row.starts_with(row_prefix) {
                if row.as_slice() > row_prefix {
                    break;
                }
                last_row = Some(row);
                continue;
            }
            let cells = self.visible_cells(&prefix(&[table, &row]), columns, before)?;
            last_row = Some(row.clone());
            if !cells.is_empty() {
                rows.push((row, cells));
                if rows.len() >= limit {
                    break;
                }
            }
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_keys_round_trip_and_keep_byte_order() {
        let parts: Vec<&[u8]> = vec![b"", b"\x00", b"\x00\x00", b"\x00\x01", b"a", b"a\x00", b"a\x00b", b"a\x01", b"ab", b"b"];
        let mut escaped: Vec<Vec<u8>> = parts.iter().map(|part| prefix(&[part])).collect();
        for (part, key) in parts.iter().zip(&escaped) {
            assert_eq!(take_escaped(key), Some((part.to_vec(), &b""[..])));
        }
        let before = escaped.clone();
        escaped.sort();
        assert_eq!(escaped, before, "escaping must not change the order of the parts (listed sorted)");
    }

    #[test]
    fn families_keep_at_most_their_versions() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.create_table(b"t", &[(b"r:".to_vec(), 2)]).unwrap();
        for ts in [1, 5, 3, 4] {
            store
                .mutate(b"t", &[(b"row".to_vec(), vec![Change::Put { column: b"r:a".to_vec(), value: ts.to_string().into_bytes() }])], ts)
                .unwrap();
        }
        let all = ColumnFilter::default();
        assert_eq!(store.get_row(b"t", b"row", &all, None).unwrap()[0].timestamp, 5);
        assert_eq!(store.get_row(b"t", b"row", &all, Some(5)).unwrap()[0].timestamp, 4);
        assert!(store.get_row(b"t", b"row", &all, Some(4)).unwrap().is_empty(), "only the newest two versions are kept");
    }
}

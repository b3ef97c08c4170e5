//! The HBase Thrift1 handler over the store, and serving it with the
//! binary protocol and buffered transports (the HBase Thrift gateway's
//! defaults), one worker thread per connection.
//!
//! Implemented: table listing, creation, deletion and descriptors; gets of
//! cells, rows and row lists with and without columns and timestamps
//! (timestamp bounds are exclusive, as HBase's `setTimeRange(0, ts)`);
//! mutateRow(s)(Ts); deleteAll(Ts) and deleteAllRow(Ts); scanners opened
//! with start, stop, prefix, timestamp or a `TScan` (without filters), read
//! with scannerGet(List) and closed. Everything else answers an `IOError`
//! naming the call.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hbase_thrift::hbase::{
    AlreadyExists, BatchMutation, Bytes, ColumnDescriptor, HbaseSyncHandler, HbaseSyncProcessor, IOError, IllegalArgument, Mutation,
    ScannerID, TAccessControlEntity, TAppend, TCell, TColumn, TIncrement, TRegionInfo, TRowResult, TScan, TThriftServerType, Text,
};
use thrift::protocol::{TBinaryInputProtocolFactory, TBinaryOutputProtocolFactory, TInputProtocolFactory, TOutputProtocolFactory};
use thrift::server::TProcessor;
use thrift::transport::{
    TBufferedReadTransportFactory, TBufferedWriteTransportFactory, TIoChannel, TReadTransportFactory, TTcpChannel, TWriteTransportFactory,
};

use crate::lenient::NullTolerantInputFactory;
use crate::store::{Cell, Change, ColumnFilter, Store, StoreError, DEFAULT_MAX_VERSIONS};
use thrift_bounded::BoundedInputFactory;

/// Connections served at once (one worker thread each).
const WORKERS: usize = 256;
/// Rows a scanner reads from the store per call at most.
const MAX_SCAN_ROWS: usize = 10_000;
/// Scanners open at once; opening more is refused.
const MAX_SCANNERS: usize = 1024;
/// A scanner unused this long is closed (HBase's scanner lease is 60 s).
const SCANNER_LEASE: Duration = Duration::from_secs(60);
/// How long a connection may stay silent, or take to accept an answer,
/// by default (HBase's gateway closes idle connections after 60 s too).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// An open scanner: where it is and what it reads.
struct Scanner {
    table: Vec<u8>,
    start: Vec<u8>,
    stop: Vec<u8>,
    prefix: Vec<u8>,
    columns: ColumnFilter,
    before: Option<i64>,
    /// The last row returned; the next read starts after it.
    last: Option<Vec<u8>>,
    /// When it was opened or last read.
    used: Instant,
}

/// The handler: the store plus open scanners.
pub struct CompatHandler {
    store: Arc<Store>,
    scanners: Mutex<HashMap<ScannerID, Scanner>>,
    next_scanner: AtomicI32,
}

fn io_error(error: StoreError) -> thrift::Error {
    IOError::new(error.to_string(), false).into()
}

fn unsupported(call: &str) -> thrift::Error {
    IOError::new(format!("{call} is not supported by histflow's HBase-compatible server"), false).into()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_millis() as i64)
}

fn row_result(row: Vec<u8>, cells: Vec<Cell>) -> TRowResult {
    let columns: BTreeMap<Text, TCell> =
        cells.iter().map(|cell| (cell.column.clone(), TCell::new(cell.value.clone(), cell.timestamp))).collect();
    let sorted: Vec<TColumn> = cells.into_iter().map(|cell| TColumn::new(cell.column, TCell::new(cell.value, cell.timestamp))).collect();
    TRowResult::new(row, columns, sorted)
}

impl CompatHandler {
    /// A handler over `store`.
    pub fn new(store: Arc<Store>) -> Self {
        CompatHandler { store, scanners: Mutex::new(HashMap::new()), next_scanner: AtomicI32::new(1) }
    }

    fn cells(&self, table: &[u8], row: &[u8], columns: Vec<Vec<u8>>, before: Option<i64>) -> thrift::Result<Vec<TCell>> {
        let cells = self.store.get_row(table, row, &ColumnFilter::new(columns), before).map_err(io_error)?;
        Ok(cells.into_iter().map(|cell| TCell::new(cell.value, cell.timestamp)).collect())
    }

    fn versions(&self, table: &[u8], row: &[u8], column: &[u8], before: Option<i64>, max: i32) -> thrift::Result<Vec<TCell>> {
        let max = usize::try_from(max).unwrap_or(1).max(1);
        let cells = self.store.column_versions(table, row, column, before, max).map_err(io_error)?;
        Ok(cells.into_iter().map(|cell| TCell::new(cell.value, cell.timestamp)).collect())
    }

    fn rows(&self, table: &[u8], rows: Vec<Vec<u8>>, columns: Vec<Vec<u8>>, before: Option<i64>) -> thrift::Result<Vec<TRowResult>> {
        let filter = ColumnFilter::new(columns);
        let mut results = Vec::new();
        for row in rows {
            let cells = self.store.get_row(table, &row, &filter, before).map_err(io_error)?;
            if !cells.is_empty() {
                results.push(row_result(row, cells));
            }
        }
        Ok(results)
    }

    fn mutate(&self, table: &[u8], rows: Vec<(Vec<u8>, Vec<Mutation>)>, timestamp: i64) -> thrift::Result<()> {
        let rows: Vec<(Vec<u8>, Vec<Change>)> = rows
            .into_iter()
            .map(|(row, mutations)| {
                let changes = mutations
                    .into_iter()
                    .map(|mutation| {
                        let column = mutation.column.unwrap_or_default();
                        if mutation.is_delete.unwrap_or(false) {
                            Change::Delete { column }
                        } else {
                            Change::Put { column, value: mutation.value.unwrap_or_default() }
                        }
                    })
                    .collect();
                (row, changes)
            })
            .collect();
        self.store.mutate(table, &rows, timestamp).map_err(|error| match error {
            StoreError::NoSuchFamily { .. } => IllegalArgument::new(error.to_string()).into(),
            other => io_error(other),
        })
    }

    fn open_scanner(
        &self,
        table: Vec<u8>,
        start: Vec<u8>,
        stop: Vec<u8>,
        prefix: Vec<u8>,
        columns: Vec<Vec<u8>>,
        before: Option<i64>,
    ) -> thrift::Result<ScannerID> {
        self.store.families(&table).map_err(io_error)?;
        let mut scanners = self.scanners.lock().unwrap_or_else(PoisonError::into_inner);
        // Scanners past their lease are gone; a client that forgets to
        // close its scanners cannot hold memory for ever.
        scanners.retain(|_, scanner| scanner.used.elapsed() < SCANNER_LEASE);
        if scanners.len() >= MAX_SCANNERS {
            return Err(IOError::new(format!("{MAX_SCANNERS} scanners are open; close some (or wait for their 60 s lease)"), false).into());
        }
        let id = self.next_scanner.fetch_add(1, Ordering::Relaxed);
        let scanner = Scanner { table, start, stop, prefix, columns: ColumnFilter::new(columns), before, last: None, used: Instant::now() };
        scanners.insert(id, scanner);
        Ok(id)
    }

    fn scanner_next(&self, id: ScannerID, rows: usize) -> thrift::Result<Vec<TRowResult>> {
        let mut scanners = self.scanners.lock().unwrap_or_else(PoisonError::into_inner);
        let scanner =
            scanners.get_mut(&id).ok_or_else(|| -> thrift::Error { IllegalArgument::new(format!("no open scanner {id}")).into() })?;
        scanner.used = Instant::now();
        let found = self
            .store
            .scan(
                &scanner.table,
                &scanner.start,
                scanner.last.as_deref(),
                &scanner.stop,
                &scanner.prefix,
                &scanner.columns,
                scanner.before,
                rows.min(MAX_SCAN_ROWS),
            )
            .map_err(io_error)?;
        if let Some((row, _)) = found.last() {
            scanner.last = Some(row.clone());
        }
        Ok(found.into_iter().map(|(row, cells)| row_result(row, cells)).collect())
    }
}

impl HbaseSyncHandler for CompatHandler {
    fn handle_enable_table(&self, table_name: Bytes) -> thrift::Result<()> {
        self.store.families(&table_name).map(drop).map_err(io_error)
    }

    fn handle_disable_table(&self, table_name: Bytes) -> thrift::Result<()> {
        self.store.families(&table_name).map(drop).map_err(io_error)
    }

    fn handle_is_table_enabled(&self, table_name: Bytes) -> thrift::Result<bool> {
        self.store.families(&table_name).map(|_| true).map_err(io_error)
    }

    fn handle_compact(&self, _table_name_or_region_name: Bytes) -> thrift::Result<()> {
        Err(unsupported("compact"))
    }

    fn handle_major_compact(&self, _table_name_or_region_name: Bytes) -> thrift::Result<()> {
        Err(unsupported("major_compact"))
    }

    fn handle_get_table_names(&self) -> thrift::Result<Vec<Text>> {
        self.store.table_names().map_err(io_error)
    }

    fn handle_get_table_names_with_is_table_enabled(&self) -> thrift::Result<BTreeMap<Text, bool>> {
        Ok(self.store.table_names().map_err(io_error)?.into_iter().map(|name| (name, true)).collect())
    }

    fn handle_get_column_descriptors(&self, table_name: Text) -> thrift::Result<BTreeMap<Text, ColumnDescriptor>> {
        let families = self.store.families(&table_name).map_err(io_error)?;
        Ok(families
            .into_iter()
            .map(|(family, max_versions)| {
                let mut name = family.clone();
                name.push(b':');
                (name.clone(), ColumnDescriptor { name: Some(name), max_versions: Some(max_versions), ..ColumnDescriptor::default() })
            })
            .collect())
    }

    fn handle_get_table_regions(&self, _table_name: Text) -> thrift::Result<Vec<TRegionInfo>> {
        Err(unsupported("get_table_regions"))
    }

    fn handle_create_table(&self, table_name: Text, column_families: Vec<ColumnDescriptor>) -> thrift::Result<()> {
        let families: Vec<(Vec<u8>, i32)> = column_families
            .into_iter()
            .filter_map(|descriptor| Some((descriptor.name?, descriptor.max_versions.unwrap_or(DEFAULT_MAX_VERSIONS))))
            .collect();
        if families.is_empty() {
            return Err(IllegalArgument::new("createTable needs at least one column family".to_owned()).into());
        }
        self.store.create_table(&table_name, &families).map_err(|error| match error {
            StoreError::TableExists(name) => AlreadyExists::new(format!("table {name:?} already exists")).into(),
            other => io_error(other),
        })
    }

    fn handle_delete_table(&self, table_name: Text) -> thrift::Result<()> {
        self.store.delete_table(&table_name).map_err(io_error)
    }

    fn handle_get(&self, table_name: Text, row: Text, column: Text, _attributes: BTreeMap<Text, Text>) -> thrift::Result<Vec<TCell>> {
        self.cells(&table_name, &row, vec![column], None)
    }

    fn handle_get_ver(
        &self,
        table_name: Text,
        row: Text,
        column: Text,
        num_versions: i32,
        _attributes: BTreeMap<Text, Text>,
    ) -> thrift::Result<Vec<TCell>> {
        self.versions(&table_name, &row, &column, None, num_versions)
    }

    fn handle_get_ver_ts(
        &self,
        table_name: Text,
        row: Text,
        column: Text,
        timestamp: i64,
        num_versions: i32,
        _attributes: BTreeMap<Text, Text>,
    ) -> thrift::Result<Vec<TCell>> {
        self.versions(&table_name, &row, &column, Some(timestamp), num_versions)
    }

    fn handle_get_row(&self, table_name: Text, row: Text, _attributes: BTreeMap<Text, Text>) -> thrift::Result<Vec<TRowResult>> {
        self.rows(&table_name, vec![row], Vec::new(), None)
    }

    fn handle_get_row_with_columns(
        &self,
        table_name: Text,
        row: Text,
        columns: Vec<Text>,
        _attributes: BTreeMap<Text, Text>,
    ) -> thrift::Result<Vec<TRowResult>> {
        self.rows(&table_name, vec![row], columns, None)
    }

    fn handle_get_row_ts(
        &self,
        table_name: Text,
        row: Text,
        timestamp: i64,
        _attributes: BTreeMap<Text, Text>,
    ) -> thrift::Result<Vec<TRowResult>> {
        self.rows(&table_name, vec![row], Vec::new(), Some(timestamp))
    }

    fn handle_get_row_with_columns_ts(
        &self,
        table_name: Text,
        row: Text,
        columns: Vec<Text>,
        timestamp: i64,
        _attributes: BTreeMap<Text, Text>,
    ) -> thrift::Result<Vec<TRowResult>> {
        self.rows(&table_name, vec![row], columns, Some(timestamp))
    }

    fn handle_get_rows(&self, table_name: Text, rows: Vec<Text>, _attributes: BTreeMap<Text, Text>) -> thrift::Result<Vec<TRowResult>> {
        self.rows(&table_name, rows, Vec::new(), None)
    }

    fn handle_get_rows_with_columns(
        &self,
        table_name: Text,
        rows: Vec<Text>,
        columns: Vec<Text>,
        _attributes: BTreeMap<Text, Text>,
    ) -> thrift::Result<Vec<TRowResult>> {
        self.rows(&table_name, rows, columns, None)
    }

    fn handle_get_rows_ts(
        &self,
        table_name: Text,
        rows: Vec<Text>,
        timestamp: i64,
        _attributes: BTreeMap<Text, Text>,
    ) -> thrift::Result<Vec<TRowResult>> {
        self.rows(&table_name, rows, Vec::new(), Some(timestamp))
    }

    fn handle_get_rows_with_columns_ts(
        &self,
        table_name: Text,
        rows: Vec<Text>,
        columns: Vec<Text>,
        timestamp: i64,
        _attributes: BTreeMap<Text, Text>,
    ) -> thrift::Result<Vec<TRowResult>> {
        self.rows(&table_name, rows, columns, Some(timestamp))
    }

    fn handle_mutate_row(
        &self,
        table_name: Text,
        row: Text,
        mutations: Vec<Mutation>,
        _attributes: BTreeMap<Text, Text>,
    ) -> thrift::Result<()> {
        self.mutate(&table_name, vec![(row, mutations)], now_ms())
    }

    fn handle_mutate_row_ts(
        &self,
        table_name: Text,
        row: Text,
        mutations: Vec<Mutation>,
        timestamp: i64,
        _attributes: BTreeMap<Text, Text>,
    ) -> thrift::Result<()> {
        self.mutate(&table_name, vec![(row, mutations)], timestamp)
    }

    fn handle_mutate_rows(
        &self,
        table_name: Text,
        row_batches: Vec<BatchMutation>,
        _attributes: BTreeMap<Text, Text>,
    ) -> thrift::Result<()> {
        self.mutate(
            &table_name,
            row_batches.into_iter().map(|batch| (batch.row.unwrap_or_default(), batch.mutations.unwrap_or_default())).collect(),
            now_ms(),
        )
    }

    fn handle_mutate_rows_ts(
        &self,
        table_name: Text,
        row_batches: Vec<BatchMutation>,
        timestamp: i64,
        _attributes: BTreeMap<Text, Text>,
    ) -> thrift::Result<()> {
        self.mutate(
            &table_name,
            row_batches.into_iter().map(|batch| (batch.row.unwrap_or_default(), batch.mutations.unwrap_or_default())).collect(),
            timestamp,
        )
    }

    fn handle_atomic_increment(&self, _table_name: Text, _row: Text, _column: Text, _value: i64) -> thrift::Result<i64> {
        Err(unsupported("atomic_increment"))
    }

    fn handle_delete_all(&self, table_name: Text, row: Text, column: Text, _attributes: BTreeMap<Text, Text>) -> thrift::Result<()> {
        self.store.mutate(&table_name, &[(row, vec![Change::Delete { column }])], now_ms()).map_err(io_error)
    }

    fn handle_delete_all_ts(
        &self,
        table_name: Text,
        row: Text,
        column: Text,
        timestamp: i64,
        _attributes: BTreeMap<Text, Text>,
    ) -> thrift::Result<()> {
        self.store.mutate(&table_name, &[(row, vec![Change::Delete { column }])], timestamp).map_err(io_error)
    }

    fn handle_delete_all_row(&self, table_name: Text, row: Text, _attributes: BTreeMap<Text, Text>) -> thrift::Result<()> {
        self.store.delete_row(&table_name, &row, now_ms()).map_err(io_error)
    }

    fn handle_increment(&self, _increment: TIncrement) -> thrift::Result<()> {
        Err(unsupported("increment"))
    }

    fn handle_increment_rows(&self, _increments: Vec<TIncrement>) -> thrift::Result<()> {
        Err(unsupported("increment_rows"))
    }

    fn handle_delete_all_row_ts(
        &self,
        table_name: Text,
        row: Text,
        timestamp: i64,
        _attributes: BTreeMap<Text, Text>,
    ) -> thrift::Result<()> {
        self.store.delete_row(&table_name, &row, timestamp).map_err(io_error)
    }

    fn handle_scanner_open_with_scan(&self, table_name: Text, scan: TScan, _attributes: BTreeMap<Text, Text>) -> thrift::Result<ScannerID> {
        let columns = scan.columns.unwrap_or_default();
        let (start, stop) = (scan.start_row.unwrap_or_default(), scan.stop_row.unwrap_or_default());
        self.open_scanner(table_name, start, stop, Vec::new(), columns, scan.timestamp)
    }

    fn handle_scanner_open(
        &self,
        table_name: Text,
        start_row: Text,
        columns: Vec<Text>,
        _attributes: BTreeMap<Text, Text>,
    ) -> thrift::Result<ScannerID> {
        self.open_scanner(table_name, start_row, Vec::new(), Vec::new(), columns, None)
    }

    fn handle_scanner_open_with_stop(
        &self,
        table_name: Text,
        start_row: Text,
        stop_row: Text,
        columns: Vec<Text>,
        _attributes: BTreeMap<Text, Text>,
    ) -> thrift::Result<ScannerID> {
        self.open_scanner(table_name, start_row, stop_row, Vec::new(), columns, None)
    }

    fn handle_scanner_open_with_prefix(
        &self,
        table_name: Text,
        start_and_prefix: Text,
        columns: Vec<Text>,
        _attributes: BTreeMap<Text, Text>,
    ) -> thrift::Result<ScannerID> {
        self.open_scanner(table_name, start_and_prefix.clone(), Vec::new(), start_and_prefix, columns, None)
    }

    fn handle_scanner_open_ts(
        &self,
        table_name: Text,
        start_row: Text,
        columns: Vec<Text>,
        timestamp: i64,
        _attributes: BTreeMap<Text, Text>,
    ) -> thrift::Result<ScannerID> {
        self.open_scanner(table_name, start_row, Vec::new(), Vec::new(), columns, Some(timestamp))
    }

    fn handle_scanner_open_with_stop_ts(
        &self,
        table_name: Text,
        start_row: Text,
        stop_row: Text,
        columns: Vec<Text>,
        timestamp: i64,
        _attributes: BTreeMap<Text, Text>,
    ) -> thrift::Result<ScannerID> {
        self.open_scanner(table_name, start_row, stop_row, Vec::new(), columns, Some(timestamp))
    }

    fn handle_scanner_get(&self, id: ScannerID) -> thrift::Result<Vec<TRowResult>> {
        self.scanner_next(id, 1)
    }

    fn handle_scanner_get_list(&self, id: ScannerID, nb_rows: i32) -> thrift::Result<Vec<TRowResult>> {
        self.scanner_next(id, usize::try_from(nb_rows).unwrap_or(1).max(1))
    }

    fn handle_scanner_close(&self, id: ScannerID) -> thrift::Result<()> {
        self.scanners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id)
            .map(drop)
            .ok_or_else(|| IllegalArgument::new(format!("no open scanner {id}")).into())
    }

    fn handle_get_region_info(&self, _row: Text) -> thrift::Result<TRegionInfo> {
        Err(unsupported("get_region_info"))
    }

    fn handle_append(&self, _append: TAppend) -> thrift::Result<Vec<TCell>> {
        Err(unsupported("append"))
    }

    fn handle_check_and_put(
        &self,
        _table_name: Text,
        _row: Text,
        _column: Text,
        _value: Text,
        _mput: Mutation,
        _attributes: BTreeMap<Text, Text>,
    ) -> thrift::Result<bool> {
        Err(unsupported("check_and_put"))
    }

    fn handle_get_thrift_server_type(&self) -> thrift::Result<TThriftServerType> {
        Err(unsupported("get_thrift_server_type"))
    }

    fn handle_get_cluster_id(&self) -> thrift::Result<String> {
        Err(unsupported("get_cluster_id"))
    }

    fn handle_grant(&self, _info: TAccessControlEntity) -> thrift::Result<bool> {
        Err(unsupported("grant"))
    }

    fn handle_revoke(&self, _info: TAccessControlEntity) -> thrift::Result<bool> {
        Err(unsupported("revoke"))
    }
}

/// Serves `store` on `listen` until the process ends, closing connections
/// silent for [`DEFAULT_IDLE_TIMEOUT`]; see [`serve_with_idle_timeout`].
pub fn serve(listen: &str, store: Arc<Store>) -> thrift::Result<()> {
    serve_with_idle_timeout(listen, store, DEFAULT_IDLE_TIMEOUT)
}

/// One of the [`WORKERS`] connection slots, given back when dropped (also
/// when the connection's thread panics), with its entry in the registry.
struct Slot {
    open: Arc<AtomicUsize>,
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.registry.remove(self.id);
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection idle at least this long may be closed to make room for a
/// new one when every slot is taken.
const MIN_IDLE_TO_EVICT: Duration = Duration::from_secs(1);

/// The open connections, with when each last received a byte, so the one
/// idle longest can be closed when a new client needs its slot.
#[derive(Default)]
struct Registry {
    connections: Mutex<HashMap<u64, Registered>>,
    next_id: AtomicU64,
}

/// One open connection as the registry knows it.
struct Registered {
    /// A handle on its socket, to shut it.
    stream: std::net::TcpStream,
    /// Milliseconds since `epoch` when it last received a byte.
    last_read_ms: Arc<AtomicU64>,
}

impl Registry {
    fn add(&self, stream: std::net::TcpStream, last_read_ms: Arc<AtomicU64>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.connections.lock().unwrap_or_else(PoisonError::into_inner).insert(id, Registered { stream, last_read_ms });
        id
    }

    fn remove(&self, id: u64) {
        self.connections.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
    }

    /// Shuts the connection idle longest, if one has been idle at least
    /// [`MIN_IDLE_TO_EVICT`]; answers whether one was.
    fn evict_idlest(&self, now_ms: u64) -> bool {
        let mut connections = self.connections.lock().unwrap_or_else(PoisonError::into_inner);
        let idlest = connections
            .iter()
            .map(|(id, registered)| (*id, registered.last_read_ms.load(Ordering::Relaxed)))
            .filter(|(_, last)| now_ms.saturating_sub(*last) >= MIN_IDLE_TO_EVICT.as_millis() as u64)
            .min_by_key(|(_, last)| *last);
        let Some((id, _)) = idlest else { return false };
        if let Some(evicted) = connections.remove(&id) {
            // Its thread's blocked read ends at once and gives the slot back.
            let _ = evicted.stream.shutdown(std::net::Shutdown::Both);
        }
        true
    }
}

/// A connection's reading half, noting when each byte arrived.
struct NotedRead<R> {
    inner: R,
    last_read_ms: Arc<AtomicU64>,
    epoch: Instant,
}

impl<R: std::io::Read> std::io::Read for NotedRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        if read > 0 {
            self.last_read_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
        Ok(read)
    }
}

/// Serves `store` on `listen` until the process ends. Every write is synced
/// to disk before it is answered, so stopping the process loses nothing
/// that was acknowledged. There is no authentication: never expose it.
///
/// Connections are accepted here rather than by thrift's `TServer`, which
/// leaves Nagle's algorithm on: a reply larger than the write buffer goes
/// out in two segments, and the second waited for the client's delayed ACK
/// (~40 ms a call; measured on history reads past Redis). Each connection
/// gets a thread, at most [`WORKERS`] at once. When every slot is taken, a
/// new client takes the slot of the connection idle longest (idle at least
/// [`MIN_IDLE_TO_EVICT`]), which is closed; only when none is idle is the
/// new one refused. (Idle peers once held every slot for their whole idle
/// timeout, refusing every real client meanwhile.) A connection silent for
/// `idle_timeout` (or that takes as long to accept an answer) is closed;
/// what a peer may make the server allocate is bounded (`thrift_bounded`);
/// a connection that fails in any way gives its slot back and the loop goes
/// on.
pub fn serve_with_idle_timeout(listen: &str, store: Arc<Store>, idle_timeout: Duration) -> thrift::Result<()> {
    let processor = Arc::new(HbaseSyncProcessor::new(CompatHandler::new(store)));
    let listener = std::net::TcpListener::bind(listen)?;
    let open = Arc::new(AtomicUsize::new(0));
    let registry = Arc::new(Registry::default());
    let epoch = Instant::now();
    tracing::info!(%listen, ?idle_timeout, "HBase-compatible Thrift server listening (binary protocol, buffered transport)");
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "cannot accept a connection");
                continue;
            }
        };
        if open.fetch_add(1, Ordering::AcqRel) >= WORKERS {
            // Over by one until the evicted connection's thread wakes and
            // gives its slot back (at once: its socket is shut).
            if registry.evict_idlest(epoch.elapsed().as_millis() as u64) {
                tracing::info!(limit = WORKERS, "every connection slot taken; closed the connection idle longest for a new one");
            } else {
                open.fetch_sub(1, Ordering::AcqRel);
                tracing::warn!(limit = WORKERS, "every connection slot taken and none idle; refusing one");
                continue;
            }
        }
        let last_read_ms = Arc::new(AtomicU64::new(epoch.elapsed().as_millis() as u64));
        let handle = match stream.try_clone() {
            Ok(handle) => handle,
            Err(error) => {
                open.fetch_sub(1, Ordering::AcqRel);
                tracing::warn!(%error, "cannot keep a handle on a connection; closing it");
                continue;
            }
        };
        let slot = Slot { open: open.clone(), registry: registry.clone(), id: registry.add(handle, last_read_ms.clone()) };
        let configured = stream
            .set_nodelay(true)
            .and_then(|()| stream.set_read_timeout(Some(idle_timeout)))
            .and_then(|()| stream.set_write_timeout(Some(idle_timeout)));
        if let Err(error) = configured {
            tracing::warn!(%error, "cannot configure a connection; closing it");
            continue;
        }
        let (read, write) = match TTcpChannel::with_stream(stream).split() {
            Ok(halves) => halves,
            Err(error) => {
                tracing::warn!(%error, "cannot split a connection; closing it");
                continue;
            }
        };
        let read = NotedRead { inner: read, last_read_ms, epoch };
        let mut input = NullTolerantInputFactory(BoundedInputFactory(TBinaryInputProtocolFactory::new()))
            .create(TBufferedReadTransportFactory::new().create(Box::new(read)));
        let mut output = TBinaryOutputProtocolFactory::new().create(TBufferedWriteTransportFactory::new().create(Box::new(write)));
        let processor = processor.clone();
        std::thread::spawn(move || {
            let _slot = slot;
            // Until the client hangs up, goes silent, is evicted, or sends
            // what is not Thrift (or more than the limits).
            while processor.process(&mut *input, &mut *output).is_ok() {}
        });
    }
    Ok(())
}

//! The history table through an HBase Thrift1 gateway (a real HBase's, or
//! the project's compat server in tests): the client side of persist and
//! of the read side's cache-aside.
//!
//! Thrift1 puts one timestamp on a whole `mutateRowsTs` call, and a record's
//! cell timestamp is its view_at, so a write groups its cells by timestamp:
//! one call per distinct timestamp, rows batched inside it. Deletes travel
//! the same way, as delete mutations (a column, or a bare family: all of
//! it), grouped by their time. Calls run on a
//! small pool of connections on tokio's blocking threads (Thrift is
//! synchronous); a connection that failed is dropped, not reused, and a
//! pooled connection the gateway closed meanwhile (its idle timeout, a
//! restart, or the compat server handing the slot of an idle connection to
//! a new client) is noticed before a call is sent on it.

use std::collections::BTreeMap;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::layout::{META_FAMILY, RECORDS_FAMILY};
use futures::stream::{self, StreamExt, TryStreamExt};
use hbase_thrift::hbase::{BatchMutation, ColumnDescriptor, HbaseSyncClient, Mutation, THbaseSyncClient};
use thrift::protocol::{TBinaryInputProtocol, TBinaryOutputProtocol};
use thrift::transport::{TBufferedReadTransport, TBufferedWriteTransport, TIoChannel, TTcpChannel, WriteHalf};
use thrift_bounded::BoundedInput;

use super::mutation::{RowMutation, ScannedRow, TableCell, TableError};

/// Answers are read through [`BoundedInput`]: a gateway (or anything
/// answering on its port) cannot make the client allocate from a length it
/// merely claims, and a row of more than its element limit fails the read.
type Client = HbaseSyncClient<BoundedInput, TBinaryOutputProtocol<TBufferedWriteTransport<WriteHalf<TTcpChannel>>>>;

/// Connections kept open, and concurrent writes, at most.
const CONNECTIONS: usize = 4;
/// Concurrent reads (each on its own connection) at most; more wait.
const READS_IN_FLIGHT: usize = 32;
/// Longest wait for a connection to the gateway.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for a call's bytes to be sent, or for the next bytes of
/// its answer. A gateway that hangs fails the call (a transient error,
/// retried on a new connection) instead of holding the stage, and the
/// drain, for ever.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// A pooled connection idle this long is closed instead of reused: a
/// gateway closes idle connections (HBase's after 60 s), and a call on one
/// it closed would fail.
const POOL_IDLE: Duration = Duration::from_secs(20);

/// One Thrift call's worth of work: `mutateRowsTs` of several rows at one
/// timestamp, all puts or all deletes (a delete of a column, or of a bare
/// family: all of it, hides its versions at or before the timestamp).
struct Call(i64, Vec<BatchMutation>);

/// A table on an HBase Thrift1 gateway.
pub struct ThriftTable {
    address: String,
    table: Vec<u8>,
    /// Open connections not in use, with when each was last used.
    idle: Mutex<Vec<Pooled>>,
    reads: tokio::sync::Semaphore,
}

/// A connection and a handle on its socket, to tell whether the gateway
/// closed it while it was idle.
struct Pooled {
    client: Client,
    socket: TcpStream,
    used: std::time::Instant,
}

/// Whether the gateway still holds `socket` open with nothing unread: a
/// non-blocking peek that would block. End of stream (the gateway closed
/// it), an error, or stray bytes (an answer nobody asked for) mean the
/// connection must not carry another call.
fn still_open(socket: &TcpStream) -> bool {
    if socket.set_nonblocking(true).is_err() {
        return false;
    }
    let open = matches!(socket.peek(&mut [0u8; 1]), Err(error) if error.kind() == std::io::ErrorKind::WouldBlock);
    // The client reads the same socket, blocking.
    socket.set_nonblocking(false).is_ok() && open
}

fn table_error(what: &str, error: thrift::Error) -> TableError {
    // IllegalArgument is HBase refusing the call itself; anything else
    // (I/O, IOError, transport) may pass on a later try.
    let rejected = match &error {
        thrift::Error::User(inner) => {
            inner.downcast_ref::<hbase_thrift::hbase::IllegalArgument>().map(|e| e.message.clone().unwrap_or_default())
        }
        _ => None,
    };
    match rejected {
        Some(message) => TableError::Rejected(format!("HBase Thrift {what}: {message}")),
        None => TableError::Transient(format!("HBase Thrift {what}: {error}")),
    }
}

impl ThriftTable {
    /// A table `table` on the gateway at `address` (`host:port`); connects
    /// on first use.
    pub fn new(address: &str, table: &str) -> Arc<Self> {
        Arc::new(ThriftTable {
            address: address.to_owned(),
            table: table.as_bytes().to_vec(),
            idle: Mutex::new(Vec::new()),
            reads: tokio::sync::Semaphore::new(READS_IN_FLIGHT),
        })
    }

    fn connect(&self) -> Result<(Client, TcpStream), TableError> {
        let connect_error = |error: std::io::Error| table_error(&format!("connect to {}", self.address), thrift::Error::from(error));
        let mut last_error = std::io::Error::new(std::io::ErrorKind::NotFound, "the address resolves to nothing");
        let mut connected = None;
        for address in self.address.to_socket_addrs().map_err(connect_error)? {
            match TcpStream::connect_timeout(&address, CONNECT_TIMEOUT) {
                Ok(stream) => {
                    connected = Some(stream);
                    break;
                }
                Err(error) => last_error = error,
            }
        }
        let stream = connected.ok_or_else(|| connect_error(last_error))?;
        stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(|error| table_error("set the read timeout", thrift::Error::from(error)))?;
        stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(|error| table_error("set the write timeout", thrift::Error::from(error)))?;
        // A call is written in more than one segment; with Nagle's algorithm
        // the last waits for the peer's delayed ACK (~40 ms a call).
        stream.set_nodelay(true).map_err(|error| table_error("set TCP_NODELAY", thrift::Error::from(error)))?;
        let socket = stream.try_clone().map_err(|error| table_error("clone the socket", thrift::Error::from(error)))?;
        let channel = TTcpChannel::with_stream(stream);
        let (read, write) = channel.split().map_err(|error| table_error("channel", error))?;
        let client = HbaseSyncClient::new(
            BoundedInput::new(Box::new(TBinaryInputProtocol::new(TBufferedReadTransport::new(read), true))),
            TBinaryOutputProtocol::new(TBufferedWriteTransport::new(write), true),
        );
        Ok((client, socket))
    }

    /// A pooled connection the gateway still holds open, or a new one.
    fn checkout(&self) -> Result<(Client, TcpStream), TableError> {
        loop {
            let pooled = {
                let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
                idle.retain(|pooled| pooled.used.elapsed() < POOL_IDLE);
                idle.pop()
            };
            match pooled {
                Some(pooled) if still_open(&pooled.socket) => return Ok((pooled.client, pooled.socket)),
                Some(_) => continue,
                None => return self.connect(),
            }
        }
    }

    /// Runs `call` on a pooled connection (blocking); a connection whose
    /// call failed is dropped.
    fn with_client<T>(&self, what: &str, call: impl FnOnce(&mut Client) -> thrift::Result<T>) -> Result<T, TableError> {
        let (mut client, socket) = self.checkout()?;
        let result = call(&mut client).map_err(|error| table_error(what, error))?;
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < CONNECTIONS + READS_IN_FLIGHT {
            idle.push(Pooled { client, socket, used: std::time::Instant::now() });
        }
        Ok(result)
    }

    /// Creates the table with families `r` (records) and `m` (meta), one
    /// version each, unless it exists.
    pub fn ensure_table(&self) -> Result<(), TableError> {
        let table = self.table.clone();
        self.with_client("create table", move |client| {
            if client.get_table_names()?.contains(&table) {
                return Ok(());
            }
            let family = |name: &str| ColumnDescriptor {
                name: Some(name.as_bytes().to_vec()),
                max_versions: Some(1),
                ..ColumnDescriptor::default()
            };
            client.create_table(table, vec![family(&format!("{RECORDS_FAMILY}:")), family(&format!("{META_FAMILY}:"))])
        })
    }

    fn run(&self, Call(timestamp, rows): Call) -> Result<(), TableError> {
        let table = self.table.clone();
        self.with_client("mutateRowsTs", move |client| client.mutate_rows_ts(table, rows, timestamp, BTreeMap::new()))
    }

    /// The visible cells of `row` in `columns` (`family` or
    /// `family:qualifier`): (column, timestamp, value). `getRowWithColumns`.
    pub async fn read_row(self: &Arc<Self>, row: String, columns: Vec<String>) -> Result<Vec<TableCell>, TableError> {
        let _permit = self.reads.acquire().await.map_err(|_| TableError::Transient("the table is closing".to_owned()))?;
        let table = self.clone();
        tokio::task::spawn_blocking(move || {
            let name = table.table.clone();
            let columns: Vec<Vec<u8>> = columns.into_iter().map(String::into_bytes).collect();
            let results = table.with_client("getRowWithColumns", move |client| {
                client.get_row_with_columns(name, row.into_bytes(), columns, BTreeMap::new())
            })?;
            Ok(results
                .into_iter()
                .flat_map(|result| result.columns.unwrap_or_default())
                .map(|(column, cell)| TableCell {
                    column: String::from_utf8_lossy(&column).into_owned(),
                    timestamp: cell.timestamp.unwrap_or_default(),
                    value: cell.value.unwrap_or_default(),
                })
                .collect())
        })
        .await
        .map_err(|error| TableError::Transient(format!("read task failed: {error}")))?
    }

    /// Up to `limit` rows after `after` (exclusive; `None`: from the
    /// table's first row), in row order, with their visible cells in
    /// `columns`: a scanner opened, read once and closed (`scannerOpen`,
    /// `scannerGetList`, `scannerClose`), so nothing is held between steps.
    pub async fn scan_rows(
        self: &Arc<Self>,
        after: Option<String>,
        limit: usize,
        columns: Vec<String>,
    ) -> Result<Vec<ScannedRow>, TableError> {
        let _permit = self.reads.acquire().await.map_err(|_| TableError::Transient("the table is closing".to_owned()))?;
        let table = self.clone();
        tokio::task::spawn_blocking(move || {
            let name = table.table.clone();
            // The smallest row key after `after`: itself followed by 0x00.
            let start = after.map(|row| [row.into_bytes(), vec![0]].concat()).unwrap_or_default();
            let columns: Vec<Vec<u8>> = columns.into_iter().map(String::into_bytes).collect();
            let limit = i32::try_from(limit).unwrap_or(i32::MAX);
            let results = table.with_client("scan", move |client| {
                let id = client.scanner_open(name, start, columns, BTreeMap::new())?;
                let rows = client.scanner_get_list(id, limit);
                client.scanner_close(id)?;
                rows
            })?;
            Ok(results
                .into_iter()
                .map(|result| {
                    let row = String::from_utf8_lossy(&result.row.unwrap_or_default()).into_owned();
                    let cells = result.columns.unwrap_or_default().into_iter().map(|(column, cell)| TableCell {
                        column: String::from_utf8_lossy(&column).into_owned(),
                        timestamp: cell.timestamp.unwrap_or_default(),
                        value: cell.value.unwrap_or_default(),
                    });
                    (row, cells.collect())
                })
                .collect())
        })
        .await
        .map_err(|error| TableError::Transient(format!("scan task failed: {error}")))?
    }

    /// Applies `mutations`: deletes first, then puts, each grouped by
    /// timestamp into one `mutateRowsTs` per distinct timestamp, up to
    /// [`CONNECTIONS`] calls at once. Every call is idempotent (timestamps
    /// are the data's own), so a retry after a partial failure converges
    /// to the same state.
    pub async fn mutate_rows(self: &Arc<Self>, mutations: Vec<RowMutation>) -> Result<(), TableError> {
        type ByTimestamp = BTreeMap<i64, BTreeMap<Vec<u8>, Vec<Mutation>>>;
        let (mut deletes, mut puts): (ByTimestamp, ByTimestamp) = Default::default();
        for mutation in mutations {
            let row = mutation.row.into_bytes();
            for (column, at) in mutation.column_deletes {
                deletes.entry(at).or_default().entry(row.clone()).or_default().push(Mutation::new(
                    true,
                    column.into_bytes(),
                    Vec::new(),
                    true,
                ));
            }
            for (column, timestamp, value) in mutation.puts {
                puts.entry(timestamp).or_default().entry(row.clone()).or_default().push(Mutation::new(
                    false,
                    column.into_bytes(),
                    value,
                    true,
                ));
            }
        }
        let calls = |grouped: ByTimestamp| -> Vec<Call> {
            grouped
                .into_iter()
                .map(|(timestamp, rows)| Call(timestamp, rows.into_iter().map(|(row, cells)| BatchMutation::new(row, cells)).collect()))
                .collect()
        };
        for calls in [calls(deletes), calls(puts)] {
            stream::iter(calls)
                .map(|call| {
                    let table = self.clone();
                    async move {
                        tokio::task::spawn_blocking(move || table.run(call))
                            .await
                            .map_err(|error| TableError::Transient(format!("write task failed: {error}")))?
                    }
                })
                .buffer_unordered(CONNECTIONS)
                .try_collect::<Vec<()>>()
                .await?;
        }
        Ok(())
    }
}

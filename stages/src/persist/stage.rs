//! The persist stage's loop: fold what arrives into a window, and write the
//! window when it holds `flush_max_rows` users, every `flush_interval_ms`,
//! and when the input closes. `ids` upserts are completed from the realtime
//! store first (an item missing there is counted and logged, never silently
//! skipped). Rows go out `batch_rows` at a time on the blocking pool; a
//! failed write is retried with capped backoff while nothing new is read,
//! so the stage pushes back on its source. Acks of the window's batches
//! (offsets to commit) are completed only after the whole window is
//! durable.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use model::{codec, keys, Batch, EventResult};
use pipeline::{Stage, StageContext, StageError, StageFuture};

use hbase_compat::store::{Change, TimedRow};

use super::table::{RowMutation, TableCell, TableError};
use super::thrift::ThriftTable;
use super::window::{Pending, Window};
use crate::realtime::RealtimeStore;

/// Family of history records.
pub const RECORDS_FAMILY: &str = "r";
/// Family of per-user meta (the recording switch).
pub const META_FAMILY: &str = "m";
/// Longest pause between two attempts at a failing write.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Where rows are written.
#[derive(Clone)]
pub enum HistoryTable {
    /// A table of the embedded on-disk store of `--embedded` (the same
    /// store the HBase-compatible server serves).
    Embedded(Arc<hbase_compat::Store>, String),
    /// A table behind an HBase Thrift1 gateway.
    Thrift(Arc<ThriftTable>),
}

impl HistoryTable {
    /// Makes sure the table exists, retrying with capped backoff until the
    /// store answers (the stage reads nothing meanwhile).
    async fn prepare(&self, stage: &str) {
        let table = match self {
            HistoryTable::Thrift(table) => table.clone(),
            HistoryTable::Embedded(store, table) => {
                let families = [(b"r:".to_vec(), 1), (b"m:".to_vec(), 1)];
                match store.create_table(table.as_bytes(), &families) {
                    Ok(()) | Err(hbase_compat::store::StoreError::TableExists(_)) => {}
                    Err(error) => tracing::error!(stage, %error, "cannot create the embedded history table"),
                }
                return;
            }
        };
        let mut backoff = Duration::from_millis(100);
        loop {
            let attempt = table.clone();
            match tokio::task::spawn_blocking(move || attempt.ensure_table()).await {
                Ok(Ok(())) => return,
                Ok(Err(error)) => tracing::warn!(stage, %error, "history table not ready; retrying"),
                Err(error) => tracing::warn!(stage, %error, "history table check failed; retrying"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn mutate_rows(&self, rows: Vec<RowMutation>) -> Result<(), TableError> {
        match self {
            HistoryTable::Embedded(store, table) => {
                let (store, table) = (store.clone(), table.clone());
                let rows: Vec<TimedRow> = rows.into_iter().map(embedded_changes).collect();
                tokio::task::spawn_blocking(move || store.apply(table.as_bytes(), &rows).map_err(TableError::from))
                    .await
                    .map_err(|error| TableError::Transient(format!("write task failed: {error}")))?
            }
            HistoryTable::Thrift(table) => table.mutate_rows(rows).await,
        }
    }
}

impl HistoryTable {
    /// The visible cells of `uid`'s row in `columns` (`family` or
    /// `family:qualifier`; empty: all).
    pub async fn read_row(&self, uid: u64, columns: Vec<String>) -> Result<Vec<TableCell>, TableError> {
        let row = keys::hbase_row(uid);
        match self {
            HistoryTable::Embedded(store, table) => {
                let (store, table) = (store.clone(), table.clone());
                let filter = hbase_compat::store::ColumnFilter::new(columns.into_iter().map(String::into_bytes).collect());
                let cells = tokio::task::spawn_blocking(move || match store.get_row(table.as_bytes(), row.as_bytes(), &filter, None) {
                    // Nothing persisted yet: the table comes with the job.
                    Err(hbase_compat::store::StoreError::NoSuchTable(_)) => Ok(Vec::new()),
                    other => other.map_err(TableError::from),
                })
                .await
                .map_err(|error| TableError::Transient(format!("read task failed: {error}")))??;
                Ok(cells
                    .into_iter()
                    .map(|cell| TableCell {
                        column: String::from_utf8_lossy(&cell.column).into_owned(),
                        timestamp: cell.timestamp,
                        value: cell.value,
                    })
                    .collect())
            }
            HistoryTable::Thrift(table) => table.read_row(row, columns).await,
        }
    }
}

/// A built persist stage.
pub struct PersistStage {
    /// Where rows go.
    pub table: HistoryTable,
    /// Where `ids` records are read from.
    pub records: Option<RealtimeStore>,
    /// Write the window at this many users.
    pub flush_max_rows: usize,
    /// Write the window at least this often.
    pub flush_interval: Duration,
    /// Rows per table call.
    pub batch_rows: usize,
    /// Rows per second written at most.
    pub write_limit: pipeline::rate_limit::RateLimit,
    /// Where rows the store rejects go.
    pub dead_letters: DeadLetters,
}

/// Where rows the history table rejects go: the dead-letter topic, as a
/// replayable merge batch with the reason; or, without a broker
/// (`--embedded`), the log.
pub enum DeadLetters {
    /// A Kafka topic.
    Kafka {
        /// Idempotent producer.
        producer: rdkafka::producer::FutureProducer,
        /// The dead-letter topic.
        topic: String,
    },
    /// Logged and counted only.
    Log,
}

impl DeadLetters {
    async fn reject(&self, row: &RowMutation, reason: &str, stage: &str) {
        metrics::counter!("histflow_persist_rejected_rows_total").increment(1);
        let ops = ops_of(row);
        let uid = ops.first().map_or(0, model::Op::uid);
        match self {
            DeadLetters::Log => {
                tracing::error!(stage, uid, row = %row.row, reason, "history table rejected a row; it is not written (no dead-letter topic under --embedded)")
            }
            DeadLetters::Kafka { producer, topic } => {
                let shard = keys::shard_of(uid, 1);
                for payload in codec::encode_merge_batch(shard, &ops, 1 << 20) {
                    let headers = rdkafka::message::OwnedHeaders::new()
                        .insert(rdkafka::message::Header { key: "reason", value: Some(reason) })
                        .insert(rdkafka::message::Header { key: "row", value: Some(&row.row) });
                    let record = rdkafka::producer::FutureRecord::to(topic).key(&row.row).payload(&payload).headers(headers);
                    if let Err((error, _)) = producer.send(record, rdkafka::util::Timeout::Never).await {
                        tracing::error!(stage, uid, %error, "rejected row not delivered to the dead-letter topic");
                    }
                }
                tracing::warn!(stage, uid, row = %row.row, reason, topic, "history table rejected a row; sent to the dead-letter topic");
            }
        }
    }
}

/// A row mutation as merge ops again (for the dead-letter topic).
fn ops_of(row: &RowMutation) -> Vec<model::Op> {
    let uid = keys::uid_of_hbase_row(&row.row).unwrap_or(0);
    let mut ops = Vec::new();
    for (column, at) in &row.column_deletes {
        match column.split_once(':') {
            Some((_, item)) => ops.push(model::Op::Delete { uid, item: item.to_owned(), at: *at }),
            None => ops.push(model::Op::Clear { uid, at: *at }),
        }
    }
    for (column, at, value) in &row.puts {
        match column.split_once(':') {
            Some((RECORDS_FAMILY, _)) => ops.extend(codec::decode_record(value).ok().map(model::Op::Upsert)),
            _ => ops.push(model::Op::SetRecording { uid, paused: value.as_slice() == b"1", at: *at }),
        }
    }
    ops
}

/// A row mutation as changes of the embedded store, each at its time.
impl PersistStage {
    /// A persist stage writing to `table`, reading `ids` records from
    /// `records`, with the window and limits of `config`.
    pub fn new(config: &super::PersistConfig, table: HistoryTable, records: Option<RealtimeStore>, dead_letters: DeadLetters) -> Self {
        PersistStage {
            table,
            records,
            flush_max_rows: config.flush_max_rows,
            flush_interval: Duration::from_millis(config.flush_interval_ms),
            batch_rows: config.batch_rows,
            write_limit: pipeline::rate_limit::RateLimit::new(&config.write_rate_limit),
            dead_letters,
        }
    }
}

fn embedded_changes(mutation: RowMutation) -> TimedRow {
    let mut changes: Vec<(Change, i64)> = Vec::new();
    changes.extend(mutation.column_deletes.into_iter().map(|(column, at)| (Change::Delete { column: column.into_bytes() }, at)));
    changes.extend(mutation.puts.into_iter().map(|(column, at, value)| (Change::Put { column: column.into_bytes(), value }, at)));
    (mutation.row.into_bytes(), changes)
}

/// The mutation of `uid`'s row, created on first use.
fn row_of(rows: &mut BTreeMap<u64, RowMutation>, uid: u64) -> &mut RowMutation {
    rows.entry(uid).or_insert_with(|| RowMutation { row: keys::hbase_row(uid), ..RowMutation::default() })
}

impl PersistStage {
    /// Writes `rows`, retrying transient failures with capped backoff
    /// (reading nothing new meanwhile); answers the reason when the store
    /// rejects the write itself.
    async fn write_until_taken(&self, rows: Vec<RowMutation>, cx: &StageContext<Batch>) -> Result<(), String> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.table.mutate_rows(rows.clone()).await {
                Ok(()) => return Ok(()),
                Err(TableError::Rejected(reason)) => return Err(reason),
                Err(error) => {
                    cx.metrics.error();
                    metrics::counter!("histflow_persist_retries_total").increment(1);
                    tracing::warn!(stage = %cx.name, %error, retry_in_ms = backoff.as_millis() as u64, "history write failed; retrying, reading nothing new meanwhile");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Turns a window into row mutations, reading `ids` records.
    async fn mutations(&self, window: &mut Window, stage: &str) -> Result<Vec<RowMutation>, StageError> {
        let mut rows: BTreeMap<u64, RowMutation> = BTreeMap::new();

        let mut refs: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for ((uid, item), pending) in window.upserts.drain() {
            match pending {
                Pending::Full(record) => {
                    row_of(&mut rows, uid).puts.push((format!("{RECORDS_FAMILY}:{item}"), record.view_at, codec::encode_record(&record)))
                }
                Pending::Ref(_) => refs.entry(uid).or_default().push(item),
            }
        }
        if !refs.is_empty() {
            let Some(store) = &self.records else {
                return Err(format!("stage `{stage}`: ids payload needs `redis_url` to read records from").into());
            };
            let wanted: Vec<(u64, Vec<String>)> = refs.into_iter().collect();
            // Redis away: retry the read (the refs are held here), reading
            // nothing new meanwhile, as for writes.
            let mut backoff = Duration::from_millis(100);
            let found = loop {
                match store.read_records(&wanted).await {
                    Ok(found) => break found,
                    Err(error) => {
                        metrics::counter!("histflow_persist_retries_total").increment(1);
                        tracing::warn!(stage, %error, retry_in_ms = backoff.as_millis() as u64, "cannot read ids records from Redis; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            };
            for ((uid, items), records) in wanted.iter().zip(found) {
                for (item, record) in items.iter().zip(records) {
                    match record.map(|bytes| codec::decode_record(&bytes).map(|record| (record, bytes))) {
                        Some(Ok((record, bytes))) => {
                            row_of(&mut rows, *uid).puts.push((format!("{RECORDS_FAMILY}:{item}"), record.view_at, bytes))
                        }
                        Some(Err(error)) => {
                            metrics::counter!("histflow_persist_undecodable_records_total").increment(1);
                            tracing::warn!(stage, uid, item, %error, "record in the realtime store cannot be decoded; not written");
                        }
                        None => {
                            metrics::counter!("histflow_persist_missing_records_total").increment(1);
                            tracing::warn!(stage, uid, item, "record not in the realtime store (trimmed, expired or deleted); not written");
                        }
                    }
                }
            }
        }
        for ((uid, item), at) in window.deletes.drain() {
            row_of(&mut rows, uid).column_deletes.push((format!("{RECORDS_FAMILY}:{item}"), at));
        }
        for (uid, at) in window.clears.drain() {
            // A family delete, not a row delete: the pause flag in `m`
            // survives the clear.
            row_of(&mut rows, uid).column_deletes.push((RECORDS_FAMILY.to_owned(), at));
        }
        window.clear_users();
        for (uid, (paused, at)) in window.recording.drain() {
            row_of(&mut rows, uid).puts.push((format!("{META_FAMILY}:paused"), at, vec![u8::from(paused) + b'0']));
        }
        Ok(rows.into_values().collect())
    }

    /// Tells the realtime store which users got records in HBase, voiding
    /// the read path's "HBase holds nothing more" notes of those users;
    /// retried while Redis is away (before the offsets are committed, so a
    /// crash meanwhile replays the window and notes again).
    async fn note_written(&self, mutations: &[RowMutation], stage: &str) {
        let Some(store) = &self.records else { return };
        let uids: Vec<u64> = mutations
            .iter()
            .filter(|row| row.puts.iter().any(|(column, _, _)| column.starts_with("r:")))
            .filter_map(|row| keys::uid_of_hbase_row(&row.row))
            .collect();
        let mut backoff = Duration::from_millis(100);
        while let Err(error) = store.note_hbase_written(&uids).await {
            metrics::counter!("histflow_persist_retries_total").increment(1);
            tracing::warn!(stage, %error, retry_in_ms = backoff.as_millis() as u64, "cannot note the written users in Redis; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Writes the window (retrying until it lands), then answers its acks.
    async fn flush(&self, window: &mut Window, cx: &StageContext<Batch>) -> Result<(), StageError> {
        let mutations = self.mutations(window, &cx.name).await?;
        let written_at = model::now_ms();
        for chunk in mutations.chunks(self.batch_rows.max(1)) {
            cx.metrics.rate_limit_wait(self.write_limit.take_all(chunk.len()).await);
            if let Err(reason) = self.write_until_taken(chunk.to_vec(), cx).await {
                // Rejected: find the rows the store refuses, write the rest.
                tracing::warn!(stage = %cx.name, %reason, rows = chunk.len(), "history write rejected; writing its rows one by one to isolate the refused ones");
                for row in chunk {
                    if let Err(reason) = self.write_until_taken(vec![row.clone()], cx).await {
                        self.dead_letters.reject(row, &reason, &cx.name).await;
                    }
                }
            }
            let cells: usize = chunk.iter().map(RowMutation::cell_count).sum();
            metrics::counter!("histflow_persist_rows_total").increment(chunk.len() as u64);
            metrics::counter!("histflow_persist_cells_total").increment(cells as u64);
            metrics::counter!("histflow_persist_batches_total").increment(1);
            for mutation in chunk {
                for (_, timestamp, _) in mutation.puts.iter().filter(|(column, _, _)| column.starts_with(RECORDS_FAMILY)) {
                    metrics::histogram!("histflow_persist_durable_lag_seconds").record((written_at - timestamp).max(0) as f64 / 1000.0);
                }
            }
        }
        self.note_written(&mutations, &cx.name).await;
        metrics::counter!("histflow_persist_events_total").increment(window.ops as u64);
        window.ops = 0;
        for ack in window.acks.drain(..) {
            ack.complete(Ok(vec![EventResult { recorded: true, first_today: false }]));
        }
        Ok(())
    }
}

impl Stage<Batch> for PersistStage {
    fn run(self: Box<Self>, mut cx: StageContext<Batch>) -> StageFuture {
        async move {
            self.table.prepare(&cx.name).await;
            let mut window = Window::default();
            let mut tick = tokio::time::interval(self.flush_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    received = cx.input.recv() => match received {
                        Some(batch) => {
                            window.acks.extend(batch.ack);
                            for op in batch.ops {
                                window.add(op);
                            }
                            if window.rows() >= self.flush_max_rows {
                                self.flush(&mut window, &cx).await?;
                            }
                        }
                        None => break,
                    },
                    _ = tick.tick() => if !window.is_empty() || !window.acks.is_empty() {
                        self.flush(&mut window, &cx).await?;
                    },
                }
            }
            self.flush(&mut window, &cx).await?;
            Ok(())
        }
        .boxed()
    }
}

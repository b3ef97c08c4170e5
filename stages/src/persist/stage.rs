//! The persist stage's loop: fold what arrives into a window, and write the
//! window when it holds `flush_max_rows` users, every `flush_interval_ms`,
//! and when the input closes. `ids` upserts are completed from the realtime
//! store first (an item missing there is counted and logged, never silently
//! skipped). Rows go out `batch_rows` at a time; a failed write is retried
//! with capped backoff while nothing new is read, so the stage pushes back
//! on its source. Acks of the window's batches (offsets to commit) are
//! completed only after the whole window is durable.

use std::collections::BTreeMap;
use std::time::Duration;

use backends::history_table::{self, HistoryTable, RowMutation, TableError, Wanted};
use backends::retry;
use backends::user_state::UserStore;
use futures::FutureExt;
use model::{codec, Batch, EventResult};
use pipeline::health::Dependency;
use pipeline::{Stage, StageContext, StageError, StageFuture};
use tokio_util::task::AbortOnDropHandle;

use super::dead_letters::DeadLetters;
use super::events::{RecordNotWritten, Retry, WindowWritten};
use super::window::{Pending, Window};
use crate::references::{read_referenced, Referenced};

/// A built persist stage.
pub struct PersistStage {
    /// Where rows go.
    pub table: HistoryTable,
    /// Where `ids` records are read from.
    pub records: Option<UserStore>,
    /// Write the window at this many users...
    pub flush_max_rows: usize,
    /// ...or this many operations folded.
    pub flush_max_ops: usize,
    /// Write the window at least this often.
    pub flush_interval: Duration,
    /// Rows per table call.
    pub batch_rows: usize,
    /// Rows per second written at most.
    pub write_limit: pipeline::rate_limit::RateLimit,
    /// Where rows the store rejects go.
    pub dead_letters: DeadLetters,
    /// What the history table answered last, for the live page.
    pub table_health: Option<Dependency>,
    /// The retention sweep, run beside the window loop.
    pub sweep: Option<super::sweep::RetentionSweep>,
}

impl PersistStage {
    /// A persist stage writing to `table`, reading `ids` records from
    /// `records`, with the window and limits of `config`.
    pub fn new(config: &super::PersistConfig, table: HistoryTable, records: Option<UserStore>, dead_letters: DeadLetters) -> Self {
        PersistStage {
            table,
            records,
            flush_max_rows: config.flush_max_rows,
            flush_max_ops: config.flush_max_ops,
            flush_interval: Duration::from_millis(config.flush_interval_ms),
            batch_rows: config.batch_rows,
            write_limit: pipeline::rate_limit::RateLimit::new(&config.write_rate_limit),
            dead_letters,
            table_health: None,
            sweep: None,
        }
    }

    fn table_answered(&self, up: bool) {
        if let Some(health) = &self.table_health {
            health.set_up(up);
        }
    }
}

/// Per user, the `ids` references of a window: (item, view_at shipped).
pub type References = BTreeMap<u64, Vec<(String, i64)>>;

/// Turns a window into row mutations, reading `ids` records from
/// `records` and, for business clears, the rows they clear from `table`;
/// also answers the references read, per user (item, view_at shipped), to
/// release once written. The persist stage and `histflow replay` both
/// write through it.
pub async fn window_rows(
    window: &mut Window,
    table: &HistoryTable,
    records: Option<&UserStore>,
    stage: &str,
) -> Result<(Vec<RowMutation>, References), StageError> {
    let mut rows: BTreeMap<u64, RowMutation> = BTreeMap::new();

    let mut references = References::new();
    for ((uid, item), pending) in window.upserts.drain() {
        match pending {
            Pending::Full(record) => row_of(&mut rows, uid).put_record(&item, record.view_at, codec::encode_record(&record)),
            Pending::Ref(view_at) => references.entry(uid).or_default().push((item, view_at)),
        }
    }
    if !references.is_empty() {
        let Some(store) = records else {
            return Err(format!("stage `{stage}`: ids payload needs `redis_url` to read records from").into());
        };
        let wanted: Vec<(u64, Vec<String>)> =
            references.iter().map(|(uid, items)| (*uid, items.iter().map(|(item, _)| item.clone()).collect())).collect();
        // Redis away: retry the read (the refs are held here), reading
        // nothing new meanwhile, as for writes.
        let found = read_referenced(store, &wanted, |error, pause| {
            Retry { stage, what: "cannot read ids records from Redis; retrying", error, pause }.emit()
        })
        .await;
        for ((uid, items), records) in wanted.iter().zip(found) {
            for (item, record) in items.iter().zip(records) {
                match record {
                    Referenced::Found(record, bytes) => row_of(&mut rows, *uid).put_record(item, record.view_at, bytes),
                    Referenced::Undecodable(error) => RecordNotWritten::Undecodable { stage, uid: *uid, item, error: &error }.emit(),
                    Referenced::Missing => RecordNotWritten::Missing { stage, uid: *uid, item }.emit(),
                }
            }
        }
    }
    for ((uid, item), at) in window.deletes.drain() {
        row_of(&mut rows, uid).delete_record(&item, at);
    }
    for (uid, at) in window.clears.drain() {
        row_of(&mut rows, uid).clear_records(at);
    }
    // A business clear deletes each of the business's items the row
    // holds or this window writes (a later, older report stays hidden by
    // it): one row read per user, whatever it clears.
    let mut business_clears: BTreeMap<u64, Vec<(String, i64)>> = BTreeMap::new();
    for ((uid, business), at) in window.business_clears.drain() {
        business_clears.entry(uid).or_default().push((business, at));
    }
    for (uid, clears) in business_clears {
        let held = retry::until_ok(
            || table.read(uid, Wanted::Records),
            |error, pause| Retry { stage, what: "cannot read a row to clear a business; retrying", error, pause }.emit(),
        )
        .await;
        let held = history_table::records(held);
        let row = row_of(&mut rows, uid);
        for (business, at) in clears {
            row.clear_business(&business, at, &held);
        }
    }
    window.clear_users();
    for (uid, (paused, at)) in window.recording.drain() {
        row_of(&mut rows, uid).set_paused(paused, at);
    }
    Ok((rows.into_values().collect(), references))
}

/// The mutation of `uid`'s row, created on first use.
fn row_of(rows: &mut BTreeMap<u64, RowMutation>, uid: u64) -> &mut RowMutation {
    rows.entry(uid).or_insert_with(|| RowMutation::of_user(uid))
}

impl PersistStage {
    /// Writes `rows`, retrying transient failures with capped backoff
    /// (reading nothing new meanwhile); answers the reason when the store
    /// rejects the write itself.
    async fn write_until_taken(&self, rows: &[RowMutation], cx: &StageContext<Batch>) -> Result<(), String> {
        let written = retry::until_ok_or_final(
            || self.table.mutate_rows(rows.to_vec()),
            |error| matches!(error, TableError::Rejected(_)),
            |error, pause| {
                cx.metrics.error();
                self.table_answered(matches!(error, TableError::Rejected(_)));
                Retry { stage: &cx.name, what: "history write failed; retrying, reading nothing new meanwhile", error, pause }.emit();
            },
        )
        .await;
        self.table_answered(true);
        written.map_err(|error| match error {
            TableError::Rejected(reason) => reason,
            other => other.to_string(),
        })
    }

    /// Releases the references the window re-read (`ids` payload): their
    /// records, now durable, may leave Redis. Retried while Redis is away
    /// (before the offsets are committed, so a crash meanwhile replays the
    /// window and releases again). A window of whole records (`fetched`,
    /// `full`) read nothing, and asks nothing of Redis.
    async fn release_written(&self, references: References, stage: &str) {
        let Some(store) = &self.records else { return };
        if references.is_empty() {
            return;
        }
        let written: Vec<(u64, Vec<(String, i64)>)> = references.into_iter().collect();
        retry::until_ok(
            || store.release_written(&written),
            |error, pause| Retry { stage, what: "cannot release the written references in Redis; retrying", error, pause }.emit(),
        )
        .await;
    }

    /// Writes the window (retrying until it lands), then answers its acks.
    async fn flush(&self, window: &mut Window, cx: &StageContext<Batch>) -> Result<(), StageError> {
        let (mut mutations, references) = window_rows(window, &self.table, self.records.as_ref(), &cx.name).await?;
        // Thrift1 carries one timestamp per call, so a chunk costs a call
        // per distinct timestamp in it: chunks of rows with near timestamps
        // cost far fewer calls than chunks in uid order (the order of the
        // writes changes nothing; every cell carries its own timestamp).
        mutations.sort_by_key(|row| row.puts.iter().map(|(_, timestamp, _)| *timestamp).min());
        let written_at = model::now_ms();
        for chunk in mutations.chunks(self.batch_rows.max(1)) {
            cx.metrics.rate_limit_wait(self.write_limit.take_all(chunk.len()).await);
            if let Err(reason) = self.write_until_taken(chunk, cx).await {
                // Rejected: find the rows the store refuses, write the rest.
                tracing::warn!(stage = %cx.name, %reason, rows = chunk.len(), "history write rejected; writing its rows one by one to isolate the refused ones");
                for row in chunk {
                    if let Err(reason) = self.write_until_taken(std::slice::from_ref(row), cx).await {
                        self.dead_letters.reject(row, &reason, &cx.name).await;
                    }
                }
            }
            WindowWritten::Chunk { rows: chunk, written_at }.emit();
        }
        self.release_written(references, &cx.name).await;
        WindowWritten::Ops(window.ops).emit();
        window.ops = 0;
        for ack in window.acks.drain(..) {
            ack.complete(Ok(vec![EventResult { recorded: true, first_today: false }]));
        }
        Ok(())
    }
}

impl Stage<Batch> for PersistStage {
    fn run(mut self: Box<Self>, mut cx: StageContext<Batch>) -> StageFuture {
        let sweep = self.sweep.take();
        async move {
            let stage = &*cx.name;
            retry::until_ok(
                || self.table.ensure_table(),
                |error, pause| {
                    self.table_answered(false);
                    Retry { stage, what: "history table not ready; retrying", error, pause }.emit()
                },
            )
            .await;
            self.table_answered(true);
            let _sweep = sweep.map(|sweep| AbortOnDropHandle::new(tokio::spawn(sweep.run())));
            let mut window = Window::default();
            // The first tick one interval from now, not at once.
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + self.flush_interval, self.flush_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    received = cx.input.recv() => match received {
                        Some(batch) => {
                            window.acks.extend(batch.ack);
                            for op in batch.ops {
                                window.add(op);
                            }
                            if window.rows() >= self.flush_max_rows || window.ops >= self.flush_max_ops {
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

#[cfg(test)]
mod tests {
    use super::*;
    use backends::history_table::EmbeddedTable;
    use model::{Ack, Op};
    use pipeline::WhenFull;

    /// A persist stage on an embedded table whose window is written only
    /// by its operation bound: no timer or row bound can fire in a test.
    #[tokio::test]
    async fn a_window_is_written_once_it_folds_flush_max_ops_operations() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(hbase_compat::Store::open(dir.path()).unwrap());
        let table = HistoryTable::Embedded(EmbeddedTable::new(store, "history"));
        let config: super::super::PersistConfig =
            toml::from_str("hbase_thrift = \"unused:9090\"\nflush_max_rows = 1000000\nflush_max_ops = 4\nflush_interval_ms = 3600000")
                .unwrap();
        let stage = Box::new(PersistStage::new(&config, table, None, DeadLetters::Log));
        let (output, input) = pipeline::edge::channel::<Batch>("consumer", "persist", 100, WhenFull::Block);
        let cx = StageContext {
            name: "persist".into(),
            input,
            output: pipeline::edge::channel::<Batch>("persist", "nowhere", 1, WhenFull::Block).0,
            shutdown: tokio_util::sync::CancellationToken::new(),
            metrics: pipeline::metrics::StageMetrics::new("persist"),
        };
        let running = tokio::spawn(stage.run(cx));
        let upsert = |oid: u64| {
            Op::Upsert(model::Record {
                uid: 1,
                business: "archive".into(),
                oid,
                sub_id: None,
                progress: 1,
                duration: None,
                device: None,
                view_at: 1000,
            })
        };
        // Three operations, then a fourth: that one reaches the bound.
        let (first, first_written) = Ack::new();
        output.send(Batch { ack: Some(first), ..Batch::of((1..=3).map(upsert).collect()) }).await.unwrap_or_else(|_| panic!("send"));
        let (second, second_written) = Ack::new();
        output.send(Batch { ack: Some(second), ..Batch::of(vec![upsert(4)]) }).await.unwrap_or_else(|_| panic!("send"));
        let answers = tokio::time::timeout(std::time::Duration::from_secs(10), async { (first_written.await, second_written.await) });
        let (first, second) = answers.await.expect("the window was not written at flush_max_ops operations");
        assert!(first.is_ok_and(|outcome| outcome.is_ok()) && second.is_ok_and(|outcome| outcome.is_ok()));
        drop(output);
        running.await.unwrap().unwrap();
    }
}

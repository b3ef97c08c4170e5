//! What the persist stage reports. Each event names its metrics once,
//! here, and logs where a person should hear of it.

use std::time::Duration;

use backends::history_table::RowMutation;
use pipeline::view::{Figure, FigureSource};

/// What the live page shows of a persist stage.
pub(crate) fn figures() -> Vec<Figure> {
    vec![
        Figure { label: "rows/s", source: FigureSource::Rate(WindowWritten::ROWS) },
        Figure { label: "durable lag p99, s", source: FigureSource::Quantile { metric: WindowWritten::DURABLE_LAG, quantile: "0.99" } },
        Figure { label: "retries/s", source: FigureSource::Rate(Retry::METRIC) },
        Figure { label: "rejected rows/s", source: FigureSource::Rate(RowRejected::METRIC) },
        Figure { label: "missing records/s", source: FigureSource::Rate(RecordNotWritten::MISSING) },
    ]
}

/// Registers the stage's counters at zero, so `/metrics` lists them
/// before their first event.
pub(crate) fn register() {
    for name in [
        Retry::METRIC,
        RecordNotWritten::MISSING,
        RecordNotWritten::UNDECODABLE,
        WindowWritten::ROWS,
        WindowWritten::CELLS,
        WindowWritten::BATCHES,
        WindowWritten::EVENTS,
        RowRejected::METRIC,
    ] {
        metrics::counter!(name).increment(0);
    }
}

/// A call to a backend failed; it is tried again after `pause`, reading
/// nothing new meanwhile.
pub(crate) struct Retry<'a> {
    pub stage: &'a str,
    /// What failed, as the log line says it.
    pub what: &'static str,
    pub error: &'a dyn std::fmt::Display,
    pub pause: Duration,
}

impl Retry<'_> {
    /// `histflow_persist_retries_total`.
    const METRIC: &'static str = "histflow_persist_retries_total";

    pub fn emit(&self) {
        metrics::counter!(Self::METRIC).increment(1);
        tracing::warn!(stage = self.stage, error = %self.error, retry_in_ms = self.pause.as_millis() as u64, "{}", self.what);
    }
}

/// An `ids` record could not be written: it is not in the realtime store,
/// or it cannot be decoded.
pub(crate) enum RecordNotWritten<'a> {
    /// Trimmed, expired or deleted before the job read it.
    Missing { stage: &'a str, uid: u64, item: &'a str },
    /// The stored bytes are not a record.
    Undecodable { stage: &'a str, uid: u64, item: &'a str, error: &'a dyn std::fmt::Display },
}

impl RecordNotWritten<'_> {
    /// `histflow_persist_missing_records_total`.
    const MISSING: &'static str = "histflow_persist_missing_records_total";
    /// `histflow_persist_undecodable_records_total`.
    const UNDECODABLE: &'static str = "histflow_persist_undecodable_records_total";

    pub fn emit(&self) {
        match self {
            RecordNotWritten::Missing { stage, uid, item } => {
                metrics::counter!(Self::MISSING).increment(1);
                tracing::warn!(stage, uid, item, "record not in the realtime store (trimmed, expired or deleted); not written");
            }
            RecordNotWritten::Undecodable { stage, uid, item, error } => {
                metrics::counter!(Self::UNDECODABLE).increment(1);
                tracing::warn!(stage, uid, item, %error, "record in the realtime store cannot be decoded; not written");
            }
        }
    }
}

/// Part of a window became durable.
pub(crate) enum WindowWritten<'a> {
    /// One chunk of rows was written at `written_at` (unix ms).
    Chunk { rows: &'a [RowMutation], written_at: i64 },
    /// The whole window, folded from this many ops, is durable.
    Ops(usize),
}

impl WindowWritten<'_> {
    /// `histflow_persist_rows_total`.
    const ROWS: &'static str = "histflow_persist_rows_total";
    /// `histflow_persist_cells_total`.
    const CELLS: &'static str = "histflow_persist_cells_total";
    /// `histflow_persist_batches_total`.
    const BATCHES: &'static str = "histflow_persist_batches_total";
    /// `histflow_persist_durable_lag_seconds`: now − view_at per record.
    const DURABLE_LAG: &'static str = "histflow_persist_durable_lag_seconds";
    /// `histflow_persist_events_total`.
    const EVENTS: &'static str = "histflow_persist_events_total";

    pub fn emit(&self) {
        match self {
            WindowWritten::Chunk { rows, written_at } => {
                let cells: usize = rows.iter().map(RowMutation::cell_count).sum();
                metrics::counter!(Self::ROWS).increment(rows.len() as u64);
                metrics::counter!(Self::CELLS).increment(cells as u64);
                metrics::counter!(Self::BATCHES).increment(1);
                let lag = metrics::histogram!(Self::DURABLE_LAG);
                for row in rows.iter() {
                    for timestamp in row.record_times() {
                        lag.record((written_at - timestamp).max(0) as f64 / 1000.0);
                    }
                }
            }
            WindowWritten::Ops(ops) => metrics::counter!(Self::EVENTS).increment(*ops as u64),
        }
    }
}

/// The history table refused a row.
pub(crate) struct RowRejected<'a> {
    pub stage: &'a str,
    pub uid: u64,
    pub row: &'a str,
    pub reason: &'a str,
    /// The dead-letter topic it went to; `None`: logged only.
    pub topic: Option<&'a str>,
}

impl RowRejected<'_> {
    /// `histflow_persist_rejected_rows_total`.
    const METRIC: &'static str = "histflow_persist_rejected_rows_total";

    pub fn emit(&self) {
        metrics::counter!(Self::METRIC).increment(1);
        let RowRejected { stage, uid, row, reason, topic } = self;
        match topic {
            Some(topic) => tracing::warn!(stage, uid, row, reason, topic, "history table rejected a row; sent to the dead-letter topic"),
            None => tracing::error!(
                stage,
                uid,
                row,
                reason,
                "history table rejected a row; it is not written (no dead-letter topic under --embedded)"
            ),
        }
    }
}

//! What the read side reports. Each event names its metric once, here, and
//! both counts and (where a person should hear of it) logs.

/// Registers the read side's counters at zero, so `/metrics` lists them
/// before their first event.
pub fn register() {
    for source in ["realtime", "hbase"] {
        metrics::counter!(PageServed::METRIC, "source" => source).increment(0);
    }
    metrics::counter!(HbaseRead::METRIC).increment(0);
    metrics::counter!(UndecodableRecord::METRIC).increment(0);
    metrics::counter!(ReadRetried::METRIC).increment(0);
}

/// A history page was answered.
pub(crate) struct PageServed {
    /// The page needed the history table (Redis ran short).
    pub read_hbase: bool,
}

impl PageServed {
    /// `histflow_read_pages_total{source}`: pages, by whether HBase was read.
    const METRIC: &'static str = "histflow_read_pages_total";

    pub fn emit(&self) {
        let source = if self.read_hbase { "hbase" } else { "realtime" };
        metrics::counter!(Self::METRIC, "source" => source).increment(1);
    }
}

/// The read side called the history table (cache-aside or progress
/// fallback).
pub(crate) struct HbaseRead;

impl HbaseRead {
    /// `histflow_read_hbase_calls_total`.
    const METRIC: &'static str = "histflow_read_hbase_calls_total";

    pub fn emit(&self) {
        metrics::counter!(Self::METRIC).increment(1);
    }
}

/// A stored record could not be decoded; it is left out of the answer.
pub(crate) struct UndecodableRecord<'a> {
    pub uid: u64,
    pub item: &'a str,
    pub error: &'a dyn std::fmt::Display,
}

impl UndecodableRecord<'_> {
    /// `histflow_read_undecodable_records_total`.
    const METRIC: &'static str = "histflow_read_undecodable_records_total";

    pub fn emit(&self) {
        metrics::counter!(Self::METRIC).increment(1);
        tracing::warn!(uid = self.uid, item = self.item, error = %self.error, "stored record cannot be decoded; left out of the answer");
    }
}

/// A store call of a read failed (a timeout under load, a dropped
/// connection) and is tried again after a pause.
pub(crate) struct ReadRetried<'a> {
    /// Which call.
    pub call: &'static str,
    /// The attempt that failed (1 for the first).
    pub attempt: u32,
    pub error: &'a dyn std::fmt::Display,
}

impl ReadRetried<'_> {
    /// `histflow_read_retries_total`.
    const METRIC: &'static str = "histflow_read_retries_total";

    pub fn emit(&self) {
        metrics::counter!(Self::METRIC).increment(1);
        tracing::info!(call = self.call, attempt = self.attempt, error = %self.error, "a read's store call failed; trying again");
    }
}

//! Per-stage and per-edge runtime metrics, registered once per stage so the
//! hot path only touches pre-resolved handles. Every metric name of the
//! engine lives here; a stage kind declares its own beside the event that
//! emits it (its `events` module).
//!
//! Exported (by whoever installs a `metrics` recorder, e.g. the Prometheus
//! exporter behind `/metrics`):
//! - `histflow_stage_events_in_total{stage}`: events a stage took in.
//! - `histflow_stage_events_out_total{stage}`: events a stage emitted.
//! - `histflow_stage_errors_total{stage}`: errors a stage reported.
//! - `histflow_stage_backpressure_wait_microseconds_total{stage}`: time the
//!   stage spent waiting for room on a full downstream edge.
//! - `histflow_stage_rate_limit_wait_microseconds_total{stage}`: time the
//!   stage spent waiting on its rate limit.
//! - `histflow_edge_queue_events{from,to}` / `histflow_edge_capacity_events{from,to}`:
//!   events queued on an edge now, and its capacity.
//! - `histflow_edge_rejected_total{from,to}`: sends refused by a full
//!   `reject` edge.
//! - `histflow_edge_blocked_microseconds_total{from,to}`: time senders
//!   spent waiting for room on this (full, `block`) edge, counted when a
//!   wait ends.
//! - `histflow_edge_waiting_senders{from,to}`: senders waiting for room on
//!   it now (a wait that has not ended yet).

use std::time::Duration;

use metrics::{counter, gauge, Counter, Gauge};

/// Handles for one stage's metrics.
#[derive(Clone)]
pub struct StageMetrics {
    events_in: Counter,
    events_out: Counter,
    errors: Counter,
    backpressure_wait: Counter,
    rate_limit_wait: Counter,
}

impl StageMetrics {
    /// Registers (or finds) the metrics of stage `stage`.
    pub fn new(stage: &str) -> Self {
        let labels = [("stage", stage.to_owned())];
        StageMetrics {
            events_in: counter!("histflow_stage_events_in_total", &labels),
            events_out: counter!("histflow_stage_events_out_total", &labels),
            errors: counter!("histflow_stage_errors_total", &labels),
            backpressure_wait: counter!("histflow_stage_backpressure_wait_microseconds_total", &labels),
            rate_limit_wait: counter!("histflow_stage_rate_limit_wait_microseconds_total", &labels),
        }
    }

    /// Counts events taken in.
    pub fn events_in(&self, events: usize) {
        self.events_in.increment(events as u64);
    }

    /// Counts events emitted.
    pub fn events_out(&self, events: usize) {
        self.events_out.increment(events as u64);
    }

    /// Counts one error of this stage (stages call it; it does not log).
    pub fn error(&self) {
        self.errors.increment(1);
    }

    /// Adds time spent blocked by a full downstream edge.
    pub fn backpressure_wait(&self, waited: Duration) {
        self.backpressure_wait.increment(waited.as_micros() as u64);
    }

    /// Adds time spent waiting on the stage's rate limit.
    pub fn rate_limit_wait(&self, waited: Duration) {
        if !waited.is_zero() {
            self.rate_limit_wait.increment(waited.as_micros() as u64);
        }
    }
}

/// Handles for one edge's metrics.
pub(crate) struct EdgeMetrics {
    capacity: Gauge,
    queued: Gauge,
    rejected: Counter,
    blocked: Counter,
    waiting: Gauge,
}

impl EdgeMetrics {
    pub(crate) fn new(from: &str, to: &str, capacity: usize) -> Self {
        let labels = [("from", from.to_owned()), ("to", to.to_owned())];
        let capacity_gauge = gauge!("histflow_edge_capacity_events", &labels);
        capacity_gauge.set(capacity as f64);
        EdgeMetrics {
            capacity: capacity_gauge,
            queued: gauge!("histflow_edge_queue_events", &labels),
            rejected: counter!("histflow_edge_rejected_total", &labels),
            blocked: counter!("histflow_edge_blocked_microseconds_total", &labels),
            waiting: gauge!("histflow_edge_waiting_senders", &labels),
        }
    }

    pub(crate) fn capacity(&self, events: usize) {
        self.capacity.set(events as f64);
    }

    pub(crate) fn queued(&self, events: usize) {
        self.queued.set(events as f64);
    }

    pub(crate) fn rejected(&self) {
        self.rejected.increment(1);
    }

    pub(crate) fn wait_started(&self) {
        self.waiting.increment(1.0);
    }

    pub(crate) fn wait_ended(&self, waited: Duration) {
        self.waiting.decrement(1.0);
        self.blocked.increment(waited.as_micros() as u64);
    }
}

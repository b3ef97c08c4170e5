//! `GET /admin/stats`: the running topology with, per stage, events in and
//! out, errors and its kind's figures, per edge its fill and time blocked,
//! and what each backend answered last, as the live page (`/ui`) polls it.
//!
//! Every figure is read from the process's own Prometheus rendering, so the
//! page and `/metrics` never disagree. Rates are the change since an
//! earlier rendering kept here (the newest at least a second old), so no
//! background task runs while nobody looks.
//!
//! - `exposition`: reading the Prometheus text.

mod exposition;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use pipeline::health::{BackendHealth, Health, Readiness};
use pipeline::view::{FigureSource, StageView, TopologyView};
use serde::Serialize;

pub use exposition::Exposition;

/// Renderings kept for rates.
const KEPT: usize = 8;
/// Rates are taken over at least this long when a rendering that old is kept.
const RATE_WINDOW: Duration = Duration::from_secs(1);
/// A rendering is kept only this long after the one before it.
const KEEP_EVERY: Duration = Duration::from_millis(500);
/// An edge at or above this fill counts as full.
const FULL_FILL: f64 = 0.9;
/// An edge whose senders waited this share of the interval counts as full.
const FULL_BLOCKED_SHARE: f64 = 0.5;

/// What `/admin/stats` answers.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// When the figures were read, milliseconds since the epoch.
    pub taken_at_ms: i64,
    /// The interval the per-second figures cover; `null` on the first
    /// call (no earlier reading yet), when every rate is `null` too.
    pub interval_s: Option<f64>,
    /// `ready`, `starting`, `waiting for <backend>` or `draining`.
    pub readiness: String,
    /// Every backend the running stages use, and what it answered last.
    pub backends: Vec<BackendHealth>,
    /// The running topology: stages (placed in columns), edges.
    pub topology: TopologyView,
    /// One entry per stage of `topology.stages`, in the same order.
    pub stages: Vec<StageStats>,
    /// One entry per edge of `topology.edges`, in the same order.
    pub edges: Vec<EdgeStats>,
}

/// One stage's figures.
#[derive(Debug, Clone, Serialize)]
pub struct StageStats {
    /// The stage.
    pub name: String,
    /// Whether it runs in this process (otherwise every figure is `null`).
    pub here: bool,
    /// Events taken in since the process started.
    pub events_in_total: Option<f64>,
    /// Events emitted since the process started.
    pub events_out_total: Option<f64>,
    /// Errors since the process started.
    pub errors_total: Option<f64>,
    /// Events taken in per second.
    pub events_in_per_s: Option<f64>,
    /// Events emitted per second.
    pub events_out_per_s: Option<f64>,
    /// Errors per second.
    pub errors_per_s: Option<f64>,
    /// Milliseconds per second spent waiting for room downstream.
    pub backpressure_ms_per_s: Option<f64>,
    /// Milliseconds per second spent waiting on its rate limit.
    pub rate_limit_ms_per_s: Option<f64>,
    /// Whether it met errors in the interval.
    pub failing: bool,
    /// Its kind's figures, in the kind's order.
    pub figures: Vec<FigureValue>,
}

/// One kind-specific figure.
#[derive(Debug, Clone, Serialize)]
pub struct FigureValue {
    /// What it is.
    pub label: &'static str,
    /// Its value; `null` when not measured yet.
    pub value: Option<f64>,
}

/// One edge's figures.
#[derive(Debug, Clone, Serialize)]
pub struct EdgeStats {
    /// Upstream stage.
    pub from: String,
    /// Downstream stage.
    pub to: String,
    /// Whether the edge runs in this process.
    pub here: bool,
    /// Events queued now.
    pub queued: Option<f64>,
    /// Capacity in events.
    pub capacity: usize,
    /// `queued / capacity`, 0 to 1.
    pub fill: Option<f64>,
    /// Milliseconds per second senders waited for room on it (counted
    /// when a wait ends).
    pub blocked_ms_per_s: Option<f64>,
    /// Senders waiting for room on it now.
    pub waiting_senders: Option<f64>,
    /// Sends a full `reject` edge refused since the process started.
    pub rejected_total: Option<f64>,
    /// Refused sends per second.
    pub rejected_per_s: Option<f64>,
    /// At or above 90 % fill, or it refused a send in the interval, or a
    /// sender waits for room now, or its senders waited at least half the
    /// interval.
    pub full: bool,
}

/// Reads the figures; keeps a few earlier renderings for rates.
pub struct StatsBoard {
    /// The running topology (a reload replaces it).
    view: arc_swap::ArcSwap<TopologyView>,
    metrics: PrometheusHandle,
    health: Health,
    kept: Mutex<VecDeque<(Instant, Arc<Exposition>)>>,
}

/// Two renderings and the time between them.
struct Readings<'a> {
    now: &'a Exposition,
    before: Option<(&'a Exposition, f64)>,
}

impl Readings<'_> {
    fn total(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.now.sum(name, labels)
    }

    fn rate(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let (before, seconds) = self.before?;
        let now = self.now.sum(name, labels)?;
        // A series that appeared since counts from zero.
        let then = before.sum(name, labels).unwrap_or(0.0);
        Some(((now - then) / seconds).max(0.0))
    }

    fn figure(&self, source: FigureSource) -> Option<f64> {
        match source {
            FigureSource::Rate(name) => self.rate(name, &[]),
            FigureSource::RateWhere { metric, label } => self.rate(metric, &[label]),
            FigureSource::Value(name) => self.now.sum(name, &[]),
            FigureSource::Quantile { metric, quantile } => self.now.max(metric, &[("quantile", quantile)]),
            FigureSource::Ratio { numerator, denominator } => {
                let (before, _) = self.before?;
                let units = self.now.sum(denominator, &[])? - before.sum(denominator, &[]).unwrap_or(0.0);
                let counted = self.now.sum(numerator, &[])? - before.sum(numerator, &[]).unwrap_or(0.0);
                (units > 0.0).then(|| counted / units)
            }
        }
    }
}

fn micros_to_ms(value: Option<f64>) -> Option<f64> {
    value.map(|micros| micros / 1000.0)
}

impl StatsBoard {
    /// Shows `view` from the next snapshot on (after a reload).
    pub fn set_view(&self, view: TopologyView) {
        self.view.store(Arc::new(view));
    }

    /// A board over `view`, reading `metrics` and `health`.
    pub fn new(view: TopologyView, metrics: PrometheusHandle, health: Health) -> Self {
        StatsBoard { view: arc_swap::ArcSwap::from_pointee(view), metrics, health, kept: Mutex::new(VecDeque::new()) }
    }

    /// The figures now.
    pub fn snapshot(&self) -> Stats {
        let now = Instant::now();
        let current = Arc::new(Exposition::parse(&self.metrics.render()));
        let before = self.remember(now, current.clone());
        let seconds = before.as_ref().map(|(at, _)| now.duration_since(*at).as_secs_f64()).filter(|seconds| *seconds > 0.0);
        let readings =
            Readings { now: &current, before: before.as_ref().zip(seconds).map(|((_, exposition), seconds)| (&**exposition, seconds)) };
        let view = self.view.load_full();
        let stages: Vec<StageStats> = view.stages.iter().map(|stage| stage_stats(stage, &readings)).collect();
        let edges = view
            .edges
            .iter()
            .map(|edge| {
                let labels = [("from", edge.from_node.as_str()), ("to", edge.to.as_str())];
                let queued = edge.here.then(|| readings.total("histflow_edge_queue_events", &labels)).flatten();
                let fill = queued.map(|queued| (queued / edge.capacity.max(1) as f64).clamp(0.0, 1.0));
                let blocked_ms_per_s =
                    edge.here.then(|| micros_to_ms(readings.rate("histflow_edge_blocked_microseconds_total", &labels))).flatten();
                let rejected_per_s = edge.here.then(|| readings.rate("histflow_edge_rejected_total", &labels)).flatten();
                let waiting_senders = edge.here.then(|| readings.total("histflow_edge_waiting_senders", &labels)).flatten();
                let full = fill.is_some_and(|fill| fill >= FULL_FILL)
                    || rejected_per_s.is_some_and(|rate| rate > 0.0)
                    || waiting_senders.is_some_and(|waiting| waiting > 0.0)
                    || blocked_ms_per_s.is_some_and(|ms| ms >= FULL_BLOCKED_SHARE * 1000.0);
                EdgeStats {
                    from: edge.from.clone(),
                    to: edge.to.clone(),
                    here: edge.here,
                    queued,
                    capacity: edge.capacity,
                    fill,
                    blocked_ms_per_s,
                    waiting_senders,
                    rejected_total: edge.here.then(|| readings.total("histflow_edge_rejected_total", &labels)).flatten(),
                    rejected_per_s,
                    full,
                }
            })
            .collect();
        Stats {
            taken_at_ms: model::now_ms(),
            interval_s: readings.before.map(|(_, seconds)| seconds),
            readiness: match self.health.readiness() {
                Readiness::Ready => "ready".to_owned(),
                Readiness::Starting => "starting".to_owned(),
                Readiness::Waiting(backend) => format!("waiting for {backend}"),
                Readiness::Draining => "draining".to_owned(),
            },
            backends: self.health.backends(),
            topology: (*view).clone(),
            stages,
            edges,
        }
    }

    /// Keeps `current` (unless one was kept very recently) and answers the
    /// rendering to take rates against: the newest at least a second old,
    /// else the oldest kept.
    fn remember(&self, now: Instant, current: Arc<Exposition>) -> Option<(Instant, Arc<Exposition>)> {
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        let before = kept.iter().rev().find(|(at, _)| now.duration_since(*at) >= RATE_WINDOW).or_else(|| kept.front()).cloned();
        if kept.back().is_none_or(|(at, _)| now.duration_since(*at) >= KEEP_EVERY) {
            kept.push_back((now, current));
        }
        while kept.len() > KEPT {
            kept.pop_front();
        }
        before
    }
}

fn stage_stats(stage: &StageView, readings: &Readings<'_>) -> StageStats {
    let here = !stage.nodes.is_empty();
    let sum_nodes = |each: &dyn Fn(&str) -> Option<f64>| -> Option<f64> {
        let values: Vec<f64> = stage.nodes.iter().filter_map(|node| each(node)).collect();
        (!values.is_empty()).then(|| values.iter().sum())
    };
    // Events enter a stage at its first node (a bridge's producer) and
    // leave at its last (a bridge's consumer).
    let first = stage.nodes.first().map(String::as_str);
    let last = stage.nodes.last().map(String::as_str);
    // A source takes nothing in from an edge: its events arrive from clients
    // and are counted as they leave.
    let first = first.filter(|_| stage.shape != "source");
    let of = |node: Option<&str>, metric: &str, rate: bool| {
        node.and_then(|node| if rate { readings.rate(metric, &[("stage", node)]) } else { readings.total(metric, &[("stage", node)]) })
    };
    let errors_per_s = sum_nodes(&|node| readings.rate("histflow_stage_errors_total", &[("stage", node)]));
    StageStats {
        name: stage.name.clone(),
        here,
        events_in_total: of(first, "histflow_stage_events_in_total", false),
        events_out_total: of(last, "histflow_stage_events_out_total", false),
        errors_total: sum_nodes(&|node| readings.total("histflow_stage_errors_total", &[("stage", node)])),
        events_in_per_s: of(first, "histflow_stage_events_in_total", true),
        events_out_per_s: of(last, "histflow_stage_events_out_total", true),
        errors_per_s,
        backpressure_ms_per_s: micros_to_ms(sum_nodes(&|node| {
            readings.rate("histflow_stage_backpressure_wait_microseconds_total", &[("stage", node)])
        })),
        rate_limit_ms_per_s: micros_to_ms(sum_nodes(&|node| {
            readings.rate("histflow_stage_rate_limit_wait_microseconds_total", &[("stage", node)])
        })),
        failing: errors_per_s.is_some_and(|rate| rate > 0.0),
        figures: stage
            .figures
            .iter()
            .map(|figure| FigureValue { label: figure.label, value: if here { readings.figure(figure.source) } else { None } })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics::{counter, gauge};
    use metrics_exporter_prometheus::PrometheusBuilder;
    use pipeline::view::{EdgeView, Figure};

    fn stage(name: &str, shape: &'static str, figures: Vec<Figure>) -> StageView {
        StageView {
            name: name.to_owned(),
            kind: "test",
            role: "service".to_owned(),
            shape,
            column: 0,
            row: 0,
            nodes: vec![name.to_owned()],
            rate_limit_per_second: None,
            figures,
        }
    }

    fn view() -> TopologyView {
        let commits = Figure { label: "commits/s", source: FigureSource::Rate("test_commits_total") };
        let per_commit = Figure {
            label: "events/commit",
            source: FigureSource::Ratio { numerator: "test_events_total", denominator: "test_commits_total" },
        };
        TopologyView {
            role: "all".to_owned(),
            stages: vec![stage("source", "source", Vec::new()), stage("worker", "transform", vec![commits, per_commit])],
            edges: vec![EdgeView {
                from: "source".to_owned(),
                to: "worker".to_owned(),
                from_node: "source".to_owned(),
                capacity: 100,
                when_full: "block".to_owned(),
                via_broker: false,
                here: true,
            }],
        }
    }

    /// Two readings of the board around `between`, which records metrics.
    fn readings(between: impl Fn()) -> (Stats, Stats) {
        let recorder = PrometheusBuilder::new().build_recorder();
        let board = StatsBoard::new(view(), recorder.handle(), Health::default());
        let labels = [("from", "source"), ("to", "worker")];
        metrics::with_local_recorder(&recorder, || {
            counter!("histflow_stage_errors_total", "stage" => "worker").increment(0);
            counter!("test_commits_total").increment(0);
            counter!("test_events_total").increment(0);
            gauge!("histflow_edge_queue_events", &labels).set(0.0);
            gauge!("histflow_edge_waiting_senders", &labels).set(0.0);
            counter!("histflow_edge_rejected_total", &labels).increment(0);
        });
        // Rendering takes microseconds: the second reading is later.
        let first = board.snapshot();
        metrics::with_local_recorder(&recorder, between);
        (first, board.snapshot())
    }

    #[test]
    fn a_quiet_edge_and_stage_are_neither_full_nor_failing() {
        let (first, second) = readings(|| {});
        assert_eq!(first.interval_s, None);
        assert_eq!(first.stages[1].events_in_per_s, None, "no rates without an earlier reading");
        assert!(second.interval_s.is_some_and(|seconds| seconds > 0.0));
        assert!(!second.stages[1].failing);
        assert!(!second.edges[0].full);
        assert_eq!(second.edges[0].fill, Some(0.0));
        assert_eq!(second.stages[0].events_in_total, None, "a source takes nothing in from an edge");
        assert_eq!(second.stages[1].figures[1].value, None, "no commit in the interval: no events per commit");
    }

    #[test]
    fn errors_in_the_interval_mark_the_stage_failing_and_figures_follow_their_metrics() {
        let (_, second) = readings(|| {
            counter!("histflow_stage_errors_total", "stage" => "worker").increment(2);
            counter!("test_commits_total").increment(4);
            counter!("test_events_total").increment(100);
        });
        let worker = &second.stages[1];
        assert!(worker.failing);
        assert_eq!(worker.errors_total, Some(2.0));
        assert!(worker.figures[0].value.is_some_and(|rate| rate > 0.0));
        assert_eq!(worker.figures[1].value, Some(25.0));
    }

    #[test]
    fn an_edge_is_full_when_nearly_full_refusing_or_keeping_a_sender_waiting() {
        let labels = [("from", "source"), ("to", "worker")];
        let (_, nearly_full) = readings(|| gauge!("histflow_edge_queue_events", &labels).set(90.0));
        assert_eq!((nearly_full.edges[0].fill, nearly_full.edges[0].full), (Some(0.9), true));
        let (_, below) = readings(|| gauge!("histflow_edge_queue_events", &labels).set(89.0));
        assert!(!below.edges[0].full);
        let (_, refusing) = readings(|| counter!("histflow_edge_rejected_total", &labels).increment(1));
        assert!(refusing.edges[0].full);
        let (_, waiting) = readings(|| gauge!("histflow_edge_waiting_senders", &labels).set(1.0));
        assert!(waiting.edges[0].full);
    }
}

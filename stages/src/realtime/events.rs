//! What the realtime stage reports. Each event names its metric once,
//! here, and logs where a person should hear of it.

use pipeline::metrics::StageMetrics;

/// A commit's write failed; its requests are answered 503.
pub(crate) struct CommitFailed<'a> {
    pub stage: &'a str,
    pub error: &'a dyn std::fmt::Display,
}

impl CommitFailed<'_> {
    /// Counted as the stage's error (`histflow_stage_errors_total`).
    pub fn emit(&self, metrics: &StageMetrics) {
        metrics.error();
        tracing::warn!(stage = self.stage, error = %self.error, "realtime commit failed; its requests are answered 503");
    }
}

/// A first-watch broadcast ended.
pub(crate) enum FirstWatchBroadcast<'a> {
    /// The broker took it (or, under `--embedded`, it was counted).
    Delivered,
    /// It was not delivered; the history write stands.
    Failed { uid: u64, day: i64, error: &'a dyn std::fmt::Display },
}

impl FirstWatchBroadcast<'_> {
    /// `histflow_first_watch_broadcasts_total{outcome}`.
    const METRIC: &'static str = "histflow_first_watch_broadcasts_total";

    pub fn emit(&self) {
        match self {
            FirstWatchBroadcast::Delivered => metrics::counter!(Self::METRIC, "outcome" => "delivered").increment(1),
            FirstWatchBroadcast::Failed { uid, day, error } => {
                metrics::counter!(Self::METRIC, "outcome" => "failed").increment(1);
                tracing::warn!(uid, day, %error, "first-watch broadcast not delivered");
            }
        }
    }
}

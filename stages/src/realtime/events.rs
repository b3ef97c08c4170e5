//! What the realtime stage reports. Each event names its metric once,
//! here, and logs where a person should hear of it.

use pipeline::metrics::StageMetrics;
use pipeline::view::{Figure, FigureSource};

/// What the live page shows of a realtime stage.
pub(crate) fn figures() -> Vec<Figure> {
    vec![
        Figure { label: "commits/s", source: FigureSource::Rate(CommitSucceeded::COMMITS) },
        Figure {
            label: "events/commit",
            source: FigureSource::Ratio { numerator: CommitSucceeded::EVENTS, denominator: CommitSucceeded::COMMITS },
        },
        Figure { label: "users in the re-drive index", source: FigureSource::Value(MarksMeasured::USERS) },
        Figure { label: "oldest index entry, s", source: FigureSource::Value(MarksMeasured::OLDEST) },
        Figure { label: "re-driven users/s", source: FigureSource::Rate(MarksRedriven::USERS) },
    ]
}

/// Registers the stage's counters at zero, so `/metrics` lists them
/// before their first event.
pub(crate) fn register() {
    metrics::counter!(CommitSucceeded::COMMITS).increment(0);
    metrics::counter!(CommitSucceeded::EVENTS).increment(0);
    for outcome in ["delivered", "failed"] {
        metrics::counter!(FirstWatchBroadcast::METRIC, "outcome" => outcome).increment(0);
    }
    metrics::counter!(MarksRedriven::USERS).increment(0);
    metrics::counter!(MarksRedriven::ITEMS).increment(0);
    metrics::counter!(MarksRedriven::MISSING).increment(0);
}

/// A commit (one group of requests, one store call per kind) succeeded.
pub(crate) struct CommitSucceeded {
    /// The events (reports and mutations) it carried.
    pub events: usize,
}

impl CommitSucceeded {
    /// `histflow_realtime_commits_total`.
    const COMMITS: &'static str = "histflow_realtime_commits_total";
    /// `histflow_realtime_commit_events_total`.
    const EVENTS: &'static str = "histflow_realtime_commit_events_total";

    pub fn emit(&self) {
        metrics::counter!(Self::COMMITS).increment(1);
        metrics::counter!(Self::EVENTS).increment(self.events as u64);
    }
}

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

/// One re-drive pass over a shard claimed stale marks.
pub(crate) struct MarksRedriven<'a> {
    pub stage: &'a str,
    pub shard: u32,
    /// Users whose marks were claimed.
    pub users: usize,
    /// Marks claimed.
    pub items: usize,
    /// Marks dropped: their record had expired.
    pub missing: usize,
}

impl MarksRedriven<'_> {
    /// `histflow_redrive_users_total`.
    const USERS: &'static str = "histflow_redrive_users_total";
    /// `histflow_redrive_items_total`.
    const ITEMS: &'static str = "histflow_redrive_items_total";
    /// `histflow_redrive_missing_total`.
    const MISSING: &'static str = "histflow_redrive_missing_total";

    pub fn emit(&self) {
        metrics::counter!(Self::USERS).increment(self.users as u64);
        metrics::counter!(Self::ITEMS).increment(self.items as u64);
        metrics::counter!(Self::MISSING).increment(self.missing as u64);
        // A warning: something that acknowledged these never handed them
        // on (a kill, a cut drain, a lost reply).
        tracing::warn!(
            stage = self.stage,
            shard = self.shard,
            users = self.users,
            items = self.items,
            missing = self.missing,
            "re-driving marks older than the grace (acknowledged, never settled by a delivery)"
        );
    }
}

/// A re-drive could not look at a shard's marks (it tries again next pass).
pub(crate) struct RedriveFailed<'a> {
    pub stage: &'a str,
    pub shard: u32,
    pub error: &'a dyn std::fmt::Display,
}

impl RedriveFailed<'_> {
    pub fn emit(&self) {
        tracing::warn!(stage = self.stage, shard = self.shard, error = %self.error, "re-drive pass failed; trying again next pass");
    }
}

/// A claimed record could not be decoded: dropped from the marks, logged.
pub(crate) struct RedriveUndecodable<'a> {
    pub stage: &'a str,
    pub uid: u64,
    pub item: &'a str,
    pub error: &'a str,
}

impl RedriveUndecodable<'_> {
    pub fn emit(&self) {
        tracing::error!(
            stage = self.stage,
            uid = self.uid,
            item = self.item,
            error = self.error,
            "a re-driven record cannot be decoded; not shipped"
        );
    }
}

/// The marks were measured (each re-drive pass).
pub(crate) struct MarksMeasured {
    /// Users in the re-drive index.
    pub users: u64,
    /// Age of the index's oldest entry, seconds (0: none).
    pub oldest_age_s: f64,
}

impl MarksMeasured {
    /// `histflow_marks_pending_users`.
    const USERS: &'static str = "histflow_marks_pending_users";
    /// `histflow_marks_oldest_age_seconds`.
    const OLDEST: &'static str = "histflow_marks_oldest_age_seconds";

    pub fn emit(&self) {
        metrics::gauge!(Self::USERS).set(self.users as f64);
        metrics::gauge!(Self::OLDEST).set(self.oldest_age_s);
    }
}

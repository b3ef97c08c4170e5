//! Configuration of the `realtime` stage (`type = "realtime"`).

use backends::user_state::CallShape;
use pipeline::problem::require_within;
use serde::Deserialize;

/// `[[stages]] type = "realtime"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealtimeConfig {
    /// Redis to write to, e.g. `"${REDIS_URL:-redis://127.0.0.1:6379}"`.
    pub redis_url: String,
    /// Timeline length kept per user; older items are trimmed from Redis
    /// (they stay in HBase).
    #[serde(default = "default_max_items_per_user")]
    pub max_items_per_user: usize,
    /// Most events written to Redis in one pipeline (group commit).
    #[serde(default = "default_group_commit_max_events")]
    pub group_commit_max_events: usize,
    /// Extra wait for more events when a commit is not full, in
    /// microseconds. 0 (the default) sends at once: while earlier commits
    /// are in flight, later requests gather into the next one anyway.
    #[serde(default)]
    pub group_commit_linger_us: u64,
    /// Most events in one script call; a call carries many users' events
    /// (Redis spends most of a call's time on the call itself).
    #[serde(default = "default_script_max_events")]
    pub script_max_events: usize,
    /// `redis_url` is one seed node of a Redis Cluster (a URL listing
    /// several seeds is a cluster anyway).
    #[serde(default)]
    pub cluster: bool,
    /// Commits (Redis pipelines) in flight at once.
    #[serde(default = "default_max_in_flight_commits")]
    pub max_in_flight_commits: usize,
    /// Brokers of the first-watch broadcast; none: no broadcast (under
    /// `--embedded` first watches are counted in process).
    pub broadcast_brokers: Option<String>,
    /// Topic of the first-watch broadcast.
    #[serde(default = "default_broadcast_topic")]
    pub broadcast_topic: String,
    /// Re-drive marks no delivery settled (what a killed instance
    /// acknowledged). Off only to see what it protects.
    #[serde(default = "default_redrive")]
    pub redrive: bool,
    /// A mark this old (ms) is re-driven. Default: twice the downstream
    /// aggregate's `flush_interval_ms` plus 30 s for a Kafka delivery; at
    /// least twice the flush interval (a shorter grace re-ships what live
    /// instances still hold).
    pub redrive_after_ms: Option<u64>,
    /// How often each instance looks for marks to re-drive (ms).
    #[serde(default = "default_redrive_every_ms")]
    pub redrive_every_ms: u64,
}

/// What the default grace allows for a Kafka delivery, on top of two
/// aggregate flush intervals.
pub(crate) const DELIVERY_ALLOWANCE_MS: u64 = 30_000;

fn default_max_items_per_user() -> usize {
    1000
}
fn default_group_commit_max_events() -> usize {
    256
}
fn default_script_max_events() -> usize {
    128
}
fn default_max_in_flight_commits() -> usize {
    4
}
fn default_redrive() -> bool {
    true
}
fn default_redrive_every_ms() -> u64 {
    1000
}
fn default_broadcast_topic() -> String {
    "histflow-first-watch".to_owned()
}

impl RealtimeConfig {
    /// Stage-local problems, each naming its field.
    pub fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let seeds = backends::user_state::redis_seeds(&self.redis_url);
        let bad = |seed: &&str| !(seed.starts_with("redis://") || seed.starts_with("rediss://") || seed.starts_with("redis+unix://"));
        if seeds.is_empty() || seeds.iter().any(bad) {
            problems.push(format!(
                "`redis_url` = {:?} must be a URL starting with redis://, rediss:// or redis+unix:// (a cluster: its seed nodes, comma-separated)",
                self.redis_url
            ));
        }
        require_within(&mut problems, "max_items_per_user", self.max_items_per_user as u64, 1, 1_000_000);
        if self.group_commit_linger_us > 100_000 {
            problems.push("`group_commit_linger_us` must be at most 100000 (0.1 s): every request waits for it".to_owned());
        }
        require_within(&mut problems, "script_max_events", self.script_max_events as u64, 1, 100_000);
        require_within(&mut problems, "max_in_flight_commits", self.max_in_flight_commits as u64, 1, 1024);
        require_within(&mut problems, "group_commit_max_events", self.group_commit_max_events as u64, 1, 100_000);
        require_within(&mut problems, "redrive_every_ms", self.redrive_every_ms, 10, 3_600_000);
        problems
    }
}

impl RealtimeConfig {
    /// How this stage groups users into script calls.
    pub(crate) fn call_shape(&self) -> CallShape {
        CallShape { cluster: self.cluster, max_events: self.script_max_events }
    }
}

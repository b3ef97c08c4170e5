//! Configuration of the `aggregate` stage (`type = "aggregate"`).

use pipeline::problem::require_within;
use serde::Deserialize;

/// `[[stages]] type = "aggregate"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateConfig {
    /// Number of uid shards (regions); the shard is also the Kafka key.
    #[serde(default = "default_shards")]
    pub shards: u32,
    /// A shard flushes when it holds this many pending items.
    #[serde(default = "default_flush_max_entries")]
    pub flush_max_entries: usize,
    /// Every shard flushes at least this often, in milliseconds.
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// Bound on pending items over all shards; reaching it forces the
    /// largest shards to flush early (never drops).
    #[serde(default = "default_max_pending_entries")]
    pub max_pending_entries: usize,
}

/// Shards when the topology names none; a realtime stage with no
/// aggregate after it indexes its pending marks in as many sets.
pub const DEFAULT_SHARDS: u32 = 64;

fn default_shards() -> u32 {
    DEFAULT_SHARDS
}
fn default_flush_max_entries() -> usize {
    1000
}
fn default_flush_interval_ms() -> u64 {
    1000
}
fn default_max_pending_entries() -> usize {
    1_000_000
}

impl AggregateConfig {
    /// Stage-local problems, each naming its field.
    pub fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        require_within(&mut problems, "shards", self.shards as u64, 1, 4096);
        require_within(&mut problems, "flush_max_entries", self.flush_max_entries as u64, 1, 10_000_000);
        require_within(&mut problems, "max_pending_entries", self.max_pending_entries as u64, 1, 100_000_000);
        require_within(&mut problems, "flush_interval_ms", self.flush_interval_ms, 1, 3_600_000);
        if self.max_pending_entries < self.flush_max_entries {
            problems.push(format!(
                "`max_pending_entries` ({}) must be at least `flush_max_entries` ({})",
                self.max_pending_entries, self.flush_max_entries
            ));
        }
        problems
    }
}

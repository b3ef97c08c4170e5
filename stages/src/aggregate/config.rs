//! Configuration of the `aggregate` stage (`type = "aggregate"`).

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

fn default_shards() -> u32 {
    64
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
        if self.shards == 0 {
            problems.push("`shards` must be at least 1".to_owned());
        }
        if self.flush_max_entries == 0 {
            problems.push("`flush_max_entries` must be at least 1".to_owned());
        }
        if self.flush_interval_ms == 0 {
            problems.push("`flush_interval_ms` must be at least 1".to_owned());
        }
        if self.max_pending_entries < self.flush_max_entries {
            problems.push(format!(
                "`max_pending_entries` ({}) must be at least `flush_max_entries` ({})",
                self.max_pending_entries, self.flush_max_entries
            ));
        }
        problems
    }
}

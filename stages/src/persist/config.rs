//! Configuration of the `persist` stage (`type = "persist"`).

use pipeline::problem::require_within;
use pipeline::RateLimitSpec;
use serde::Deserialize;

use super::sweep::SweepConfig;

/// `[[stages]] type = "persist"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistConfig {
    /// HBase Thrift1 gateway, `host:port`, e.g. `"${HBASE_THRIFT:-127.0.0.1:9090}"`.
    pub hbase_thrift: String,
    /// HBase table.
    #[serde(default = "default_table")]
    pub table: String,
    /// Redis to re-read records from when the payload is `ids`.
    pub redis_url: Option<String>,
    /// Rows per HBase `mutateRows` call.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// Rows written to HBase per second at most (with a burst); writes
    /// wait for it, never drop. Spares the region servers.
    #[serde(default = "default_write_rate_limit")]
    pub write_rate_limit: RateLimitSpec,
    /// The fold window writes when it holds this many rows...
    #[serde(default = "default_flush_max_rows")]
    pub flush_max_rows: usize,
    /// ...or has folded this many operations (its memory is bounded by
    /// operations, whatever the users)...
    #[serde(default = "default_flush_max_ops")]
    pub flush_max_ops: usize,
    /// ...or after this many milliseconds.
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// Directory of the embedded on-disk store used by `--embedded`.
    #[serde(default = "default_embedded_data_dir")]
    pub embedded_data_dir: String,
    /// Run in the service role, fed straight by `realtime` with no Kafka
    /// in between: the write-through baseline of the benchmark
    /// (`bench/topologies/naive.toml`), not a production shape.
    #[serde(default)]
    pub write_through: bool,
    /// The background deletion of views past their business's retention
    /// (`sweep`); on by default, in off-peak hours.
    #[serde(default)]
    pub retention_sweep: SweepConfig,
}

fn default_table() -> String {
    "history".to_owned()
}
fn default_write_rate_limit() -> RateLimitSpec {
    RateLimitSpec { per_second: 10_000, burst: Some(200) }
}
fn default_batch_rows() -> usize {
    500
}
fn default_flush_max_rows() -> usize {
    10_000
}
fn default_flush_max_ops() -> usize {
    100_000
}
fn default_flush_interval_ms() -> u64 {
    60_000
}
fn default_embedded_data_dir() -> String {
    "./data/hbase".to_owned()
}

impl PersistConfig {
    /// Stage-local problems, each naming its field.
    pub fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.hbase_thrift.contains(':') {
            problems.push(format!("`hbase_thrift` = {:?} must be host:port", self.hbase_thrift));
        }
        if self.table.is_empty() {
            problems.push("`table` must not be empty".to_owned());
        }
        require_within(&mut problems, "batch_rows", self.batch_rows as u64, 1, 100_000);
        require_within(&mut problems, "write_rate_limit.per_second", self.write_rate_limit.per_second, 1, 10_000_000);
        require_within(&mut problems, "write_rate_limit.burst", self.write_rate_limit.burst_or_default(), 1, 10_000_000);
        require_within(&mut problems, "flush_max_rows", self.flush_max_rows as u64, 1, 10_000_000);
        require_within(&mut problems, "flush_max_ops", self.flush_max_ops as u64, 1, 100_000_000);
        require_within(&mut problems, "flush_interval_ms", self.flush_interval_ms, 1, 3_600_000);
        problems.extend(self.retention_sweep.check());
        problems
    }
}

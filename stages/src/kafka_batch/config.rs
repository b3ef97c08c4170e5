//! Configuration of the `kafka_batch` bridge (`type = "kafka_batch"`).

use backends::kafka::Replication;
pub use model::codec::Payload;
use pipeline::problem::require_within;
use serde::Deserialize;

/// Producer compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// lz4: cheap on CPU.
    #[default]
    Lz4,
    /// zstd: smaller messages.
    Zstd,
}

/// `[[stages]] type = "kafka_batch"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaBatchConfig {
    /// Bootstrap brokers, e.g. `"${KAFKA_BROKERS:-127.0.0.1:9092}"`.
    pub brokers: String,
    /// The merge topic.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Where the job sends merge messages it can never decode.
    #[serde(default = "default_dead_letter_topic")]
    pub dead_letter_topic: String,
    /// Static group membership (Kafka's `group.instance.id`): give each job
    /// instance a stable id (a pod name, say), and a restarted instance
    /// takes its partitions back at once instead of waiting for the group
    /// to notice the old member is gone.
    pub consumer_instance_id: Option<String>,
    /// Consumer group of the job role.
    #[serde(default = "default_consumer_group")]
    pub consumer_group: String,
    /// `ids` or `full`.
    #[serde(default)]
    pub payload: Payload,
    /// Partitions of the merge topic when histflow creates it.
    #[serde(default = "default_partitions")]
    pub partitions: u32,
    /// Copies of each partition of the topics histflow creates (the merge
    /// and dead-letter topics): 1 for a single local broker, 3 on a real
    /// cluster.
    #[serde(default = "default_replication_factor")]
    pub replication_factor: u16,
    /// `min.insync.replicas` of the topics histflow creates; unset leaves
    /// the broker's default. 2 with a factor of 3 on a real cluster.
    pub min_insync_replicas: Option<u16>,
    /// `lz4` or `zstd`.
    #[serde(default)]
    pub compression: Compression,
    /// A flush larger than this is split into several messages.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Batches the in-process queue of `--embedded` holds before the
    /// producer waits (backpressure, as a slow broker would apply).
    #[serde(default = "default_embedded_queue_batches")]
    pub embedded_queue_batches: usize,
    /// Job role: merge-message bytes the consumer reads ahead and holds
    /// while the edge downstream is full; past this it pauses its
    /// partitions and keeps polling its group (so the group keeps it),
    /// resuming once half of it is free. 0: never hold.
    #[serde(default = "default_hold_max_bytes")]
    pub hold_max_bytes: usize,
}

fn default_topic() -> String {
    "histflow-merge".to_owned()
}
fn default_consumer_group() -> String {
    "histflow-job".to_owned()
}
fn default_dead_letter_topic() -> String {
    "histflow-merge-dead-letters".to_owned()
}
fn default_partitions() -> u32 {
    16
}
fn default_replication_factor() -> u16 {
    1
}
fn default_max_message_bytes() -> usize {
    1_000_000
}
fn default_embedded_queue_batches() -> usize {
    1024
}
fn default_hold_max_bytes() -> usize {
    64 * 1024 * 1024
}

impl KafkaBatchConfig {
    /// How many copies the topics histflow creates keep.
    pub fn replication(&self) -> Replication {
        Replication { factor: self.replication_factor, min_insync: self.min_insync_replicas }
    }

    /// Stage-local problems, each naming its field.
    pub fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.brokers.trim().is_empty() {
            problems.push("`brokers` must name at least one host:port".to_owned());
        }
        if self.topic.is_empty() {
            problems.push("`topic` must not be empty".to_owned());
        }
        if self.consumer_group.is_empty() {
            problems.push("`consumer_group` must not be empty".to_owned());
        }
        require_within(&mut problems, "max_message_bytes", self.max_message_bytes as u64, 16 * 1024, 64 << 20);
        require_within(&mut problems, "partitions", self.partitions as u64, 1, 100_000);
        require_within(&mut problems, "replication_factor", u64::from(self.replication_factor), 1, 16);
        require_within(&mut problems, "hold_max_bytes", self.hold_max_bytes as u64, 0, 4 << 30);
        if let Some(copies) = self.min_insync_replicas {
            if copies == 0 || copies > self.replication_factor {
                problems.push(format!(
                    "`min_insync_replicas` = {copies} must be from 1 to `replication_factor` ({}): a write cannot wait for more copies than exist",
                    self.replication_factor
                ));
            }
        }
        require_within(&mut problems, "embedded_queue_batches", self.embedded_queue_batches as u64, 1, 1_000_000);
        problems
    }
}

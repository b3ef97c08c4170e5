//! What the `kafka_batch` bridge reports. Each event names its metrics
//! once, here, and logs where a person should hear of it.

use std::time::Duration;

use pipeline::view::{Figure, FigureSource};

/// What the live page shows of a `kafka_batch` bridge.
pub(crate) fn figures() -> Vec<Figure> {
    vec![
        Figure { label: "messages/s", source: FigureSource::Rate(FlushDelivered::MESSAGES) },
        Figure {
            label: "events/message",
            source: FigureSource::Ratio { numerator: FlushDelivered::EVENTS, denominator: FlushDelivered::MESSAGES },
        },
        Figure { label: "consumer lag", source: FigureSource::Value(ConsumerLag::METRIC) },
        Figure { label: "retries/s", source: FigureSource::Rate(DeliveryRetry::METRIC) },
        Figure { label: "dead letters/s", source: FigureSource::Rate(DeadLetterSent::METRIC) },
    ]
}

/// Registers the producing half's counters at zero, so `/metrics` lists
/// them before their first event.
pub(crate) fn register_producer() {
    for name in [
        FlushDelivered::MESSAGES,
        FlushDelivered::EVENTS,
        MessageDelivered::METRIC,
        DeliveryRetry::METRIC,
        ProducerRebuilt::METRIC,
        FetchRetry::METRIC,
        ReferenceNotShipped::METRIC,
    ] {
        metrics::counter!(name).increment(0);
    }
}

/// Registers the consuming half's counters at zero.
pub(crate) fn register_consumer() {
    for name in
        [DeadLetterSent::METRIC, OffsetOfLostPartition::METRIC, OrphansRejoined::METRIC, ProducerRebuilt::METRIC, ConsumerPaused::METRIC]
    {
        metrics::counter!(name).increment(0);
    }
}

/// Every message of one shard flush reached the broker.
pub(crate) struct FlushDelivered {
    /// Messages the flush took.
    pub messages: usize,
    /// Events they carried.
    pub events: usize,
}

impl FlushDelivered {
    /// `histflow_kafka_messages_total`.
    const MESSAGES: &'static str = "histflow_kafka_messages_total";
    /// `histflow_kafka_message_events_total`.
    const EVENTS: &'static str = "histflow_kafka_message_events_total";

    pub fn emit(&self) {
        metrics::counter!(Self::MESSAGES).increment(self.messages as u64);
        metrics::counter!(Self::EVENTS).increment(self.events as u64);
    }
}

/// One merge message reached the broker.
pub(crate) struct MessageDelivered {
    /// Its payload's size.
    pub bytes: usize,
}

impl MessageDelivered {
    /// `histflow_kafka_message_bytes_total`.
    const METRIC: &'static str = "histflow_kafka_message_bytes_total";

    pub fn emit(&self) {
        metrics::counter!(Self::METRIC).increment(self.bytes as u64);
    }
}

/// A merge message was not delivered; it is sent again after `pause`.
pub(crate) struct DeliveryRetry<'a> {
    pub stage: &'a str,
    pub topic: &'a str,
    pub error: &'a dyn std::fmt::Display,
    pub pause: Duration,
}

impl DeliveryRetry<'_> {
    /// `histflow_kafka_delivery_retries_total`.
    const METRIC: &'static str = "histflow_kafka_delivery_retries_total";

    pub fn emit(&self) {
        metrics::counter!(Self::METRIC).increment(1);
        let retry_in_ms = self.pause.as_millis() as u64;
        tracing::warn!(stage = self.stage, topic = self.topic, error = %self.error, retry_in_ms, "merge message not delivered; retrying");
    }
}

/// A flush was delivered but the marks it carried could not be settled
/// (a re-drive will ship those items once more).
pub(crate) struct MarksKept<'a> {
    pub stage: &'a str,
    pub shard: u32,
    pub error: &'a dyn std::fmt::Display,
}

impl MarksKept<'_> {
    pub fn emit(&self) {
        tracing::warn!(stage = self.stage, shard = self.shard, error = %self.error, "delivered, but its marks stay (a re-drive will ship them again)");
    }
}

/// A `fetched` bridge could not read a flush's records from Redis; it
/// reads again after `pause`, shipping nothing of that flush meanwhile.
pub(crate) struct FetchRetry<'a> {
    pub stage: &'a str,
    pub error: &'a dyn std::fmt::Display,
    pub pause: Duration,
}

impl FetchRetry<'_> {
    /// `histflow_kafka_fetch_retries_total`.
    const METRIC: &'static str = "histflow_kafka_fetch_retries_total";

    pub fn emit(&self) {
        metrics::counter!(Self::METRIC).increment(1);
        tracing::warn!(stage = self.stage, error = %self.error, retry_in_ms = self.pause.as_millis() as u64, "cannot read a flush's records from Redis; retrying");
    }
}

/// A `fetched` bridge found no record (or an undecodable one) for a
/// reference it was to ship: the item was deleted, cleared or expired
/// since it was acknowledged (its mark is settled; nothing is left to
/// write), or its stored record is damaged.
pub(crate) struct ReferenceNotShipped<'a> {
    pub stage: &'a str,
    pub uid: u64,
    pub item: &'a str,
    /// Why: `missing` or the decoding error.
    pub why: &'a dyn std::fmt::Display,
}

impl ReferenceNotShipped<'_> {
    /// `histflow_kafka_references_not_shipped_total`.
    const METRIC: &'static str = "histflow_kafka_references_not_shipped_total";

    pub fn emit(&self) {
        metrics::counter!(Self::METRIC).increment(1);
        tracing::info!(stage = self.stage, uid = self.uid, item = self.item, why = %self.why, "a reference's record is not in Redis; nothing to ship for it");
    }
}

/// An undecodable merge message went (or failed to go) to the dead-letter
/// topic.
pub(crate) struct DeadLetterSent<'a> {
    pub stage: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub reason: &'a str,
    pub topic: &'a str,
    pub outcome: &'a Result<(), rdkafka::error::KafkaError>,
}

impl DeadLetterSent<'_> {
    /// `histflow_kafka_dead_letters_total`: dead letters delivered.
    const METRIC: &'static str = "histflow_kafka_dead_letters_total";

    pub fn emit(&self) {
        let DeadLetterSent { stage, partition, offset, reason, topic, outcome } = self;
        match outcome {
            Ok(()) => {
                metrics::counter!(Self::METRIC).increment(1);
                tracing::warn!(
                    stage,
                    partition,
                    offset,
                    reason,
                    dead_letter_topic = topic,
                    "undecodable merge message sent to the dead-letter topic"
                );
            }
            Err(error) => tracing::error!(stage, partition, offset, %error, "dead letter not delivered; retrying (its offset waits)"),
        }
    }
}

/// A written batch's offset could not be stored: its partition moved to
/// another member in a rebalance, which reads it again from the last
/// commit (the writes are idempotent).
pub(crate) struct OffsetOfLostPartition<'a> {
    pub stage: &'a str,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

impl OffsetOfLostPartition<'_> {
    /// `histflow_kafka_lost_partition_offsets_total`.
    const METRIC: &'static str = "histflow_kafka_lost_partition_offsets_total";

    pub fn emit(&self) {
        metrics::counter!(Self::METRIC).increment(1);
        tracing::info!(
            stage = self.stage,
            topic = self.topic,
            partition = self.partition,
            offset = self.offset,
            "offset dropped: the partition now belongs to another member, which re-reads it from the last commit"
        );
    }
}

/// Partitions behind their end that no member reads: the consumer leaves
/// and rejoins its group so they are assigned again.
pub(crate) struct OrphansRejoined<'a> {
    pub stage: &'a str,
    pub topic: &'a str,
    pub partitions: &'a [i32],
}

impl OrphansRejoined<'_> {
    /// `histflow_kafka_group_rejoins_total`.
    const METRIC: &'static str = "histflow_kafka_group_rejoins_total";

    pub fn emit(&self) {
        metrics::counter!(Self::METRIC).increment(1);
        tracing::warn!(
            stage = self.stage,
            topic = self.topic,
            partitions = ?self.partitions,
            "partitions behind their end that no member reads; leaving and rejoining the group so they are assigned again"
        );
    }
}

/// The consumer paused its partitions (no room for another message: the
/// edge downstream full past the read-ahead), or resumed them; it polls
/// on either way, so it keeps its place in the group.
pub(crate) struct ConsumerPaused<'a> {
    pub stage: &'a str,
    /// Paused (true) or resumed.
    pub paused: bool,
    /// Partitions assigned, all paused or resumed.
    pub partitions: usize,
    /// What librdkafka answered.
    pub outcome: &'a Result<(), rdkafka::error::KafkaError>,
}

impl ConsumerPaused<'_> {
    /// `histflow_kafka_consumer_pauses_total`: pauses (resumes are not
    /// counted).
    const METRIC: &'static str = "histflow_kafka_consumer_pauses_total";

    pub fn emit(&self) {
        match self.outcome {
            Ok(()) => {
                if self.paused {
                    metrics::counter!(Self::METRIC).increment(1);
                }
                tracing::debug!(
                    stage = self.stage,
                    paused = self.paused,
                    partitions = self.partitions,
                    "consumer partitions paused or resumed"
                );
            }
            // A pause that failed leaves the consumer reading: it holds
            // more than its bound, and tries again at the next message.
            Err(error) => {
                tracing::warn!(stage = self.stage, paused = self.paused, %error, "cannot pause or resume the consumer's partitions")
            }
        }
    }
}

/// The job's distance from the end of one partition.
pub(crate) struct ConsumerLag {
    pub partition: i32,
    pub messages: i64,
}

impl ConsumerLag {
    /// `histflow_kafka_consumer_lag_messages{partition}`.
    const METRIC: &'static str = "histflow_kafka_consumer_lag_messages";

    pub fn emit(&self) {
        metrics::gauge!(Self::METRIC, "partition" => self.partition.to_string()).set(self.messages as f64);
    }
}

/// The producer failed fatally and a new one took its place; what it held
/// is being sent again.
pub(crate) struct ProducerRebuilt<'a> {
    pub stage: &'a str,
    /// The fatal error.
    pub fatal: &'a str,
}

impl ProducerRebuilt<'_> {
    /// `histflow_kafka_producer_rebuilds_total`.
    const METRIC: &'static str = "histflow_kafka_producer_rebuilds_total";

    pub fn emit(&self) {
        metrics::counter!(Self::METRIC).increment(1);
        tracing::error!(stage = self.stage, fatal = self.fatal, "the Kafka producer failed fatally; a new one sends what it held again");
    }
}

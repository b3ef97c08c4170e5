//! Kafka client settings, in one place: the idempotent producers (merge
//! topic, dead letters, first-watch broadcast), the job's consumer group,
//! and creating a topic on brokers that do not create topics on first use
//! (tansu among them).
//!
//! - `producer_slot`: the one producer type the merge and dead-letter
//!   producers send through, replaced after a fatal error.

mod producer_slot;

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

use crate::retry;

pub use producer_slot::ProducerSlot;

/// How long a producer keeps trying to deliver a message before it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryTimeout {
    /// Never fails: retried until the broker takes it (librdkafka's local
    /// queue fills meanwhile, which pushes back on the sender).
    Never,
    /// librdkafka's default, 300 s; the sender learns of the failure.
    Default,
}

/// An idempotent, `acks=all` producer on `brokers`; the caller adds what
/// is particular to it (compression, linger, queue sizes) and creates it.
pub fn idempotent_producer(brokers: &str, delivery: DeliveryTimeout) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers).set("enable.idempotence", "true").set("acks", "all");
    match delivery {
        // 0 = no delivery deadline.
        DeliveryTimeout::Never => config.set("message.timeout.ms", "0"),
        DeliveryTimeout::Default => config.set("message.timeout.ms", "300000"),
    };
    config
}

/// As [`idempotent_producer`], for the merge topic: one message per
/// record batch, so a consumer can start reading at any offset.
///
/// A Kafka broker answers a fetch from inside a record batch with the whole
/// batch (the client skips the records before its offset); tansu 0.6
/// answers only from a batch's first offset and returns the batches after
/// it, so a consumer that starts inside a batch (after a pause, a rebalance
/// or a restart at a committed offset) would skip the rest of that batch,
/// or wait for ever when it is the last. A merge message is already a
/// whole shard flush, so batching them together saves next to nothing.
pub fn merge_producer(brokers: &str, delivery: DeliveryTimeout) -> ClientConfig {
    let mut config = idempotent_producer(brokers, delivery);
    config.set("batch.num.messages", "1");
    config
}

/// A member of consumer group `group` on `brokers` that stores offsets by
/// hand (only after the write downstream) and commits them every second.
/// `instance_id` gives it static membership (`group.instance.id`).
pub fn group_consumer(brokers: &str, group: &str, instance_id: Option<&str>) -> ClientConfig {
    let mut config = ClientConfig::new();
    if let Some(instance) = instance_id {
        config.set("group.instance.id", instance);
    }
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        // Offsets are stored by hand, only after the write.
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("queued.max.messages.kbytes", "16384")
        // A job that died is replaced within seconds: some brokers (tansu)
        // wait out the rebalance timeout, max.poll.interval.ms, for a
        // member that stopped heartbeating. A job blocked longer than it
        // by backpressure leaves the group and rejoins when it moves
        // again, re-reading what it had not committed (harmless: writes
        // are idempotent, nothing is committed early).
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "2000")
        .set("max.poll.interval.ms", "20000");
    config
}

/// How many copies a created topic keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replication {
    /// Copies of each partition (1 on a single local broker; 3 on a real
    /// cluster).
    pub factor: u16,
    /// Copies that must have a write before the broker acknowledges it
    /// (the idempotent producer asks for all in-sync copies); `None`
    /// leaves the broker's default. 2 with a factor of 3 survives one
    /// broker down without a write being acknowledged by a single copy.
    pub min_insync: Option<u16>,
}

/// The broker's answers that no retry changes: the topic as asked cannot
/// exist on this cluster.
const FINAL_TOPIC_ERRORS: [RDKafkaErrorCode; 5] = [
    RDKafkaErrorCode::InvalidReplicationFactor,
    RDKafkaErrorCode::InvalidConfig,
    RDKafkaErrorCode::InvalidPartitions,
    RDKafkaErrorCode::PolicyViolation,
    RDKafkaErrorCode::InvalidTopic,
];

/// Why a topic could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// The admin client could not be made.
    #[error(transparent)]
    Client(#[from] KafkaError),
    /// The broker refused the topic as asked (too few brokers for the
    /// replication factor, a setting it does not take, ...).
    #[error(
        "the broker refuses to create topic `{topic}` with {partitions} partition(s), replication factor {factor}{min_insync}: {code:?}"
    )]
    Refused {
        /// The topic.
        topic: String,
        /// Partitions asked for.
        partitions: i32,
        /// Replication factor asked for.
        factor: u16,
        /// `, min.insync.replicas N` when one was asked for.
        min_insync: String,
        /// The broker's answer.
        code: RDKafkaErrorCode,
    },
}

/// Creates `topic` with `partitions` partitions and `replication` unless it
/// exists, retrying with capped backoff until the broker answers; a refusal
/// no retry can change ends it with [`TopicError::Refused`]. `stage` names
/// the caller in the log.
pub async fn ensure_topic(brokers: &str, topic: &str, partitions: i32, replication: Replication, stage: &str) -> Result<(), TopicError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", brokers).create()?;
    let min_insync = replication.min_insync.map(|copies| copies.to_string());
    let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(i32::from(replication.factor)));
    if let Some(copies) = &min_insync {
        new_topic = new_topic.set("min.insync.replicas", copies);
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))).request_timeout(Some(Duration::from_secs(10)));
    let (admin, new_topic, options) = (&admin, &new_topic, &options);
    let refused = retry::until_ok(
        || async move {
            match admin.create_topics([new_topic], options).await.map(|mut results| results.pop()) {
                Ok(Some(Ok(_))) => {
                    tracing::info!(stage, topic, partitions, replication_factor = replication.factor, "created topic");
                    Ok(None)
                }
                Ok(Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists)))) | Ok(None) => Ok(None),
                Ok(Some(Err((_, code)))) if FINAL_TOPIC_ERRORS.contains(&code) => Ok(Some(code)),
                Ok(Some(Err((_, code)))) => Err(format!("cannot create the topic yet ({code:?})")),
                Err(error) => Err(format!("Kafka not reachable yet ({error})")),
            }
        },
        |problem, pause| tracing::warn!(stage, topic, brokers, %problem, retry_in_ms = pause.as_millis() as u64, "retrying"),
    )
    .await;
    match refused {
        None => Ok(()),
        Some(code) => Err(TopicError::Refused {
            topic: topic.to_owned(),
            partitions,
            factor: replication.factor,
            min_insync: min_insync.map(|copies| format!(", min.insync.replicas {copies}")).unwrap_or_default(),
            code,
        }),
    }
}

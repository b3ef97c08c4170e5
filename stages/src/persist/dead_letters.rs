//! Where rows the history table refuses go: the dead-letter topic of the
//! bridge the stage reads, as a replayable merge batch with the reason; or,
//! without a broker (`--embedded`), the log.

use backends::history_table::RowMutation;
use backends::kafka::{idempotent_producer, DeliveryTimeout, ProducerSlot};
use model::{codec, keys};

use super::events::RowRejected;

/// Where rows the history table rejects go.
pub enum DeadLetters {
    /// A Kafka topic.
    Kafka {
        /// Idempotent producer, replaced after a fatal error.
        producer: ProducerSlot,
        /// The dead-letter topic.
        topic: String,
    },
    /// Logged and counted only.
    Log,
}

impl DeadLetters {
    /// The dead-letter `topic` on `brokers`, through an idempotent producer
    /// (librdkafka's default delivery timeout).
    pub fn kafka(brokers: &str, topic: &str) -> Result<Self, String> {
        let producer = ProducerSlot::new(idempotent_producer(brokers, DeliveryTimeout::Default))
            .map_err(|error| format!("cannot create the dead-letter producer: {error}"))?;
        Ok(DeadLetters::Kafka { producer, topic: topic.to_owned() })
    }

    /// Sends a row the table refused for `reason` to the dead letters.
    pub(super) async fn reject(&self, row: &RowMutation, reason: &str, stage: &str) {
        let ops = row.as_ops();
        let uid = ops.first().map_or(0, model::Op::uid);
        if let DeadLetters::Kafka { producer, topic } = self {
            let shard = keys::shard_of(uid, 1);
            for payload in codec::encode_merge_batch(shard, &ops, 1 << 20) {
                let headers = rdkafka::message::OwnedHeaders::new()
                    .insert(rdkafka::message::Header { key: "reason", value: Some(reason) })
                    .insert(rdkafka::message::Header { key: "row", value: Some(&row.row) });
                // Again and again until the broker takes it: the window's
                // offsets are committed only after that.
                producer
                    .send_until_taken(topic, Some(&row.row), &payload, Some(headers), |error, pause, fatal| {
                        if let Some(fatal) = fatal {
                            tracing::warn!(stage, %fatal, "the dead-letter producer failed fatally; a new one sends what it held");
                        }
                        tracing::error!(stage, uid, %error, retry_in_ms = pause.as_millis() as u64, "rejected row not delivered to the dead-letter topic; retrying (the window's offsets wait)");
                    })
                    .await;
            }
        }
        let topic = match self {
            DeadLetters::Kafka { topic, .. } => Some(topic.as_str()),
            DeadLetters::Log => None,
        };
        RowRejected { stage, uid, row: &row.row, reason, topic }.emit();
    }
}

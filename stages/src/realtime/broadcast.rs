//! The first-watch broadcast: one message per user per UTC day (key = uid,
//! header `idempotency-key` = `{uid}:{day}`) for reward systems. Sent off
//! the request path: a broadcast that cannot be delivered is counted and
//! logged, and never fails the history write.

use std::time::Duration;

use model::{codec, Record};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

/// Where first watches are announced.
#[derive(Clone)]
pub enum Broadcast {
    /// Not configured.
    Disabled,
    /// `--embedded`: counted and logged in process.
    Embedded,
    /// A Kafka topic.
    Kafka {
        /// Idempotent producer with acks=all.
        producer: FutureProducer,
        /// The topic.
        topic: String,
    },
}

impl Broadcast {
    /// A Kafka broadcast to `topic` on `brokers`.
    pub fn kafka(brokers: &str, topic: &str) -> Result<Self, String> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "300000")
            .create()
            .map_err(|error| format!("cannot create the broadcast producer for {brokers}: {error}"))?;
        Ok(Broadcast::Kafka { producer, topic: topic.to_owned() })
    }

    /// Announces `record`'s user's first watch of `day`.
    pub fn first_watch(&self, record: &Record, day: i64) {
        let outcome = |outcome: &'static str| metrics::counter!("histflow_first_watch_broadcasts_total", "outcome" => outcome).increment(1);
        match self {
            Broadcast::Disabled => {}
            Broadcast::Embedded => {
                outcome("delivered");
                tracing::debug!(uid = record.uid, day, item = %record.item_key(), "first watch of the day");
            }
            Broadcast::Kafka { producer, topic } => {
                let key = record.uid.to_string();
                let idempotency = format!("{}:{day}", record.uid);
                let payload = codec::encode_first_watch(record, day);
                let headers = OwnedHeaders::new().insert(Header { key: "idempotency-key", value: Some(&idempotency) });
                let message = FutureRecord::to(topic).key(&key).payload(&payload).headers(headers);
                match producer.send_result(message) {
                    Ok(delivery) => {
                        let uid = record.uid;
                        tokio::spawn(async move {
                            match tokio::time::timeout(Duration::from_secs(330), delivery).await {
                                Ok(Ok(Ok(_))) => outcome("delivered"),
                                other => {
                                    outcome("failed");
                                    tracing::warn!(uid, day, result = ?other.map(|r| r.map(|d| d.map(drop).map_err(|(e, _)| e.to_string()))), "first-watch broadcast not delivered");
                                }
                            }
                        });
                    }
                    Err((error, _)) => {
                        outcome("failed");
                        tracing::warn!(uid = record.uid, day, %error, "first-watch broadcast not queued");
                    }
                }
            }
        }
    }
}

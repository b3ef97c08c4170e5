//! The first-watch broadcast: one message per user per UTC day (key = uid,
//! header `idempotency-key` = `{uid}:{day}`) for reward systems. Sent off
//! the request path: a broadcast that cannot be delivered is counted and
//! logged, and never fails the history write.

use std::time::Duration;

use backends::kafka::{idempotent_producer, DeliveryTimeout};
use model::{codec, Record};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::events::FirstWatchBroadcast;

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
        let producer = idempotent_producer(brokers, DeliveryTimeout::Default)
            .set("linger.ms", "5")
            .create()
            .map_err(|error| format!("cannot create the broadcast producer for {brokers}: {error}"))?;
        Ok(Broadcast::Kafka { producer, topic: topic.to_owned() })
    }

    /// Announces `record`'s user's first watch of `day`.
    pub fn first_watch(&self, record: &Record, day: i64) {
        match self {
            Broadcast::Disabled => {}
            Broadcast::Embedded => {
                FirstWatchBroadcast::Delivered.emit();
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
                                Ok(Ok(Ok(_))) => FirstWatchBroadcast::Delivered.emit(),
                                Ok(Ok(Err((error, _)))) => FirstWatchBroadcast::Failed { uid, day, error: &error }.emit(),
                                Ok(Err(_)) => FirstWatchBroadcast::Failed { uid, day, error: &"the producer was dropped" }.emit(),
                                Err(_) => FirstWatchBroadcast::Failed { uid, day, error: &"no answer within 330 s" }.emit(),
                            }
                        });
                    }
                    Err((error, _)) => FirstWatchBroadcast::Failed { uid: record.uid, day, error: &error }.emit(),
                }
            }
        }
    }
}

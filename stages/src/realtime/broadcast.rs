//! The first-watch broadcast: one message per user per UTC day (key = uid,
//! header `idempotency-key` = `{uid}:{day}`) for reward systems. Sent off
//! the request path: a broadcast that cannot be delivered is counted and
//! logged, and never fails the history write. A producer that failed
//! fatally is replaced ([`ProducerSlot`]), so later first watches are
//! announced again.

use std::sync::Arc;
use std::time::Duration;

use backends::kafka::{idempotent_producer, DeliveryTimeout, ProducerSlot};
use model::{codec, Record};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;

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
        /// Idempotent producer with acks=all, replaced after a fatal
        /// error.
        producer: Arc<ProducerSlot>,
        /// The topic.
        topic: String,
    },
}

impl Broadcast {
    /// A Kafka broadcast to `topic` on `brokers`.
    pub fn kafka(brokers: &str, topic: &str) -> Result<Self, String> {
        let mut config = idempotent_producer(brokers, DeliveryTimeout::Default);
        config.set("linger.ms", "5");
        let producer = ProducerSlot::new(config).map_err(|error| format!("cannot create the broadcast producer for {brokers}: {error}"))?;
        Ok(Broadcast::Kafka { producer: Arc::new(producer), topic: topic.to_owned() })
    }

    /// Announces `record`'s user's first watch of `day`.
    pub fn first_watch(&self, record: &Record, day: i64) {
        match self {
            Broadcast::Disabled => {}
            Broadcast::Embedded => {
                FirstWatchBroadcast::Delivered.emit();
                tracing::debug!(uid = record.uid, day, item = %record.item_key(), "first watch of the day");
            }
            Broadcast::Kafka { producer: slot, topic } => {
                let (generation, producer) = slot.current();
                let key = record.uid.to_string();
                let idempotency = format!("{}:{day}", record.uid);
                let payload = codec::encode_first_watch(record, day);
                let headers = OwnedHeaders::new().insert(Header { key: "idempotency-key", value: Some(&idempotency) });
                let message = FutureRecord::to(topic).key(&key).payload(&payload).headers(headers);
                match producer.send_result(message) {
                    Ok(delivery) => {
                        let (uid, slot) = (record.uid, slot.clone());
                        tokio::spawn(async move {
                            match tokio::time::timeout(Duration::from_secs(330), delivery).await {
                                Ok(Ok(Ok(_))) => FirstWatchBroadcast::Delivered.emit(),
                                Ok(Ok(Err((error, _)))) => {
                                    replace_if_fatal(&slot, generation);
                                    FirstWatchBroadcast::Failed { uid, day, error: &error }.emit()
                                }
                                Ok(Err(_)) => FirstWatchBroadcast::Failed { uid, day, error: &"the producer was dropped" }.emit(),
                                Err(_) => FirstWatchBroadcast::Failed { uid, day, error: &"no answer within 330 s" }.emit(),
                            }
                        });
                    }
                    Err((error, _)) => {
                        replace_if_fatal(slot, generation);
                        FirstWatchBroadcast::Failed { uid: record.uid, day, error: &error }.emit()
                    }
                }
            }
        }
    }
}

/// Replaces the broadcast producer of `generation` if it failed fatally.
fn replace_if_fatal(slot: &ProducerSlot, generation: u64) {
    if let Some(fatal) = slot.replace_if_fatal(generation) {
        tracing::warn!(%fatal, "the first-watch broadcast producer failed fatally; a new one takes the next broadcasts");
    }
}

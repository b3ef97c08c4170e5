//! The service side of `kafka_batch` on a real broker: one merge-topic
//! message per shard flush (split above `max_message_bytes`), key = shard,
//! through an idempotent, acks=all, compressed producer.
//!
//! Nothing is dropped: a message that fails is sent again with capped
//! backoff until the broker takes it. librdkafka's local queue is kept
//! small, so while the broker is away the queue fills, deliveries stop
//! completing, this stage stops reading, and backpressure reaches ingest.
//! Once every message of a flush is delivered, the marks it carried are
//! settled (a newer view acknowledged meanwhile keeps its mark).

use std::time::Duration;

use backends::kafka::{ensure_topic, idempotent_producer, DeliveryTimeout, Replication};
use backends::retry;
use backends::user_state::UserStore;
use futures::future::{join_all, BoxFuture};
use futures::stream::{FuturesOrdered, StreamExt};
use futures::FutureExt;
use model::{codec, Batch};
use pipeline::health::Dependency;
use pipeline::{Stage, StageContext, StageFuture};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use super::config::{Compression, KafkaBatchConfig};
use super::events::{DeliveryRetry, FlushDelivered, MarksKept, MessageDelivered};

/// Room left in a message for the record batch's own framing.
const FRAMING_BYTES: usize = 4096;
/// Flushes whose deliveries may be outstanding at once.
const MAX_IN_FLIGHT: usize = 8;

/// A built producing half of `kafka_batch`.
pub struct KafkaProducerStage {
    producer: FutureProducer,
    brokers: String,
    /// Copies of the topic it creates.
    replication: Replication,
    topic: String,
    partitions: i32,
    max_message_bytes: usize,
    /// The realtime store whose marks delivered flushes settle.
    marks: Option<UserStore>,
    /// Key expiry of the user keys (a shipped mark expires with them).
    ttl_s: u64,
    /// What the broker answered last, for the live page.
    pub broker_health: Option<Dependency>,
}

impl KafkaProducerStage {
    /// A producer for `config`; `marks` is the realtime store whose marks
    /// delivered flushes settle.
    pub fn new(config: &KafkaBatchConfig, marks: Option<UserStore>, ttl_s: u64) -> Result<Self, String> {
        let compression = match config.compression {
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        };
        let producer = idempotent_producer(&config.brokers, DeliveryTimeout::Never)
            .set("compression.type", compression)
            .set("linger.ms", "5")
            // Keep librdkafka's own buffer small: backpressure, not memory.
            .set("queue.buffering.max.messages", "10000")
            .set("queue.buffering.max.kbytes", "65536")
            .set("message.max.bytes", (config.max_message_bytes + FRAMING_BYTES).to_string())
            .create()
            .map_err(|error| format!("cannot create the Kafka producer for {}: {error}", config.brokers))?;
        Ok(KafkaProducerStage {
            producer,
            brokers: config.brokers.clone(),
            replication: config.replication(),
            topic: config.topic.clone(),
            partitions: config.partitions as i32,
            max_message_bytes: config.max_message_bytes.saturating_sub(FRAMING_BYTES).max(1024),
            marks,
            ttl_s,
            broker_health: None,
        })
    }

    /// Delivers one flush: every message, each retried until taken; then
    /// settles the marks it carried.
    fn deliver(&self, batch: Batch, stage: std::sync::Arc<str>) -> BoxFuture<'static, ()> {
        let shard = batch.shard.unwrap_or(0);
        let messages = codec::encode_merge_batch(shard, &batch.ops, self.max_message_bytes);
        let (producer, topic, marks, ttl_s) = (self.producer.clone(), self.topic.clone(), self.marks.clone(), self.ttl_s);
        let health = self.broker_health.clone();
        let ops = batch.ops;
        let events = ops.len();
        async move {
            let key = shard.to_string();
            let count = messages.len();
            let health = health.as_ref();
            join_all(messages.into_iter().map(|payload| send_until_taken(&producer, &topic, &key, payload, &stage, health))).await;
            FlushDelivered { messages: count, events }.emit();
            if let Some(marks) = marks {
                // Not retried: a mark left behind only makes a re-drive
                // ship the item once more (the writes are idempotent).
                if let Err(error) = marks.settle(shard, &ops, ttl_s).await {
                    MarksKept { stage: &stage, shard, error: &error }.emit();
                }
            }
        }
        .boxed()
    }
}

async fn send_until_taken(producer: &FutureProducer, topic: &str, key: &str, payload: Vec<u8>, stage: &str, health: Option<&Dependency>) {
    let payload = &payload;
    retry::until_ok(
        || async move { producer.send(FutureRecord::to(topic).key(key).payload(payload), Timeout::Never).await.map_err(|(error, _)| error) },
        |error, pause| {
            health.inspect(|health| health.set_up(false));
            DeliveryRetry { stage, topic, error, pause }.emit()
        },
    )
    .await;
    health.inspect(|health| health.set_up(true));
    MessageDelivered { bytes: payload.len() }.emit();
}

impl Stage<Batch> for KafkaProducerStage {
    fn run(self: Box<Self>, mut cx: StageContext<Batch>) -> StageFuture {
        async move {
            ensure_topic(&self.brokers, &self.topic, self.partitions, self.replication, &cx.name).await?;
            let mut in_flight: FuturesOrdered<BoxFuture<'static, ()>> = FuturesOrdered::new();
            let mut open = true;
            loop {
                tokio::select! {
                    biased;
                    Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
                    received = cx.input.recv(), if open && in_flight.len() < MAX_IN_FLIGHT => match received {
                        Some(batch) if batch.ops.is_empty() => {}
                        Some(batch) => in_flight.push_back(self.deliver(batch, cx.name.clone())),
                        None => open = false,
                    },
                    else => break,
                }
            }
            let producer = self.producer.clone();
            tokio::task::spawn_blocking(move || producer.flush(Timeout::After(Duration::from_secs(30)))).await??;
            Ok(())
        }
        .boxed()
    }
}

//! The service side of `kafka_batch` on a real broker: one merge-topic
//! message per shard flush (split above `max_message_bytes`), key = shard,
//! through an idempotent, acks=all, compressed producer.
//!
//! Nothing is dropped: a message that fails is sent again with capped
//! backoff until the broker takes it. librdkafka's local queue is kept
//! small, so while the broker is away the queue fills, deliveries stop
//! completing, this stage stops reading, and backpressure reaches ingest.
//! Once every message of a flush is delivered, the marks it carried are
//! settled (a newer view acknowledged meanwhile keeps its mark). A
//! producer that fails fatally is replaced ([`ProducerSlot`]) and what it
//! held is sent again.
//!
//! With `payload = "fetched"` the flush's references are completed first:
//! each record is read from the realtime store (retried while Redis is
//! away) and shipped whole, so the job never reads Redis and nothing in
//! Redis need wait for the job.

use std::sync::Arc;
use std::time::Duration;

use backends::kafka::{ensure_topic, merge_producer, DeliveryTimeout, ProducerSlot, Replication};
use backends::user_state::{carried_by_user, Carried, UserStore};
use futures::future::{join_all, BoxFuture};
use futures::stream::{FuturesOrdered, StreamExt};
use futures::FutureExt;
use model::{codec, Batch, Op};
use pipeline::health::Dependency;
use pipeline::{Stage, StageContext, StageFuture};
use rdkafka::producer::Producer;
use rdkafka::util::Timeout;

use super::config::{Compression, KafkaBatchConfig, Payload};
use super::events::{DeliveryRetry, FetchRetry, FlushDelivered, MarksKept, MessageDelivered, ProducerRebuilt, ReferenceNotShipped};
use crate::references::{read_referenced, Referenced};

/// Room left in a message for the record batch's own framing.
const FRAMING_BYTES: usize = 4096;
/// Flushes whose deliveries may be outstanding at once.
const MAX_IN_FLIGHT: usize = 8;

/// A built producing half of `kafka_batch`.
pub struct KafkaProducerStage {
    producer: Arc<ProducerSlot>,
    brokers: String,
    /// Copies of the topic it creates.
    replication: Replication,
    topic: String,
    partitions: i32,
    max_message_bytes: usize,
    /// The realtime store whose marks delivered flushes settle.
    marks: Option<UserStore>,
    /// `payload = "fetched"`: references are shipped as the records `marks`
    /// holds.
    fetch: bool,
    /// What the broker answered last, for the live page.
    pub broker_health: Option<Dependency>,
}

impl KafkaProducerStage {
    /// A producer for `config`; `marks` is the realtime store whose marks
    /// delivered flushes settle.
    pub fn new(config: &KafkaBatchConfig, marks: Option<UserStore>) -> Result<Self, String> {
        let fetch = config.payload == Payload::Fetched;
        if fetch && marks.is_none() {
            return Err(format!(
                "`payload = \"fetched\"` reads the records it ships from the realtime stage's Redis, and no realtime stage feeds this bridge ({})",
                config.topic
            ));
        }
        let compression = match config.compression {
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        };
        let mut producer_config = merge_producer(&config.brokers, DeliveryTimeout::Never);
        producer_config
            .set("compression.type", compression)
            .set("linger.ms", "5")
            // Keep librdkafka's own buffer small: backpressure, not memory.
            .set("queue.buffering.max.messages", "10000")
            .set("queue.buffering.max.kbytes", "65536")
            .set("message.max.bytes", (config.max_message_bytes + FRAMING_BYTES).to_string());
        let producer = ProducerSlot::new(producer_config)
            .map_err(|error| format!("cannot create the Kafka producer for {}: {error}", config.brokers))?;
        Ok(KafkaProducerStage {
            producer: Arc::new(producer),
            brokers: config.brokers.clone(),
            replication: config.replication(),
            topic: config.topic.clone(),
            partitions: config.partitions as i32,
            max_message_bytes: config.max_message_bytes.saturating_sub(FRAMING_BYTES).max(1024),
            marks,
            fetch,
            broker_health: None,
        })
    }

    /// Delivers one flush (its references completed first when fetching):
    /// every message, each retried until taken; then settles the marks it
    /// carried.
    fn deliver(&self, batch: Batch, stage: std::sync::Arc<str>) -> BoxFuture<'static, ()> {
        let shard = batch.shard.unwrap_or(0);
        let (producer, topic, marks, fetch) = (self.producer.clone(), self.topic.clone(), self.marks.clone(), self.fetch);
        let max_message_bytes = self.max_message_bytes;
        let health = self.broker_health.clone();
        async move {
            let (ops, not_shipped) = match &marks {
                Some(store) if fetch => fetch_records(store, batch.ops, &stage).await,
                _ => (batch.ops, Vec::new()),
            };
            let messages = codec::encode_merge_batch(shard, &ops, max_message_bytes);
            let key = shard.to_string();
            let count = messages.len();
            let health = health.as_ref();
            join_all(messages.into_iter().map(|payload| send_until_taken(&producer, &topic, &key, payload, &stage, health))).await;
            FlushDelivered { messages: count, events: ops.len() }.emit();
            if let Some(marks) = marks {
                let mut carried = carried_by_user(&ops);
                carried.extend(not_shipped);
                // Not retried: a mark left behind only makes a re-drive
                // ship the item once more (the writes are idempotent).
                if let Err(error) = marks.settle_carried(&carried).await {
                    MarksKept { stage: &stage, shard, error: &error }.emit();
                }
            }
        }
        .boxed()
    }
}

/// `ops` with each reference replaced by the record `store` holds for it
/// (its newest view, which may be newer than the one referenced), and the
/// marks of the references it holds no record for, to settle as if
/// shipped: the item was deleted, cleared or expired since (those leave
/// marks and records of their own), so there is nothing left to write.
async fn fetch_records(store: &UserStore, ops: Vec<Op>, stage: &str) -> (Vec<Op>, Vec<(u64, Vec<Carried>)>) {
    let mut wanted: std::collections::BTreeMap<u64, Vec<String>> = std::collections::BTreeMap::new();
    for op in &ops {
        if let Op::UpsertRef { uid, item, .. } = op {
            wanted.entry(*uid).or_default().push(item.clone());
        }
    }
    if wanted.is_empty() {
        return (ops, Vec::new());
    }
    let wanted: Vec<(u64, Vec<String>)> = wanted.into_iter().collect();
    let found = read_referenced(store, &wanted, |error, pause| FetchRetry { stage, error, pause }.emit()).await;
    let mut records: std::collections::HashMap<(u64, &str), Referenced> = std::collections::HashMap::new();
    for ((uid, items), records_of_user) in wanted.iter().zip(found) {
        for (item, record) in items.iter().zip(records_of_user) {
            records.insert((*uid, item.as_str()), record);
        }
    }
    let mut shipped = Vec::with_capacity(ops.len());
    let mut not_shipped = Vec::new();
    for op in ops {
        let Op::UpsertRef { uid, item, view_at } = op else {
            shipped.push(op);
            continue;
        };
        let why: &dyn std::fmt::Display = match records.get(&(uid, item.as_str())) {
            Some(Referenced::Found(record, _)) => {
                shipped.push(Op::Upsert(record.clone()));
                continue;
            }
            Some(Referenced::Undecodable(error)) => error,
            Some(Referenced::Missing) => &"missing",
            // Every reference was asked for.
            None => continue,
        };
        ReferenceNotShipped { stage, uid, item: &item, why }.emit();
        not_shipped.push((uid, vec![Carried { field: item, version: view_at, whole: true }]));
    }
    (shipped, not_shipped)
}

/// Sends one message of a flush until the broker takes it (replacing a
/// producer that failed fatally), telling the broker's health.
async fn send_until_taken(producer: &ProducerSlot, topic: &str, key: &str, payload: Vec<u8>, stage: &str, health: Option<&Dependency>) {
    producer
        .send_until_taken(topic, Some(key), &payload, None, |error, pause, fatal| {
            health.inspect(|health| health.set_up(false));
            if let Some(fatal) = fatal {
                ProducerRebuilt { stage, fatal }.emit();
            }
            DeliveryRetry { stage, topic, error, pause }.emit()
        })
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
            let (_, producer) = self.producer.current();
            tokio::task::spawn_blocking(move || producer.flush(Timeout::After(Duration::from_secs(30)))).await??;
            Ok(())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::Op;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

    /// A real broker cannot be made to fail a producer fatally on demand,
    /// so librdkafka's own mock cluster (the Kafka protocol, in process)
    /// refuses the first producer id with an authorization error, which
    /// librdkafka treats as fatal. The message must still be delivered: it
    /// is when the failed producer is replaced, and it never is when
    /// `replace_if_fatal` does nothing (the send retries forever).
    #[tokio::test]
    async fn a_message_held_by_a_producer_that_failed_fatally_is_delivered_by_its_successor() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("merge", 1, 1).unwrap();
        cluster.request_errors(RDKafkaApiKey::InitProducerId, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED]);
        let brokers = cluster.bootstrap_servers();
        let slot = ProducerSlot::new(merge_producer(&brokers, DeliveryTimeout::Never)).unwrap();
        let op = Op::UpsertRef { uid: 7, item: "archive:1".into(), view_at: 1000 };
        let payload = codec::encode_merge_batch(3, std::slice::from_ref(&op), 1 << 20).remove(0);
        let sent = send_until_taken(&slot, "merge", "3", payload, "kafka_batch", None);
        tokio::time::timeout(Duration::from_secs(30), sent).await.expect("the message was never delivered after the fatal error");
        assert_eq!(slot.current().0, 1, "the producer was not replaced");

        let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &brokers).set("group.id", "check").create().unwrap();
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset("merge", 0, Offset::Beginning).unwrap();
        consumer.assign(&assignment).unwrap();
        let message = (0..60).find_map(|_| consumer.poll(Duration::from_millis(500))).expect("no message in the topic").unwrap();
        let (shard, ops) = codec::decode_merge_batch(message.payload().unwrap()).unwrap();
        assert_eq!((shard, ops), (3, vec![op]));
    }
}

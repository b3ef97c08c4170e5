//! The job side of `kafka_batch` on a real broker: a consumer group on the
//! merge topic feeding the stages that read it.
//!
//! At least once, never ahead of the write: each message becomes a batch
//! with an ack; an offset is stored for commit only when the downstream
//! (persist) has answered that batch's ack (its rows are durable), and
//! always in consumption order. librdkafka commits stored offsets every
//! second and once more at the end. A message that can never be decoded
//! goes to the dead-letter topic (with the reason and where it came from),
//! sent until the broker takes it, and then counts as done, so it does not
//! block its partition for longer.
//!
//! While the edge downstream is full (persist slow, HBase away), the
//! consumer keeps polling and holds what it reads, in order, up to
//! `hold_max_bytes` of messages. Past that bound (or [`MAX_UNACKED`]
//! messages not yet written) it pauses its partitions and goes on polling:
//! a member that polls keeps its place in the group, so a slow table costs
//! no rebalance however long it lasts. (It used to stop polling instead;
//! held back past `max.poll.interval.ms` the group dropped it, and on
//! tansu 0.6 a static member dropped that way could find its old member id
//! left behind as the group's leader, which never assigns: the job then
//! re-joined every few seconds and committed nothing, the flaky job test
//! of early December 2026.) A pause keeps librdkafka's place (the next
//! fetch starts after the last message handed out), so a resume re-reads
//! nothing and skips nothing. A written batch whose partition a rebalance
//! moved elsewhere (another member joining or leaving) has its offset
//! dropped, not stored: the new owner reads it again from the last commit,
//! and the writes are idempotent. Partitions no member reads are noticed
//! and the group rejoined ([`watch_orphans`]).
//!
//! On the stop signal the consumer stops reading, closes its output so the
//! window downstream is written, waits for those acks and commits.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use backends::kafka::{ensure_topic, group_consumer, idempotent_producer, DeliveryTimeout, ProducerSlot, Replication};
use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, StreamExt};
use futures::FutureExt;
use model::{codec, Ack, Batch};
use pipeline::health::Dependency;
use pipeline::{Stage, StageContext, StageError, StageFuture};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::Message;
use rdkafka::TopicPartitionList;

use super::config::KafkaBatchConfig;
use super::events::{ConsumerLag, ConsumerPaused, DeadLetterSent, OffsetOfLostPartition, OrphansRejoined, ProducerRebuilt};

/// Messages read but not yet durable downstream, at most.
const MAX_UNACKED: usize = 10_000;

/// A built consuming half of `kafka_batch`.
pub struct KafkaConsumerStage {
    brokers: String,
    /// Copies of the topic it creates.
    replication: Replication,
    consumer: Arc<StreamConsumer>,
    /// Replaced when it fails fatally, as the merge producer is.
    dead_letters: ProducerSlot,
    topic: String,
    dead_letter_topic: String,
    /// Message bytes read ahead and held while the edge downstream is full.
    hold_max_bytes: usize,
    /// What the broker answered last, for the live page.
    pub broker_health: Option<Dependency>,
}

/// Batches read and not yet handed downstream, in order, with the bytes of
/// the messages they came from.
#[derive(Default)]
struct Held {
    batches: VecDeque<(Batch, usize)>,
    bytes: usize,
}

impl Held {
    fn push(&mut self, batch: Batch, bytes: usize) {
        self.bytes += bytes;
        self.batches.push_back((batch, bytes));
    }

    fn pop(&mut self) -> Option<Batch> {
        let (batch, bytes) = self.batches.pop_front()?;
        self.bytes -= bytes;
        Some(batch)
    }
}

/// A message read, waiting to be committed: where it is, and what to wait
/// for before it may be.
type Unacked = BoxFuture<'static, (String, i32, i64, Result<(), String>)>;

impl KafkaConsumerStage {
    /// A consumer in `config.consumer_group`.
    pub fn new(config: &KafkaBatchConfig) -> Result<Self, String> {
        let consumer: StreamConsumer = group_consumer(&config.brokers, &config.consumer_group, config.consumer_instance_id.as_deref())
            .create()
            .map_err(|error| format!("cannot create the Kafka consumer for {}: {error}", config.brokers))?;
        let dead_letters = ProducerSlot::new(idempotent_producer(&config.brokers, DeliveryTimeout::Never))
            .map_err(|error| format!("cannot create the dead-letter producer for {}: {error}", config.brokers))?;
        Ok(KafkaConsumerStage {
            brokers: config.brokers.clone(),
            replication: config.replication(),
            consumer: Arc::new(consumer),
            dead_letters,
            topic: config.topic.clone(),
            dead_letter_topic: config.dead_letter_topic.clone(),
            hold_max_bytes: config.hold_max_bytes,
            broker_health: None,
        })
    }

    /// Sends `payload` to the dead-letter topic, again and again until the
    /// broker takes it: its offset is committed only after that.
    async fn dead_letter(&self, payload: &[u8], partition: i32, offset: i64, reason: &str, stage: &str) {
        let (partition_text, offset_text) = (partition.to_string(), offset.to_string());
        let headers = OwnedHeaders::new()
            .insert(Header { key: "reason", value: Some(reason) })
            .insert(Header { key: "source-topic", value: Some(&self.topic) })
            .insert(Header { key: "source-partition", value: Some(&partition_text) })
            .insert(Header { key: "source-offset", value: Some(&offset_text) });
        let topic = &self.dead_letter_topic;
        self.dead_letters
            .send_until_taken::<[u8]>(topic, None, payload, Some(headers), |error, _, fatal| {
                if let Some(fatal) = fatal {
                    ProducerRebuilt { stage, fatal }.emit();
                }
                DeadLetterSent { stage, partition, offset, reason, topic, outcome: &Err(error.clone()) }.emit()
            })
            .await;
        DeadLetterSent { stage, partition, offset, reason, topic, outcome: &Ok(()) }.emit();
    }

    fn store(&self, topic: &str, partition: i32, offset: i64, stage: &str) -> Result<(), StageError> {
        // librdkafka stores offset + 1: the next one to read.
        match self.consumer.store_offset(topic, partition, offset) {
            Ok(()) => Ok(()),
            // Not assigned here any more.
            Err(KafkaError::StoreOffset(RDKafkaErrorCode::State)) => {
                OffsetOfLostPartition { stage, topic, partition, offset }.emit();
                Ok(())
            }
            Err(error) => Err(error.into()),
        }
    }
}

/// Whether the consumer's partitions are paused because it has no room
/// for another message.
#[derive(Default)]
struct Pause {
    paused: bool,
}

impl Pause {
    /// Pauses every assigned partition when `paused` and they are not, or
    /// resumes them when they are and it is not.
    fn want(&mut self, paused: bool, consumer: &StreamConsumer, stage: &str) {
        if paused != self.paused {
            self.paused = paused;
            set_paused(consumer, paused, stage);
        }
    }

    /// Pauses the assignment as it is now (partitions assigned since the
    /// last pause start unpaused).
    fn again(&self, consumer: &StreamConsumer, stage: &str) {
        if self.paused {
            set_paused(consumer, true, stage);
        }
    }
}

/// Pauses or resumes every partition assigned to `consumer` now.
fn set_paused(consumer: &StreamConsumer, paused: bool, stage: &str) {
    let assignment = match consumer.assignment() {
        Ok(assignment) => assignment,
        Err(error) => {
            tracing::warn!(stage, %error, paused, "cannot read the assignment to pause or resume it");
            return;
        }
    };
    let done = if paused { consumer.pause(&assignment) } else { consumer.resume(&assignment) };
    ConsumerPaused { stage, paused, partitions: assignment.count(), outcome: &done }.emit();
}

/// A partition no member reads: behind its end, not assigned here, and its
/// committed offset unmoved this long. Generous, so a member that is only
/// slow (held back by persist) is left alone.
const ORPHANED_AFTER: Duration = Duration::from_secs(30);

/// Every 5 s: looks for partitions of `topic` that nobody reads (a broker
/// that never expires a dead member's partitions, as tansu 0.6 was seen to
/// do after a SIGKILL) and, when one has been left for [`ORPHANED_AFTER`],
/// leaves and rejoins the group so the coordinator assigns every partition
/// to the members alive. Offsets of batches in flight are then dropped
/// (`store`), and their partitions re-read from the last commit.
async fn watch_orphans(consumer: Arc<StreamConsumer>, topic: String, stage: Arc<str>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    // partition -> (committed offset last seen, since when unmoved)
    let mut unmoved: std::collections::HashMap<i32, (i64, std::time::Instant)> = std::collections::HashMap::new();
    loop {
        tick.tick().await;
        let (consumer_now, topic_now) = (consumer.clone(), topic.clone());
        let orphaned = tokio::task::spawn_blocking(move || orphaned_partitions(&consumer_now, &topic_now)).await.unwrap_or_default();
        let now = std::time::Instant::now();
        unmoved.retain(|partition, _| orphaned.iter().any(|(orphan, _)| orphan == partition));
        for (partition, committed) in &orphaned {
            let entry = unmoved.entry(*partition).or_insert((*committed, now));
            if entry.0 != *committed {
                *entry = (*committed, now);
            }
        }
        let stalled: Vec<i32> =
            unmoved.iter().filter(|(_, (_, since))| now.duration_since(*since) >= ORPHANED_AFTER).map(|(p, _)| *p).collect();
        if stalled.is_empty() {
            continue;
        }
        OrphansRejoined { stage: &stage, topic: &topic, partitions: &stalled }.emit();
        consumer.unsubscribe();
        if let Err(error) = consumer.subscribe(&[&topic]) {
            tracing::error!(stage = %stage, %error, "cannot rejoin the group; trying again on the next look");
        }
        unmoved.clear();
    }
}

/// Partitions of `topic` not assigned to this consumer whose committed
/// offset is behind the partition's end, with that offset.
fn orphaned_partitions(consumer: &StreamConsumer, topic: &str) -> Vec<(i32, i64)> {
    let timeout = Duration::from_secs(2);
    let Ok(metadata) = consumer.fetch_metadata(Some(topic), timeout) else { return Vec::new() };
    let Ok(assignment) = consumer.assignment() else { return Vec::new() };
    let mut others = TopicPartitionList::new();
    for partition in metadata.topics().iter().filter(|meta| meta.name() == topic).flat_map(|meta| meta.partitions()) {
        if assignment.find_partition(topic, partition.id()).is_none() {
            others.add_partition(topic, partition.id());
        }
    }
    if others.count() == 0 {
        return Vec::new();
    }
    let Ok(committed) = consumer.committed_offsets(others, timeout) else { return Vec::new() };
    committed
        .elements()
        .iter()
        .filter_map(|element| {
            let committed = element.offset().to_raw().unwrap_or(0).max(0);
            let (_, high) = consumer.fetch_watermarks(topic, element.partition(), timeout).ok()?;
            (high > committed).then_some((element.partition(), committed))
        })
        .collect()
}

/// Every 5 s: for each assigned partition, messages between the consumer's
/// position and the partition's end (`histflow_kafka_consumer_lag_messages`).
async fn report_lag(consumer: Arc<StreamConsumer>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tick.tick().await;
        let consumer = consumer.clone();
        let lags = tokio::task::spawn_blocking(move || -> Vec<(i32, i64)> {
            let Ok(position) = consumer.position() else { return Vec::new() };
            position
                .elements()
                .iter()
                .filter_map(|element| {
                    let at = element.offset().to_raw()?;
                    let (_, high) =
                        consumer.fetch_watermarks(element.topic(), element.partition(), std::time::Duration::from_secs(1)).ok()?;
                    Some((element.partition(), (high - at.max(0)).max(0)))
                })
                .collect()
        })
        .await
        .unwrap_or_default();
        for (partition, messages) in lags {
            ConsumerLag { partition, messages }.emit();
        }
    }
}

impl Stage<Batch> for KafkaConsumerStage {
    fn run(self: Box<Self>, cx: StageContext<Batch>) -> StageFuture {
        async move {
            let StageContext { name, output, shutdown, metrics, .. } = cx;
            ensure_topic(&self.brokers, &self.dead_letter_topic, 1, self.replication, &name).await?;
            self.consumer.subscribe(&[&self.topic])?;
            let lag = tokio::spawn(report_lag(self.consumer.clone()));
            let orphans = tokio::spawn(watch_orphans(self.consumer.clone(), self.topic.clone(), name.clone()));
            tracing::info!(stage = %name, topic = %self.topic, "consuming the merge topic");
            let mut unacked: FuturesOrdered<Unacked> = FuturesOrdered::new();
            let settle = |done: (String, i32, i64, Result<(), String>)| -> Result<(), StageError> {
                let (topic, partition, offset, outcome) = done;
                outcome.map_err(|reason| format!("stage `{name}`: the batch at {topic}/{partition}@{offset} was not written: {reason}"))?;
                self.store(&topic, partition, offset, &name)
            };
            // Read ahead while the edge is full: the batch being handed on,
            // and those waiting behind it.
            let mut held = Held::default();
            let mut sending: Option<BoxFuture<'_, Result<(), pipeline::SendError<Batch>>>> = None;
            let mut pause = Pause::default();
            loop {
                if sending.is_none() {
                    sending = held.pop().map(|batch| output.send(batch).boxed());
                }
                // No room for another message: the partitions pause, and the
                // poll below goes on (it serves the group's events and keeps
                // this member in the group). They resume once half the room
                // is back, so a steady backpressure does not pause and resume
                // (and re-fetch what librdkafka had read ahead) per message.
                let full = unacked.len() >= MAX_UNACKED || (sending.is_some() && held.bytes >= self.hold_max_bytes);
                let drained = unacked.len() < MAX_UNACKED / 2 && (sending.is_none() || held.bytes <= self.hold_max_bytes / 2);
                if full || drained {
                    pause.want(full, &self.consumer, &name);
                }
                let message = tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break,
                    sent = async { sending.as_mut().expect("guarded").await }, if sending.is_some() => {
                        sending = None;
                        sent?;
                        continue;
                    }
                    Some(done) = unacked.next(), if !unacked.is_empty() => {
                        settle(done)?;
                        continue;
                    }
                    received = self.consumer.recv() => {
                        if let Some(health) = &self.broker_health {
                            health.set_up(received.is_ok());
                        }
                        match received {
                            // A message while paused: from a partition
                            // assigned since the pause (a rebalance starts
                            // it unpaused), or read before the pause took.
                            // It is held, past the bound, and the
                            // assignment paused again.
                            Ok(message) => {
                                pause.again(&self.consumer, &name);
                                message
                            }
                            Err(error) => {
                                metrics.error();
                                tracing::warn!(stage = %name, %error, "Kafka consumer error; continuing");
                                continue;
                            }
                        }
                    }
                };
                let (topic, partition, offset) = (message.topic().to_owned(), message.partition(), message.offset());
                let payload = message.payload().unwrap_or_default();
                match codec::decode_merge_batch(payload) {
                    Ok((shard, ops)) => {
                        let (ack, answer) = Ack::new();
                        held.push(Batch { shard: Some(shard), ack: Some(ack), ..Batch::of(ops) }, payload.len());
                        unacked.push_back(
                            async move {
                                let outcome = match answer.await {
                                    Ok(Ok(_)) => Ok(()),
                                    Ok(Err(reason)) => Err(reason),
                                    Err(_) => Err("the downstream stage stopped before writing it".to_owned()),
                                };
                                (topic, partition, offset, outcome)
                            }
                            .boxed(),
                        );
                    }
                    Err(error) => {
                        self.dead_letter(payload, partition, offset, &error.to_string(), &name).await;
                        unacked.push_back(async move { (topic, partition, offset, Ok(())) }.boxed());
                    }
                }
            }
            // Stop: hand on what was read (the window downstream writes it
            // when its input closes, within the drain's deadline), ...
            if let Some(pending) = sending.take() {
                pending.await?;
            }
            drop(sending);
            while let Some(batch) = held.pop() {
                output.send(batch).await?;
            }
            // ... close the output so the window downstream is written, then
            // commit what it acknowledges.
            drop(output);
            while let Some(done) = unacked.next().await {
                settle(done)?;
            }
            let consumer = self.consumer.clone();
            match tokio::task::spawn_blocking(move || consumer.commit_consumer_state(CommitMode::Sync)).await? {
                Ok(()) => {}
                // Nothing stored since the last commit.
                Err(rdkafka::error::KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
                Err(error) => return Err(error.into()),
            }
            lag.abort();
            orphans.abort();
            tracing::info!(stage = %name, "consumer stopped; written batches are committed");
            Ok(())
        }
        .boxed()
    }
}

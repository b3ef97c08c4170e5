//! Where a lost item got to: when a test finds acknowledged items missing
//! from the history table, these helpers say what Redis still holds of
//! them (records, marks, the re-drive index) and which merge-topic
//! messages carried them, so one failure tells whether the service never
//! shipped an item or the job never wrote what was shipped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use model::{codec, keys, Op};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// Shards of the aggregate in the tests' topologies (the default).
const SHARDS: u32 = 64;

/// One item's entries in Redis: its record, pending mark, shipped
/// version, whether a kept copy exists, and the user's re-drive index score.
type ItemState = (Option<Vec<u8>>, Option<String>, Option<String>, bool);

/// A report of `missing` (uid, item) pairs: their Redis state at `redis`
/// (with the database) and every message of `topic` that carried them,
/// with the job group's committed offsets (`{topic}-job`).
pub async fn missing(redis: &str, brokers: &str, topic: &str, missing: &[(u64, String)]) -> String {
    let shown = &missing[..missing.len().min(5)];
    let mut report = String::from("--- where the missing items are:\n");
    match redis_state(redis, shown).await {
        Ok(text) => report.push_str(&text),
        Err(error) => writeln!(report, "Redis state unreadable: {error}").unwrap_or(()),
    }
    let (brokers, topic, wanted) = (brokers.to_owned(), topic.to_owned(), shown.to_vec());
    let carried = tokio::task::spawn_blocking(move || messages_carrying(&brokers, &topic, &wanted)).await;
    report.push_str(&carried.unwrap_or_else(|error| format!("reading the topic failed: {error}\n")));
    report
}

/// Per pair: the record, the pending, shipped and kept entries, and the
/// user's score in the re-drive index.
async fn redis_state(redis: &str, pairs: &[(u64, String)]) -> redis::RedisResult<String> {
    let mut connection =
        backends::user_state::Link::connect_lazy(redis, false).map_err(|error| redis::RedisError::from(std::io::Error::other(error)))?;
    let mut text = String::new();
    for (uid, item) in pairs {
        let shard = keys::shard_of(*uid, SHARDS);
        let (record, pending, shipped, kept): ItemState = redis::pipe()
            .cmd("HGET")
            .arg(keys::records(*uid))
            .arg(item)
            .cmd("HGET")
            .arg(keys::pending(*uid))
            .arg(item)
            .cmd("HGET")
            .arg(keys::pending(*uid))
            .arg(keys::shipped_field(item))
            .cmd("HEXISTS")
            .arg(keys::kept(*uid))
            .arg(item)
            .query_async(&mut connection)
            .await?;
        let index = keys::user_pending_index(*uid, SHARDS, connection.is_cluster());
        let indexed: Option<f64> = redis::cmd("ZSCORE").arg(&index).arg(uid).query_async(&mut connection).await?;
        let record = record.and_then(|bytes| codec::decode_record(&bytes).ok()).map(|record| record.view_at);
        writeln!(
            text,
            "uid {uid} {item} (shard {shard}): record view_at {record:?}, pending {pending:?}, shipped {shipped:?}, kept {kept}, re-drive index score {indexed:?}"
        )
        .unwrap_or(());
    }
    Ok(text)
}

/// Every message of `topic` carrying one of `pairs`, and the job group's
/// committed offset and the end of each partition.
fn messages_carrying(brokers: &str, topic: &str, pairs: &[(u64, String)]) -> String {
    let consumer: BaseConsumer =
        match ClientConfig::new().set("bootstrap.servers", brokers).set("group.id", super::unique("trace")).create() {
            Ok(consumer) => consumer,
            Err(error) => return format!("no consumer: {error}\n"),
        };
    let timeout = Duration::from_secs(10);
    let partitions: Vec<i32> = match consumer.fetch_metadata(Some(topic), timeout) {
        Ok(metadata) => metadata.topics().iter().flat_map(|meta| meta.partitions().iter().map(|partition| partition.id())).collect(),
        Err(error) => return format!("no metadata for {topic}: {error}\n"),
    };
    let committed = super::committed(brokers, &format!("{topic}-job"), topic, partitions.len() as i32);
    let mut text = String::new();
    let mut ends = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for &partition in &partitions {
        let high = consumer.fetch_watermarks(topic, partition, timeout).map_or(-1, |(_, high)| high);
        ends.insert(partition, high);
        writeln!(text, "{topic}/{partition}: end {high}, job committed {:?}", committed.get(partition as usize)).unwrap_or(());
        if high > 0 {
            assignment.add_partition_offset(topic, partition, Offset::Beginning).unwrap_or(());
        }
    }
    if consumer.assign(&assignment).is_err() {
        return text + "cannot assign the partitions\n";
    }
    let mut done: BTreeMap<i32, bool> = ends.iter().map(|(partition, high)| (*partition, *high <= 0)).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while done.values().any(|finished| !finished) && std::time::Instant::now() < deadline {
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(500)) else { continue };
        let (partition, offset) = (message.partition(), message.offset());
        if offset + 1 >= ends[&partition] {
            done.insert(partition, true);
        }
        let Ok((shard, ops)) = codec::decode_merge_batch(message.payload().unwrap_or_default()) else { continue };
        for op in &ops {
            let (uid, item, version) = match op {
                Op::Upsert(record) => (record.uid, record.item_key(), record.view_at),
                Op::UpsertRef { uid, item, view_at } => (*uid, item.clone(), *view_at),
                _ => continue,
            };
            if pairs.iter().any(|(want_uid, want_item)| *want_uid == uid && *want_item == item) {
                let kind = if matches!(op, Op::Upsert(_)) { "whole" } else { "ref" };
                writeln!(
                    text,
                    "  {topic}/{partition}@{offset} (shard {shard}, {} ops) carries uid {uid} {item} @{version} ({kind})",
                    ops.len()
                )
                .unwrap_or(());
            }
        }
    }
    if done.values().any(|finished| !finished) {
        text.push_str("  (the topic was not read to its end within 30 s)\n");
    }
    text
}

//! `histflow replay TOPOLOGY --from <time|offset> [--to ...] [--uid U ...]
//! [--dry-run]`: re-reads the merge topic's retained messages in a range,
//! with a consumer of its own (assigned partitions, never the job's group,
//! nothing committed), and writes what they carry to the history table
//! through the persist stage's window logic ([`stages::persist::stage::window_rows`]).
//!
//! Idempotent: an upsert whose item the table already holds at that view
//! or newer is skipped (counted), a newer one is written with its view as
//! the cell's timestamp, markers (deletes, clears, recording switches) are
//! written at their own times, so running it twice changes nothing the
//! second time. An `ids` reference is completed from Redis (read only); one
//! whose record is gone is counted `missing`. Ops are folded and written
//! [`CHUNK_OPS`] at a time, so memory stays bounded whatever the range;
//! table reads and writes follow the persist stage's `write_rate_limit`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Context;
use backends::history_table::{self, HistoryTable, Wanted};
use backends::user_state::Link;
use model::{codec, keys};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use stages::persist::window::{Pending, Window};

use super::endpoints::Endpoints;

/// Ops folded before a chunk is written.
pub const CHUNK_OPS: usize = 5_000;
/// Rows per table call.
const BATCH_ROWS: usize = 100;
/// Longest wait for the broker's answers and for the next message.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines a dry run prints, at most (the counts cover the rest).
const DRY_RUN_LINES: usize = 100;

/// Where a range starts or ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// An offset, the same in every partition.
    Offset(i64),
    /// A time, unix ms: the first message at or after it.
    Time(i64),
}

impl std::str::FromStr for Position {
    type Err = String;

    /// A number is an offset; an RFC 3339 time (`2026-12-07T04:00:00Z`) a time.
    fn from_str(text: &str) -> Result<Self, String> {
        if let Ok(offset) = text.parse::<i64>() {
            return if offset >= 0 { Ok(Position::Offset(offset)) } else { Err(format!("offset {offset} is negative")) };
        }
        let at = humantime::parse_rfc3339_weak(text)
            .map_err(|error| format!("{text:?} is neither an offset nor an RFC 3339 time such as 2026-12-07T04:00:00Z: {error}"))?;
        let ms = at.duration_since(std::time::UNIX_EPOCH).map_err(|_| format!("{text:?} is before 1970"))?.as_millis();
        Ok(Position::Time(i64::try_from(ms).map_err(|_| format!("{text:?} is too far ahead"))?))
    }
}

/// What a replay did (or, dry, would do).
#[derive(Debug, Default, serde::Serialize)]
pub struct Replayed {
    /// Messages read.
    pub messages: u64,
    /// Ops they carried (of the users asked for).
    pub ops: u64,
    /// Item cells written: the table held an older view or none.
    pub written: u64,
    /// Item cells skipped: the table already held that view or a newer one.
    pub skipped: u64,
    /// `ids` references whose record is gone from Redis.
    pub missing: u64,
    /// Deletes, clears and recording switches written at their times.
    pub markers: u64,
}

/// The replay's settings.
pub struct Request {
    /// First message (inclusive).
    pub from: Position,
    /// Last message (exclusive); none: the end of each partition now.
    pub to: Option<Position>,
    /// Only these users; empty: every user.
    pub uids: BTreeSet<u64>,
    /// Print what would change, change nothing.
    pub dry_run: bool,
}

/// Offsets of `positions` in every partition of `topic`.
fn offsets(
    consumer: &StreamConsumer,
    topic: &str,
    partitions: &[(i32, i64, i64)],
    position: Position,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    match position {
        Position::Offset(offset) => Ok(partitions.iter().map(|(partition, low, high)| (*partition, offset.clamp(*low, *high))).collect()),
        Position::Time(at) => {
            let mut wanted = TopicPartitionList::new();
            for (partition, _, _) in partitions {
                wanted.add_partition_offset(topic, *partition, Offset::Offset(at))?;
            }
            let found = consumer.offsets_for_times(wanted, KAFKA_TIMEOUT).context("the broker did not find offsets for the time")?;
            Ok(found
                .elements()
                .iter()
                .map(|element| {
                    let high =
                        partitions.iter().find(|(partition, _, _)| *partition == element.partition()).map_or(0, |(_, _, high)| *high);
                    // No message at or after the time: the partition's end.
                    (element.partition(), element.offset().to_raw().filter(|offset| *offset >= 0).unwrap_or(high))
                })
                .collect())
        }
    }
}

/// Replays the range `request` names.
pub async fn run(endpoints: &Endpoints, request: Request) -> anyhow::Result<Replayed> {
    let (brokers, topic, _) = endpoints.kafka()?;
    let table = endpoints.table()?;
    let redis = match endpoints.payload {
        Some(stages::kafka_batch::Payload::Ids) => Some(endpoints.redis().context("an `ids` topic's references are completed from Redis")?),
        _ => None,
    };
    let group = format!("histflow-replay-{}-{}", std::process::id(), model::now_ms());
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .context("cannot create the replay's consumer")?;
    let metadata = consumer.fetch_metadata(Some(topic), KAFKA_TIMEOUT).with_context(|| format!("cannot read topic {topic:?}"))?;
    let topic_meta = metadata.topics().first().context("the broker named no topic")?;
    anyhow::ensure!(!topic_meta.partitions().is_empty(), "topic {topic:?} has no partitions (does it exist?)");
    let mut partitions = Vec::new();
    for partition in topic_meta.partitions() {
        let (low, high) = consumer.fetch_watermarks(topic, partition.id(), KAFKA_TIMEOUT)?;
        partitions.push((partition.id(), low, high));
    }
    let starts = offsets(&consumer, topic, &partitions, request.from)?;
    let ends = match request.to {
        Some(to) => offsets(&consumer, topic, &partitions, to)?,
        None => partitions.iter().map(|(partition, _, high)| (*partition, *high)).collect(),
    };
    let mut assignment = TopicPartitionList::new();
    let mut open: BTreeMap<i32, i64> = BTreeMap::new();
    let mut ranges = Vec::new();
    for (partition, low, _) in &partitions {
        let (start, end) = (starts[partition].max(*low), ends[partition]);
        if start < end {
            assignment.add_partition_offset(topic, *partition, Offset::Offset(start))?;
            open.insert(*partition, end);
            ranges.push(format!("{partition}: {start}..{end}"));
        }
    }
    eprintln!(
        "replay: topic {topic:?}, {} of {} partitions hold messages in the range (partition: offsets) {}",
        ranges.len(),
        partitions.len(),
        ranges.join(", ")
    );
    let mut replayed = Replayed::default();
    if open.is_empty() {
        return Ok(replayed);
    }
    consumer.assign(&assignment)?;
    let limit = endpoints.limit();
    let mut window = Window::default();
    let mut shown = 0;
    while !open.is_empty() {
        let message = tokio::time::timeout(KAFKA_TIMEOUT, consumer.recv())
            .await
            .with_context(|| format!("no message within {KAFKA_TIMEOUT:?}; still to read: {open:?} (partition: end offset)"))??;
        let Some(end) = open.get(&message.partition()).copied() else { continue };
        if message.offset() >= end {
            open.remove(&message.partition());
            continue;
        }
        if message.offset() + 1 >= end {
            open.remove(&message.partition());
        }
        replayed.messages += 1;
        let Some(payload) = message.payload() else { continue };
        let (_, ops) = codec::decode_merge_batch(payload)
            .with_context(|| format!("partition {} offset {}: not a merge batch", message.partition(), message.offset()))?;
        for op in ops.into_iter().filter(|op| request.uids.is_empty() || request.uids.contains(&op.uid())) {
            replayed.ops += 1;
            window.add(op);
        }
        if window.ops >= CHUNK_OPS {
            apply(&mut window, &table, redis.as_ref(), &limit, request.dry_run, &mut replayed, &mut shown).await?;
        }
    }
    apply(&mut window, &table, redis.as_ref(), &limit, request.dry_run, &mut replayed, &mut shown).await?;
    Ok(replayed)
}

/// Completes, filters and writes (or, dry, prints) one window.
async fn apply(
    window: &mut Window,
    table: &HistoryTable,
    redis: Option<&Link>,
    limit: &pipeline::rate_limit::RateLimit,
    dry_run: bool,
    replayed: &mut Replayed,
    shown: &mut usize,
) -> anyhow::Result<()> {
    // `ids` references: the record Redis holds now (read only).
    let references: Vec<((u64, String), i64)> = window
        .upserts
        .iter()
        .filter_map(|(key, pending)| match pending {
            Pending::Ref(view_at) => Some((key.clone(), *view_at)),
            Pending::Full(_) => None,
        })
        .collect();
    for ((uid, item), _) in references {
        let link = redis.context("an `ids` reference and no Redis to complete it from")?;
        let record: Option<Vec<u8>> = redis::cmd("HGET").arg(keys::records(uid)).arg(&item).query_async(&mut link.clone()).await?;
        let record = match record {
            Some(bytes) => Some(bytes),
            None => redis::cmd("HGET").arg(keys::kept(uid)).arg(&item).query_async(&mut link.clone()).await?,
        };
        match record.and_then(|bytes| codec::decode_record(&bytes).ok()) {
            Some(record) => {
                window.upserts.insert((uid, item), Pending::Full(record));
            }
            None => {
                replayed.missing += 1;
                window.upserts.remove(&(uid, item));
            }
        }
    }
    // Skip what the table already holds at that view or newer.
    let mut by_user: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (uid, item) in window.upserts.keys() {
        by_user.entry(*uid).or_default().push(item.clone());
    }
    for (uid, mut items) in by_user {
        items.sort();
        limit.take(1).await;
        let cells = table.read(uid, Wanted::Items(&items)).await.with_context(|| format!("cannot read user {uid}'s row"))?;
        let held: BTreeMap<String, i64> = history_table::records(cells).into_iter().map(|cell| (cell.item, cell.view_at)).collect();
        for item in items {
            let key = (uid, item);
            let Some(Pending::Full(record)) = window.upserts.get(&key) else { continue };
            let table_view = held.get(&key.1).copied();
            if table_view.is_some_and(|view| view >= record.view_at) {
                replayed.skipped += 1;
                window.upserts.remove(&key);
                continue;
            }
            replayed.written += 1;
            if dry_run && *shown < DRY_RUN_LINES {
                *shown += 1;
                let had = table_view.map_or("no cell".to_owned(), |view| format!("the view of {}", super::shown::shown_time(view)));
                println!(
                    "would write user {} {} viewed at {} (the table holds {had})",
                    key.0,
                    key.1,
                    super::shown::shown_time(record.view_at)
                );
            }
        }
    }
    replayed.markers += (window.deletes.len() + window.clears.len() + window.business_clears.len() + window.recording.len()) as u64;
    if dry_run {
        *window = Window::default();
        return Ok(());
    }
    let (rows, _) = stages::persist::stage::window_rows(window, table, None, "replay").await.map_err(|error| anyhow::anyhow!("{error}"))?;
    for chunk in rows.chunks(BATCH_ROWS) {
        limit.take_all(chunk.len()).await;
        table.mutate_rows(chunk.to_vec()).await.context("the history table refused a write")?;
    }
    *window = Window::default();
    Ok(())
}

//! One user as the stores hold it, read without changing anything: every
//! Redis key of the user (paged with `HSCAN`/`ZRANGE`, so a large user is
//! many bounded calls), its entries in the re-drive index, its HBase row,
//! and the job's lag on the merge topic; then a verdict per item.
//!
//! Verdicts, per item (its newest view anywhere):
//! - `durable`: the history table holds the newest view Redis knows;
//! - `pending`: it does not yet, and a mark or shipped reference names the
//!   item, or the job has not yet written all the topic holds (lag > 0):
//!   it is on its way;
//! - `only in HBase`: Redis no longer knows the item (trimmed or expired);
//!   the table holds it;
//! - `deleted`: a delete or clear marker at or after its newest view hides
//!   it (the table may still hold the cell until the job writes the
//!   marker);
//! - `missing`: Redis knows the item (its timeline, a mark), but neither
//!   Redis's record nor the table holds its newest view, and nothing is on
//!   its way: an acknowledged view is lost.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use backends::history_table::{self, HistoryTable, Wanted};
use backends::user_state::Link;
use model::{codec, keys, Record};
use serde::Serialize;

/// Fields and members read per call.
const PAGE: usize = 500;

/// A verdict on one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Verdict {
    /// The table holds its newest view.
    #[serde(rename = "durable")]
    Durable,
    /// On its way to the table.
    #[serde(rename = "pending")]
    Pending,
    /// Only the table knows it.
    #[serde(rename = "only in HBase")]
    OnlyInHbase,
    /// Hidden by a delete or clear marker.
    #[serde(rename = "deleted")]
    Deleted,
    /// Acknowledged and held nowhere.
    #[serde(rename = "missing")]
    Missing,
}

impl Verdict {
    /// As the commands print it.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Durable => "durable",
            Verdict::Pending => "pending",
            Verdict::OnlyInHbase => "only in HBase",
            Verdict::Deleted => "deleted",
            Verdict::Missing => "missing",
        }
    }
}

/// A record as the commands show it.
#[derive(Debug, Clone, Serialize)]
pub struct Shown {
    /// When it was watched (unix ms; an HBase cell's timestamp).
    pub view_at: i64,
    /// Seconds watched; -1 finished.
    pub progress: i64,
}

impl From<&Record> for Shown {
    fn from(record: &Record) -> Self {
        Shown { view_at: record.view_at, progress: record.progress }
    }
}

/// What Redis holds of one item.
#[derive(Debug, Clone, Serialize)]
pub struct RedisItem {
    /// Its score in the timeline (`h:{uid}:t`), if listed.
    pub timeline_view_at: Option<i64>,
    /// Its record (`h:{uid}:r`), if held.
    pub record: Option<Shown>,
    /// Its kept copy (`h:{uid}:k`: trimmed while still needed), if any.
    pub kept: Option<Shown>,
}

/// The markers that hide an item.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Markers {
    /// Its delete marker (`d:<item>`).
    pub deleted_at: Option<i64>,
    /// The user's clear of everything (`cleared_at`).
    pub cleared_at: Option<i64>,
    /// The clear of its business (`c:<business>`).
    pub business_cleared_at: Option<i64>,
}

impl Markers {
    fn newest(&self) -> Option<i64> {
        [self.deleted_at, self.cleared_at, self.business_cleared_at].into_iter().flatten().max()
    }
}

/// One item and its verdict.
#[derive(Debug, Clone, Serialize)]
pub struct ItemReport {
    /// `business:oid`.
    pub item: String,
    /// Where it stands.
    pub verdict: Verdict,
    /// What Redis holds of it; `null` when nothing.
    pub redis: Option<RedisItem>,
    /// Its pending mark (`version,marked_at`, then `,k` when its record is kept), if any.
    pub mark: Option<String>,
    /// Its shipped reference (`ids`: handed to Kafka, not yet written).
    pub shipped: Option<String>,
    /// The history table's cell; `null` when none.
    pub hbase: Option<Shown>,
    /// The markers that apply to it.
    pub markers: Markers,
}

/// One user across the stores.
#[derive(Debug, Clone, Serialize)]
pub struct UserReport {
    /// The user.
    pub uid: u64,
    /// Its shard (the re-drive index and merge-topic key it uses).
    pub shard: u32,
    /// `paused` as Redis and the table hold it.
    pub recording: Recording,
    /// The meta hash's fields other than markers (`day`, `trimmed_at`, ...).
    pub meta: BTreeMap<String, String>,
    /// Each key of the user and its time to live: ms, -1 without expiry,
    /// `null` when the key does not exist.
    pub keys: BTreeMap<String, Option<i64>>,
    /// Its score in its re-drive index (its shard's on one Redis, its
    /// hash slot's on a cluster), if listed.
    pub pending_index: Option<f64>,
    /// Its score in its shard's leaving set, if listed.
    pub leaving_index: Option<f64>,
    /// The job's lag on the merge topic (messages not yet committed);
    /// `null` when it could not be read.
    pub job_lag: Option<i64>,
    /// Per item, newest first.
    pub items: Vec<ItemReport>,
    /// Items per verdict.
    pub counts: BTreeMap<&'static str, usize>,
}

/// Whether recording is paused.
#[derive(Debug, Clone, Serialize)]
pub struct Recording {
    /// In Redis (what reports see now).
    pub redis: bool,
    /// In the table's `m:paused`, if written.
    pub hbase: Option<bool>,
}

/// Every field of a hash, `PAGE` at a time.
async fn hash(link: &Link, key: &str) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut fields = BTreeMap::new();
    let mut cursor = 0u64;
    loop {
        let (next, page): (u64, Vec<(String, Vec<u8>)>) =
            redis::cmd("HSCAN").arg(key).arg(cursor).arg("COUNT").arg(PAGE).query_async(&mut link.clone()).await?;
        fields.extend(page);
        if next == 0 {
            return Ok(fields);
        }
        cursor = next;
    }
}

/// Some fields of a hash.
async fn hash_fields(link: &Link, key: &str, fields: &[String]) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let values: Vec<Option<Vec<u8>>> = redis::cmd("HMGET").arg(key).arg(fields).query_async(&mut link.clone()).await?;
    Ok(fields.iter().cloned().zip(values).filter_map(|(field, value)| Some((field, value?))).collect())
}

/// Every member of a sorted set with its score, `PAGE` at a time.
async fn sorted_set(link: &Link, key: &str) -> anyhow::Result<BTreeMap<String, i64>> {
    let mut members = BTreeMap::new();
    for start in (0..).step_by(PAGE) {
        let page: Vec<(String, f64)> =
            redis::cmd("ZRANGE").arg(key).arg(start).arg(start + PAGE - 1).arg("WITHSCORES").query_async(&mut link.clone()).await?;
        let done = page.len() < PAGE;
        members.extend(page.into_iter().map(|(member, score)| (member, score as i64)));
        if done {
            break;
        }
    }
    Ok(members)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn number(bytes: Option<&Vec<u8>>) -> Option<i64> {
    bytes.and_then(|bytes| std::str::from_utf8(bytes).ok()?.parse().ok())
}

fn record(bytes: &[u8]) -> Option<Record> {
    codec::decode_record(bytes).ok()
}

/// Reads `uid` (only `only` items, when given) from Redis and the table;
/// `job_lag` is the job's lag on the merge topic, if known.
pub async fn read(
    link: &Link,
    table: &HistoryTable,
    shards: u32,
    uid: u64,
    only: Option<&[String]>,
    job_lag: Option<i64>,
) -> anyhow::Result<UserReport> {
    let shard = keys::shard_of(uid, shards);
    let redis_error = |what: &str| format!("cannot read the user's {what} from Redis");
    let (records, kept, marks, meta, timeline) = match only {
        None => (
            hash(link, &keys::records(uid)).await.with_context(|| redis_error("records"))?,
            hash(link, &keys::kept(uid)).await.with_context(|| redis_error("kept records"))?,
            hash(link, &keys::pending(uid)).await.with_context(|| redis_error("marks"))?,
            hash(link, &keys::meta(uid)).await.with_context(|| redis_error("meta"))?,
            sorted_set(link, &keys::timeline(uid)).await.with_context(|| redis_error("timeline"))?,
        ),
        Some(items) => {
            let mut meta_fields: Vec<String> = ["paused", "day", "cleared_at", "trimmed_at", "hbase_checked"].map(str::to_owned).to_vec();
            for item in items {
                meta_fields.push(format!("d:{item}"));
                meta_fields.push(format!("c:{}", item.split_once(':').map_or(item.as_str(), |(business, _)| business)));
            }
            let mut timeline = BTreeMap::new();
            for item in items {
                let score: Option<f64> = redis::cmd("ZSCORE").arg(keys::timeline(uid)).arg(item).query_async(&mut link.clone()).await?;
                if let Some(score) = score {
                    timeline.insert(item.clone(), score as i64);
                }
            }
            (
                hash_fields(link, &keys::records(uid), items).await.with_context(|| redis_error("records"))?,
                hash_fields(link, &keys::kept(uid), items).await.with_context(|| redis_error("kept records"))?,
                hash_fields(
                    link,
                    &keys::pending(uid),
                    &items.iter().flat_map(|item| [item.clone(), keys::shipped_field(item)]).collect::<Vec<_>>(),
                )
                .await
                .with_context(|| redis_error("marks"))?,
                hash_fields(link, &keys::meta(uid), &meta_fields).await.with_context(|| redis_error("meta"))?,
                timeline,
            )
        }
    };
    // The marks' hash holds the pending marks and the shipped references.
    let (mut pending, mut shipped) = (BTreeMap::new(), BTreeMap::new());
    for (field, value) in marks.into_iter().filter(|(field, _)| field != keys::PENDING_KEEPER) {
        match keys::shipped_item(&field) {
            Some(item) => shipped.insert(item.to_owned(), value),
            None => pending.insert(field, value),
        };
    }
    let mut key_ttls = BTreeMap::new();
    for key in [keys::timeline(uid), keys::records(uid), keys::meta(uid), keys::pending(uid), keys::kept(uid)] {
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut link.clone()).await?;
        key_ttls.insert(key, (ttl != -2).then_some(ttl));
    }
    // Its index: its slot's on a cluster (its shard's there only if an
    // older build put it there), its shard's on one Redis.
    let index = keys::user_pending_index(uid, shards, link.is_cluster());
    let mut pending_index: Option<f64> = redis::cmd("ZSCORE").arg(&index).arg(uid).query_async(&mut link.clone()).await?;
    if pending_index.is_none() && link.is_cluster() {
        pending_index = redis::cmd("ZSCORE").arg(keys::pending_index(shard)).arg(uid).query_async(&mut link.clone()).await?;
    }
    let leaving_index: Option<f64> = redis::cmd("ZSCORE").arg(keys::leaving_index(shard)).arg(uid).query_async(&mut link.clone()).await?;

    let wanted = match only {
        None => Wanted::Everything,
        Some(items) => Wanted::ItemsAndPaused(items),
    };
    let cells = table.read(uid, wanted).await.context("cannot read the user's row from the history table")?;
    let hbase_paused = history_table::paused(&cells);
    let mut hbase: BTreeMap<String, Shown> = history_table::records(cells)
        .into_iter()
        .map(|cell| {
            let progress = record(&cell.value).map_or(0, |record| record.progress);
            (cell.item, Shown { view_at: cell.view_at, progress })
        })
        .collect();

    let is_item = |field: &str| !field.starts_with('~');
    let names: BTreeSet<String> = timeline
        .keys()
        .chain(records.keys())
        .chain(kept.keys())
        .chain(pending.keys().filter(|field| is_item(field)))
        .chain(shipped.keys())
        .chain(hbase.keys())
        .filter(|item| only.is_none_or(|only| only.contains(item)))
        .cloned()
        .collect();
    let cleared_at = number(meta.get("cleared_at")).filter(|at| *at >= 0);
    let mut items = Vec::with_capacity(names.len());
    for item in names {
        let business = item.split_once(':').map_or(item.as_str(), |(business, _)| business);
        let markers = Markers {
            deleted_at: number(meta.get(&format!("d:{item}"))),
            cleared_at,
            business_cleared_at: number(meta.get(&format!("c:{business}"))),
        };
        let redis_item = RedisItem {
            timeline_view_at: timeline.get(&item).copied(),
            record: records.get(&item).and_then(|bytes| record(bytes)).as_ref().map(Shown::from),
            kept: kept.get(&item).and_then(|bytes| record(bytes)).as_ref().map(Shown::from),
        };
        let known = redis_item.timeline_view_at.is_some() || redis_item.record.is_some() || redis_item.kept.is_some();
        let report = ItemReport {
            verdict: Verdict::Durable,
            redis: known.then_some(redis_item),
            mark: pending.get(&item).map(|value| text(value)),
            shipped: shipped.get(&item).map(|value| text(value)),
            hbase: hbase.remove(&item),
            markers,
            item,
        };
        items.push(ItemReport { verdict: verdict(&report, job_lag), ..report });
    }
    items.sort_by_key(|item| std::cmp::Reverse(newest_view(item)));
    let mut counts = BTreeMap::new();
    for item in &items {
        *counts.entry(item.verdict.label()).or_insert(0) += 1;
    }
    let meta_shown =
        meta.iter().filter(|(field, _)| !field.starts_with("d:") && !field.starts_with("c:")).map(|(f, v)| (f.clone(), text(v))).collect();
    Ok(UserReport {
        uid,
        shard,
        recording: Recording { redis: meta.get("paused").is_some_and(|value| value == b"1"), hbase: hbase_paused },
        meta: meta_shown,
        keys: key_ttls,
        pending_index,
        leaving_index,
        job_lag,
        items,
        counts,
    })
}

/// The newest view Redis knows of the item, if any.
fn redis_view(item: &ItemReport) -> Option<i64> {
    let redis = item.redis.as_ref()?;
    [redis.timeline_view_at, redis.record.as_ref().map(|shown| shown.view_at), redis.kept.as_ref().map(|shown| shown.view_at)]
        .into_iter()
        .flatten()
        .max()
}

fn newest_view(item: &ItemReport) -> i64 {
    redis_view(item).into_iter().chain(item.hbase.as_ref().map(|shown| shown.view_at)).max().unwrap_or(i64::MIN)
}

/// Where the item stands (see the module's list).
fn verdict(item: &ItemReport, job_lag: Option<i64>) -> Verdict {
    let hbase_view = item.hbase.as_ref().map(|shown| shown.view_at);
    if item.markers.newest().is_some_and(|marker| marker >= newest_view(item)) {
        return Verdict::Deleted;
    }
    let Some(redis_view) = redis_view(item) else {
        return if hbase_view.is_some() { Verdict::OnlyInHbase } else { Verdict::Missing };
    };
    if hbase_view.is_some_and(|view| view >= redis_view) {
        return Verdict::Durable;
    }
    let held = item.redis.as_ref().is_some_and(|redis| redis.record.is_some() || redis.kept.is_some());
    let on_its_way = item.mark.is_some() || item.shipped.is_some() || job_lag.is_some_and(|lag| lag > 0);
    if held && on_its_way {
        Verdict::Pending
    } else {
        Verdict::Missing
    }
}

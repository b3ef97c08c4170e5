//! `histflow audit TOPOLOGY --sample N | --uid U ...`: users checked end to
//! end (the snapshot of `inspect`), counted by verdict; the command fails
//! when any item is `missing`, so it can run after an incident or from
//! cron. Reads only; one user at a time, at the persist stage's
//! `write_rate_limit` rows a second at most.
//!
//! A sample is drawn from both stores: random keys of Redis (users Redis
//! knows) and rows of the history table from random points of its key
//! space (its row keys start with a hash of the uid, so a random point is
//! a random user), half each.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::BuildHasher;

use backends::history_table::Wanted;
use serde::Serialize;

use super::endpoints::Endpoints;
use super::snapshot::{self, Verdict};

/// Missing items listed by name, at most.
const LISTED: usize = 50;

/// What an audit found.
#[derive(Debug, Default, Serialize)]
pub struct Audited {
    /// Users checked.
    pub users: usize,
    /// Items per verdict.
    pub counts: BTreeMap<&'static str, usize>,
    /// The first missing items (uid, item).
    pub missing: Vec<(u64, String)>,
}

impl Audited {
    /// Items no store holds.
    pub fn missing_count(&self) -> usize {
        self.counts.get(Verdict::Missing.label()).copied().unwrap_or(0)
    }
}

/// A random number.
fn random() -> u64 {
    std::collections::hash_map::RandomState::new().hash_one(std::time::Instant::now())
}

/// The user of a Redis key `h:{uid}:x`.
fn uid_of_key(key: &str) -> Option<u64> {
    key.strip_prefix("h:{")?.split_once('}')?.0.parse().ok()
}

/// Up to `count` users: half from random Redis keys, half from random
/// points of the table.
async fn sample(endpoints: &Endpoints, count: usize) -> anyhow::Result<BTreeSet<u64>> {
    let (link, table) = (endpoints.redis()?, endpoints.table()?);
    let mut users = BTreeSet::new();
    let from_redis = count.div_ceil(2);
    for _ in 0..from_redis * 4 {
        if users.len() >= from_redis {
            break;
        }
        let key: Option<String> = redis::cmd("RANDOMKEY").query_async(&mut link.clone()).await?;
        match key {
            Some(key) => users.extend(uid_of_key(&key)),
            None => break,
        }
    }
    let limit = endpoints.limit();
    for _ in 0..count * 4 {
        if users.len() >= count {
            break;
        }
        limit.take(1).await;
        let start = format!("{:04x}", random() % 0x10000);
        let rows = table.scan_rows(Some(start), 1, Wanted::Records.columns()).await?;
        users.extend(rows.iter().filter_map(|(row, _)| model::keys::uid_of_hbase_row(row)));
    }
    Ok(users)
}

/// Audits `uids`, or a sample of `sample` users.
pub async fn run(endpoints: &Endpoints, uids: &[u64], sample_size: Option<usize>) -> anyhow::Result<Audited> {
    let (link, table) = (endpoints.redis()?, endpoints.table()?);
    let users: BTreeSet<u64> = match sample_size {
        Some(count) => sample(endpoints, count).await?,
        None => uids.iter().copied().collect(),
    };
    anyhow::ensure!(users.iter().all(|uid| *uid > 0), "a uid must be greater than 0");
    let job_lag = endpoints.job_lag().await;
    let limit = endpoints.limit();
    let mut audited = Audited { users: users.len(), ..Audited::default() };
    for uid in users {
        limit.take(1).await;
        let report = snapshot::read(&link, &table, endpoints.shards, uid, None, job_lag).await?;
        for item in report.items {
            *audited.counts.entry(item.verdict.label()).or_insert(0) += 1;
            if item.verdict == Verdict::Missing && audited.missing.len() < LISTED {
                audited.missing.push((uid, item.item));
            }
        }
    }
    Ok(audited)
}

//! The reader: pages of a user's timeline, progress look-ups and the
//! recording flag, from the user-state store (Redis or the embedded store)
//! with cache-aside to the history table (HBase through Thrift, or the
//! embedded table).
//!
//! Redis holds at most `max_items_per_user` items per user, and may have
//! lost a user's keys (expiry, failover). A page that runs past what Redis
//! holds reads the user's HBase row and merges: Redis wins for an item it
//! holds, and Redis's delete and clear markers hide HBase items the job has
//! not yet deleted there. To keep a user with nothing more in HBase from
//! costing an HBase call on every short page, a read that finds HBase holds
//! nothing Redis lacks records when (`hbase_checked`), in a user never
//! trimmed: such a user has nothing on its way to HBase that its timeline
//! lacks, so the note holds until a trim (which voids it) or a loss of
//! Redis data (after which it is trusted for
//! [`backends::user_state::NOTE_LIFETIME_MS`] at most).

use std::collections::{HashMap, HashSet};
use std::future::Future;

use backends::history_table::{self, HistoryTable, Wanted};
use backends::user_state::{SliceQuery, UserMeta, UserStore};
use model::Record;

use crate::cursor::{Cursor, Page, PageError, PageQuery, ReadError};
use crate::events::{HbaseRead, PageServed, ReadRetried};
use crate::merge::{decode, hbase_candidates, Candidate};

/// Timeline members read per call when a business filter may skip many.
const FILTERED_CHUNK: usize = 128;

/// Reads from the stores of a service process.
pub struct HistoryReader {
    /// The user-state store (Redis or embedded).
    pub store: UserStore,
    /// The history table for cache-aside; none: Redis alone.
    pub table: Option<HistoryTable>,
    /// Progress look-ups fall back to the history table.
    pub progress_fallback: bool,
    /// Note "HBase holds nothing more" for a user never trimmed, so its
    /// short pages skip HBase for a while
    /// ([`backends::user_state::NOTE_LIFETIME_MS`]).
    pub note_checks: bool,
    /// Each business's retention in ms: older views (by view_at) are no
    /// longer shown, wherever they are still stored. A business missing
    /// here is shown whatever its age.
    pub retention_ms: HashMap<String, i64>,
}

fn read_error(error: impl std::fmt::Display) -> ReadError {
    ReadError(error.to_string())
}

/// Attempts at one store call of a read before the read fails.
const READ_ATTEMPTS: u32 = 3;

/// Runs a store call of a read; one that fails (Redis's answer later than
/// its response timeout on a loaded machine, a connection dropped, a
/// gateway's hiccup) is tried again after the shared backoff's pauses
/// (drawn below 100 ms, then below 200 ms), [`READ_ATTEMPTS`] times in all. Every call a read
/// makes only reads, so a retry changes nothing; a page answers 503
/// `read_failed` only when the store stays away.
async fn with_retries<T, E: std::fmt::Display, Fut: Future<Output = Result<T, E>>>(
    call: &'static str,
    attempt: impl FnMut() -> Fut,
) -> Result<T, ReadError> {
    let mut failed = 0;
    let retried = |error: &E, _pause| {
        failed += 1;
        ReadRetried { call, attempt: failed, error }.emit();
    };
    backends::retry::at_most(READ_ATTEMPTS, attempt, retried).await.map_err(read_error)
}

impl HistoryReader {
    /// Whether a view of `business` at `view_at` is past its retention at
    /// `now` (unix ms).
    fn expired(&self, business: &str, view_at: i64, now: i64) -> bool {
        self.retention_ms.get(business).is_some_and(|&retention| model::past_retention(view_at, retention, now))
    }

    /// As [`Self::expired`], for an item key `business:oid`.
    fn expired_item(&self, item: &str, view_at: i64, now: i64) -> bool {
        item.split_once(':').is_some_and(|(business, _)| self.expired(business, view_at, now))
    }

    /// Timeline members after the cursor (in the business), newest first,
    /// with their records: up to `want`, and whether the timeline ran out
    /// before that.
    async fn realtime_members(&self, uid: u64, query: &PageQuery, want: usize) -> Result<(Vec<Member>, UserMeta, bool), ReadError> {
        let chunk = if query.businesses.is_some() || !self.retention_ms.is_empty() { want.max(FILTERED_CHUNK) } else { want };
        let now = model::now_ms();
        let mut picked = Vec::new();
        let mut offset = 0;
        let mut first = true;
        loop {
            let cursor = query.cursor.as_ref();
            let slice_query =
                SliceQuery { max: cursor.map(|c| c.view_at), tie: cursor.filter(|_| first).map(|c| c.view_at), offset, count: chunk };
            let slice = with_retries("timeline", || self.store.timeline_slice(uid, slice_query)).await?;
            let requested = chunk + slice.ties;
            let returned = slice.members.len();
            offset += returned;
            let records = slice.records.into_iter().chain(std::iter::repeat(None));
            for ((item, view_at), record) in slice.members.into_iter().zip(records) {
                let after_cursor = cursor.is_none_or(|cursor| cursor.precedes(view_at, &item));
                if after_cursor && query.admits_item(&item) && !self.expired_item(&item, view_at, now) && picked.len() < want {
                    picked.push(Member { item, view_at, record });
                }
            }
            if returned < requested {
                return Ok((picked, slice.meta, true));
            }
            if picked.len() >= want {
                return Ok((picked, slice.meta, false));
            }
            first = false;
        }
    }

    /// A page of `uid`'s history.
    pub async fn page(&self, uid: u64, query: PageQuery) -> Result<Page, ReadError> {
        self.page_with(uid, query, || Ok::<(), std::convert::Infallible>(())).await.map_err(|error| match error {
            PageError::Read(error) => error,
            PageError::Refused(never) => match never {},
        })
    }

    /// A page of `uid`'s history; `before_hbase` is asked first when the
    /// page must read the user's HBase row (a caller charges the read
    /// there), and its refusal answers instead of the read.
    pub async fn page_with<E>(
        &self,
        uid: u64,
        query: PageQuery,
        before_hbase: impl FnOnce() -> Result<(), E>,
    ) -> Result<Page, PageError<E>> {
        let want = query.limit + 1;
        let (members, meta, exhausted) = self.realtime_members(uid, &query, want).await?;
        // HBase is read only for a page Redis cannot fill. A full page at
        // the end of Redis gets a cursor when HBase may hold more; the next
        // page finds out (and may be empty).
        let hbase_may_hold_more = exhausted && meta.hbase_may_hold_more(model::now_ms());
        let full = members.len() >= query.limit;
        let table = self.table.as_ref().filter(|_| hbase_may_hold_more && !full);
        let Some(table) = table else {
            PageServed { read_hbase: false }.emit();
            let more = members.len() > query.limit || (full && hbase_may_hold_more && self.table.is_some());
            let shown: Vec<Member> = members.into_iter().take(query.limit).collect();
            let next = more.then(|| shown.last().map(|member| Cursor { view_at: member.view_at, item: member.item.clone() })).flatten();
            let items = candidates(uid, shown).into_iter().map(|c| c.record).collect();
            return Ok(Page { items, next });
        };

        // Redis ran short and HBase may hold more: read the user's row.
        before_hbase().map_err(PageError::Refused)?;
        PageServed { read_hbase: true }.emit();
        HbaseRead.emit();
        let cells = history_table::records(with_retries("history row", || table.read(uid, Wanted::Records)).await?);
        let now = model::now_ms();
        let in_redis: HashSet<String> =
            with_retries("whole timeline", || self.store.whole_timeline(uid)).await?.into_iter().map(|(item, _)| item).collect();
        let items: Vec<String> = cells.iter().map(|cell| cell.item.clone()).collect();
        let (fresh_meta, markers) = with_retries("meta and markers", || self.store.meta_and_markers(uid, &items)).await?;
        let found = hbase_candidates(uid, cells, &marker_map(items, markers), fresh_meta.cleared_at, &in_redis);
        if found.all_in_redis {
            // Nothing in HBase that Redis lacks: later short pages skip HBase
            // for the note's lifetime, unless a trim comes first.
            let noted = if self.note_checks { self.store.mark_hbase_checked(uid, model::now_ms()).await } else { Ok(()) };
            if let Err(error) = noted {
                tracing::debug!(uid, %error, "could not note the HBase check; the next short page reads HBase again");
            }
        }
        let mut merged = candidates(uid, members);
        merged.extend(found.candidates.into_iter().filter(|candidate| {
            query.cursor.as_ref().is_none_or(|cursor| cursor.precedes(candidate.view_at, &candidate.item))
                && query.admits(&candidate.record.business)
                && !self.expired(&candidate.record.business, candidate.view_at, now)
        }));
        merged.sort_by(|a, b| (b.view_at, &b.item).cmp(&(a.view_at, &a.item)));
        let next = (merged.len() > query.limit)
            .then(|| Cursor { view_at: merged[query.limit - 1].view_at, item: merged[query.limit - 1].item.clone() });
        merged.truncate(query.limit);
        Ok(Page { items: merged.into_iter().map(|c| c.record).collect(), next })
    }

    /// The record of each of `items` (`business:oid`), `None` where there
    /// is none, in order.
    pub async fn progress(&self, uid: u64, items: Vec<String>) -> Result<Vec<Option<Record>>, ReadError> {
        let wanted = [(uid, items.clone())];
        let found = with_retries("records", || self.store.read_records(&wanted)).await?;
        let mut records: Vec<Option<Record>> = found
            .into_iter()
            .next()
            .unwrap_or_default()
            .into_iter()
            .zip(&items)
            .map(|(bytes, item)| bytes.and_then(|bytes| decode(uid, item, &bytes)))
            .collect();
        records.resize(items.len(), None);
        let now = model::now_ms();
        let live = |record: Option<Record>| record.filter(|record| !self.expired(&record.business, record.view_at, now));
        records = records.into_iter().map(live).collect();
        let Some(table) = self.table.as_ref().filter(|_| self.progress_fallback) else {
            return Ok(records);
        };
        let missing: Vec<String> =
            items.iter().zip(&records).filter(|(_, record)| record.is_none()).map(|(item, _)| item.clone()).collect();
        if missing.is_empty() {
            return Ok(records);
        }
        HbaseRead.emit();
        let cells = history_table::records(with_retries("history row", || table.read(uid, Wanted::Items(&missing))).await?);
        let (meta, markers) = with_retries("meta and markers", || self.store.meta_and_markers(uid, &missing)).await?;
        // Items Redis holds were answered above; none of `missing` is there.
        let found = hbase_candidates(uid, cells, &marker_map(missing, markers), meta.cleared_at, &HashSet::new());
        for candidate in found.candidates {
            if let Some(index) = items.iter().position(|item| *item == candidate.item) {
                records[index] = live(Some(candidate.record));
            }
        }
        Ok(records)
    }

    /// Whether `uid`'s recording is paused.
    pub async fn paused(&self, uid: u64) -> Result<bool, ReadError> {
        let (meta, _) = with_retries("meta", || self.store.meta_and_markers(uid, &[])).await?;
        if meta.exists {
            return Ok(meta.paused);
        }
        // No realtime keys (new user, expired or lost): the switch, if any,
        // is in HBase.
        let Some(table) = &self.table else { return Ok(false) };
        let cells = with_retries("history row", || table.read(uid, Wanted::Paused)).await?;
        Ok(history_table::paused(&cells).unwrap_or(false))
    }
}

/// A timeline member and its record as the realtime store holds them.
struct Member {
    item: String,
    view_at: i64,
    record: Option<Vec<u8>>,
}

/// The members' records, decoded (a member whose record vanished
/// meanwhile, trimmed or deleted, is left out).
fn candidates(uid: u64, members: Vec<Member>) -> Vec<Candidate> {
    members
        .into_iter()
        .filter_map(|member| {
            let record = decode(uid, &member.item, member.record.as_deref()?)?;
            Some(Candidate { view_at: member.view_at, item: member.item, record })
        })
        .collect()
}

/// Item -> delete marker, from markers read in the order of `items`.
fn marker_map(items: Vec<String>, markers: Vec<Option<i64>>) -> HashMap<String, i64> {
    items.into_iter().zip(markers).filter_map(|(item, marker)| Some((item, marker?))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A call that fails `failures` times, then answers; and how often it
    /// was made.
    async fn flaky(failures: u32) -> (Result<&'static str, ReadError>, u32) {
        let made = Cell::new(0);
        let answer = with_retries("test", || {
            made.set(made.get() + 1);
            let failed = made.get() <= failures;
            async move {
                if failed {
                    Err("timed out")
                } else {
                    Ok("served")
                }
            }
        })
        .await;
        (answer, made.get())
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_is_tried_three_times_before_it_fails() {
        assert_eq!(flaky(0).await.1, 1, "a call that answers is made once");
        let (answer, made) = flaky(2).await;
        assert_eq!((answer.ok(), made), (Some("served"), 3), "two failures, then served");
        let (answer, made) = flaky(3).await;
        assert_eq!((answer.map_err(|error| error.0), made), (Err("timed out".to_owned()), 3), "three failures fail the read");
    }
}

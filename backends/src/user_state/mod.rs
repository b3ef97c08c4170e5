//! The per-user state every part of histflow shares: the timeline, the
//! records and the meta of each user, and the marks of what a service
//! acknowledged and has not yet handed on. Four consumers use it: the
//! realtime stage (writes, mutations, and the re-drive of stale marks), the
//! Kafka producer (settling the marks a delivered flush carried), the
//! persist stage (`ids` re-reads, the write count, releasing references)
//! and the read side (pages, progress, the recording switch).
//!
//! - `rules`: the write rules as data, and the embedded store's copy of
//!   the decisions.
//! - `record.lua`, `mutate.lua`, `page.lua`, `mark_checked.lua`,
//!   `release_written.lua`, `settle.lua`, `claim.lua`: the same rules for
//!   Redis, one atomic script each; `marks.lua` is the marks' helpers the
//!   scripts that keep marks start with; `due.lua` reads a cluster's slot
//!   re-drive indexes.
//! - `marks`: the marks as data (fields, what a flush settles, what a
//!   re-drive ships).
//! - `meta`: the meta hash's fields and what a read makes of them.
//! - `params`: what every write of a commit shares, and a store call's
//!   error.
//! - `calls`: grouping users into script calls (by hash slot on a cluster).
//! - `link`: the connection, to one Redis or a cluster (pipelines split by
//!   hash slot).
//! - `redis`: the store on Redis.
//! - `redrive_index`: the re-drive index on Redis and the re-drive;
//!   `slot_scan`: where a cluster's re-drive stands in its slots.
//! - `embedded`: the store in process memory (`--embedded`).

mod calls;
mod embedded;
pub(crate) mod link;
mod marks;
mod meta;
mod params;
mod redis;
mod redrive_index;
mod rules;
mod slot_scan;

use std::sync::Arc;

use model::Op;

pub use calls::CallShape;
pub use embedded::EmbeddedStore;
pub use link::{seeds as redis_seeds, Link};
pub use marks::{carried_by_user, Carried, ClaimedMark, PendingStats, Redriven};
pub use meta::{SliceQuery, TimelineSlice, UserMeta, NOTE_LIFETIME_MS};
pub use params::{StoreError, WriteParams};
pub use redis::RedisStore;
pub use rules::{
    result_of, trimmed_at_once, EventWrite, Status, UserState, UserWrite, NOT_RECORDED, RECORDED, RECORDED_FIRST_TODAY, TRIMMED_AT_ONCE,
};

/// The user-state store of a process.
#[derive(Clone)]
pub enum UserStore {
    /// A real Redis.
    Redis(RedisStore),
    /// The in-process stand-in of `--embedded`.
    Embedded(Arc<EmbeddedStore>),
}

impl UserStore {
    /// Writes every user's events; returns one status per event per user.
    pub async fn write(&self, users: &[UserWrite], params: WriteParams) -> Result<Vec<Vec<Status>>, StoreError> {
        match self {
            UserStore::Redis(redis) => redis.write(users, params).await,
            UserStore::Embedded(store) => Ok(store.write(users, params)),
        }
    }

    /// After a flush reached Kafka: settles the marks its `ops` carried (a
    /// mark acknowledged later, of a newer version, stays).
    /// The embedded store keeps no marks: nothing of it outlives its
    /// process.
    pub async fn settle(&self, ops: &[Op]) -> Result<(), StoreError> {
        self.settle_carried(&carried_by_user(ops)).await
    }

    /// [`UserStore::settle`] of marks named one by one, per user (as
    /// [`carried_by_user`] answers them).
    pub async fn settle_carried(&self, users: &[(u64, Vec<Carried>)]) -> Result<(), StoreError> {
        match self {
            UserStore::Redis(redis) => redis.settle(users).await,
            UserStore::Embedded(_) => Ok(()),
        }
    }

    /// Claims the pending marks of `shard` of `shards` older than
    /// `grace_ms` (at most `max_users` users) and returns what to ship
    /// again.
    pub async fn redrive(&self, shard: u32, shards: u32, grace_ms: i64, max_users: usize) -> Result<Redriven, StoreError> {
        match self {
            UserStore::Redis(redis) => redis.redrive(shard, shards, grace_ms, max_users).await,
            UserStore::Embedded(_) => Ok(Redriven::default()),
        }
    }

    /// Users with pending marks over `shards` shards, and the oldest.
    pub async fn pending_stats(&self, shards: u32) -> Result<PendingStats, StoreError> {
        match self {
            UserStore::Redis(redis) => redis.pending_stats(shards).await,
            UserStore::Embedded(_) => Ok(PendingStats::default()),
        }
    }

    /// Whether marks outlive this process (and a re-drive can use them).
    pub fn keeps_marks(&self) -> bool {
        matches!(self, UserStore::Redis(_))
    }

    /// The stored records of each user's items (`None` where an item has
    /// none: trimmed, expired, deleted), one pipelined HMGET per user.
    pub async fn read_records(&self, wanted: &[(u64, Vec<String>)]) -> Result<Vec<Vec<Option<Vec<u8>>>>, StoreError> {
        match self {
            UserStore::Redis(redis) => redis.read_records(wanted).await,
            UserStore::Embedded(store) => Ok(store.read_records(wanted)),
        }
    }

    /// Applies deletes, clears and recording switches in order; returns
    /// each one's effective time (see `mutate.lua`).
    pub async fn mutate(&self, ops: &[&Op], params: WriteParams) -> Result<Vec<i64>, StoreError> {
        match self {
            UserStore::Redis(redis) => redis.mutate(ops, params).await,
            UserStore::Embedded(store) => Ok(store.mutate(ops)),
        }
    }

    /// A slice of `uid`'s timeline and the user's meta, read atomically.
    pub async fn timeline_slice(&self, uid: u64, query: SliceQuery) -> Result<TimelineSlice, StoreError> {
        match self {
            UserStore::Redis(redis) => redis.timeline_slice(uid, query).await,
            UserStore::Embedded(store) => Ok(store.timeline_slice(uid, query)),
        }
    }

    /// Every (item, view_at) of `uid`'s timeline.
    pub async fn whole_timeline(&self, uid: u64) -> Result<Vec<(String, i64)>, StoreError> {
        match self {
            UserStore::Redis(redis) => redis.whole_timeline(uid).await,
            UserStore::Embedded(store) => Ok(store.whole_timeline(uid)),
        }
    }

    /// `uid`'s meta and the delete marker of each of `items`.
    pub async fn meta_and_markers(&self, uid: u64, items: &[String]) -> Result<(UserMeta, Vec<Option<i64>>), StoreError> {
        match self {
            UserStore::Redis(redis) => redis.meta_and_markers(uid, items).await,
            UserStore::Embedded(store) => Ok(store.meta_and_markers(uid, items)),
        }
    }

    /// Notes that HBase holds nothing `uid`'s timeline lacks, at `now_ms`
    /// (`meta::NOTE_LIFETIME_MS`); ignored for a user ever trimmed, or one
    /// the store holds nothing of (a read creates no state).
    pub async fn mark_hbase_checked(&self, uid: u64, now_ms: i64) -> Result<(), StoreError> {
        match self {
            UserStore::Redis(redis) => redis.mark_hbase_checked(uid, now_ms).await,
            UserStore::Embedded(store) => {
                store.mark_hbase_checked(uid, now_ms);
                Ok(())
            }
        }
    }

    /// After the job made records durable in HBase: releases the
    /// references it re-read (`ids` payload; per user, item and view_at
    /// written), whose kept copies are needed no more. The embedded store
    /// keeps no shipped reference.
    pub async fn release_written(&self, written: &[(u64, Vec<(String, i64)>)]) -> Result<(), StoreError> {
        match self {
            UserStore::Redis(redis) => redis.release_written(written).await,
            UserStore::Embedded(_) => Ok(()),
        }
    }

    /// Whether the store answers (for `/readyz`).
    pub async fn ping(&self) -> bool {
        match self {
            UserStore::Redis(redis) => redis.ping().await,
            UserStore::Embedded(_) => true,
        }
    }
}

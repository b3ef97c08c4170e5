//! Where realtime writes go: Redis (one atomic script call per user, all
//! users of a commit in one pipeline) or the embedded in-process store
//! with the same rules. Also the per-shard dirty marks both keep.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use model::keys;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::core::{Status, UserState, UserWrite};

const RECORD_SCRIPT: &str = include_str!("record.lua");

/// Removes a user from its dirty set only if it was not marked again after
/// the flush that carried it. KEYS[1] = dirty set, ARGV[1] = flushed_at,
/// ARGV[2..] = uids.
const UNMARK_SCRIPT: &str = r"
local removed = 0
for i = 2, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) <= tonumber(ARGV[1]) then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return removed
";

/// What every write of a commit shares.
#[derive(Debug, Clone, Copy)]
pub struct WriteParams {
    /// Timeline length kept per user.
    pub max_items: usize,
    /// Key expiry after inactivity, seconds.
    pub ttl_s: u64,
    /// Today's UTC day number (first watch of the day).
    pub today: i64,
    /// Now, unix ms (the dirty mark's score).
    pub now_ms: i64,
    /// Number of uid shards (which dirty set a user goes in).
    pub shards: u32,
}

/// How users are grouped into script calls.
#[derive(Debug, Clone, Copy)]
pub struct CallShape {
    /// Redis Cluster: only users of one hash slot share a call.
    pub cluster: bool,
    /// Most events in one call (a user's events are never split).
    pub max_events: usize,
}

/// Groups user indexes into script calls: whole users, at most
/// `max_events` events a call (a larger user goes alone), and under
/// `cluster` only users of the same hash slot together.
pub fn plan_calls(users: &[UserWrite], shape: CallShape) -> Vec<Vec<usize>> {
    let mut groups: std::collections::BTreeMap<u16, Vec<usize>> = std::collections::BTreeMap::new();
    for (index, user) in users.iter().enumerate() {
        let slot = if shape.cluster { keys::cluster_slot(user.uid) } else { 0 };
        groups.entry(slot).or_default().push(index);
    }
    let mut calls = Vec::new();
    for members in groups.into_values() {
        let mut call: Vec<usize> = Vec::new();
        let mut events = 0;
        for index in members {
            let size = users[index].events.len();
            if !call.is_empty() && events + size > shape.max_events {
                calls.push(std::mem::take(&mut call));
                events = 0;
            }
            call.push(index);
            events += size;
        }
        if !call.is_empty() {
            calls.push(call);
        }
    }
    calls
}

/// A write that did not happen; the requests it carried get 503.
#[derive(Debug, thiserror::Error)]
#[error("realtime store: {0}")]
pub struct StoreError(pub String);

/// The realtime store of a process.
#[derive(Clone)]
pub enum RealtimeStore {
    /// A real Redis.
    Redis(RedisStore),
    /// The in-process stand-in of `--embedded`.
    Embedded(Arc<EmbeddedStore>),
}

impl RealtimeStore {
    /// Writes every user's events; returns one status per event per user.
    pub async fn write(&self, users: &[UserWrite], params: WriteParams) -> Result<Vec<Vec<Status>>, StoreError> {
        match self {
            RealtimeStore::Redis(redis) => redis.write(users, params).await,
            RealtimeStore::Embedded(store) => Ok(store.write(users, params)),
        }
    }

    /// After a shard's flush reached Kafka: forgets the dirty marks of
    /// `uids` not marked again after `flushed_at`.
    pub async fn unmark_dirty(&self, shard: u32, uids: &[u64], flushed_at: i64) -> Result<(), StoreError> {
        match self {
            RealtimeStore::Redis(redis) => redis.unmark_dirty(shard, uids, flushed_at).await,
            RealtimeStore::Embedded(store) => {
                store.unmark_dirty(shard, uids, flushed_at);
                Ok(())
            }
        }
    }

    /// The stored records of each user's items (`None` where an item has
    /// none: trimmed, expired, deleted), one pipelined HMGET per user.
    pub async fn read_records(&self, wanted: &[(u64, Vec<String>)]) -> Result<Vec<Vec<Option<Vec<u8>>>>, StoreError> {
        match self {
            RealtimeStore::Redis(redis) => redis.read_records(wanted).await,
            RealtimeStore::Embedded(store) => Ok(store.read_records(wanted)),
        }
    }

    /// Whether the store answers (for `/readyz`).
    pub async fn ping(&self) -> bool {
        match self {
            RealtimeStore::Redis(redis) => redis.ping().await,
            RealtimeStore::Embedded(_) => true,
        }
    }
}

/// Redis behind a reconnecting connection manager.
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    shape: CallShape,
    record: redis::Script,
    unmark: redis::Script,
}

impl RedisStore {
    /// A store for `url`; connects lazily and reconnects with capped
    /// exponential backoff, so Redis may be down at start-up.
    pub fn connect_lazy(url: &str, shape: CallShape) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(|error| StoreError(format!("bad redis_url {url:?}: {error}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(2))
            .set_number_of_retries(3);
        let connection = ConnectionManager::new_lazy_with_config(client, config).map_err(|error| StoreError(error.to_string()))?;
        Ok(RedisStore { connection, shape, record: redis::Script::new(RECORD_SCRIPT), unmark: redis::Script::new(UNMARK_SCRIPT) })
    }

    async fn write(&self, users: &[UserWrite], params: WriteParams) -> Result<Vec<Vec<Status>>, StoreError> {
        let calls = plan_calls(users, self.shape);
        let mut pipe = redis::pipe();
        for call_users in &calls {
            let mut call = redis::cmd("EVALSHA");
            call.arg(self.record.get_hash()).arg(call_users.len() * 3);
            for &index in call_users {
                let uid = users[index].uid;
                call.arg(keys::timeline(uid)).arg(keys::records(uid)).arg(keys::meta(uid));
            }
            call.arg(params.max_items).arg(params.ttl_s).arg(params.today);
            for &index in call_users {
                call.arg(users[index].events.len());
                for event in &users[index].events {
                    call.arg(&event.item).arg(event.view_at).arg(&event.record);
                }
            }
            pipe.add_command(call);
        }
        // Dirty marks: one ZADD per shard for all of its users.
        let mut by_shard: std::collections::BTreeMap<u32, Vec<u64>> = std::collections::BTreeMap::new();
        for user in users {
            by_shard.entry(keys::shard_of(user.uid, params.shards)).or_default().push(user.uid);
        }
        for (shard, uids) in by_shard {
            let mut mark = redis::cmd("ZADD");
            mark.arg(keys::dirty(shard));
            for uid in uids {
                mark.arg(params.now_ms).arg(uid);
            }
            pipe.add_command(mark).ignore();
        }
        let mut connection = self.connection.clone();
        let first: redis::RedisResult<Vec<Vec<Status>>> = pipe.query_async(&mut connection).await;
        let replies = match first {
            Ok(replies) => replies,
            // The script cache was flushed (restart, SCRIPT FLUSH): load it
            // and try once more. No EVALSHA ran, so nothing is applied twice.
            Err(error) if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.record.prepare_invoke().load_async(&mut connection).await.map_err(|error| StoreError(error.to_string()))?;
                pipe.query_async(&mut connection).await.map_err(|error| StoreError(error.to_string()))?
            }
            Err(error) => return Err(StoreError(error.to_string())),
        };
        // Put each call's flat statuses back per user.
        let mut statuses: Vec<Vec<Status>> = vec![Vec::new(); users.len()];
        for (call_users, reply) in calls.iter().zip(replies) {
            let mut reply = reply.into_iter();
            for &index in call_users {
                statuses[index] = reply.by_ref().take(users[index].events.len()).collect();
            }
        }
        Ok(statuses)
    }

    async fn unmark_dirty(&self, shard: u32, uids: &[u64], flushed_at: i64) -> Result<(), StoreError> {
        let mut invocation = self.unmark.key(keys::dirty(shard));
        invocation.arg(flushed_at);
        for uid in uids {
            invocation.arg(uid);
        }
        let mut connection = self.connection.clone();
        invocation.invoke_async::<i64>(&mut connection).await.map(drop).map_err(|error| StoreError(error.to_string()))
    }

    async fn read_records(&self, wanted: &[(u64, Vec<String>)]) -> Result<Vec<Vec<Option<Vec<u8>>>>, StoreError> {
        let mut pipe = redis::pipe();
        for (uid, items) in wanted {
            pipe.cmd("HMGET").arg(keys::records(*uid)).arg(items);
        }
        let mut connection = self.connection.clone();
        pipe.query_async(&mut connection).await.map_err(|error| StoreError(error.to_string()))
    }

    async fn ping(&self) -> bool {
        let mut connection = self.connection.clone();
        redis::cmd("PING").query_async::<String>(&mut connection).await.is_ok()
    }
}

/// The in-process realtime store of `--embedded`: the same rules as
/// `record.lua` (see `core`), kept in memory. Key expiry is not modelled.
#[derive(Debug, Default)]
pub struct EmbeddedStore {
    users: Mutex<HashMap<u64, UserState>>,
    /// shard -> uid -> when marked.
    dirty: Mutex<HashMap<u32, HashMap<u64, i64>>>,
}

impl EmbeddedStore {
    fn write(&self, users: &[UserWrite], params: WriteParams) -> Vec<Vec<Status>> {
        let mut states = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        let statuses =
            users.iter().map(|user| states.entry(user.uid).or_default().apply(&user.events, params.max_items, params.today)).collect();
        drop(states);
        let mut dirty = self.dirty.lock().unwrap_or_else(PoisonError::into_inner);
        for user in users {
            dirty.entry(keys::shard_of(user.uid, params.shards)).or_default().insert(user.uid, params.now_ms);
        }
        statuses
    }

    fn unmark_dirty(&self, shard: u32, uids: &[u64], flushed_at: i64) {
        let mut dirty = self.dirty.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(marks) = dirty.get_mut(&shard) {
            for uid in uids {
                if marks.get(uid).is_some_and(|&at| at <= flushed_at) {
                    marks.remove(uid);
                }
            }
        }
    }

    fn read_records(&self, wanted: &[(u64, Vec<String>)]) -> Vec<Vec<Option<Vec<u8>>>> {
        let users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        wanted
            .iter()
            .map(|(uid, items)| {
                let user = users.get(uid);
                items.iter().map(|item| user.and_then(|user| user.records.get(item)).map(|(_, record)| record.clone())).collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::realtime::core::EventWrite;

    fn user(uid: u64, events: usize) -> UserWrite {
        UserWrite { uid, events: (0..events).map(|i| EventWrite { item: format!("a:{i}"), view_at: 1, record: Vec::new() }).collect() }
    }

    #[test]
    fn calls_carry_whole_users_up_to_the_limit() {
        let users = vec![user(1, 2), user(2, 2), user(3, 5), user(4, 1)];
        let calls = plan_calls(&users, CallShape { cluster: false, max_events: 4 });
        assert_eq!(calls, vec![vec![0, 1], vec![2], vec![3]]);
    }

    #[test]
    fn cluster_calls_never_mix_slots() {
        let users: Vec<UserWrite> = (1..=500).map(|uid| user(uid, 1)).collect();
        let calls = plan_calls(&users, CallShape { cluster: true, max_events: 128 });
        for call in &calls {
            let slot = keys::cluster_slot(users[call[0]].uid);
            assert!(call.iter().all(|&i| keys::cluster_slot(users[i].uid) == slot), "a call mixes hash slots");
        }
        assert_eq!(calls.iter().map(Vec::len).sum::<usize>(), 500);
    }
}

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
    record: redis::Script,
    unmark: redis::Script,
}

impl RedisStore {
    /// A store for `url`; connects lazily and reconnects with capped
    /// exponential backoff, so Redis may be down at start-up.
    pub fn connect_lazy(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(|error| StoreError(format!("bad redis_url {url:?}: {error}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(2))
            .set_number_of_retries(3);
        let connection = ConnectionManager::new_lazy_with_config(client, config).map_err(|error| StoreError(error.to_string()))?;
        Ok(RedisStore { connection, record: redis::Script::new(RECORD_SCRIPT), unmark: redis::Script::new(UNMARK_SCRIPT) })
    }

    async fn write(&self, users: &[UserWrite], params: WriteParams) -> Result<Vec<Vec<Status>>, StoreError> {
        let mut pipe = redis::pipe();
        for user in users {
            let mut call = redis::cmd("EVALSHA");
            call.arg(self.record.get_hash()).arg(3).arg(keys::timeline(user.uid)).arg(keys::records(user.uid)).arg(keys::meta(user.uid));
            call.arg(params.max_items).arg(params.ttl_s).arg(params.today);
            for event in &user.events {
                call.arg(&event.item).arg(event.view_at).arg(&event.record);
            }
            pipe.add_command(call);
            pipe.cmd("ZADD").arg(keys::dirty(keys::shard_of(user.uid, params.shards))).arg(params.now_ms).arg(user.uid).ignore();
        }
        let mut connection = self.connection.clone();
        let first: redis::RedisResult<Vec<Vec<Status>>> = pipe.query_async(&mut connection).await;
        match first {
            Ok(statuses) => Ok(statuses),
            // The script cache was flushed (restart, SCRIPT FLUSH): load it
            // and try once more. No EVALSHA ran, so nothing is applied twice.
            Err(error) if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.record.prepare_invoke().load_async(&mut connection).await.map_err(|error| StoreError(error.to_string()))?;
                pipe.query_async(&mut connection).await.map_err(|error| StoreError(error.to_string()))
            }
            Err(error) => Err(StoreError(error.to_string())),
        }
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

    /// A copy of one user's state (reads and tests).
    pub fn user(&self, uid: u64) -> Option<UserState> {
        self.users.lock().unwrap_or_else(PoisonError::into_inner).get(&uid).cloned()
    }

    /// Users marked dirty in `shard`.
    pub fn dirty_users(&self, shard: u32) -> Vec<u64> {
        let dirty = self.dirty.lock().unwrap_or_else(PoisonError::into_inner);
        let mut uids: Vec<u64> = dirty.get(&shard).map(|marks| marks.keys().copied().collect()).unwrap_or_default();
        uids.sort_unstable();
        uids
    }
}

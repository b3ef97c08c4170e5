//! Where realtime writes go: Redis (one atomic script call per user, all
//! users of a commit in one pipeline) or the embedded in-process store
//! with the same rules. Also the per-shard dirty marks both keep.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use model::{keys, Op};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::core::{Status, UserState, UserWrite};

const RECORD_SCRIPT: &str = include_str!("record.lua");
const MUTATE_SCRIPT: &str = include_str!("mutate.lua");
const PAGE_SCRIPT: &str = include_str!("page.lua");

/// Records `hbase_checked` = the check token a read saw (the last trim and
/// the job's write count, `trimmed_at:hbase_written`), unless either moved
/// since. KEYS[1] = meta, ARGV[1] = token seen, ARGV[2] = TTL seconds for a
/// meta hash made here.
const MARK_CHECKED_SCRIPT: &str = r"
local meta = redis.call('HMGET', KEYS[1], 'trimmed_at', 'hbase_written')
if (meta[1] or '0') .. ':' .. (meta[2] or '0') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'hbase_checked', ARGV[1])
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 1
";

/// After the job wrote a user's records to HBase: counts it in the user's
/// meta (if the user has one), which voids any "HBase holds nothing more"
/// note. KEYS[1] = meta.
const NOTE_WRITTEN_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HINCRBY', KEYS[1], 'hbase_written', 1) end
return 0
";

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

/// Users per dirty-mark removal call.
const UNMARK_CHUNK: usize = 128;

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

/// A user's realtime meta, as a read sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserMeta {
    /// Any of the user's keys exist (a user with none is new, expired, or
    /// lost with a Redis failure).
    pub exists: bool,
    /// Recording paused.
    pub paused: bool,
    /// Items viewed at or before this were cleared (-1: never).
    pub cleared_at: i64,
    /// What HBase holding nothing more depends on: the last trim and the
    /// job's writes of the user, as `trimmed_at:hbase_written`.
    pub check_token: String,
    /// The token at which a read found nothing in HBase the timeline lacks.
    pub hbase_checked: Option<String>,
}

impl UserMeta {
    /// Whether HBase may hold items the timeline does not: not known to be
    /// a subset since the last trim or the job's last write of the user
    /// (or ever, for a user with no meta).
    pub fn hbase_may_hold_more(&self) -> bool {
        self.hbase_checked.as_deref() != Some(self.check_token.as_str())
    }
}

/// Which part of a timeline to read, newest first.
#[derive(Debug, Clone, Copy)]
pub struct SliceQuery {
    /// Highest view_at to include (`None`: from the newest).
    pub max: Option<i64>,
    /// Read this view_at's ties on top of `count` (the caller skips the
    /// ones it already returned; they come first).
    pub tie: Option<i64>,
    /// Members to skip.
    pub offset: usize,
    /// Members to read (plus the ties).
    pub count: usize,
}

/// A slice of a user's timeline.
#[derive(Debug, Clone, Default)]
pub struct TimelineSlice {
    /// The user's meta at the time of the read.
    pub meta: UserMeta,
    /// Members read: `count` plus this many ties.
    pub ties: usize,
    /// (item, view_at), by view_at then item, both descending.
    pub members: Vec<(String, i64)>,
    /// Each member's encoded record (`None`: gone, e.g. trimmed meanwhile).
    pub records: Vec<Option<Vec<u8>>>,
}

/// The meta fields a read needs, in the order `page.lua` and
/// `meta_and_markers` read them.
const META_FIELDS: [&str; 5] = ["paused", "cleared_at", "trimmed_at", "hbase_written", "hbase_checked"];

/// A user's meta from the values of [`META_FIELDS`] ('' when absent).
fn parse_meta([paused, cleared_at, trimmed_at, hbase_written, hbase_checked]: [&str; 5], exists: bool) -> UserMeta {
    let or_zero = |text: &str| if text.is_empty() { "0".to_owned() } else { text.to_owned() };
    UserMeta {
        exists,
        paused: paused == "1",
        cleared_at: cleared_at.parse().unwrap_or(-1),
        check_token: format!("{}:{}", or_zero(trimmed_at), or_zero(hbase_written)),
        hbase_checked: (!hbase_checked.is_empty()).then(|| hbase_checked.to_owned()),
    }
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

    /// Applies deletes, clears and recording switches in order; returns
    /// each one's effective time (see `mutate.lua`).
    pub async fn mutate(&self, ops: &[&Op], ttl_s: u64) -> Result<Vec<i64>, StoreError> {
        match self {
            RealtimeStore::Redis(redis) => redis.mutate(ops, ttl_s).await,
            RealtimeStore::Embedded(store) => Ok(store.mutate(ops)),
        }
    }

    /// A slice of `uid`'s timeline and the user's meta, read atomically.
    pub async fn timeline_slice(&self, uid: u64, query: SliceQuery) -> Result<TimelineSlice, StoreError> {
        match self {
            RealtimeStore::Redis(redis) => redis.timeline_slice(uid, query).await,
            RealtimeStore::Embedded(store) => Ok(store.timeline_slice(uid, query)),
        }
    }

    /// Every (item, view_at) of `uid`'s timeline.
    pub async fn whole_timeline(&self, uid: u64) -> Result<Vec<(String, i64)>, StoreError> {
        match self {
            RealtimeStore::Redis(redis) => redis.whole_timeline(uid).await,
            RealtimeStore::Embedded(store) => {
                Ok(store.with_user(uid, |user| user.timeline.iter().map(|(at, item)| (item.clone(), *at)).collect()))
            }
        }
    }

    /// `uid`'s meta and the delete marker of each of `items`.
    pub async fn meta_and_markers(&self, uid: u64, items: &[String]) -> Result<(UserMeta, Vec<Option<i64>>), StoreError> {
        match self {
            RealtimeStore::Redis(redis) => redis.meta_and_markers(uid, items).await,
            RealtimeStore::Embedded(store) => {
                Ok(store.with_user(uid, |user| (embedded_meta(user), items.iter().map(|item| user.deleted.get(item).copied()).collect())))
            }
        }
    }

    /// Notes that HBase holds nothing `uid`'s timeline lacks, as of the
    /// check token a read saw (ignored if a trim or a job write moved it).
    pub async fn mark_hbase_checked(&self, uid: u64, token: &str, ttl_s: u64) -> Result<(), StoreError> {
        match self {
            RealtimeStore::Redis(redis) => redis.mark_hbase_checked(uid, token, ttl_s).await,
            RealtimeStore::Embedded(store) => {
                let mut users = store.users.lock().unwrap_or_else(PoisonError::into_inner);
                let user = users.entry(uid).or_default();
                if embedded_meta(user).check_token == token {
                    user.hbase_checked = Some(token.to_owned());
                }
                Ok(())
            }
        }
    }

    /// After the job made `uids`' records durable in HBase: voids their
    /// "HBase holds nothing more" notes.
    pub async fn note_hbase_written(&self, uids: &[u64]) -> Result<(), StoreError> {
        match self {
            RealtimeStore::Redis(redis) => redis.note_hbase_written(uids).await,
            RealtimeStore::Embedded(store) => {
                let mut users = store.users.lock().unwrap_or_else(PoisonError::into_inner);
                for uid in uids {
                    if let Some(user) = users.get_mut(uid) {
                        user.hbase_written += 1;
                    }
                }
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
    shape: CallShape,
    scripts: Arc<Scripts>,
}

/// The Lua scripts a store runs (EVALSHA, loaded on NOSCRIPT).
struct Scripts {
    record: redis::Script,
    unmark: redis::Script,
    mutate: redis::Script,
    page: redis::Script,
    mark_checked: redis::Script,
    note_written: redis::Script,
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
        let scripts = Scripts {
            record: redis::Script::new(RECORD_SCRIPT),
            unmark: redis::Script::new(UNMARK_SCRIPT),
            mutate: redis::Script::new(MUTATE_SCRIPT),
            page: redis::Script::new(PAGE_SCRIPT),
            mark_checked: redis::Script::new(MARK_CHECKED_SCRIPT),
            note_written: redis::Script::new(NOTE_WRITTEN_SCRIPT),
        };
        Ok(RedisStore { connection, shape, scripts: Arc::new(scripts) })
    }

    async fn write(&self, users: &[UserWrite], params: WriteParams) -> Result<Vec<Vec<Status>>, StoreError> {
        let calls = plan_calls(users, self.shape);
        let mut pipe = redis::pipe();
        for call_users in &calls {
            let mut call = redis::cmd("EVALSHA");
            call.arg(self.scripts.record.get_hash()).arg(call_users.len() * 3);
            for &index in call_users {
                let uid = users[index].uid;
                call.arg(keys::timeline(uid)).arg(keys::records(uid)).arg(keys::meta(uid));
            }
            call.arg(params.max_items).arg(params.ttl_s).arg(params.today).arg(params.now_ms);
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
                self.scripts.record.prepare_invoke().load_async(&mut connection).await.map_err(|error| StoreError(error.to_string()))?;
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

    async fn mutate(&self, ops: &[&Op], ttl_s: u64) -> Result<Vec<i64>, StoreError> {
        let mut effective = Vec::with_capacity(ops.len());
        let mut connection = self.connection.clone();
        for op in ops {
            let uid = op.uid();
            let mut invocation = self.scripts.mutate.key(keys::timeline(uid));
            invocation.key(keys::records(uid)).key(keys::meta(uid));
            match op {
                Op::Delete { item, at, .. } => invocation.arg("delete").arg(at).arg(ttl_s).arg(item),
                Op::Clear { at, .. } => invocation.arg("clear").arg(at).arg(ttl_s),
                Op::SetRecording { paused, at, .. } => invocation.arg(if *paused { "pause" } else { "resume" }).arg(at).arg(ttl_s),
                Op::Upsert(_) | Op::UpsertRef { .. } => return Err(StoreError("an upsert is not a mutation".to_owned())),
            };
            effective.push(invocation.invoke_async::<i64>(&mut connection).await.map_err(|error| StoreError(error.to_string()))?);
        }
        Ok(effective)
    }

    async fn timeline_slice(&self, uid: u64, query: SliceQuery) -> Result<TimelineSlice, StoreError> {
        type Reply = (String, String, String, String, String, usize, usize, Vec<(String, i64)>, Vec<Option<Vec<u8>>>);
        let mut invocation = self.scripts.page.key(keys::timeline(uid));
        invocation.key(keys::meta(uid)).key(keys::records(uid));
        match query.max {
            Some(max) => invocation.arg(max),
            None => invocation.arg("+inf"),
        };
        match query.tie {
            Some(tie) => invocation.arg(tie),
            None => invocation.arg(""),
        };
        invocation.arg(query.offset).arg(query.count);
        let mut connection = self.connection.clone();
        let (paused, cleared_at, trimmed_at, hbase_written, hbase_checked, ties, exists, members, records): Reply =
            invocation.invoke_async(&mut connection).await.map_err(|error| StoreError(error.to_string()))?;
        let fields = [paused.as_str(), &cleared_at, &trimmed_at, &hbase_written, &hbase_checked];
        Ok(TimelineSlice { meta: parse_meta(fields, exists > 0), ties, members, records })
    }

    async fn whole_timeline(&self, uid: u64) -> Result<Vec<(String, i64)>, StoreError> {
        let mut connection = self.connection.clone();
        redis::cmd("ZRANGE")
            .arg(keys::timeline(uid))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut connection)
            .await
            .map_err(|error| StoreError(error.to_string()))
    }

    async fn meta_and_markers(&self, uid: u64, items: &[String]) -> Result<(UserMeta, Vec<Option<i64>>), StoreError> {
        let mut fields: Vec<String> = META_FIELDS.into_iter().map(str::to_owned).collect();
        fields.extend(items.iter().map(|item| format!("d:{item}")));
        let mut connection = self.connection.clone();
        let (values, exists): (Vec<Option<String>>, usize) = redis::pipe()
            .cmd("HMGET")
            .arg(keys::meta(uid))
            .arg(&fields)
            .cmd("EXISTS")
            .arg(keys::timeline(uid))
            .arg(keys::meta(uid))
            .query_async(&mut connection)
            .await
            .map_err(|error| StoreError(error.to_string()))?;
        let field = |index: usize| values.get(index).cloned().flatten().unwrap_or_default();
        let meta_values: Vec<String> = (0..META_FIELDS.len()).map(field).collect();
        let meta = parse_meta([&meta_values[0], &meta_values[1], &meta_values[2], &meta_values[3], &meta_values[4]], exists > 0);
        let markers = (META_FIELDS.len()..META_FIELDS.len() + items.len()).map(|index| field(index).parse().ok()).collect();
        Ok((meta, markers))
    }

    async fn mark_hbase_checked(&self, uid: u64, token: &str, ttl_s: u64) -> Result<(), StoreError> {
        let mut invocation = self.scripts.mark_checked.key(keys::meta(uid));
        invocation.arg(token).arg(ttl_s);
        let mut connection = self.connection.clone();
        invocation.invoke_async::<i64>(&mut connection).await.map(drop).map_err(|error| StoreError(error.to_string()))
    }

    async fn note_hbase_written(&self, uids: &[u64]) -> Result<(), StoreError> {
        if uids.is_empty() {
            return Ok(());
        }
        // One script call per user (a cluster keeps each user's keys in one
        // slot), all in one pipeline.
        let mut pipe = redis::pipe();
        for uid in uids {
            pipe.cmd("EVALSHA").arg(self.scripts.note_written.get_hash()).arg(1).arg(keys::meta(*uid)).ignore();
        }
        let mut connection = self.connection.clone();
        match pipe.query_async::<()>(&mut connection).await {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.scripts
                    .note_written
                    .prepare_invoke()
                    .load_async(&mut connection)
                    .await
                    .map_err(|error| StoreError(error.to_string()))?;
                pipe.query_async::<()>(&mut connection).await.map_err(|error| StoreError(error.to_string()))
            }
            Err(error) => Err(StoreError(error.to_string())),
        }
    }

    async fn unmark_dirty(&self, shard: u32, uids: &[u64], flushed_at: i64) -> Result<(), StoreError> {
        // Small calls: a script blocks Redis while it runs, and one call
        // over a whole shard's flush (thousands of users) held every
        // realtime write behind it (p99 5.5 -> 23 ms at 11,000 requests/s
        // with 16 shards).
        let mut connection = self.connection.clone();
        for chunk in uids.chunks(UNMARK_CHUNK) {
            let mut invocation = self.scripts.unmark.key(keys::dirty(shard));
            invocation.arg(flushed_at);
            for uid in chunk {
                invocation.arg(uid);
            }
            invocation.invoke_async::<i64>(&mut connection).await.map_err(|error| StoreError(error.to_string()))?;
        }
        Ok(())
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
        let statuses = users
            .iter()
            .map(|user| states.entry(user.uid).or_default().apply(&user.events, params.max_items, params.today, params.now_ms))
            .collect();
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

    fn mutate(&self, ops: &[&Op]) -> Vec<i64> {
        let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        ops.iter().map(|op| users.entry(op.uid()).or_default().mutate(op).unwrap_or_default()).collect()
    }

    /// Runs `read` on `uid`'s state (a default state for an unknown user).
    fn with_user<T>(&self, uid: u64, read: impl FnOnce(&UserState) -> T) -> T {
        let users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        match users.get(&uid) {
            Some(user) => read(user),
            None => read(&UserState::default()),
        }
    }

    fn timeline_slice(&self, uid: u64, query: SliceQuery) -> TimelineSlice {
        self.with_user(uid, |user| {
            let ties = query.tie.map_or(0, |tie| user.timeline.iter().filter(|(at, _)| *at == tie).count());
            let members: Vec<(String, i64)> = user
                .timeline
                .iter()
                .rev()
                .filter(|(at, _)| query.max.is_none_or(|max| *at <= max))
                .skip(query.offset)
                .take(query.count + ties)
                .map(|(at, item)| (item.clone(), *at))
                .collect();
            let records = members.iter().map(|(item, _)| user.records.get(item).map(|(_, record)| record.clone())).collect();
            TimelineSlice { meta: embedded_meta(user), ties, members, records }
        })
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

/// What a read sees of an embedded user: the same as Redis, where a user
/// the store holds counts as existing.
fn embedded_meta(user: &UserState) -> UserMeta {
    let exists = !user.timeline.is_empty() || user.paused || user.cleared_at >= 0 || !user.deleted.is_empty() || user.day.is_some();
    UserMeta {
        exists,
        paused: user.paused,
        cleared_at: user.cleared_at,
        check_token: format!("{}:{}", user.trimmed_at.unwrap_or(0), user.hbase_written),
        hbase_checked: user.hbase_checked.clone(),
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

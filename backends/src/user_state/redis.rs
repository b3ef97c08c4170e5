//! The user-state store on a real Redis: one atomic script call per group
//! of users (`record.lua`), all calls of a commit in one pipeline, behind a
//! reconnecting connection manager. Every script is a `.lua` file beside
//! this one, run by EVALSHA and loaded again when Redis has lost it.

use std::sync::Arc;
use std::time::Duration;

use model::{keys, Op};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::calls::{plan_calls, CallShape};
use super::meta::{delete_marker, SliceQuery, TimelineSlice, UserMeta, READ_FIELDS};
use super::rules::{Status, UserWrite};
use super::{StoreError, WriteParams};

/// Users per dirty-mark removal call.
const UNMARK_CHUNK: usize = 128;

/// Redis behind a reconnecting connection manager.
#[derive(Clone)]
pub struct RedisStore {
    /// Multiplexed; cloned per call.
    connection: ConnectionManager,
    /// How users are grouped into script calls.
    shape: CallShape,
    /// The scripts, shared by every clone.
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

fn store_error(error: redis::RedisError) -> StoreError {
    StoreError(error.to_string())
}

fn is_no_script(error: &redis::RedisError) -> bool {
    error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
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
        let connection = ConnectionManager::new_lazy_with_config(client, config).map_err(store_error)?;
        let scripts = Scripts {
            record: redis::Script::new(include_str!("record.lua")),
            unmark: redis::Script::new(include_str!("unmark.lua")),
            mutate: redis::Script::new(include_str!("mutate.lua")),
            page: redis::Script::new(include_str!("page.lua")),
            mark_checked: redis::Script::new(include_str!("mark_checked.lua")),
            note_written: redis::Script::new(include_str!("note_written.lua")),
        };
        Ok(RedisStore { connection, shape, scripts: Arc::new(scripts) })
    }

    /// Runs a pipeline of EVALSHA calls of `script`; if Redis lost the
    /// script (restart, SCRIPT FLUSH), loads it and runs the pipeline once
    /// more. No EVALSHA ran the first time, so nothing is applied twice.
    async fn query_scripted<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline, script: &redis::Script) -> Result<T, StoreError> {
        let mut connection = self.connection.clone();
        match pipe.query_async(&mut connection).await {
            Ok(replies) => Ok(replies),
            Err(error) if is_no_script(&error) => {
                script.prepare_invoke().load_async(&mut connection).await.map_err(store_error)?;
                pipe.query_async(&mut connection).await.map_err(store_error)
            }
            Err(error) => Err(store_error(error)),
        }
    }

    pub(super) async fn write(&self, users: &[UserWrite], params: WriteParams) -> Result<Vec<Vec<Status>>, StoreError> {
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
        let replies: Vec<Vec<Status>> = self.query_scripted(&pipe, &self.scripts.record).await?;
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

    pub(super) async fn mutate(&self, ops: &[&Op], ttl_s: u64) -> Result<Vec<i64>, StoreError> {
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
            effective.push(invocation.invoke_async::<i64>(&mut connection).await.map_err(store_error)?);
        }
        Ok(effective)
    }

    pub(super) async fn timeline_slice(&self, uid: u64, query: SliceQuery) -> Result<TimelineSlice, StoreError> {
        type Reply = (Vec<String>, usize, usize, Vec<(String, i64)>, Vec<Option<Vec<u8>>>);
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
        invocation.arg(query.offset).arg(query.count).arg(&READ_FIELDS[..]);
        let mut connection = self.connection.clone();
        let (fields, ties, exists, members, records): Reply = invocation.invoke_async(&mut connection).await.map_err(store_error)?;
        Ok(TimelineSlice { meta: UserMeta::parse(&fields, exists > 0), ties, members, records })
    }

    pub(super) async fn whole_timeline(&self, uid: u64) -> Result<Vec<(String, i64)>, StoreError> {
        let mut connection = self.connection.clone();
        redis::cmd("ZRANGE")
            .arg(keys::timeline(uid))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut connection)
            .await
            .map_err(store_error)
    }

    pub(super) async fn meta_and_markers(&self, uid: u64, items: &[String]) -> Result<(UserMeta, Vec<Option<i64>>), StoreError> {
        let mut fields: Vec<String> = READ_FIELDS.into_iter().map(str::to_owned).collect();
        fields.extend(items.iter().map(|item| delete_marker(item)));
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
            .map_err(store_error)?;
        let values: Vec<String> = values.into_iter().map(Option::unwrap_or_default).collect();
        let (meta_values, marker_values) = values.split_at(READ_FIELDS.len().min(values.len()));
        let markers = marker_values.iter().map(|value| value.parse().ok()).chain(std::iter::repeat(None)).take(items.len()).collect();
        Ok((UserMeta::parse(meta_values, exists > 0), markers))
    }

    pub(super) async fn mark_hbase_checked(&self, uid: u64, token: &str, ttl_s: u64) -> Result<(), StoreError> {
        let mut invocation = self.scripts.mark_checked.key(keys::meta(uid));
        invocation.arg(token).arg(ttl_s);
        let mut connection = self.connection.clone();
        invocation.invoke_async::<i64>(&mut connection).await.map(drop).map_err(store_error)
    }

    pub(super) async fn note_hbase_written(&self, uids: &[u64]) -> Result<(), StoreError> {
        if uids.is_empty() {
            return Ok(());
        }
        // One script call per user (a cluster keeps each user's keys in one
        // slot), all in one pipeline.
        let mut pipe = redis::pipe();
        for uid in uids {
            pipe.cmd("EVALSHA").arg(self.scripts.note_written.get_hash()).arg(1).arg(keys::meta(*uid)).ignore();
        }
        self.query_scripted::<()>(&pipe, &self.scripts.note_written).await
    }

    pub(super) async fn unmark_dirty(&self, shard: u32, uids: &[u64], flushed_at: i64) -> Result<(), StoreError> {
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
            invocation.invoke_async::<i64>(&mut connection).await.map_err(store_error)?;
        }
        Ok(())
    }

    pub(super) async fn read_records(&self, wanted: &[(u64, Vec<String>)]) -> Result<Vec<Vec<Option<Vec<u8>>>>, StoreError> {
        let mut pipe = redis::pipe();
        for (uid, items) in wanted {
            pipe.cmd("HMGET").arg(keys::records(*uid)).arg(items);
        }
        let mut connection = self.connection.clone();
        pipe.query_async(&mut connection).await.map_err(store_error)
    }

    pub(super) async fn ping(&self) -> bool {
        let mut connection = self.connection.clone();
        redis::cmd("PING").query_async::<String>(&mut connection).await.is_ok()
    }
}

//! The user-state store on a real Redis: one atomic script call per group
//! of users (`record.lua`), all calls of a commit in one pipeline, behind a
//! reconnecting connection manager. Every script is a `.lua` file beside
//! this one, run by EVALSHA and loaded again when Redis has lost it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use model::{keys, Op};
use redis::Value;

use super::calls::{plan_calls, plan_sized_calls, script_call, CallShape};
use super::link::{is_non_local, Link, Lua, NodeMap, SlotCommand};
use super::marks::Carried;
use super::meta::{business_clear_marker, business_of, delete_marker, hiding_markers, SliceQuery, TimelineSlice, UserMeta, READ_FIELDS};
use super::params::{StoreError, WriteParams};
use super::rules::{Status, UserWrite};
use super::slot_scan::SlotScan;

/// The helpers every mark-keeping script starts with.
macro_rules! with_marks {
    ($file:literal) => {
        concat!(include_str!("marks.lua"), "\n", include_str!($file))
    };
}

/// The five keys of `uid` a mutation touches, in `mutate.lua`'s order (a
/// write names the timeline only; `record.lua` derives the rest).
fn user_keys(uid: u64) -> [String; 5] {
    [keys::timeline(uid), keys::records(uid), keys::meta(uid), keys::pending(uid), keys::kept(uid)]
}

/// A command on `uid`'s keys.
pub(super) fn of_user(uid: u64, command: redis::Cmd) -> SlotCommand {
    SlotCommand { slot: keys::cluster_slot(uid), command }
}

/// Decodes one reply.
pub(super) fn decode<T: redis::FromRedisValue>(value: &Value) -> Result<T, StoreError> {
    redis::from_redis_value_ref(value).map_err(parse_error)
}

/// A write call's flat statuses put back per user: for each of
/// `call_users` (indexes into `users`), its events' statuses.
fn per_user(reply: &Value, call_users: &[usize], users: &[UserWrite]) -> Result<Vec<Vec<Status>>, StoreError> {
    let reply: Vec<Status> = decode(reply)?;
    let mut reply = reply.into_iter();
    Ok(call_users.iter().map(|&index| reply.by_ref().take(users[index].events.len()).collect()).collect())
}

/// A write's script calls for [`Link::run`] and the users of each.
struct WriteSteps {
    scripts: Vec<SlotCommand>,
    calls: Vec<Vec<usize>>,
}

/// Redis (one node or a cluster) behind a reconnecting connection.
#[derive(Clone)]
pub struct RedisStore {
    /// Cloned per call.
    pub(super) connection: Link,
    /// How users are grouped into script calls.
    pub(super) shape: CallShape,
    /// The scripts, shared by every clone.
    pub(super) scripts: Arc<Scripts>,
    /// Where a cluster's re-drive stands in its slots, shared by every
    /// clone.
    pub(super) slot_scan: Arc<SlotScan>,
}

/// The Lua scripts a store runs (EVALSHA, loaded on NOSCRIPT).
pub(super) struct Scripts {
    record: Lua,
    settle: Lua,
    pub(super) claim: Lua,
    pub(super) due: Lua,
    mutate: Lua,
    page: Lua,
    mark_checked: Lua,
    release_written: Lua,
}

pub(super) fn store_error(error: redis::RedisError) -> StoreError {
    StoreError(error.to_string())
}

pub(super) fn parse_error(error: redis::ParsingError) -> StoreError {
    StoreError(format!("unexpected answer: {error}"))
}

impl RedisStore {
    /// A store for `url` (a cluster's seed nodes, comma-separated, or one
    /// seed with `shape.cluster`); connects lazily and reconnects, so Redis
    /// may be down at start-up.
    pub fn connect_lazy(url: &str, shape: CallShape) -> Result<Self, StoreError> {
        let connection = Link::connect_lazy(url, shape.cluster).map_err(StoreError)?;
        // On a cluster a script call groups users of one slot only.
        let shape = CallShape { cluster: connection.is_cluster(), ..shape };
        let scripts = Scripts {
            record: Lua::new(with_marks!("record.lua")),
            settle: Lua::new(with_marks!("settle.lua")),
            claim: Lua::new(with_marks!("claim.lua")),
            due: Lua::new(with_marks!("due.lua")),
            mutate: Lua::new(with_marks!("mutate.lua")),
            page: Lua::new(include_str!("page.lua")),
            mark_checked: Lua::new(include_str!("mark_checked.lua")),
            release_written: Lua::new(with_marks!("release_written.lua")),
        };
        Ok(RedisStore { connection, shape, scripts: Arc::new(scripts), slot_scan: Arc::default() })
    }

    /// Runs `steps` (see [`Link::run`]) of calls of `script`.
    pub(super) async fn run_scripted(&self, steps: Vec<Vec<SlotCommand>>, script: &Lua) -> Result<Vec<Value>, StoreError> {
        self.connection.run(steps, Some(script)).await.map_err(store_error)
    }

    /// Runs the steps `build` makes of calls of `script`, grouping users by
    /// the node that serves them (on a cluster whose node map is known),
    /// and answers the replies and what `build` made beside them. If a
    /// call met a slot that another node now serves, the link has
    /// forgotten its map and all the steps run again grouped by slot: only
    /// for scripts that may run twice (settling, noting), as the calls
    /// that did not fail ran already.
    pub(super) async fn run_by_node<C>(
        &self,
        script: &Lua,
        build: impl Fn(Option<&NodeMap>) -> (Vec<Vec<SlotCommand>>, C),
    ) -> Result<(Vec<Value>, C), StoreError> {
        let nodes = self.connection.nodes().await;
        let (steps, made) = build(nodes.as_deref());
        let replies = self.connection.run_replies(steps, Some(script)).await.map_err(store_error)?;
        let moved = |reply: &Value| matches!(reply, Value::ServerError(error) if is_non_local(error));
        if nodes.is_some() && replies.iter().any(moved) {
            let (steps, made) = build(None);
            return Ok((self.run_scripted(steps, script).await?, made));
        }
        let replies = replies.into_iter().map(Value::extract_error).collect::<Result<_, _>>().map_err(store_error)?;
        Ok((replies, made))
    }

    /// Runs `steps` (see [`Link::run`]) of plain commands.
    pub(super) async fn run_plain(&self, steps: Vec<Vec<SlotCommand>>) -> Result<Vec<Value>, StoreError> {
        self.connection.run(steps, None).await.map_err(store_error)
    }

    /// Runs the script calls `steps` makes of `items` (the calls, as
    /// indexes into the items given, and their commands), grouped by the
    /// node serving them when the node map is known, and answers each
    /// item's part of its call's reply (`parse`: per item of a call, in
    /// order), in the order of `items`. The items of a call that met a
    /// slot another node now serves go again, grouped by slot: only for
    /// scripts that read every item before changing any (`record.lua`,
    /// `claim.lua`), so that such a call changed nothing.
    pub(super) async fn run_read_first<I: Clone, T>(
        &self,
        script: &Lua,
        items: &[I],
        steps: impl Fn(&[I], Option<&NodeMap>) -> (Vec<Vec<usize>>, Vec<SlotCommand>),
        parse: impl Fn(&Value, &[usize], &[I]) -> Result<Vec<T>, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let nodes = self.connection.nodes().await;
        let (calls, commands) = steps(items, nodes.as_deref());
        let replies = self.connection.run_replies(vec![commands], Some(script)).await.map_err(store_error)?;
        let mut answered: Vec<Option<T>> = (0..items.len()).map(|_| None).collect();
        let mut again: Vec<usize> = Vec::new();
        for (reply, call_items) in replies.into_iter().zip(&calls) {
            match reply {
                Value::ServerError(error) if nodes.is_some() && is_non_local(&error) => again.extend(call_items.iter().copied()),
                Value::ServerError(error) => return Err(StoreError(error.to_string())),
                reply => {
                    for (&at, answer) in call_items.iter().zip(parse(&reply, call_items, items)?) {
                        answered[at] = Some(answer);
                    }
                }
            }
        }
        if !again.is_empty() {
            let retry: Vec<I> = again.iter().map(|&at| items[at].clone()).collect();
            let (calls, commands) = steps(&retry, None);
            let replies = self.run_scripted(vec![commands], script).await?;
            for (reply, call_items) in replies.iter().zip(&calls) {
                for (&at, answer) in call_items.iter().zip(parse(reply, call_items, &retry)?) {
                    answered[again[at]] = Some(answer);
                }
            }
        }
        answered
            .into_iter()
            .map(|answer| answer.ok_or_else(|| StoreError("a script call answered too few of its items".to_owned())))
            .collect()
    }

    pub(super) async fn write(&self, users: &[UserWrite], params: WriteParams) -> Result<Vec<Vec<Status>>, StoreError> {
        let steps = |users: &[UserWrite], nodes: Option<&NodeMap>| {
            let WriteSteps { scripts, calls } = self.write_steps(users, params, nodes);
            (calls, scripts)
        };
        self.run_read_first(&self.scripts.record, users, steps, per_user).await
    }

    /// The steps of a write of `users`.
    fn write_steps(&self, users: &[UserWrite], params: WriteParams, nodes: Option<&NodeMap>) -> WriteSteps {
        let calls = plan_calls(users, self.shape, nodes);
        // The script indexes a user itself, in the same atomic step as the
        // mark that needs it, and only when it makes a new mark (a user
        // with marks is indexed already): the index is the shard's on one
        // Redis, the user's slot's on a cluster.
        let mut scripts = Vec::with_capacity(calls.len());
        for call_users in &calls {
            let timelines: Vec<String> = call_users.iter().map(|&index| keys::timeline(users[index].uid)).collect();
            let mut call = script_call(&self.scripts.record, &timelines, nodes.is_some());
            call.arg(params.max_items).arg(params.ttl_s).arg(params.today).arg(params.now_ms).arg(u8::from(params.marks));
            // The call's distinct indexes; a user names its index's position.
            let indexes: Vec<String> = if params.marks {
                call_users.iter().map(|&index| self.index_of(users[index].uid, params.shards)).collect()
            } else {
                Vec::new()
            };
            let distinct: Vec<&String> = indexes.iter().collect::<BTreeSet<_>>().into_iter().collect();
            call.arg(distinct.len());
            for index in &distinct {
                call.arg(*index);
            }
            for (position, &index) in call_users.iter().enumerate() {
                let user = &users[index];
                let at = indexes.get(position).map_or(0, |index| distinct.partition_point(|seen| *seen < index) + 1);
                call.arg(user.events.len()).arg(at);
                for event in &user.events {
                    call.arg(&event.item).arg(event.view_at).arg(&event.record);
                }
            }
            // A call groups users of one node (`plan_calls`).
            scripts.push(of_user(users[call_users[0]].uid, call));
        }
        WriteSteps { scripts, calls }
    }

    /// The re-drive index a mark of `uid` keeps it in
    /// ([`keys::user_pending_index`]).
    pub(super) fn index_of(&self, uid: u64, shards: u32) -> String {
        keys::user_pending_index(uid, shards, self.shape.cluster)
    }

    /// The connection, for other keys of the same Redis.
    pub fn link(&self) -> Link {
        self.connection.clone()
    }

    pub(super) async fn mutate(&self, ops: &[&Op], params: WriteParams) -> Result<Vec<i64>, StoreError> {
        let mut effective = Vec::with_capacity(ops.len());
        for op in ops {
            // Marks go with the user's re-drive index, in the same step.
            let index = if params.marks { self.index_of(op.uid(), params.shards) } else { String::new() };
            let mut call = self.scripts.mutate.call(&user_keys(op.uid()));
            match op {
                Op::Delete { item, at, .. } => call.arg("delete").arg(at).arg(params.ttl_s).arg(&index).arg(item),
                Op::Clear { business: None, at, .. } => call.arg("clear").arg(at).arg(params.ttl_s).arg(&index),
                Op::Clear { business: Some(business), at, .. } => {
                    call.arg("clear_business").arg(at).arg(params.ttl_s).arg(&index).arg(business)
                }
                Op::SetRecording { paused, at, .. } => {
                    call.arg(if *paused { "pause" } else { "resume" }).arg(at).arg(params.ttl_s).arg(&index)
                }
                Op::Upsert(_) | Op::UpsertRef { .. } => return Err(StoreError("an upsert is not a mutation".to_owned())),
            };
            let replies = self.run_scripted(vec![vec![of_user(op.uid(), call)]], &self.scripts.mutate).await?;
            let time = replies.first().ok_or_else(|| StoreError("the mutation answered nothing".to_owned()))?;
            effective.push(decode(time)?);
        }
        Ok(effective)
    }

    pub(super) async fn timeline_slice(&self, uid: u64, query: SliceQuery) -> Result<TimelineSlice, StoreError> {
        type Reply = (Vec<String>, usize, usize, Vec<(String, i64)>, Vec<Option<Vec<u8>>>);
        let mut call = self.scripts.page.call(&[keys::timeline(uid), keys::meta(uid), keys::records(uid)]);
        match query.max {
            Some(max) => call.arg(max),
            None => call.arg("+inf"),
        };
        match query.tie {
            Some(tie) => call.arg(tie),
            None => call.arg(""),
        };
        call.arg(query.offset).arg(query.count).arg(&READ_FIELDS[..]);
        let replies = self.run_scripted(vec![vec![of_user(uid, call)]], &self.scripts.page).await?;
        let reply = replies.first().ok_or_else(|| StoreError("the page answered nothing".to_owned()))?;
        let (fields, ties, exists, members, records): Reply = decode(reply)?;
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
        let businesses: Vec<&str> = items.iter().map(|item| business_of(item)).collect::<BTreeSet<_>>().into_iter().collect();
        let mut fields: Vec<String> = READ_FIELDS.into_iter().map(str::to_owned).collect();
        fields.extend(items.iter().map(|item| delete_marker(item)));
        fields.extend(businesses.iter().map(|business| business_clear_marker(business)));
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
        let value = |index: usize| values.get(index).and_then(|value| value.parse::<i64>().ok());
        let deleted: HashMap<&str, i64> =
            items.iter().enumerate().filter_map(|(i, item)| Some((item.as_str(), value(READ_FIELDS.len() + i)?))).collect();
        let cleared_from = READ_FIELDS.len() + items.len();
        let cleared: HashMap<&str, i64> =
            businesses.iter().enumerate().filter_map(|(i, business)| Some((*business, value(cleared_from + i)?))).collect();
        let markers = hiding_markers(items, |item| deleted.get(item).copied(), |business| cleared.get(business).copied());
        let meta_values = &values[..READ_FIELDS.len().min(values.len())];
        Ok((UserMeta::parse(meta_values, exists > 0), markers))
    }

    pub(super) async fn mark_hbase_checked(&self, uid: u64, now_ms: i64) -> Result<(), StoreError> {
        let mut call = self.scripts.mark_checked.call(&[keys::meta(uid)]);
        call.arg(now_ms);
        self.run_scripted(vec![vec![of_user(uid, call)]], &self.scripts.mark_checked).await.map(drop)
    }

    pub(super) async fn release_written(&self, written: &[(u64, Vec<(String, i64)>)]) -> Result<(), StoreError> {
        let written: Vec<&(u64, Vec<(String, i64)>)> = written.iter().filter(|(_, items)| !items.is_empty()).collect();
        if written.is_empty() {
            return Ok(());
        }
        // Many users a call, as small as the writes' calls (a script
        // blocks Redis while it runs), users of one slot together on a
        // cluster; all in one pipeline.
        let sizes: Vec<(u64, usize)> = written.iter().map(|(uid, items)| (*uid, items.len())).collect();
        // Releasing again what a call that failed half way released
        // changes nothing.
        let build = |nodes: Option<&NodeMap>| {
            let mut calls = Vec::new();
            for call_users in plan_sized_calls(&sizes, self.shape, nodes) {
                let user_keys: Vec<String> = call_users
                    .iter()
                    .flat_map(|&index| {
                        let uid = written[index].0;
                        [keys::pending(uid), keys::kept(uid)]
                    })
                    .collect();
                let mut call = script_call(&self.scripts.release_written, &user_keys, nodes.is_some());
                for &index in &call_users {
                    let items = &written[index].1;
                    call.arg(items.len());
                    for (item, view_at) in items {
                        call.arg(item).arg(view_at);
                    }
                }
                calls.push(of_user(written[call_users[0]].0, call));
            }
            (vec![calls], ())
        };
        self.run_by_node(&self.scripts.release_written, build).await.map(drop)
    }

    pub(super) async fn settle(&self, users: &[(u64, Vec<Carried>)]) -> Result<(), StoreError> {
        let sizes: Vec<(u64, usize)> = users.iter().map(|(uid, marks)| (*uid, marks.len())).collect();
        // Calls as small as the writes' (a script blocks Redis while it
        // runs), all in one pipeline. Settling again what a call that
        // failed half way settled changes nothing (versions only grow).
        let build = |nodes: Option<&NodeMap>| {
            let calls = plan_sized_calls(&sizes, self.shape, nodes);
            let mut commands = Vec::with_capacity(calls.len());
            for call_users in &calls {
                let user_keys: Vec<String> = call_users
                    .iter()
                    .flat_map(|&index| {
                        let uid = users[index].0;
                        [keys::pending(uid), keys::kept(uid)]
                    })
                    .collect();
                let mut call = script_call(&self.scripts.settle, &user_keys, nodes.is_some());
                for &index in call_users {
                    let marks = &users[index].1;
                    call.arg(marks.len());
                    for mark in marks {
                        call.arg(&mark.field).arg(mark.version).arg(if mark.whole { "1" } else { "0" });
                    }
                }
                commands.push(of_user(users[call_users[0]].0, call));
            }
            (vec![commands], ())
        };
        self.run_by_node(&self.scripts.settle, build).await.map(drop)
    }

    pub(super) async fn read_records(&self, wanted: &[(u64, Vec<String>)]) -> Result<Vec<Vec<Option<Vec<u8>>>>, StoreError> {
        // The records first; only the items missing there are looked for
        // again, with the kept copies of those trimmed while the job still
        // needed them (rare: a trim of an item still shipped), so a read is
        // one command per user.
        let commands = wanted.iter().map(|(uid, items)| of_user(*uid, redis::cmd("HMGET").arg(keys::records(*uid)).arg(items).clone()));
        let replies = self.run_plain(vec![commands.collect()]).await?;
        let mut found: Vec<Vec<Option<Vec<u8>>>> = replies.iter().map(decode).collect::<Result<_, _>>()?;
        let missing: Vec<(usize, Vec<usize>)> = found
            .iter()
            .enumerate()
            .map(|(user, records)| {
                (user, records.iter().enumerate().filter(|(_, record)| record.is_none()).map(|(at, _)| at).collect::<Vec<usize>>())
            })
            .filter(|(_, absent)| !absent.is_empty())
            .collect();
        if missing.is_empty() {
            return Ok(found);
        }
        // Both again: a record trimmed between the two reads is in the
        // kept copies, one written again meanwhile is in the records.
        let mut commands = Vec::with_capacity(2 * missing.len());
        for (user, absent) in &missing {
            let (uid, items) = &wanted[*user];
            let items: Vec<&String> = absent.iter().map(|&at| &items[at]).collect();
            commands.push(of_user(*uid, redis::cmd("HMGET").arg(keys::records(*uid)).arg(&items).clone()));
            commands.push(of_user(*uid, redis::cmd("HMGET").arg(keys::kept(*uid)).arg(&items).clone()));
        }
        let replies = self.run_plain(vec![commands]).await?;
        for ((user, absent), pair) in missing.iter().zip(replies.chunks_exact(2)) {
            let records: Vec<Option<Vec<u8>>> = decode(&pair[0])?;
            let kept: Vec<Option<Vec<u8>>> = decode(&pair[1])?;
            for ((&at, record), kept) in absent.iter().zip(records).zip(kept) {
                found[*user][at] = record.or(kept);
            }
        }
        Ok(found)
    }

    pub(super) async fn ping(&self) -> bool {
        let mut connection = self.connection.clone();
        redis::cmd("PING").query_async::<String>(&mut connection).await.is_ok()
    }
}

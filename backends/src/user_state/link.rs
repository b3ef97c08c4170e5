//! The connection to Redis: one node behind a reconnecting connection
//! manager, or a Redis Cluster behind redis-rs's cluster connection (which
//! follows MOVED and ASK and refreshes its slot map after a failover). Both
//! connect lazily, so Redis may be down at start-up.
//!
//! A cluster pipeline may not span hash slots, so what the store sends as
//! one pipeline to one node goes to a cluster as [`Link::run`] says: one
//! pipeline per slot and step, the slots of a step at once, the steps in
//! order.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};

/// Longest wait for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest wait for an answer.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a learnt [`NodeMap`] is used before it is asked for again.
const NODE_MAP_FOR: Duration = Duration::from_secs(10);
/// Hash slots of a Redis Cluster.
const SLOTS: usize = 16_384;

/// Which master serves each hash slot, as `CLUSTER SLOTS` answered at one
/// moment: a slot's node is a number naming its master's address. A slot
/// no master served then is a group of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeMap {
    node_of_slot: Vec<u32>,
}

impl NodeMap {
    /// The map `CLUSTER SLOTS` answered (`reply`): ranges of slots, each
    /// with its master's host and port first.
    pub fn parse(reply: &Value) -> RedisResult<Self> {
        let bad = |what: &str| RedisError::from((redis::ErrorKind::Parse, "unexpected CLUSTER SLOTS answer", what.to_owned()));
        let Value::Array(ranges) = reply else { return Err(bad("not an array")) };
        let unserved = |slot: usize| (SLOTS + slot) as u32;
        let mut node_of_slot: Vec<u32> = (0..SLOTS).map(unserved).collect();
        let mut addresses: Vec<String> = Vec::new();
        for range in ranges {
            let Value::Array(range) = range else { return Err(bad("a range is not an array")) };
            let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) = (range.first(), range.get(1), range.get(2))
            else {
                return Err(bad("a range lacks its bounds or master"));
            };
            let host = match master.first() {
                Some(Value::BulkString(host)) => String::from_utf8_lossy(host).into_owned(),
                Some(Value::SimpleString(host)) => host.clone(),
                _ => return Err(bad("a master lacks its host")),
            };
            let Some(Value::Int(port)) = master.get(1) else { return Err(bad("a master lacks its port")) };
            let address = format!("{host}:{port}");
            let node = match addresses.iter().position(|known| *known == address) {
                Some(node) => node,
                None => {
                    addresses.push(address);
                    addresses.len() - 1
                }
            } as u32;
            let (start, end) = (usize::try_from(*start).unwrap_or(SLOTS), usize::try_from(*end).unwrap_or(0).min(SLOTS - 1));
            if start <= end {
                node_of_slot[start..=end].fill(node);
            }
        }
        Ok(NodeMap { node_of_slot })
    }

    /// The node serving `slot`.
    pub fn node_of(&self, slot: u16) -> u32 {
        self.node_of_slot[usize::from(slot) % SLOTS]
    }
}

/// Whether `error` is a script's refusal to touch a key of a call grouped
/// by node: a key another node serves (the node map is out of date: a
/// slot moved), or, on a server that allows a script no key outside one
/// slot, any other slot's key ([`refuses_cross_slot`]). Either way the
/// script stopped at its first such key, and the call may be sent again
/// grouped by slot.
pub fn is_non_local(error: &impl std::fmt::Display) -> bool {
    let text = error.to_string();
    text.contains("non local key") || refuses_cross_slot(&text)
}

/// Whether the server refused a script a key of another slot than its
/// first key's. Redis 7 allows it to scripts without flags; a server that
/// does not cannot take calls grouped by node at all.
fn refuses_cross_slot(text: &str) -> bool {
    text.contains("do not hash to the same slot")
}

/// A connection to one Redis or to a cluster; cheap to clone. Commands and
/// single-slot pipelines run on it as on any redis-rs connection.
#[derive(Clone)]
pub struct Link(Inner);

#[derive(Clone)]
enum Inner {
    /// One node.
    Single(ConnectionManager),
    /// A cluster, connected on first use.
    Cluster(Arc<LazyCluster>),
}

/// A cluster client and its connection, made on first use (and tried again
/// on the next use if that failed).
///
/// redis-rs refreshes its slot map on `MOVED`, but not when a master dies:
/// it keeps calling the dead node's address, and every call to its slots
/// times out even after a replica took them over. So a connection whose
/// call failed on the network is dropped (at most once per
/// [`RECONNECT_EVERY`]), and the next call connects afresh from the seeds,
/// learning the slot map as it is now.
struct LazyCluster {
    client: ClusterClient,
    connection: tokio::sync::Mutex<Option<ClusterConnection>>,
    dropped_at: std::sync::Mutex<Option<Instant>>,
    /// The node map last learnt, and when.
    nodes: std::sync::Mutex<Option<(Instant, Arc<NodeMap>)>>,
    /// The server refused a script keys of several slots: calls stay
    /// grouped by slot from then on.
    by_slot_only: std::sync::atomic::AtomicBool,
}

/// Shortest time between two reconnections of a cluster link.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

impl LazyCluster {
    async fn connection(&self) -> RedisResult<ClusterConnection> {
        let mut connection = self.connection.lock().await;
        if let Some(connection) = connection.as_ref() {
            return Ok(connection.clone());
        }
        let made = self.client.get_async_connection().await?;
        *connection = Some(made.clone());
        Ok(made)
    }

    /// After a failed call: drops the connection if the network failed.
    async fn failed(&self, error: &RedisError) {
        if !(error.is_io_error() || error.is_timeout() || error.is_connection_dropped() || error.is_connection_refusal()) {
            return;
        }
        {
            let mut dropped_at = self.dropped_at.lock().unwrap_or_else(PoisonError::into_inner);
            if dropped_at.is_some_and(|at| at.elapsed() < RECONNECT_EVERY) {
                return;
            }
            *dropped_at = Some(Instant::now());
        }
        *self.connection.lock().await = None;
    }

    /// The node map, asked for again when older than [`NODE_MAP_FOR`] or
    /// forgotten; `None` while the cluster cannot be asked.
    async fn nodes(&self) -> Option<Arc<NodeMap>> {
        if self.by_slot_only.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        {
            let nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((_, map)) = nodes.as_ref().filter(|(at, _)| at.elapsed() < NODE_MAP_FOR) {
                return Some(map.clone());
            }
        }
        let mut ask = redis::cmd("CLUSTER");
        ask.arg("SLOTS");
        let reply = self.connection().await.ok()?.route_command(ask, RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random)).await;
        let map = Arc::new(NodeMap::parse(&reply.ok()?).ok()?);
        *self.nodes.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), map.clone()));
        Some(map)
    }

    fn forget_nodes(&self) {
        *self.nodes.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn pretend_one_node(&self) {
        let map = Arc::new(NodeMap { node_of_slot: vec![0; SLOTS] });
        *self.nodes.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), map));
    }

    /// The `count` commands of `pipe` on the master serving `slot` (they
    /// may name other slots of that node).
    async fn pipeline_at(&self, slot: u16, pipe: &Pipeline, count: usize) -> RedisResult<Vec<Value>> {
        let route = SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master));
        let answer = self.connection().await?.route_pipeline(pipe.clone(), 0, count, route).await;
        if let Err(error) = &answer {
            self.failed(error).await;
        }
        answer
    }

    async fn command(&self, cmd: &Cmd) -> RedisResult<Value> {
        let answer = self.connection().await?.req_packed_command(cmd).await;
        if let Err(error) = &answer {
            self.failed(error).await;
        }
        answer
    }

    async fn commands(&self, pipeline: &Pipeline, offset: usize, count: usize) -> RedisResult<Vec<Value>> {
        let answer = self.connection().await?.req_packed_commands(pipeline, offset, count).await;
        if let Err(error) = &answer {
            self.failed(error).await;
        }
        answer
    }
}

/// The seed nodes a `redis_url` lists, comma-separated (one for a plain
/// URL). A list of two or more is a Redis Cluster.
pub fn seeds(url: &str) -> Vec<&str> {
    url.split(',').map(str::trim).filter(|seed| !seed.is_empty()).collect()
}

/// One Lua script: its source, and its SHA1 for EVALSHA.
pub(crate) struct Lua {
    source: &'static str,
    hash: String,
}

impl Lua {
    pub(crate) fn new(source: &'static str) -> Self {
        Lua { source, hash: redis::Script::new(source).get_hash().to_owned() }
    }

    /// `EVALSHA` of this script with `keys`; add its arguments.
    pub(crate) fn call<K: redis::ToRedisArgs>(&self, keys: &[K]) -> Cmd {
        let mut call = redis::cmd("EVALSHA");
        call.arg(&self.hash).arg(keys.len()).arg(keys);
        call
    }

    /// Its SHA1, for an EVALSHA built by hand.
    pub(crate) fn get_hash(&self) -> &str {
        &self.hash
    }
}

/// Commands of one step that go in one pipeline: their places in the
/// step, their slots, and the pipeline (sent to the node serving `slot`).
struct Group {
    slot: u16,
    indexes: Vec<usize>,
    slots: Vec<u16>,
    pipe: Pipeline,
}

/// `commands` in one pipeline per `group_of` their slot, in their order.
fn in_pipelines(commands: Vec<SlotCommand>, group_of: impl Fn(u16) -> u32) -> Vec<Group> {
    let mut groups: BTreeMap<u32, Group> = BTreeMap::new();
    for (index, command) in commands.into_iter().enumerate() {
        let group = groups.entry(group_of(command.slot)).or_insert_with(|| Group {
            slot: command.slot,
            indexes: Vec::new(),
            slots: Vec::new(),
            pipe: redis::pipe(),
        });
        group.indexes.push(index);
        group.slots.push(command.slot);
        group.pipe.add_command(command.command);
    }
    groups.into_values().collect()
}

/// One command of a [`Link::run`], with the hash slot of its keys.
pub(crate) struct SlotCommand {
    /// The slot (`model::keys::key_slot` of any of its keys).
    pub slot: u16,
    /// The command.
    pub command: Cmd,
}

impl Link {
    /// A link to `url`: one node, or a cluster whose seed nodes `url`
    /// lists, comma-separated, when it lists several or `cluster` says so.
    pub fn connect_lazy(url: &str, cluster: bool) -> Result<Self, String> {
        if cluster || seeds(url).len() > 1 {
            let client = ClusterClientBuilder::new(seeds(url))
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT)
                .retries(3)
                .build()
                .map_err(|error| format!("bad cluster redis_url {url:?}: {error}"))?;
            let cluster = LazyCluster {
                client,
                connection: tokio::sync::Mutex::new(None),
                dropped_at: std::sync::Mutex::new(None),
                nodes: std::sync::Mutex::new(None),
                by_slot_only: std::sync::atomic::AtomicBool::new(false),
            };
            return Ok(Link(Inner::Cluster(Arc::new(cluster))));
        }
        let client = redis::Client::open(url).map_err(|error| format!("bad redis_url {url:?}: {error}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(2))
            .set_number_of_retries(3);
        ConnectionManager::new_lazy_with_config(client, config)
            .map(|manager| Link(Inner::Single(manager)))
            .map_err(|error| error.to_string())
    }

    /// Whether this is a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.0, Inner::Cluster(_))
    }

    /// Which node serves each slot of a cluster (`None` on one Redis, or
    /// while the cluster cannot be asked).
    pub(crate) async fn nodes(&self) -> Option<Arc<NodeMap>> {
        match &self.0 {
            Inner::Single(_) => None,
            Inner::Cluster(cluster) => cluster.nodes().await,
        }
    }

    /// Makes a cluster link believe, until its next call fails or for
    /// [`NODE_MAP_FOR`], that one node serves every slot: an out-of-date
    /// map, for tests of how calls grouped by it are sent again.
    pub fn pretend_one_node(&self) {
        if let Inner::Cluster(cluster) = &self.0 {
            cluster.pretend_one_node();
        }
    }

    /// Runs `steps` of commands and answers every reply, in the order of
    /// the commands, or the first error reply. On one node: one pipeline,
    /// so the steps keep their order. On a cluster: step after step, each
    /// step's commands one pipeline per node (per slot while the node map
    /// is unknown), the nodes at once. With `script` (the script the
    /// commands' EVALSHAs name), a pipeline that found it missing loads it
    /// and runs once more (see [`Link::run_scripted_pipeline`]).
    pub(crate) async fn run(&self, steps: Vec<Vec<SlotCommand>>, script: Option<&Lua>) -> RedisResult<Vec<Value>> {
        self.run_replies(steps, script).await?.into_iter().map(Value::extract_error).collect()
    }

    /// [`Link::run`], each command's error reply left in its place (a
    /// `Value::ServerError`) for the caller to judge.
    ///
    /// A pipeline the cluster redirects (a slot moved since the node map
    /// was learnt) is sent again whole by redis-rs, then, if still
    /// redirected, again one pipeline per slot. So a pipeline of several
    /// slots must hold only commands that may run twice: the plain ones
    /// this store sends, script calls that declare no key (nothing in them
    /// can be redirected; a key of another node is an error reply), and
    /// re-drive claims (a claim run twice only stamps its marks again: the
    /// first run's answer is lost, so they are shipped a grace later).
    pub(crate) async fn run_replies(&self, steps: Vec<Vec<SlotCommand>>, script: Option<&Lua>) -> RedisResult<Vec<Value>> {
        if !self.is_cluster() {
            let mut pipe = redis::pipe();
            for command in steps.into_iter().flatten() {
                pipe.add_command(command.command);
            }
            return self.attempt(0, &pipe, script).await;
        }
        let nodes = self.nodes().await;
        let mut replies = Vec::new();
        for step in steps {
            let count = step.len();
            let groups = in_pipelines(step, |slot| nodes.as_ref().map_or(u32::from(slot), |nodes| nodes.node_of(slot)));
            let answers = futures::future::join_all(groups.iter().map(|group| self.attempt(group.slot, &group.pipe, script))).await;
            let mut ordered: Vec<Value> = vec![Value::Nil; count];
            for (group, answer) in groups.iter().zip(answers) {
                let answer = match answer {
                    Err(error) if nodes.is_some() && error.is_cluster_error() => self.by_slot(group, script).await?,
                    answer => answer?,
                };
                for (&index, value) in group.indexes.iter().zip(answer) {
                    ordered[index] = value;
                }
            }
            replies.extend(ordered);
        }
        Ok(replies)
    }

    /// A node's pipeline again, one pipeline per slot.
    async fn by_slot(&self, group: &Group, script: Option<&Lua>) -> RedisResult<Vec<Value>> {
        let commands: Vec<SlotCommand> =
            group.pipe.cmd_iter().zip(&group.slots).map(|(command, &slot)| SlotCommand { slot, command: command.clone() }).collect();
        let slots = in_pipelines(commands, u32::from);
        let answers = futures::future::try_join_all(slots.iter().map(|one| self.attempt(one.slot, &one.pipe, script))).await?;
        let mut ordered = vec![Value::Nil; group.slots.len()];
        for (one, answer) in slots.iter().zip(answers) {
            for (&index, value) in one.indexes.iter().zip(answer) {
                ordered[index] = value;
            }
        }
        Ok(ordered)
    }

    async fn attempt(&self, slot: u16, pipe: &Pipeline, script: Option<&Lua>) -> RedisResult<Vec<Value>> {
        match script {
            Some(script) => self.run_scripted_pipeline(slot, pipe, script).await,
            None => self.pipeline_at(slot, pipe).await,
        }
    }

    /// `pipe` on one Redis, or on the cluster master serving `slot`: each
    /// command's reply, an error reply in its place.
    async fn pipeline_at(&self, slot: u16, pipe: &Pipeline) -> RedisResult<Vec<Value>> {
        let count = pipe.cmd_iter().count();
        match &self.0 {
            Inner::Single(_) => self.clone().req_packed_commands(pipe, 0, count).await,
            Inner::Cluster(cluster) => {
                let answer = cluster.pipeline_at(slot, pipe, count).await;
                if let Ok(replies) = &answer {
                    let refused = |reply: &Value| matches!(reply, Value::ServerError(error) if refuses_cross_slot(&error.to_string()));
                    if replies.iter().any(refused) && !cluster.by_slot_only.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        tracing::warn!("this Redis Cluster refuses a script keys of several slots: calls are grouped by slot from now on");
                    }
                }
                if answer.as_ref().map_or(true, |replies| replies.iter().any(|reply| matches!(reply, Value::ServerError(_)))) {
                    // A slot may have moved: learn the map again.
                    cluster.forget_nodes();
                }
                answer
            }
        }
    }

    /// Runs a pipeline (of `slot`) whose EVALSHAs name `script`; if Redis
    /// lost the script (a restart, SCRIPT FLUSH, a replica promoted: Redis
    /// does not replicate loaded scripts), loads it on the node serving
    /// `slot` and runs the pipeline once more. No EVALSHA of it ran the
    /// first time, so nothing is applied twice.
    ///
    /// redis-rs's own loading sends SCRIPT LOAD to every node of a cluster
    /// and fails while one is down; here it goes to the one that needs it.
    pub(crate) async fn run_scripted_pipeline(&self, slot: u16, pipe: &Pipeline, script: &Lua) -> RedisResult<Vec<Value>> {
        let replies = self.pipeline_at(slot, pipe).await?;
        let lost = |reply: &Value| matches!(reply, Value::ServerError(error) if error.kind() == Some(redis::ServerErrorKind::NoScript));
        if replies.iter().any(lost) {
            self.load_script(slot, script.source).await?;
            return self.pipeline_at(slot, pipe).await;
        }
        Ok(replies)
    }

    /// Runs `script` on `keys` (all of one slot) with `args`, loading it
    /// where it is missing (as [`Link::run_scripted_pipeline`]).
    pub(crate) async fn eval<T: redis::FromRedisValue>(&self, script: &Lua, keys: &[&str], args: &[String]) -> RedisResult<T> {
        let mut call = script.call(keys);
        call.arg(args);
        let mut pipe = redis::pipe();
        pipe.add_command(call);
        let slot = keys.first().map_or(0, |key| model::keys::key_slot(key));
        let replies = self.run_scripted_pipeline(slot, &pipe, script).await?;
        let reply = replies.into_iter().next().unwrap_or(Value::Nil).extract_error()?;
        redis::from_redis_value(reply).map_err(RedisError::from)
    }

    /// SCRIPT LOAD of `source` on the master serving `slot` (the only node
    /// of a single Redis).
    async fn load_script(&self, slot: u16, source: &str) -> RedisResult<()> {
        let mut load = redis::cmd("SCRIPT");
        load.arg("LOAD").arg(source);
        match &self.0 {
            Inner::Single(_) => load.query_async::<String>(&mut self.clone()).await.map(drop),
            Inner::Cluster(cluster) => {
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master)));
                cluster.connection().await?.route_command(load, route).await.map(drop)
            }
        }
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Inner::Single(connection) => connection.req_packed_command(cmd),
            Inner::Cluster(cluster) => {
                let cluster = cluster.clone();
                Box::pin(async move { cluster.command(cmd).await })
            }
        }
    }

    fn req_packed_commands<'a>(&'a mut self, pipeline: &'a Pipeline, offset: usize, count: usize) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Inner::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Inner::Cluster(cluster) => {
                let cluster = cluster.clone();
                Box::pin(async move { cluster.commands(pipeline, offset, count).await })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Inner::Single(connection) => connection.get_db(),
            Inner::Cluster(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two refusals Redis 7 gives a script touching a key it may not
    /// (as it words them), and one it does not: a refused call is sent
    /// again grouped by slot; any other error is the caller's.
    #[test]
    fn a_refused_key_is_told_apart_from_other_script_errors() {
        let moved = "ERR Script attempted to access a non local key in a cluster node script: 31204e2c, on @user_script:1.";
        let one_slot_only = "ERR Script attempted to access keys that do not hash to the same slot script: 91edf402, on @user_script:1.";
        let other = "ERR user_script:12: Attempt to compare nil with number script: 91edf402";
        assert!(is_non_local(&moved) && is_non_local(&one_slot_only));
        assert!(refuses_cross_slot(one_slot_only) && !refuses_cross_slot(moved));
        assert!(!is_non_local(&other));
    }
}

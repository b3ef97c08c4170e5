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
            let cluster = LazyCluster { client, connection: tokio::sync::Mutex::new(None), dropped_at: std::sync::Mutex::new(None) };
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

    /// Runs `steps` of commands and answers every reply, in the order of
    /// the commands. On one node: one pipeline, so the steps keep their
    /// order. On a cluster: step after step, each step's commands one
    /// pipeline per slot (in their order), the slots at once. With
    /// `script` (the script the commands' EVALSHAs name), a pipeline
    /// that found it missing loads it and runs once more (see
    /// [`Link::run_scripted_pipeline`]).
    pub(crate) async fn run(&self, steps: Vec<Vec<SlotCommand>>, script: Option<&Lua>) -> RedisResult<Vec<Value>> {
        if !self.is_cluster() {
            let mut pipe = redis::pipe();
            for command in steps.into_iter().flatten() {
                pipe.add_command(command.command);
            }
            return self.attempt(0, pipe, script).await;
        }
        let mut replies = Vec::new();
        for step in steps {
            let mut by_slot: BTreeMap<u16, (Vec<usize>, Pipeline)> = BTreeMap::new();
            let count = step.len();
            for (index, command) in step.into_iter().enumerate() {
                let (indexes, pipe) = by_slot.entry(command.slot).or_insert_with(|| (Vec::new(), redis::pipe()));
                indexes.push(index);
                pipe.add_command(command.command);
            }
            let groups: Vec<(u16, Vec<usize>, Pipeline)> =
                by_slot.into_iter().map(|(slot, (indexes, pipe))| (slot, indexes, pipe)).collect();
            let answers =
                futures::future::try_join_all(groups.iter().map(|(slot, _, pipe)| self.attempt(*slot, pipe.clone(), script))).await?;
            let mut ordered: Vec<Value> = vec![Value::Nil; count];
            for ((_, indexes, _), answer) in groups.iter().zip(answers) {
                for (&index, value) in indexes.iter().zip(answer) {
                    ordered[index] = value;
                }
            }
            replies.extend(ordered);
        }
        Ok(replies)
    }

    async fn attempt(&self, slot: u16, pipe: Pipeline, script: Option<&Lua>) -> RedisResult<Vec<Value>> {
        match script {
            Some(script) => self.run_scripted_pipeline(slot, &pipe, script).await,
            None => pipe.query_async(&mut self.clone()).await,
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
        let mut link = self.clone();
        match pipe.query_async(&mut link).await {
            Err(error) if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.load_script(slot, script.source).await?;
                pipe.query_async(&mut link).await
            }
            answer => answer,
        }
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
        let reply = replies.into_iter().next().unwrap_or(Value::Nil);
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

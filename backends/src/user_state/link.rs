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
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};
use tokio::sync::OnceCell;

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
struct LazyCluster {
    client: ClusterClient,
    connection: OnceCell<ClusterConnection>,
}

impl LazyCluster {
    async fn connection(&self) -> RedisResult<ClusterConnection> {
        self.connection.get_or_try_init(|| self.client.get_async_connection()).await.cloned()
    }
}

/// The seed nodes a `redis_url` lists, comma-separated (one for a plain
/// URL). A list of two or more is a Redis Cluster.
pub fn seeds(url: &str) -> Vec<&str> {
    url.split(',').map(str::trim).filter(|seed| !seed.is_empty()).collect()
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
            return Ok(Link(Inner::Cluster(Arc::new(LazyCluster { client, connection: OnceCell::new() }))));
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
    /// pipeline per slot (in their order), the slots at once. `attempt`
    /// runs one pipeline (the caller's way of retrying a lost script).
    pub(crate) async fn run<F, Fut>(&self, steps: Vec<Vec<SlotCommand>>, attempt: F) -> RedisResult<Vec<Value>>
    where
        F: Fn(Link, Pipeline) -> Fut,
        Fut: std::future::Future<Output = RedisResult<Vec<Value>>>,
    {
        if !self.is_cluster() {
            let mut pipe = redis::pipe();
            for command in steps.into_iter().flatten() {
                pipe.add_command(command.command);
            }
            return attempt(self.clone(), pipe).await;
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
            let groups: Vec<(Vec<usize>, Pipeline)> = by_slot.into_values().collect();
            let answers = futures::future::try_join_all(groups.iter().map(|(_, pipe)| attempt(self.clone(), pipe.clone()))).await?;
            let mut ordered: Vec<Value> = vec![Value::Nil; count];
            for ((indexes, _), answer) in groups.iter().zip(answers) {
                for (&index, value) in indexes.iter().zip(answer) {
                    ordered[index] = value;
                }
            }
            replies.extend(ordered);
        }
        Ok(replies)
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Inner::Single(connection) => connection.req_packed_command(cmd),
            Inner::Cluster(cluster) => {
                let cluster = cluster.clone();
                Box::pin(async move { cluster.connection().await?.req_packed_command(cmd).await })
            }
        }
    }

    fn req_packed_commands<'a>(&'a mut self, pipeline: &'a Pipeline, offset: usize, count: usize) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Inner::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Inner::Cluster(cluster) => {
                let cluster = cluster.clone();
                Box::pin(async move { cluster.connection().await?.req_packed_commands(pipeline, offset, count).await })
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

//! Connection checks for the endpoints a reload introduces, before
//! anything changes: a Redis PING, the broker's metadata, the HBase
//! table (made if missing, as the persist stage would at its start). Each
//! waits at most [`PROBE_TIMEOUT`].

use std::time::Duration;

use backends::history_table::{HistoryTable, ThriftTable};
use backends::user_state::{CallShape, RedisStore, UserStore};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use crate::StageConfig;

/// Longest wait for one endpoint to answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// One backend a stage talks to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    /// A Redis server or cluster (its seeds).
    Redis(String),
    /// Kafka brokers.
    Kafka(String),
    /// An HBase Thrift gateway and the table used on it.
    Hbase {
        /// `host:port` of the gateway.
        address: String,
        /// The table.
        table: String,
    },
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Redis(url) => write!(f, "Redis at {url}"),
            Endpoint::Kafka(brokers) => write!(f, "the Kafka brokers {brokers}"),
            Endpoint::Hbase { address, table } => write!(f, "HBase table `{table}` through {address}"),
        }
    }
}

/// The endpoints `config` talks to.
pub fn endpoints(config: &StageConfig) -> Vec<Endpoint> {
    match config {
        StageConfig::Realtime(realtime) => std::iter::once(Endpoint::Redis(realtime.redis_url.clone()))
            .chain(realtime.broadcast_brokers.clone().map(Endpoint::Kafka))
            .collect(),
        StageConfig::KafkaBatch(bridge) => vec![Endpoint::Kafka(bridge.brokers.clone())],
        StageConfig::Persist(persist) => {
            std::iter::once(Endpoint::Hbase { address: persist.hbase_thrift.clone(), table: persist.table.clone() })
                .chain(persist.redis_url.clone().map(Endpoint::Redis))
                .collect()
        }
        StageConfig::HttpIngest(_) | StageConfig::Aggregate(_) | StageConfig::Discard(_) => Vec::new(),
    }
}

/// Why `endpoint` cannot be used, if it cannot.
pub async fn probe(endpoint: &Endpoint) -> Result<(), String> {
    let checked = tokio::time::timeout(PROBE_TIMEOUT, check(endpoint)).await;
    match checked {
        Ok(Ok(())) => Ok(()),
        Ok(Err(reason)) => Err(format!("{endpoint} does not answer: {reason}")),
        Err(_) => Err(format!("{endpoint} did not answer within {} s", PROBE_TIMEOUT.as_secs())),
    }
}

async fn check(endpoint: &Endpoint) -> Result<(), String> {
    match endpoint {
        Endpoint::Redis(url) => {
            let store = RedisStore::connect_lazy(url, CallShape { cluster: false, max_events: 1 }).map_err(|error| error.to_string())?;
            if UserStore::Redis(store).ping().await {
                Ok(())
            } else {
                Err("PING failed".to_owned())
            }
        }
        Endpoint::Kafka(brokers) => {
            let consumer: BaseConsumer =
                ClientConfig::new().set("bootstrap.servers", brokers).create().map_err(|error| error.to_string())?;
            tokio::task::spawn_blocking(move || consumer.fetch_metadata(None, PROBE_TIMEOUT).map(drop).map_err(|error| error.to_string()))
                .await
                .map_err(|error| error.to_string())?
        }
        Endpoint::Hbase { address, table } => {
            HistoryTable::Thrift(ThriftTable::new(address, table)).ensure_table().await.map_err(|error| error.to_string())
        }
    }
}

//! What the operator's commands need from a topology: the realtime Redis,
//! the shard count, the payload mode, the history table, the merge topic
//! and the job's consumer group, and the persist stage's write limit (also
//! the bound on their HBase reads). Each command asks for what it uses and
//! is refused, naming the missing stage or field, before it touches
//! anything.

use anyhow::Context;
use backends::history_table::{HistoryTable, ThriftTable};
use backends::user_state::Link;
use pipeline::{RateLimitSpec, Topology};
use stages::kafka_batch::Payload;
use stages::StageConfig;

/// The stores and settings a topology names.
pub struct Endpoints {
    /// The realtime stage's Redis URL.
    pub redis_url: Option<String>,
    /// The aggregate's shard count (1 without an aggregate).
    pub shards: u32,
    /// The bridge's payload mode.
    pub payload: Option<Payload>,
    /// Brokers, merge topic and the job's consumer group.
    pub kafka: Option<(String, String, String)>,
    /// The history table's Thrift address and name.
    pub table: Option<(String, String)>,
    /// The persist stage's write limit: rows a second.
    pub rate: RateLimitSpec,
}

impl Endpoints {
    /// What `topology` names.
    pub fn of(topology: &Topology<StageConfig>) -> Self {
        let mut endpoints = Endpoints {
            redis_url: None,
            shards: 1,
            payload: None,
            kafka: None,
            table: None,
            rate: RateLimitSpec { per_second: 1000, burst: None },
        };
        for stage in &topology.stages {
            match &stage.config {
                StageConfig::Realtime(realtime) => endpoints.redis_url = Some(realtime.redis_url.clone()),
                StageConfig::Aggregate(aggregate) => endpoints.shards = aggregate.shards,
                StageConfig::KafkaBatch(bridge) => {
                    endpoints.payload = Some(bridge.payload);
                    endpoints.kafka = Some((bridge.brokers.clone(), bridge.topic.clone(), bridge.consumer_group.clone()));
                }
                StageConfig::Persist(persist) => {
                    endpoints.table = Some((persist.hbase_thrift.clone(), persist.table.clone()));
                    endpoints.rate = persist.write_rate_limit;
                    if endpoints.redis_url.is_none() {
                        endpoints.redis_url = persist.redis_url.clone();
                    }
                }
                _ => {}
            }
        }
        endpoints
    }

    /// The realtime Redis (one node, or a cluster when the URL lists
    /// seeds), connected lazily.
    pub fn redis(&self) -> anyhow::Result<Link> {
        let url =
            self.redis_url.as_deref().context("the topology has no `realtime` stage (nor a persist `redis_url`): no Redis to read")?;
        let cluster = backends::user_state::redis_seeds(url).len() > 1;
        Link::connect_lazy(url, cluster).map_err(|error| anyhow::anyhow!("cannot use redis_url {url:?}: {error}"))
    }

    /// The history table, over Thrift.
    pub fn table(&self) -> anyhow::Result<HistoryTable> {
        let (address, table) = self.table.as_ref().context("the topology has no `persist` stage: no history table to read")?;
        Ok(HistoryTable::Thrift(ThriftTable::new(address, table)))
    }

    /// Brokers, merge topic and the job's consumer group.
    pub fn kafka(&self) -> anyhow::Result<(&str, &str, &str)> {
        let (brokers, topic, group) = self.kafka.as_ref().context("the topology has no `kafka_batch` stage: no merge topic to read")?;
        Ok((brokers, topic, group))
    }

    /// The bound on the commands' HBase reads (and replay's writes): the
    /// persist stage's `write_rate_limit`.
    pub fn limit(&self) -> pipeline::rate_limit::RateLimit {
        pipeline::rate_limit::RateLimit::new(&self.rate)
    }
}

/// Longest wait for each of the broker's answers.
const KAFKA_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Endpoints {
    /// The job's lag on the merge topic: messages past its committed
    /// offsets, summed over the partitions (a partition it never committed
    /// counts from its start). `None` without a bridge or when the broker
    /// does not answer.
    pub async fn job_lag(&self) -> Option<i64> {
        let (brokers, topic, group) = self.kafka().ok()?;
        let (brokers, topic, group) = (brokers.to_owned(), topic.to_owned(), group.to_owned());
        tokio::task::spawn_blocking(move || {
            use rdkafka::consumer::{BaseConsumer, Consumer};
            let consumer: BaseConsumer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("group.id", &group)
                .set("enable.auto.commit", "false")
                .create()
                .ok()?;
            let metadata = consumer.fetch_metadata(Some(&topic), KAFKA_TIMEOUT).ok()?;
            let partitions: Vec<i32> = metadata.topics().first()?.partitions().iter().map(|partition| partition.id()).collect();
            let mut wanted = rdkafka::TopicPartitionList::new();
            for partition in &partitions {
                wanted.add_partition(&topic, *partition);
            }
            let committed = consumer.committed_offsets(wanted, KAFKA_TIMEOUT).ok()?;
            let mut lag = 0;
            for element in committed.elements() {
                let (low, high) = consumer.fetch_watermarks(&topic, element.partition(), KAFKA_TIMEOUT).ok()?;
                let at = element.offset().to_raw().filter(|offset| *offset >= 0).unwrap_or(low);
                lag += (high - at).max(0);
            }
            Some(lag)
        })
        .await
        .ok()
        .flatten()
    }
}

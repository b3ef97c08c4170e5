//! Builds a role's runnable nodes from a validated topology: for each
//! planned node, the stage implementation with its real backend or, under
//! `--embedded`, its in-process stand-in. Every problem is collected.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ingest_http::config::ProgressFallback;
use ingest_http::reads::HistoryReads;
use ingest_http::{AdminState, HttpIngestConfig, HttpIngestStage};
use model::Batch;
use pipeline::plan::{plan, Half, RoleSelection};
use pipeline::{RunnableNode, Stage, StageDef, Topology};

use crate::aggregate::fold::Fold;
use crate::aggregate::AggregateStage;
use crate::kafka_batch::embedded::{self, QueueConsumer, QueueProducer};
use crate::kafka_batch::{KafkaConsumerStage, KafkaProducerStage, Payload};
use crate::persist::thrift::ThriftTable;
use crate::persist::{DeadLetters, HistoryTable, PersistConfig, PersistStage};
use crate::realtime::broadcast::Broadcast;
use crate::realtime::store::CallShape;
use crate::realtime::{EmbeddedStore, RealtimeConfig, RealtimeStage, RealtimeStore, RedisStore};
use crate::StageConfig;

/// Shards when no aggregate stage says otherwise.
const DEFAULT_SHARDS: u32 = 64;

/// How to build.
#[derive(Clone, Default)]
pub struct BuildOptions {
    /// The roles this process runs.
    pub role: RoleSelection,
    /// Use in-process stand-ins for Redis, Kafka and HBase.
    pub embedded: bool,
    /// Health and metrics, served by the ingest stage when it runs.
    pub admin: Option<AdminState>,
}

/// The backends a process shares between its stages.
struct Backends {
    embedded: Option<Arc<EmbeddedStore>>,
    redis: HashMap<String, RealtimeStore>,
    /// Embedded history tables by data directory (one open store each).
    tables: HashMap<String, Arc<hbase_compat::Store>>,
}

impl Backends {
    /// The history table a persist stage writes: the embedded store under
    /// `--embedded` (opened once per directory), else the Thrift gateway.
    fn history_table(&mut self, config: &PersistConfig) -> Result<HistoryTable, String> {
        if self.embedded.is_none() {
            return Ok(HistoryTable::Thrift(ThriftTable::new(&config.hbase_thrift, &config.table)));
        }
        let store = match self.tables.get(&config.embedded_data_dir) {
            Some(store) => store.clone(),
            None => {
                let store = Arc::new(
                    hbase_compat::Store::open(std::path::Path::new(&config.embedded_data_dir)).map_err(|error| error.to_string())?,
                );
                self.tables.insert(config.embedded_data_dir.clone(), store.clone());
                store
            }
        };
        Ok(HistoryTable::Embedded(store, config.table.clone()))
    }

    /// What the read API of an ingest stage reads: the realtime store
    /// after it, and (for cache-aside) the table of the topology's persist
    /// stage. `None` when no realtime stage follows the ingest stage.
    fn reads(
        &mut self,
        topology: &Topology<StageConfig>,
        name: &str,
        config: &HttpIngestConfig,
        ttl_s: u64,
    ) -> Result<Option<Arc<dyn HistoryReads>>, String> {
        let Some(StageConfig::Realtime(realtime)) = downstream_config(topology, name, |config| matches!(config, StageConfig::Realtime(_)))
        else {
            return Ok(None);
        };
        let store = self.realtime_store(&realtime.redis_url, call_shape(realtime))?;
        let progress_fallback = config.progress_fallback == ProgressFallback::Hbase;
        let persist = topology.stages.iter().find_map(|stage| match &stage.config {
            StageConfig::Persist(persist) => Some(persist),
            _ => None,
        });
        let table = match persist {
            Some(persist) if config.history_fallback || progress_fallback => Some(self.history_table(persist)?),
            _ => None,
        };
        // The note "HBase holds nothing more" is voided by the job when it
        // writes a user; a job without the realtime store cannot, so then
        // every short page reads HBase.
        let note_checks = self.embedded.is_some() || persist.is_some_and(|persist| persist.redis_url.is_some());
        Ok(Some(crate::read::shared(crate::read::StoreReads { store, table, progress_fallback, ttl_s, note_checks })))
    }

    fn realtime_store(&mut self, redis_url: &str, shape: CallShape) -> Result<RealtimeStore, String> {
        if let Some(store) = &self.embedded {
            return Ok(RealtimeStore::Embedded(store.clone()));
        }
        if let Some(store) = self.redis.get(redis_url) {
            return Ok(store.clone());
        }
        let store = RealtimeStore::Redis(RedisStore::connect_lazy(redis_url, shape).map_err(|error| error.to_string())?);
        self.redis.insert(redis_url.to_owned(), store.clone());
        Ok(store)
    }
}

/// The first stage of kind `matches` downstream of `name`, if any.
fn downstream_config<'t>(
    topology: &'t Topology<StageConfig>,
    name: &'t str,
    matches: impl Fn(&StageConfig) -> bool,
) -> Option<&'t StageConfig> {
    topology.downstream_of(name).map(|(stage, _)| &stage.config).find(|config| matches(config))
}

/// How a realtime stage groups users into script calls.
fn call_shape(config: &RealtimeConfig) -> CallShape {
    CallShape { cluster: config.cluster, max_events: config.script_max_events }
}

/// The realtime stage feeding `stage` (directly or through others).
fn upstream_realtime<'t>(topology: &'t Topology<StageConfig>, stage: &'t StageDef<StageConfig>) -> Option<&'t RealtimeConfig> {
    let mut frontier: Vec<&StageDef<StageConfig>> = vec![stage];
    let mut seen = 0;
    while let Some(current) = frontier.pop() {
        if let StageConfig::Realtime(config) = &current.config {
            return Some(config);
        }
        seen += 1;
        if seen > topology.stages.len() {
            break;
        }
        frontier.extend(current.inputs.iter().filter_map(|input| topology.stage(&input.from)));
    }
    None
}

/// The shard count of the aggregate after `realtime` (dirty sets must use it).
fn shards_after(topology: &Topology<StageConfig>, name: &str) -> u32 {
    match downstream_config(topology, name, |config| matches!(config, StageConfig::Aggregate(_))) {
        Some(StageConfig::Aggregate(config)) => config.shards,
        _ => DEFAULT_SHARDS,
    }
}

/// Builds every node `options.role` runs, or every reason it cannot.
pub fn build(topology: &Topology<StageConfig>, options: BuildOptions) -> Result<Vec<RunnableNode<Batch>>, Vec<String>> {
    let planned = plan(topology, options.role);
    let mut problems = Vec::new();
    if planned.is_empty() {
        problems.push(format!("the {} role has no stages in this topology", options.role));
    }
    let mut backends =
        Backends { embedded: options.embedded.then(|| Arc::new(EmbeddedStore::default())), redis: HashMap::new(), tables: HashMap::new() };
    let ttl_s = topology.businesses.values().map(|business| u64::from(business.retention_days) * 86_400).max().unwrap_or(90 * 86_400);
    let admin = options.admin.clone().unwrap_or_else(|| AdminState { health: ingest_http::Health::default(), metrics: None });

    // Embedded bridges: both halves share one in-process queue, so both must
    // run in this process.
    let mut embedded_queues: HashMap<&str, (Option<QueueProducer>, Option<QueueConsumer>)> = HashMap::new();
    let mut nodes: Vec<RunnableNode<Batch>> = Vec::new();
    for node in planned {
        let stage = node.stage;
        let name = &stage.name;
        let built: Result<Box<dyn Stage<Batch>>, String> = match (&stage.config, node.half) {
            (StageConfig::HttpIngest(config), _) => backends.reads(topology, name, config, ttl_s).and_then(|reads| {
                HttpIngestStage::new(config, &topology.businesses, &topology.auth, admin.clone(), reads)
                    .map(|stage| Box::new(stage) as Box<dyn Stage<Batch>>)
            }),
            (StageConfig::Realtime(config), _) => backends.realtime_store(&config.redis_url, call_shape(config)).and_then(|store| {
                let broadcast = match (&config.broadcast_brokers, options.embedded) {
                    (_, true) => Broadcast::Embedded,
                    (Some(brokers), false) => Broadcast::kafka(brokers, &config.broadcast_topic)?,
                    (None, false) => Broadcast::Disabled,
                };
                Ok(Box::new(RealtimeStage {
                    store,
                    broadcast,
                    max_items: config.max_items_per_user,
                    ttl_s,
                    shards: shards_after(topology, name),
                    max_events: config.group_commit_max_events,
                    max_in_flight: config.max_in_flight_commits,
                    linger: Duration::from_micros(config.group_commit_linger_us),
                    readiness: Some(admin.health.dependency(if options.embedded { "the embedded store" } else { "redis" })),
                }) as Box<dyn Stage<Batch>>)
            }),
            (StageConfig::Aggregate(config), _) => {
                // The payload mode belongs to the bridge that ships the
                // flushes; without one, keep whole records.
                let keep_records = match downstream_config(topology, name, |config| matches!(config, StageConfig::KafkaBatch(_))) {
                    Some(StageConfig::KafkaBatch(bridge)) => bridge.payload == Payload::Full,
                    _ => true,
                };
                let businesses = topology.businesses.iter().map(|(name, business)| (name.clone(), business.id));
                Ok(Box::new(AggregateStage {
                    fold: Fold::new(config.shards, keep_records, businesses),
                    flush_max_entries: config.flush_max_entries,
                    flush_interval: Duration::from_millis(config.flush_interval_ms),
                    max_pending_entries: config.max_pending_entries,
                }) as Box<dyn Stage<Batch>>)
            }
            (StageConfig::KafkaBatch(config), half) if options.embedded => {
                if options.role != RoleSelection::All {
                    Err(format!("stage `{name}`: under --embedded the in-process queue stands in for Kafka and cannot cross processes; run with --role all"))
                } else if topology.downstream_of(name).next().is_none() {
                    Err(format!("stage `{name}`: under --embedded nothing reads its in-process queue (no stage has it as an input), so its events would go nowhere"))
                } else {
                    // The embedded realtime store is the same for every URL.
                    let dirty = backends.embedded.clone().map(RealtimeStore::Embedded);
                    let halves = embedded_queues.entry(name.as_str()).or_insert_with(|| {
                        let (producer, consumer) = embedded::queue(config.embedded_queue_batches, dirty);
                        (Some(producer), Some(consumer))
                    });
                    match half {
                        Half::Consumer => halves.1.take().map(|consumer| Box::new(consumer) as Box<dyn Stage<Batch>>),
                        _ => halves.0.take().map(|producer| Box::new(producer) as Box<dyn Stage<Batch>>),
                    }
                    .ok_or_else(|| format!("stage `{name}`: planned twice"))
                }
            }
            (StageConfig::KafkaBatch(config), Half::Consumer) => {
                KafkaConsumerStage::new(config).map(|stage| Box::new(stage) as Box<dyn Stage<Batch>>)
            }
            (StageConfig::KafkaBatch(config), Half::Producer | Half::Whole) => {
                let dirty = upstream_realtime(topology, stage)
                    .map(|config| backends.realtime_store(&config.redis_url, call_shape(config)))
                    .transpose();
                dirty.and_then(|dirty| KafkaProducerStage::new(config, dirty)).map(|stage| Box::new(stage) as Box<dyn Stage<Batch>>)
            }
            (StageConfig::Discard(_), _) => Ok(Box::new(crate::discard::DiscardStage) as Box<dyn Stage<Batch>>),
            (StageConfig::Persist(config), _) if options.embedded => {
                let records = backends.embedded.clone().map(RealtimeStore::Embedded);
                backends
                    .history_table(config)
                    .map(|table| Box::new(PersistStage::new(config, table, records, DeadLetters::Log)) as Box<dyn Stage<Batch>>)
            }
            (StageConfig::Persist(config), _) => {
                let records = config
                    .redis_url
                    .as_deref()
                    .map(|url| backends.realtime_store(url, CallShape { cluster: false, max_events: 128 }))
                    .transpose();
                // Rejected rows go to the dead-letter topic of the bridge
                // this stage reads.
                let bridge = stage.inputs.iter().find_map(|input| match topology.stage(&input.from).map(|from| &from.config) {
                    Some(StageConfig::KafkaBatch(bridge)) => Some(bridge),
                    _ => None,
                });
                let dead_letters = match bridge {
                    Some(bridge) => rdkafka::ClientConfig::new()
                        .set("bootstrap.servers", &bridge.brokers)
                        .set("enable.idempotence", "true")
                        .set("acks", "all")
                        .create()
                        .map(|producer| DeadLetters::Kafka { producer, topic: bridge.dead_letter_topic.clone() })
                        .map_err(|error| format!("cannot create the dead-letter producer: {error}")),
                    None => Ok(DeadLetters::Log),
                };
                records.and_then(|records| {
                    let table = backends.history_table(config)?;
                    Ok(Box::new(PersistStage::new(config, table, records, dead_letters?)) as Box<dyn Stage<Batch>>)
                })
            }
        };
        match built {
            Ok(stage) => nodes.push((node.spec, stage)),
            Err(problem) if problem.starts_with("stage `") => problems.push(problem),
            Err(problem) => problems.push(format!("stage `{name}`: {problem}")),
        }
    }
    if problems.is_empty() {
        Ok(nodes)
    } else {
        Err(problems)
    }
}

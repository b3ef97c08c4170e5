//! histflow's stages: the closed set of stage kinds a topology may use,
//! their configurations, and how a role's nodes are built from them.
//!
//! # Layout
//! - [`StageConfig`]: the `type`-tagged enum of every stage configuration;
//!   [`StageConfig::build`] dispatches to each kind's own `build`.
//! - `realtime`, `aggregate`, `kafka_batch`, `persist`: one folder per
//!   stage kind: `config.rs` (its fields and checks), `build.rs` (what it
//!   uses and how it is built), the stage's loop, its pure core, and
//!   `events.rs` (what it counts and logs). The
//!   backends they share live in the `backends` crate.
//! - `http_ingest`: building the HTTP source (its config and server live
//!   in the `ingest-http` crate) and the reader behind its read API.
//! - `discard`: a sink that answers and drops (the benchmark's HTTP
//!   ceiling).
//! - `references`: reading the records references name, shared by the
//!   job (`ids`) and the producer (`fetched`).
//! - [`resources`]: the facts stages share (the business registry, the
//!   sharding, the payload, the Redis, Kafka and HBase endpoints), which a
//!   kind declares and builds from; the one place that reads across
//!   stages.
//! - [`registry`]: the business registry as running stages read it,
//!   replaced in place by a reload.
//! - [`build`]: walks a role's plan and builds each node, with real
//!   backends or embedded stand-ins; every problem is collected.
//! - [`reload`]: what a topology reload changes in a running process,
//!   built and checked before it is put in force.

pub mod aggregate;
pub mod build;
pub mod discard;
mod http_ingest;
pub mod kafka_batch;
pub mod persist;
pub mod realtime;
mod references;
pub mod registry;
pub mod reload;
pub mod resources;

use ingest_http::HttpIngestConfig;
use model::Batch;
use pipeline::{Role, Shape, Stage, StageSpec};
use serde::Deserialize;

pub use build::{build, BuildError, BuildOptions};
use build::{BuildContext, StageBuildError};

/// Every stage kind, as written in `type = "..."`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StageConfig {
    /// HTTP source: decode, validate, authenticate, rate-limit, answer.
    HttpIngest(HttpIngestConfig),
    /// Redis write, visible before the answer.
    Realtime(realtime::RealtimeConfig),
    /// Last-write-wins fold, sharded by uid region.
    Aggregate(aggregate::AggregateConfig),
    /// Kafka bridge from the service role to the job role.
    KafkaBatch(kafka_batch::KafkaBatchConfig),
    /// HBase writer of the job role.
    Persist(persist::PersistConfig),
    /// Answers and drops (the HTTP ceiling of the benchmark).
    Discard(discard::DiscardConfig),
}

impl StageConfig {
    /// The shared resources a node running `half` of this stage builds
    /// from, as its kind declares them.
    pub fn uses(&self, half: pipeline::plan::Half) -> resources::Uses {
        match self {
            StageConfig::HttpIngest(_) => http_ingest::USES,
            StageConfig::Realtime(_) => realtime::USES,
            StageConfig::Aggregate(_) => aggregate::USES,
            StageConfig::KafkaBatch(_) if half == pipeline::plan::Half::Consumer => kafka_batch::CONSUMER_USES,
            StageConfig::KafkaBatch(_) => kafka_batch::PRODUCER_USES,
            StageConfig::Persist(_) => persist::USES,
            StageConfig::Discard(_) => &[],
        }
    }

    /// What of its own settings a change to rebuilds the node (the rest
    /// of an ingest stage's settings change in place), as text.
    pub(crate) fn own_rebuild_key(&self) -> String {
        match self {
            // The listeners, and the gRPC server's limits, which are set
            // when it starts (its call deadline follows
            // `request_timeout_ms`): a change to any of them rebuilds the
            // stage, so it takes effect.
            StageConfig::HttpIngest(ingest) => format!(
                "listen {:?} grpc {:?} grpc limits {} {} {}",
                ingest.listen,
                ingest.grpc_listen,
                ingest.grpc_max_connections,
                ingest.grpc_max_streams_per_connection,
                ingest.grpc_listen.as_ref().map_or(0, |_| ingest.request_timeout_ms)
            ),
            other => format!("{other:?}"),
        }
    }

    /// The stage (or bridge half) `cx` describes, built by its kind.
    pub(crate) fn build(&self, cx: &mut BuildContext<'_>) -> Result<Box<dyn Stage<Batch>>, StageBuildError> {
        match self {
            StageConfig::HttpIngest(config) => http_ingest::build(config, cx),
            StageConfig::Realtime(config) => config.build(cx),
            StageConfig::Aggregate(config) => config.build(cx),
            StageConfig::KafkaBatch(config) => config.build(cx),
            StageConfig::Persist(config) => config.build(cx),
            StageConfig::Discard(config) => Ok(config.build()),
        }
    }
}

impl StageSpec for StageConfig {
    const KINDS: &'static [&'static str] = &["http_ingest", "realtime", "aggregate", "kafka_batch", "persist", "discard"];

    fn kind(&self) -> &'static str {
        match self {
            StageConfig::HttpIngest(_) => "http_ingest",
            StageConfig::Realtime(_) => "realtime",
            StageConfig::Aggregate(_) => "aggregate",
            StageConfig::KafkaBatch(_) => "kafka_batch",
            StageConfig::Persist(_) => "persist",
            StageConfig::Discard(_) => "discard",
        }
    }

    fn shape(&self) -> Shape {
        match self {
            StageConfig::HttpIngest(_) => Shape::Source,
            StageConfig::Realtime(_) | StageConfig::Aggregate(_) => Shape::Transform,
            StageConfig::KafkaBatch(_) => Shape::Bridge,
            StageConfig::Persist(_) | StageConfig::Discard(_) => Shape::Sink,
        }
    }

    fn role(&self) -> Role {
        match self {
            StageConfig::HttpIngest(_)
            | StageConfig::Realtime(_)
            | StageConfig::Aggregate(_)
            | StageConfig::KafkaBatch(_)
            | StageConfig::Discard(_) => Role::Service,
            StageConfig::Persist(config) if config.write_through => Role::Service,
            StageConfig::Persist(_) => Role::Job,
        }
    }

    fn businesses(&self) -> Vec<&str> {
        match self {
            StageConfig::HttpIngest(config) => config.businesses.iter().flatten().map(String::as_str).collect(),
            _ => Vec::new(),
        }
    }

    fn can_refuse_clients(&self) -> bool {
        matches!(self, StageConfig::HttpIngest(_))
    }

    fn client_listeners(&self) -> Vec<(&'static str, &str)> {
        match self {
            StageConfig::HttpIngest(config) => std::iter::once(("listen", config.listen.as_str()))
                .chain(config.grpc_listen.as_deref().map(|address| ("grpc_listen", address)))
                .collect(),
            _ => Vec::new(),
        }
    }

    fn figures(&self) -> Vec<pipeline::view::Figure> {
        match self {
            StageConfig::HttpIngest(_) => ingest_http::figures(),
            StageConfig::Realtime(_) => realtime::figures(),
            StageConfig::Aggregate(_) => aggregate::figures(),
            StageConfig::KafkaBatch(_) => kafka_batch::figures(),
            StageConfig::Persist(_) => persist::figures(),
            StageConfig::Discard(_) => Vec::new(),
        }
    }

    fn check(&self) -> Vec<String> {
        match self {
            StageConfig::HttpIngest(config) => config.check(),
            StageConfig::Realtime(config) => config.check(),
            StageConfig::Aggregate(config) => config.check(),
            StageConfig::KafkaBatch(config) => config.check(),
            StageConfig::Persist(config) => config.check(),
            StageConfig::Discard(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod validation_tests;

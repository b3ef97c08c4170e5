//! histflow's stages: the closed set of stage kinds a topology may use,
//! their configurations, and how a role's nodes are built from them.
//!
//! # Layout
//! - [`StageConfig`]: the `type`-tagged enum of every stage configuration.
//! - `realtime`, `aggregate`, `kafka_batch`, `persist`: one module per
//!   stage, each with its config and its backends (the HTTP source lives in
//!   the `ingest-http` crate).
//! - `discard`: a sink that answers and drops (the benchmark's HTTP
//!   ceiling).
//! - `read`: the stores behind the read API (Redis with cache-aside to
//!   the history table), which the ingest stage serves.
//! - [`build`]: turns a validated topology and a role into runnable nodes,
//!   choosing real backends or embedded stand-ins.

pub mod aggregate;
pub mod build;
pub mod discard;
pub mod kafka_batch;
pub mod persist;
pub mod read;
pub mod realtime;

use ingest_http::HttpIngestConfig;
use pipeline::{Role, Shape, StageSpec};
use serde::Deserialize;

pub use build::{build, BuildOptions};

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

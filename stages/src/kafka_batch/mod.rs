//! The `kafka_batch` bridge: in the service role it ships each shard flush
//! as one message to the merge topic; in the job role its consumer group
//! feeds the stages that read it. Under `--embedded` an in-process queue
//! ([`embedded`]) stands in for the broker. Client settings and topic
//! creation are `backends::kafka`'s.
//!
//! - `config`: the bridge's topology fields and their checks.
//! - `build`: how each half is built, and the shared resources it uses.
//! - `producer`, `consumer`: the two halves on a real broker.
//! - `embedded`: the in-process queue of `--embedded`.
//! - `events`: what the bridge reports.

mod build;
mod config;
pub mod consumer;
pub mod embedded;
mod events;
pub mod producer;

pub(crate) use build::{CONSUMER_USES, PRODUCER_USES};
pub use config::{Compression, KafkaBatchConfig, Payload};
pub use consumer::KafkaConsumerStage;
pub(crate) use events::figures;
pub use producer::KafkaProducerStage;

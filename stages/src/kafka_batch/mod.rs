//! The `kafka_batch` bridge: in the service role it ships each shard flush
//! as one message to the merge topic; in the job role its consumer group
//! feeds the stages that read it. Under `--embedded` an in-process queue
//! ([`embedded`]) stands in for the broker.

mod config;
pub mod consumer;
pub mod embedded;
pub mod producer;

pub use config::{Compression, KafkaBatchConfig, Payload};
pub use consumer::KafkaConsumerStage;
pub use producer::KafkaProducerStage;

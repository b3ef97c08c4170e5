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

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

/// Creates `topic` with `partitions` partitions unless it exists, retrying
/// with capped backoff until the broker answers (brokers such as tansu do
/// not create topics on first use).
pub(crate) async fn ensure_topic(brokers: &str, topic: &str, partitions: i32, stage: &str) -> Result<(), pipeline::StageError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", brokers).create()?;
    let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))).request_timeout(Some(Duration::from_secs(10)));
    let mut backoff = Duration::from_millis(100);
    loop {
        match admin.create_topics([&new_topic], &options).await.map(|mut results| results.pop()) {
            Ok(Some(Ok(_))) => {
                tracing::info!(stage, topic, partitions, "created topic");
                return Ok(());
            }
            Ok(Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists)))) | Ok(None) => return Ok(()),
            Ok(Some(Err((_, code)))) => tracing::warn!(stage, topic, ?code, "cannot create the topic yet; retrying"),
            Err(error) => tracing::warn!(stage, brokers, %error, "Kafka not reachable yet; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

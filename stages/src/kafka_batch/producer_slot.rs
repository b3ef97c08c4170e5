//! The producer a `kafka_batch` bridge sends through, replaced when it
//! fails fatally.
//!
//! An idempotent producer that meets a fatal error (the broker refused
//! its producer id, fenced it, or reported a sequence gap it cannot
//! explain) fails every send from then on. Retrying on it would answer
//! 503s until a restart; instead the first sender to see the fatal error
//! builds a new producer from the same configuration, and every message
//! still waiting (they failed with the old one) is sent again through the
//! new one. Nothing pending is lost: a flush settles its marks only once
//! each of its messages is delivered, and a message the old producer did
//! deliver before failing is at worst written twice (the writes are
//! idempotent).

use std::sync::{Mutex, PoisonError};

use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::ClientConfig;

/// The producer in use, numbered, and how to build the next one.
pub struct ProducerSlot {
    config: ClientConfig,
    current: Mutex<(u64, FutureProducer)>,
}

impl ProducerSlot {
    /// A slot holding a producer built from `config`.
    pub fn new(config: ClientConfig) -> Result<Self, rdkafka::error::KafkaError> {
        let producer = config.create()?;
        Ok(ProducerSlot { config, current: Mutex::new((0, producer)) })
    }

    /// The producer in use and its generation (for [`Self::replace_if_fatal`]).
    pub fn current(&self) -> (u64, FutureProducer) {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        (current.0, current.1.clone())
    }

    /// If the producer of `generation` has failed fatally and is still the
    /// one in use, builds its successor; answers the fatal error when it
    /// did. A producer that cannot be built is tried again on the next
    /// failure.
    pub fn replace_if_fatal(&self, generation: u64) -> Option<String> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.0 != generation {
            return None;
        }
        let (code, reason) = current.1.client().fatal_error()?;
        match self.config.create::<FutureProducer>() {
            Ok(producer) => {
                *current = (generation + 1, producer);
                Some(format!("{code}: {reason}"))
            }
            Err(error) => {
                tracing::error!(%error, fatal = %reason, "cannot build a new Kafka producer after a fatal error; trying again on the next failure");
                None
            }
        }
    }
}

//! The one producer type of histflow's Kafka producers (the merge topic's
//! and both dead-letter topics'): an idempotent producer, replaced when it
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
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{OwnedHeaders, ToBytes};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::ClientConfig;

use crate::retry;

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

    /// Sends one message until the broker takes it: each failure is
    /// retried with backoff, and a producer that failed fatally is
    /// replaced and the message sent again through its successor.
    /// `failed` hears of each failed attempt (the error, the pause before
    /// the next, and the fatal error when the producer was replaced).
    pub async fn send_until_taken<K: ToBytes + ?Sized>(
        &self,
        topic: &str,
        key: Option<&K>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
        mut failed: impl FnMut(&KafkaError, Duration, Option<&str>),
    ) {
        /// A failed attempt and the producer it was made on.
        struct Failed {
            error: KafkaError,
            generation: u64,
        }
        let attempt = || async {
            let (generation, producer) = self.current();
            let mut record = FutureRecord::to(topic).payload(payload);
            if let Some(key) = key {
                record = record.key(key);
            }
            if let Some(headers) = headers.clone() {
                record = record.headers(headers);
            }
            producer.send(record, Timeout::Never).await.map(drop).map_err(|(error, _)| Failed { error, generation })
        };
        retry::until_ok(attempt, |attempt: &Failed, pause| {
            let fatal = self.replace_if_fatal(attempt.generation);
            failed(&attempt.error, pause, fatal.as_deref());
        })
        .await;
    }
}

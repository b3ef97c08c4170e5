//! How each half of a `kafka_batch` bridge is built: the producer from its
//! own settings and the realtime store whose marks a delivered flush
//! settles; the consumer from its own settings. Under `--embedded` both
//! halves are the ends of one in-process queue, which something must read.

use model::Batch;
use pipeline::plan::{Half, RoleSelection};
use pipeline::Stage;

use super::config::KafkaBatchConfig;
use super::consumer::KafkaConsumerStage;
use super::embedded;
use super::producer::KafkaProducerStage;
use crate::build::{BuildContext, StageBuildError};
use crate::resources::{Resource, Takes, Uses};

/// What the producing half builds from beside the bridge's settings.
pub(crate) const PRODUCER_USES: Uses = &[(Resource::UserState, Takes::Rebuild), (Resource::Readers, Takes::Rebuild)];

/// What the consuming half builds from beside the bridge's settings.
pub(crate) const CONSUMER_USES: Uses = &[(Resource::Readers, Takes::Rebuild)];

impl KafkaBatchConfig {
    /// One half of the bridge: the producer (service role) or the consumer
    /// group (job role), or under `--embedded` one end of an in-process
    /// queue.
    pub(crate) fn build(&self, cx: &mut BuildContext<'_>) -> Result<Box<dyn Stage<Batch>>, StageBuildError> {
        if cx.embedded() {
            return self.build_embedded(cx);
        }
        match cx.half {
            Half::Consumer => {
                super::events::register_consumer();
                let mut stage = KafkaConsumerStage::new(self).map_err(StageBuildError::Backend)?;
                stage.broker_health = Some(cx.admin.health.backend("broker"));
                Ok(Box::new(stage))
            }
            Half::Producer | Half::Whole => {
                // A delivered flush settles the marks the realtime stage
                // feeding this bridge wrote.
                let marks = match cx.resources.user_state()? {
                    Some(store) => Some(cx.backends.realtime_store(store)?),
                    None => None,
                };
                super::events::register_producer();
                let mut stage = KafkaProducerStage::new(self, marks).map_err(StageBuildError::Backend)?;
                stage.broker_health = Some(cx.admin.health.backend("broker"));
                Ok(Box::new(stage))
            }
        }
    }

    /// Under `--embedded` both halves share one in-process queue, so both
    /// must run in this process and something must read the queue.
    fn build_embedded(&self, cx: &mut BuildContext<'_>) -> Result<Box<dyn Stage<Batch>>, StageBuildError> {
        if cx.role() != RoleSelection::All {
            return Err(StageBuildError::EmbeddedQueueAcrossProcesses);
        }
        if !cx.resources.readers()? {
            return Err(StageBuildError::EmbeddedQueueUnread);
        }
        let halves = cx.backends.queues.entry(cx.name.to_owned()).or_insert_with(|| {
            let (producer, consumer) = embedded::queue(self.embedded_queue_batches);
            (Some(producer), Some(consumer))
        });
        let half: Option<Box<dyn Stage<Batch>>> = match cx.half {
            Half::Consumer => halves.1.take().map(|consumer| Box::new(consumer) as Box<dyn Stage<Batch>>),
            Half::Producer | Half::Whole => halves.0.take().map(|producer| Box::new(producer) as Box<dyn Stage<Batch>>),
        };
        half.ok_or(StageBuildError::PlannedTwice)
    }
}

//! How an `aggregate` stage is built: from its own settings and the
//! payload of the bridge that ships its flushes (ids only, or whole
//! records).

use std::time::Duration;

use model::Batch;
use pipeline::Stage;

use super::config::AggregateConfig;
use super::fold::Fold;
use super::stage::AggregateStage;
use crate::build::{BuildContext, StageBuildError};
use crate::kafka_batch::Payload;
use crate::resources::{Resource, Takes, Uses};

/// What an aggregate stage builds from beside its own settings.
pub(crate) const USES: Uses = &[(Resource::Payload, Takes::Rebuild)];

impl AggregateConfig {
    /// The stage: its fold keeps whole records unless the bridge that
    /// ships its flushes carries ids only (without one, whole records).
    pub(crate) fn build(&self, cx: &mut BuildContext<'_>) -> Result<Box<dyn Stage<Batch>>, StageBuildError> {
        let keep_records = cx.resources.payload()?.is_none_or(|payload| payload == Payload::Full);
        Ok(Box::new(AggregateStage {
            fold: Fold::new(self.shards, keep_records),
            flush_max_entries: self.flush_max_entries,
            flush_interval: Duration::from_millis(self.flush_interval_ms),
            max_pending_entries: self.max_pending_entries,
        }))
    }
}

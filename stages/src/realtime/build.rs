//! How a `realtime` stage is built: from its own settings, the aggregate's
//! sharding (which re-drive index a user goes in, and how long a grace
//! allows for a flush), whether a bridge downstream settles its marks, and
//! the live business registry (the keys' expiry).

use std::time::Duration;

use model::Batch;
use pipeline::Stage;

use super::broadcast::Broadcast;
use super::config::{RealtimeConfig, DELIVERY_ALLOWANCE_MS};
use super::redrive::Redrive;
use super::stage::RealtimeStage;
use crate::aggregate::DEFAULT_SHARDS;
use crate::build::{BuildContext, StageBuildError};
use crate::resources::{Resource, Takes, Uses};

/// What a realtime stage builds from beside its own settings.
pub(crate) const USES: Uses =
    &[(Resource::Sharding, Takes::Rebuild), (Resource::Marks, Takes::Rebuild), (Resource::Businesses, Takes::InPlace)];

impl RealtimeConfig {
    /// The stage on the user-state store at `redis_url`, keeping pending
    /// marks (indexed by the shards of the aggregate it feeds) when a Kafka
    /// producer downstream settles them, and re-driving stale ones.
    pub(crate) fn build(&self, cx: &mut BuildContext<'_>) -> Result<Box<dyn Stage<Batch>>, StageBuildError> {
        let store = cx.backends.user_store(&self.redis_url, self.call_shape())?;
        super::events::register();
        let broadcast = match (&self.broadcast_brokers, cx.embedded()) {
            (_, true) => Broadcast::Embedded,
            (Some(brokers), false) => Broadcast::kafka(brokers, &self.broadcast_topic).map_err(StageBuildError::Backend)?,
            (None, false) => Broadcast::Disabled,
        };
        let (shards, flush_interval_ms) =
            cx.resources.sharding()?.map_or((DEFAULT_SHARDS, 0), |sharding| (sharding.shards, sharding.flush_interval_ms));
        let grace_ms = self.redrive_after_ms.unwrap_or(2 * flush_interval_ms + DELIVERY_ALLOWANCE_MS);
        if grace_ms < 2 * flush_interval_ms {
            return Err(StageBuildError::Setting(format!(
                "`redrive_after_ms` = {grace_ms} must be at least twice the downstream aggregate's `flush_interval_ms` ({flush_interval_ms}): a shorter grace re-ships what live instances still hold"
            )));
        }
        // Marks are kept when a Kafka producer downstream settles them (and
        // so when the data leaves this process before it is durable).
        let marks = store.keeps_marks() && cx.resources.marks()?;
        let redrive = (self.redrive && marks).then(|| Redrive {
            store: store.clone(),
            shards,
            grace: Duration::from_millis(grace_ms),
            every: Duration::from_millis(self.redrive_every_ms),
        });
        let backend = if cx.embedded() { "the embedded store" } else { "redis" };
        Ok(Box::new(RealtimeStage {
            store,
            broadcast,
            max_items: self.max_items_per_user,
            registry: cx.registry.clone(),
            shards,
            max_events: self.group_commit_max_events,
            max_in_flight: self.max_in_flight_commits,
            linger: Duration::from_micros(self.group_commit_linger_us),
            readiness: Some(cx.admin.health.dependency(backend)),
            marks,
            redrive,
        }))
    }
}

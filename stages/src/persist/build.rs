//! How a `persist` stage is built: from its own settings, the Kafka
//! bridge it reads (where refused rows go) and the live business registry
//! (each business's retention, for the sweep).

use backends::history_table::HistoryTable;
use backends::sweep_ledger::SweepLedger;
use backends::user_state::{CallShape, UserStore};
use model::Batch;
use pipeline::Stage;

use super::config::PersistConfig;
use super::dead_letters::DeadLetters;
use super::stage::PersistStage;
use super::sweep::RetentionSweep;
use crate::build::{BuildContext, StageBuildError};
use crate::resources::{table_of, Resource, Takes, Uses};

/// What a persist stage builds from beside its own settings.
pub(crate) const USES: Uses = &[(Resource::Bridge, Takes::Rebuild), (Resource::Businesses, Takes::InPlace)];

/// How the persist stage's Redis calls are shaped: it reads records, and
/// notes what it wrote (releasing references) many users a call, at most
/// as many items a call as a realtime write script holds by default (a
/// script blocks Redis while it runs). A cluster's slots are learnt from
/// the connection.
const RECORD_READS: CallShape = CallShape { cluster: false, max_events: 128 };

impl PersistConfig {
    /// The stage writing this config's table, re-reading `ids` records
    /// from `redis_url`, sending refused rows to the dead-letter topic of
    /// the bridge it reads (the log under `--embedded`).
    pub(crate) fn build(&self, cx: &mut BuildContext<'_>) -> Result<Box<dyn Stage<Batch>>, StageBuildError> {
        let table = cx.backends.history_table(&table_of(self, cx.embedded()))?;
        super::events::register();
        if cx.embedded() {
            let records = cx.backends.embedded_user_store();
            let sweep = self.sweep(cx, &table, records.as_ref());
            let stage = PersistStage::new(self, table, records, DeadLetters::Log);
            return Ok(Box::new(PersistStage {
                table_health: Some(cx.admin.health.backend("the embedded history table")),
                sweep,
                ..stage
            }));
        }
        let records = self.redis_url.as_deref().map(|url| cx.backends.user_store(url, RECORD_READS)).transpose()?;
        let dead_letters = match cx.resources.bridge()? {
            Some(bridge) => DeadLetters::kafka(&bridge.brokers, &bridge.dead_letter_topic).map_err(StageBuildError::Backend)?,
            None => DeadLetters::Log,
        };
        let sweep = self.sweep(cx, &table, records.as_ref());
        let stage = PersistStage::new(self, table, records, dead_letters);
        Ok(Box::new(PersistStage { table_health: Some(cx.admin.health.backend("hbase")), sweep, ..stage }))
    }

    /// The retention sweep of the table, keeping its lock and place in
    /// `records`' store; none when it is off, or there is no store to keep
    /// them in (said in the log).
    fn sweep(&self, cx: &BuildContext<'_>, table: &HistoryTable, records: Option<&UserStore>) -> Option<RetentionSweep> {
        if !self.retention_sweep.enabled {
            return None;
        }
        let Some(records) = records else {
            tracing::warn!(stage = %cx.name, "retention sweep off: it keeps its lock and place in Redis, and this stage has no `redis_url`");
            return None;
        };
        let ledger = SweepLedger::beside(records, &self.table);
        Some(RetentionSweep::new(self.retention_sweep.clone(), table.clone(), ledger, cx.registry.clone(), cx.name))
    }
}

//! How the `http_ingest` stage (its config and server live in the
//! `ingest-http` crate) is built here: its listeners, and the reader behind
//! its read API.

use std::sync::Arc;

use history_read::HistoryReader;
use ingest_http::api::ApiConfig;
use ingest_http::config::ProgressFallback;
use ingest_http::{HttpIngestConfig, HttpIngestStage};
use model::Batch;
use pipeline::Stage;

use crate::build::{BuildContext, StageBuildError};
use crate::resources::{Resource, Takes, Uses};

/// What an ingest stage builds from beside its own settings: all of it
/// taken in place (a reload replaces its API settings, the listeners stay).
pub(crate) const USES: Uses = &[
    (Resource::Businesses, Takes::InPlace),
    (Resource::Clients, Takes::InPlace),
    (Resource::UserState, Takes::InPlace),
    (Resource::HistoryTable, Takes::InPlace),
];

/// The stage, binding its addresses now so a taken port fails the start
/// (an address the process already listens on is shared, not bound again).
pub(crate) fn build(config: &HttpIngestConfig, cx: &mut BuildContext<'_>) -> Result<Box<dyn Stage<Batch>>, StageBuildError> {
    let reader = reader(config, cx)?.map(Arc::new);
    let resident = cx.options.resident.clone();
    let (businesses, clients) = (cx.resources.businesses()?, cx.resources.clients()?);
    let stage = HttpIngestStage::new(config, businesses, clients, cx.admin.clone(), reader, &resident.listeners)
        .map_err(StageBuildError::Listen)?;
    resident.set_ingest(cx.name, stage.live());
    Ok(Box::new(stage))
}

/// The API configuration a reload puts in force in a running ingest stage
/// (same listeners): settings, clients and reads, all from the new file.
pub(crate) fn api_config(config: &HttpIngestConfig, cx: &mut BuildContext<'_>) -> Result<ApiConfig, StageBuildError> {
    let reader = reader(config, cx)?.map(Arc::new);
    let (businesses, clients) = (cx.resources.businesses()?, cx.resources.clients()?);
    ingest_http::stage::api_config(config, businesses, clients, reader).map_err(StageBuildError::Setting)
}

/// What the endpoint's reads use: the user-state store of the realtime
/// stage it feeds, and (for cache-aside) the history table its events
/// reach. `None` when it feeds no realtime stage: the read routes then
/// answer 501.
fn reader(config: &HttpIngestConfig, cx: &mut BuildContext<'_>) -> Result<Option<HistoryReader>, StageBuildError> {
    let Some(store) = cx.resources.user_state()?.cloned() else {
        return Ok(None);
    };
    let store = cx.backends.realtime_store(&store)?;
    let progress_fallback = config.progress_fallback == ProgressFallback::Hbase;
    let table_at = cx.resources.table()?.cloned();
    let table = match &table_at {
        Some(at) if config.history_fallback || progress_fallback => Some(cx.backends.history_table(at)?),
        _ => None,
    };
    // "HBase holds nothing more" notes need nothing of the job
    // (`backends::user_state::NOTE_LIFETIME_MS`).
    let note_checks = table.is_some();
    history_read::register_metrics();
    let retention_ms = pipeline::topology::retention_ms(cx.resources.businesses()?);
    Ok(Some(HistoryReader { store, table, progress_fallback, note_checks, retention_ms }))
}

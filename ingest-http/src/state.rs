//! What every route shares: the API behind them and the body limit, and
//! how a request names its caller.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap};
use history_read::HistoryReader;
use model::Batch;
use pipeline::health::Health;
use pipeline::Output;

use crate::api::{ApiSettings, HistoryApi};
use crate::auth::Clients;
use crate::event::EventRules;

/// Everything the handlers share.
#[derive(Clone)]
pub struct IngestState {
    pub(crate) api: Arc<HistoryApi>,
    pub(crate) max_body_bytes: usize,
    /// Longest wait for a request's whole body.
    pub(crate) body_timeout: Duration,
}

/// Settings of the router.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// What a valid event is.
    pub rules: EventRules,
    /// Longest wait for room downstream plus the realtime write.
    pub request_timeout: Duration,
    /// `Retry-After` seconds for 429/503.
    pub retry_after_s: u64,
    /// Largest body read.
    pub max_body_bytes: usize,
}

impl IngestState {
    /// State sending accepted batches to `output`, with no reads (the read
    /// routes answer 501).
    pub fn new(output: Output<Batch>, settings: IngestSettings, clients: Clients, health: Health) -> Self {
        Self::with_reads(output, settings, clients, health, None)
    }

    /// State sending accepted batches and mutations to `output` and
    /// reading through `reads`.
    pub fn with_reads(
        output: Output<Batch>,
        settings: IngestSettings,
        clients: Clients,
        health: Health,
        reads: Option<Arc<HistoryReader>>,
    ) -> Self {
        let IngestSettings { rules, request_timeout, retry_after_s, max_body_bytes } = settings;
        let api = HistoryApi::new(output, ApiSettings { rules, request_timeout, retry_after_s }, clients, health, reads);
        IngestState { api: Arc::new(api), max_body_bytes, body_timeout: request_timeout }
    }

    /// The API behind the routes (the gRPC service shares it).
    pub fn api(&self) -> Arc<HistoryApi> {
        self.api.clone()
    }
}

/// The `Authorization` header's value, if it is text.
pub(crate) fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok())
}

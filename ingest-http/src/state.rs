//! What every route shares: the API behind them and the body limit, and
//! how a request names its caller.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap};
use history_read::HistoryReader;
use model::Batch;
use pipeline::health::Health;
use pipeline::Output;

use crate::api::{ApiConfig, ApiSettings, HistoryApi, LiveApi};
use crate::auth::Clients;
use crate::event::EventRules;

/// Everything the handlers share.
#[derive(Clone)]
pub struct IngestState {
    pub(crate) api: Arc<HistoryApi>,
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

impl IngestSettings {
    /// The API's reloadable configuration with these settings.
    pub fn into_config(self, clients: Clients, reads: Option<Arc<HistoryReader>>) -> ApiConfig {
        let IngestSettings { rules, request_timeout, retry_after_s, max_body_bytes } = self;
        ApiConfig {
            settings: ApiSettings { rules, request_timeout, retry_after_s },
            max_body_bytes,
            clients,
            reads,
            connections: crate::serve::ConnectionLimits::default(),
            streams: crate::api::StreamLimits::default(),
        }
    }

    /// A live configuration holding these settings.
    pub fn into_live(self, clients: Clients, reads: Option<Arc<HistoryReader>>) -> Arc<LiveApi> {
        LiveApi::new(self.into_config(clients, reads))
    }
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
        Self::live(output, settings.into_live(clients, reads), health)
    }

    /// State whose settings `live` holds (a reload replaces them).
    pub fn live(output: Output<Batch>, live: Arc<LiveApi>, health: Health) -> Self {
        IngestState { api: Arc::new(HistoryApi::live(output, live, health)) }
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

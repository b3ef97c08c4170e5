//! The `http_ingest` stage: binds its address when built (so a taken port
//! fails the start, naming the stage), serves the ingest and admin routes,
//! and on the stop signal stops accepting, finishes the requests in flight
//! and returns, which closes its output.

use std::collections::{BTreeMap, HashSet};
use std::net::TcpListener;
use std::time::Duration;

use futures::FutureExt;
use model::Batch;
use pipeline::topology::{Auth, Business};
use pipeline::{Stage, StageContext, StageFuture};

use crate::admin::{admin_router, AdminState};
use crate::auth::Clients;
use crate::config::HttpIngestConfig;
use crate::event::EventRules;
use crate::router::{ingest_router, IngestSettings, IngestState};

/// A built `http_ingest` stage.
pub struct HttpIngestStage {
    listener: TcpListener,
    settings: IngestSettings,
    clients: Clients,
    admin: AdminState,
}

impl HttpIngestStage {
    /// Binds `config.listen` and prepares the routes.
    pub fn new(config: &HttpIngestConfig, businesses: &BTreeMap<String, Business>, auth: &Auth, admin: AdminState) -> Result<Self, String> {
        let listener = TcpListener::bind(&config.listen).map_err(|error| format!("cannot listen on {}: {error}", config.listen))?;
        listener.set_nonblocking(true).map_err(|error| format!("cannot use {}: {error}", config.listen))?;
        let accepted: HashSet<String> = match &config.businesses {
            Some(names) => names.iter().cloned().collect(),
            None => businesses.keys().cloned().collect(),
        };
        let clients = Clients::new(auth);
        if clients.is_open() {
            tracing::warn!(listen = %config.listen, "no [[auth.clients]] configured: the ingest API is open to anyone who can reach it");
        }
        let settings = IngestSettings {
            rules: EventRules { businesses: accepted, max_events: config.max_events_per_request },
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            retry_after_s: u64::from(config.retry_after_s),
            max_body_bytes: config.max_body_bytes,
        };
        Ok(HttpIngestStage { listener, settings, clients, admin })
    }
}

impl Stage<Batch> for HttpIngestStage {
    fn run(self: Box<Self>, cx: StageContext<Batch>) -> StageFuture {
        async move {
            let HttpIngestStage { listener, settings, clients, admin } = *self;
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let addr = listener.local_addr()?;
            let state = IngestState::new(cx.output, settings, clients, admin.health.clone());
            let app = ingest_router(state).merge(admin_router(admin));
            tracing::info!(stage = %cx.name, %addr, "ingest listening (POST /v1/events, /metrics, /healthz, /readyz)");
            let stop = cx.shutdown.clone();
            axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await?;
            tracing::info!(stage = %cx.name, "ingest stopped accepting; requests in flight are answered");
            Ok(())
        }
        .boxed()
    }
}

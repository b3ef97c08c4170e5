//! The `http_ingest` stage: binds its addresses when built (so a taken port
//! fails the start, naming the stage), serves the API and admin routes
//! over HTTP and, with `grpc_listen`, the same API over gRPC; on the stop
//! signal it stops accepting, finishes the requests in flight and returns,
//! which closes its output.
//!
//! The wait for requests in flight is bounded: a request can take at most
//! `request_timeout_ms` (body, room downstream, the realtime write), so
//! after that much time and [`DRAIN_GRACE`] more, whatever is still open is
//! a stalled client; its connection is closed without an answer (nothing of
//! it was acknowledged) so it cannot hold the stages behind this one, and
//! their final flushes, past the process's drain deadline.

use std::collections::{BTreeMap, HashSet};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use history_read::HistoryReader;
use model::Batch;
use pipeline::topology::{Auth, Business};
use pipeline::{Stage, StageContext, StageFuture};

use crate::admin::{api_admin_router, AdminState};
use crate::auth::Clients;
use crate::config::HttpIngestConfig;
use crate::event::EventRules;
use crate::grpc::GrpcHistory;
use crate::router::ingest_router;
use crate::state::{IngestSettings, IngestState};

/// How long past `request_timeout_ms` the stop waits for open requests.
pub const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// A built `http_ingest` stage.
pub struct HttpIngestStage {
    listener: TcpListener,
    grpc_listener: Option<TcpListener>,
    settings: IngestSettings,
    clients: Clients,
    admin: AdminState,
    reads: Option<Arc<HistoryReader>>,
}

fn bind(address: &str) -> Result<TcpListener, String> {
    let listener = TcpListener::bind(address).map_err(|error| format!("cannot listen on {address}: {error}"))?;
    listener.set_nonblocking(true).map_err(|error| format!("cannot use {address}: {error}"))?;
    Ok(listener)
}

impl HttpIngestStage {
    /// Binds `config.listen` (and `config.grpc_listen`) and prepares the
    /// routes; reads go through `reads` (none: the read routes answer 501).
    pub fn new(
        config: &HttpIngestConfig,
        businesses: &BTreeMap<String, Business>,
        auth: &Auth,
        admin: AdminState,
        reads: Option<Arc<HistoryReader>>,
    ) -> Result<Self, String> {
        let listener = bind(&config.listen)?;
        let grpc_listener = config.grpc_listen.as_deref().map(bind).transpose()?;
        if auth.clients.is_empty() && !auth.allow_unauthenticated {
            for (field, bound) in std::iter::once(("listen", &listener)).chain(grpc_listener.iter().map(|grpc| ("grpc_listen", grpc))) {
                if bound.local_addr().is_ok_and(|address| !address.ip().is_loopback()) {
                    return Err(format!(
                        "`{field}` is reachable from other machines and [auth] has no clients, so anyone could write and delete any user's history: add [[auth.clients]], listen on loopback, or set `allow_unauthenticated = true` in [auth]"
                    ));
                }
            }
        }
        let accepted: HashSet<String> = match &config.businesses {
            Some(names) => names.iter().cloned().collect(),
            None => businesses.keys().cloned().collect(),
        };
        let clients = Clients::new(auth);
        if clients.is_open() {
            tracing::warn!(listen = %config.listen, "no [[auth.clients]] configured: the API is open to anyone who can reach it");
        }
        let settings = IngestSettings {
            rules: EventRules {
                businesses: accepted,
                max_events: config.max_events_per_request,
                max_age_ms: pipeline::topology::retention_ms(businesses),
            },
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            retry_after_s: u64::from(config.retry_after_s),
            max_body_bytes: config.max_body_bytes,
        };
        Ok(HttpIngestStage { listener, grpc_listener, settings, clients, admin, reads })
    }
}

impl Stage<Batch> for HttpIngestStage {
    fn run(self: Box<Self>, cx: StageContext<Batch>) -> StageFuture {
        async move {
            let HttpIngestStage { listener, grpc_listener, settings, clients, admin, reads } = *self;
            let drain_limit = settings.request_timeout + DRAIN_GRACE;
            // gRPC takes no larger a message than HTTP takes a body (tonic's
            // own limit is 4 MiB), refused before it is decoded.
            let max_message_bytes = settings.max_body_bytes;
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let addr = listener.local_addr()?;
            let state = IngestState::with_reads(cx.output, settings, clients, admin.health.clone(), reads);
            let api = state.api();
            let app = ingest_router(state).merge(api_admin_router(admin, api.clone()));
            tracing::info!(stage = %cx.name, %addr, "API listening (POST /v1/events, /v1/users/..., /metrics, /healthz, /readyz)");
            let stop = cx.shutdown.clone();
            let http = async move { axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await };
            let grpc = match grpc_listener {
                None => None,
                Some(grpc_listener) => {
                    let grpc_listener = tokio::net::TcpListener::from_std(grpc_listener)?;
                    tracing::info!(stage = %cx.name, addr = %grpc_listener.local_addr()?, "gRPC listening (histflow.api.v1.History)");
                    let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc_listener);
                    let stop = cx.shutdown.clone();
                    Some(
                        tonic::transport::Server::builder()
                            .add_service(GrpcHistory::server(api).max_decoding_message_size(max_message_bytes))
                            .serve_with_incoming_shutdown(incoming, async move { stop.cancelled().await }),
                    )
                }
            };
            let serving = async move {
                match grpc {
                    None => http.await?,
                    Some(grpc) => {
                        let (http, grpc) = tokio::join!(http, grpc);
                        http?;
                        grpc?;
                    }
                }
                Ok::<(), pipeline::StageError>(())
            };
            let stop = cx.shutdown.clone();
            let stalled = async move {
                stop.cancelled().await;
                tokio::time::sleep(drain_limit).await;
            };
            tokio::select! {
                served = serving => {
                    served?;
                    tracing::info!(stage = %cx.name, "API stopped accepting; requests in flight are answered");
                }
                () = stalled => tracing::warn!(
                    stage = %cx.name,
                    waited_ms = drain_limit.as_millis() as u64,
                    "requests still open after the stop; closing them unanswered (nothing of them was acknowledged)"
                ),
            }
            Ok(())
        }
        .boxed()
    }
}

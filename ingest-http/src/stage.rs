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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use history_read::HistoryReader;
use model::Batch;
use pipeline::topology::{Auth, Business};
use pipeline::{Stage, StageContext, StageFuture};

use crate::admin::{admin_router, AdminState};
use crate::api::StreamLimits;
use crate::api::{ApiConfig, LiveApi};
use crate::auth::Clients;
use crate::config::HttpIngestConfig;
use crate::event::EventRules;
use crate::grpc::GrpcHistory;
use crate::grpc_serve::{serve_grpc, GrpcLimits};
use crate::router::ingest_router;
use crate::serve::{self, ConnectionLimits};
use crate::state::{IngestSettings, IngestState};

/// How long past `request_timeout_ms` the stop waits for open requests.
pub const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// A built `http_ingest` stage.
pub struct HttpIngestStage {
    listener: TcpListener,
    grpc_listener: Option<TcpListener>,
    /// Fixed at start: a reload does not change them.
    grpc_limits: GrpcLimits,
    live: Arc<LiveApi>,
    admin: AdminState,
}

/// The addresses a process listens on, bound once and shared: a stage
/// rebuilt on the same address (a reload) takes a copy of the bound socket
/// instead of binding again, so the address is never released and no
/// client sees a refused connection.
#[derive(Default)]
pub struct Listeners {
    bound: Mutex<HashMap<String, TcpListener>>,
}

impl Listeners {
    /// A socket listening on `address`: the one bound already, or a new one.
    pub fn bind(&self, address: &str) -> Result<TcpListener, String> {
        let mut bound = self.bound.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(listener) = bound.get(address) {
            return listener.try_clone().map_err(|error| format!("cannot share the socket on {address}: {error}"));
        }
        let listener = TcpListener::bind(address).map_err(|error| format!("cannot listen on {address}: {error}"))?;
        listener.set_nonblocking(true).map_err(|error| format!("cannot use {address}: {error}"))?;
        let kept = listener.try_clone().map_err(|error| format!("cannot share the socket on {address}: {error}"))?;
        bound.insert(address.to_owned(), kept);
        Ok(listener)
    }

    /// Releases every address not in `wanted` (once no server uses it,
    /// the socket closes).
    pub fn keep_only(&self, wanted: &HashSet<String>) {
        self.bound.lock().unwrap_or_else(std::sync::PoisonError::into_inner).retain(|address, _| wanted.contains(address));
    }
}

/// The API configuration `config` describes: its settings, clients and
/// reads. (A topology whose API would be open to other machines never gets
/// here: validation refuses it, naming the listener.)
pub fn api_config(
    config: &HttpIngestConfig,
    businesses: &BTreeMap<String, Business>,
    auth: &Auth,
    reads: Option<Arc<HistoryReader>>,
) -> Result<ApiConfig, String> {
    let accepted: HashSet<String> = match &config.businesses {
        Some(names) => names.iter().cloned().collect(),
        None => businesses.keys().cloned().collect(),
    };
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
    let mut api = settings.into_config(Clients::new(auth), reads);
    api.connections = ConnectionLimits {
        header_read_timeout: Duration::from_millis(config.header_read_timeout_ms),
        idle_timeout: Duration::from_millis(config.idle_timeout_ms),
        max_connections: config.max_connections,
    };
    api.streams = StreamLimits {
        max_unanswered: config.grpc_stream_max_unanswered,
        idle_timeout: Duration::from_millis(config.grpc_stream_idle_timeout_ms),
        max_per_client: config.grpc_max_streams_per_client,
    };
    Ok(api)
}

impl HttpIngestStage {
    /// Binds `config.listen` (and `config.grpc_listen`) through
    /// `listeners` and prepares the routes; reads go through `reads`
    /// (none: the read routes answer 501).
    pub fn new(
        config: &HttpIngestConfig,
        businesses: &BTreeMap<String, Business>,
        auth: &Auth,
        admin: AdminState,
        reads: Option<Arc<HistoryReader>>,
        listeners: &Listeners,
    ) -> Result<Self, String> {
        let api = api_config(config, businesses, auth, reads)?;
        let listener = listeners.bind(&config.listen)?;
        let grpc_listener = config.grpc_listen.as_deref().map(|address| listeners.bind(address)).transpose()?;
        if api.clients.is_open() {
            tracing::warn!(listen = %config.listen, "no [[auth.clients]] configured: the API is open to anyone who can reach it");
        }
        let grpc_limits = GrpcLimits {
            max_connections: config.grpc_max_connections,
            max_streams_per_connection: config.grpc_max_streams_per_connection,
            call_timeout: Duration::from_millis(config.request_timeout_ms) + DRAIN_GRACE,
        };
        Ok(HttpIngestStage { listener, grpc_listener, grpc_limits, live: LiveApi::new(api), admin })
    }

    /// The API's configuration, which a reload replaces in place.
    pub fn live(&self) -> Arc<LiveApi> {
        self.live.clone()
    }
}

impl Stage<Batch> for HttpIngestStage {
    fn run(self: Box<Self>, cx: StageContext<Batch>) -> StageFuture {
        async move {
            let HttpIngestStage { listener, grpc_listener, grpc_limits, live, admin } = *self;
            let config = live.current();
            let drain_limit = config.settings.request_timeout + DRAIN_GRACE;
            // gRPC takes no larger a message than HTTP takes a body (tonic's
            // own limit is 4 MiB), refused before it is decoded. Fixed for
            // the server's life: a reload changes it on HTTP only.
            let max_message_bytes = config.max_body_bytes;
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let addr = listener.local_addr()?;
            let state = IngestState::live(cx.output, live.clone(), admin.health.clone());
            let api = state.api();
            let app = ingest_router(state).merge(admin_router(admin));
            tracing::info!(stage = %cx.name, %addr, "API listening (POST /v1/events, /v1/users/..., /metrics, /healthz, /readyz)");
            let stop = cx.shutdown.clone();
            let limits_of = live.clone();
            let http = async move {
                serve::serve(listener, app, move || limits_of.current().connections, stop).await;
                Ok::<(), std::io::Error>(())
            };
            let grpc = match grpc_listener {
                None => None,
                Some(grpc_listener) => {
                    let grpc_listener = tokio::net::TcpListener::from_std(grpc_listener)?;
                    tracing::info!(stage = %cx.name, addr = %grpc_listener.local_addr()?, "gRPC listening (histflow.api.v1.History)");
                    Some(serve_grpc(
                        grpc_listener,
                        GrpcHistory::server(api, max_message_bytes, cx.shutdown.clone()),
                        grpc_limits,
                        cx.shutdown.clone(),
                    ))
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

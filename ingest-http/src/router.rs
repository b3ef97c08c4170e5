//! The API router: `POST /v1/events`, answered only after the realtime
//! write of its own events, and the read-and-mutation routes
//! (`read_routes`). A function of its state, so tests drive it with
//! `oneshot` and no socket.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::post;
use axum::{Json, Router};
use model::{Batch, EventResult};
use pipeline::Output;
use serde::Serialize;

use crate::api::{ApiSettings, HistoryApi};
use crate::auth::Clients;
use crate::error::ApiError;
use crate::event::{decode_events, EventRules};
use crate::health::Health;
use crate::reads::HistoryReads;

/// Everything the handlers share.
#[derive(Clone)]
pub struct IngestState {
    pub(crate) api: Arc<HistoryApi>,
    max_body_bytes: usize,
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
        reads: Option<Arc<dyn HistoryReads>>,
    ) -> Self {
        let IngestSettings { rules, request_timeout, retry_after_s, max_body_bytes } = settings;
        let api = HistoryApi::new(output, ApiSettings { rules, request_timeout, retry_after_s }, clients, health, reads);
        IngestState { api: Arc::new(api), max_body_bytes }
    }

    /// The API behind the routes (the gRPC service shares it).
    pub fn api(&self) -> Arc<HistoryApi> {
        self.api.clone()
    }
}

/// The answer to an accepted request.
#[derive(Debug, Serialize)]
pub struct EventsAnswer {
    /// One result per event, in request order.
    pub results: Vec<EventResultBody>,
}

/// One event's result.
#[derive(Debug, Serialize)]
pub struct EventResultBody {
    /// The event changed the user's history.
    pub recorded: bool,
    /// The user's first recorded watch today.
    pub first_today: bool,
}

impl From<EventResult> for EventResultBody {
    fn from(result: EventResult) -> Self {
        EventResultBody { recorded: result.recorded, first_today: result.first_today }
    }
}

/// The API routes (without the admin ones): events, history, progress,
/// deletes, clear and the recording switch.
pub fn ingest_router(state: IngestState) -> Router {
    Router::new()
        .route("/v1/events", post(post_events))
        .merge(crate::read_routes::read_router())
        .layer(middleware::from_fn_with_state(state.clone(), refuse_while_draining))
        .layer(middleware::from_fn(count_requests))
        .with_state(state)
}

async fn refuse_while_draining(State(state): State<IngestState>, request: Request, next: Next) -> Response {
    match state.api.refuse_if_draining() {
        Ok(()) => next.run(request).await,
        Err(error) => axum::response::IntoResponse::into_response(error),
    }
}

/// Counts requests by route and status and records their latency.
async fn count_requests(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("histflow_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("histflow_http_request_duration_seconds", "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    response
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// Most bytes read and discarded from an oversized body so its client,
/// still sending, gets the 413 instead of a reset connection.
const DRAIN_LIMIT_BYTES: usize = 16 * 1024 * 1024;

/// The body, or 413 when it exceeds `limit` (after draining what is left,
/// up to [`DRAIN_LIMIT_BYTES`]).
async fn read_body(body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    use futures::StreamExt;
    let too_large = || ApiError::TooLarge(format!("the body is larger than {limit} bytes"));
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|_| ApiError::BadRequest(vec![crate::event::EventError::body("unreadable_body", "the body could not be read")]))?;
        seen += chunk.len();
        if seen > limit {
            if seen > DRAIN_LIMIT_BYTES {
                return Err(too_large());
            }
            continue;
        }
        bytes.extend_from_slice(&chunk);
    }
    if seen > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

async fn post_events(State(state): State<IngestState>, headers: HeaderMap, body: Body) -> Result<Json<EventsAnswer>, ApiError> {
    let api = &state.api;
    let client = api.authenticate(headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok()))?;
    if !is_json(&headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let bytes = read_body(body, state.max_body_bytes).await?;
    let records = decode_events(&bytes, api.rules(), model::now_ms()).map_err(ApiError::BadRequest)?;
    let results = api.add_events(client.as_ref(), records).await?;
    Ok(Json(EventsAnswer { results: results.into_iter().map(Into::into).collect() }))
}

//! The ingest router: `POST /v1/events`, answered only after the realtime
//! write of its own events, plus the admin routes. A function of its state,
//! so tests drive it with `oneshot` and no socket.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::post;
use axum::{Json, Router};
use model::{Ack, Batch, EventResult, Op};
use pipeline::{Output, SendError};
use serde::Serialize;

use crate::auth::Clients;
use crate::error::ApiError;
use crate::event::{decode_events, EventRules};
use crate::health::Health;

/// Everything the handlers share.
#[derive(Clone)]
pub struct IngestState {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where accepted batches go (the realtime stage).
    output: Output<Batch>,
    /// What a valid event is.
    rules: EventRules,
    /// Who may call.
    clients: Clients,
    /// Draining refuses new requests.
    health: Health,
    /// Longest wait for room downstream plus the realtime write.
    request_timeout: Duration,
    /// `Retry-After` for 503.
    retry_after_s: u64,
    /// Largest body read.
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
    /// State sending accepted batches to `output`.
    pub fn new(output: Output<Batch>, settings: IngestSettings, clients: Clients, health: Health) -> Self {
        let IngestSettings { rules, request_timeout, retry_after_s, max_body_bytes } = settings;
        IngestState { inner: Arc::new(Inner { output, rules, clients, health, request_timeout, retry_after_s, max_body_bytes }) }
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

/// The ingest routes (without the admin ones).
pub fn ingest_router(state: IngestState) -> Router {
    Router::new()
        .route("/v1/events", post(post_events))
        .layer(middleware::from_fn_with_state(state.clone(), refuse_while_draining))
        .layer(middleware::from_fn(count_requests))
        .with_state(state)
}

async fn refuse_while_draining(State(state): State<IngestState>, request: Request, next: Next) -> Response {
    if state.inner.health.is_draining() {
        return axum::response::IntoResponse::into_response(ApiError::Unavailable {
            code: "draining",
            message: "this instance is shutting down; retry on another".to_owned(),
            retry_after_s: state.inner.retry_after_s,
        });
    }
    next.run(request).await
}

/// Counts requests by status and records their latency.
async fn count_requests(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("histflow_http_requests_total", "route" => "/v1/events", "status" => status).increment(1);
    metrics::histogram!("histflow_http_request_duration_seconds", "route" => "/v1/events").record(started.elapsed().as_secs_f64());
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
    let inner = &state.inner;
    let client = inner.clients.authenticate(&headers)?;
    if !is_json(&headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let bytes = read_body(body, inner.max_body_bytes).await?;
    let records = decode_events(&bytes, &inner.rules, model::now_ms()).map_err(ApiError::BadRequest)?;
    if let Some(client) = &client {
        client.charge(records.len())?;
    }

    let unavailable = |code: &'static str, message: String| ApiError::Unavailable { code, message, retry_after_s: inner.retry_after_s };
    let events = records.len();
    let (ack, answer) = Ack::new();
    let batch = Batch { ack: Some(ack), ..Batch::of(records.into_iter().map(Op::Upsert).collect()) };
    let written = tokio::time::timeout(inner.request_timeout, async {
        inner.output.send(batch).await.map_err(|error| match error {
            SendError::Full { .. } => unavailable("overloaded", "the pipeline is full; retry shortly".to_owned()),
            SendError::Closed { .. } => unavailable("stopping", "the pipeline is stopping".to_owned()),
        })?;
        answer.await.map_err(|_| unavailable("not_written", "the events were not written; retry".to_owned()))
    })
    .await
    .map_err(|_| {
        unavailable(
            "timeout",
            format!("no answer within {} ms; the events may or may not be recorded, retrying is safe", inner.request_timeout.as_millis()),
        )
    })??;
    match written {
        Ok(results) if results.len() == events => Ok(Json(EventsAnswer { results: results.into_iter().map(Into::into).collect() })),
        Ok(results) => {
            tracing::error!(expected = events, got = results.len(), "realtime answered with the wrong number of results");
            Err(unavailable("internal", "the write answered inconsistently; retry".to_owned()))
        }
        Err(reason) => {
            tracing::warn!(%reason, events, "realtime write failed; answering 503");
            Err(unavailable("write_failed", "the realtime store did not take the events; retry".to_owned()))
        }
    }
}

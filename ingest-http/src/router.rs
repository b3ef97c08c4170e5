//! The API router: `POST /v1/events`, answered only after the realtime
//! write of its own events, and the read-and-mutation routes
//! (`read_routes`), behind the drain check and the request metrics. A
//! function of its state, so tests drive it with `oneshot` and no socket.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::post;
use axum::{Json, Router};

use crate::error::ApiError;
use crate::event::decode_events;
use crate::events::HttpRequest;
use crate::state::{authorization, IngestState};
use crate::wire::EventsAnswer;
use pipeline::topology::Scope;

/// The API routes (without the admin ones): events, history, progress,
/// deletes, clear and the recording switch.
pub fn ingest_router(state: IngestState) -> Router {
    Router::new()
        .route("/v1/events", post(post_events))
        .merge(crate::read_routes::read_router())
        // Every answer is the JSON error shape, unknown routes included.
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
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
    let method = method_label(request.method());
    let response = next.run(request).await;
    HttpRequest { route, method, status: response.status().as_u16(), took: started.elapsed() }.emit();
    response
}

/// A request's method as a metric label: one of a fixed set, so made-up
/// methods cannot create a metric series each.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
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
    let client = api.admit(authorization(&headers), Scope::Write)?;
    if !is_json(&headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    // A client that stops sending mid-body is not waited for: it would hold
    // a connection, and the drain, for as long as it likes.
    let config = api.config();
    let body_timeout = config.settings.request_timeout;
    let bytes = tokio::time::timeout(body_timeout, read_body(body, config.max_body_bytes)).await.map_err(|_| {
        ApiError::BodyTimeout(format!("the body did not arrive within {} ms; nothing was recorded", body_timeout.as_millis()))
    })??;
    let records = decode_events(&bytes, &config.settings.rules, model::now_ms()).map_err(ApiError::BadRequest)?;
    let results = api.add_events(client.as_ref(), records).await?;
    Ok(Json(EventsAnswer { results: results.into_iter().map(Into::into).collect() }))
}

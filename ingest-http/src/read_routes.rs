//! The read-and-mutation routes over HTTP:
//! - `GET /v1/users/{uid}/history?business=&limit=20&cursor=`
//! - `GET /v1/users/{uid}/progress?items=archive:1,pgc:7`
//! - `DELETE /v1/users/{uid}/history/{business}/{oid}` and
//!   `DELETE /v1/users/{uid}/history?business=pgc,comic` (clear; without
//!   `business`, every business)
//! - `PUT` and `GET /v1/users/{uid}/recording`
//!
//! Same auth, rate limits and errors as ingest; every request costs one
//! unit of the caller's rate limit, and a history page that must read the
//! user's HBase row [`crate::api::HBASE_PAGE_UNITS`] more.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::api::{params, HistoryApi};
use crate::auth::Client;
use crate::error::ApiError;
use crate::state::{authorization, IngestState};
use crate::wire::RecordBody;

/// `GET /history` answer.
#[derive(Debug, Serialize)]
pub struct HistoryAnswer {
    /// Newest first.
    pub items: Vec<RecordBody>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /progress` answer.
#[derive(Debug, Serialize)]
pub struct ProgressAnswer {
    /// Item key -> its record, or null.
    pub items: BTreeMap<String, Option<RecordBody>>,
}

/// `PUT`/`GET /recording` body and answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingBody {
    /// Whether recording is paused.
    pub paused: bool,
}

#[derive(Debug, Deserialize)]
struct HistoryParams {
    business: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ClearParams {
    business: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ProgressParams {
    items: Option<String>,
}

/// The routes, for [`crate::router::ingest_router`] to merge.
pub fn read_router() -> Router<IngestState> {
    Router::new()
        .route("/v1/users/{uid}/history", get(get_history).delete(clear_history))
        .route("/v1/users/{uid}/history/{business}/{oid}", delete(delete_item))
        .route("/v1/users/{uid}/progress", get(get_progress))
        .route("/v1/users/{uid}/recording", get(get_recording).put(put_recording))
}

/// Authenticates the caller and charges one request; answers the caller.
fn admit(api: &HistoryApi, headers: &HeaderMap) -> Result<Option<Arc<Client>>, ApiError> {
    let client = api.authenticate(authorization(headers))?;
    HistoryApi::charge(client.as_ref(), 1)?;
    Ok(client)
}

/// A query string that does not parse.
fn bad_query(rejection: axum::extract::rejection::QueryRejection) -> ApiError {
    ApiError::InvalidParameter { code: "invalid_query", message: rejection.body_text() }
}

async fn get_history(
    State(state): State<IngestState>,
    headers: HeaderMap,
    Path(uid): Path<String>,
    query: Result<Query<HistoryParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<HistoryAnswer>, ApiError> {
    let api = &state.api;
    let client = admit(api, &headers)?;
    let uid = params::uid(&uid)?;
    let Query(query) = query.map_err(bad_query)?;
    let query = params::page(query.business.as_deref(), query.limit.as_deref(), query.cursor.as_deref(), &api.rules().businesses)?;
    let page = api.history(uid, query, client.as_ref()).await?;
    Ok(Json(HistoryAnswer {
        items: page.items.into_iter().map(RecordBody::from).collect(),
        next_cursor: page.next.map(|cursor| cursor.encode()),
    }))
}

async fn get_progress(
    State(state): State<IngestState>,
    headers: HeaderMap,
    Path(uid): Path<String>,
    query: Result<Query<ProgressParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ProgressAnswer>, ApiError> {
    let api = &state.api;
    admit(api, &headers)?;
    let uid = params::uid(&uid)?;
    let Query(query) = query.map_err(bad_query)?;
    let items = params::items(query.items.as_deref().unwrap_or_default().split(','), &api.rules().businesses)?;
    let records = api.progress(uid, items.clone()).await?;
    Ok(Json(ProgressAnswer { items: items.into_iter().zip(records).map(|(item, record)| (item, record.map(RecordBody::from))).collect() }))
}

async fn delete_item(
    State(state): State<IngestState>,
    headers: HeaderMap,
    Path((uid, business, oid)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let api = &state.api;
    admit(api, &headers)?;
    let uid = params::uid(&uid)?;
    let item = params::item(&format!("{business}:{oid}"), &api.rules().businesses)?;
    api.delete(uid, vec![item]).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn clear_history(
    State(state): State<IngestState>,
    headers: HeaderMap,
    Path(uid): Path<String>,
    Query(query): Query<ClearParams>,
) -> Result<StatusCode, ApiError> {
    let api = &state.api;
    admit(api, &headers)?;
    let uid = params::uid(&uid)?;
    let businesses = query.business.map(|names| params::clear_businesses(&names, &api.rules().businesses)).transpose()?;
    api.clear(uid, businesses).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_recording(
    State(state): State<IngestState>,
    headers: HeaderMap,
    Path(uid): Path<String>,
) -> Result<Json<RecordingBody>, ApiError> {
    let api = &state.api;
    admit(api, &headers)?;
    let paused = api.paused(params::uid(&uid)?).await?;
    Ok(Json(RecordingBody { paused }))
}

/// Most bytes of a `PUT /recording` body (`{"paused": false}` is 17).
const RECORDING_BODY_BYTES: usize = 256;

async fn put_recording(
    State(state): State<IngestState>,
    headers: HeaderMap,
    Path(uid): Path<String>,
    body: axum::body::Body,
) -> Result<Json<RecordingBody>, ApiError> {
    let api = &state.api;
    // The token first: nobody unauthenticated makes the server read a body.
    admit(api, &headers)?;
    let uid = params::uid(&uid)?;
    let body = axum::body::to_bytes(body, RECORDING_BODY_BYTES)
        .await
        .map_err(|error| ApiError::TooLarge(format!("a recording switch is at most {RECORDING_BODY_BYTES} bytes: {error}")))?;
    let wanted: RecordingBody = serde_json::from_slice(&body).map_err(|error| ApiError::InvalidParameter {
        code: "invalid_body",
        message: format!("the body must be {{\"paused\": true|false}}: {error}"),
    })?;
    api.set_paused(uid, wanted.paused).await?;
    Ok(Json(wanted))
}

//! The read-and-mutation routes over HTTP:
//! - `GET /v1/users/{uid}/history?business=&limit=20&cursor=`
//! - `GET /v1/users/{uid}/progress?items=archive:1,pgc:7`
//! - `DELETE /v1/users/{uid}/history/{business}/{oid}` and
//!   `DELETE /v1/users/{uid}/history?business=pgc,comic` (clear those
//!   businesses) or `?all=true` (clear everything; a clear naming neither
//!   is refused)
//! - `PUT` and `GET /v1/users/{uid}/recording`
//!
//! Query strings are read strictly ([`crate::query`]): a parameter a route
//! does not take is refused, so a misspelt filter never widens a request.
//! Same auth, rate limits and errors as ingest; every request costs one
//! unit of the caller's rate limit, and a history page that must read the
//! user's HBase row [`crate::api::HBASE_PAGE_UNITS`] more.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::api::HistoryApi;
use crate::auth::Client;
use crate::error::ApiError;
use crate::params;
use crate::query::QueryParams;
use crate::state::{authorization, IngestState};
use crate::wire::RecordBody;
use pipeline::topology::Scope;

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

/// The routes, for [`crate::router::ingest_router`] to merge.
pub fn read_router() -> Router<IngestState> {
    Router::new()
        .route("/v1/users/{uid}/history", get(get_history).delete(clear_history))
        .route("/v1/users/{uid}/history/{business}/{oid}", delete(delete_item))
        .route("/v1/users/{uid}/progress", get(get_progress))
        .route("/v1/users/{uid}/recording", get(get_recording).put(put_recording))
}

/// Authenticates the caller, checks it has `scope` and charges one
/// request; answers the caller.
fn admit(api: &HistoryApi, headers: &HeaderMap, scope: Scope) -> Result<Option<Arc<Client>>, ApiError> {
    let client = api.admit(authorization(headers), scope)?;
    HistoryApi::charge(client.as_ref(), 1)?;
    Ok(client)
}

/// The request's query string, taking only `allowed`.
fn query(uri: &Uri, allowed: &[&'static str]) -> Result<QueryParams, ApiError> {
    QueryParams::parse(uri.query(), allowed)
}

async fn get_history(
    State(state): State<IngestState>,
    headers: HeaderMap,
    uri: Uri,
    Path(uid): Path<String>,
) -> Result<Json<HistoryAnswer>, ApiError> {
    let api = &state.api;
    let client = admit(api, &headers, Scope::Read)?;
    let uid = params::uid(&uid)?;
    let query = query(&uri, &["business", "limit", "cursor"])?;
    let businesses = &api.rules().businesses;
    let filter = query.get("business").map(|names| params::business_filter(names, businesses)).transpose()?;
    let page = params::page(filter, query.get("limit"), query.get("cursor"))?;
    let page = api.history(uid, page, client.as_ref()).await?;
    Ok(Json(HistoryAnswer {
        items: page.items.into_iter().map(RecordBody::from).collect(),
        next_cursor: page.next.map(|cursor| cursor.encode()),
    }))
}

async fn get_progress(
    State(state): State<IngestState>,
    headers: HeaderMap,
    uri: Uri,
    Path(uid): Path<String>,
) -> Result<Json<ProgressAnswer>, ApiError> {
    let api = &state.api;
    let client = admit(api, &headers, Scope::Read)?;
    let uid = params::uid(&uid)?;
    let query = query(&uri, &["items"])?;
    let items = params::items(query.get("items").unwrap_or_default().split(','), &api.rules().businesses)?;
    let records = api.progress(uid, items.clone(), client.as_ref()).await?;
    Ok(Json(ProgressAnswer { items: items.into_iter().zip(records).map(|(item, record)| (item, record.map(RecordBody::from))).collect() }))
}

async fn delete_item(
    State(state): State<IngestState>,
    headers: HeaderMap,
    uri: Uri,
    Path((uid, business, oid)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let api = &state.api;
    let client = admit(api, &headers, Scope::Mutate)?;
    let uid = params::uid(&uid)?;
    query(&uri, &[])?;
    let item = params::item(&format!("{business}:{oid}"), &api.rules().businesses)?;
    api.delete(uid, vec![item], client.as_ref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn clear_history(
    State(state): State<IngestState>,
    headers: HeaderMap,
    uri: Uri,
    Path(uid): Path<String>,
) -> Result<StatusCode, ApiError> {
    let api = &state.api;
    let client = admit(api, &headers, Scope::Mutate)?;
    let uid = params::uid(&uid)?;
    let query = query(&uri, &["business", "all"])?;
    let all = query.get("all").map(|text| params::switch("all", text)).transpose()?.unwrap_or(false);
    let scope = params::clear_scope(query.get("business"), all, &api.rules().businesses)?;
    api.clear(uid, scope, client.as_ref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_recording(
    State(state): State<IngestState>,
    headers: HeaderMap,
    uri: Uri,
    Path(uid): Path<String>,
) -> Result<Json<RecordingBody>, ApiError> {
    let api = &state.api;
    admit(api, &headers, Scope::Read)?;
    query(&uri, &[])?;
    let paused = api.paused(params::uid(&uid)?).await?;
    Ok(Json(RecordingBody { paused }))
}

/// Most bytes of a `PUT /recording` body (`{"paused": false}` is 17).
const RECORDING_BODY_BYTES: usize = 256;

async fn put_recording(
    State(state): State<IngestState>,
    headers: HeaderMap,
    uri: Uri,
    Path(uid): Path<String>,
    body: axum::body::Body,
) -> Result<Json<RecordingBody>, ApiError> {
    let api = &state.api;
    // The token first: nobody unauthenticated makes the server read a body.
    let client = admit(api, &headers, Scope::Mutate)?;
    let uid = params::uid(&uid)?;
    query(&uri, &[])?;
    // A client that stops sending mid-body is not waited for (as for events).
    let body_timeout = api.config().settings.request_timeout;
    let body = tokio::time::timeout(body_timeout, axum::body::to_bytes(body, RECORDING_BODY_BYTES))
        .await
        .map_err(|_| ApiError::BodyTimeout(format!("the body did not arrive within {} ms; nothing was changed", body_timeout.as_millis())))?
        .map_err(|error| ApiError::TooLarge(format!("a recording switch is at most {RECORDING_BODY_BYTES} bytes: {error}")))?;
    let wanted: RecordingBody = serde_json::from_slice(&body).map_err(|error| ApiError::InvalidParameter {
        code: "invalid_body",
        message: format!("the body must be {{\"paused\": true|false}}: {error}"),
    })?;
    api.set_paused(uid, wanted.paused, client.as_ref()).await?;
    Ok(Json(wanted))
}

//! `POST /admin/reload` and `GET /admin/topology`: reloading the topology
//! file and showing what runs. The process supplies the work behind them
//! ([`TopologyAdmin`]); the admin router guards both (a client with the
//! `admin` scope, when the running topology has `[[auth.clients]]`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::future::BoxFuture;

use crate::error::ApiError;
use crate::query::QueryParams;
use crate::text::quoted;

/// How a reload ended, as the answer's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    /// The new file is running.
    Applied,
    /// The file is the one running; nothing to do.
    Unchanged,
    /// The file was refused; the running topology is untouched.
    Rejected,
    /// The change failed part-way (a stage failed handing over); the
    /// process is stopping.
    Failed,
}

impl ReloadResult {
    /// The metric label and JSON value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Applied => "applied",
            ReloadResult::Unchanged => "unchanged",
            ReloadResult::Rejected => "rejected",
            ReloadResult::Failed => "failed",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            ReloadResult::Applied | ReloadResult::Unchanged => StatusCode::OK,
            ReloadResult::Rejected => StatusCode::UNPROCESSABLE_ENTITY,
            ReloadResult::Failed => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// What the process does behind the routes.
pub trait TopologyAdmin: Send + Sync {
    /// Reloads the topology file (every trigger takes this path).
    fn reload(&self, trigger: &'static str) -> BoxFuture<'_, (ReloadResult, serde_json::Value)>;
    /// What runs now, the file's hash and version, the last reload.
    fn status(&self) -> serde_json::Value;
    /// The running topology drawn as `format` (`dot` or `mermaid`).
    fn graph(&self, format: &str) -> Option<String>;
    /// Whether `authorization` may use the operations endpoints: a client
    /// with the `admin` scope (anyone when the topology has no clients).
    fn authorize(&self, authorization: Option<&str>) -> Result<(), crate::error::ApiError>;
}

/// The routes over `admin`.
pub fn topology_router(admin: Arc<dyn TopologyAdmin>) -> Router {
    Router::new().route("/admin/reload", post(reload)).route("/admin/topology", get(topology)).with_state(admin)
}

async fn reload(State(admin): State<Arc<dyn TopologyAdmin>>) -> Response {
    let (result, answer) = admin.reload("admin").await;
    (result.status(), axum::Json(answer)).into_response()
}

async fn topology(State(admin): State<Arc<dyn TopologyAdmin>>, uri: Uri) -> Response {
    let query = match QueryParams::parse(uri.query(), &["format"]) {
        Ok(query) => query,
        Err(error) => return error.into_response(),
    };
    match query.get("format") {
        None | Some("json") => axum::Json(admin.status()).into_response(),
        Some(format) => match admin.graph(format) {
            Some(text) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response(),
            None => ApiError::InvalidParameter {
                code: "invalid_format",
                message: format!("`format` {} is not one of json, dot, mermaid", quoted(format)),
            }
            .into_response(),
        },
    }
}

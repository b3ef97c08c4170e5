//! `/metrics` (Prometheus text), `/healthz` (liveness) and `/readyz`
//! (readiness), as a router the ingest server merges, or served alone on
//! the admin address when no ingest stage runs in the process. On the API
//! listener, `/metrics` answers only a caller with a client's token when
//! `[[auth.clients]]` exist.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use pipeline::health::{Health, Readiness};

/// What the admin endpoints read.
#[derive(Clone)]
pub struct AdminState {
    /// Liveness and readiness flags.
    pub health: Health,
    /// Renders the process's metrics; `None` when no recorder is installed.
    pub metrics: Option<PrometheusHandle>,
}

/// Installs the process-wide Prometheus recorder and keeps its histograms
/// trimmed from a background task. Call once, inside a tokio runtime.
pub fn install_prometheus() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let handle = PrometheusBuilder::new().install_recorder()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// The admin routes.
pub fn admin_router(state: AdminState) -> Router {
    Router::new().route("/metrics", get(metrics)).route("/healthz", get(healthz)).route("/readyz", get(readyz)).with_state(state)
}

/// The admin routes as the API listener serves them: `/metrics` (which
/// names every stage, client and error) only to a caller with a client's
/// token when `[[auth.clients]]` exist; `/healthz` and `/readyz` stay open
/// for probes (they answer one word). A process without an ingest stage
/// serves all three openly on `admin_listen` ([`admin_router`]).
pub fn api_admin_router(state: AdminState, api: Arc<crate::api::HistoryApi>) -> Router {
    let guarded = move |State(state): State<AdminState>, headers: HeaderMap| {
        let api = api.clone();
        async move {
            match api.authenticate(crate::state::authorization(&headers)) {
                Ok(_) => metrics(State(state)).await,
                Err(error) => error.into_response(),
            }
        }
    };
    Router::new().route("/metrics", get(guarded)).route("/healthz", get(healthz)).route("/readyz", get(readyz)).with_state(state)
}

async fn metrics(State(state): State<AdminState>) -> Response {
    match &state.metrics {
        Some(handle) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no metrics recorder installed\n").into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AdminState>) -> Response {
    match state.health.readiness() {
        Readiness::Ready => (StatusCode::OK, "ready\n").into_response(),
        Readiness::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response(),
        Readiness::Waiting(dependency) => (StatusCode::SERVICE_UNAVAILABLE, format!("waiting for {dependency}\n")).into_response(),
        Readiness::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response(),
    }
}

/// Serves the admin routes on `listener` until `stop` fires.
pub async fn serve_admin(listener: tokio::net::TcpListener, state: AdminState, stop: CancellationToken) -> std::io::Result<()> {
    let local: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(addr = ?local, "admin endpoints listening (/metrics, /healthz, /readyz)");
    axum::serve(listener, admin_router(state)).with_graceful_shutdown(async move { stop.cancelled().await }).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get_status(router: Router, path: &str) -> (StatusCode, String) {
        let response = router.oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn readiness_follows_start_and_drain() {
        let health = Health::default();
        let router = admin_router(AdminState { health: health.clone(), metrics: None });
        assert_eq!(get_status(router.clone(), "/readyz").await, (StatusCode::SERVICE_UNAVAILABLE, "starting\n".into()));
        health.set_started();
        assert_eq!(get_status(router.clone(), "/readyz").await, (StatusCode::OK, "ready\n".into()));
        let redis = health.dependency("redis");
        assert_eq!(get_status(router.clone(), "/readyz").await, (StatusCode::SERVICE_UNAVAILABLE, "waiting for redis\n".into()));
        redis.set_up(true);
        assert_eq!(get_status(router.clone(), "/readyz").await, (StatusCode::OK, "ready\n".into()));
        health.start_draining();
        assert_eq!(get_status(router.clone(), "/readyz").await, (StatusCode::SERVICE_UNAVAILABLE, "draining\n".into()));
        assert_eq!(get_status(router, "/healthz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn the_api_listener_shows_metrics_only_to_a_client() {
        use pipeline::topology::{Auth, AuthClient};
        let health = Health::default();
        let (output, _input) = pipeline::edge::channel("ingest", "realtime", 16, pipeline::WhenFull::Reject);
        let settings = crate::state::IngestSettings {
            rules: crate::event::EventRules { businesses: Default::default(), max_events: 10, max_age_ms: Default::default() },
            request_timeout: Duration::from_secs(1),
            retry_after_s: 1,
            max_body_bytes: 1024,
        };
        let client = AuthClient { name: "ops".into(), token: "ops-token-0123456789".into(), rate_limit: None };
        let clients = crate::auth::Clients::new(&Auth { clients: vec![client], allow_unauthenticated: false });
        let state = crate::state::IngestState::new(output, settings, clients, health.clone());
        let recorder = PrometheusBuilder::new().build_recorder();
        let router = api_admin_router(AdminState { health, metrics: Some(recorder.handle()) }, state.api());
        assert_eq!(get_status(router.clone(), "/metrics").await.0, StatusCode::UNAUTHORIZED);
        let with_token = Request::get("/metrics").header(header::AUTHORIZATION, "Bearer ops-token-0123456789").body(Body::empty()).unwrap();
        assert_eq!(router.clone().oneshot(with_token).await.unwrap().status(), StatusCode::OK);
        assert_eq!(get_status(router, "/healthz").await.0, StatusCode::OK, "probes need no token");
    }
}

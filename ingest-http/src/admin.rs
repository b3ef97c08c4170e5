//! The operations endpoints: `/metrics` (Prometheus text), `/healthz`
//! (liveness), `/readyz` (readiness), `/admin/stats` (the live figures as
//! JSON) and `/ui` (the live page), as a router the ingest server merges,
//! or served alone on the admin address when no ingest stage runs in the
//! process. On the API listener, `/metrics`, `/admin/stats` and `/ui`
//! answer only a caller with a client's token when `[[auth.clients]]`
//! exist: as a bearer token, or (for a browser) as the password of HTTP
//! Basic authentication.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use pipeline::health::{Health, Readiness};

use crate::stats::StatsBoard;

/// What the admin endpoints read.
#[derive(Clone)]
pub struct AdminState {
    /// Liveness and readiness flags.
    pub health: Health,
    /// Renders the process's metrics; `None` when no recorder is installed.
    pub metrics: Option<PrometheusHandle>,
    /// The live figures of the running topology; `None` without metrics.
    pub board: Option<Arc<StatsBoard>>,
    /// Reloading and showing the topology; `None`: those routes are absent.
    pub topology: Option<Arc<dyn crate::topology_routes::TopologyAdmin>>,
}

impl AdminState {
    /// `router` with the topology routes, when the process has them.
    fn with_topology_routes(&self, router: Router) -> Router {
        match &self.topology {
            Some(topology) => router.merge(crate::topology_routes::topology_router(topology.clone())),
            None => router,
        }
    }
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
    let topology = state.clone();
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/admin/stats", get(stats))
        .route("/ui", get(crate::ui::page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state);
    topology.with_topology_routes(router)
}

/// An operations endpoint behind the API's tokens.
#[derive(Clone, Copy)]
enum Guarded {
    Metrics,
    Stats,
    Page,
}

/// The admin routes as the API listener serves them: `/metrics`,
/// `/admin/stats` and `/ui` (which name every stage, client and error)
/// only to a caller with a client's token when `[[auth.clients]]` exist;
/// `/healthz` and `/readyz` stay open for probes (they answer one word). A
/// process without an ingest stage serves them all openly on
/// `admin_listen` ([`admin_router`]).
pub fn api_admin_router(state: AdminState, api: Arc<crate::api::HistoryApi>) -> Router {
    let guarded = move |endpoint: Guarded| {
        let api = api.clone();
        move |State(state): State<AdminState>, headers: HeaderMap| {
            let api = api.clone();
            async move {
                let authorization = operator_authorization(&headers);
                match (api.authenticate(authorization.as_deref()), endpoint) {
                    (Ok(_), Guarded::Metrics) => metrics(State(state)).await,
                    (Ok(_), Guarded::Stats) => stats(State(state)).await,
                    (Ok(_), Guarded::Page) => crate::ui::page().await,
                    (Err(error), Guarded::Page) => {
                        // Let a browser ask for the token (as the password).
                        let mut response = error.into_response();
                        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(BASIC_CHALLENGE));
                        response
                    }
                    (Err(error), _) => error.into_response(),
                }
            }
        }
    };
    let topology = state.clone();
    let router = Router::new()
        .route("/metrics", get(guarded(Guarded::Metrics)))
        .route("/admin/stats", get(guarded(Guarded::Stats)))
        .route("/ui", get(guarded(Guarded::Page)))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state);
    topology.with_topology_routes(router)
}

/// What a browser is asked for when `/ui` needs a token.
const BASIC_CHALLENGE: &str = "Basic realm=\"histflow operations (password: a client's token)\", charset=\"UTF-8\"";

/// The caller's `Authorization`, with HTTP Basic credentials (any user
/// name, a client's token as the password) read as that bearer token.
fn operator_authorization(headers: &HeaderMap) -> Option<String> {
    let value = crate::state::authorization(headers)?;
    let Some(encoded) = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic ")) else {
        return Some(value.to_owned());
    };
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let credentials = String::from_utf8(decoded).ok()?;
    let (_user, token) = credentials.split_once(':')?;
    Some(format!("Bearer {token}"))
}

async fn stats(State(state): State<AdminState>) -> Response {
    match &state.board {
        Some(board) => axum::Json(board.snapshot()).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no metrics recorder installed\n").into_response(),
    }
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
    tracing::info!(addr = ?local, "admin endpoints listening (/metrics, /admin/stats, /ui, /healthz, /readyz)");
    axum::serve(listener, admin_router(state)).with_graceful_shutdown(async move { stop.cancelled().await }).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use pipeline::view::TopologyView;
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
        let router = admin_router(AdminState { health: health.clone(), metrics: None, board: None, topology: None });
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
        let board = Arc::new(StatsBoard::new(TopologyView::default(), recorder.handle(), health.clone()));
        let router =
            api_admin_router(AdminState { health, metrics: Some(recorder.handle()), board: Some(board), topology: None }, state.api());
        for path in ["/metrics", "/admin/stats", "/ui"] {
            assert_eq!(get_status(router.clone(), path).await.0, StatusCode::UNAUTHORIZED, "{path} without a token");
            let with_token = Request::get(path).header(header::AUTHORIZATION, "Bearer ops-token-0123456789").body(Body::empty()).unwrap();
            assert_eq!(router.clone().oneshot(with_token).await.unwrap().status(), StatusCode::OK, "{path} with a bearer token");
            let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("anyone:ops-token-0123456789"));
            let with_basic = Request::get(path).header(header::AUTHORIZATION, basic).body(Body::empty()).unwrap();
            assert_eq!(
                router.clone().oneshot(with_basic).await.unwrap().status(),
                StatusCode::OK,
                "{path} with the token as a Basic password"
            );
            let wrong = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("ops-token-0123456789:wrong"));
            let with_wrong = Request::get(path).header(header::AUTHORIZATION, wrong).body(Body::empty()).unwrap();
            assert_eq!(
                router.clone().oneshot(with_wrong).await.unwrap().status(),
                StatusCode::UNAUTHORIZED,
                "{path} with a wrong password"
            );
        }
        let challenge = router.clone().oneshot(Request::get("/ui").body(Body::empty()).unwrap()).await.unwrap();
        assert!(challenge.headers()[header::WWW_AUTHENTICATE].to_str().unwrap().starts_with("Basic "), "a browser is asked for the token");
        assert_eq!(get_status(router, "/healthz").await.0, StatusCode::OK, "probes need no token");
    }
}

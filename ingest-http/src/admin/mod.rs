//! The operations endpoints: `/metrics` (Prometheus text), `/healthz`
//! (liveness), `/readyz` (readiness), `/admin/stats` (the live figures as
//! JSON), `/ui` (the live page) and the topology routes (`POST
//! /admin/reload`, `GET /admin/topology`), as one router the ingest server
//! merges, or served alone on `admin_listen` when no ingest stage runs in
//! the process (the job role). On either listener every route but the two
//! probes answers only a client with the `admin` scope when the topology
//! has `[[auth.clients]]`: as a bearer token, or (for a browser) as the
//! password of HTTP Basic authentication. Without clients they are open,
//! which validation allows only on loopback listeners.
//!
//! - `stats`: the live figures behind `/admin/stats`.
//! - `topology`: `POST /admin/reload` and `GET /admin/topology`, through
//!   what the process gives them (`TopologyAdmin`).
//! - `page`: the live topology page.

pub mod page;
pub mod stats;
pub mod topology;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use pipeline::health::{Health, Readiness};

use crate::admin::stats::StatsBoard;
use crate::error::ApiError;

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
    pub topology: Option<Arc<dyn crate::admin::topology::TopologyAdmin>>,
}

impl AdminState {
    /// `router` with the topology routes, when the process has them.
    fn with_topology_routes(&self, router: Router) -> Router {
        match &self.topology {
            Some(topology) => router.merge(crate::admin::topology::topology_router(topology.clone())),
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

impl AdminState {
    /// Whether `authorization` may use the guarded routes: a client with
    /// the `admin` scope, through the running topology's clients.
    fn admit(&self, authorization: Option<&str>) -> Result<(), ApiError> {
        match &self.topology {
            Some(topology) => topology.authorize(authorization),
            // No topology behind the routes (tests of the router alone).
            None => Ok(()),
        }
    }
}

/// The admin routes, for the ingest server to merge or for the admin
/// listener to serve.
pub fn admin_router(state: AdminState) -> Router {
    let guarded =
        Router::new().route("/metrics", get(metrics)).route("/admin/stats", get(stats)).route("/ui", get(crate::admin::page::page));
    let guarded = state
        .with_topology_routes(guarded.with_state(state.clone()))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin));
    let probes = Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).with_state(state);
    guarded.merge(probes)
}

/// Lets a request through only for a caller [`AdminState::admit`] takes;
/// `/ui` asks a browser for the token as a password.
async fn require_admin(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let authorization = operator_authorization(request.headers());
    match state.admit(authorization.as_deref()) {
        Ok(()) => next.run(request).await,
        Err(error) => {
            let challenge = matches!(error, ApiError::Unauthorized) && request.uri().path() == "/ui";
            let mut response = error.into_response();
            if challenge {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(BASIC_CHALLENGE));
            }
            response
        }
    }
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

    /// A topology backend whose clients are `clients`; it reloads nothing.
    struct Clients(crate::auth::Clients);

    impl crate::admin::topology::TopologyAdmin for Clients {
        fn reload(
            &self,
            _trigger: &'static str,
        ) -> futures::future::BoxFuture<'_, (crate::admin::topology::ReloadResult, serde_json::Value)> {
            Box::pin(async { (crate::admin::topology::ReloadResult::Unchanged, serde_json::json!({"result": "unchanged"})) })
        }
        fn status(&self) -> serde_json::Value {
            serde_json::json!({})
        }
        fn graph(&self, _format: &str) -> Option<String> {
            None
        }
        fn authorize(&self, authorization: Option<&str>) -> Result<(), ApiError> {
            self.0.admit(authorization, pipeline::topology::Scope::Admin).map(drop)
        }
    }

    #[tokio::test]
    async fn the_operations_endpoints_answer_only_an_admin_client() {
        use pipeline::topology::{Auth, AuthClient, Scope};
        let health = Health::default();
        let client = |name: &str, token: &str, scopes: Option<Vec<Scope>>| AuthClient {
            name: name.into(),
            token: token.into(),
            rate_limit: None,
            scopes,
            businesses: None,
        };
        let clients = crate::auth::Clients::new(&Auth {
            clients: vec![client("ops", "ops-token-0123456789", Some(vec![Scope::Admin])), client("app", "app-token-0123456789", None)],
            allow_unauthenticated: false,
        });
        let recorder = PrometheusBuilder::new().build_recorder();
        let board = Arc::new(StatsBoard::new(TopologyView::default(), recorder.handle(), health.clone()));
        let topology: Arc<dyn crate::admin::topology::TopologyAdmin> = Arc::new(Clients(clients));
        let router = admin_router(AdminState { health, metrics: Some(recorder.handle()), board: Some(board), topology: Some(topology) });
        let call = |method: &str, path: &str, authorization: Option<String>| {
            let mut request = Request::builder().method(method).uri(path);
            if let Some(value) = authorization {
                request = request.header(header::AUTHORIZATION, value);
            }
            let router = router.clone();
            async move { router.oneshot(request.body(Body::empty()).unwrap()).await.unwrap().status() }
        };
        let basic = |credentials: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(credentials));
        for (method, path) in
            [("GET", "/metrics"), ("GET", "/admin/stats"), ("GET", "/ui"), ("GET", "/admin/topology"), ("POST", "/admin/reload")]
        {
            assert_eq!(call(method, path, None).await, StatusCode::UNAUTHORIZED, "{path} without a token");
            assert_eq!(call(method, path, Some("Bearer ops-token-0123456789".into())).await, StatusCode::OK, "{path} for the admin");
            assert_eq!(call(method, path, Some(basic("anyone:ops-token-0123456789"))).await, StatusCode::OK, "{path}, Basic password");
            assert_eq!(
                call(method, path, Some(basic("ops-token-0123456789:wrong"))).await,
                StatusCode::UNAUTHORIZED,
                "{path}, wrong password"
            );
            assert_eq!(
                call(method, path, Some("Bearer app-token-0123456789".into())).await,
                StatusCode::FORBIDDEN,
                "{path} for a client without the admin scope"
            );
        }
        // A format the page cannot draw, or a misspelt parameter, gets a
        // JSON error naming it.
        for (path, code) in [("/admin/topology?format=svg", "invalid_format"), ("/admin/topology?fromat=dot", "unknown_parameter")] {
            let request = Request::get(path).header(header::AUTHORIZATION, "Bearer ops-token-0123456789").body(Body::empty()).unwrap();
            let answer = router.clone().oneshot(request).await.unwrap();
            assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{path}");
            let body: serde_json::Value = serde_json::from_slice(&answer.into_body().collect().await.unwrap().to_bytes()).unwrap();
            assert_eq!(body["error"]["code"], code, "{path}: {body}");
        }
        let challenge = router.clone().oneshot(Request::get("/ui").body(Body::empty()).unwrap()).await.unwrap();
        assert!(challenge.headers()[header::WWW_AUTHENTICATE].to_str().unwrap().starts_with("Basic "), "a browser is asked for the token");
        assert_eq!(get_status(router, "/healthz").await.0, StatusCode::OK, "probes need no token");
    }
}

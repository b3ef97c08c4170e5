//! histflow's HTTP edge: the `http_ingest` stage and the admin endpoints.
//!
//! # Layout
//! - `config`: the `http_ingest` stage's topology configuration.
//! - `event`: decoding and validating event bodies (pure; every bad event
//!   named with its index).
//! - `auth`: bearer-token clients and their rate limits.
//! - `error`: [`ApiError`], each variant a status, a code and a safe message.
//! - `router`: `POST /v1/events`, answered after the realtime write.
//! - `stage`: the `http_ingest` stage serving the routes.
//! - `health`: liveness and readiness, flipped to draining on stop.
//! - `admin`: `/metrics`, `/healthz`, `/readyz`, merged into the ingest
//!   server or served alone when no ingest runs in the process.

pub mod admin;
pub mod auth;
pub mod config;
pub mod error;
pub mod event;
pub mod health;
pub mod router;
pub mod stage;

pub use admin::{admin_router, install_prometheus, serve_admin, AdminState};
pub use config::HttpIngestConfig;
pub use error::ApiError;
pub use health::Health;
pub use stage::HttpIngestStage;

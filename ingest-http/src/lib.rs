//! histflow's HTTP edge: the `http_ingest` stage and the admin endpoints.
//!
//! # Layout
//! - `config`: the `http_ingest` stage's topology configuration.
//! - `event`: decoding and validating event bodies (pure; every bad event
//!   named with its index).
//! - `auth`: bearer-token clients and their rate limits.
//! - `error`: [`ApiError`], each variant a status, a code and a safe message.
//! - `api`: the API itself (auth, parameters, events and mutations into
//!   the pipeline, reads), shared by HTTP and gRPC.
//! - `reads`: the trait the stores implement for reads, and the cursor.
//! - `router`: `POST /v1/events`, answered after the realtime write.
//! - `read_routes`: history, progress, delete, clear and recording over
//!   HTTP.
//! - `grpc`: the same API as a tonic service (`histflow.api.v1.History`).
//! - `stage`: the `http_ingest` stage serving HTTP and gRPC.
//! - `health`: liveness and readiness, flipped to draining on stop.
//! - `admin`: `/metrics`, `/healthz`, `/readyz`, merged into the ingest
//!   server or served alone when no ingest runs in the process.

pub mod admin;
pub mod api;
pub mod auth;
pub mod config;
pub mod error;
pub mod event;
pub mod grpc;
pub mod health;
pub mod read_routes;
pub mod reads;
pub mod router;
pub mod stage;

pub use admin::{admin_router, install_prometheus, serve_admin, AdminState};
pub use config::HttpIngestConfig;
pub use error::ApiError;
pub use health::Health;
pub use stage::HttpIngestStage;

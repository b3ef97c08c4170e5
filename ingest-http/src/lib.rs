//! histflow's API edge: the `http_ingest` stage (HTTP and gRPC over one
//! [`api::HistoryApi`], reading through `history-read`) and the admin
//! endpoints.
//!
//! # Layout
//! - `config`: the `http_ingest` stage's topology configuration.
//! - `event`: decoding and validating event bodies (pure; every bad event
//!   named with its index).
//! - `auth`: bearer-token clients and their rate limits.
//! - `error`: [`ApiError`], each variant a status, a code and a safe message.
//! - `api`: the API itself (auth, events and mutations into the pipeline,
//!   reads), shared by HTTP and gRPC.
//! - `params`: one validator per parameter, shared by HTTP and gRPC
//!   (strict filters; a clear of everything only when asked for).
//! - `query`: query strings read strictly (unknown or repeated parameters
//!   refused).
//! - `text`: client input quoted in errors, bounded.
//! - `state`: what every route shares.
//! - `router`: `POST /v1/events`, answered after the realtime write, and
//!   the middleware every route passes.
//! - `read_routes`: history, progress, delete, clear and recording over
//!   HTTP.
//! - `grpc`: the same API as a tonic service (`histflow.api.v1.History`).
//! - `proto`: the types and stubs generated from the `.proto`.
//! - `grpc_status`: an API error as a gRPC status (with `retry-after`).
//! - `report_stream`: `ReportStream`, the long-lived report stream
//!   (authenticated once, answered in order, bounded, drained on a stop).
//! - `grpc_serve`: the gRPC listener, bounded (connections, streams per
//!   connection, a deadline per call, keep-alive).
//! - `wire`: records and results as JSON and gRPC carry them.
//! - `events`: what the HTTP edge counts.
//! - `serve`: the HTTP listener's connections, bounded (count, head and
//!   idle deadlines).
//! - `stage`: the `http_ingest` stage serving HTTP and gRPC.
//! - `admin`: the admin side, one module both listeners mount (the ingest
//!   server merges its router; the job role serves it alone on
//!   `admin_listen`): `/metrics`, `/healthz`, `/readyz`, `/admin/stats`
//!   (`admin::stats`), `/ui` (`admin::page`), and `POST /admin/reload`,
//!   `GET /admin/topology` (`admin::topology`).

pub mod admin;
pub mod api;
pub mod auth;
pub mod config;
pub mod error;
pub mod event;
mod events;
pub mod grpc;
pub mod grpc_serve;
mod grpc_status;
pub mod params;
pub mod proto;
pub mod query;
pub mod read_routes;
pub mod report_stream;
pub mod router;
pub mod serve;
pub mod stage;
pub mod state;
pub mod text;
pub mod wire;

pub use admin::stats::StatsBoard;
pub use admin::{admin_router, install_prometheus, serve_admin, AdminState};
pub use config::HttpIngestConfig;
pub use error::ApiError;
pub use events::figures;
pub use stage::{HttpIngestStage, Listeners};

//! histflow's HTTP edge.
//!
//! # Layout
//! - `config`: the `http_ingest` stage's topology configuration.
//! - `health`: liveness and readiness state, flipped to draining on stop.
//! - `admin`: `/metrics`, `/healthz`, `/readyz` as a router of their own,
//!   served by the ingest server or, when no ingest runs in the process, on
//!   the admin address.

pub mod admin;
pub mod config;
pub mod health;

pub use admin::{admin_router, install_prometheus, serve_admin, AdminState};
pub use config::HttpIngestConfig;
pub use health::Health;

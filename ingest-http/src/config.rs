//! Configuration of the `http_ingest` stage (`type = "http_ingest"`).

use std::net::SocketAddr;

use pipeline::problem::require_at_least;
use serde::Deserialize;

/// `[[stages]] type = "http_ingest"`: the HTTP source of events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpIngestConfig {
    /// Address to listen on, e.g. `"${HTTP_ADDR:-127.0.0.1:8080}"`.
    pub listen: String,
    /// Largest accepted request body; larger bodies get 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Most events in one `POST /v1/events`; more get 400.
    #[serde(default = "default_max_events_per_request")]
    pub max_events_per_request: usize,
    /// How long a request may wait (e.g. on a full `block` edge) before it
    /// is answered 503.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// `Retry-After` seconds sent with 429 and 503.
    #[serde(default = "default_retry_after_s")]
    pub retry_after_s: u32,
    /// Businesses this endpoint accepts; every registered one when absent.
    pub businesses: Option<Vec<String>>,
    /// Address of the internal gRPC service (the same API as HTTP), e.g.
    /// `"${GRPC_ADDR:-127.0.0.1:50051}"`; none: no gRPC.
    pub grpc_listen: Option<String>,
    /// History pages that run past what Redis holds read the rest from
    /// HBase (cache-aside). Off: Redis alone.
    #[serde(default = "default_true")]
    pub history_fallback: bool,
    /// Where progress look-ups go: `"redis"` (the default, Redis alone) or
    /// `"hbase"` (items Redis lacks are looked up in HBase).
    #[serde(default)]
    pub progress_fallback: ProgressFallback,
}

/// Where progress look-ups go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgressFallback {
    /// Redis only.
    #[default]
    Redis,
    /// Items Redis lacks are looked up in HBase.
    Hbase,
}

fn default_true() -> bool {
    true
}

fn default_max_body_bytes() -> usize {
    1024 * 1024
}
fn default_max_events_per_request() -> usize {
    1000
}
fn default_request_timeout_ms() -> u64 {
    5_000
}
fn default_retry_after_s() -> u32 {
    1
}

impl HttpIngestConfig {
    /// Stage-local problems, each naming its field.
    pub fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.listen.parse::<SocketAddr>().is_err() {
            problems.push(format!("`listen` = {:?} is not an address such as 127.0.0.1:8080", self.listen));
        }
        if let Some(grpc) = self.grpc_listen.as_ref().filter(|grpc| grpc.parse::<SocketAddr>().is_err()) {
            problems.push(format!("`grpc_listen` = {grpc:?} is not an address such as 127.0.0.1:50051"));
        }
        if self.grpc_listen.as_ref().is_some_and(|grpc| *grpc == self.listen) {
            problems.push("`grpc_listen` must differ from `listen`".to_owned());
        }
        require_at_least(&mut problems, "max_body_bytes", self.max_body_bytes as u64, 1);
        require_at_least(&mut problems, "max_events_per_request", self.max_events_per_request as u64, 1);
        require_at_least(&mut problems, "request_timeout_ms", self.request_timeout_ms, 1);
        problems
    }
}

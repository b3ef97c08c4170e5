//! Configuration of the `http_ingest` stage (`type = "http_ingest"`).

use std::net::SocketAddr;

use pipeline::problem::require_within;
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
    /// HTTP: longest a connection may take to send a request's head, from
    /// its accept or from the first byte after an idle wait; then it is
    /// closed.
    #[serde(default = "default_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// HTTP: longest a kept-alive connection may wait for its next
    /// request; then it is closed.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// HTTP: connections open at once, at most; past it a new connection
    /// is answered 503 and closed.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// gRPC: connections open at once, at most; past it a new connection
    /// is closed at once. Fixed at start.
    #[serde(default = "default_grpc_max_connections")]
    pub grpc_max_connections: usize,
    /// gRPC: streams (calls) open at once on one connection, at most; the
    /// client is told so in its HTTP/2 settings. Fixed at start.
    #[serde(default = "default_grpc_max_streams_per_connection")]
    pub grpc_max_streams_per_connection: u32,
    /// gRPC `ReportStream`: requests one stream may have taken and not yet
    /// answered; past it the server reads no more of the stream (HTTP/2
    /// flow control holds the client).
    #[serde(default = "default_grpc_stream_max_unanswered")]
    pub grpc_stream_max_unanswered: usize,
    /// gRPC `ReportStream`: a stream with no request for this long (and
    /// nothing unanswered) is ended with DEADLINE_EXCEEDED.
    #[serde(default = "default_grpc_stream_idle_timeout_ms")]
    pub grpc_stream_idle_timeout_ms: u64,
    /// gRPC `ReportStream`: streams one client (token) may hold open at
    /// once; past it a new one is refused RESOURCE_EXHAUSTED. Without
    /// `[[auth.clients]]` every caller counts as one client.
    #[serde(default = "default_grpc_max_streams_per_client")]
    pub grpc_max_streams_per_client: usize,
}

/// Largest `max_connections` or `grpc_max_connections` accepted.
pub const MAX_CONNECTIONS_LIMIT: u64 = 1_000_000;
/// Largest `grpc_max_streams_per_connection` accepted.
pub const MAX_STREAMS_LIMIT: u64 = 10_000;
/// Largest `max_body_bytes` accepted (1 GiB).
pub const MAX_BODY_BYTES_LIMIT: u64 = 1 << 30;
/// Largest `max_events_per_request` accepted.
pub const MAX_EVENTS_LIMIT: u64 = 100_000;
/// Longest timeout accepted, in ms (an hour).
pub const MAX_TIMEOUT_MS: u64 = 3_600_000;

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
fn default_header_read_timeout_ms() -> u64 {
    10_000
}
fn default_idle_timeout_ms() -> u64 {
    60_000
}
fn default_max_connections() -> usize {
    10_000
}
fn default_grpc_max_connections() -> usize {
    1_000
}
fn default_grpc_max_streams_per_connection() -> u32 {
    128
}
fn default_grpc_stream_max_unanswered() -> usize {
    64
}
fn default_grpc_stream_idle_timeout_ms() -> u64 {
    60_000
}
fn default_grpc_max_streams_per_client() -> usize {
    256
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
        let ranges: [(&str, u64, u64); 12] = [
            ("max_body_bytes", self.max_body_bytes as u64, MAX_BODY_BYTES_LIMIT),
            ("max_events_per_request", self.max_events_per_request as u64, MAX_EVENTS_LIMIT),
            ("request_timeout_ms", self.request_timeout_ms, MAX_TIMEOUT_MS),
            ("retry_after_s", u64::from(self.retry_after_s), MAX_TIMEOUT_MS / 1000),
            ("header_read_timeout_ms", self.header_read_timeout_ms, MAX_TIMEOUT_MS),
            ("idle_timeout_ms", self.idle_timeout_ms, MAX_TIMEOUT_MS),
            ("max_connections", self.max_connections as u64, MAX_CONNECTIONS_LIMIT),
            ("grpc_max_connections", self.grpc_max_connections as u64, MAX_CONNECTIONS_LIMIT),
            ("grpc_max_streams_per_connection", u64::from(self.grpc_max_streams_per_connection), MAX_STREAMS_LIMIT),
            ("grpc_stream_max_unanswered", self.grpc_stream_max_unanswered as u64, MAX_STREAMS_LIMIT),
            ("grpc_stream_idle_timeout_ms", self.grpc_stream_idle_timeout_ms, MAX_TIMEOUT_MS),
            ("grpc_max_streams_per_client", self.grpc_max_streams_per_client as u64, MAX_CONNECTIONS_LIMIT),
        ];
        for (field, value, most) in &ranges {
            require_within(&mut problems, field, *value, 1, *most);
        }
        problems
    }
}

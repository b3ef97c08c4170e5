//! What the HTTP edge reports. Each event names its metrics once, here.

use std::time::Duration;

use pipeline::view::{Figure, FigureSource};

/// What the live page shows of an `http_ingest` stage.
pub fn figures() -> Vec<Figure> {
    vec![
        Figure {
            label: "report requests/s",
            source: FigureSource::RateWhere { metric: HttpRequest::REQUESTS, label: ("route", "/v1/events") },
        },
        Figure { label: "all requests/s", source: FigureSource::Rate(HttpRequest::REQUESTS) },
        Figure { label: "report streams open", source: FigureSource::Value(ReportStreamOpened::OPEN) },
        Figure { label: "stream requests/s", source: FigureSource::Rate(ReportStreamRequest::REQUESTS) },
    ]
}

/// An HTTP request was answered.
pub(crate) struct HttpRequest {
    /// The matched route pattern (`unmatched` for none).
    pub route: String,
    /// The request's method, from a fixed set.
    pub method: &'static str,
    /// The answer's status code.
    pub status: u16,
    /// How long the answer took.
    pub took: Duration,
}

impl HttpRequest {
    /// `histflow_http_requests_total{route,method,status}`.
    const REQUESTS: &'static str = "histflow_http_requests_total";
    /// `histflow_http_request_duration_seconds{route,method}`.
    const DURATION: &'static str = "histflow_http_request_duration_seconds";

    pub fn emit(self) {
        let HttpRequest { route, method, status, took } = self;
        metrics::counter!(Self::REQUESTS, "route" => route.clone(), "method" => method, "status" => status.to_string()).increment(1);
        metrics::histogram!(Self::DURATION, "route" => route, "method" => method).record(took.as_secs_f64());
    }
}

/// An HTTP connection was accepted; the gauge counts it down when the
/// returned guard drops.
pub(crate) struct ConnectionOpened;

impl ConnectionOpened {
    /// `histflow_http_connections`: connections open now.
    const OPEN: &'static str = "histflow_http_connections";

    /// Counts the connection open until the guard drops.
    pub fn emit() -> OpenConnection {
        metrics::gauge!(Self::OPEN).increment(1.0);
        OpenConnection
    }
}

/// One open HTTP connection, counted while it lives.
pub(crate) struct OpenConnection;

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!(ConnectionOpened::OPEN).decrement(1.0);
    }
}

/// An HTTP connection was closed by its clock: it took too long to send a
/// request's head, or sat idle too long between requests.
pub(crate) struct ConnectionClosed {
    /// `header_timeout` or `idle_timeout`.
    pub reason: &'static str,
}

impl ConnectionClosed {
    /// `histflow_http_connections_closed_total{reason}`.
    const METRIC: &'static str = "histflow_http_connections_closed_total";

    pub fn emit(&self) {
        metrics::counter!(Self::METRIC, "reason" => self.reason).increment(1);
        tracing::debug!(reason = self.reason, "closed an HTTP connection that sent no complete request in time");
    }
}

/// A connection over the cap was answered 503 and closed.
pub(crate) struct ConnectionRefused {
    /// The cap.
    pub max_connections: usize,
}

impl ConnectionRefused {
    /// `histflow_http_connections_refused_total`.
    const METRIC: &'static str = "histflow_http_connections_refused_total";

    pub fn emit(&self) {
        metrics::counter!(Self::METRIC).increment(1);
        tracing::debug!(max_connections = self.max_connections, "refused an HTTP connection: the listener is at its cap");
    }
}

/// A gRPC connection over the cap was closed at once.
pub(crate) struct GrpcConnectionRefused {
    /// The cap.
    pub max_connections: usize,
}

impl GrpcConnectionRefused {
    /// `histflow_grpc_connections_refused_total`.
    const METRIC: &'static str = "histflow_grpc_connections_refused_total";

    pub fn emit(&self) {
        metrics::counter!(Self::METRIC).increment(1);
        tracing::debug!(max_connections = self.max_connections, "closed a gRPC connection: the listener is at its cap");
    }
}

/// A gRPC report stream was opened; the gauge counts it down when the
/// returned guard drops.
pub(crate) struct ReportStreamOpened;

impl ReportStreamOpened {
    /// `histflow_grpc_report_streams`: report streams open now.
    pub(crate) const OPEN: &'static str = "histflow_grpc_report_streams";

    /// Shows the gauge (at 0) before any stream opens.
    pub fn describe() {
        metrics::gauge!(Self::OPEN).increment(0.0);
        metrics::counter!(ReportStreamRequest::REQUESTS).increment(0);
    }

    /// Counts the stream open until the guard drops.
    pub fn emit() -> OpenReportStream {
        metrics::gauge!(Self::OPEN).increment(1.0);
        OpenReportStream
    }
}

/// One open report stream, counted while it lives.
pub(crate) struct OpenReportStream;

impl Drop for OpenReportStream {
    fn drop(&mut self) {
        metrics::gauge!(ReportStreamOpened::OPEN).decrement(1.0);
    }
}

/// A report stream took a request.
pub(crate) struct ReportStreamRequest;

impl ReportStreamRequest {
    /// `histflow_grpc_report_stream_requests_total`: requests taken.
    pub(crate) const REQUESTS: &'static str = "histflow_grpc_report_stream_requests_total";
    /// `histflow_grpc_report_stream_events_total`: events in them.
    const EVENTS: &'static str = "histflow_grpc_report_stream_events_total";

    pub fn emit(events: usize) {
        metrics::counter!(Self::REQUESTS).increment(1);
        metrics::counter!(Self::EVENTS).increment(events as u64);
    }
}

/// A report stream ended.
pub(crate) struct ReportStreamEnded {
    /// `client_closed`, `client_failed`, `client_gone`, `drained` or `idle`.
    pub reason: &'static str,
}

impl ReportStreamEnded {
    /// `histflow_grpc_report_streams_ended_total{reason}`.
    const METRIC: &'static str = "histflow_grpc_report_streams_ended_total";

    pub fn emit(&self) {
        metrics::counter!(Self::METRIC, "reason" => self.reason).increment(1);
        tracing::debug!(reason = self.reason, "a report stream ended");
    }
}

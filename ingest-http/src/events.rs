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

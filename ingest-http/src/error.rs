//! The one error type of the HTTP API: each variant is a status, a stable
//! code and a message safe to show the client; 429 and 503 carry
//! `Retry-After`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::event::EventError;

/// Why a request was refused.
#[derive(Debug)]
pub enum ApiError {
    /// 400: the body or some events are invalid; nothing was recorded.
    BadRequest(Vec<EventError>),
    /// 400: a query or path parameter is invalid (named in the message).
    InvalidParameter {
        /// Stable reason code, e.g. `invalid_cursor`.
        code: &'static str,
        /// What is wrong, naming the parameter.
        message: String,
    },
    /// 401: missing or unknown bearer token.
    Unauthorized,
    /// 403: the client's token is valid but its scopes or businesses do
    /// not cover the request.
    Forbidden(String),
    /// 404: no such route.
    NotFound,
    /// 405: the route exists, not with this method.
    MethodNotAllowed,
    /// 501: this topology cannot serve the route (e.g. reads without a
    /// realtime stage).
    NotImplemented(&'static str),
    /// 413: the body (or the event count for the client's burst) is too large.
    TooLarge(String),
    /// 415: not `application/json`.
    UnsupportedMediaType,
    /// 408: the body did not arrive within the time allowed.
    BodyTimeout(String),
    /// 429: the client's rate limit; retry after the given seconds.
    RateLimited {
        /// Seconds until the request could pass.
        retry_after_s: u64,
    },
    /// 503: overloaded, draining, timed out or the write failed; nothing
    /// of the request was acknowledged.
    Unavailable {
        /// Stable reason code.
        code: &'static str,
        /// Safe explanation.
        message: String,
        /// Seconds to wait before retrying.
        retry_after_s: u64,
    },
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [EventError]>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message, index, errors, retry_after) = match &self {
            ApiError::BadRequest(errors) => {
                let first = errors.first();
                let bad: std::collections::BTreeSet<usize> = errors.iter().filter_map(|e| e.index).collect();
                let message = match (first, bad.len()) {
                    (Some(only), _) if errors.len() == 1 => only.message.clone(),
                    (_, 0) => format!("{} problems in the request", errors.len()),
                    (_, n) => format!("{n} invalid event(s); nothing was recorded"),
                };
                (
                    StatusCode::BAD_REQUEST,
                    first.map_or("invalid_request", |e| e.code),
                    message,
                    first.and_then(|e| e.index),
                    Some(errors.as_slice()),
                    None,
                )
            }
            ApiError::InvalidParameter { code, message } => (StatusCode::BAD_REQUEST, *code, message.clone(), None, None, None),
            ApiError::NotImplemented(message) => (StatusCode::NOT_IMPLEMENTED, "not_implemented", (*message).to_owned(), None, None, None),
            ApiError::Unauthorized => {
                (StatusCode::UNAUTHORIZED, "unauthorized", "missing or unknown bearer token".to_owned(), None, None, None)
            }
            ApiError::Forbidden(message) => (StatusCode::FORBIDDEN, "forbidden", message.clone(), None, None, None),
            ApiError::NotFound => {
                (StatusCode::NOT_FOUND, "not_found", "no such route; see the README's HTTP API".to_owned(), None, None, None)
            }
            ApiError::MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take this method".to_owned(), None, None, None)
            }
            ApiError::TooLarge(message) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large", message.clone(), None, None, None),
            ApiError::BodyTimeout(message) => (StatusCode::REQUEST_TIMEOUT, "body_timeout", message.clone(), None, None, None),
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be application/json".to_owned(),
                None,
                None,
                None,
            ),
            ApiError::RateLimited { retry_after_s } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "this client's rate limit is exhausted".to_owned(),
                None,
                None,
                Some(*retry_after_s),
            ),
            ApiError::Unavailable { code, message, retry_after_s } => {
                (StatusCode::SERVICE_UNAVAILABLE, *code, message.clone(), None, None, Some(*retry_after_s))
            }
        };
        // However it was made, a message carries little of the client's
        // input: long lists and values are cut where they are quoted, and
        // the whole message here.
        let body = ErrorBody { error: ErrorDetail { code, message: crate::text::bounded(message), index, errors } };
        let mut response = (status, Json(body)).into_response();
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        if matches!(self, ApiError::Unauthorized) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

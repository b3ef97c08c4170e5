//! What an API error becomes on the gRPC side: its status, with
//! `retry-after` metadata where waiting helps. Unary calls and report
//! streams answer through it.

use tonic::metadata::MetadataValue;
use tonic::Status;

use crate::error::ApiError;
use crate::text::bounded;

/// Problems an `INVALID_ARGUMENT` message lists at most...
const MAX_LISTED_PROBLEMS: usize = 10;
/// ...in at most this many bytes (the count of the rest follows).
const PROBLEMS_MAX_BYTES: usize = 400;

/// `status` with `retry-after` metadata: seconds to wait, at least one.
pub(crate) fn with_retry(mut status: Status, seconds: u64) -> Status {
    if let Ok(value) = MetadataValue::try_from(seconds.max(1).to_string()) {
        status.metadata_mut().insert("retry-after", value);
    }
    status
}

/// The gRPC status of an API error; 429 and 503 carry `retry-after`.
pub fn status_of(error: ApiError) -> Status {
    match error {
        ApiError::BadRequest(errors) => {
            // The message travels in an HTTP/2 header: the first problems
            // that fit in a bounded message, then a count, or a request with
            // many bad events gets a protocol error instead of its answer.
            let mut listed = String::from("nothing was recorded: ");
            let mut shown = 0;
            for error in errors.iter().take(MAX_LISTED_PROBLEMS) {
                let problem = match error.index {
                    Some(index) => format!("event {index}: {} ({})", error.message, error.code),
                    None => format!("{} ({})", error.message, error.code),
                };
                if shown > 0 && listed.len() + problem.len() + 2 > PROBLEMS_MAX_BYTES {
                    break;
                }
                if shown > 0 {
                    listed.push_str("; ");
                }
                listed.push_str(&problem);
                shown += 1;
            }
            let more = errors.len() - shown;
            if more > 0 {
                listed.push_str(&format!("; and {more} more"));
            }
            Status::invalid_argument(bounded(listed))
        }
        ApiError::InvalidParameter { code, message } => Status::invalid_argument(bounded(format!("{message} ({code})"))),
        ApiError::Unauthorized => Status::unauthenticated("missing or unknown bearer token"),
        ApiError::Forbidden(message) => Status::permission_denied(bounded(message)),
        ApiError::NotFound => Status::unimplemented("no such call"),
        ApiError::MethodNotAllowed => Status::unimplemented("no such call"),
        ApiError::NotImplemented(message) => Status::unimplemented(message),
        ApiError::TooLarge(message) => Status::resource_exhausted(bounded(message)),
        ApiError::UnsupportedMediaType => Status::invalid_argument("unsupported media type"),
        ApiError::BodyTimeout(message) => Status::deadline_exceeded(message),
        ApiError::RateLimited { retry_after_s } => {
            with_retry(Status::resource_exhausted("this client's rate limit is exhausted"), retry_after_s)
        }
        ApiError::Unavailable { code, message, retry_after_s } => {
            with_retry(Status::unavailable(format!("{message} ({code})")), retry_after_s)
        }
    }
}

//! `GET /ui`: the live topology page, one self-contained HTML file
//! (`ui/index.html`: inline CSS and script, no fonts, no CDN) compiled into
//! the binary. It polls `/admin/stats` every second.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The page.
const PAGE: &str = include_str!("../../ui/index.html");

/// Forbids the page anything but itself and same-origin calls, so it can
/// never load a script, font or style from elsewhere.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:";

/// Serves the page.
pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}

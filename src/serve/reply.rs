//! Replies every device route shares: plain text, the 404 that sends ONIE to its next name, and
//! a rendered file (never cached by the client).

use axum::{
    body::Body,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<String>) -> Response {
    let mut r = (status, body.into()).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// 404: this device gets nothing here (ONIE then tries its next name).
pub fn not_for_you(why: &str) -> Response {
    text(StatusCode::NOT_FOUND, format!("{why}\n"))
}

/// The body of a rendered text file.
pub fn rendered(content_type: &'static str, body: impl Into<Body>) -> Response {
    let mut r = Response::new(body.into());
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

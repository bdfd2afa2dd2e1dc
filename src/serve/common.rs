//! Pieces every device-facing handler uses: finding the device's profile, rendering errors,
//! plain responses, and the one log line per device request.

use std::{sync::Arc, time::Instant};

use axum::{
    body::Body,
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::AppState;
use crate::{
    api::validate_segment,
    profile::{
        identity::{DeviceIdentity, Family},
        render::RenderContext,
        snapshot::ProfileSnapshot,
    },
    serve::state::Loaded,
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

/// A device request resolved to its profile.
pub struct Device {
    pub loaded: Arc<Loaded>,
    pub id: DeviceIdentity,
    pub profile: usize,
}

impl Device {
    pub fn profile(&self) -> &ProfileSnapshot {
        &self.loaded.snapshot.profiles[self.profile]
    }

    pub fn render_context<'a>(&'a self, server_url: &'a str) -> RenderContext<'a> {
        RenderContext { device: &self.id, profile: self.profile(), server_url }
    }
}

/// Identifies the device from its headers (and the serial in the path, where the route has one)
/// and finds its profile; the error is the response to send.
#[allow(clippy::result_large_err)] // the error is the HTTP response itself, returned at once
pub fn find_device(
    state: &AppState,
    headers: &HeaderMap,
    family: Family,
    path_serial: Option<&str>,
) -> Result<Device, Response> {
    let Some(loaded) = state.server.loaded() else {
        return Err(text(StatusCode::SERVICE_UNAVAILABLE, "no device snapshot loaded yet\n"));
    };
    let mut id = DeviceIdentity::from_headers(headers, family);
    if let Some(serial) = path_serial {
        if validate_segment("serial number", serial).is_err() {
            return Err(not_for_you("not a serial number"));
        }
        id.serial = Some(serial.to_owned());
    }
    match loaded.index.lookup(&id) {
        Some(m) => Ok(Device { loaded: loaded.clone(), id, profile: m.profile }),
        None => Err(not_for_you("no profile matches this device")),
    }
}

/// Logs one structured line per device request: serial, MAC, source IP, family, path, status,
/// bytes and duration.
pub async fn log_device_request(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = DeviceIdentity::from_headers(req.headers(), Family::Unknown);
    let source = req.extensions().get::<ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    let addr = source.map(|ip| ip.to_string());
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let response = next.run(req).await;
    let bytes = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .or_else(|| axum::body::HttpBody::size_hint(response.body()).exact())
        .unwrap_or(0);
    tracing::info!(
        target: "ztp_operator::device",
        serial = id.serial.as_deref().unwrap_or("-"),
        mac = id.mac.as_deref().unwrap_or("-"),
        source = addr.as_deref().unwrap_or("-"),
        family = id.family.as_str(),
        container = id.container_name.as_deref().unwrap_or("-"),
        element = id.element_name.as_deref().unwrap_or("-"),
        host = id.host_name.as_deref().unwrap_or("-"),
        %method,
        %path,
        status = response.status().as_u16(),
        bytes,
        duration_ms = started.elapsed().as_millis() as u64,
        "device request"
    );
    state.metrics.request(id.family, response.status().as_u16(), bytes);
    if let Some(outcome) = response.extensions().get::<super::activity::DeviceOutcome>() {
        state.activity.record(outcome, source);
    }
    response
}

/// The body of a rendered text file.
pub fn rendered(content_type: &'static str, body: String) -> Response {
    let mut r = Response::new(Body::from(body));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A template failed for this device: a 500 with the reason (the profile's condition already
/// carries syntax errors; this is an undefined variable for this particular device).
pub fn render_failed(e: impl std::fmt::Display) -> Response {
    tracing::warn!(error = %e, "render failed");
    text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n"))
}

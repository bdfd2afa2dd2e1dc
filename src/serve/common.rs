//! Pieces every device-facing handler uses: finding the device's profile, rendering errors,
//! plain responses, and the one log line per device request.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Instant,
};

use axum::{
    body::Body,
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{AppState, activity::DeviceOutcome};
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

/// The device-request middleware of the router: one [`observe`] per request (the stage comes as a
/// response extension).
pub async fn log_device_request(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let headers = req.headers().clone();
    let source = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let response = next.run(req).await;
    let bytes = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .or_else(|| axum::body::HttpBody::size_hint(response.body()).exact())
        .unwrap_or(0);
    let outcome = response.extensions().get::<DeviceOutcome>();
    let status = response.status().as_u16();
    observe(
        &state,
        &Observed {
            headers: &headers,
            source,
            method: &method,
            path: &path,
            status,
            bytes,
            started,
            outcome,
        },
    );
    response
}

/// One device request, answered.
#[derive(Clone, Copy)]
pub struct Observed<'a> {
    pub headers: &'a HeaderMap,
    pub source: Option<IpAddr>,
    pub method: &'a Method,
    /// The path, without the query string.
    pub path: &'a str,
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
    pub started: Instant,
    /// The stage the device reached, when the answer moved it (see [`super::activity`]).
    pub outcome: Option<&'a DeviceOutcome>,
}

/// What happens after every device request, whichever path answered it (the router or the
/// sendfile fast path): one structured log line (serial, MAC, source IP, family, path, status,
/// bytes, duration), the metrics, and the device's activity.
pub fn observe(state: &AppState, r: &Observed<'_>) {
    let Observed { headers, source, method, path, status, bytes, started, outcome } = *r;
    let id = DeviceIdentity::from_headers(headers, Family::Unknown);
    tracing::info!(
        target: "ztp_operator::device",
        serial = id.serial.as_deref().unwrap_or("-"),
        mac = id.mac.as_deref().unwrap_or("-"),
        source = source.map(|s| s.to_string()).as_deref().unwrap_or("-"),
        family = id.family.as_str(),
        container = id.container_name.as_deref().unwrap_or("-"),
        element = id.element_name.as_deref().unwrap_or("-"),
        host = id.host_name.as_deref().unwrap_or("-"),
        %method,
        path,
        status,
        bytes,
        duration_ms = started.elapsed().as_millis() as u64,
        "device request"
    );
    state.metrics.request(id.family, status, bytes);
    if let Some(outcome) = outcome {
        state.activity.record(outcome, source);
    }
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

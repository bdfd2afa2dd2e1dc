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

use super::{
    AppState,
    activity::{DeviceOutcome, RenderFailure},
};
use crate::{
    api::validate_segment,
    profile::{
        identity::{DeviceIdentity, Family, check_identity_headers},
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
    /// This server's base URL as the device reached it (`server_url`); `None` when it cannot be
    /// told (see [`BaseUrl`](super::state::BaseUrl)).
    pub base: Option<String>,
}

impl Device {
    pub fn profile(&self) -> &ProfileSnapshot {
        &self.loaded.snapshot.profiles[self.profile]
    }

    /// What templates see for this device; the error (no base URL) is the response to send.
    #[allow(clippy::result_large_err)] // the error is the HTTP response itself, returned at once
    pub fn render_context(&self) -> Result<RenderContext<'_>, Response> {
        let server_url = base_or_refuse(self.base.as_deref())?;
        Ok(RenderContext { device: &self.id, profile: self.profile(), server_url })
    }
}

/// The base URL, or the 400 that says why there is none.
#[allow(clippy::result_large_err)] // the error is the HTTP response itself, returned at once
pub fn base_or_refuse(base: Option<&str>) -> Result<&str, Response> {
    base.ok_or_else(|| {
        text(
            StatusCode::BAD_REQUEST,
            "no usable Host header: this server cannot tell which address you reached \
             (start it with --external-url, or listen on a specific address)\n",
        )
    })
}

/// Who is asking, before any profile is looked up: the device's identity, the loaded snapshot and
/// the base URL its answer's URLs start with.
pub struct Asking {
    pub loaded: Arc<Loaded>,
    pub id: DeviceIdentity,
    pub base: Option<String>,
}

/// Identifies the device: from its headers (400 when one is longer than a path segment may be:
/// [`check_identity_headers`]), and from the serial number in the path (where the
/// route has one) only when no header names one — a `dynamic-url` may build that segment from
/// the product name or host name, never a reason to take the device for another. The error is
/// the response to send.
#[allow(clippy::result_large_err)] // the error is the HTTP response itself, returned at once
pub fn identify(
    state: &AppState,
    headers: &HeaderMap,
    family: Family,
    path_serial: Option<&str>,
) -> Result<Asking, Response> {
    let Some(loaded) = state.server.loaded() else {
        return Err(text(StatusCode::SERVICE_UNAVAILABLE, "no device snapshot loaded yet\n"));
    };
    if let Err(e) = check_identity_headers(headers) {
        return Err(text(StatusCode::BAD_REQUEST, format!("{e}\n")));
    }
    let mut id = DeviceIdentity::from_headers(headers, family);
    if let Some(serial) = path_serial {
        if validate_segment("serial number", serial).is_err() {
            return Err(not_for_you("not a serial number"));
        }
        id.serial.get_or_insert_with(|| serial.to_owned());
    }
    Ok(Asking { loaded, id, base: state.server.base_url.for_request(headers) })
}

impl Asking {
    /// The device's profile; the error is the response to send.
    #[allow(clippy::result_large_err)] // the error is the HTTP response itself, returned at once
    pub fn find(self) -> Result<Device, Response> {
        let Asking { loaded, id, base } = self;
        match loaded.index.lookup(&id) {
            Some(m) => Ok(Device { profile: m.profile, loaded, id, base }),
            None => Err(not_for_you("no profile matches this device")),
        }
    }
}

/// [`identify`], then [`Asking::find`].
#[allow(clippy::result_large_err)] // the error is the HTTP response itself, returned at once
pub fn find_device(
    state: &AppState,
    headers: &HeaderMap,
    family: Family,
    path_serial: Option<&str>,
) -> Result<Device, Response> {
    identify(state, headers, family, path_serial)?.find()
}

/// The networks device routes answer (`--device-networks`); empty: every source.
#[derive(Debug, Clone, Default)]
pub struct DeviceNetworks(Vec<ipnet::IpNet>);

impl DeviceNetworks {
    pub fn new(networks: Vec<ipnet::IpNet>) -> Self {
        Self(networks)
    }

    /// Whether a request from `source` may be answered (an IPv4 client of a dual-stack socket,
    /// `::ffff:a.b.c.d`, counts as `a.b.c.d`).
    pub fn allows(&self, source: IpAddr) -> bool {
        let source = source.to_canonical();
        self.0.is_empty() || self.0.iter().any(|n| n.contains(&source))
    }
}

/// The router's guard of device routes: a source outside `--device-networks` gets 403.
pub async fn device_source_allowed(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let source = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    match source {
        Some(ip) if !state.device_networks.allows(ip) => text(
            StatusCode::FORBIDDEN,
            format!("device routes do not answer {ip}: not in --device-networks\n"),
        ),
        _ => next.run(req).await,
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
    if let Some(failure) = response.extensions().get::<RenderFailure>() {
        state.activity.render_failed(failure, source, k8s_openapi::jiff::Timestamp::now());
    }
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
    let id = request_identity(headers, path);
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

/// Who sent a device request, for its log line and metrics: the identity its headers carry, with
/// the family the route names, and the serial number the route names where it has one
/// (`/{nvos|sonic}/{serial}/…`, `/cumulus/{serial}/ztp.sh`, `/ztp/…` for RtBrick,
/// `/v1/devices/{serial}/provisioned`) when no header gives one — the same rule as [`identify`],
/// so a device is logged as what it was answered as. A path serial that is not a valid name is
/// ignored.
pub fn request_identity(headers: &HeaderMap, path: &str) -> DeviceIdentity {
    let (family, serial) = route_device(path);
    let mut id = DeviceIdentity::from_headers(headers, family);
    if let Some(serial) = serial.filter(|s| validate_segment("serial number", s).is_ok()) {
        id.serial.get_or_insert_with(|| serial.to_owned());
    }
    id
}

/// The family and serial number a device route names (see [`request_identity`]).
fn route_device(path: &str) -> (Family, Option<&str>) {
    let mut segments = path.trim_start_matches('/').split('/');
    let (first, second, third) = (segments.next(), segments.next(), segments.next());
    let family = match first {
        Some("nvos") => Family::Nvos,
        Some("sonic") => Family::Sonic,
        Some("cumulus") => Family::Cumulus,
        Some("ztp") => Family::RtBrick,
        _ => Family::Unknown,
    };
    let serial = match (first, second, third) {
        (Some("nvos" | "sonic"), Some(serial), Some("ztp.json" | "sections")) => Some(serial),
        (Some("cumulus"), Some(serial), Some("ztp.sh")) => Some(serial),
        (Some("v1"), Some("devices"), Some(serial)) => Some(serial),
        _ => None,
    };
    (family, serial)
}

/// Text an anonymous client sent, made safe for one log line: at most `max` characters, and
/// every control character (newline, carriage return, escape, …) written as its Rust escape
/// (`\n`, `\u{1b}`), so a client cannot forge log lines or terminal sequences.
pub fn loggable(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for ch in s.chars().take(max) {
        if ch.is_control() || ch == '\\' {
            out.extend(ch.escape_default());
        } else {
            out.push(ch);
        }
    }
    out
}

/// The body of a rendered text file.
pub fn rendered(content_type: &'static str, body: impl Into<Body>) -> Response {
    let mut r = Response::new(body.into());
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A template failed for this device: a 500 with the reason (the profile's condition already
/// carries syntax errors; this is an undefined variable for this particular device), carrying a
/// [`RenderFailure`] for the request-log middleware (a Warning Event on the profile).
pub fn render_failed(device: &Device, e: impl std::fmt::Display) -> Response {
    let p = device.profile();
    tracing::warn!(profile = %format!("{}/{}", p.namespace, p.name), serial = device.id.serial.as_deref().unwrap_or("-"), error = %e, "render failed");
    let mut response = text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n"));
    response.extensions_mut().insert(RenderFailure {
        namespace: p.namespace.clone(),
        profile: p.name.clone(),
        serial: device.id.serial.clone(),
        mac: device.id.mac.clone(),
        error: e.to_string(),
    });
    response
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderName, HeaderValue};

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::from_bytes(k.as_bytes()).expect("name"),
                    HeaderValue::from_str(v).expect("value"),
                )
            })
            .collect()
    }

    fn who(h: &[(&str, &str)], path: &str) -> (Family, Option<String>) {
        let id = request_identity(&headers(h), path);
        (id.family, id.serial)
    }

    #[test]
    fn per_serial_routes_name_the_device_without_headers() {
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(who(&[], "/nvos/MT2245X01/ztp.json"), (Family::Nvos, s("MT2245X01")));
        assert_eq!(who(&[], "/sonic/ABC123/sections/startup"), (Family::Sonic, s("ABC123")));
        assert_eq!(who(&[], "/cumulus/CU42/ztp.sh"), (Family::Cumulus, s("CU42")));
        assert_eq!(who(&[], "/v1/devices/DEV9/provisioned"), (Family::Unknown, s("DEV9")));
        assert_eq!(who(&[("CONTAINER-NAME", "rbfs")], "/ztp/config/startup").0, Family::RtBrick);
    }

    #[test]
    fn headers_identify_the_device_and_a_path_segment_never_overrides_them() {
        let onie = [("ONIE-SERIAL-NUMBER", "ON1"), ("ONIE-OPERATION", "os-install")];
        assert_eq!(who(&onie, "/onie-installer-x86_64"), (Family::Onie, Some("ON1".into())));
        let nvos = [("SERIAL-NUMBER", "HDR"), ("NVOS-VERSION", "25.02")];
        assert_eq!(who(&nvos, "/nvos/ztp.json"), (Family::Nvos, Some("HDR".into())));
        // A dynamic-url built from the product name: the device is still its header's serial.
        assert_eq!(who(&nvos, "/nvos/SN2201/ztp.json"), (Family::Nvos, Some("HDR".into())));
        let sonic = [("SERIAL-NUMBER", "SN-REAL"), ("PRODUCT-NAME", "7726-32X-O-AC-F")];
        assert_eq!(who(&sonic, "/sonic/7726-32X-O-AC-F/ztp.json"), (Family::Sonic, Some("SN-REAL".into())));
        assert_eq!(who(&sonic, "/sonic/leaf11/sections/01-firmware/plugin").1, Some("SN-REAL".into()));
    }

    #[test]
    fn device_networks_limit_sources_and_read_mapped_ipv4() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert!(DeviceNetworks::default().allows(ip("203.0.113.9")), "empty: everyone");
        let nets =
            DeviceNetworks::new(vec!["10.0.0.0/8".parse().expect("net"), "fd00::/8".parse().expect("net")]);
        assert!(nets.allows(ip("10.1.2.3")));
        assert!(nets.allows(ip("::ffff:10.1.2.3")), "IPv4 on a dual-stack socket");
        assert!(nets.allows(ip("fd12::1")));
        assert!(!nets.allows(ip("192.168.0.1")));
        assert!(!nets.allows(ip("::ffff:192.168.0.1")));
        assert!(!nets.allows(ip("2001:db8::1")));
    }

    #[test]
    fn loggable_text_stays_on_one_line() {
        assert_eq!(loggable("ok 1", 10), "ok 1");
        assert_eq!(loggable("a\nFORGED b\r\x1b[2J\\n", 100), "a\\nFORGED b\\r\\u{1b}[2J\\\\n");
        assert_eq!(loggable("abcdef", 3), "abc");
        assert_eq!(loggable("é\u{85}", 5), "é\\u{85}");
    }

    #[test]
    fn a_hostile_path_serial_is_not_logged_as_one() {
        assert_eq!(who(&[], "/nvos/../ztp.json"), (Family::Nvos, None));
        assert_eq!(who(&[], "/cumulus/a%2Fb/ztp.sh").1, None);
        assert_eq!(who(&[], "/images/p/v/f").0, Family::Unknown);
    }
}

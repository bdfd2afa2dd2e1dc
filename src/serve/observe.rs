//! What happens around every device request, whichever path answers it: the source check of
//! `--device-networks`, and one observation (a log line, the metrics, the device's activity, and
//! with `--switches` a sighting for its Switch).

use std::{
    net::{IpAddr, SocketAddr},
    time::Instant,
};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, Method, StatusCode, header},
    middleware::Next,
    response::Response,
};

use super::{AppState, device::request_identity, matched::matched_profile, reply::text};
use crate::{
    activity::{DeviceOutcome, RenderFailure, Stage},
    api::DeviceFacts,
    profile::identity::{DeviceIdentity, Family, SentHeaders, header_text},
    routes::DeviceRoute,
    switch::{
        book::Sighting,
        lifecycle::{Report, What},
    },
    telemetry::access::address,
};

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
    let source = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    // Read before the handler takes the request: who asked, and the headers a sighting keeps.
    let identity = request_identity(req.headers(), &path);
    let mut headers = HeaderMap::new();
    if let Some(agent) = req.headers().get(header::USER_AGENT) {
        headers.insert(header::USER_AGENT, agent.clone());
    }
    let response = next.run(req).await;
    let bytes = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .or_else(|| axum::body::HttpBody::size_hint(response.body()).exact())
        .unwrap_or(0);
    let outcome = response.extensions().get::<DeviceOutcome<'static>>();
    let step = response.extensions().get::<What>();
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
            step,
            identity: &identity,
        },
    );
    response
}

/// One device request, answered.
#[derive(Clone, Copy)]
pub struct Observed<'a> {
    /// The request's headers (a sighting keeps the `User-Agent`).
    pub headers: &'a dyn SentHeaders,
    pub source: Option<IpAddr>,
    pub method: &'a Method,
    /// The path, without the query string.
    pub path: &'a str,
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
    pub started: Instant,
    /// The stage the device reached, when the answer moved it (see [`crate::activity`]).
    pub outcome: Option<&'a DeviceOutcome<'a>>,
    /// The step for the device's Switch, when the answer says it exactly (a report); else it
    /// follows from `outcome`.
    pub step: Option<&'a What>,
    /// Who the answer was for: the device the answering path found, or [`request_identity`] of
    /// the headers and the path (the same rule).
    pub identity: &'a DeviceIdentity,
}

/// What happens after every device request, whichever path answered it (the router or the
/// sendfile fast path): one structured log line (serial, MAC, source IP, family, path, status,
/// bytes, duration), the metrics, and the device's activity.
pub fn observe(state: &AppState, r: &Observed<'_>) {
    let Observed { source, method, path, status, bytes, started, outcome, identity: id, .. } = *r;
    crate::telemetry::access::DeviceRequest {
        serial: id.serial.as_deref().unwrap_or("-"),
        mac: id.mac.as_deref().unwrap_or("-"),
        source,
        family: id.family.as_str(),
        container: id.container_name.as_deref().unwrap_or("-"),
        element: id.element_name.as_deref().unwrap_or("-"),
        host: id.host_name.as_deref().unwrap_or("-"),
        method: method.as_str(),
        path,
        status,
        bytes,
        duration_ms: started.elapsed().as_millis() as u64,
    }
    .log();
    state.metrics.request(id.family, status, bytes);
    if let Some(outcome) = outcome {
        state.activity.record(outcome, source);
    }
    if state.switches.book.is_enabled()
        && let Some(sighting) = sighting(state, r, id)
    {
        state.switches.book.see(sighting);
    }
}

/// What a device request tells its Switch: the device's facts, the profile it matches now, and
/// the step the answer made (a served configuration or image, the `provisioned` callback).
/// `None` for a device without a serial number (a Switch is keyed by it).
fn sighting(state: &AppState, r: &Observed<'_>, id: &DeviceIdentity) -> Option<Sighting> {
    let serial = id.serial.clone()?;
    let found = state.server.loaded().and_then(|l| matched_profile(&l, id));
    // By its serial alone (a report, the callback) a device that matches by MAC or model is not
    // found: that says nothing about its profile.
    let identified = found.is_some() || id.mac.is_some() || !id.models.is_empty();
    let matched = identified.then_some(found);
    let starts = || DeviceRoute::parse(r.path).is_some_and(|route| route.starts_provisioning());
    let what = r.step.cloned().or_else(|| {
        r.outcome.map(|o| match o.stage {
            Stage::ConfigServed => What::ConfigServed { start: starts() },
            Stage::ImageServed => What::ImageServed { start: starts(), path: Some(loggable(r.path, 256)) },
            Stage::Provisioned => What::Reported(Report::provisioned()),
        })
    });
    let user_agent = r.headers.first("user-agent").and_then(header_text).map(|ua| loggable(ua, 256));
    let facts = DeviceFacts {
        family: (id.family != Family::Unknown).then(|| id.family.as_str().to_owned()),
        model: id.models.first().cloned(),
        mac: id.mac.clone(),
        os_version: id.os_version.clone(),
        address: r.source.map(|ip| address(ip.to_canonical())),
        user_agent,
    };
    Some(Sighting { serial, facts, matched, what, at: k8s_openapi::jiff::Timestamp::now() })
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

#[cfg(test)]
mod tests {
    use super::*;

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
}

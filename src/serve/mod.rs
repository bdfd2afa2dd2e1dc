//! `ztp-operator serve`: the device-facing data plane. Answers ONIE, NVOS / SONiC, Cumulus and
//! RtBrick from the device snapshot the controller rendered into the store, streams images with
//! Range and an admission limit, and reloads a new snapshot within seconds, atomically.

pub mod affinity;
pub mod auth;
pub mod choose;
pub mod conn;
pub mod connections;
pub mod cumulus;
pub mod device;
pub mod download;
pub mod files;
pub mod images;
pub mod matched;
pub mod metrics;
pub mod observe;
pub mod onie;
pub mod onie_pass;
pub mod openapi;
pub mod reply;
pub mod report;
pub mod rtbrick;
pub mod state;
pub mod switches;
pub mod workers;
pub mod ztp_json;

#[cfg(test)]
mod handler_tests;

use std::{
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    extract::State,
    http::{HeaderMap, Method, StatusCode},
    middleware,
    response::{IntoResponse, Response},
    routing::{get, post},
};

use crate::{activity, profile::snapshot::ImageRef};
use download::Downloads;
use reply::{not_for_you, text};
use state::ServerState;

/// Shared by every handler.
pub struct App {
    pub server: Arc<ServerState>,
    pub downloads: Downloads,
    pub metrics: metrics::Metrics,
    /// The admission limit, for the metrics.
    pub max_downloads: usize,
    /// Device stages, per profile (flushed to status by [`activity::report_forever`]).
    pub activity: activity::Activity,
    /// Each device's steps for its Switch (written by [`crate::switch::k8s::run`]), and the
    /// serials on hold.
    pub switches: crate::switch::Tracking,
    /// The report key and whether the old callback needs the token.
    pub reports: report::Reports,
    /// Who may upload and delete files.
    pub admin: auth::AdminAuth,
    /// Largest upload accepted, in bytes.
    pub max_upload: u64,
    /// Sources device routes answer.
    pub device_networks: observe::DeviceNetworks,
    /// Recent full ONIE downloads: a failing installer is not sent again within one discovery
    /// pass.
    pub passes: onie_pass::Passes,
}

pub type AppState = Arc<App>;

impl App {
    /// Streams a stored image (Range, HEAD, ETag, admission limit).
    pub async fn serve_image(&self, method: &Method, headers: &HeaderMap, img: &ImageRef) -> Response {
        match choose::image_path(img) {
            Some(path) => self.downloads.serve(method, headers, &path, &img.sha256, img.size).await,
            None => not_for_you("not a valid image path"),
        }
    }

    /// Answers a request for an image: chooses it ([`choose::choose`]), then streams it.
    pub async fn answer_image(
        self: &Arc<Self>,
        method: &Method,
        headers: &HeaderMap,
        source: Option<IpAddr>,
        request: &choose::ImageRequest,
    ) -> Response {
        let asker = choose::Asker { method, headers, source };
        match choose::choose(self, request, asker).await {
            Ok(chosen) => {
                let mut response = self.serve_image(method, headers, &chosen.image).await;
                if let Some(ticket) = chosen.ticket.filter(|_| response.status() == StatusCode::OK) {
                    let body = std::mem::take(response.body_mut());
                    let (app, image, sent) = (self.clone(), chosen.image.clone(), 0);
                    let stream = Remembered { inner: body.into_data_stream(), app, ticket, image, sent };
                    *response.body_mut() = Body::from_stream(stream);
                }
                match &chosen.device {
                    Some(device) => device::image_served(response, device, method),
                    None => response,
                }
            }
            Err(refusal) => {
                if let reply::Refusal::SamePass(r) = &refusal {
                    onie_pass::log_refused(r);
                }
                refusal.into_response()
            }
        }
    }
}

/// An ONIE download's body that tells [`onie_pass::Passes`] when its last byte was sent.
struct Remembered {
    inner: axum::body::BodyDataStream,
    app: AppState,
    ticket: onie_pass::Ticket,
    image: ImageRef,
    sent: u64,
}

impl futures::Stream for Remembered {
    type Item = Result<bytes::Bytes, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        // Remembered as the last byte is handed on: hyper knows the length and need not poll
        // again for the end of the stream (which then came only after the client had moved on).
        if let Poll::Ready(Some(Ok(chunk))) = &polled {
            self.sent += chunk.len() as u64;
            if self.sent == self.image.size {
                self.app.passes.served(&self.ticket, &self.image, Instant::now());
            }
        }
        polled
    }
}

#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "The process is up", body = String)))]
async fn healthz() -> Response {
    text(StatusCode::OK, "ok\n")
}

#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format: device requests by family and status class, bytes, downloads in flight and refused, snapshot", content_type = "text/plain")))]
async fn metrics_page(State(state): State<AppState>) -> Response {
    let profiles = state.server.loaded().map(|l| l.snapshot.profiles.len());
    let body = state.metrics.render(state.downloads.active(), state.max_downloads, profiles);
    let mut r = text(StatusCode::OK, body);
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "A device snapshot is loaded", body = String), (status = 503, description = "No device snapshot loaded yet", body = String)))]
async fn readyz(State(state): State<AppState>) -> Response {
    match state.server.loaded() {
        Some(l) => text(StatusCode::OK, format!("ready: snapshot {}\n", l.snapshot.version)),
        None => text(StatusCode::SERVICE_UNAVAILABLE, "no device snapshot loaded yet\n"),
    }
}

/// The whole router.
pub fn router(state: AppState) -> Router {
    let devices = Router::new()
        .route("/onie", get(onie::fixed))
        .route("/{name}", get(onie::waterfall))
        .route("/ztp/image", get(rtbrick::image))
        .route("/ztp/images/{file}", get(rtbrick::image_file))
        .route("/ztp/config/{name}", get(rtbrick::config))
        .route("/ztp/message", post(rtbrick::message).get(rtbrick::message))
        .route("/{family}/ztp.json", get(ztp_json::by_headers))
        .route("/{family}/{serial}/ztp.json", get(ztp_json::by_serial))
        .route("/{family}/{serial}/sections/{key}", get(ztp_json::section))
        .route("/{family}/{serial}/sections/{key}/{part}", get(ztp_json::sonic_part))
        .route("/cumulus/ztp.sh", get(cumulus::by_headers))
        .route("/cumulus/{serial}/ztp.sh", get(cumulus::by_serial))
        .route("/images/{platform}/{version}/{filename}", get(images::by_path))
        .route("/v1/firmware/{platform}/{version}", get(images::firmware_image))
        .route("/v1/firmware/{platform}/{version}/checksum", get(images::firmware_checksum))
        .route("/v1/devices/{serial}/provisioned", post(device::provisioned))
        .route("/v1/devices/{serial}/report", post(report::report))
        .layer(middleware::from_fn_with_state(state.clone(), observe::device_source_allowed))
        .layer(middleware::from_fn_with_state(state.clone(), observe::log_device_request));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_page))
        .merge(devices)
        .merge(files::routes(state.max_upload))
        .route("/v1/switches", get(switches::list))
        .route("/v1/switches/{serial}", get(switches::one))
        .merge(openapi::routes())
        .with_state(state)
}

/// How [`run`] serves.
pub struct Options {
    pub listen: SocketAddr,
    /// Image downloads at once (503 + Retry-After past it).
    pub max_downloads: usize,
    /// Plain image downloads from a directory store take the fast path of [`conn`].
    pub sendfile: bool,
    /// Where device stages are recorded.
    pub activity: activity::Activity,
    /// Where each device's steps are gathered for its Switch, and which devices are on hold.
    pub switches: crate::switch::Tracking,
    /// How reports are taken.
    pub reports: report::Reports,
    pub admin: auth::AdminAuth,
    pub max_upload: u64,
    /// Device routes answer only these sources.
    pub device_networks: observe::DeviceNetworks,
    /// Timeouts and the per-source connection cap.
    pub limits: connections::Limits,
    /// Connection workers (threads, each with its own runtime and listening socket).
    pub workers: std::num::NonZeroUsize,
}

/// How long a stopping server lets its open connections (downloads under way) end: below the
/// 30 s a pod has by default between SIGTERM and being killed, so a switch's download ends normally.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(25);

/// Serves until `shutdown` resolves (reloading the snapshot every second), then stops accepting
/// connections and lets the open ones end, for at most [`DRAIN_LIMIT`].
pub async fn run(
    server: Arc<ServerState>,
    options: Options,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let Options {
        listen,
        max_downloads,
        sendfile,
        activity,
        switches,
        reports,
        admin,
        max_upload,
        device_networks,
        limits,
        workers,
    } = options;
    let app = Arc::new(App {
        downloads: Downloads::new(server.store.clone(), max_downloads, 5)
            .with_send_timeout(limits.send_timeout),
        server: server.clone(),
        metrics: metrics::Metrics::default(),
        max_downloads,
        activity,
        switches,
        reports,
        admin,
        max_upload,
        device_networks,
        passes: onie_pass::Passes::default(),
    });
    tokio::spawn(server.reload_forever(Duration::from_secs(1)));
    let listeners = workers::bind(listen, workers)?;
    let listing = if app.admin.listing_is_public() { "public" } else { "admin credential" };
    let cpus = listeners.cpus();
    tracing::info!(%listen, workers, ?cpus, sendfile, admin = app.admin.enabled(), listing, ?limits, "serving devices");
    let per_source = connections::PerSource::new(limits.max_per_source);
    let front = conn::Front {
        app: app.clone(),
        router: router(app),
        sendfile,
        limits,
        per_source,
        drain: DRAIN_LIMIT,
    };
    workers::run(listeners, front, shutdown).await
}

#[cfg(test)]
mod tests {
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::store::{Store, fs::FsBackend};

    /// The router declares every device route of [`crate::routes::TEMPLATES`]: a sample path of
    /// each reaches its handler (with no snapshot loaded they refuse, each with its own text or
    /// method), never the router's empty fallback `404`.
    #[tokio::test]
    async fn the_router_declares_every_device_route() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(Arc::new(FsBackend::new(dir.path()).expect("store")));
        let listen: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        let server = Arc::new(ServerState::new(store.clone(), state::BaseUrl::new(None, listen)));
        let app = Arc::new(App {
            downloads: Downloads::new(store, 4, 5),
            server,
            metrics: metrics::Metrics::default(),
            max_downloads: 4,
            activity: activity::Activity::disabled(),
            switches: Default::default(),
            reports: report::Reports::default(),
            admin: auth::AdminAuth::none(),
            max_upload: 1 << 20,
            device_networks: observe::DeviceNetworks::default(),
            passes: onie_pass::Passes::default(),
        });
        let router = router(app);
        for (template, path) in crate::routes::TEMPLATES.iter().zip(crate::routes::SAMPLE_PATHS) {
            let request = Request::get(path).body(Body::empty()).expect("request");
            let response = router.clone().oneshot(request).await.expect("infallible");
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.expect("body");
            assert!(
                !(status == StatusCode::NOT_FOUND && body.is_empty()),
                "{template} ({path}) is not routed: the fallback answered"
            );
        }
    }
}

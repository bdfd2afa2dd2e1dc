//! The controller's own HTTP listener (`--metrics-listen`): `/healthz` (the process answers),
//! `/readyz` (it reached the apiserver and the CRDs are installed — a standby replica waiting for
//! the lease is ready too: it can take over), and `/metrics` in the Prometheus text format.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, http::header, response::IntoResponse, routing::get};
use prometheus_client::{encoding::text::encode, registry::Registry};

use crate::reconcile::metrics::ImageMetrics;

pub struct Health {
    ready: AtomicBool,
    registry: Registry,
}

impl Health {
    pub fn new(metrics: &ImageMetrics) -> Self {
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        Self { ready: AtomicBool::new(false), registry }
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(self)
    }

    /// Binds `listen` (an error names it) and serves in the background.
    pub async fn serve(self: Arc<Self>, listen: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let local = listener.local_addr()?;
        let app = self.router();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the metrics listener stopped");
            }
        });
        Ok(local)
    }
}

async fn readyz(State(h): State<Arc<Health>>) -> impl IntoResponse {
    if h.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: connecting to the apiserver\n")
    }
}

async fn metrics(State(h): State<Arc<Health>>) -> impl IntoResponse {
    let mut text = String::new();
    match encode(&mut text, &h.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            text,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("cannot encode the metrics: {e}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn metrics_count_attempts_and_readiness_follows_the_flag() {
        let metrics = ImageMetrics::default();
        let health = Arc::new(Health::new(&metrics));
        let addr = health.clone().serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let get = |path: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get("/readyz").await.starts_with("HTTP/1.1 503"));
        health.set_ready();
        assert!(get("/readyz").await.starts_with("HTTP/1.1 200"));

        metrics.attempt("stored", 1000, 0.5);
        metrics.attempt("failed_transient", 10, 0.1);
        metrics.reconciles.get_or_create(&crate::reconcile::metrics::Outcome { result: "ok" }).inc();
        let text = get("/metrics").await;
        assert!(text.contains("ztp_fetch_attempts_total{result=\"stored\"} 1"), "{text}");
        assert!(text.contains("ztp_fetch_attempts_total{result=\"failed_transient\"} 1"), "{text}");
        assert!(text.contains("ztp_fetch_bytes_total 1010"), "{text}");
        assert!(text.contains("ztp_fetch_duration_seconds_count 2"), "{text}");
        assert!(text.contains("ztp_controller_reconciles_total{result=\"ok\"} 1"), "{text}");
        assert!(text.contains("ztp_fetches_in_flight 0"), "{text}");
    }
}

//! What the fetch pipeline counts, whoever drives it: attempts by outcome, bytes, durations, and
//! fetches running or waiting for a slot. The controller exposes them at `/metrics`
//! ([`crate::controller::health`]); the handles are shared (cloning one counts into the same
//! series).

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// How a fetch attempt or a reconcile ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// A fetch: `stored`, `checksum_mismatch`, `failed_transient` (retried), `failed_permanent`
    /// (stalled), `store_conflict`, `cancelled` (deleted or a new spec mid-fetch). A reconcile: `ok`, `error`.
    pub result: &'static str,
}

#[derive(Clone)]
pub struct ImageMetrics {
    /// Reconciles by result (`ok`, `error`), counted by the controller.
    pub reconciles: Family<Outcome, Counter>,
    pub attempts: Family<Outcome, Counter>,
    pub bytes: Counter,
    pub duration: Histogram,
    pub in_flight: Gauge,
    pub waiting: Gauge,
}

impl Default for ImageMetrics {
    fn default() -> Self {
        Self {
            reconciles: Family::default(),
            attempts: Family::default(),
            bytes: Counter::default(),
            // 0.25 s … ~2.3 h: a config-sized file to a multi-GiB image on a slow link.
            duration: Histogram::new(exponential_buckets(0.25, 2.0, 16)),
            in_flight: Gauge::default(),
            waiting: Gauge::default(),
        }
    }
}

impl ImageMetrics {
    /// Records a finished attempt.
    pub fn attempt(&self, result: &'static str, bytes: u64, seconds: f64) {
        self.attempts.get_or_create(&Outcome { result }).inc();
        self.bytes.inc_by(bytes);
        self.duration.observe(seconds);
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "ztp_controller_reconciles",
            "OsImage reconciles by result",
            self.reconciles.clone(),
        );
        registry.register("ztp_fetch_attempts", "Image fetch attempts by outcome", self.attempts.clone());
        registry.register("ztp_fetch_bytes", "Bytes received from image sources", self.bytes.clone());
        registry.register(
            "ztp_fetch_duration_seconds",
            "Duration of image fetch attempts (download, verification and commit)",
            self.duration.clone(),
        );
        registry.register("ztp_fetches_in_flight", "Image fetches running", self.in_flight.clone());
        registry.register(
            "ztp_fetches_waiting",
            "Image fetches waiting for a fetch slot (--max-concurrent-fetches)",
            self.waiting.clone(),
        );
    }
}

/// Keeps a gauge raised while it lives.
pub struct Raised(Gauge);

impl Raised {
    pub fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Raised {
    fn drop(&mut self) {
        self.0.dec();
    }
}

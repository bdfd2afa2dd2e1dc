//! Reconciling an OsImage: "the verified file is in the store and in the manifest".
//!
//! Already there with the right sha256 and size: nothing is fetched (a restart or resync costs
//! one manifest read and one stat). Otherwise the image is fetched into the store in one pass,
//! verified, committed and entered into the manifest through its compare-and-swap. Conflicts with
//! other OsImages (same path, different hash; two firmware images in one directory) stall the
//! newer one. Errors that can clear (an unreachable source, a 5xx, a timeout) retry with capped
//! exponential backoff for as long as it takes, the next attempt's time kept in the status (so
//! that no wake-up, whatever its cause, shortens the wait); errors that need a human (a 404, a
//! bad spec, a wrong checksum) stall at once. The annotation [`RETRY_ANNOTATION`] set to a new
//! value retries a stalled image without a spec change.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use tokio::sync::Semaphore;

use super::{
    EventType, ImageReporter, ReportError, ResolveError, SourceResolver,
    in_flight::{Cancelled, InFlight},
    metrics::{ImageMetrics, Raised},
    object_name,
    progress::{human_bytes, progress_text},
};
use crate::{
    api::{
        Artifact, ConditionStatus, ConditionType, DeletionPolicy, ImagePath, OsImage, OsImagePhase,
        OsImageStatus, Progress,
        conditions::{remove_condition, set_condition},
    },
    fetch::{FetchError, Fetcher},
    hash::Sha256Digest,
    store::{ManifestEntry, Store, StoreError},
};

/// One log line per transition of an OsImage, with the fields every such line carries
/// (`namespace`, `name`, `generation`, then `reason` and what the transition adds). INFO for the
/// normal course, WARN for a failure or a stall. Progress updates never log.
macro_rules! transition {
    ($level:ident, $image:expr, $($rest:tt)+) => {
        tracing::$level!(
            namespace = $image.metadata.namespace.as_deref().unwrap_or_default(),
            name = $image.metadata.name.as_deref().unwrap_or_default(),
            generation = $image.metadata.generation.unwrap_or_default(),
            $($rest)+
        )
    };
}

/// Set to any new value, retries a stalled (or backing-off) image at once, without a spec change.
pub const RETRY_ANNOTATION: &str = "ztp.netops.dev/retry";

/// Retry and reporting policy.
#[derive(Debug, Clone)]
pub struct ImagePolicy {
    /// Fetch attempts per generation before a transiently failing image is Stalled; `None`
    /// retries for as long as it takes.
    pub max_attempts: Option<u32>,
    /// Wait after the first failed attempt; doubles per attempt up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Least time between two progress updates of the status while bytes flow.
    pub progress_interval: Duration,
    /// Periodic re-check of Ready images (costs a manifest read and a stat).
    pub resync: Duration,
    /// Recheck interval while the manifest is malformed (a human has to fix it).
    pub manifest_recheck: Duration,
}

impl Default for ImagePolicy {
    fn default() -> Self {
        Self {
            max_attempts: None,
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
            progress_interval: Duration::from_secs(2),
            resync: Duration::from_secs(600),
            manifest_recheck: Duration::from_secs(30),
        }
    }
}

/// What the core needs, whoever drives it.
#[derive(Clone)]
pub struct ImageContext {
    pub store: Store,
    pub fetcher: Fetcher,
    /// Bounds concurrent fetches.
    pub fetch_slots: Arc<Semaphore>,
    pub policy: ImagePolicy,
    /// Base URL devices use (`https://ztp.example.net`), for `status.artifact.url`.
    pub external_url: Option<String>,
    /// What fetches count (shared handles).
    pub metrics: ImageMetrics,
    /// Running fetches, stopped when their OsImage is deleted or its spec changes (fed by the
    /// controller's watch; see [`super::in_flight`]).
    pub in_flight: InFlight,
}

/// When to look at the object again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Settled; check again after this long (resync) or when the object changes.
    Resync(Duration),
    /// Something is pending; retry after this long.
    Retry(Duration),
    /// Stalled: wait for the user to change something.
    Stalled,
}

/// The manifest `owner` of entries written for this OsImage.
pub fn owner_of(image: &OsImage) -> String {
    format!("osimage/{}", object_name(&image.metadata))
}

fn now() -> Time {
    Time(Timestamp::now())
}

/// Builds statuses: keeps conditions' transition times, sets observedGeneration.
struct StatusBuilder {
    status: OsImageStatus,
    generation: Option<i64>,
}

impl StatusBuilder {
    fn new(image: &OsImage) -> Self {
        let generation = image.metadata.generation;
        let mut status = image.status.clone().unwrap_or_default();
        if status.observed_generation != generation {
            status.attempts = None;
        }
        if let Some(value) = retry_requested(image) {
            // A retry asked for by hand: a fresh start (attempts and wait), once per value.
            status.attempts = None;
            status.last_retry = Some(value.to_owned());
        }
        status.observed_generation = generation;
        // Whoever builds a status acts now: the wait (if any) is over.
        status.next_attempt_time = None;
        Self { status, generation }
    }

    fn cond(&mut self, t: ConditionType, s: ConditionStatus, reason: &str, message: &str) {
        set_condition(&mut self.status.conditions, t, s, reason, message, self.generation, now());
    }

    fn ready(mut self, artifact: Artifact, message: String) -> OsImageStatus {
        self.cond(ConditionType::Ready, ConditionStatus::True, "Verified", &message);
        remove_condition(&mut self.status.conditions, ConditionType::Reconciling);
        remove_condition(&mut self.status.conditions, ConditionType::Stalled);
        self.status.phase = Some(OsImagePhase::Ready);
        self.status.progress_text = Some(human_bytes(u64::try_from(artifact.size).unwrap_or(0)));
        self.status.artifact = Some(artifact);
        self.status.progress = None;
        self.status.message = Some(message);
        self.status
    }

    fn reconciling(mut self, phase: OsImagePhase, reason: &str, message: String) -> OsImageStatus {
        self.cond(ConditionType::Ready, ConditionStatus::False, reason, &message);
        self.cond(ConditionType::Reconciling, ConditionStatus::True, reason, &message);
        remove_condition(&mut self.status.conditions, ConditionType::Stalled);
        self.status.phase = Some(phase);
        self.status.progress_text = None;
        self.status.message = Some(message);
        self.status
    }

    fn stalled(mut self, reason: &str, message: String) -> OsImageStatus {
        self.cond(ConditionType::Ready, ConditionStatus::False, reason, &message);
        self.cond(ConditionType::Stalled, ConditionStatus::True, reason, &message);
        remove_condition(&mut self.status.conditions, ConditionType::Reconciling);
        self.status.phase = Some(OsImagePhase::Failed);
        self.status.progress = None;
        self.status.progress_text = None;
        self.status.message = Some(message);
        self.status
    }
}

/// The value of [`RETRY_ANNOTATION`] when it differs from the one last acted on.
fn retry_requested(image: &OsImage) -> Option<&str> {
    let value = image.metadata.annotations.as_ref()?.get(RETRY_ANNOTATION)?;
    let last = image.status.as_ref().and_then(|s| s.last_retry.as_deref());
    (last != Some(value.as_str())).then_some(value.as_str())
}

/// True when this generation already failed for good (wrong checksum, a source that needs a
/// human, attempts exhausted) and no retry was asked for.
fn fetch_gave_up(image: &OsImage) -> bool {
    let Some(status) = &image.status else { return false };
    status.observed_generation == image.metadata.generation
        && retry_requested(image).is_none()
        && crate::api::conditions::find_condition(&status.conditions, ConditionType::Stalled).is_some_and(
            |c| c.status == "True" && matches!(c.reason.as_str(), "ChecksumMismatch" | "FetchFailed"),
        )
}

/// How long this generation still has to wait before its next attempt (the time is kept in the
/// status, so a controller restart or any other wake-up keeps the backoff). `None`: act now.
pub fn wait_remaining(image: &OsImage, now: Timestamp) -> Option<Duration> {
    let status = image.status.as_ref()?;
    if status.observed_generation != image.metadata.generation || retry_requested(image).is_some() {
        return None;
    }
    let due = status.next_attempt_time.as_ref()?.0;
    let left = due.duration_since(now);
    (left.is_positive()).then(|| Duration::try_from(left).unwrap_or_default())
}

/// The validated facts of a spec.
struct Target {
    path: ImagePath,
    sha256: Sha256Digest,
}

fn target_of(image: &OsImage) -> Result<Target, String> {
    let filename = image.spec.effective_filename().ok_or_else(|| {
        "no filename: set spec.filename (the source's last path segment is empty)".to_owned()
    })?;
    let path =
        ImagePath::new(&image.spec.platform, &image.spec.version, &filename).map_err(|e| e.to_string())?;
    let sha256 = image.spec.sha256.parse::<Sha256Digest>().map_err(|e| format!("spec.sha256: {e}"))?;
    Ok(Target { path, sha256 })
}

/// The order that decides which of two conflicting OsImages wins: older first, then by name.
fn age_key(image: &OsImage) -> (Option<Timestamp>, String) {
    (image.metadata.creation_timestamp.as_ref().map(|t| t.0), object_name(&image.metadata))
}

/// A conflict this image loses against an older one, as a message naming the other.
fn conflict(image: &OsImage, target: &Target, others: &[Arc<OsImage>]) -> Option<String> {
    let me = age_key(image);
    let mut older: Vec<&Arc<OsImage>> = others
        .iter()
        .filter(|o| o.metadata.deletion_timestamp.is_none())
        .filter(|o| object_name(&o.metadata) != object_name(&image.metadata))
        .filter(|o| age_key(o) < me)
        .collect();
    older.sort_by_key(|o| age_key(o));
    for other in older {
        let Ok(theirs) = target_of(other) else { continue };
        let name = object_name(&other.metadata);
        if theirs.path == target.path && theirs.sha256 != target.sha256 {
            return Some(format!(
                "OsImage {name} already claims {} with sha256 {}; this one wants sha256 {}",
                target.path, theirs.sha256, target.sha256
            ));
        }
        if image.spec.firmware_image
            && other.spec.firmware_image
            && theirs.path != target.path
            && theirs.path.platform() == target.path.platform()
            && theirs.path.version() == target.path.version()
        {
            return Some(format!(
                "OsImage {name} is already the firmware image of {}/{}/ ({}); set firmwareImage: false on one of them",
                target.path.platform(),
                target.path.version(),
                theirs.path.filename()
            ));
        }
    }
    None
}

impl ImageContext {
    fn artifact(&self, path: &ImagePath, sha256: &Sha256Digest, size: u64) -> Artifact {
        Artifact {
            path: path.to_string(),
            sha256: sha256.to_string(),
            size: i64::try_from(size).unwrap_or(i64::MAX),
            url: self.external_url.as_ref().map(|u| format!("{}/images/{path}", u.trim_end_matches('/'))),
            last_update_time: Some(now()),
        }
    }

    /// ` of N` when attempts are capped.
    fn of_max(&self) -> String {
        self.policy.max_attempts.map(|m| format!(" of {m}")).unwrap_or_default()
    }

    fn backoff(&self, attempts: u32) -> Duration {
        let factor = 1u32 << attempts.saturating_sub(1).min(16);
        self.policy.backoff_base.saturating_mul(factor).min(self.policy.backoff_max)
    }

    /// Brings one OsImage to "verified file in the store and in the manifest", reporting status
    /// and events on the way. `others` are all OsImages known (for conflict detection).
    pub async fn reconcile(
        &self,
        image: &OsImage,
        others: &[Arc<OsImage>],
        reporter: &dyn ImageReporter,
        resolver: &dyn SourceResolver,
    ) -> Result<Next, ReportError> {
        let was = image.status.as_ref().and_then(|s| s.phase);
        if fetch_gave_up(image) {
            // Downloading again cannot help until the spec changes (a new generation) or a
            // retry is asked for.
            return Ok(Next::Stalled);
        }
        if let Some(left) = wait_remaining(image, Timestamp::now()) {
            return Ok(Next::Retry(left));
        }
        let status = StatusBuilder::new(image);

        let target = match target_of(image) {
            Ok(t) => t,
            Err(msg) => return self.stall(image, reporter, status, "InvalidSpec", msg).await,
        };
        if let Some(msg) = conflict(image, &target, others) {
            return self.stall(image, reporter, status, "Conflict", msg).await;
        }

        let manifest = match self.store.manifest().await {
            Ok(m) => m,
            Err(e) => return self.store_failure(image, reporter, status, e).await,
        };

        let owner = owner_of(image);
        let mut replace = false;
        if let Some(entry) = manifest.get(&target.path) {
            if entry.sha256 == target.sha256 {
                match self.store.stat(&target.path).await {
                    Ok(Some(info)) if entry.size.is_none_or(|s| s == info.size) => {
                        return self.settle(image, reporter, status, &target, info.size, was, false).await;
                    }
                    Ok(_) => {} // entry without (complete) file: fetch again
                    Err(e) => {
                        return self
                            .retry_later(image, reporter, status, "StoreUnavailable", e.to_string())
                            .await;
                    }
                }
            } else if entry.owner.as_deref() == Some(owner.as_str()) {
                replace = true; // our own older version: the spec changed
            } else {
                let by = entry.owner.as_deref().map(|o| format!(" (written by {o})")).unwrap_or_default();
                let msg = format!(
                    "the store already holds a different file at {} (sha256 {}){by}; remove it or choose another version or filename",
                    target.path, entry.sha256
                );
                return self.stall(image, reporter, status, "Conflict", msg).await;
            }
        } else if let Ok(Some(_)) = self.store.stat(&target.path).await {
            // A file without a manifest entry (a crash between rename and manifest update, or a
            // copy by hand): adopt it if it is ours, never overwrite it if it is not.
            match self.store.hash_of(&target.path).await {
                Ok(c) if c.sha256 == target.sha256 => {
                    return self.settle(image, reporter, status, &target, c.size, was, true).await;
                }
                Ok(c) => {
                    let msg = format!(
                        "an untracked file at {} has sha256 {}, not {}; remove it or choose another version or filename",
                        target.path, c.sha256, target.sha256
                    );
                    return self.stall(image, reporter, status, "Conflict", msg).await;
                }
                Err(e) => {
                    return self
                        .retry_later(image, reporter, status, "StoreUnavailable", e.to_string())
                        .await;
                }
            }
        }
        if image.spec.firmware_image
            && let Some(other) = manifest.firmware_of(target.path.platform(), target.path.version())
            && other.path != target.path.to_string()
            && other.owner.as_deref() != Some(owner.as_str())
        {
            let by = other.owner.as_deref().map(|o| format!(" (written by {o})")).unwrap_or_default();
            let msg = format!(
                "{}/{}/ already has a different firmware image, {}{by}; remove it or set firmwareImage: false",
                target.path.platform(),
                target.path.version(),
                other.filename
            );
            return self.stall(image, reporter, status, "Conflict", msg).await;
        }

        self.fetch(image, reporter, resolver, status, &target, replace).await
    }

    /// Enters the file in the manifest (if needed) and reports Ready.
    #[allow(clippy::too_many_arguments)]
    async fn settle(
        &self,
        image: &OsImage,
        reporter: &dyn ImageReporter,
        status: StatusBuilder,
        target: &Target,
        size: u64,
        was: Option<OsImagePhase>,
        write_manifest: bool,
    ) -> Result<Next, ReportError> {
        if write_manifest && let Err(e) = self.enter(image, target, size, false).await {
            return self.store_failure(image, reporter, status, e).await;
        }
        let msg = format!("{} is stored and verified ({size} bytes)", target.path);
        let new = status.ready(self.artifact(&target.path, &target.sha256, size), msg.clone());
        if was != Some(OsImagePhase::Ready) {
            self.report_transition(image, reporter, &new, EventType::Normal, "Stored", &msg).await?;
            let how = if write_manifest { "adopted an untracked file" } else { "already in the store" };
            transition!(info, image, reason = "Stored", path = %target.path, bytes = size, how, "OsImage ready");
        } else if image.status.as_ref() != Some(&new) {
            reporter.status(image, &new).await?;
        }
        Ok(Next::Resync(self.policy.resync))
    }

    async fn enter(
        &self,
        image: &OsImage,
        target: &Target,
        size: u64,
        replace: bool,
    ) -> Result<(), StoreError> {
        let entry = self.entry_of(image, target, size);
        self.store
            .update_manifest(|m| {
                m.insert(entry.clone(), replace)?;
                Ok(())
            })
            .await
            .map(|_| ())
    }

    fn entry_of(&self, image: &OsImage, target: &Target, size: u64) -> ManifestEntry {
        ManifestEntry::new(
            &target.path,
            target.sha256,
            size,
            image.spec.firmware_image,
            Some(owner_of(image)),
        )
    }

    async fn fetch(
        &self,
        image: &OsImage,
        reporter: &dyn ImageReporter,
        resolver: &dyn SourceResolver,
        mut status: StatusBuilder,
        target: &Target,
        replace: bool,
    ) -> Result<Next, ReportError> {
        let source = match resolver.resolve(image).await {
            Ok(s) => s,
            Err(ResolveError::InvalidSpec(msg)) => {
                return self.stall(image, reporter, status, "InvalidSpec", msg).await;
            }
            Err(e @ ResolveError::Missing(_)) => {
                return self.retry_later(image, reporter, status, "SourceUnresolved", e.to_string()).await;
            }
        };
        let attempt = u32::try_from(status.status.attempts.unwrap_or(0)).unwrap_or(0).saturating_add(1);
        status.status.attempts = Some(i32::try_from(attempt).unwrap_or(i32::MAX));

        // Registered before waiting for a slot: a queued fetch is stopped just the same.
        let guard = self.in_flight.start(image);
        let _slot = match self.fetch_slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                let queued = StatusBuilder { status: status.status.clone(), generation: status.generation }
                    .reconciling(OsImagePhase::Pending, "Queued", "waiting for a free fetch slot".into());
                reporter.status(image, &queued).await?;
                transition!(info, image, reason = "Queued", "OsImage waits for a free fetch slot");
                let _waiting = Raised::new(&self.metrics.waiting);
                tokio::select! {
                    slot = self.fetch_slots.clone().acquire_owned() => {
                        slot.expect("the fetch semaphore is never closed")
                    }
                    why = guard.cancelled() => {
                        let status = StatusBuilder { status: queued, generation: status.generation };
                        return self.cancelled(image, reporter, status, why, 0, std::time::Instant::now()).await;
                    }
                }
            }
        };
        let _in_flight = Raised::new(&self.metrics.in_flight);
        let started = std::time::Instant::now();

        let describe = source.describe();
        let msg = format!("fetching {describe} (attempt {attempt}{})", self.of_max());
        let mut fetching = StatusBuilder { status: status.status.clone(), generation: status.generation }
            .reconciling(OsImagePhase::Fetching, "Fetching", msg.clone());
        fetching.progress = Some(Progress { bytes_done: 0, bytes_total: None });
        fetching.progress_text = Some(progress_text(0, None));
        self.report_transition(image, reporter, &fetching, EventType::Normal, "Fetching", &msg).await?;
        transition!(info, image, reason = "Fetching", source = %describe, attempt, "OsImage fetch started");

        let done = Arc::new(AtomicU64::new(0));
        let total = Arc::new(AtomicU64::new(u64::MAX));
        let result = {
            let (d, t) = (done.clone(), total.clone());
            let on_progress = move |bytes: u64, of: Option<u64>| {
                d.store(bytes, Ordering::Relaxed);
                t.store(of.unwrap_or(u64::MAX), Ordering::Relaxed);
            };
            let work = async {
                let mut writer =
                    self.store.writer(&target.path, target.sha256).await.map_err(FetchError::from)?;
                let fetched = tokio::select! {
                    r = self.fetcher.fetch(&source, &mut writer, &on_progress) => r,
                    why = guard.cancelled() => {
                        // Nothing partial stays: the pending file (or upload) goes with it.
                        writer.abort().await;
                        return Err(AttemptError::Cancelled(why));
                    }
                };
                match fetched {
                    Ok(fetched) => {
                        // The file and its manifest entry, as one decision (a racing upload of
                        // the same path, or a file copied there meanwhile, is a conflict).
                        let committed = writer
                            .commit_entry(fetched.announced_size, self.entry_of(image, target, 0), replace)
                            .await
                            .map_err(|e| (e, fetched.content_type))?;
                        Ok(committed)
                    }
                    Err(e) => {
                        writer.abort().await;
                        Err(e.into())
                    }
                }
            };
            tokio::pin!(work);
            let mut ticker = tokio::time::interval(self.policy.progress_interval);
            ticker.tick().await;
            loop {
                tokio::select! {
                    r = &mut work => break r,
                    _ = ticker.tick() => {
                        let bytes = done.load(Ordering::Relaxed);
                        let of = total.load(Ordering::Relaxed);
                        let of = (of != u64::MAX).then_some(of);
                        let mut s = fetching.clone();
                        s.progress = Some(Progress {
                            bytes_done: i64::try_from(bytes).unwrap_or(i64::MAX),
                            bytes_total: of.map(|of| i64::try_from(of).unwrap_or(i64::MAX)),
                        });
                        s.progress_text = Some(progress_text(bytes, of));
                        // Progress is informative: a failed update must not abort the transfer.
                        if let Err(e) = reporter.status(image, &s).await {
                            tracing::debug!(error = %e, "progress update failed");
                        }
                    }
                }
            }
        };

        let status = StatusBuilder { status: fetching, generation: status.generation };
        let bytes = done.load(Ordering::Relaxed);
        let outcome = match &result {
            Ok(_) => "stored",
            Err(AttemptError::Cancelled(_)) => "cancelled",
            Err(AttemptError::Store(StoreError::ChecksumMismatch { .. }, _)) => "checksum_mismatch",
            Err(AttemptError::Store(StoreError::Conflict(_) | StoreError::Manifest(_), _)) => {
                "store_conflict"
            }
            Err(AttemptError::Store(..)) => "failed_transient",
            Err(AttemptError::Fetch(e)) if e.is_transient() => "failed_transient",
            Err(AttemptError::Fetch(_)) => "failed_permanent",
        };
        self.metrics.attempt(outcome, bytes, started.elapsed().as_secs_f64());
        match result {
            Ok(committed) => {
                let elapsed = started.elapsed();
                let rate = rate_of(committed.size, elapsed);
                let msg = format!("{} is stored and verified ({} bytes)", target.path, committed.size);
                let note = format!(
                    "{} is stored and verified ({} in {}, {}/s)",
                    target.path,
                    human_bytes(committed.size),
                    human_duration(elapsed),
                    human_bytes(rate)
                );
                let new =
                    status.ready(self.artifact(&target.path, &committed.sha256, committed.size), msg.clone());
                self.report_transition(image, reporter, &new, EventType::Normal, "Stored", &note).await?;
                transition!(
                    info, image,
                    reason = "Stored", path = %target.path, bytes = committed.size,
                    seconds = elapsed.as_secs_f64(), bytes_per_second = rate,
                    "OsImage stored and verified"
                );
                Ok(Next::Resync(self.policy.resync))
            }
            Err(AttemptError::Cancelled(why)) => {
                self.cancelled(image, reporter, status, why, bytes, started).await
            }
            Err(AttemptError::Store(e @ StoreError::ChecksumMismatch { .. }, content_type)) => {
                let hint = content_type
                    .filter(|t| t.starts_with("text/html"))
                    .map(|_| " (the source answered with an HTML page: an error or login page?)")
                    .unwrap_or_default();
                self.stall(image, reporter, status, "ChecksumMismatch", format!("{describe}: {e}{hint}"))
                    .await
            }
            Err(AttemptError::Store(e @ (StoreError::Conflict(_) | StoreError::Manifest(_)), _)) => {
                self.store_failure(image, reporter, status, e).await
            }
            // Size mismatch, a full disk, an unreachable bucket: this attempt failed.
            Err(AttemptError::Store(e, _)) => {
                self.failed_attempt(image, reporter, status, attempt, format!("{describe}: {e}"), true).await
            }
            Err(AttemptError::Fetch(e)) => {
                let transient = e.is_transient();
                self.failed_attempt(image, reporter, status, attempt, e.to_string(), transient).await
            }
        }
    }

    /// A fetch stopped because its OsImage is being deleted or its spec changed: the status
    /// says so (best effort: the object may be gone), and the object is looked at again at once
    /// (the finalizer's cleanup, or the new spec).
    async fn cancelled(
        &self,
        image: &OsImage,
        reporter: &dyn ImageReporter,
        status: StatusBuilder,
        why: Cancelled,
        bytes: u64,
        started: std::time::Instant,
    ) -> Result<Next, ReportError> {
        let (phase, msg) = match &why {
            Cancelled::Deleted => (OsImagePhase::Deleting, format!("fetch cancelled: {why}")),
            Cancelled::SpecChanged { .. } => {
                (OsImagePhase::Pending, format!("fetch cancelled: {why}; starting over with the new spec"))
            }
        };
        let mut new = status.reconciling(phase, "Cancelled", msg.clone());
        new.progress = None;
        if let Err(e) = reporter.status(image, &new).await {
            tracing::debug!(error = %e, "status of a cancelled fetch not written");
        }
        reporter.event(image, EventType::Normal, "Cancelled", &msg).await;
        transition!(
            info, image,
            reason = "Cancelled", why = %why, bytes, seconds = started.elapsed().as_secs_f64(),
            "OsImage fetch cancelled"
        );
        Ok(Next::Retry(Duration::ZERO))
    }

    async fn failed_attempt(
        &self,
        image: &OsImage,
        reporter: &dyn ImageReporter,
        status: StatusBuilder,
        attempt: u32,
        error: String,
        transient: bool,
    ) -> Result<Next, ReportError> {
        let exhausted = self.policy.max_attempts.is_some_and(|max| attempt >= max);
        if !transient || exhausted {
            let msg = if transient { format!("gave up after {attempt} attempts: {error}") } else { error };
            let msg = format!("{msg}; to try again, set the annotation {RETRY_ANNOTATION} to a new value");
            return self.stall(image, reporter, status, "FetchFailed", msg).await;
        }
        let wait = self.backoff(attempt);
        let due = Timestamp::now() + wait;
        let msg = format!(
            "attempt {attempt}{} failed: {error}; next attempt at {} (in {})",
            self.of_max(),
            due.round(k8s_openapi::jiff::Unit::Second).unwrap_or(due),
            human_duration(wait)
        );
        let mut new = status.reconciling(OsImagePhase::Pending, "RetryingFetch", msg.clone());
        new.next_attempt_time = Some(Time(due));
        new.progress = None;
        reporter.status(image, &new).await?;
        reporter.event(image, EventType::Warning, "FetchFailed", &msg).await;
        transition!(
            warn, image,
            reason = "RetryingFetch", attempt, %error, retry = true,
            next_attempt_in = %human_duration(wait), next_attempt_at = %due.round(k8s_openapi::jiff::Unit::Second).unwrap_or(due),
            "OsImage fetch failed; will retry"
        );
        Ok(Next::Retry(wait))
    }

    async fn store_failure(
        &self,
        image: &OsImage,
        reporter: &dyn ImageReporter,
        status: StatusBuilder,
        e: StoreError,
    ) -> Result<Next, ReportError> {
        match e {
            StoreError::Conflict(c) => self.stall(image, reporter, status, "Conflict", c.to_string()).await,
            StoreError::Manifest(m) => {
                let msg = format!("{m}; fix or remove it (it is left as it is)");
                let new = status.stalled("ManifestInvalid", msg.clone());
                if self
                    .report_transition(image, reporter, &new, EventType::Warning, "ManifestInvalid", &msg)
                    .await?
                {
                    transition!(warn, image, reason = "ManifestInvalid", message = %msg, "OsImage waits for the manifest to be fixed");
                }
                Ok(Next::Retry(self.policy.manifest_recheck))
            }
            other => self.retry_later(image, reporter, status, "StoreUnavailable", other.to_string()).await,
        }
    }

    async fn retry_later(
        &self,
        image: &OsImage,
        reporter: &dyn ImageReporter,
        status: StatusBuilder,
        reason: &str,
        msg: String,
    ) -> Result<Next, ReportError> {
        let new = status.reconciling(OsImagePhase::Pending, reason, msg.clone());
        if self.report_transition(image, reporter, &new, EventType::Warning, reason, &msg).await? {
            transition!(warn, image, reason, message = %msg, retry = true, "OsImage cannot proceed yet; will retry");
        }
        Ok(Next::Retry(self.policy.backoff_base))
    }

    async fn stall(
        &self,
        image: &OsImage,
        reporter: &dyn ImageReporter,
        status: StatusBuilder,
        reason: &str,
        msg: String,
    ) -> Result<Next, ReportError> {
        let new = status.stalled(reason, msg.clone());
        if self.report_transition(image, reporter, &new, EventType::Warning, reason, &msg).await? {
            transition!(warn, image, reason, message = %msg, retry = false, "OsImage stalled: needs a change from a human");
        }
        Ok(Next::Stalled)
    }

    /// Writes the status, and an event when the Ready condition's reason changed (a transition).
    /// Returns whether it was one.
    async fn report_transition(
        &self,
        image: &OsImage,
        reporter: &dyn ImageReporter,
        new: &OsImageStatus,
        kind: EventType,
        reason: &str,
        note: &str,
    ) -> Result<bool, ReportError> {
        let ready_reason = |s: Option<&OsImageStatus>| {
            s.and_then(|s| crate::api::conditions::find_condition(&s.conditions, ConditionType::Ready))
                .map(|c| (c.reason.clone(), c.message.clone()))
        };
        let changed = ready_reason(image.status.as_ref()) != ready_reason(Some(new));
        if image.status.as_ref() != Some(new) {
            reporter.status(image, new).await?;
        }
        if changed {
            reporter.event(image, kind, reason, note).await;
        }
        Ok(changed)
    }

    /// Honours `deletionPolicy` when an OsImage goes away. `Delete` removes the file and its
    /// manifest entry only if the stored file is this image's (same sha256) and no other live
    /// OsImage wants the same file; `Retain` keeps both.
    pub async fn cleanup(
        &self,
        image: &OsImage,
        others: &[Arc<OsImage>],
        reporter: &dyn ImageReporter,
    ) -> Result<(), StoreError> {
        let Ok(target) = target_of(image) else { return Ok(()) };
        if image.spec.deletion_policy == DeletionPolicy::Retain {
            reporter
                .event(
                    image,
                    EventType::Normal,
                    "Retained",
                    &format!("{} kept (deletionPolicy: Retain)", target.path),
                )
                .await;
            return Ok(());
        }
        let me = object_name(&image.metadata);
        let shared_with = others.iter().find(|o| {
            o.metadata.deletion_timestamp.is_none()
                && object_name(&o.metadata) != me
                && target_of(o).is_ok_and(|t| t.path == target.path && t.sha256 == target.sha256)
        });
        if let Some(other) = shared_with {
            let heir = owner_of(other);
            self.store
                .update_manifest(|m| {
                    if let Some(e) = m.images.iter_mut().find(|e| e.path == target.path.to_string()) {
                        e.owner = Some(heir.clone());
                    }
                    Ok(())
                })
                .await?;
            let note =
                format!("{} kept: OsImage {} uses the same file", target.path, object_name(&other.metadata));
            reporter.event(image, EventType::Normal, "Retained", &note).await;
            return Ok(());
        }

        // The entry and the file together, under the store's write lock: an upload placing a new
        // file at the path cannot land between the two.
        let mut removed = false;
        self.store
            .remove_with(&target.path, |m| {
                let ours = m.get(&target.path).is_some_and(|e| e.sha256 == target.sha256);
                removed = ours && m.remove(&target.path).is_some();
                Ok(removed)
            })
            .await?;
        if !removed
            && self.store.stat(&target.path).await?.is_some()
            && self.store.manifest().await?.get(&target.path).is_none()
            // Untracked file at our path: delete only if it is byte for byte ours...
            && self.store.hash_of(&target.path).await?.sha256 == target.sha256
        {
            // ...and still untracked (nothing was placed there since).
            removed = self.store.remove_with(&target.path, |m| Ok(m.get(&target.path).is_none())).await?;
        }
        if removed {
            reporter
                .event(
                    image,
                    EventType::Normal,
                    "Deleted",
                    &format!("{} removed from the store", target.path),
                )
                .await;
        } else {
            let note = format!(
                "{} left in place: the stored file is not this image's (different sha256) or absent",
                target.path
            );
            reporter.event(image, EventType::Normal, "Retained", &note).await;
        }
        Ok(())
    }
}

/// Average bytes per second over `elapsed` (all of them when it took no measurable time).
fn rate_of(bytes: u64, elapsed: Duration) -> u64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { (bytes as f64 / secs) as u64 } else { bytes }
}

/// `1.5s`, `40s`, `5m`, `5m30s`: for messages.
fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..10 if d.subsec_millis() > 0 => format!("{:.1}s", d.as_secs_f64()),
        0..60 => format!("{secs}s"),
        _ if secs.is_multiple_of(60) => format!("{}m", secs / 60),
        _ => format!("{}m{}s", secs / 60, secs % 60),
    }
}

/// Why one fetch attempt failed.
enum AttemptError {
    Fetch(FetchError),
    /// Stopped from outside: the OsImage is being deleted or its spec changed.
    Cancelled(Cancelled),
    /// A store error at commit, with the source's content type (for the HTML hint).
    Store(StoreError, Option<String>),
}

impl From<FetchError> for AttemptError {
    fn from(e: FetchError) -> Self {
        match e {
            FetchError::Store(s) => Self::Store(s, None),
            other => Self::Fetch(other),
        }
    }
}

impl From<(StoreError, Option<String>)> for AttemptError {
    fn from((e, ct): (StoreError, Option<String>)) -> Self {
        Self::Store(e, ct)
    }
}

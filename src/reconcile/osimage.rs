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
    routes::url,
    store::{Manifest, ManifestEntry, Store, StoreError},
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
#[derive(Clone)]
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

/// What the store holds at an image's path, as [`decide`] needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnDisk {
    /// Not looked at: the manifest entry already decides.
    NotLooked,
    /// No file.
    Absent,
    /// The file of a manifest entry with the right sha256, and its size.
    Tracked { size: u64 },
    /// A file without a manifest entry, hashed.
    Untracked { sha256: Sha256Digest, size: u64 },
}

/// What to do about an image whose target and conflicts with other OsImages were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    /// The right file is stored: report Ready (`enter`: adopt it into the manifest first).
    Settle { size: u64, enter: bool },
    /// Fetch it (`replace`: over this image's own older version in the manifest).
    Fetch { replace: bool },
    /// Another file holds the path (or the version's firmware slot): a human must choose.
    Stall { reason: &'static str, message: String },
}

/// The decision for `target` (of an image that is a firmware image when `firmware`, owner
/// `owner`) given the manifest and what [`ImageContext::on_disk`] found. Pure.
fn decide(target: &Target, firmware: bool, owner: &str, manifest: &Manifest, on_disk: OnDisk) -> Decision {
    let mut replace = false;
    match (manifest.get(&target.path), on_disk) {
        (Some(entry), found) if entry.sha256 == target.sha256 => {
            if let OnDisk::Tracked { size } = found
                && entry.size.is_none_or(|s| s == size)
            {
                return Decision::Settle { size, enter: false };
            }
            // An entry without (complete) file: fetch again.
        }
        // Our own older version: the spec changed.
        (Some(entry), _) if entry.owner.as_deref() == Some(owner) => replace = true,
        (Some(entry), _) => {
            let by = entry.owner.as_deref().map(|o| format!(" (written by {o})")).unwrap_or_default();
            let message = format!(
                "the store already holds a different file at {} (sha256 {}){by}; remove it or choose another version or filename",
                target.path, entry.sha256
            );
            return Decision::Stall { reason: "Conflict", message };
        }
        // A file without a manifest entry (a crash between rename and manifest update, or a copy
        // by hand): adopt it if it is ours, never overwrite it if it is not.
        (None, OnDisk::Untracked { sha256, size }) if sha256 == target.sha256 => {
            return Decision::Settle { size, enter: true };
        }
        (None, OnDisk::Untracked { sha256, .. }) => {
            let message = format!(
                "an untracked file at {} has sha256 {sha256}, not {}; remove it or choose another version or filename",
                target.path, target.sha256
            );
            return Decision::Stall { reason: "Conflict", message };
        }
        (None, _) => {}
    }
    if firmware
        && let Some(other) = manifest.firmware_of(target.path.platform(), target.path.version())
        && other.path != target.path.to_string()
        && other.owner.as_deref() != Some(owner)
    {
        let by = other.owner.as_deref().map(|o| format!(" (written by {o})")).unwrap_or_default();
        let message = format!(
            "{}/{}/ already has a different firmware image, {}{by}; remove it or set firmwareImage: false",
            target.path.platform(),
            target.path.version(),
            other.filename
        );
        return Decision::Stall { reason: "Conflict", message };
    }
    Decision::Fetch { replace }
}

impl ImageContext {
    fn artifact(&self, path: &ImagePath, sha256: &Sha256Digest, size: u64) -> Artifact {
        Artifact {
            path: path.to_string(),
            sha256: sha256.to_string(),
            size: i64::try_from(size).unwrap_or(i64::MAX),
            url: self.external_url.as_ref().map(|u| url::image(u.trim_end_matches('/'), &path.to_string())),
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
        let attempt = Attempt { ctx: self, image, reporter, status: StatusBuilder::new(image) };

        let target = match target_of(image) {
            Ok(t) => t,
            Err(msg) => return attempt.stall("InvalidSpec", msg).await,
        };
        if let Some(msg) = conflict(image, &target, others) {
            return attempt.stall("Conflict", msg).await;
        }

        let manifest = match self.store.manifest().await {
            Ok(m) => m,
            Err(e) => return attempt.store_failure(e).await,
        };
        let on_disk = match self.on_disk(&target, manifest.get(&target.path)).await {
            Ok(found) => found,
            Err(e) => return attempt.retry_later("StoreUnavailable", e.to_string()).await,
        };
        match decide(&target, image.spec.firmware_image, &owner_of(image), &manifest, on_disk) {
            Decision::Settle { size, enter } => attempt.settle(&target, size, was, enter).await,
            Decision::Fetch { replace } => attempt.fetch(resolver, &target, replace).await,
            Decision::Stall { reason, message } => attempt.stall(reason, message).await,
        }
    }

    /// What the store holds at the target's path, as far as [`decide`] needs it: the file's size
    /// when its manifest entry has the right sha256, its hash when it has no entry (an untracked
    /// file), nothing otherwise.
    async fn on_disk(&self, target: &Target, entry: Option<&ManifestEntry>) -> Result<OnDisk, StoreError> {
        match entry {
            Some(e) if e.sha256 == target.sha256 => Ok(self
                .store
                .stat(&target.path)
                .await?
                .map_or(OnDisk::Absent, |i| OnDisk::Tracked { size: i.size })),
            Some(_) => Ok(OnDisk::NotLooked),
            // A stat that fails is taken as no file: the fetch that follows finds out more.
            None => match self.store.stat(&target.path).await {
                Ok(Some(_)) => {
                    let c = self.store.hash_of(&target.path).await?;
                    Ok(OnDisk::Untracked { sha256: c.sha256, size: c.size })
                }
                _ => Ok(OnDisk::Absent),
            },
        }
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

/// One look at one OsImage: the context, the object, where to report, and the status being
/// built. Every way the look ends (settled, fetched, stalled, retried) is a method.
struct Attempt<'a> {
    ctx: &'a ImageContext,
    image: &'a OsImage,
    reporter: &'a dyn ImageReporter,
    status: StatusBuilder,
}

impl Attempt<'_> {
    /// Enters the file in the manifest (if needed) and reports Ready.
    async fn settle(
        &self,
        target: &Target,
        size: u64,
        was: Option<OsImagePhase>,
        write_manifest: bool,
    ) -> Result<Next, ReportError> {
        if write_manifest && let Err(e) = self.ctx.enter(self.image, target, size, false).await {
            return self.store_failure(e).await;
        }
        let msg = format!("{} is stored and verified ({size} bytes)", target.path);
        let new =
            self.status.clone().ready(self.ctx.artifact(&target.path, &target.sha256, size), msg.clone());
        if was != Some(OsImagePhase::Ready) {
            self.report_transition(&new, EventType::Normal, "Stored", &msg).await?;
            let how = if write_manifest { "adopted an untracked file" } else { "already in the store" };
            transition!(info, self.image, reason = "Stored", path = %target.path, bytes = size, how, "OsImage ready");
        } else if self.image.status.as_ref() != Some(&new) {
            self.reporter.status(self.image, &new).await?;
        }
        Ok(Next::Resync(self.ctx.policy.resync))
    }

    async fn fetch(
        mut self,
        resolver: &dyn SourceResolver,
        target: &Target,
        replace: bool,
    ) -> Result<Next, ReportError> {
        let source = match resolver.resolve(self.image).await {
            Ok(s) => s,
            Err(ResolveError::InvalidSpec(msg)) => {
                return self.stall("InvalidSpec", msg).await;
            }
            Err(e @ ResolveError::Missing(_)) => {
                return self.retry_later("SourceUnresolved", e.to_string()).await;
            }
        };
        let attempt = u32::try_from(self.status.status.attempts.unwrap_or(0)).unwrap_or(0).saturating_add(1);
        self.status.status.attempts = Some(i32::try_from(attempt).unwrap_or(i32::MAX));

        // Registered before waiting for a slot: a queued fetch is stopped just the same.
        let guard = self.ctx.in_flight.start(self.image);
        let _slot = match self.ctx.fetch_slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                let queued = self.status.clone().reconciling(
                    OsImagePhase::Pending,
                    "Queued",
                    "waiting for a free fetch slot".into(),
                );
                self.reporter.status(self.image, &queued).await?;
                transition!(info, self.image, reason = "Queued", "OsImage waits for a free fetch slot");
                let _waiting = Raised::new(&self.ctx.metrics.waiting);
                tokio::select! {
                    slot = self.ctx.fetch_slots.clone().acquire_owned() => {
                        slot.expect("the fetch semaphore is never closed")
                    }
                    why = guard.cancelled() => {
                        self.status = StatusBuilder { status: queued, generation: self.status.generation };
                        return self.cancelled(why, 0, std::time::Instant::now()).await;
                    }
                }
            }
        };
        let _in_flight = Raised::new(&self.ctx.metrics.in_flight);
        let started = std::time::Instant::now();

        let describe = source.describe();
        let msg = format!("fetching {describe} (attempt {attempt}{})", self.ctx.of_max());
        let mut fetching = self.status.clone().reconciling(OsImagePhase::Fetching, "Fetching", msg.clone());
        fetching.progress = Some(Progress { bytes_done: 0, bytes_total: None });
        fetching.progress_text = Some(progress_text(0, None));
        self.report_transition(&fetching, EventType::Normal, "Fetching", &msg).await?;
        transition!(info, self.image, reason = "Fetching", source = %describe, attempt, "OsImage fetch started");

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
                    self.ctx.store.writer(&target.path, target.sha256).await.map_err(FetchError::from)?;
                let fetched = tokio::select! {
                    r = self.ctx.fetcher.fetch(&source, &mut writer, &on_progress) => r,
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
                            .commit_entry(
                                fetched.announced_size,
                                self.ctx.entry_of(self.image, target, 0),
                                replace,
                            )
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
            let mut ticker = tokio::time::interval(self.ctx.policy.progress_interval);
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
                        if let Err(e) = self.reporter.status(self.image, &s).await {
                            tracing::debug!(error = %e, "progress update failed");
                        }
                    }
                }
            }
        };

        self.status = StatusBuilder { status: fetching, generation: self.status.generation };
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
        self.ctx.metrics.attempt(outcome, bytes, started.elapsed().as_secs_f64());
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
                let new = self
                    .status
                    .clone()
                    .ready(self.ctx.artifact(&target.path, &committed.sha256, committed.size), msg.clone());
                self.report_transition(&new, EventType::Normal, "Stored", &note).await?;
                transition!(info, self.image,
                    reason = "Stored", path = %target.path, bytes = committed.size,
                    seconds = elapsed.as_secs_f64(), bytes_per_second = rate,
                    "OsImage stored and verified"
                );
                Ok(Next::Resync(self.ctx.policy.resync))
            }
            Err(AttemptError::Cancelled(why)) => self.cancelled(why, bytes, started).await,
            Err(AttemptError::Store(e @ StoreError::ChecksumMismatch { .. }, content_type)) => {
                let hint = content_type
                    .filter(|t| t.starts_with("text/html"))
                    .map(|_| " (the source answered with an HTML page: an error or login page?)")
                    .unwrap_or_default();
                self.stall("ChecksumMismatch", format!("{describe}: {e}{hint}")).await
            }
            Err(AttemptError::Store(e @ (StoreError::Conflict(_) | StoreError::Manifest(_)), _)) => {
                self.store_failure(e).await
            }
            // Size mismatch, a full disk, an unreachable bucket: this attempt failed.
            Err(AttemptError::Store(e, _)) => {
                self.failed_attempt(attempt, format!("{describe}: {e}"), true).await
            }
            Err(AttemptError::Fetch(e)) => {
                let transient = e.is_transient();
                self.failed_attempt(attempt, e.to_string(), transient).await
            }
        }
    }

    /// A fetch stopped because its OsImage is being deleted or its spec changed: the status
    /// says so (best effort: the object may be gone), and the object is looked at again at once
    /// (the finalizer's cleanup, or the new spec).
    async fn cancelled(
        &self,
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
        let mut new = self.status.clone().reconciling(phase, "Cancelled", msg.clone());
        new.progress = None;
        if let Err(e) = self.reporter.status(self.image, &new).await {
            tracing::debug!(error = %e, "status of a cancelled fetch not written");
        }
        self.reporter.event(self.image, EventType::Normal, "Cancelled", &msg).await;
        transition!(info, self.image,
            reason = "Cancelled", why = %why, bytes, seconds = started.elapsed().as_secs_f64(),
            "OsImage fetch cancelled"
        );
        Ok(Next::Retry(Duration::ZERO))
    }

    async fn failed_attempt(
        &self,
        attempt: u32,
        error: String,
        transient: bool,
    ) -> Result<Next, ReportError> {
        let exhausted = self.ctx.policy.max_attempts.is_some_and(|max| attempt >= max);
        if !transient || exhausted {
            let msg = if transient { format!("gave up after {attempt} attempts: {error}") } else { error };
            let msg = format!("{msg}; to try again, set the annotation {RETRY_ANNOTATION} to a new value");
            return self.stall("FetchFailed", msg).await;
        }
        let wait = self.ctx.backoff(attempt);
        let due = Timestamp::now() + wait;
        let msg = format!(
            "attempt {attempt}{} failed: {error}; next attempt at {} (in {})",
            self.ctx.of_max(),
            due.round(k8s_openapi::jiff::Unit::Second).unwrap_or(due),
            human_duration(wait)
        );
        let mut new = self.status.clone().reconciling(OsImagePhase::Pending, "RetryingFetch", msg.clone());
        new.next_attempt_time = Some(Time(due));
        new.progress = None;
        self.reporter.status(self.image, &new).await?;
        self.reporter.event(self.image, EventType::Warning, "FetchFailed", &msg).await;
        transition!(warn, self.image,
            reason = "RetryingFetch", attempt, %error, retry = true,
            next_attempt_in = %human_duration(wait), next_attempt_at = %due.round(k8s_openapi::jiff::Unit::Second).unwrap_or(due),
            "OsImage fetch failed; will retry"
        );
        Ok(Next::Retry(wait))
    }

    async fn store_failure(&self, e: StoreError) -> Result<Next, ReportError> {
        match e {
            StoreError::Conflict(c) => self.stall("Conflict", c.to_string()).await,
            StoreError::Manifest(m) => {
                let msg = format!("{m}; fix or remove it (it is left as it is)");
                let new = self.status.clone().stalled("ManifestInvalid", msg.clone());
                if self.report_transition(&new, EventType::Warning, "ManifestInvalid", &msg).await? {
                    transition!(warn, self.image, reason = "ManifestInvalid", message = %msg, "OsImage waits for the manifest to be fixed");
                }
                Ok(Next::Retry(self.ctx.policy.manifest_recheck))
            }
            other => self.retry_later("StoreUnavailable", other.to_string()).await,
        }
    }

    async fn retry_later(&self, reason: &str, msg: String) -> Result<Next, ReportError> {
        let new = self.status.clone().reconciling(OsImagePhase::Pending, reason, msg.clone());
        if self.report_transition(&new, EventType::Warning, reason, &msg).await? {
            transition!(warn, self.image, reason, message = %msg, retry = true, "OsImage cannot proceed yet; will retry");
        }
        Ok(Next::Retry(self.ctx.policy.backoff_base))
    }

    async fn stall(&self, reason: &str, msg: String) -> Result<Next, ReportError> {
        let new = self.status.clone().stalled(reason, msg.clone());
        if self.report_transition(&new, EventType::Warning, reason, &msg).await? {
            transition!(warn, self.image, reason, message = %msg, retry = false, "OsImage stalled: needs a change from a human");
        }
        Ok(Next::Stalled)
    }

    /// Writes the status, and an event when the Ready condition's reason changed (a transition).
    /// Returns whether it was one.
    async fn report_transition(
        &self,
        new: &OsImageStatus,
        kind: EventType,
        reason: &str,
        note: &str,
    ) -> Result<bool, ReportError> {
        let ready_reason = |s: Option<&OsImageStatus>| {
            s.and_then(|s| crate::api::conditions::find_condition(&s.conditions, ConditionType::Ready))
                .map(|c| (c.reason.clone(), c.message.clone()))
        };
        let changed = ready_reason(self.image.status.as_ref()) != ready_reason(Some(new));
        if self.image.status.as_ref() != Some(new) {
            self.reporter.status(self.image, new).await?;
        }
        if changed {
            self.reporter.event(self.image, kind, reason, note).await;
        }
        Ok(changed)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        api::conditions::find_condition,
        reconcile::testing::{FileResolver, RecordingReporter, context, image, with_status},
    };

    const BYTES: &[u8] = b"a network operating system, or enough of one for a test";

    /// The Ready condition's `(status, reason)` and the phase.
    fn ready(s: &OsImageStatus) -> (String, String, Option<OsImagePhase>) {
        let c = find_condition(&s.conditions, ConditionType::Ready).expect("Ready");
        (c.status.clone(), c.reason.clone(), s.phase)
    }

    fn is(status: &str, reason: &str, phase: OsImagePhase) -> (String, String, Option<OsImagePhase>) {
        (status.into(), reason.into(), Some(phase))
    }

    /// A source file holding `bytes`.
    fn source(dir: &Path, bytes: &[u8]) -> PathBuf {
        let path = dir.join("source.bin");
        std::fs::write(&path, bytes).expect("source");
        path
    }

    /// Places `bytes` at the image's path in the store without a manifest entry (a copy by hand).
    fn untracked(dir: &Path, version: &str, bytes: &[u8]) {
        let at = dir.join("store/lab").join(version);
        std::fs::create_dir_all(&at).expect("mkdir");
        std::fs::write(at.join("nos.bin"), bytes).expect("untracked file");
    }

    fn target(version: &str, bytes: &[u8]) -> Target {
        Target {
            path: ImagePath::new("lab", version, "nos.bin").expect("path"),
            sha256: Sha256Digest::of(bytes),
        }
    }

    use std::path::{Path, PathBuf};

    #[tokio::test]
    async fn a_fetched_image_is_ready_then_costs_no_fetch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ctx = context(dir.path());
        let src = source(dir.path(), BYTES);
        let img = image("nos", "1", BYTES, 1);
        let reporter = RecordingReporter::default();
        let next =
            ctx.reconcile(&img, &[], &reporter, &FileResolver(Some(src.clone()))).await.expect("reconcile");
        assert_eq!(next, Next::Resync(ctx.policy.resync));
        assert_eq!(reporter.phases(), ["Fetching", "Ready"]);
        let stored = reporter.last();
        assert_eq!(ready(&stored), is("True", "Verified", OsImagePhase::Ready));
        let artifact = stored.artifact.clone().expect("artifact");
        assert_eq!((artifact.path.as_str(), artifact.size), ("lab/1/nos.bin", BYTES.len() as i64));
        assert_eq!(artifact.url.as_deref(), Some("http://ztp.test/images/lab/1/nos.bin"));
        assert_eq!(reporter.event_reasons(), ["Fetching", "Stored"]);

        // Already stored: with the source gone, nothing is fetched and nothing changes.
        std::fs::remove_file(&src).expect("remove source");
        let again = RecordingReporter::default();
        let img = with_status(&img, stored);
        let next = ctx.reconcile(&img, &[], &again, &FileResolver(Some(src))).await.expect("reconcile");
        assert_eq!(next, Next::Resync(ctx.policy.resync));
        // No fetch: Ready again at once (the artifact's update time is refreshed), no Event.
        assert_eq!(again.phases(), ["Ready"]);
        assert!(again.event_reasons().is_empty());
    }

    #[tokio::test]
    async fn an_untracked_file_with_the_right_hash_is_adopted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ctx = context(dir.path());
        untracked(dir.path(), "1", BYTES);
        let img = image("nos", "1", BYTES, 1);
        let reporter = RecordingReporter::default();
        // No source resolves: only adoption can make it Ready.
        let next = ctx.reconcile(&img, &[], &reporter, &FileResolver(None)).await.expect("reconcile");
        assert_eq!(next, Next::Resync(ctx.policy.resync));
        assert_eq!(reporter.phases(), ["Ready"]);
        let manifest = ctx.store.manifest().await.expect("manifest");
        let entry = manifest.get(&target("1", BYTES).path).expect("adopted into the manifest");
        assert_eq!(entry.owner.as_deref(), Some("osimage/default/nos"));
    }

    #[tokio::test]
    async fn an_untracked_file_with_another_hash_stalls_as_a_conflict_and_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ctx = context(dir.path());
        untracked(dir.path(), "1", b"somebody else's file");
        let src = source(dir.path(), BYTES);
        let img = image("nos", "1", BYTES, 1);
        let reporter = RecordingReporter::default();
        let next = ctx.reconcile(&img, &[], &reporter, &FileResolver(Some(src))).await.expect("reconcile");
        assert_eq!(next, Next::Stalled);
        let s = reporter.last();
        assert_eq!(ready(&s), is("False", "Conflict", OsImagePhase::Failed));
        assert!(
            s.message
                .as_deref()
                .is_some_and(|m| m.starts_with("an untracked file at lab/1/nos.bin has sha256"))
        );
        let kept = std::fs::read(dir.path().join("store/lab/1/nos.bin")).expect("file");
        assert_eq!(kept, b"somebody else's file");
    }

    #[tokio::test]
    async fn the_older_osimage_wins_a_path_conflict() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ctx = context(dir.path());
        let src = source(dir.path(), BYTES);
        let older = Arc::new(image("older", "1", b"the older image's bytes", 1));
        let newer = Arc::new(image("newer", "1", BYTES, 2));
        let all = [older.clone(), newer.clone()];
        let reporter = RecordingReporter::default();
        let next = ctx.reconcile(&newer, &all, &reporter, &FileResolver(Some(src))).await.expect("reconcile");
        assert_eq!(next, Next::Stalled);
        let s = reporter.last();
        assert_eq!(ready(&s), is("False", "Conflict", OsImagePhase::Failed));
        let msg = s.message.expect("message");
        assert!(msg.starts_with("OsImage default/older already claims lab/1/nos.bin"), "{msg}");
        assert!(ctx.store.manifest().await.expect("manifest").images.is_empty(), "the newer one stored");
    }

    #[tokio::test]
    async fn a_checksum_mismatch_stalls_once_and_stays_stalled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ctx = context(dir.path());
        let src = source(dir.path(), b"not the bytes the spec names");
        let img = image("nos", "1", BYTES, 1);
        let reporter = RecordingReporter::default();
        let next =
            ctx.reconcile(&img, &[], &reporter, &FileResolver(Some(src.clone()))).await.expect("reconcile");
        assert_eq!(next, Next::Stalled);
        let stalled = reporter.last();
        assert_eq!(ready(&stalled), is("False", "ChecksumMismatch", OsImagePhase::Failed));
        assert!(ctx.store.stat(&target("1", BYTES).path).await.expect("stat").is_none(), "a bad file kept");

        let again = RecordingReporter::default();
        let next = ctx.reconcile(&with_status(&img, stalled), &[], &again, &FileResolver(Some(src))).await;
        assert_eq!(next.expect("reconcile"), Next::Stalled);
        assert!(again.statuses.lock().expect("lock").is_empty(), "a stalled image fetched again");
    }

    #[tokio::test]
    async fn an_unresolvable_source_retries_later_without_an_attempt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ctx = context(dir.path());
        let img = image("nos", "1", BYTES, 1);
        let reporter = RecordingReporter::default();
        let next = ctx.reconcile(&img, &[], &reporter, &FileResolver(None)).await.expect("reconcile");
        assert_eq!(next, Next::Retry(ctx.policy.backoff_base));
        let s = reporter.last();
        assert_eq!(ready(&s), is("False", "SourceUnresolved", OsImagePhase::Pending));
        assert_eq!(s.message.as_deref(), Some("Secret default/creds not found"));
        assert_eq!(s.attempts, None);
    }

    #[tokio::test]
    async fn a_failed_fetch_backs_off_and_the_wait_survives_a_wake_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ctx = context(dir.path());
        let missing = dir.path().join("not-there.bin");
        let img = image("nos", "1", BYTES, 1);
        let reporter = RecordingReporter::default();
        let next = ctx.reconcile(&img, &[], &reporter, &FileResolver(Some(missing.clone()))).await;
        assert_eq!(next.expect("reconcile"), Next::Retry(Duration::from_secs(5)));
        let first = reporter.last();
        assert_eq!(ready(&first), is("False", "RetryingFetch", OsImagePhase::Pending));
        assert_eq!(first.attempts, Some(1));
        assert!(first.next_attempt_time.is_some());
        assert_eq!(reporter.event_reasons(), ["Fetching", "FetchFailed"]);

        // Woken before the time: no attempt, the rest of the wait.
        let early = RecordingReporter::default();
        let img = with_status(&img, first.clone());
        let next = ctx.reconcile(&img, &[], &early, &FileResolver(Some(missing.clone()))).await;
        assert!(
            matches!(next.expect("reconcile"), Next::Retry(d) if d > Duration::ZERO && d <= Duration::from_secs(5))
        );
        assert!(early.statuses.lock().expect("lock").is_empty());

        // Once the time has come, the second attempt waits twice as long.
        let mut due = first;
        due.next_attempt_time = None;
        let second = RecordingReporter::default();
        let next = ctx.reconcile(&with_status(&img, due), &[], &second, &FileResolver(Some(missing))).await;
        assert_eq!(next.expect("reconcile"), Next::Retry(Duration::from_secs(10)));
        assert_eq!(second.last().attempts, Some(2));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ctx = context(dir.path());
        let waits: Vec<u64> = (1..=9).map(|a| ctx.backoff(a).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
    }

    /// Stores the image by fetching it, and returns the stored status.
    async fn stored(ctx: &ImageContext, dir: &Path, img: &OsImage) -> OsImageStatus {
        let reporter = RecordingReporter::default();
        let src = source(dir, BYTES);
        ctx.reconcile(img, &[], &reporter, &FileResolver(Some(src))).await.expect("reconcile");
        reporter.last()
    }

    #[tokio::test]
    async fn cleanup_deletes_its_own_bytes_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ctx = context(dir.path());
        let img = image("nos", "1", BYTES, 1);
        stored(&ctx, dir.path(), &img).await;
        let path = target("1", BYTES).path;
        let reporter = RecordingReporter::default();
        ctx.cleanup(&img, &[], &reporter).await.expect("cleanup");
        assert_eq!(reporter.event_reasons(), ["Deleted"]);
        assert!(ctx.store.stat(&path).await.expect("stat").is_none());
        assert!(ctx.store.manifest().await.expect("manifest").get(&path).is_none());

        // Somebody else's file at the path (untracked, other bytes) is left in place.
        untracked(dir.path(), "1", b"somebody else's file");
        let reporter = RecordingReporter::default();
        ctx.cleanup(&img, &[], &reporter).await.expect("cleanup");
        assert_eq!(reporter.event_reasons(), ["Retained"]);
        assert!(ctx.store.stat(&path).await.expect("stat").is_some());
    }

    #[tokio::test]
    async fn cleanup_retains_with_the_retain_policy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ctx = context(dir.path());
        let mut img = image("nos", "1", BYTES, 1);
        img.spec.deletion_policy = DeletionPolicy::Retain;
        stored(&ctx, dir.path(), &img).await;
        let reporter = RecordingReporter::default();
        ctx.cleanup(&img, &[], &reporter).await.expect("cleanup");
        assert_eq!(reporter.event_reasons(), ["Retained"]);
        let path = target("1", BYTES).path;
        assert!(ctx.store.stat(&path).await.expect("stat").is_some());
        assert!(ctx.store.manifest().await.expect("manifest").get(&path).is_some());
    }

    #[tokio::test]
    async fn cleanup_hands_a_shared_file_over_to_the_other_osimage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ctx = context(dir.path());
        let img = image("nos", "1", BYTES, 1);
        stored(&ctx, dir.path(), &img).await;
        let sharer = Arc::new(image("same-file", "1", BYTES, 2));
        let reporter = RecordingReporter::default();
        ctx.cleanup(&img, &[sharer], &reporter).await.expect("cleanup");
        assert_eq!(reporter.event_reasons(), ["Retained"]);
        let manifest = ctx.store.manifest().await.expect("manifest");
        let entry = manifest.get(&target("1", BYTES).path).expect("entry kept");
        assert_eq!(entry.owner.as_deref(), Some("osimage/default/same-file"));
    }

    /// A manifest holding `entries`.
    fn manifest(entries: Vec<ManifestEntry>) -> Manifest {
        let mut m = Manifest::default();
        for e in entries {
            m.insert(e, false).expect("entry");
        }
        m
    }

    fn entry(version: &str, bytes: &[u8], owner: &str, firmware: bool, filename: &str) -> ManifestEntry {
        let path = ImagePath::new("lab", version, filename).expect("path");
        ManifestEntry::new(&path, Sha256Digest::of(bytes), bytes.len() as u64, firmware, Some(owner.into()))
    }

    #[test]
    fn decide_settles_adopts_fetches_or_stalls() {
        let me = "osimage/default/nos";
        let t = target("1", BYTES);
        let size = BYTES.len() as u64;
        let ours = entry("1", BYTES, me, false, "nos.bin");
        let fetch = |replace| Decision::Fetch { replace };
        let stalls = |d: Decision| matches!(d, Decision::Stall { reason: "Conflict", .. });

        // Tracked: settled when the file is there with its size, fetched again otherwise.
        let m = manifest(vec![ours.clone()]);
        assert_eq!(
            decide(&t, false, me, &m, OnDisk::Tracked { size }),
            Decision::Settle { size, enter: false }
        );
        assert_eq!(decide(&t, false, me, &m, OnDisk::Tracked { size: size - 1 }), fetch(false));
        assert_eq!(decide(&t, false, me, &m, OnDisk::Absent), fetch(false));
        // Our own older version: replaced; somebody else's: a conflict.
        let m = manifest(vec![entry("1", b"older", me, false, "nos.bin")]);
        assert_eq!(decide(&t, false, me, &m, OnDisk::NotLooked), fetch(true));
        let m = manifest(vec![entry("1", b"theirs", "upload", false, "nos.bin")]);
        assert!(stalls(decide(&t, false, me, &m, OnDisk::NotLooked)));
        // Untracked: adopted when its hash is right, a conflict otherwise; nothing: fetched.
        let empty = Manifest::default();
        let right = OnDisk::Untracked { sha256: t.sha256, size };
        assert_eq!(decide(&t, false, me, &empty, right), Decision::Settle { size, enter: true });
        let wrong = OnDisk::Untracked { sha256: Sha256Digest::of(b"x"), size };
        assert!(stalls(decide(&t, false, me, &empty, wrong)));
        assert_eq!(decide(&t, false, me, &empty, OnDisk::Absent), fetch(false));
        // A version's firmware slot held by another file of somebody else: a conflict for a
        // firmware image only; held by our own entry, no conflict.
        let m = manifest(vec![entry("1", b"fw", "upload", true, "fw.bin")]);
        assert!(stalls(decide(&t, true, me, &m, OnDisk::Absent)));
        assert_eq!(decide(&t, false, me, &m, OnDisk::Absent), fetch(false));
        let m = manifest(vec![entry("1", b"fw", me, true, "fw.bin")]);
        assert_eq!(decide(&t, true, me, &m, OnDisk::Absent), fetch(false));
    }
}

//! Device activity: how far each device got (configuration served, image served, provisioned),
//! aggregated per SwitchProfile in memory and written out in batches.
//!
//! Handlers that answer a matched device attach a [`DeviceOutcome`] to their response (an axum
//! response extension, see `serve::device`); the request-log middleware (`serve::observe`) hands
//! it to [`Activity::record`], which only updates an in-memory aggregate under a short lock. A
//! flush loop ([`report_forever`]) takes the profiles that changed since the last flush every few
//! seconds and hands them to a [`Sink`]: the SwitchProfile status in Kubernetes ([`k8s`]) or
//! `{data}/.status/switchprofiles.json` in standalone mode ([`file`](mod@file)).
//!
//! # Counting across replicas and restarts
//!
//! Counts are *distinct devices per stage*. Each server remembers every device it saw (at most
//! [`MAX_DEVICES_PER_PROFILE`] per profile, the least recently seen are forgotten first) and
//! which of its stages it already added to the stored counts. A flush reads the stored summary,
//! adds the stages this server has not reported yet — except those the stored `recent` list
//! already shows for that device (another replica, or this server before a restart, counted
//! them) — and merges the `recent` lists. So one server counts exactly; with several replicas or
//! after a restart, a device is counted twice only when it comes back after it dropped out of the
//! 20 most recent devices. Counts never go down.

pub mod file;
pub mod k8s;

use std::{
    borrow::Cow,
    collections::{HashMap, VecDeque},
    net::IpAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use async_trait::async_trait;
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use crate::{
    api::{DeviceRecord, DeviceStage, DeviceSummary, switchprofile::MAX_RECENT_DEVICES},
    profile::identity::normalize_mac,
};

/// Devices remembered per profile; past it the least recently seen one is forgotten (and would
/// be counted again if it came back while no longer among the stored `recent` devices).
pub const MAX_DEVICES_PER_PROFILE: usize = 10_000;
/// Events waiting to be published; past it new ones are dropped (and counted in a warning).
pub const MAX_PENDING_EVENTS: usize = 1_000;
/// Events published per flush at most (the rest wait for the next flush).
pub const MAX_EVENTS_PER_FLUSH: usize = 100;
/// Attempts to publish one Event before it is dropped.
const EVENT_ATTEMPTS: u32 = 3;
/// A `RenderFailed` Event with the same error is published once per profile in this window.
pub const RENDER_EVENT_WINDOW: Duration = Duration::from_secs(300);
/// `RenderFailed` Events per profile in one [`RENDER_EVENT_WINDOW`] at most, whatever the errors
/// (a boot storm of devices failing differently makes a handful of Events, not one each).
pub const MAX_RENDER_EVENTS_PER_WINDOW: usize = 5;
/// Profiles whose recent `RenderFailed` Events are remembered; past it the expired are dropped.
const MAX_RENDER_PROFILES: usize = 1_024;

/// A stage a request moved a device to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// ZTP JSON or one of its sections, a Cumulus script, an RtBrick config file.
    ConfigServed,
    /// An image response (200 or 206) started.
    ImageServed,
    /// The script called `POST /v1/devices/{serial}/provisioned`.
    Provisioned,
}

impl From<Stage> for DeviceStage {
    fn from(s: Stage) -> Self {
        match s {
            Stage::ConfigServed => DeviceStage::ConfigServed,
            Stage::ImageServed => DeviceStage::ImageServed,
            Stage::Provisioned => DeviceStage::Provisioned,
        }
    }
}

/// What a request did for a matched device: attached to the response as an extension by the
/// handler (owned: `DeviceOutcome<'static>`), recorded once by the request-log middleware; a path
/// that bypasses axum records it borrowed from the snapshot and the request, without copying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceOutcome<'a> {
    /// Namespace of the device's SwitchProfile.
    pub namespace: Cow<'a, str>,
    /// Name of the device's SwitchProfile.
    pub profile: Cow<'a, str>,
    /// Serial number, when known.
    pub serial: Option<Cow<'a, str>>,
    /// MAC address (normalised), when known.
    pub mac: Option<Cow<'a, str>>,
    pub stage: Stage,
}

impl DeviceOutcome<'_> {
    /// The outcome, owning its text (a response extension).
    pub fn into_owned(self) -> DeviceOutcome<'static> {
        DeviceOutcome {
            namespace: Cow::Owned(self.namespace.into_owned()),
            profile: Cow::Owned(self.profile.into_owned()),
            serial: self.serial.map(|s| Cow::Owned(s.into_owned())),
            mac: self.mac.map(|m| Cow::Owned(m.into_owned())),
            stage: self.stage,
        }
    }
}

/// The stages a device reached, as a bit set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageSet(u8);

const ALL_STAGES: [DeviceStage; 4] =
    [DeviceStage::Seen, DeviceStage::ConfigServed, DeviceStage::ImageServed, DeviceStage::Provisioned];

fn bit(s: DeviceStage) -> u8 {
    1 << (s as u8)
}

impl StageSet {
    /// Adds `s`.
    pub fn insert(&mut self, s: DeviceStage) {
        self.0 |= bit(s);
    }

    /// Whether `s` is in the set.
    pub fn contains(self, s: DeviceStage) -> bool {
        self.0 & bit(s) != 0
    }

    /// Stages in `self` but not in `other`.
    pub fn minus(self, other: StageSet) -> StageSet {
        StageSet(self.0 & !other.0)
    }

    /// Stages in either.
    pub fn union(self, other: StageSet) -> StageSet {
        StageSet(self.0 | other.0)
    }

    /// True when empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The furthest stage (by [`DeviceStage`]'s order), `Seen` when empty.
    pub fn furthest(self) -> DeviceStage {
        ALL_STAGES.into_iter().rev().find(|s| self.contains(*s)).unwrap_or_default()
    }

    /// The stages, in order.
    pub fn to_vec(self) -> Vec<DeviceStage> {
        ALL_STAGES.into_iter().filter(|s| self.contains(*s)).collect()
    }

    /// The stages a stored record shows (its `stages`, or `Seen` and its `stage` when a writer
    /// left `stages` out).
    pub fn of_record(r: &DeviceRecord) -> StageSet {
        let mut set = StageSet::default();
        set.insert(DeviceStage::Seen);
        set.insert(r.stage);
        for s in &r.stages {
            set.insert(*s);
        }
        set
    }
}

/// How a device is keyed within a profile: by serial, else by MAC.
fn device_key(serial: Option<&str>, mac: Option<&str>) -> Option<String> {
    match (serial, mac) {
        (Some(s), _) => Some(format!("s/{s}")),
        (None, Some(m)) => Some(format!("m/{m}")),
        (None, None) => None,
    }
}

fn record_key(r: &DeviceRecord) -> Option<String> {
    let mac = r.mac.as_deref().and_then(normalize_mac);
    device_key(r.serial.as_deref(), mac.as_deref())
}

/// One device as this server knows it.
#[derive(Debug, Clone)]
struct DeviceState {
    serial: Option<String>,
    mac: Option<String>,
    address: Option<IpAddr>,
    stages: StageSet,
    /// Stages already added to the stored counts by this server.
    reported: StageSet,
    last_seen: Timestamp,
}

impl DeviceState {
    fn record(&self) -> DeviceRecord {
        DeviceRecord {
            serial: self.serial.clone(),
            mac: self.mac.clone(),
            model: None,
            address: self.address.map(|a| a.to_string()),
            stage: self.stages.furthest(),
            stages: self.stages.to_vec(),
            last_seen: Some(Time(self.last_seen)),
        }
    }
}

#[derive(Debug, Default)]
struct ProfileActivity {
    devices: HashMap<String, DeviceState>,
    /// Changed since the last flush.
    dirty: bool,
}

/// An Event to publish on a SwitchProfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceEvent {
    pub namespace: String,
    pub profile: String,
    /// `DeviceSeen`, `DeviceProvisioned` (Normal) or `RenderFailed` (Warning).
    pub reason: &'static str,
    /// Names the device (serial, MAC) and its source address.
    pub note: String,
    /// A Warning rather than a Normal Event.
    pub warning: bool,
    attempts: u32,
}

/// A template that failed for one device at request time (the device got a 500): attached to
/// the response as an extension by the handler, turned into a Warning Event `RenderFailed` on the
/// profile by the request-log middleware (see [`Activity::render_failed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderFailure {
    pub namespace: String,
    pub profile: String,
    pub serial: Option<String>,
    pub mac: Option<String>,
    /// The render error, as the device got it.
    pub error: String,
}

#[derive(Debug, Default)]
struct Aggregate {
    profiles: HashMap<(String, String), ProfileActivity>,
    events: VecDeque<DeviceEvent>,
    dropped_events: u64,
    /// Per profile: the `RenderFailed` Events queued in the current window (when, which error).
    render_events: HashMap<(String, String), VecDeque<(Timestamp, String)>>,
}

impl Aggregate {
    fn push_event(&mut self, event: DeviceEvent) {
        if self.events.len() < MAX_PENDING_EVENTS {
            self.events.push_back(event);
        } else {
            self.dropped_events += 1;
        }
    }
}

/// What one flush writes for one profile: the stages this server has not reported yet, and its
/// most recent devices.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfilePlan {
    pub namespace: String,
    pub name: String,
    /// Device key → stages not yet added to the stored counts.
    delta: Vec<(String, StageSet)>,
    /// This server's most recent devices, newest first (at most [`MAX_RECENT_DEVICES`]).
    recent: Vec<(String, DeviceRecord, Timestamp)>,
}

/// One batch taken by a flush.
#[derive(Debug, Default)]
pub struct Batch {
    pub plans: Vec<ProfilePlan>,
    pub events: Vec<DeviceEvent>,
}

/// Device activity of this server. Cheap to clone (one shared aggregate); [`Activity::record`]
/// never blocks on I/O.
#[derive(Debug, Clone)]
pub struct Activity {
    inner: Option<Arc<Mutex<Aggregate>>>,
    /// Whether the per-profile summaries (`status.devices`) are written; without, only Events
    /// are (a server with Switches: each Switch holds its device's progress, and a profile's
    /// counts are taken from its Switches).
    summaries: bool,
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

fn describe(serial: Option<&str>, mac: Option<&str>, source: Option<IpAddr>) -> String {
    let mut s = match (serial, mac) {
        (Some(serial), Some(mac)) => format!("device {serial} (MAC {mac})"),
        (Some(serial), None) => format!("device {serial}"),
        (None, Some(mac)) => format!("device with MAC {mac}"),
        (None, None) => "device".to_owned(),
    };
    if let Some(ip) = source {
        s.push_str(&format!(" from {ip}"));
    }
    s
}

impl Activity {
    /// An aggregate that records.
    pub fn new() -> Self {
        Self { inner: Some(Arc::default()), summaries: true }
    }

    /// Reports Events only (`DeviceSeen`, `DeviceProvisioned`, `RenderFailed`), no summaries:
    /// the activity of a server that writes Switches.
    pub fn events_only() -> Self {
        Self { inner: Some(Arc::default()), summaries: false }
    }

    /// Records nothing (a server that reports activity nowhere).
    pub fn disabled() -> Self {
        Self { inner: None, summaries: false }
    }

    fn lock(&self) -> Option<MutexGuard<'_, Aggregate>> {
        // A panic while holding the lock leaves counters, never broken invariants: keep going.
        self.inner.as_ref().map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Records what a request did for a device (`source`: its IP address).
    pub fn record(&self, outcome: &DeviceOutcome<'_>, source: Option<IpAddr>) {
        // Disabled (as `serve` without --activity is): not even the clock.
        if self.inner.is_some() {
            self.record_at(outcome, source, Timestamp::now());
        }
    }

    /// [`Activity::record`] at a given time.
    pub fn record_at(&self, outcome: &DeviceOutcome<'_>, source: Option<IpAddr>, now: Timestamp) {
        let Some(mut agg) = self.lock() else { return };
        let mac = outcome.mac.as_deref().and_then(normalize_mac);
        let serial = outcome.serial.as_deref().filter(|s| !s.is_empty()).map(str::to_owned);
        let Some(key) = device_key(serial.as_deref(), mac.as_deref()) else { return };
        let pkey = (outcome.namespace.to_string(), outcome.profile.to_string());
        let p = agg.profiles.entry(pkey).or_default();
        // Seen by MAC first, by serial now: the same device, keep one entry.
        if serial.is_some()
            && !p.devices.contains_key(&key)
            && let Some(mac_key) = device_key(None, mac.as_deref())
            && p.devices.get(&mac_key).is_some_and(|d| d.serial.is_none())
            && let Some(d) = p.devices.remove(&mac_key)
        {
            p.devices.insert(key.clone(), d);
        }
        let is_new = !p.devices.contains_key(&key);
        if is_new && p.devices.len() >= MAX_DEVICES_PER_PROFILE {
            let oldest = p.devices.iter().min_by_key(|(_, d)| d.last_seen).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                p.devices.remove(&oldest);
            }
        }
        let d = p.devices.entry(key).or_insert_with(|| DeviceState {
            serial: None,
            mac: None,
            address: None,
            stages: StageSet::default(),
            reported: StageSet::default(),
            last_seen: now,
        });
        let stage = DeviceStage::from(outcome.stage);
        let newly_provisioned = stage == DeviceStage::Provisioned && !d.stages.contains(stage);
        d.stages.insert(DeviceStage::Seen);
        d.stages.insert(stage);
        d.last_seen = d.last_seen.max(now);
        if serial.is_some() {
            d.serial = serial;
        }
        if mac.is_some() {
            d.mac = mac;
        }
        if source.is_some() {
            d.address = source;
        }
        p.dirty = true;
        let who = describe(d.serial.as_deref(), d.mac.as_deref(), source);
        let event = |reason: &'static str, note: String| DeviceEvent {
            namespace: outcome.namespace.to_string(),
            profile: outcome.profile.to_string(),
            reason,
            note,
            warning: false,
            attempts: 0,
        };
        if is_new {
            let what = match outcome.stage {
                Stage::ConfigServed => "asked for its configuration",
                Stage::ImageServed => "downloads an image",
                Stage::Provisioned => "reported provisioned",
            };
            agg.push_event(event("DeviceSeen", format!("{who} first seen by this server: {what}")));
        }
        if newly_provisioned {
            agg.push_event(event("DeviceProvisioned", format!("{who} reported provisioned")));
        }
    }

    /// A render failed for a device at request time: queues a Warning Event `RenderFailed` on
    /// its profile naming the device and the error, unless the same error was already queued for
    /// that profile within [`RENDER_EVENT_WINDOW`] or the profile had
    /// [`MAX_RENDER_EVENTS_PER_WINDOW`] of them already. Returns whether an Event was queued.
    pub fn render_failed(&self, failure: &RenderFailure, source: Option<IpAddr>, now: Timestamp) -> bool {
        let Some(mut agg) = self.lock() else { return false };
        let window = k8s_openapi::jiff::SignedDuration::try_from(RENDER_EVENT_WINDOW).unwrap_or_default();
        let expired = |t: &Timestamp| now.duration_since(*t) >= window;
        if agg.render_events.len() >= MAX_RENDER_PROFILES {
            agg.render_events.retain(|_, recent| {
                recent.retain(|(t, _)| !expired(t));
                !recent.is_empty()
            });
            if agg.render_events.len() >= MAX_RENDER_PROFILES {
                return false;
            }
        }
        let key = (failure.namespace.clone(), failure.profile.clone());
        let recent = agg.render_events.entry(key).or_default();
        recent.retain(|(t, _)| !expired(t));
        if recent.len() >= MAX_RENDER_EVENTS_PER_WINDOW || recent.iter().any(|(_, e)| *e == failure.error) {
            return false;
        }
        recent.push_back((now, failure.error.clone()));
        let mac = failure.mac.as_deref().and_then(normalize_mac);
        let who = describe(failure.serial.as_deref(), mac.as_deref(), source);
        agg.push_event(DeviceEvent {
            namespace: failure.namespace.clone(),
            profile: failure.profile.clone(),
            reason: "RenderFailed",
            note: format!("{who} got a 500: {}", failure.error),
            warning: true,
            attempts: 0,
        });
        true
    }

    /// Takes the profiles changed since the last batch and up to `max_events` Events.
    pub fn take_batch(&self, max_events: usize) -> Batch {
        let Some(mut agg) = self.lock() else { return Batch::default() };
        let mut plans = Vec::new();
        for ((ns, name), p) in agg.profiles.iter_mut().filter(|(_, p)| p.dirty) {
            p.dirty = false;
            if !self.summaries {
                continue;
            }
            let delta = p
                .devices
                .iter()
                .map(|(k, d)| (k.clone(), d.stages.minus(d.reported)))
                .filter(|(_, s)| !s.is_empty())
                .collect();
            let mut recent: Vec<(&String, &DeviceState)> = p.devices.iter().collect();
            recent.sort_by(|a, b| b.1.last_seen.cmp(&a.1.last_seen).then_with(|| a.0.cmp(b.0)));
            let recent = recent
                .into_iter()
                .take(MAX_RECENT_DEVICES)
                .map(|(k, d)| (k.clone(), d.record(), d.last_seen))
                .collect();
            plans.push(ProfilePlan { namespace: ns.clone(), name: name.clone(), delta, recent });
        }
        plans.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        if agg.dropped_events > 0 {
            tracing::warn!(dropped = agg.dropped_events, "too many device events pending; some were dropped");
            agg.dropped_events = 0;
        }
        let n = agg.events.len().min(max_events);
        let events = agg.events.drain(..n).collect();
        Batch { plans, events }
    }

    /// The plan was written: its stages count as reported.
    pub fn written(&self, plan: &ProfilePlan) {
        let Some(mut agg) = self.lock() else { return };
        if let Some(p) = agg.profiles.get_mut(&(plan.namespace.clone(), plan.name.clone())) {
            for (key, stages) in &plan.delta {
                if let Some(d) = p.devices.get_mut(key) {
                    d.reported = d.reported.union(*stages);
                }
            }
        }
    }

    /// The plan was not written: try again at the next flush.
    pub fn retry(&self, plan: &ProfilePlan) {
        let Some(mut agg) = self.lock() else { return };
        if let Some(p) = agg.profiles.get_mut(&(plan.namespace.clone(), plan.name.clone())) {
            p.dirty = true;
        }
    }

    /// The profile no longer exists: forget its devices.
    pub fn forget(&self, namespace: &str, name: &str) {
        let Some(mut agg) = self.lock() else { return };
        agg.profiles.remove(&(namespace.to_owned(), name.to_owned()));
    }

    /// An Event could not be published: queue it again, unless it failed too often.
    pub fn requeue(&self, mut event: DeviceEvent) {
        let Some(mut agg) = self.lock() else { return };
        event.attempts += 1;
        if event.attempts < EVENT_ATTEMPTS {
            agg.push_event(event);
        }
    }
}

/// The stored summary (`remote`, None when there is none yet) with `plan` merged in: the stages
/// this server has not reported yet are added to the counts unless the stored `recent` list
/// already shows them for that device; `recent` is the union of both lists (stages joined, the
/// latest address), newest first, at most [`MAX_RECENT_DEVICES`]. Stored times have whole
/// seconds: within one second, this server's devices sort before stored ones.
pub fn merge(remote: Option<&DeviceSummary>, plan: &ProfilePlan) -> DeviceSummary {
    let mut out = remote.cloned().unwrap_or_default();
    let stored: HashMap<String, StageSet> =
        out.recent.iter().filter_map(|r| Some((record_key(r)?, StageSet::of_record(r)))).collect();
    for (key, stages) in &plan.delta {
        let new = stages.minus(stored.get(key).copied().unwrap_or_default());
        for (stage, count) in [
            (DeviceStage::Seen, &mut out.seen),
            (DeviceStage::ConfigServed, &mut out.config_served),
            (DeviceStage::ImageServed, &mut out.image_served),
            (DeviceStage::Provisioned, &mut out.provisioned),
        ] {
            if new.contains(stage) {
                *count = count.saturating_add(1);
            }
        }
    }
    // Local records first: on a tie (stored times have whole seconds) ours are the newer.
    let mut merged: Vec<(Option<String>, DeviceRecord, Option<Timestamp>)> =
        plan.recent.iter().map(|(k, r, t)| (Some(k.clone()), r.clone(), Some(*t))).collect();
    for r in std::mem::take(&mut out.recent) {
        let key = record_key(&r);
        let at = r.last_seen.as_ref().map(|t| t.0);
        match merged.iter_mut().find(|(k, _, _)| key.is_some() && *k == key) {
            Some((_, mine, mine_at)) => {
                let stages = StageSet::of_record(mine).union(StageSet::of_record(&r));
                if at > *mine_at {
                    *mine = r;
                    *mine_at = at;
                }
                mine.stage = stages.furthest();
                mine.stages = stages.to_vec();
            }
            None => merged.push((key, r, at)),
        }
    }
    merged.sort_by_key(|m| std::cmp::Reverse(m.2));
    out.recent = merged.into_iter().take(MAX_RECENT_DEVICES).map(|(_, r, _)| r).collect();
    out
}

/// Why a batch could not be written; the flush loop retries at its next turn.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The profile was deleted: its activity is forgotten, not retried.
    #[error("SwitchProfile {0} no longer exists")]
    Gone(String),
    /// Anything else, in the sink's own words ([`k8s::KubeSinkError`], [`crate::status_file::StatusFileError`]).
    #[error(transparent)]
    Failed(Box<dyn std::error::Error + Send + Sync>),
}

/// Where activity goes.
#[async_trait]
pub trait Sink: Send + Sync {
    /// Merges each plan into its profile's stored summary; one result per plan, in order.
    async fn write(&self, plans: &[ProfilePlan]) -> Vec<Result<(), SinkError>>;
    /// Publishes one Event.
    async fn event(&self, event: &DeviceEvent) -> Result<(), SinkError>;
}

/// One flush: writes the changed profiles, then publishes pending Events. Failures are logged
/// and retried at the next flush; nothing here ever fails a device request.
pub async fn flush(activity: &Activity, sink: &dyn Sink) {
    let batch = activity.take_batch(MAX_EVENTS_PER_FLUSH);
    if !batch.plans.is_empty() {
        let results = sink.write(&batch.plans).await;
        for (plan, result) in batch.plans.iter().zip(results) {
            match result {
                Ok(()) => activity.written(plan),
                Err(SinkError::Gone(p)) => {
                    tracing::info!(profile = %p, "profile gone; forgetting its device activity");
                    activity.forget(&plan.namespace, &plan.name);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot write device activity; retrying at the next flush");
                    activity.retry(plan);
                }
            }
        }
    }
    for event in batch.events {
        match sink.event(&event).await {
            Ok(()) => {}
            Err(SinkError::Gone(_)) => {}
            Err(e) => {
                tracing::warn!(error = %e, reason = event.reason, "cannot publish device event");
                activity.requeue(event);
            }
        }
    }
}

/// Flushes every `every` forever.
pub async fn report_forever(activity: Activity, sink: Arc<dyn Sink>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        flush(&activity, sink.as_ref()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(serial: Option<&str>, mac: Option<&str>, stage: Stage) -> DeviceOutcome<'static> {
        DeviceOutcome {
            namespace: "ns".into(),
            profile: "p".into(),
            serial: serial.map(|s| s.to_owned().into()),
            mac: mac.map(|m| m.to_owned().into()),
            stage,
        }
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).expect("timestamp")
    }

    fn ip() -> Option<IpAddr> {
        Some("192.0.2.7".parse().expect("ip"))
    }

    /// Takes the one plan and merges it into `remote`, acknowledging it.
    fn flush_into(a: &Activity, remote: Option<&DeviceSummary>) -> DeviceSummary {
        let batch = a.take_batch(0);
        assert_eq!(batch.plans.len(), 1, "{:?}", batch.plans);
        let s = merge(remote, &batch.plans[0]);
        a.written(&batch.plans[0]);
        s
    }

    fn counts(s: &DeviceSummary) -> [i64; 4] {
        [s.seen, s.config_served, s.image_served, s.provisioned]
    }

    #[test]
    fn counts_distinct_devices_per_stage() {
        let a = Activity::new();
        for i in 0..3 {
            a.record_at(&outcome(Some("SN-1"), None, Stage::ConfigServed), ip(), at(i));
        }
        a.record_at(&outcome(Some("SN-2"), None, Stage::ConfigServed), ip(), at(3));
        a.record_at(&outcome(Some("SN-2"), None, Stage::ImageServed), ip(), at(4));
        a.record_at(&outcome(Some("SN-2"), None, Stage::ImageServed), ip(), at(5));
        let s = flush_into(&a, None);
        assert_eq!(counts(&s), [2, 2, 1, 0]);
        // Nothing new: nothing to write. The same requests again: counts do not move.
        assert!(a.take_batch(0).plans.is_empty());
        a.record_at(&outcome(Some("SN-1"), None, Stage::ConfigServed), ip(), at(6));
        let s = flush_into(&a, Some(&s));
        assert_eq!(counts(&s), [2, 2, 1, 0]);
        // A new stage of a known device adds only that stage.
        a.record_at(&outcome(Some("SN-1"), None, Stage::Provisioned), ip(), at(7));
        let s = flush_into(&a, Some(&s));
        assert_eq!(counts(&s), [2, 2, 1, 1]);
    }

    #[test]
    fn stage_is_the_furthest_and_stages_are_all_reached() {
        let a = Activity::new();
        // ONIE downloads the image first, then the NOS asks for its configuration.
        a.record_at(&outcome(Some("SN-1"), None, Stage::ImageServed), ip(), at(0));
        a.record_at(&outcome(Some("SN-1"), None, Stage::ConfigServed), ip(), at(1));
        let s = flush_into(&a, None);
        assert_eq!(s.recent[0].stage, DeviceStage::ImageServed);
        assert_eq!(
            s.recent[0].stages,
            [DeviceStage::Seen, DeviceStage::ConfigServed, DeviceStage::ImageServed]
        );
        assert_eq!(counts(&s), [1, 1, 1, 0]);
        a.record_at(&outcome(Some("SN-1"), None, Stage::Provisioned), ip(), at(2));
        let s = flush_into(&a, Some(&s));
        assert_eq!(s.recent[0].stage, DeviceStage::Provisioned);
        assert!(DeviceStage::Seen < DeviceStage::ConfigServed);
        assert!(DeviceStage::ConfigServed < DeviceStage::ImageServed);
        assert!(DeviceStage::ImageServed < DeviceStage::Provisioned);
    }

    #[test]
    fn recent_is_bounded_and_newest_first() {
        let a = Activity::new();
        for i in 0..25 {
            a.record_at(&outcome(Some(&format!("SN-{i:02}")), None, Stage::ConfigServed), ip(), at(i));
        }
        // An old device comes back: it is the newest now.
        a.record_at(&outcome(Some("SN-03"), None, Stage::ImageServed), ip(), at(100));
        let s = flush_into(&a, None);
        assert_eq!(s.recent.len(), MAX_RECENT_DEVICES);
        assert_eq!(s.seen, 25);
        let serials: Vec<&str> = s.recent.iter().filter_map(|r| r.serial.as_deref()).collect();
        assert_eq!(serials[..3], ["SN-03", "SN-24", "SN-23"]);
        assert!(!serials.contains(&"SN-04"), "the oldest fall out: {serials:?}");
        let times: Vec<_> = s.recent.iter().map(|r| r.last_seen.clone().map(|t| t.0)).collect();
        assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
        assert_eq!(s.recent[0].address.as_deref(), Some("192.0.2.7"));
    }

    #[test]
    fn merging_with_another_replica_does_not_count_twice() {
        // Replica A served SN-1 its configuration.
        let a = Activity::new();
        a.record_at(&outcome(Some("SN-1"), Some("0C:42:A1:00:00:01"), Stage::ConfigServed), ip(), at(0));
        let stored = flush_into(&a, None);
        // Replica B (or A after a restart) serves SN-1 its image and a new device its config.
        let b = Activity::new();
        b.record_at(&outcome(Some("SN-1"), None, Stage::ImageServed), ip(), at(5));
        b.record_at(&outcome(Some("SN-2"), None, Stage::ConfigServed), ip(), at(6));
        let s = flush_into(&b, Some(&stored));
        assert_eq!(counts(&s), [2, 2, 1, 0]);
        let one = s.recent.iter().find(|r| r.serial.as_deref() == Some("SN-1")).expect("SN-1");
        assert_eq!(one.stages, [DeviceStage::Seen, DeviceStage::ConfigServed, DeviceStage::ImageServed]);
        assert_eq!(s.recent.len(), 2);
        assert_eq!(s.recent[0].serial.as_deref(), Some("SN-2"));
    }

    #[test]
    fn a_failed_write_is_retried_with_the_same_stages() {
        let a = Activity::new();
        a.record_at(&outcome(Some("SN-1"), None, Stage::ConfigServed), ip(), at(0));
        let batch = a.take_batch(0);
        a.retry(&batch.plans[0]);
        let s = flush_into(&a, None);
        assert_eq!(counts(&s), [1, 1, 0, 0]);
        a.forget("ns", "p");
        assert!(a.take_batch(0).plans.is_empty());
    }

    #[test]
    fn a_device_seen_by_mac_keeps_one_entry_when_its_serial_appears() {
        let a = Activity::new();
        a.record_at(&outcome(None, Some("0c:42:a1:00:00:01"), Stage::ImageServed), ip(), at(0));
        a.record_at(&outcome(Some("SN-1"), Some("0C:42:A1:00:00:01"), Stage::ConfigServed), ip(), at(1));
        let s = flush_into(&a, None);
        assert_eq!(counts(&s), [1, 1, 1, 0]);
        assert_eq!(s.recent.len(), 1);
        assert_eq!(s.recent[0].mac.as_deref(), Some("0c:42:a1:00:00:01"));
        // Neither serial nor MAC: not recorded.
        a.record_at(&outcome(None, None, Stage::ConfigServed), ip(), at(2));
        assert!(a.take_batch(0).plans.is_empty());
    }

    #[test]
    fn render_failures_make_one_event_per_error_and_profile_per_window() {
        let a = Activity::new();
        let failure = |profile: &str, serial: &str, error: &str| RenderFailure {
            namespace: "lab".into(),
            profile: profile.into(),
            serial: Some(serial.into()),
            mac: Some("0C:42:A1:00:00:01".into()),
            error: error.into(),
        };
        let t0 = Timestamp::from_second(1_700_000_000).expect("time");
        let ip = Some("192.0.2.7".parse().expect("ip"));
        assert!(a.render_failed(&failure("leaf", "SN-1", "undefined value"), ip, t0));
        // A boot storm: the same error for 100 other devices, no new Event.
        for i in 0..100 {
            assert!(!a.render_failed(&failure("leaf", &format!("SN-{i}x"), "undefined value"), ip, t0));
        }
        // Another profile, or another error: an Event each, up to the cap per profile.
        assert!(a.render_failed(&failure("spine", "SN-1", "undefined value"), ip, t0));
        for i in 0..10 {
            a.render_failed(&failure("leaf", "SN-1", &format!("error {i}")), ip, t0);
        }
        let events = a.take_batch(100).events;
        assert_eq!(events.len(), 1 + 1 + (MAX_RENDER_EVENTS_PER_WINDOW - 1), "{events:#?}");
        assert!(events.iter().all(|e| e.reason == "RenderFailed" && e.warning));
        assert_eq!(
            events[0].note,
            "device SN-1 (MAC 0c:42:a1:00:00:01) from 192.0.2.7 got a 500: undefined value"
        );
        // After the window, the same error is told again.
        let later = t0 + RENDER_EVENT_WINDOW;
        assert!(a.render_failed(&failure("leaf", "SN-2", "undefined value"), ip, later));
        assert!(!a.render_failed(&failure("leaf", "SN-2", "undefined value"), ip, later));
        assert!(!Activity::disabled().render_failed(&failure("leaf", "SN-1", "x"), ip, t0));
    }

    #[test]
    fn events_once_per_device_and_per_provisioning() {
        let a = Activity::new();
        a.record_at(&outcome(Some("SN-1"), Some("0c:42:a1:00:00:01"), Stage::ConfigServed), ip(), at(0));
        a.record_at(&outcome(Some("SN-1"), None, Stage::ImageServed), ip(), at(1));
        a.record_at(&outcome(Some("SN-1"), None, Stage::Provisioned), ip(), at(2));
        a.record_at(&outcome(Some("SN-1"), None, Stage::Provisioned), ip(), at(3));
        let events = a.take_batch(10).events;
        let reasons: Vec<&str> = events.iter().map(|e| e.reason).collect();
        assert_eq!(reasons, ["DeviceSeen", "DeviceProvisioned"]);
        assert!(events[0].note.contains("SN-1") && events[0].note.contains("0c:42:a1:00:00:01"));
        assert!(events[0].note.contains("192.0.2.7"), "{}", events[0].note);
        // A failed Event is tried again, EVENT_ATTEMPTS times in all.
        let mut e = events[1].clone();
        for _ in 1..EVENT_ATTEMPTS {
            a.requeue(e);
            let again = a.take_batch(10).events;
            assert_eq!(again.len(), 1);
            e = again[0].clone();
        }
        a.requeue(e);
        assert!(a.take_batch(10).events.is_empty());
    }

    #[test]
    fn bounded_devices_and_disabled_activity() {
        let a = Activity::new();
        for i in 0..(MAX_DEVICES_PER_PROFILE as i64 + 5) {
            a.record_at(&outcome(Some(&format!("SN-{i}")), None, Stage::ConfigServed), None, at(i));
        }
        let agg = a.lock().expect("enabled");
        assert_eq!(agg.profiles[&("ns".to_owned(), "p".to_owned())].devices.len(), MAX_DEVICES_PER_PROFILE);
        assert!(!agg.profiles[&("ns".to_owned(), "p".to_owned())].devices.contains_key("s/SN-0"));
        assert_eq!(agg.events.len(), MAX_PENDING_EVENTS);
        drop(agg);
        let off = Activity::disabled();
        off.record(&outcome(Some("SN-1"), None, Stage::ConfigServed), None);
        assert!(off.take_batch(10).plans.is_empty());
    }

    #[test]
    fn a_server_with_switches_reports_events_but_no_summaries() {
        let a = Activity::events_only();
        a.record_at(&outcome(Some("SN-1"), None, Stage::ConfigServed), ip(), at(0));
        a.record_at(&outcome(Some("SN-1"), None, Stage::Provisioned), ip(), at(1));
        let batch = a.take_batch(10);
        assert!(batch.plans.is_empty(), "{:?}", batch.plans);
        let reasons: Vec<&str> = batch.events.iter().map(|e| e.reason).collect();
        assert_eq!(reasons, ["DeviceSeen", "DeviceProvisioned"]);
    }
}

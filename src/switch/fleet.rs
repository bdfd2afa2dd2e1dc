//! Standalone's Switches: the same lifecycle as in the cluster ([`super::book::apply`]), the
//! objects kept in `{data}/.status/switches.json` instead of the API (a JSON list of Switch
//! objects, as `kubectl get switches -o json` lists them, so a restart resumes the fleet's
//! history). The folder's `Switch` documents are declared Switches (their spec is the folder's);
//! devices discovered by the server (per `--discover`) get one named from their serial.
//!
//! [`Fleet`] is the pure part; [`run`] the loop at the edge: every flush it takes what the
//! request log gathered, applies it, refreshes every Switch (a spec change — hold, re-provision,
//! a new Switch in the folder — shows without its device) and writes the file when something
//! changed; then each profile's Switch counts ([`super::tally`]) where they changed.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::ObjectMeta, jiff::Timestamp};

use super::{
    Tracking,
    book::{Pending, apply},
    k8s::{DISCOVERED_BY, Discover, discovered, may_discover, recyclable},
    limit::PerSource,
    name,
    tally::{ProfileKey, changes, tally},
};
use crate::{
    api::{MatchedProfile, Switch, SwitchCounts, SwitchSpec},
    status_file::{self, StatusFileError},
};

/// The profiles' counts are written again at least this often, changed or not.
const RECOUNT: Duration = Duration::from_secs(60);

/// Name of the file, under `{data}/.status/`.
pub const FILE: &str = "switches.json";

/// How devices become Switches in standalone.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    pub discover: Discover,
    /// Discovered `Unmatched` Switches at most (the least recently seen goes first).
    pub max_unmatched: usize,
    /// New Switches one source address may cause per minute.
    pub per_source_per_minute: u32,
    /// Namespace of a discovered Switch no profile matches.
    pub namespace: String,
}

/// Every Switch standalone knows, by serial number.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    by_serial: BTreeMap<String, Switch>,
}

impl Fleet {
    /// The fleet as saved (a list of Switches; one without a serial number is ignored).
    pub fn from_saved(saved: Vec<Switch>) -> Self {
        let by_serial = saved
            .into_iter()
            .filter(|s| !s.spec.serial_number.is_empty())
            .map(|s| (s.spec.serial_number.clone(), s))
            .collect();
        Self { by_serial }
    }

    /// Every Switch, sorted by namespace and name (what the file holds).
    pub fn switches(&self) -> Vec<&Switch> {
        let mut all: Vec<&Switch> = self.by_serial.values().collect();
        all.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        all
    }

    /// Takes the folder's Switches: each one's metadata and spec, its status kept (also when it
    /// replaces a discovered one of the same serial). A declared Switch gone from the folder is
    /// gone; discovered ones stay. Returns whether anything changed.
    pub fn declare(&mut self, declared: &[Arc<Switch>]) -> bool {
        let wanted: BTreeMap<&str, &Arc<Switch>> =
            declared.iter().map(|s| (s.spec.serial_number.as_str(), s)).collect();
        let before = self.by_serial.len();
        self.by_serial.retain(|serial, s| discovered(s) || wanted.contains_key(serial.as_str()));
        let mut changed = self.by_serial.len() != before;
        for (serial, s) in wanted {
            let mut switch = Switch::clone(s);
            switch.metadata.namespace.get_or_insert_with(|| "default".into());
            let old = self.by_serial.get(serial);
            let same = |old: &Switch| {
                let as_json = |s: &Switch| serde_json::to_value((&s.metadata, &s.spec)).ok();
                as_json(old) == as_json(&switch)
            };
            if old.is_some_and(same) {
                continue;
            }
            switch.status = old.and_then(|old| old.status.clone());
            self.by_serial.insert(serial.to_owned(), switch);
            changed = true;
        }
        changed
    }

    /// Applies one flush: what each device did (creating the Switch of a device it does not know,
    /// per `options` and the per-source `limit`), then every Switch refreshed against its spec.
    /// `declared` is the profile a spec matches. Returns whether anything changed.
    pub fn flush(
        &mut self,
        batch: Vec<(String, Pending)>,
        options: &FleetOptions,
        limit: &mut PerSource,
        declared: &dyn Fn(&SwitchSpec) -> Option<MatchedProfile>,
        now: Timestamp,
    ) -> bool {
        let mut changed = false;
        let mut batch: BTreeMap<String, Pending> = batch.into_iter().collect();
        for (serial, pending) in &batch {
            if !self.by_serial.contains_key(serial) && pending.last_seen.is_some() {
                changed |= self.discover(serial, pending, options, limit);
            }
        }
        let untouched =
            Pending { facts: Default::default(), matched: None, last_seen: None, events: Vec::new() };
        for (serial, switch) in &mut self.by_serial {
            let pending = batch.remove(serial).unwrap_or_else(|| untouched.clone());
            let mut status = switch.status.clone().unwrap_or_default();
            let generation = switch.metadata.generation;
            if apply(&mut status, &switch.spec, generation, &pending, || declared(&switch.spec), now)
                || switch.status.is_none()
            {
                switch.status = Some(status);
                changed = true;
            }
        }
        changed
    }

    /// Creates the Switch of a device first seen, when `options.discover` says so (whether it
    /// did), making room under `max_unmatched` for one no profile matches.
    fn discover(
        &mut self,
        serial: &str,
        pending: &Pending,
        options: &FleetOptions,
        limit: &mut PerSource,
    ) -> bool {
        if !may_discover(options.discover, serial, pending, limit) {
            return false;
        }
        let matched = pending.matched.as_ref().and_then(Option::as_ref);
        if matched.is_none() {
            let mut unmatched: Vec<(Timestamp, String)> = self
                .by_serial
                .iter()
                .filter_map(|(serial, s)| Some((recyclable(s)?, serial.clone())))
                .collect();
            unmatched.sort();
            let excess = (unmatched.len() + 1).saturating_sub(options.max_unmatched.max(1));
            for (_, gone) in unmatched.into_iter().take(excess) {
                self.by_serial.remove(&gone);
            }
        }
        let namespace =
            matched.and_then(|m| m.namespace.clone()).unwrap_or_else(|| options.namespace.clone());
        let switch = Switch {
            metadata: ObjectMeta {
                name: Some(name::for_serial(serial)),
                namespace: Some(namespace),
                labels: Some([(DISCOVERED_BY.0.to_owned(), DISCOVERED_BY.1.to_owned())].into()),
                ..Default::default()
            },
            spec: SwitchSpec::for_serial(serial),
            status: None,
        };
        self.by_serial.insert(serial.to_owned(), switch);
        true
    }
}

/// The fleet in `path` (empty when the file is missing; a file that does not parse starts again,
/// with a warning, as the other status files do).
pub fn load(path: &Path) -> Fleet {
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice::<Vec<Switch>>(&bytes) {
            Ok(list) => Fleet::from_saved(list),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unreadable Switch file; starting it again");
                Fleet::default()
            }
        },
        Err(_) => Fleet::default(),
    }
}

/// Writes the fleet to `path` (a reader never sees half a file).
async fn save(path: &Path, fleet: &Fleet) -> Result<(), String> {
    let bytes = serde_json::to_vec_pretty(&fleet.switches()).map_err(|e| e.to_string())?;
    status_file::write_atomic(path, &bytes).await.map_err(|e| e.to_string())
}

/// Each profile's `switches` counts (`counted`) in the profile status file `profiles` (what the
/// controller writes in a cluster), where they changed.
async fn count(profiles: &Path, counted: &BTreeMap<ProfileKey, SwitchCounts>) -> Result<(), StatusFileError> {
    status_file::update_if(profiles, |all| {
        let shown = all.iter().filter_map(|(key, status)| {
            let (ns, name) = key.split_once('/')?;
            Some(((ns.to_owned(), name.to_owned()), status.switches.as_ref()))
        });
        let changed = changes(shown, counted);
        for ((ns, name), counts) in &changed {
            if let Some(status) = all.get_mut(&format!("{ns}/{name}")) {
                status.switches = Some(counts.clone());
            }
        }
        !changed.is_empty()
    })
    .await
}

/// Standalone's Switch loop: every `every`, the folder's Switches (`declared()`, also put on hold
/// in `tracking.held`), what `tracking.book` gathered, the file `path` written when the fleet
/// changed, and each profile's counts in the profile status file `profiles`. Runs until the
/// process ends.
pub async fn run(
    path: PathBuf,
    profiles: PathBuf,
    tracking: Tracking,
    options: FleetOptions,
    declared: impl Fn() -> Vec<Arc<Switch>>,
    matcher: super::k8s::Matcher,
    every: Duration,
) {
    let mut fleet = load(&path);
    let mut limit = PerSource::new(options.per_source_per_minute);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unsaved = true;
    let mut counted_last: Option<(BTreeMap<ProfileKey, SwitchCounts>, std::time::Instant)> = None;
    loop {
        tick.tick().await;
        let folder = declared();
        tracking.held.declare(&folder);
        unsaved |= fleet.declare(&folder);
        let (batch, dropped) = tracking.book.take();
        if dropped > 0 {
            tracing::warn!(dropped, "too many devices pending; their sightings wait for their next request");
        }
        unsaved |= fleet.flush(batch, &options, &mut limit, &*matcher, Timestamp::now());
        if unsaved {
            tracking.roster.set(fleet.switches().into_iter().cloned().map(Arc::new).collect());
            match save(&path, &fleet).await {
                Ok(()) => unsaved = false,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot write the Switches; retried at the next flush")
                }
            }
        }
        // The profile file is read only when the counts changed, and once a minute (so a profile
        // the pipeline reported since gets the counts of the Switches it already has).
        let counted = tally(fleet.switches());
        if counted_last.as_ref().is_none_or(|(last, at)| *last != counted || at.elapsed() >= RECOUNT) {
            match count(&profiles, &counted).await {
                Ok(()) => counted_last = Some((counted, std::time::Instant::now())),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot write the profiles' Switch counts; retried at the next flush")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;

//! `ztp-operator serve --switches`: the device server creates a Switch for each device that asks
//! (per [`Discover`]) and writes what the device did into its status.
//!
//! The server follows the Switches of its scope in a reflector (so it knows which Switch, by
//! whatever name, carries a serial, and each one's status and `resourceVersion` without a read
//! per write). Every flush ([`run`]) takes what the request path left in the [`Book`], and for
//! each device applies it ([`apply`]) to the Switch's status as last seen, then writes the whole
//! status with server-side apply (field manager [`SERVER_FIELD_MANAGER`]) and that
//! `resourceVersion` as a precondition: when another replica (or the controller) wrote in
//! between, the apiserver answers 409, the server reads the Switch and applies again — applying
//! is idempotent (see [`super::lifecycle`]), so nothing is lost or counted twice. Writes are
//! paced to at most `--switch-writes-per-second`; nothing of this runs on the request path.
//!
//! Device identity over plain HTTP is self-asserted, so what a stranger can make the server create
//! is bounded: Switches for devices no profile matches are created only with `--discover all`, at
//! most `--max-unmatched` of them exist at once (the least recently seen one the server created is
//! deleted to make room), and one source address creates at most
//! `--discover-per-source-per-minute` Switches a minute.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, reflector, watcher},
};
use serde_json::json;

use crate::watch::status_code;

use super::{
    book::{Book, Pending, apply},
    limit::PerSource,
    name,
};
use crate::api::{MatchedProfile, Switch, SwitchPhase, SwitchSpec};

/// Field manager of the server's writes (the same as its SwitchProfile activity writes).
pub const SERVER_FIELD_MANAGER: &str = crate::activity::k8s::SERVER_FIELD_MANAGER;
/// Label on the Switches the server created (the only ones it ever deletes).
pub const DISCOVERED_BY: (&str, &str) = ("app.kubernetes.io/created-by", "ztp-operator-server");
/// Writes of one Switch per flush before it waits for the next flush.
const ATTEMPTS: usize = 5;

/// Which devices get a Switch created when they first ask (`--discover`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Discover {
    /// Devices a SwitchProfile matches.
    Matched,
    /// Every device with a serial number, matched or not (those not: phase `Unmatched`).
    All,
    /// None: only Switches that exist (made by hand, or by another tool) are written.
    None,
}

impl Discover {
    /// The flag's value: `matched`, `all` or `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            Discover::Matched => "matched",
            Discover::All => "all",
            Discover::None => "none",
        }
    }
}

/// How the server discovers and writes Switches.
#[derive(Debug, Clone)]
pub struct Options {
    pub discover: Discover,
    /// Namespace of a discovered Switch no profile matches (a matched one goes to its profile's).
    pub namespace: String,
    /// Namespace whose Switches the server follows; `None`: every namespace.
    pub scope: Option<String>,
    /// Discovered `Unmatched` Switches at most.
    pub max_unmatched: usize,
    /// Switches one source address may have created per minute at most.
    pub per_source_per_minute: u32,
    /// API writes per second at most.
    pub writes_per_second: f64,
    /// Time between flushes.
    pub flush: Duration,
}

/// Why one device's write failed (it is retried at the next flush).
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("Switch {switch}: {source}")]
    Kube {
        switch: String,
        #[source]
        source: kube::Error,
    },
    #[error("Switch {switch}: its status changed under us {attempts} times in a row")]
    Contended { switch: String, attempts: usize },
    #[error("cannot create Switch {switch} for serial {serial:?}: that name carries serial {other:?}")]
    NameTaken { switch: String, serial: String, other: String },
}

/// The profile a Switch's declared serial, MAC and model match, by the server's snapshot: what a
/// Switch whose device has not asked yet shows.
pub type Matcher = Arc<dyn Fn(&SwitchSpec) -> Option<MatchedProfile> + Send + Sync>;

/// Follows the Switches in scope (keeping `tracking.held` current, and touching each Switch whose
/// spec changed since its status was written, so a hold, a re-provision or a Switch made by hand
/// shows without its device) and writes what `tracking.book` gathers, every `options.flush`,
/// until the process ends.
pub async fn run(client: Client, tracking: super::Tracking, options: Options, matcher: Matcher) {
    let super::Tracking { book, held, roster } = tracking;
    let touch = book.clone();
    let api: Api<Switch> = match &options.scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (store, writer) = reflector::store::<Switch>();
    let follow = reflector(writer, watcher(api, watcher::Config::default().any_semantic()))
        .default_backoff()
        .for_each(move |event| {
            match event {
                Ok(event) => {
                    held.observe(&event);
                    // (A Switch this server just created gets its status from the same flush.)
                    if let watcher::Event::Apply(s) | watcher::Event::InitApply(s) = &event
                        && s.status.as_ref().and_then(|st| st.observed_generation) != s.metadata.generation
                        && (s.status.is_some() || !discovered(s))
                    {
                        touch.touch(&s.spec.serial_number);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "watching Switches"),
            }
            futures::future::ready(())
        });
    tokio::spawn(follow);
    tracing::info!(scope = options.scope.as_deref().unwrap_or("every namespace"), discover = ?options.discover, "following Switches");
    if crate::watch::filled(&store).await.is_err() {
        return;
    }
    tracing::info!(switches = store.state().len(), "Switches listed; writing them");
    let mut writer = Writer {
        created: PerSource::new(options.per_source_per_minute),
        client,
        store,
        options,
        matcher,
        next_write: Instant::now(),
    };
    let mut tick = tokio::time::interval(writer.options.flush);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        writer.flush(&book).await;
        roster.set(writer.store.state());
    }
}

struct Writer {
    client: Client,
    store: reflector::Store<Switch>,
    options: Options,
    matcher: Matcher,
    /// Creations per source address in the current minute.
    created: PerSource,
    next_write: Instant,
}

impl Writer {
    async fn flush(&mut self, book: &Book) {
        let (batch, dropped) = book.take();
        if dropped > 0 {
            tracing::warn!(dropped, "too many devices pending; their sightings wait for their next request");
        }
        if batch.is_empty() {
            return;
        }
        let by_serial: HashMap<String, Arc<Switch>> =
            self.store.state().into_iter().map(|s| (s.spec.serial_number.clone(), s)).collect();
        let mut unmatched = discovered_unmatched(&by_serial);
        for (serial, pending) in batch {
            match self.write(&by_serial, &mut unmatched, &serial, &pending).await {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "writing a Switch; retried at the next flush");
                    book.requeue(serial, pending);
                }
            }
        }
    }

    /// Waits for the next write slot of `--switch-writes-per-second`.
    async fn pace(&mut self) {
        let gap = Duration::from_secs_f64(1.0 / self.options.writes_per_second.max(0.1));
        tokio::time::sleep_until(self.next_write.into()).await;
        self.next_write = Instant::now().max(self.next_write) + gap;
    }

    async fn write(
        &mut self,
        by_serial: &HashMap<String, Arc<Switch>>,
        unmatched: &mut Vec<(Timestamp, String, String)>,
        serial: &str,
        pending: &Pending,
    ) -> Result<(), WriteError> {
        let mut switch = match by_serial.get(serial) {
            Some(s) => Switch::clone(s),
            // Touched, and gone since: nothing to write, and nothing to discover.
            None if pending.last_seen.is_none() => return Ok(()),
            None => match self.discover(serial, pending, unmatched).await? {
                Some(s) => s,
                None => return Ok(()),
            },
        };
        let ns = switch.namespace().unwrap_or_default();
        let name = switch.name_any();
        let api: Api<Switch> = Api::namespaced(self.client.clone(), &ns);
        let fail = |source| WriteError::Kube { switch: format!("{ns}/{name}"), source };
        for _ in 0..ATTEMPTS {
            let mut status = switch.status.clone().unwrap_or_default();
            let declared = || (self.matcher)(&switch.spec);
            if !apply(
                &mut status,
                &switch.spec,
                switch.metadata.generation,
                pending,
                declared,
                Timestamp::now(),
            ) {
                return Ok(());
            }
            let body = json!({
                "apiVersion": "ztp.netops.dev/v1alpha1",
                "kind": "Switch",
                "metadata": {"name": name, "resourceVersion": switch.resource_version()},
                "status": status,
            });
            self.pace().await;
            let params = PatchParams::apply(SERVER_FIELD_MANAGER).force();
            match api.patch_status(&name, &params, &Patch::Apply(&body)).await {
                Ok(_) => return Ok(()),
                Err(e) if status_code(&e) == Some(409) => {
                    tracing::debug!(switch = %format!("{ns}/{name}"), "status changed since it was read; applying again");
                    self.pace().await;
                    switch = api.get(&name).await.map_err(fail)?;
                }
                Err(e) if status_code(&e) == Some(404) => {
                    tracing::info!(switch = %format!("{ns}/{name}"), "Switch deleted meanwhile; not written");
                    return Ok(());
                }
                Err(e) => return Err(fail(e)),
            }
        }
        Err(WriteError::Contended { switch: format!("{ns}/{name}"), attempts: ATTEMPTS })
    }

    /// Creates the device's Switch when `--discover` says so; `None` when it does not (or the
    /// device's source created too many this minute: it is seen again on its next request).
    async fn discover(
        &mut self,
        serial: &str,
        pending: &Pending,
        unmatched: &mut Vec<(Timestamp, String, String)>,
    ) -> Result<Option<Switch>, WriteError> {
        if !may_discover(self.options.discover, serial, pending, &mut self.created) {
            return Ok(None);
        }
        let matched = pending.matched.as_ref().and_then(Option::as_ref);
        let namespace = match matched.and_then(|m| m.namespace.clone()) {
            Some(ns) => ns,
            None => self.options.namespace.clone(),
        };
        if matched.is_none() {
            self.make_room(unmatched).await;
        }
        let name = name::for_serial(serial);
        let api: Api<Switch> = Api::namespaced(self.client.clone(), &namespace);
        let switch = Switch {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                labels: Some([(DISCOVERED_BY.0.to_owned(), DISCOVERED_BY.1.to_owned())].into()),
                ..Default::default()
            },
            spec: SwitchSpec::for_serial(serial),
            status: None,
        };
        self.pace().await;
        let params = PostParams { field_manager: Some(SERVER_FIELD_MANAGER.into()), ..Default::default() };
        let fail = |source| WriteError::Kube { switch: format!("{namespace}/{name}"), source };
        let created = match api.create(&params, &switch).await {
            Ok(s) => s,
            Err(e) if status_code(&e) == Some(409) => {
                let existing = api.get(&name).await.map_err(fail)?;
                if existing.spec.serial_number != serial {
                    return Err(WriteError::NameTaken {
                        switch: format!("{namespace}/{name}"),
                        serial: serial.to_owned(),
                        other: existing.spec.serial_number,
                    });
                }
                existing
            }
            Err(e) => return Err(fail(e)),
        };
        tracing::info!(serial, switch = %format!("{namespace}/{name}"), matched = matched.is_some(), "Switch discovered");
        if matched.is_none() {
            unmatched.push((pending.last_seen.unwrap_or_else(Timestamp::now), namespace, name));
        }
        Ok(Some(created))
    }

    /// Deletes the least recently seen discovered `Unmatched` Switches until one more fits under
    /// `--max-unmatched`.
    async fn make_room(&mut self, unmatched: &mut Vec<(Timestamp, String, String)>) {
        unmatched.sort();
        while unmatched.len() >= self.options.max_unmatched.max(1) {
            let (_, ns, name) = unmatched.remove(0);
            self.pace().await;
            let api: Api<Switch> = Api::namespaced(self.client.clone(), &ns);
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {
                    tracing::info!(switch = %format!("{ns}/{name}"), "oldest Unmatched Switch deleted to make room (--max-unmatched)")
                }
                Err(e) if status_code(&e) == Some(404) => {}
                Err(e) => {
                    tracing::warn!(switch = %format!("{ns}/{name}"), error = %e, "deleting an Unmatched Switch")
                }
            }
        }
    }
}

/// Whether a device first seen gets a Switch: `discover` allows it (every device, or one a
/// profile matches), and its source address has not made its share of new Switches this minute
/// (`limit` counts this one; a refusal is logged, and the device is seen again on its next
/// request). One rule for the servers' writer and standalone's fleet.
pub(super) fn may_discover(
    discover: Discover,
    serial: &str,
    pending: &Pending,
    limit: &mut PerSource,
) -> bool {
    let matched = pending.matched.as_ref().is_some_and(Option::is_some);
    match discover {
        Discover::None => return false,
        Discover::Matched if !matched => return false,
        _ => {}
    }
    let source = pending.facts.address.as_deref().and_then(|a| a.parse::<IpAddr>().ok());
    if let Some(ip) = source
        && !limit.allow(ip, Instant::now())
    {
        tracing::warn!(serial, source = %ip, "too many new Switches from this source this minute; not created");
        return false;
    }
    true
}

/// Whether the server created `s` (discovery).
pub(super) fn discovered(s: &Switch) -> bool {
    s.labels().get(DISCOVERED_BY.0).map(String::as_str) == Some(DISCOVERED_BY.1)
}

/// For a Switch the server discovered that is now `Unmatched`: when it was last seen (the epoch
/// when never), the order in which `--max-unmatched` recycles; `None` for any other Switch (one
/// made by hand is never recycled).
pub(super) fn recyclable(s: &Switch) -> Option<Timestamp> {
    let st = s.status.as_ref().filter(|st| st.phase == Some(SwitchPhase::Unmatched))?;
    discovered(s).then(|| st.last_seen.as_ref().map_or(Timestamp::UNIX_EPOCH, |t| t.0))
}

/// The discovered Switches in phase `Unmatched`, as (last seen, namespace, name).
fn discovered_unmatched(by_serial: &HashMap<String, Arc<Switch>>) -> Vec<(Timestamp, String, String)> {
    by_serial
        .values()
        .filter_map(|s| Some((recyclable(s)?, s.namespace().unwrap_or_default(), s.name_any())))
        .collect()
}

//! SwitchProfiles → the device snapshot. One debounced loop: any change to a SwitchProfile, an
//! OsImage, a ConfigMap or a Secret (in the watched scope) triggers a rebuild of the whole
//! snapshot, which is published to the store only when its content changed; then each profile's
//! status (`Ready`, `Conflict`, match summary) is server-side applied. `status.devices` belongs
//! to the device server (field manager `ztp-operator-server`): the controller never applies it,
//! so neither side clobbers the other.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::{FutureExt, StreamExt, stream};
use k8s_openapi::{
    api::core::v1::{ConfigMap, Secret},
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
    runtime::{WatchStreamExt, reflector, watcher},
};
use serde_json::json;

use super::{
    Error, FIELD_MANAGER,
    k8s::{KubeLookup, KubeReporter},
};
use crate::{
    api::{
        ConditionStatus, ConditionType, OsImage, SwitchProfile, SwitchProfileStatus,
        conditions::{find_condition, remove_condition, set_condition},
    },
    profile::{build, index::DeviceIndex, publish},
    reconcile::{EventType, object_name},
    store::Store,
};

fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the snapshot loop until the process ends.
pub async fn run(
    client: Client,
    store: Store,
    namespace: Option<String>,
    images: reflector::Store<OsImage>,
) -> Result<(), Error> {
    let (profiles, writer) = reflector::store::<SwitchProfile>();
    let profile_events = watcher(api::<SwitchProfile>(&client, &namespace), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .touched_objects()
        .map(|_| ());
    let image_events = watcher(api::<OsImage>(&client, &namespace), watcher::Config::default())
        .default_backoff()
        .touched_objects()
        .map(|_| ());
    let cm_events = watcher(api::<ConfigMap>(&client, &namespace), watcher::Config::default())
        .default_backoff()
        .touched_objects()
        .map(|_| ());
    let secret_events = watcher(api::<Secret>(&client, &namespace), watcher::Config::default())
        .default_backoff()
        .touched_objects()
        .map(|_| ());
    let mut triggers = stream::select_all(vec![
        profile_events.boxed(),
        image_events.boxed(),
        cm_events.boxed(),
        secret_events.boxed(),
    ]);
    let lookup = KubeLookup(client.clone());
    let reporter = KubeReporter::new(client.clone());
    let mut resync = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            next = triggers.next() => if next.is_none() { return Ok(()) },
            _ = resync.tick() => {}
        }
        // Debounce: a burst of changes (a Git sync) makes one rebuild.
        tokio::time::sleep(Duration::from_millis(300)).await;
        while let Some(Some(_)) = triggers.next().now_or_never() {}
        if let Err(e) = rebuild(&client, &store, &profiles.state(), &images.state(), &lookup, &reporter).await
        {
            tracing::warn!(error = %e, "snapshot rebuild failed; retrying on the next change");
        }
    }
}

async fn rebuild(
    client: &Client,
    store: &Store,
    profiles: &[Arc<SwitchProfile>],
    images: &[Arc<OsImage>],
    lookup: &KubeLookup,
    reporter: &KubeReporter,
) -> Result<(), Error> {
    let built = build::build(profiles, images, lookup).await;
    let index = DeviceIndex::build(&built.snapshot);
    match publish::publish(store, &built.snapshot).await {
        Ok(true) => {
            tracing::info!(version = %built.snapshot.version, profiles = built.snapshot.profiles.len(), "snapshot published")
        }
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "cannot publish the snapshot"),
    }
    let claims = Claims::of(&index);
    for p in profiles.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
        let key = object_name(&p.metadata);
        let status = profile_status(
            p,
            built.problems.get(&key),
            &claims.of_profile(&key),
            built.crlf_normalised.contains(&key),
        );
        let current = p.status.clone().map(|s| SwitchProfileStatus { devices: None, ..s });
        if current.as_ref() == Some(&status) {
            continue;
        }
        if let Some(note) = newly_lost(current.as_ref(), &status) {
            reporter.profile_event(p, EventType::Warning, CONFLICT, &note).await;
        }
        let ns = p.metadata.namespace.as_deref().unwrap_or("default");
        let api: Api<SwitchProfile> = Api::namespaced(client.clone(), ns);
        let patch =
            json!({"apiVersion": "ztp.netops.dev/v1alpha1", "kind": "SwitchProfile", "status": status});
        if let Err(e) = api
            .patch_status(
                p.metadata.name.as_deref().unwrap_or_default(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
        {
            tracing::warn!(profile = %key, error = %e, "cannot write profile status");
        }
    }
    Ok(())
}

/// Reason of the `Ready=False` / `Stalled=True` conditions of a profile that lost a key, and of
/// the Warning Event it gets.
pub const CONFLICT: &str = "Conflict";

/// Every profile's share of the index's conflicts: what it lost and what it kept.
#[derive(Debug, Default)]
struct Claims {
    lost: BTreeMap<String, Vec<String>>,
    kept: BTreeMap<String, Vec<String>>,
}

/// What one profile lost to older claims and kept against newer ones (messages).
#[derive(Debug, Default)]
pub struct ProfileClaims {
    pub lost: Vec<String>,
    pub kept: Vec<String>,
}

impl Claims {
    fn of(index: &DeviceIndex) -> Self {
        let mut claims = Claims::default();
        for c in index.conflicts() {
            claims.lost.entry(c.loser.clone()).or_default().push(format!(
                "{} {} is also claimed by {}, which wins: it is the older claim and serves the device",
                c.key_kind, c.key, c.winner
            ));
            claims.kept.entry(c.winner.clone()).or_default().push(format!(
                "{} {} is also claimed by {} (newer); this profile wins",
                c.key_kind, c.key, c.loser
            ));
        }
        claims
    }

    fn of_profile(&self, key: &str) -> ProfileClaims {
        ProfileClaims {
            lost: self.lost.get(key).cloned().unwrap_or_default(),
            kept: self.kept.get(key).cloned().unwrap_or_default(),
        }
    }
}

/// The Warning Event's note when `new` loses a key that `old` did not (or loses another one).
fn newly_lost(old: Option<&SwitchProfileStatus>, new: &SwitchProfileStatus) -> Option<String> {
    let stalled = |s: &SwitchProfileStatus| {
        find_condition(&s.conditions, ConditionType::Stalled)
            .filter(|c| c.status == "True" && c.reason == CONFLICT)
            .map(|c| c.message.clone())
    };
    let now = stalled(new)?;
    (old.and_then(stalled).as_ref() != Some(&now)).then_some(now)
}

/// The status of one profile after a rebuild: the controller's fields only (`devices` is left
/// out, it is the device server's). A profile that lost a key to an older one is `Ready=False`
/// and `Stalled=True`, both with reason `Conflict` (kstatus: Failed); its other problems follow.
pub fn profile_status(
    p: &SwitchProfile,
    problems: Option<&Vec<String>>,
    claims: &ProfileClaims,
    crlf: bool,
) -> SwitchProfileStatus {
    let mut status = p.status.clone().unwrap_or_default();
    let generation = p.metadata.generation;
    let now = Time(Timestamp::now());
    let conds: &mut Vec<Condition> = &mut status.conditions;
    let mut set =
        |t, s, reason: &str, msg: &str| set_condition(conds, t, s, reason, msg, generation, now.clone());
    let lost = claims.lost.join("; ");
    match (claims.lost.is_empty(), problems) {
        (true, None) => {
            let mut msg = "every reference resolves".to_owned();
            if crlf {
                msg.push_str("; the Cumulus script had CRLF line endings and is served with LF");
            }
            set(ConditionType::Ready, ConditionStatus::True, "Resolved", &msg);
        }
        (true, Some(problems)) => {
            set(ConditionType::Ready, ConditionStatus::False, "Unresolved", &problems.join("; "));
        }
        (false, problems) => {
            let mut msg = lost.clone();
            if let Some(problems) = problems {
                msg = format!("{msg}; {}", problems.join("; "));
            }
            set(ConditionType::Ready, ConditionStatus::False, CONFLICT, &msg);
        }
    }
    if claims.lost.is_empty() {
        remove_condition(&mut status.conditions, ConditionType::Stalled);
    } else {
        set_condition(
            &mut status.conditions,
            ConditionType::Stalled,
            ConditionStatus::True,
            CONFLICT,
            &lost,
            generation,
            now.clone(),
        );
    }
    let all: Vec<String> = claims.lost.iter().chain(&claims.kept).cloned().collect();
    if all.is_empty() {
        remove_condition(&mut status.conditions, ConditionType::Conflict);
    } else {
        set_condition(
            &mut status.conditions,
            ConditionType::Conflict,
            ConditionStatus::True,
            "DuplicateMatch",
            &all.join("; "),
            generation,
            now,
        );
    }
    status.observed_generation = generation;
    status.match_summary = Some(p.spec.selector.summary());
    status.devices = None;
    status
}

//! SwitchProfiles → the device snapshot. One debounced loop, woken by [`super::triggers`] only
//! for changes that can alter the snapshot or a status (a profile's spec, an OsImage becoming
//! Ready or not, the data of a referenced ConfigMap or Secret), and once a minute: it rebuilds
//! the whole snapshot from the watch caches (no API reads), publishes it to the store only when
//! its content changed, then server-side applies each profile's status (`Ready`, `Stalled`,
//! `Conflict`, match summary) only when it differs from the one the profile has (or the one we
//! last wrote, while the cache has not caught up), and never to a profile being deleted or gone.
//! `status.devices` belongs to the device server (field manager `ztp-operator-server`): the
//! controller never applies it, so neither side clobbers the other.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use k8s_openapi::{
    api::core::v1::{ConfigMap, Secret},
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::reflector::{self, ObjectRef},
};
use serde_json::json;
use tokio::sync::Notify;

use super::{
    Error, FIELD_MANAGER,
    k8s::{CacheLookup, KubeReporter},
    triggers,
};
use crate::{
    api::{
        ConditionStatus, ConditionType, OsImage, SwitchProfile, SwitchProfileStatus,
        conditions::{find_condition, set_condition, set_or_remove_condition},
    },
    profile::{
        build,
        index::DeviceIndex,
        problem::{self, Problem, Severity},
        publish,
    },
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

/// Aborts the watch tasks however the loop ends.
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        self.0.iter().for_each(tokio::task::JoinHandle::abort);
    }
}

/// The SwitchProfile watch the snapshot loop runs, shared with the OsImage controller: `store`
/// (filled through `writer`), and `released`, told of each OsImage (`namespace`, `name`) that
/// lost a reference ([`triggers::ProfileRefs`]).
pub struct ProfileWatch {
    pub store: reflector::Store<SwitchProfile>,
    pub writer: reflector::store::Writer<SwitchProfile>,
    pub released: Option<triggers::Released>,
}

/// Runs the snapshot loop until the process ends. `images` is the OsImage controller's store;
/// that controller notifies `wake` when an image changes in a way the snapshot sees.
pub async fn run(
    client: Client,
    store: Store,
    namespace: Option<String>,
    images: reflector::Store<OsImage>,
    wake: Arc<Notify>,
    profile_watch: ProfileWatch,
) -> Result<(), Error> {
    let ProfileWatch { store: profiles, writer: profile_writer, mut released } = profile_watch;
    let refs = triggers::ProfileRefs::default();
    let observer: triggers::Observer<SwitchProfile> = Box::new({
        let refs = refs.clone();
        move |event| {
            for (ns, name) in refs.observe(event) {
                if let Some(released) = released.as_mut() {
                    released(&ns, &name);
                }
            }
        }
    });
    let (config_maps, cm_writer) = reflector::store::<ConfigMap>();
    let (secrets, secret_writer) = reflector::store::<Secret>();
    let _tasks = Tasks(vec![
        tokio::spawn(triggers::follow_observed(
            api::<SwitchProfile>(&client, &namespace),
            profile_writer,
            triggers::profile_fingerprint(),
            wake.clone(),
            Some(observer),
        )),
        tokio::spawn(triggers::follow(
            api::<ConfigMap>(&client, &namespace),
            cm_writer,
            triggers::config_map_fingerprint(refs.clone()),
            wake.clone(),
        )),
        tokio::spawn(triggers::follow(
            api::<Secret>(&client, &namespace),
            secret_writer,
            triggers::secret_fingerprint(refs),
            wake.clone(),
        )),
    ]);
    // A rebuild before every cache is filled would report present objects as missing.
    ready("SwitchProfiles", triggers::filled(&profiles)).await?;
    ready("ConfigMaps", triggers::filled(&config_maps)).await?;
    ready("Secrets", triggers::filled(&secrets)).await?;
    ready("OsImages", triggers::filled(&images)).await?;
    tracing::info!("snapshot loop: every watch cache is filled");
    let lookup = CacheLookup { config_maps, secrets };
    let reporter = KubeReporter::new(client.clone());
    let mut written = Written::default();
    let mut resync = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = resync.tick() => written.0.clear(),
        }
        // Debounce: a burst of changes (a Git sync) makes one rebuild; the notifications it
        // brings collapse into one.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rebuild = Rebuild { client: &client, store: &store, lookup: &lookup, reporter: &reporter };
        if let Err(e) = rebuild.run(&profiles, &images.state(), &mut written).await {
            tracing::warn!(error = %e, "snapshot rebuild failed; retrying on the next change");
        }
    }
}

/// Waits for a watch cache to be filled, saying every 15 s which one it still waits for (a watch
/// the controller's RBAC refuses never fills).
async fn ready(
    what: &str,
    wait: impl std::future::Future<Output = Result<(), reflector::store::WriterDropped>>,
) -> Result<(), Error> {
    tokio::pin!(wait);
    let began = std::time::Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_secs(15), &mut wait).await {
            Ok(result) => {
                tracing::debug!(
                    watch = what,
                    waited_ms = began.elapsed().as_millis() as u64,
                    "snapshot loop: watch cache filled"
                );
                return result.map_err(|e| Error::Watch(format!("{what}: {e}")));
            }
            Err(_) => {
                tracing::warn!(watch = what, "snapshot loop: still waiting for the first list of {what}")
            }
        }
    }
}

/// The status last written to each profile (by uid), so that a write the watch cache has not
/// shown yet is not repeated. Cleared at each resync.
#[derive(Default)]
struct Written(HashMap<String, SwitchProfileStatus>);

struct Rebuild<'a> {
    client: &'a Client,
    store: &'a Store,
    lookup: &'a CacheLookup,
    reporter: &'a KubeReporter,
}

impl Rebuild<'_> {
    async fn run(
        &self,
        profile_cache: &reflector::Store<SwitchProfile>,
        images: &[Arc<OsImage>],
        written: &mut Written,
    ) -> Result<(), Error> {
        let (client, store, lookup, reporter) = (self.client, self.store, self.lookup, self.reporter);
        let profiles = profile_cache.state();
        let built = build::build(&profiles, images, lookup).await;
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
            let uid = p.uid().unwrap_or_default();
            if current.as_ref() == Some(&status) || written.0.get(&uid) == Some(&status) {
                continue;
            }
            // Gone or going since the rebuild began: no write (it would only be refused).
            let now = profile_cache.get(&ObjectRef::from_obj(p.as_ref()));
            if now.is_none_or(|n| n.uid() != p.uid() || n.metadata.deletion_timestamp.is_some()) {
                continue;
            }
            if let Some(note) = newly_lost(current.as_ref(), &status) {
                reporter.profile_event(p, EventType::Warning, CONFLICT, &note).await;
            }
            let ns = p.metadata.namespace.as_deref().unwrap_or("default");
            let api: Api<SwitchProfile> = Api::namespaced(client.clone(), ns);
            let patch =
                json!({"apiVersion": "ztp.netops.dev/v1alpha1", "kind": "SwitchProfile", "status": status});
            match api
                .patch_status(
                    p.metadata.name.as_deref().unwrap_or_default(),
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&patch),
                )
                .await
            {
                Ok(_) => {
                    written.0.insert(uid, status);
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    tracing::debug!(profile = %key, "profile deleted before its status was written");
                }
                Err(e) => tracing::warn!(profile = %key, error = %e, "cannot write profile status"),
            }
        }
        Ok(())
    }
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
/// out, it is the device server's). kstatus reads it so:
///
/// - every reference resolves and no claim is lost: `Ready=True` (Current);
/// - a problem that clears by itself (an image still fetching, an object not created yet):
///   `Ready=False` and `Reconciling=True` with its reason, e.g. `WaitingForImage` (InProgress);
/// - a problem that needs a human (a missing key, a template that does not render, an image
///   that failed) or a key lost to an older profile (`Conflict`): `Ready=False` and
///   `Stalled=True` with its reason (Failed); no `Reconciling` then, which kstatus would read first.
///
/// Conditions that no longer apply are removed; each carries the generation it describes.
pub fn profile_status(
    p: &SwitchProfile,
    problems: Option<&Vec<Problem>>,
    claims: &ProfileClaims,
    crlf: bool,
) -> SwitchProfileStatus {
    let mut status = p.status.clone().unwrap_or_default();
    let generation = p.metadata.generation;
    let now = Time(Timestamp::now());
    let conds: &mut Vec<Condition> = &mut status.conditions;
    let verdict = problems.and_then(|p| problem::verdict(p));
    let lost = claims.lost.join("; ");
    let human = verdict.as_ref().filter(|v| v.severity == Severity::NeedsHuman);
    let waiting = verdict.as_ref().filter(|v| v.severity == Severity::Waiting);
    let with = |first: &str, then: Option<&str>| match then {
        Some(t) => format!("{first}; {t}"),
        None => first.to_owned(),
    };
    let (ready, stalled, reconciling) = match (claims.lost.is_empty(), &verdict) {
        (true, None) => {
            let mut msg = "every reference resolves".to_owned();
            if crlf {
                msg.push_str("; the Cumulus script had CRLF line endings and is served with LF");
            }
            ((ConditionStatus::True, "Resolved", msg), None, None)
        }
        (true, Some(v)) => (
            (ConditionStatus::False, v.reason, v.all.clone()),
            human.map(|h| (h.reason, h.message.clone())),
            waiting.map(|w| (w.reason, w.message.clone())),
        ),
        (false, v) => (
            (ConditionStatus::False, CONFLICT, with(&lost, v.as_ref().map(|v| v.all.as_str()))),
            Some((CONFLICT, with(&lost, human.map(|h| h.message.as_str())))),
            None,
        ),
    };
    set_condition(conds, ConditionType::Ready, ready.0, ready.1, &ready.2, generation, now.clone());
    let abnormal = [(ConditionType::Stalled, stalled), (ConditionType::Reconciling, reconciling)];
    for (type_, value) in abnormal {
        let value = value.as_ref().map(|(reason, msg)| (*reason, msg.as_str()));
        set_or_remove_condition(conds, type_, value, generation, now.clone());
    }
    let all = claims.lost.iter().chain(&claims.kept).cloned().collect::<Vec<_>>().join("; ");
    let conflict = (!all.is_empty()).then_some(("DuplicateMatch", all.as_str()));
    set_or_remove_condition(conds, ConditionType::Conflict, conflict, generation, now);
    status.observed_generation = generation;
    status.match_summary = Some(p.spec.selector.summary());
    status.devices = None;
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::problem::{IMAGE_FAILED, WAITING_FOR_IMAGE};

    fn profile(generation: i64) -> SwitchProfile {
        serde_json::from_value(json!({
            "apiVersion": "ztp.netops.dev/v1alpha1", "kind": "SwitchProfile",
            "metadata": {"name": "p", "namespace": "net", "generation": generation},
            "spec": {"match": {"serialNumbers": ["SN1"]}}
        }))
        .expect("profile")
    }

    fn fetching() -> Problem {
        Problem::ImageNotReady {
            what: "onie.installImage".into(),
            image: "net/nos".into(),
            state: "Fetching".into(),
        }
    }

    fn failed() -> Problem {
        Problem::ImageFailed {
            what: "onie.installImage".into(),
            image: "net/nos".into(),
            state: "failed: 404".into(),
        }
    }

    /// `(type, status, reason)` of every condition, sorted by type.
    fn conds(s: &SwitchProfileStatus) -> Vec<(String, String, String)> {
        let mut v: Vec<_> =
            s.conditions.iter().map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone())).collect();
        v.sort();
        v
    }

    fn c(t: &str, s: &str, r: &str) -> (String, String, String) {
        (t.into(), s.into(), r.into())
    }

    #[test]
    fn waiting_reconciles_a_human_problem_stalls_and_stale_conditions_go() {
        let none = ProfileClaims::default();
        let mut p = profile(1);
        let s = profile_status(&p, Some(&vec![fetching()]), &none, false);
        assert_eq!(
            conds(&s),
            [c("Ready", "False", WAITING_FOR_IMAGE), c("Reconciling", "True", WAITING_FOR_IMAGE)]
        );
        let r = find_condition(&s.conditions, ConditionType::Reconciling).expect("reconciling");
        assert_eq!(r.message, "onie.installImage: OsImage net/nos is not Ready yet (Fetching)");
        assert_eq!(r.observed_generation, Some(1));

        p.status = Some(s);
        p.metadata.generation = Some(2);
        let s = profile_status(&p, Some(&vec![fetching(), failed()]), &none, false);
        assert_eq!(conds(&s), [c("Ready", "False", IMAGE_FAILED), c("Stalled", "True", IMAGE_FAILED)]);
        let st = find_condition(&s.conditions, ConditionType::Stalled).expect("stalled");
        assert_eq!(st.message, "onie.installImage: OsImage net/nos failed: 404");
        assert!(s.conditions.iter().all(|c| c.observed_generation == Some(2)));

        p.status = Some(s);
        let s = profile_status(&p, None, &none, false);
        assert_eq!(conds(&s), [c("Ready", "True", "Resolved")]);

        // A lost claim stalls, whatever else waits; no Reconciling to hide it from kstatus.
        let lost = ProfileClaims { lost: vec!["serial SN1 is also claimed by net/old".into()], kept: vec![] };
        let s = profile_status(&p, Some(&vec![fetching()]), &lost, false);
        assert_eq!(
            conds(&s),
            [
                c("Conflict", "True", "DuplicateMatch"),
                c("Ready", "False", CONFLICT),
                c("Stalled", "True", CONFLICT)
            ]
        );
    }
}

//! The NautobotSource controller: every `intervalSeconds` it reads the source's Nautobot (a full
//! read, then the change log: [`crate::nautobot::read`]), maps the inventory to Switches and
//! OsImages ([`crate::nautobot::desired`]), and server-side applies them with its own field
//! manager, label and Nautobot-id annotation ([`crate::nautobot::plan`] decides what to apply,
//! what clashes and what to prune). Only what changed since the last apply is written.
//!
//! A failed read (Nautobot down, a wrong token, a refused filter) changes nothing in the cluster:
//! the source turns `Stalled` with Nautobot's words and the next poll tries again. Deletes and
//! orphaning happen only after a read that succeeded. A full read is repeated every
//! [`FULL_READ_EVERY`] and after a spec change, as a backstop for what a change log cannot tell
//! (a change made outside Nautobot's API).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    hash::{Hash, Hasher},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    core::PartialObjectMeta,
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        predicates, reflector,
        reflector::ObjectRef,
        watcher::{Config, watcher},
    },
};
use serde_json::{Value, json};

use super::{k8s::KubeLookup, profiles::api};
use crate::{
    api::{
        ConditionStatus, ConditionType, OsImage, Switch,
        conditions::set_condition,
        nautobot::{NautobotSource, ObjectCounts, PrunePolicy, SkippedObject, bounded_skips},
    },
    lookup::{Kind, ObjectLookup},
    nautobot::{
        Inventory,
        client::Nautobot,
        desired,
        plan::{
            Clash, DIGEST_ANNOTATION, Declared, Existing, FIELD_MANAGER, ID_ANNOTATION, Plan, SOURCE_LABEL,
            object, plan,
        },
        read::{self, Delta, Mark},
    },
    switch::k8s::DISCOVERED_BY,
};

/// A full read at least this often, besides the change log.
pub const FULL_READ_EVERY: Duration = Duration::from_secs(3600);
/// Applies in flight at once.
const APPLY_CONCURRENCY: usize = 16;
/// Clashes named in the `Conflict` condition; the rest are counted.
const NAMED_CLASHES: usize = 10;

/// What the controller keeps between polls of one source.
#[derive(Debug, Default)]
struct SourceState {
    uid: String,
    generation: Option<i64>,
    inventory: Inventory,
    mark: Mark,
    full_read_at: Option<Instant>,
    /// The digest last applied per object name (of what this process applied).
    switches: BTreeMap<String, u64>,
    images: BTreeMap<String, u64>,
}

struct Ctx {
    client: Client,
    lookup: KubeLookup,
    switches: reflector::Store<PartialObjectMeta<Switch>>,
    images: reflector::Store<PartialObjectMeta<OsImage>>,
    states: Mutex<HashMap<ObjectRef<NautobotSource>, Arc<tokio::sync::Mutex<SourceState>>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing the status of NautobotSource {0}: {1}")]
    Status(String, #[source] kube::Error),
}

/// Runs the NautobotSource controller until its watch ends. Without the CRD installed it logs
/// once and returns.
pub async fn run(client: Client, namespace: Option<String>) {
    let sources: Api<NautobotSource> = api(&client, &namespace);
    if let Err(e) = sources.list(&kube::api::ListParams::default().limit(1)).await {
        tracing::warn!(error = %e, "NautobotSources are not read: their CRD is not installed (or not readable)");
        return;
    }
    let (switches, switch_writer) = reflector::store();
    let (images, image_writer) = reflector::store();
    // Metadata only: names, labels and annotations are all the plans need of existing objects.
    let switch_api: Api<PartialObjectMeta<Switch>> = api(&client, &namespace);
    let image_api: Api<PartialObjectMeta<OsImage>> = api(&client, &namespace);
    // managedFields are most of an object's metadata: the caches keep none.
    let watch_switches = reflector(
        switch_writer,
        watcher(switch_api, Config::default().any_semantic()).modify(|o| o.managed_fields_mut().clear()),
    )
    .default_backoff()
    .for_each(|_| async {});
    let watch_images = reflector(
        image_writer,
        watcher(image_api, Config::default().any_semantic()).modify(|o| o.managed_fields_mut().clear()),
    )
    .default_backoff()
    .for_each(|_| async {});
    tokio::spawn(watch_switches);
    tokio::spawn(watch_images);
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        lookup: KubeLookup(client.clone()),
        switches,
        images,
        states: Mutex::new(HashMap::new()),
    });
    // Woken by spec changes only: the controller's own status writes must not start a poll.
    let (reader, writer) = reflector::store();
    let changes = reflector(writer, watcher(sources, Config::default().any_semantic()))
        .default_backoff()
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    Controller::for_stream(changes, reader)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "NautobotSource controller");
            }
        })
        .await;
}

fn error_policy(source: Arc<NautobotSource>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(source = %source.name_any(), %error, "NautobotSource sync failed");
    Action::requeue(Duration::from_secs(10))
}

/// Why a sync did not read Nautobot (nothing changed in the cluster).
#[derive(Debug)]
struct Unread {
    reason: &'static str,
    message: String,
}

/// What one sync did.
#[derive(Debug, Default)]
struct Synced {
    devices: usize,
    full: bool,
    switches: ObjectCounts,
    images: ObjectCounts,
    clashes: Vec<Clash>,
    /// Objects whose apply or prune failed, with why.
    failures: Vec<String>,
    /// Devices and image files that made no object, and why.
    skipped: Vec<SkippedObject>,
    skipped_images: Vec<SkippedObject>,
}

async fn reconcile(source: Arc<NautobotSource>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let interval = Duration::from_secs(u64::try_from(source.spec.interval_seconds).unwrap_or(60).max(10));
    let key = ObjectRef::from_obj(&*source);
    if source.meta().deletion_timestamp.is_some() {
        // Its objects stay (`Orphan`) or go with it (`Delete`: their owner reference).
        ctx.states.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
        return Ok(Action::await_change());
    }
    let state = ctx.states.lock().unwrap_or_else(PoisonError::into_inner).entry(key).or_default().clone();
    let mut state = state.lock().await;
    let outcome = sync(&source, &ctx, &mut state).await;
    write_status(&ctx.client, &source, &state, outcome).await?;
    Ok(Action::requeue(interval))
}

/// Reads Nautobot and applies what it declares.
async fn sync(source: &NautobotSource, ctx: &Ctx, state: &mut SourceState) -> Result<Synced, Unread> {
    let ns = source.namespace().unwrap_or_else(|| "default".into());
    let spec = &source.spec;
    let token = ctx
        .lookup
        .text(Kind::Secret, &ns, &spec.token_secret_ref)
        .await
        .map_err(|e| Unread { reason: "TokenUnavailable", message: format!("the token: {e}") })?;
    let ca =
        match &spec.ca_bundle_ref {
            Some(r) => Some(ctx.lookup.bytes(Kind::ConfigMap, &ns, r).await.map_err(|e| Unread {
                reason: "CaBundleUnavailable",
                message: format!("the CA bundle: {e}"),
            })?),
            None => None,
        };
    let nb = Nautobot::new(&spec.url, &token, ca.as_deref())
        .map_err(|e| Unread { reason: "InvalidSource", message: e.to_string() })?;
    let unread = |e: crate::nautobot::client::NautobotError| Unread {
        reason: "NautobotError",
        message: e.to_string(),
    };

    // The same object and spec as last time, read fully not long ago: the change log will do.
    let uid = source.uid().unwrap_or_default();
    let fresh = state.uid == uid
        && state.generation == source.meta().generation
        && state.full_read_at.is_some_and(|at| at.elapsed() < FULL_READ_EVERY);
    let mut full = !fresh;
    if fresh {
        match read::changes(&nb, spec, &mut state.inventory, &mut state.mark).await.map_err(unread)? {
            Delta::Nothing | Delta::Applied(_) => {}
            Delta::NeedsFull(why) => {
                tracing::info!(source = %source.name_any(), why, "a full read of Nautobot");
                full = true;
            }
        }
    }
    if full {
        let (inventory, mark) = read::full(&nb, spec).await.map_err(unread)?;
        if state.uid != uid || state.generation != source.meta().generation {
            // Another spec may declare other bodies: apply everything once.
            state.switches.clear();
            state.images.clear();
        }
        *state = SourceState {
            uid,
            generation: source.meta().generation,
            inventory,
            mark,
            full_read_at: Some(Instant::now()),
            switches: std::mem::take(&mut state.switches),
            images: std::mem::take(&mut state.images),
        };
    }
    tracing::debug!(source = %source.name_any(), requests = nb.requests(), full, "read Nautobot");

    let declared = desired(&state.inventory, spec);
    let mut synced = Synced { devices: state.inventory.devices.len(), full, ..Default::default() };
    let owner = (spec.prune == PrunePolicy::Delete).then(|| owner_reference(source));
    let name = source.name_any();

    let objects = |kind, items: Vec<(&str, &str, Value)>, skipped: &[crate::nautobot::Skipped]| Declaration {
        bodies: items
            .into_iter()
            .map(|(n, id, spec)| {
                let mut body = object(kind, n, &ns, &name, id, owner.as_ref(), spec);
                // Applied with the object: a restarted controller knows what it already wrote.
                let digest = digest(&body);
                body["metadata"]["annotations"][DIGEST_ANNOTATION] = json!(format!("{digest:016x}"));
                (n.to_owned(), (body, digest))
            })
            .collect(),
        kept: skipped.iter().map(|s| s.id.clone()).collect(),
    };
    let switches = objects(
        "Switch",
        declared.switches.iter().map(|(n, s)| (n.as_str(), s.device_id.as_str(), json!(s.spec))).collect(),
        &declared.skipped,
    );
    let images = objects(
        "OsImage",
        declared.images.iter().map(|(n, i)| (n.as_str(), i.file_id.as_str(), json!(i.spec))).collect(),
        &declared.skipped_images,
    );
    // OsImages first: the Switches pinned to them then never name one that does not exist yet.
    let (prune, failures) = (spec.prune, &mut synced.failures);
    let api: Api<OsImage> = Api::namespaced(ctx.client.clone(), &ns);
    let existing = existing_of(&ctx.images, &ns, false);
    let (counts, image_clashes) =
        sync_kind(&api, &images, &existing, &mut state.images, &name, prune, failures).await;
    synced.images = counts;
    let api: Api<Switch> = Api::namespaced(ctx.client.clone(), &ns);
    let existing = existing_of(&ctx.switches, &ns, true);
    let (counts, switch_clashes) =
        sync_kind(&api, &switches, &existing, &mut state.switches, &name, prune, failures).await;
    synced.switches = counts;
    synced.clashes = switch_clashes.into_iter().chain(image_clashes).collect();
    synced.skipped = declared.skipped.iter().map(|s| s.to_status()).collect();
    synced.skipped_images = declared.skipped_images.iter().map(|s| s.to_status()).collect();
    Ok(synced)
}

/// One kind's objects as the source declares them: name → (body, digest); and the Nautobot ids
/// of the devices or image files skipped (their objects stay as they were).
struct Declaration {
    bodies: BTreeMap<String, (Value, u64)>,
    kept: BTreeSet<String>,
}

/// Plans one kind against its existing objects and carries the plan out: what it did, and the
/// declared objects another owner's are in the way of.
async fn sync_kind<K>(
    api: &Api<K>,
    declared: &Declaration,
    existing: &BTreeMap<String, Existing>,
    applied: &mut BTreeMap<String, u64>,
    source: &str,
    prune: PrunePolicy,
    failures: &mut Vec<String>,
) -> (ObjectCounts, Vec<Clash>)
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let kept: BTreeSet<&str> = declared.kept.iter().map(String::as_str).collect();
    let wanted = declared.bodies.iter().map(|(n, (_, d))| Declared { name: n, digest: *d });
    let plan = plan(wanted, existing, applied, &kept, source);
    let mut counts = carry_out(api, &plan, &declared.bodies, applied, prune, failures).await;
    counts.total = i64::try_from(declared.bodies.len() - plan.clashes.len()).unwrap_or(i64::MAX);
    (counts, plan.clashes)
}

/// The existing objects of `ns` in `store`, as the plan needs them.
fn existing_of<K>(
    store: &reflector::Store<PartialObjectMeta<K>>,
    ns: &str,
    switches: bool,
) -> BTreeMap<String, Existing>
where
    K: Resource<DynamicType = ()> + Clone,
    PartialObjectMeta<K>: reflector::Lookup<DynamicType = ()>,
{
    store
        .state()
        .iter()
        .filter(|o| o.metadata.namespace.as_deref() == Some(ns))
        .map(|o| {
            let labels: BTreeMap<String, String> =
                o.metadata.labels.clone().unwrap_or_default().into_iter().collect();
            let discovered =
                switches && labels.get(DISCOVERED_BY.0).map(String::as_str) == Some(DISCOVERED_BY.1);
            let annotations: BTreeMap<String, String> =
                o.metadata.annotations.clone().unwrap_or_default().into_iter().collect();
            let e = Existing {
                digest: annotations.get(DIGEST_ANNOTATION).and_then(|d| u64::from_str_radix(d, 16).ok()),
                annotations,
                labels,
                discovered,
                deleting: o.metadata.deletion_timestamp.is_some(),
            };
            (o.metadata.name.clone().unwrap_or_default(), e)
        })
        .collect()
}

/// Applies and prunes what `plan` says; the counts of what it did. `applied` learns each digest
/// written (and forgets each object pruned).
async fn carry_out<K>(
    api: &Api<K>,
    plan: &Plan,
    bodies: &BTreeMap<String, (Value, u64)>,
    applied: &mut BTreeMap<String, u64>,
    prune: PrunePolicy,
    failures: &mut Vec<String>,
) -> ObjectCounts
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut counts =
        ObjectCounts { unchanged: i64::try_from(plan.unchanged).unwrap_or(0), ..Default::default() };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    // APPLY_CONCURRENCY at a time, each kept only as its outcome: 5,000 applies never hold 5,000
    // futures or answers at once.
    for chunk in plan.apply.chunks(APPLY_CONCURRENCY) {
        let mut batch = Vec::with_capacity(chunk.len());
        for (name, new) in chunk {
            if let Some((body, digest)) = bodies.get(name) {
                batch.push(apply_one(api, name, *new, *digest, body, &params));
            }
        }
        for (name, new, digest, result) in futures::future::join_all(batch).await {
            match result {
                Ok(()) => {
                    applied.insert(name.clone(), digest);
                    if new { counts.created += 1 } else { counts.updated += 1 }
                }
                Err(e) => {
                    applied.remove(name);
                    failures.push(format!("{} {name}: {e}", K::kind(&())));
                }
            }
        }
    }
    for name in &plan.prune {
        let result = match prune {
            PrunePolicy::Delete => api.delete(name, &DeleteParams::background()).await.map(|_| ()),
            PrunePolicy::Orphan => {
                // The label and annotation go; the object stays as it is (with `Orphan` the
                // source applies no owner reference).
                let patch = json!({"metadata": {
                    "labels": {SOURCE_LABEL: null},
                    "annotations": {ID_ANNOTATION: null, DIGEST_ANNOTATION: null},
                }});
                api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ())
            }
        };
        match result {
            // Gone already: pruned all the same.
            Err(e) if crate::watch::status_code(&e) == Some(404) => {
                applied.remove(name);
            }
            Ok(()) => {
                applied.remove(name);
                match prune {
                    PrunePolicy::Delete => counts.deleted += 1,
                    PrunePolicy::Orphan => counts.orphaned += 1,
                }
            }
            Err(e) => failures.push(format!("{} {name}: {e}", K::kind(&()))),
        }
    }
    counts
}

/// One server-side apply, with what the caller needs to count it (the object the apiserver
/// answers is dropped at once).
async fn apply_one<'a, K>(
    api: &Api<K>,
    name: &'a String,
    new: bool,
    digest: u64,
    body: &Value,
    params: &PatchParams,
) -> (&'a String, bool, u64, Result<(), kube::Error>)
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    (name, new, digest, api.patch(name, params, &Patch::Apply(body)).await.map(|_| ()))
}

/// The owner reference to the source (with `prune: Delete`: deleting the source deletes its
/// objects too).
fn owner_reference(source: &NautobotSource) -> Value {
    json!({
        "apiVersion": NautobotSource::api_version(&()),
        "kind": NautobotSource::kind(&()),
        "name": source.name_any(),
        "uid": source.uid().unwrap_or_default(),
    })
}

fn digest(body: &Value) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.to_string().hash(&mut h);
    h.finish()
}

/// Writes the source's status: counts and conditions after a sync, or only the conditions (and
/// the rest as it was) when Nautobot was not read.
async fn write_status(
    client: &Client,
    source: &NautobotSource,
    state: &SourceState,
    outcome: Result<Synced, Unread>,
) -> Result<(), Error> {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let generation = source.meta().generation;
    let mut status = source.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    let mut set = |t, s, reason: &str, message: &str| {
        set_condition(&mut status.conditions, t, s, reason, message, generation, now.clone());
    };
    match &outcome {
        Err(unread) => {
            set(ConditionType::Ready, ConditionStatus::False, unread.reason, &unread.message);
            set(ConditionType::Stalled, ConditionStatus::True, unread.reason, &unread.message);
            set(
                ConditionType::Reconciling,
                ConditionStatus::False,
                unread.reason,
                "the next poll reads again",
            );
        }
        Ok(synced) => {
            let summary = format!(
                "{} Switches and {} OsImages from {} devices in Nautobot",
                synced.switches.total, synced.images.total, synced.devices
            );
            if synced.failures.is_empty() {
                set(ConditionType::Ready, ConditionStatus::True, "Synced", &summary);
                set(ConditionType::Reconciling, ConditionStatus::False, "Synced", &summary);
            } else {
                let message = format!(
                    "{} writes failed (the next poll tries again): {}",
                    synced.failures.len(),
                    synced.failures.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
                );
                set(ConditionType::Ready, ConditionStatus::False, "ApplyFailed", &message);
                set(ConditionType::Reconciling, ConditionStatus::True, "ApplyFailed", &message);
            }
            set(ConditionType::Stalled, ConditionStatus::False, "Synced", "Nautobot was read");
            match synced.clashes.is_empty() {
                true => set(
                    ConditionType::Conflict,
                    ConditionStatus::False,
                    "NoClash",
                    "no object of another owner is in the way",
                ),
                false => set(
                    ConditionType::Conflict,
                    ConditionStatus::True,
                    "NameClash",
                    &clash_message(&synced.clashes),
                ),
            }
        }
    }
    if let Ok(synced) = outcome {
        status.last_sync_time = Some(now.clone());
        if synced.full {
            status.last_full_sync_time = Some(now.clone());
        }
        status.cursor = (!state.mark.time.is_empty()).then(|| state.mark.time.clone());
        status.devices = Some(i64::try_from(synced.devices).unwrap_or(i64::MAX));
        status.switches = Some(synced.switches);
        status.images = Some(synced.images);
        let (count, kept) = bounded_skips(synced.skipped);
        status.skipped = Some(count);
        status.skipped_devices = kept;
        let (count, kept) = bounded_skips(synced.skipped_images);
        status.skipped_image_files = Some(count);
        status.skipped_images = kept;
    }
    let ns = source.namespace().unwrap_or_else(|| "default".into());
    let api: Api<NautobotSource> = Api::namespaced(client.clone(), &ns);
    let patch = json!({"apiVersion": "ztp.netops.dev/v1alpha1", "kind": "NautobotSource", "status": status});
    api.patch_status(&source.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map(|_| ())
        .map_err(|e| Error::Status(source.name_any(), e))
}

/// `Switch a: it was made by hand …; OsImage b: …` (at most [`NAMED_CLASHES`], then a count).
fn clash_message(clashes: &[Clash]) -> String {
    let mut named: Vec<String> =
        clashes.iter().take(NAMED_CLASHES).map(|c| format!("{}: {}", c.name, c.why)).collect();
    if clashes.len() > NAMED_CLASHES {
        named.push(format!("and {} more", clashes.len() - NAMED_CLASHES));
    }
    format!("not applied, as another owner's object has the name: {}", named.join("; "))
}

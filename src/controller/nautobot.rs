//! The NautobotSource controller: every `intervalSeconds` it runs one sync of the source
//! ([`crate::nautobot::sync`], shared with standalone: a full read, then the change log; the
//! mapping; the plan of what to apply, what clashes and what to prune) against the cluster — a
//! metadata cache per kind for what exists, server-side applies with its own field manager,
//! label and Nautobot-id annotation, merge patches or deletes to prune — and writes the status.
//! Only what changed since the last apply is written.
//!
//! A failed read (Nautobot down, a wrong token, a refused filter) changes nothing in the cluster:
//! the source turns `Stalled` with Nautobot's words and the next poll tries again, sooner than the
//! interval (5 s, doubling, up to the interval or 5 minutes). Deletes and
//! orphaning happen only after a read that succeeded.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use async_trait::async_trait;
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
        OsImage, Switch,
        nautobot::{NautobotSource, PrunePolicy},
    },
    nautobot::{
        plan::{DIGEST_ANNOTATION, Existing, FIELD_MANAGER, ID_ANNOTATION, SOURCE_LABEL},
        sync::{Source, SourceState, Target, status_after, sync},
    },
    switch::k8s::DISCOVERED_BY,
};

/// Applies in flight at once.
const APPLY_CONCURRENCY: usize = 16;

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
    // The caches keep only what the plans read (managedFields alone are most of the metadata).
    let watch_switches = reflector(
        switch_writer,
        watcher(switch_api, Config::default().any_semantic()).modify(|o| trim(&mut o.metadata)),
    )
    .default_backoff()
    .for_each(|_| async {});
    let watch_images = reflector(
        image_writer,
        watcher(image_api, Config::default().any_semantic()).modify(|o| trim(&mut o.metadata)),
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
    let ns = source.namespace().unwrap_or_else(|| "default".into());
    let (name, uid) = (source.name_any(), source.uid().unwrap_or_default());
    let owner = (source.spec.prune == PrunePolicy::Delete).then(|| owner_reference(&source));
    let synced = Source {
        namespace: &ns,
        name: &name,
        uid: &uid,
        generation: source.meta().generation,
        spec: &source.spec,
        owner: owner.as_ref(),
    };
    let images = KubeTarget { api: Api::namespaced(ctx.client.clone(), &ns), cache: &ctx.images, ns: &ns };
    let switches =
        KubeTarget { api: Api::namespaced(ctx.client.clone(), &ns), cache: &ctx.switches, ns: &ns };
    let outcome = sync(&synced, &ctx.lookup, None, &mut state, &images, &switches).await;
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let status = status_after(
        source.status.clone().unwrap_or_default(),
        outcome,
        &state.mark,
        source.meta().generation,
        now,
    );
    let api: Api<NautobotSource> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = json!({"apiVersion": "ztp.netops.dev/v1alpha1", "kind": "NautobotSource", "status": status});
    api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map_err(|e| Error::Status(name.clone(), e))?;
    // After a failed read, sooner: 5 s, doubling, up to the interval or 5 minutes.
    Ok(Action::requeue(state.next_poll(interval)))
}

/// A kind's objects in the cluster: written through `api`, known from the metadata `cache`.
struct KubeTarget<'a, K: Resource<DynamicType = ()> + Clone + 'static> {
    api: Api<K>,
    cache: &'a reflector::Store<PartialObjectMeta<K>>,
    ns: &'a str,
}

#[async_trait]
impl<K> Target for KubeTarget<'_, K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    PartialObjectMeta<K>: reflector::Lookup<DynamicType = ()>,
{
    fn existing(&self) -> BTreeMap<String, Existing> {
        existing_of(self.cache, self.ns)
    }

    /// Server-side applies, all of the batch at once; each answer is dropped at once.
    async fn apply(&self, bodies: Vec<(&str, Value)>) -> Vec<Result<(), String>> {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let apply = async |name: &str, body: &Value| {
            self.api.patch(name, &params, &Patch::Apply(body)).await.map(|_| ()).map_err(|e| e.to_string())
        };
        futures::future::join_all(bodies.iter().map(|(name, body)| apply(name, body))).await
    }

    async fn prune(&self, name: &str, policy: PrunePolicy) -> Result<bool, String> {
        let result = match policy {
            PrunePolicy::Delete => self.api.delete(name, &DeleteParams::background()).await.map(|_| ()),
            PrunePolicy::Orphan => {
                // The label and annotations go; the object stays as it is (with `Orphan` the
                // source applies no owner reference).
                let patch = json!({"metadata": {
                    "labels": {SOURCE_LABEL: null},
                    "annotations": {ID_ANNOTATION: null, DIGEST_ANNOTATION: null},
                }});
                self.api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ())
            }
        };
        match result {
            Ok(()) => Ok(true),
            Err(e) if crate::watch::status_code(&e) == Some(404) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }

    fn batch(&self) -> usize {
        APPLY_CONCURRENCY
    }
}

/// An object's metadata as the caches keep it: name, namespace, deletion, and only the labels
/// and annotations the plans read (a hand-made object's `last-applied-configuration` can be its
/// whole body again).
fn trim(meta: &mut kube::api::ObjectMeta) {
    meta.managed_fields = None;
    meta.owner_references = None;
    meta.finalizers = None;
    if let Some(labels) = &mut meta.labels {
        labels.retain(|k, _| k == SOURCE_LABEL || k == DISCOVERED_BY.0);
    }
    if let Some(annotations) = &mut meta.annotations {
        annotations.retain(|k, _| k == ID_ANNOTATION || k == DIGEST_ANNOTATION);
    }
}

/// The existing objects of `ns` in `store`, as the plan needs them.
fn existing_of<K>(store: &reflector::Store<PartialObjectMeta<K>>, ns: &str) -> BTreeMap<String, Existing>
where
    K: Resource<DynamicType = ()> + Clone,
    PartialObjectMeta<K>: reflector::Lookup<DynamicType = ()>,
{
    store
        .state()
        .iter()
        .filter(|o| o.metadata.namespace.as_deref() == Some(ns))
        .map(|o| {
            let (labels, annotations) = (o.metadata.labels.as_ref(), o.metadata.annotations.as_ref());
            let e = Existing::read(
                |k| labels.and_then(|l| l.get(k)).map(String::as_str),
                |k| annotations.and_then(|a| a.get(k)).map(String::as_str),
                o.metadata.deletion_timestamp.is_some(),
            );
            (o.metadata.name.clone().unwrap_or_default(), e)
        })
        .collect()
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

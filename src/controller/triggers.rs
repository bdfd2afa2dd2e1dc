//! What wakes the snapshot loop: watches of SwitchProfiles, OsImages, ConfigMaps and Secrets
//! that fill their reflector stores (the loop reads every object from them, never from the API)
//! and wake the loop only for a change that can alter the snapshot or a profile's status:
//!
//! - a SwitchProfile created, deleted, or with a new `metadata.generation` (its spec): never
//!   its status, so neither our own status writes nor the device server's `status.devices`;
//! - an OsImage whose generation, phase, observed generation or artifact changed: not the
//!   progress the fetch writes while it runs;
//! - a ConfigMap or Secret that some profile references, whose data changed.
//!
//! Each watch runs in its own task, so the stores stay current while a rebuild runs. OsImages
//! come from the OsImage controller's own watch (`controller::run_controller` observes its
//! events with [`Changes`]): a second watch could wake a rebuild before that controller's store,
//! which the rebuild reads, has the change.
//!
//! ConfigMaps and Secrets are cached whole, in the controller's scope (`--namespace`, or the
//! cluster): simpler and cheaper in requests than a metadata-only watch plus one GET per
//! referenced object and change, at the cost of memory for objects no profile uses. The data
//! of a Secret a profile uses is in the snapshot anyway.

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::Arc,
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{
    Api, Resource, ResourceExt,
    runtime::{
        WatchStreamExt,
        reflector::{self, store::Writer},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::Notify;

use crate::api::{OsImage, SwitchProfile};

/// A fingerprint of what matters in an object; `None`: the object never matters.
type Fingerprint<K> = Box<dyn Fn(&K) -> Option<u64> + Send + Sync>;

fn hash_of(v: impl serde::Serialize) -> u64 {
    let mut h = DefaultHasher::new();
    serde_json::to_vec(&v).unwrap_or_default().hash(&mut h);
    h.finish()
}

/// What of a kind was last seen to matter, per object: tells which watch events change it.
pub struct Changes<K> {
    fingerprint: Fingerprint<K>,
    seen: HashMap<(Option<String>, String), u64>,
}

impl<K: Resource> Changes<K> {
    pub fn new(fingerprint: Fingerprint<K>) -> Self {
        Changes { fingerprint, seen: HashMap::new() }
    }

    /// Whether `event` changes what matters: an object's fingerprint changed, an object that
    /// matters appeared or went, or the watch finished a (re-)list.
    pub fn observe(&mut self, event: &watcher::Event<K>) -> bool {
        let key = |o: &K| (o.namespace(), o.name_any());
        match event {
            watcher::Event::Apply(o) => match (self.fingerprint)(o) {
                Some(fp) => self.seen.insert(key(o), fp) != Some(fp),
                None => self.seen.remove(&key(o)).is_some(),
            },
            watcher::Event::Delete(o) => self.seen.remove(&key(o)).is_some(),
            watcher::Event::Init => {
                self.seen.clear();
                false
            }
            watcher::Event::InitApply(o) => {
                if let Some(fp) = (self.fingerprint)(o) {
                    self.seen.insert(key(o), fp);
                }
                false
            }
            watcher::Event::InitDone => true,
        }
    }
}

/// Follows `api`, keeping `writer`'s store current, and notifies `wake` when an event changes
/// what matters ([`Changes::observe`]). The store is updated before `wake` is notified, so a
/// rebuild it starts reads the change.
pub async fn follow<K>(api: Api<K>, writer: Writer<K>, fingerprint: Fingerprint<K>, wake: Arc<Notify>)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let mut events = watcher(api, watcher::Config::default()).default_backoff().reflect(writer).boxed();
    let mut changes = Changes::new(fingerprint);
    while let Some(event) = events.next().await {
        match event {
            Ok(e) if changes.observe(&e) => wake.notify_one(),
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "watch error; the watcher backs off and retries"),
        }
    }
}

/// A profile matters as its spec (generation) and whether it is being deleted.
pub fn profile_fingerprint() -> Fingerprint<SwitchProfile> {
    Box::new(|p| Some(hash_of((p.metadata.generation, p.metadata.deletion_timestamp.is_some()))))
}

/// An OsImage matters as what the snapshot takes from it: Ready or not, for which generation,
/// which artifact, and the reasons of its conditions (what a waiting profile's message says);
/// not a fetch's progress.
pub fn image_fingerprint() -> Fingerprint<OsImage> {
    Box::new(|i| {
        let s = i.status.as_ref();
        Some(hash_of((
            i.metadata.generation,
            i.metadata.deletion_timestamp.is_some(),
            s.and_then(|s| s.phase),
            s.and_then(|s| s.observed_generation),
            s.and_then(|s| s.artifact.clone()),
            s.map(|s| s.conditions.iter().map(|c| (&c.type_, &c.status, &c.reason)).collect::<Vec<_>>()),
        )))
    })
}

/// A ConfigMap matters by its data, and only while some profile references it.
pub fn config_map_fingerprint(profiles: reflector::Store<SwitchProfile>) -> Fingerprint<ConfigMap> {
    Box::new(move |cm| {
        referenced(&profiles, "configMapKeyRef", cm.namespace().as_deref(), &cm.name_any())
            .then(|| hash_of((&cm.data, &cm.binary_data)))
    })
}

/// A Secret matters by its data, and only while some profile references it.
pub fn secret_fingerprint(profiles: reflector::Store<SwitchProfile>) -> Fingerprint<Secret> {
    Box::new(move |s| {
        referenced(&profiles, "secretKeyRef", s.namespace().as_deref(), &s.name_any())
            .then(|| hash_of((&s.data, &s.string_data)))
    })
}

/// Whether a profile of namespace `ns` has a `{field: {name: name}}` anywhere in its spec.
fn referenced(profiles: &reflector::Store<SwitchProfile>, field: &str, ns: Option<&str>, name: &str) -> bool {
    profiles
        .state()
        .iter()
        .filter(|p| p.namespace().as_deref() == ns)
        .any(|p| serde_json::to_value(&p.spec).is_ok_and(|spec| names_ref(&spec, field, name)))
}

fn names_ref(v: &Value, field: &str, name: &str) -> bool {
    match v {
        Value::Object(m) => m.iter().any(|(k, v)| {
            (k == field && v.get("name").and_then(Value::as_str) == Some(name)) || names_ref(v, field, name)
        }),
        Value::Array(a) => a.iter().any(|v| names_ref(v, field, name)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm(name: &str, value: &str) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(name.into());
        cm.metadata.namespace = Some("ns".into());
        cm.data = Some([("k".to_owned(), value.to_owned())].into());
        cm
    }

    #[test]
    fn only_changes_of_what_matters_wake() {
        // Only ConfigMaps named `used*` matter, by their data.
        let mut changes = Changes::<ConfigMap>::new(Box::new(|cm: &ConfigMap| {
            cm.name_any().starts_with("used").then(|| hash_of(&cm.data))
        }));
        let mut saw = |e: watcher::Event<ConfigMap>| changes.observe(&e);
        assert!(!saw(watcher::Event::Init));
        assert!(!saw(watcher::Event::InitApply(cm("used", "1"))));
        assert!(saw(watcher::Event::InitDone), "a finished list always wakes");
        assert!(!saw(watcher::Event::Apply(cm("used", "1"))), "same data");
        assert!(saw(watcher::Event::Apply(cm("used", "2"))));
        assert!(!saw(watcher::Event::Apply(cm("other", "1"))), "never matters");
        assert!(!saw(watcher::Event::Delete(cm("other", "1"))));
        assert!(saw(watcher::Event::Delete(cm("used", "2"))));
        assert!(saw(watcher::Event::Apply(cm("used", "2"))), "back again");
    }

    #[test]
    fn references_are_found_at_any_depth_by_kind_and_name() {
        let spec = serde_json::json!({
            "match": {"serialNumbers": ["S"]},
            "sonic": {"sections": [{"configdbJson": {"content": {"configMapKeyRef": {"name": "base", "key": "k"}}}}]},
            "files": {"tls": {"secretKeyRef": {"name": "certs", "key": "tls"}}}
        });
        assert!(names_ref(&spec, "configMapKeyRef", "base"));
        assert!(names_ref(&spec, "secretKeyRef", "certs"));
        assert!(!names_ref(&spec, "configMapKeyRef", "certs"));
        assert!(!names_ref(&spec, "secretKeyRef", "base"));
        assert!(!names_ref(&spec, "configMapKeyRef", "other"));
    }
}

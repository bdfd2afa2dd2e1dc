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
    collections::{BTreeSet, HashMap},
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

/// Sees every watch event after the store took it in.
pub type Observer<K> = Box<dyn FnMut(&watcher::Event<K>) + Send>;

/// Follows `api`, keeping `writer`'s store current, and notifies `wake` when an event changes
/// what matters ([`Changes::observe`]). The store is updated before `wake` is notified, so a
/// rebuild it starts reads the change.
pub async fn follow<K>(api: Api<K>, writer: Writer<K>, fingerprint: Fingerprint<K>, wake: Arc<Notify>)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    follow_observed(api, writer, fingerprint, wake, None).await;
}

/// [`follow`], handing each event to `observer` as well, once the store holds it.
pub async fn follow_observed<K>(
    api: Api<K>,
    writer: Writer<K>,
    fingerprint: Fingerprint<K>,
    wake: Arc<Notify>,
    mut observer: Option<Observer<K>>,
) where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let mut events = watcher(api, watcher::Config::default()).default_backoff().reflect(writer).boxed();
    let mut changes = Changes::new(fingerprint);
    while let Some(event) = events.next().await {
        match event {
            Ok(e) => {
                if let Some(o) = observer.as_mut() {
                    o(&e);
                }
                if changes.observe(&e) {
                    wake.notify_one();
                }
            }
            Err(e) => tracing::debug!(error = %e, "watch error; the watcher backs off and retries"),
        }
    }
}

/// Which OsImages each live SwitchProfile references, to tell which images lost a reference (a
/// profile deleted, or changed to name another image). An image being deleted waits for exactly
/// that: so only those images are woken, never every image on every profile change.
#[derive(Debug, Default)]
pub struct ImageUsers {
    refs: HashMap<(String, String), BTreeSet<String>>,
    /// During a re-list: what was known before it.
    before: Option<HashMap<(String, String), BTreeSet<String>>>,
}

impl ImageUsers {
    /// Takes one watch event in; returns the images (`namespace`, `name`) that lost a reference.
    pub fn observe(&mut self, event: &watcher::Event<SwitchProfile>) -> Vec<(String, String)> {
        let key = |p: &SwitchProfile| (p.namespace().unwrap_or_default(), p.name_any());
        let names = |p: &SwitchProfile| {
            if p.metadata.deletion_timestamp.is_some() { BTreeSet::new() } else { p.spec.os_image_names() }
        };
        let lost = |ns: &str, old: &BTreeSet<String>, new: Option<&BTreeSet<String>>| {
            old.iter()
                .filter(|n| new.is_none_or(|new| !new.contains(*n)))
                .map(|n| (ns.to_owned(), n.clone()))
                .collect::<Vec<_>>()
        };
        match event {
            watcher::Event::Apply(p) => {
                let (k, new) = (key(p), names(p));
                let old = self.refs.insert(k.clone(), new.clone()).unwrap_or_default();
                lost(&k.0, &old, Some(&new))
            }
            watcher::Event::Delete(p) => {
                let k = key(p);
                self.refs.remove(&k).map(|old| lost(&k.0, &old, None)).unwrap_or_default()
            }
            watcher::Event::Init => {
                self.before = Some(std::mem::take(&mut self.refs));
                Vec::new()
            }
            watcher::Event::InitApply(p) => {
                self.refs.insert(key(p), names(p));
                Vec::new()
            }
            watcher::Event::InitDone => {
                let before = self.before.take().unwrap_or_default();
                before.iter().flat_map(|(k, old)| lost(&k.0, old, self.refs.get(k))).collect()
            }
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

    fn profile(name: &str, images: &[&str], deleting: bool) -> SwitchProfile {
        let sections: Vec<Value> = images
            .iter()
            .map(|i| serde_json::json!({"kind": "image", "content": {"osImageRef": {"name": i}}}))
            .collect();
        let mut p: SwitchProfile = serde_json::from_value(serde_json::json!({
            "apiVersion": "ztp.netops.dev/v1alpha1", "kind": "SwitchProfile",
            "metadata": {"name": name, "namespace": "lab"},
            "spec": {"match": {"models": ["m"]}, "ztp": {"sections": sections}},
        }))
        .expect("profile");
        if deleting {
            p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        }
        p
    }

    #[test]
    fn only_images_that_lose_a_reference_are_named() {
        use watcher::Event::*;
        let lab = |n: &str| ("lab".to_owned(), n.to_owned());
        let mut u = ImageUsers::default();
        assert!(u.observe(&Apply(profile("a", &["x", "y"], false))).is_empty(), "new references");
        assert!(u.observe(&Apply(profile("a", &["x", "y"], false))).is_empty(), "no change");
        assert_eq!(u.observe(&Apply(profile("a", &["x", "z"], false))), [lab("y")], "y dropped");
        assert_eq!(u.observe(&Apply(profile("a", &["x", "z"], true))), [lab("x"), lab("z")], "deleting");
        assert!(u.observe(&Delete(profile("a", &["x", "z"], true))).is_empty(), "already released");
        u.observe(&Apply(profile("b", &["x"], false)));
        assert_eq!(u.observe(&Delete(profile("b", &["x"], false))), [lab("x")]);
        // A re-list that no longer shows a profile releases its images.
        u.observe(&Apply(profile("c", &["q"], false)));
        u.observe(&Apply(profile("d", &["r"], false)));
        assert!(u.observe(&Init).is_empty());
        assert!(u.observe(&InitApply(profile("d", &["r"], false))).is_empty());
        assert_eq!(u.observe(&InitDone), [lab("q")]);
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

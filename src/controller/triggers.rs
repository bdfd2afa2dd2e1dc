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
    sync::{Arc, Mutex},
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{
    Api, Resource, ResourceExt,
    runtime::{WatchStreamExt, reflector::store::Writer, watcher},
};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crate::api::{OsImage, References, Switch, SwitchProfile, SwitchStatus};

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

/// Told of each OsImage (`namespace`, `name`) that lost a reference.
pub type Released = Box<dyn FnMut(&str, &str) + Send>;

/// Follows `api`, keeping `writer`'s store current, and notifies `wake` when an event changes
/// what matters ([`Changes::observe`]). The store is updated before `wake` is notified, so a
/// rebuild it starts reads the change.
pub async fn follow<K>(api: Api<K>, writer: Writer<K>, fingerprint: Fingerprint<K>, wake: Arc<Notify>)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    follow_observed(api, writer, fingerprint, wake, None, |_| {}).await;
}

/// [`follow`], handing each event to `observer` as well, once the store holds it; `trim` takes
/// out of each object what the store need not keep.
pub async fn follow_observed<K>(
    api: Api<K>,
    writer: Writer<K>,
    fingerprint: Fingerprint<K>,
    wake: Arc<Notify>,
    mut observer: Option<Observer<K>>,
    trim: fn(&mut K),
) where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let events = watcher(api, watcher::Config::default()).default_backoff().modify(trim);
    let mut events = events.reflect(writer).boxed();
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

/// What every SwitchProfile in the watch's cache references, kept up to date by the profile
/// watch (one typed walk of a spec per profile event:
/// [`crate::api::SwitchProfileSpec::references`]). It tells a ConfigMap or Secret event whether
/// some profile uses the object (a lookup, not a walk of every profile), and which OsImages lost
/// a reference (a profile deleted, being deleted, or changed to name another image). An image
/// being deleted waits for exactly that: so only those images are woken, never every image on
/// every profile change.
///
/// Like the reflector store it sits beside, a re-list is taken in whole when it is done; until
/// then the index answers from what it knew before.
#[derive(Debug, Default, Clone)]
pub struct ProfileRefs(Arc<Mutex<RefIndex>>);

type Key = (String, String);

#[derive(Debug, Default)]
struct RefIndex {
    /// Per profile (`namespace`, `name`): what its spec references, and whether it is live (not
    /// being deleted): a profile being deleted no longer holds its images.
    profiles: HashMap<Key, (References, bool)>,
    /// During a re-list: the profiles listed so far.
    listing: Option<HashMap<Key, (References, bool)>>,
    /// How many profiles reference each ConfigMap / Secret (`namespace`, `name`).
    config_maps: HashMap<Key, usize>,
    secrets: HashMap<Key, usize>,
}

/// The two kinds of object whose events matter only while a profile references them.
#[derive(Debug, Clone, Copy)]
pub enum Referenced {
    ConfigMap,
    Secret,
}

impl ProfileRefs {
    fn index(&self) -> std::sync::MutexGuard<'_, RefIndex> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether some profile of namespace `ns` references the ConfigMap or Secret `name`.
    pub fn uses(&self, kind: Referenced, ns: &str, name: &str) -> bool {
        let index = self.index();
        let counts = match kind {
            Referenced::ConfigMap => &index.config_maps,
            Referenced::Secret => &index.secrets,
        };
        counts.contains_key(&(ns.to_owned(), name.to_owned()))
    }

    /// Takes one watch event in; returns the images (`namespace`, `name`) that lost a reference.
    pub fn observe(&self, event: &watcher::Event<SwitchProfile>) -> Vec<Key> {
        let key = |p: &SwitchProfile| (p.namespace().unwrap_or_default(), p.name_any());
        let entry = |p: &SwitchProfile| (p.spec.references(), p.metadata.deletion_timestamp.is_none());
        let mut index = self.index();
        match event {
            watcher::Event::Apply(p) => {
                let k = key(p);
                let old = index.replace(k.clone(), Some(entry(p)));
                lost_images(&k.0, old.as_ref(), index.profiles.get(&k))
            }
            watcher::Event::Delete(p) => {
                let k = key(p);
                let old = index.replace(k.clone(), None);
                lost_images(&k.0, old.as_ref(), None)
            }
            watcher::Event::Init => {
                index.listing = Some(HashMap::new());
                Vec::new()
            }
            watcher::Event::InitApply(p) => {
                index.listing.get_or_insert_default().insert(key(p), entry(p));
                Vec::new()
            }
            watcher::Event::InitDone => {
                let listed = index.listing.take().unwrap_or_default();
                let before = std::mem::replace(&mut index.profiles, listed);
                index.recount();
                before
                    .iter()
                    .flat_map(|(k, old)| lost_images(&k.0, Some(old), index.profiles.get(k)))
                    .collect()
            }
        }
    }
}

impl RefIndex {
    /// Sets (or with `None` removes) a profile's entry, keeping the counts; returns the old one.
    fn replace(&mut self, k: Key, new: Option<(References, bool)>) -> Option<(References, bool)> {
        if let Some(new) = &new {
            self.count(&k.0, &new.0, true);
        }
        let old = match new {
            Some(new) => self.profiles.insert(k.clone(), new),
            None => self.profiles.remove(&k),
        };
        if let Some(old) = &old {
            self.count(&k.0, &old.0, false);
        }
        old
    }

    fn count(&mut self, ns: &str, refs: &References, add: bool) {
        for (counts, names) in
            [(&mut self.config_maps, &refs.config_maps), (&mut self.secrets, &refs.secrets)]
        {
            for name in names {
                let k = (ns.to_owned(), name.clone());
                let n = counts.entry(k.clone()).or_default();
                *n = if add { *n + 1 } else { n.saturating_sub(1) };
                if *n == 0 {
                    counts.remove(&k);
                }
            }
        }
    }

    fn recount(&mut self) {
        self.config_maps.clear();
        self.secrets.clear();
        let profiles = std::mem::take(&mut self.profiles);
        for ((ns, _), (refs, _)) in &profiles {
            self.count(ns, refs, true);
        }
        self.profiles = profiles;
    }
}

/// The images of namespace `ns` that a live `old` entry held and `new` (if any) does not.
fn lost_images(ns: &str, old: Option<&(References, bool)>, new: Option<&(References, bool)>) -> Vec<Key> {
    fn held(e: Option<&(References, bool)>) -> Option<&std::collections::BTreeSet<String>> {
        e.filter(|e| e.1).map(|e| &e.0.os_images)
    }
    let Some(old) = held(old) else { return Vec::new() };
    let new = held(new);
    old.iter()
        .filter(|n| new.is_none_or(|new| !new.contains(*n)))
        .map(|n| (ns.to_owned(), n.clone()))
        .collect()
}

/// A profile matters as its spec (generation) and whether it is being deleted.
pub fn profile_fingerprint() -> Fingerprint<SwitchProfile> {
    Box::new(|p| Some(hash_of((p.metadata.generation, p.metadata.deletion_timestamp.is_some()))))
}

/// A Switch matters as what the snapshot takes from it, and only while the snapshot holds it
/// ([`crate::profile::build::switch_snapshot`]); its device's status, written all the time,
/// never matters.
pub fn switch_fingerprint() -> Fingerprint<Switch> {
    Box::new(|sw| crate::profile::build::switch_snapshot(sw).map(hash_of))
}

/// What the snapshot loop keeps of a Switch: its spec, and of its status only the phase and the
/// matched profile the counts need (the rest, a device's history, is the servers' and can be
/// large); of its metadata what the snapshot (name, namespace, creation and deletion times) and
/// an Event's object reference (uid, resourceVersion) take. Not its labels and annotations (a
/// NautobotSource's three, a map each), owners, finalizers or managed fields.
pub fn trim_switch(sw: &mut Switch) {
    sw.status = sw.status.take().map(|st| SwitchStatus {
        phase: st.phase,
        matched_profile: st.matched_profile,
        ..Default::default()
    });
    let m = &mut sw.metadata;
    (m.managed_fields, m.labels, m.annotations, m.owner_references, m.finalizers) =
        (None, None, None, None, None);
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
pub fn config_map_fingerprint(refs: ProfileRefs) -> Fingerprint<ConfigMap> {
    Box::new(move |cm| {
        refs.uses(Referenced::ConfigMap, &cm.namespace().unwrap_or_default(), &cm.name_any())
            .then(|| hash_of((&cm.data, &cm.binary_data)))
    })
}

/// A Secret matters by its data, and only while some profile references it.
pub fn secret_fingerprint(refs: ProfileRefs) -> Fingerprint<Secret> {
    Box::new(move |s| {
        refs.uses(Referenced::Secret, &s.namespace().unwrap_or_default(), &s.name_any())
            .then(|| hash_of((&s.data, &s.string_data)))
    })
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
        let sections: Vec<serde_json::Value> = images
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
        let u = ProfileRefs::default();
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

    fn using_config_map(name: &str, config_map: &str) -> SwitchProfile {
        let mut p = profile(name, &[], false);
        p.spec.files.insert(
            "f".into(),
            serde_json::from_value(serde_json::json!({"configMapKeyRef": {"name": config_map, "key": "k"}}))
                .expect("content"),
        );
        p
    }

    #[test]
    fn the_index_follows_what_profiles_reference_through_changes_deletes_and_relists() {
        use watcher::Event::*;
        let refs = ProfileRefs::default();
        let cm = |n: &str| refs.uses(Referenced::ConfigMap, "lab", n);
        refs.observe(&Apply(using_config_map("a", "base")));
        refs.observe(&Apply(using_config_map("b", "base")));
        assert!(cm("base"));
        assert!(!refs.uses(Referenced::ConfigMap, "other", "base"), "another namespace");
        assert!(!refs.uses(Referenced::Secret, "lab", "base"), "another kind");
        refs.observe(&Apply(using_config_map("a", "next")));
        assert!(cm("base") && cm("next"), "b still uses base");
        refs.observe(&Apply(using_config_map("b", "next")));
        assert!(!cm("base"), "a spec change dropped the last reference");
        refs.observe(&Delete(using_config_map("b", "next")));
        assert!(cm("next"), "a still uses next");
        // A re-list answers from what was known until it is done, then from what it listed.
        refs.observe(&Init);
        refs.observe(&InitApply(using_config_map("c", "third")));
        assert!(cm("next") && !cm("third"));
        refs.observe(&InitDone);
        assert!(!cm("next") && cm("third"));
    }
}

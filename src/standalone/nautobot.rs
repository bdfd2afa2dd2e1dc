//! Standalone's NautobotSources: a NautobotSource in the manifests folder syncs as the cluster's
//! controller does ([`crate::nautobot::sync`]: the same read, mapping, plan and status), into a
//! mirror of the source instead of the apiserver. The mirror holds the Switches and OsImages the
//! source applied, as their bodies, and the source's status; it is kept in
//! `{data}/.status/nautobot/{namespace}.{name}.json`, so a restart with Nautobot down still serves
//! what was last read. Standalone takes the mirrors' objects beside the folder's; an object the
//! folder declares by the same name is the folder's (hand-made: the source reports a clash).
//!
//! The token is the Secret `tokenSecretRef` names, from the folder, else the environment variable
//! [`TOKEN_ENV`]; the CA bundle is the ConfigMap `caBundleRef` names, from the folder. When a
//! source leaves the folder, its objects go with it (`prune: Delete`) or stay as they were
//! (`Orphan`, the default), as in a cluster.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use tokio::{sync::Notify, task::JoinHandle};

use crate::{
    api::{
        ConditionStatus, ConditionType, OsImage, Switch,
        conditions::find_condition,
        nautobot::{NautobotSource, NautobotSourceStatus, PrunePolicy},
        object_name,
    },
    lookup::ObjectLookup,
    manifests::{Desired, generation_of},
    nautobot::{
        plan::{DIGEST_ANNOTATION, Existing, ID_ANNOTATION, SOURCE_LABEL},
        sync::{Source, SourceState, Target, status_after, sync},
    },
    status_file,
};

/// The environment variable holding the token of a source whose token Secret is not in the folder.
pub const TOKEN_ENV: &str = "NAUTOBOT_TOKEN";
/// Under `{data}/.status/`: one mirror file per source.
const DIR: &str = "nautobot";

/// What standalone keeps of one source.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Mirror {
    /// The source's `prune` when last seen: what happens to its objects when it leaves the folder.
    prune: PrunePolicy,
    /// Switch name → the body applied (orphaned ones without the source's label).
    switches: BTreeMap<String, Value>,
    /// OsImage name → the body applied.
    images: BTreeMap<String, Value>,
    status: NautobotSourceStatus,
}

impl Mirror {
    fn of(&self, switches: bool) -> &BTreeMap<String, Value> {
        if switches { &self.switches } else { &self.images }
    }

    fn of_mut(&mut self, switches: bool) -> &mut BTreeMap<String, Value> {
        if switches { &mut self.switches } else { &mut self.images }
    }
}

/// What the sources' tasks share with standalone's loop.
#[derive(Default)]
struct Shared {
    /// Source key (`namespace/name`) → its mirror.
    mirrors: Mutex<BTreeMap<String, Mirror>>,
    /// The folder as last loaded: its Switches and OsImages are hand-made to the sources.
    folder: Mutex<Arc<Desired>>,
    /// A sync ended (its mirror may have changed).
    changed: Notify,
    /// Bumped whenever a mirror's objects change.
    revision: AtomicU64,
    /// Sources that synced at least once in this run, and whether the last sync was Ready.
    synced: Mutex<BTreeMap<String, bool>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The folder's NautobotSources, each followed by a task of its own.
pub(super) struct Sources {
    dir: PathBuf,
    shared: Arc<Shared>,
    /// Source key → (the spec's generation it follows, its task).
    tasks: BTreeMap<String, (Option<i64>, JoinHandle<()>)>,
}

/// Why the sources' mirrors cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct MirrorError {
    path: String,
    message: String,
}

impl Sources {
    /// The mirrors kept in `{data}/.status/nautobot/` (a file that does not read is reported and
    /// left as it is).
    pub(super) fn open(data: &Path) -> Result<Self, MirrorError> {
        let dir = data.join(".status").join(DIR);
        let err = |e: std::io::Error| MirrorError { path: dir.display().to_string(), message: e.to_string() };
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries.flatten().collect(),
            // Made by the first sync that has something to keep.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(err(e)),
        };
        let mut mirrors = BTreeMap::new();
        for entry in entries {
            let path = entry.path();
            let Some(key) = path.file_name().and_then(|n| n.to_str()).and_then(key_of_file) else { continue };
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Mirror>(&b).map_err(|e| e.to_string()))
            {
                Ok(mirror) => {
                    mirrors.insert(key, mirror);
                }
                Err(e) => println!("nautobotsource {key}: its mirror {} is not read: {e}", path.display()),
            }
        }
        let shared = Shared { mirrors: Mutex::new(mirrors), ..Default::default() };
        Ok(Self { dir, shared: Arc::new(shared), tasks: BTreeMap::new() })
    }

    /// Follows the sources `folder` declares: a new or changed one (re)starts its task, one that
    /// left stops, and its objects go or stay as its `prune` says. Tokens and CA bundles are read
    /// through `lookup`; with `once`, each source syncs once.
    pub(super) fn follow(&mut self, folder: &Desired, lookup: Arc<dyn ObjectLookup>, once: bool) {
        *lock(&self.shared.folder) = Arc::new(folder.clone());
        let declared: BTreeMap<String, &Arc<NautobotSource>> =
            folder.nautobot_sources.iter().map(|s| (object_name(&s.metadata), s)).collect();
        let left: Vec<String> = self.tasks.keys().filter(|k| !declared.contains_key(*k)).cloned().collect();
        for key in left {
            if let Some((_, task)) = self.tasks.remove(&key) {
                task.abort();
            }
            lock(&self.shared.synced).remove(&key);
        }
        // Mirrors of sources not in the folder (now, or since before this run).
        let gone: Vec<String> =
            lock(&self.shared.mirrors).keys().filter(|k| !declared.contains_key(*k)).cloned().collect();
        for key in gone {
            let mut mirrors = lock(&self.shared.mirrors);
            let Some(mirror) = mirrors.get(&key) else { continue };
            let (switches, images) = (mirror.switches.len(), mirror.images.len());
            if mirror.prune == PrunePolicy::Delete {
                mirrors.remove(&key);
                let _ = std::fs::remove_file(self.dir.join(file_of_key(&key)));
                self.shared.revision.fetch_add(1, Ordering::SeqCst);
                println!(
                    "nautobotsource {key}: not in the manifests; its {switches} Switches and {images} OsImages go with it (prune: Delete)"
                );
                self.shared.changed.notify_one();
            }
        }
        for (key, source) in declared {
            let generation = source.metadata.generation;
            // The same spec: its task goes on (with `once`: it synced once already).
            if self.tasks.get(&key).is_some_and(|(g, task)| *g == generation && (once || !task.is_finished()))
            {
                continue;
            }
            if let Some((_, task)) = self.tasks.remove(&key) {
                task.abort();
            }
            let task = tokio::spawn(follow_one(
                key.clone(),
                source.clone(),
                self.shared.clone(),
                lookup.clone(),
                self.dir.join(file_of_key(&key)),
                once,
            ));
            self.tasks.insert(key, (generation, task));
        }
    }

    /// Until a sync ends.
    pub(super) async fn changed(&self) {
        self.shared.changed.notified().await
    }

    /// A number that changes whenever a mirror's objects do (the merged objects are then new).
    pub(super) fn revision(&self) -> u64 {
        self.shared.revision.load(Ordering::SeqCst)
    }

    /// Whether every source of the folder synced at least once in this run.
    pub(super) fn all_synced(&self) -> bool {
        let synced = lock(&self.shared.synced);
        self.tasks.keys().all(|k| synced.contains_key(k))
    }

    /// Whether every source's last sync was Ready.
    pub(super) fn all_ready(&self) -> bool {
        let synced = lock(&self.shared.synced);
        self.tasks.keys().all(|k| synced.get(k) == Some(&true))
    }

    /// `folder` with the mirrors' Switches and OsImages beside its own (the folder's win a name).
    pub(super) fn merged(&self, folder: &Desired) -> Desired {
        let mut out = folder.clone();
        let mirrors = lock(&self.shared.mirrors);
        let switches = folder.switches.iter().map(|s| object_name(&s.metadata)).collect();
        let images = folder.images.iter().map(|i| object_name(&i.metadata)).collect();
        for (key, mirror) in mirrors.iter() {
            out.switches.extend(objects::<Switch>(key, &mirror.switches, &switches));
            out.images.extend(objects::<OsImage>(key, &mirror.images, &images));
        }
        out
    }
}

impl Drop for Sources {
    fn drop(&mut self) {
        for (_, task) in self.tasks.values() {
            task.abort();
        }
    }
}

/// The objects of `bodies` (one kind of a mirror) whose `namespace/name` is not `taken`.
fn objects<K: DeserializeOwned + kube::Resource>(
    key: &str,
    bodies: &BTreeMap<String, Value>,
    taken: &std::collections::BTreeSet<String>,
) -> Vec<Arc<K>> {
    let mut out = Vec::new();
    for (name, body) in bodies {
        match serde_json::from_value::<K>(body.clone()) {
            Ok(mut o) => {
                if taken.contains(&object_name(o.meta())) {
                    continue;
                }
                o.meta_mut().generation = Some(generation_of(&body["spec"]));
                out.push(Arc::new(o));
            }
            Err(e) => println!("nautobotsource {key}: {name} in its mirror is not read: {e}"),
        }
    }
    out
}

/// `{namespace}.{name}.json` (neither has a dot... a namespace cannot; a name can, so the first
/// dot splits).
fn file_of_key(key: &str) -> String {
    format!("{}.json", key.replacen('/', ".", 1))
}

fn key_of_file(file: &str) -> Option<String> {
    let stem = file.strip_suffix(".json")?;
    let (ns, name) = stem.split_once('.')?;
    Some(format!("{ns}/{name}"))
}

/// One source: a sync every `intervalSeconds` (sooner after a failed read: [`SourceState::next_poll`];
/// once with `once`), its mirror written after each.
async fn follow_one(
    key: String,
    source: Arc<NautobotSource>,
    shared: Arc<Shared>,
    lookup: Arc<dyn ObjectLookup>,
    file: PathBuf,
    once: bool,
) {
    let ns = source.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let name = source.metadata.name.clone().unwrap_or_default();
    let token = std::env::var(TOKEN_ENV).ok().filter(|t| !t.trim().is_empty());
    let interval = Duration::from_secs(u64::try_from(source.spec.interval_seconds).unwrap_or(60).max(10));
    let generation = source.metadata.generation;
    let mut state = SourceState::default();
    loop {
        let revision = shared.revision.load(Ordering::SeqCst);
        let this =
            Source { namespace: &ns, name: &name, uid: "", generation, spec: &source.spec, owner: None };
        let images = MirrorTarget { shared: &shared, key: &key, ns: &ns, switches: false };
        let switches = MirrorTarget { shared: &shared, key: &key, ns: &ns, switches: true };
        let outcome = sync(&this, lookup.as_ref(), token.as_deref(), &mut state, &images, &switches).await;
        let now = Time(Timestamp::now());
        let (line, changed, bytes) = {
            let mut mirrors = lock(&shared.mirrors);
            let mirror = mirrors.entry(key.clone()).or_default();
            let before = status_line(&mirror.status);
            mirror.status = status_after(mirror.status.clone(), outcome, &state.mark, generation, now);
            mirror.prune = source.spec.prune;
            let line = status_line(&mirror.status);
            let changed = line != before;
            // Written when its objects or its state changed, not at every poll (5,000 bodies).
            let write = changed || shared.revision.load(Ordering::SeqCst) != revision;
            (line, changed, write.then(|| serde_json::to_vec(&*mirror)))
        };
        if changed {
            println!("nautobotsource {key}: {line}");
        }
        match bytes {
            None => {}
            Some(Ok(bytes)) => {
                let dir = file.parent().unwrap_or(Path::new("."));
                let written = match tokio::fs::create_dir_all(dir).await {
                    Ok(()) => status_file::write_atomic(&file, &bytes).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = written {
                    println!("nautobotsource {key}: its mirror is not written: {}: {e}", file.display());
                }
            }
            Some(Err(e)) => println!("nautobotsource {key}: its mirror is not written: {e}"),
        }
        let ready = line.starts_with("Ready");
        lock(&shared.synced).insert(key.clone(), ready);
        shared.changed.notify_one();
        if once {
            return;
        }
        // After a failed read, sooner: 5 s, doubling, up to the interval or 5 minutes.
        tokio::time::sleep(state.next_poll(interval)).await;
    }
}

/// `Ready: 3 Switches and 2 OsImages from 3 devices in Nautobot` (with the devices skipped and a
/// clash when there are), or `not ready (Stalled, NautobotError): …`.
fn status_line(s: &NautobotSourceStatus) -> String {
    let Some(ready) = find_condition(&s.conditions, ConditionType::Ready) else {
        return "not synced yet".to_owned();
    };
    if ready.status != ConditionStatus::True.as_str() {
        let stalled = find_condition(&s.conditions, ConditionType::Stalled)
            .is_some_and(|c| c.status == ConditionStatus::True.as_str());
        let condition = if stalled { "Stalled" } else { "Reconciling" };
        return format!("not ready ({condition}, {}): {}", ready.reason, ready.message);
    }
    let mut line = format!("Ready: {}", ready.message);
    let skipped = s.skipped.unwrap_or(0) + s.skipped_image_files.unwrap_or(0);
    if skipped > 0 {
        let named: Vec<String> = s
            .skipped_devices
            .iter()
            .chain(&s.skipped_images)
            .take(3)
            .map(|k| format!("{} ({:?})", k.name, k.reason))
            .collect();
        line.push_str(&format!("; {skipped} skipped: {}", named.join(", ")));
    }
    if let Some(c) = find_condition(&s.conditions, ConditionType::Conflict)
        .filter(|c| c.status == ConditionStatus::True.as_str())
    {
        line.push_str(&format!("; {}", c.message));
    }
    line
}

/// One kind of a source's mirror, as the sync's target.
struct MirrorTarget<'a> {
    shared: &'a Shared,
    key: &'a str,
    ns: &'a str,
    switches: bool,
}

#[async_trait]
impl Target for MirrorTarget<'_> {
    /// The folder's objects of the kind in the namespace (hand-made), and every source's mirror
    /// objects there (this source's, another's, orphaned ones).
    fn existing(&self) -> BTreeMap<String, Existing> {
        let mut out = BTreeMap::new();
        for mirror in lock(&self.shared.mirrors).values() {
            for (name, body) in mirror.of(self.switches) {
                if body["metadata"]["namespace"].as_str() == Some(self.ns) {
                    out.insert(name.clone(), existing_of(body));
                }
            }
        }
        let folder = lock(&self.shared.folder).clone();
        let hand_made: Vec<&kube::api::ObjectMeta> = if self.switches {
            folder.switches.iter().map(|s| &s.metadata).collect()
        } else {
            folder.images.iter().map(|i| &i.metadata).collect()
        };
        for meta in hand_made {
            if meta.namespace.as_deref() == Some(self.ns) {
                out.insert(meta.name.clone().unwrap_or_default(), Existing::default());
            }
        }
        out
    }

    /// Into the mirror; an object keeps the creation time it was first applied at (an older
    /// OsImage wins a path, as in a cluster).
    async fn apply(&self, bodies: Vec<(&str, Value)>) -> Vec<Result<(), String>> {
        let mut mirrors = lock(&self.shared.mirrors);
        let objects = mirrors.entry(self.key.to_owned()).or_default().of_mut(self.switches);
        let mut out = Vec::with_capacity(bodies.len());
        for (name, mut body) in bodies {
            let created = objects
                .get(name)
                .and_then(|old| old["metadata"].get("creationTimestamp").cloned())
                .unwrap_or_else(|| json!(Timestamp::now()));
            body["metadata"]["creationTimestamp"] = created;
            if objects.insert(name.to_owned(), body.clone()).as_ref() != Some(&body) {
                self.shared.revision.fetch_add(1, Ordering::SeqCst);
            }
            out.push(Ok(()));
        }
        out
    }

    /// Removed from the mirror (`Delete`), or left there without the source's label and
    /// annotations (`Orphan`): standalone keeps serving it, and the source no longer manages it.
    async fn prune(&self, name: &str, policy: PrunePolicy) -> Result<bool, String> {
        let mut mirrors = lock(&self.shared.mirrors);
        let objects = mirrors.entry(self.key.to_owned()).or_default().of_mut(self.switches);
        if !objects.contains_key(name) {
            return Ok(false);
        }
        self.shared.revision.fetch_add(1, Ordering::SeqCst);
        match policy {
            PrunePolicy::Delete => Ok(objects.remove(name).is_some()),
            PrunePolicy::Orphan => {
                let Some(body) = objects.get_mut(name) else { return Ok(false) };
                if let Some(labels) = body["metadata"]["labels"].as_object_mut() {
                    labels.remove(SOURCE_LABEL);
                }
                if let Some(annotations) = body["metadata"]["annotations"].as_object_mut() {
                    annotations.remove(ID_ANNOTATION);
                    annotations.remove(DIGEST_ANNOTATION);
                }
                Ok(true)
            }
        }
    }
}

/// A mirror body as the plan sees it.
fn existing_of(body: &Value) -> Existing {
    let meta = &body["metadata"];
    Existing::read(|k| meta["labels"][k].as_str(), |k| meta["annotations"][k].as_str(), false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nautobot::plan::Owner;

    fn switch_body(name: &str, source: Option<&str>, hostname: &str) -> Value {
        let mut body = json!({"apiVersion": "ztp.netops.dev/v1alpha1", "kind": "Switch",
            "metadata": {"name": name, "namespace": "default", "annotations": {DIGEST_ANNOTATION: "00000000000000ff"}},
            "spec": {"serialNumber": name.to_uppercase(), "hostname": hostname}});
        if let Some(source) = source {
            body["metadata"]["labels"] = json!({SOURCE_LABEL: source});
        }
        body
    }

    /// Two sources' mirrors and a folder: the folder's Switch wins its name, the rest are taken;
    /// the plan sees the folder's as hand-made, the other source's as its, ours as ours.
    #[test]
    fn the_folder_wins_a_name_and_the_plan_sees_every_owner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sources = Sources::open(dir.path()).expect("open");
        let mine = Mirror {
            switches: BTreeMap::from([
                ("a".to_owned(), switch_body("a", Some("dc1"), "from-nautobot")),
                ("b".to_owned(), switch_body("b", Some("dc1"), "from-nautobot")),
            ]),
            ..Default::default()
        };
        let other = Mirror {
            switches: BTreeMap::from([("c".to_owned(), switch_body("c", Some("dc2"), "dc2"))]),
            ..Default::default()
        };
        lock(&sources.shared.mirrors)
            .extend([("default/dc1".to_owned(), mine), ("default/dc2".to_owned(), other)]);
        let hand: Switch = serde_json::from_value(switch_body("a", None, "by-hand")).expect("switch");
        let folder = Desired { switches: vec![Arc::new(hand)], ..Default::default() };
        *lock(&sources.shared.folder) = Arc::new(folder.clone());

        let merged = sources.merged(&folder);
        let hosts: BTreeMap<String, String> = merged
            .switches
            .iter()
            .map(|s| {
                (s.metadata.name.clone().unwrap_or_default(), s.spec.hostname.clone().unwrap_or_default())
            })
            .collect();
        assert_eq!(merged.switches.len(), 3, "{hosts:?}");
        assert_eq!(hosts["a"], "by-hand");
        assert_eq!(hosts["b"], "from-nautobot");
        let from_mirrors = merged.switches.iter().filter(|s| s.spec.hostname.as_deref() != Some("by-hand"));
        assert!(
            from_mirrors.clone().count() == 2
                && from_mirrors.clone().all(|s| s.metadata.generation.is_some())
        );

        let target =
            MirrorTarget { shared: &sources.shared, key: "default/dc1", ns: "default", switches: true };
        let existing = target.existing();
        let owners: Vec<(&str, Owner)> = existing.iter().map(|(n, e)| (n.as_str(), e.owner("dc1"))).collect();
        assert_eq!(
            owners,
            [("a", Owner::HandMade), ("b", Owner::Ours), ("c", Owner::OtherSource("dc2".into()))]
        );
        assert_eq!(existing["b"].digest, Some(0xff));
    }

    #[test]
    fn the_status_line_says_ready_skips_and_clashes_or_why_not() {
        use crate::api::conditions::set_condition;
        let now = Time(Timestamp::now());
        let mut s = NautobotSourceStatus::default();
        assert_eq!(status_line(&s), "not synced yet");
        set_condition(
            &mut s.conditions,
            ConditionType::Ready,
            ConditionStatus::False,
            "NautobotError",
            "down",
            None,
            now.clone(),
        );
        set_condition(
            &mut s.conditions,
            ConditionType::Stalled,
            ConditionStatus::True,
            "NautobotError",
            "down",
            None,
            now.clone(),
        );
        assert_eq!(status_line(&s), "not ready (Stalled, NautobotError): down");
        set_condition(
            &mut s.conditions,
            ConditionType::Ready,
            ConditionStatus::True,
            "Synced",
            "2 Switches",
            None,
            now.clone(),
        );
        set_condition(
            &mut s.conditions,
            ConditionType::Conflict,
            ConditionStatus::True,
            "NameClash",
            "a: by hand",
            None,
            now,
        );
        s.skipped = Some(1);
        s.skipped_devices = vec![crate::api::nautobot::SkippedObject {
            name: "sw-7".into(),
            reason: crate::api::nautobot::SkipReason::NoSerial,
            message: "no serial".into(),
        }];
        assert_eq!(status_line(&s), "Ready: 2 Switches; 1 skipped: sw-7 (NoSerial); a: by hand");
    }

    #[test]
    fn mirror_files_are_named_for_their_source() {
        assert_eq!(file_of_key("default/dc1"), "default.dc1.json");
        assert_eq!(key_of_file("default.dc1.json").as_deref(), Some("default/dc1"));
        // A name may hold dots, a namespace not.
        assert_eq!(file_of_key("lab/dc1.east"), "lab.dc1.east.json");
        assert_eq!(key_of_file("lab.dc1.east.json").as_deref(), Some("lab/dc1.east"));
        assert_eq!(key_of_file("notes.txt"), None);
        assert_eq!(key_of_file("x.json.tmp"), None);
    }
}

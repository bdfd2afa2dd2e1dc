//! `ztp-operator standalone`: the same reconcile core on one machine, without a cluster.
//!
//! Desired state is a folder of YAML (OsImages, and the ConfigMaps / Secrets they reference),
//! re-read when it changes; the store is a directory; status is printed as one line per
//! transition and kept in `{data}/.status/osimages.json` (so a restart resumes where it was).
//! When it serves devices, their activity per SwitchProfile goes to
//! `{data}/.status/switchprofiles.json`.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use async_trait::async_trait;
use k8s_openapi::{
    api::core::v1::{ConfigMap, Secret},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use serde_json::Value;
use tokio::{sync::Semaphore, task::JoinSet};

use crate::{
    activity::{Activity, SinkError, file::FileSink, report_forever},
    api::{OsImage, OsImagePhase, OsImageStatus, SwitchProfile, conditions::find_condition, validate},
    cli::{ConfigError, StandaloneArgs},
    fetch::{FetchError, Fetcher},
    profile::{
        build,
        problem::{self, Problem, Severity},
        publish,
    },
    reconcile::{
        EventType, ImageReporter, ReportError, ResolveError, in_use, object_name,
        osimage::{ImageContext, Next},
        sources::{ObjectLookup, RefResolver, config_map_data, secret_data},
    },
    serve::{
        self,
        state::{BaseUrl, ServerState},
    },
    store::{Store, StoreError, fs::FsBackend},
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    AdminTokens(#[from] crate::serve::auth::TokenFileError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("read {path}: {message}")]
    Manifests { path: PathBuf, message: String },
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error(transparent)]
    Activity(#[from] SinkError),
}

/// What the folder declares.
#[derive(Default, Clone)]
struct Desired {
    images: Vec<Arc<OsImage>>,
    profiles: Vec<Arc<SwitchProfile>>,
    config_maps: HashMap<(String, String), BTreeMap<String, Vec<u8>>>,
    secrets: HashMap<(String, String), BTreeMap<String, Vec<u8>>>,
}

/// Changes to any file name, size or mtime under the folder.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                out.push((p, m.len(), m.modified().ok()));
            }
        }
    }
    out.sort();
    out
}

/// A stable positive number for a spec, standing in for `metadata.generation`.
fn generation_of(spec: &Value) -> i64 {
    // FNV-1a over the canonical JSON: stable across runs and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in spec.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    i64::try_from(h >> 2).unwrap_or(1).max(1)
}

/// What the folder declares, and the files that could not be read (each skipped whole, with why).
struct Folder {
    desired: Desired,
    problems: Vec<Error>,
}

/// Reads every YAML file of the folder. A file that does not parse, or holds a document that is
/// not a valid object of its kind, is skipped whole and reported in [`Folder::problems`]; the
/// error is an OsImage declared twice (which file wins cannot be told).
fn load(dir: &Path) -> Result<Folder, Error> {
    let mut desired = Desired::default();
    let mut problems = Vec::new();
    for (path, _, mtime) in fingerprint(dir) {
        let mut file = Desired::default();
        match load_file(dir, &path, mtime, &mut file) {
            Ok(()) => {
                desired.images.extend(file.images);
                desired.profiles.extend(file.profiles);
                desired.config_maps.extend(file.config_maps);
                desired.secrets.extend(file.secrets);
            }
            Err(e) => problems.push(e),
        }
    }
    let mut seen = std::collections::HashSet::new();
    for image in &desired.images {
        let name = object_name(&image.metadata);
        if !seen.insert(name.clone()) {
            return Err(Error::Manifests {
                path: dir.to_path_buf(),
                message: format!("OsImage {name} is declared twice"),
            });
        }
    }
    Ok(Folder { desired, problems })
}

/// The objects of one YAML file, added to `desired`.
fn load_file(dir: &Path, path: &Path, mtime: Option<SystemTime>, desired: &mut Desired) -> Result<(), Error> {
    let err = |message: String| Error::Manifests { path: path.to_path_buf(), message };
    for (i, value) in read_documents(path)? {
        let kind = value.get("kind").and_then(Value::as_str).unwrap_or_default().to_owned();
        let doc_err = |e: serde_json::Error| err(format!("document {} ({kind}): {e}", i + 1));
        // What the apiserver would refuse is refused here too, with its words.
        if validate::is_ours(&value) {
            validate::validate(&value).map_err(|e| err(format!("document {}: {e}", i + 1)))?;
        }
        match kind.as_str() {
            "OsImage" => {
                let mut image: OsImage = serde_json::from_value(value.clone()).map_err(doc_err)?;
                let meta = &mut image.metadata;
                meta.namespace.get_or_insert_with(|| "default".into());
                meta.generation = Some(generation_of(&value["spec"]));
                // Older files win conflicts, as older objects do in a cluster.
                meta.creation_timestamp = mtime.and_then(|t| Timestamp::try_from(t).ok()).map(Time);
                image.status = None;
                resolve_relative_file_url(&mut image, dir);
                desired.images.push(Arc::new(image));
            }
            "SwitchProfile" => {
                let mut profile: SwitchProfile = serde_json::from_value(value.clone()).map_err(doc_err)?;
                profile.metadata.namespace.get_or_insert_with(|| "default".into());
                profile.metadata.generation = Some(generation_of(&value["spec"]));
                profile.status = None;
                desired.profiles.push(Arc::new(profile));
            }
            "ConfigMap" => {
                let cm: ConfigMap = serde_json::from_value(value).map_err(doc_err)?;
                let key = (
                    cm.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
                    cm.metadata.name.clone().unwrap_or_default(),
                );
                desired.config_maps.insert(key, config_map_data(cm));
            }
            "Secret" => {
                let s: Secret = serde_json::from_value(value).map_err(doc_err)?;
                let key = (
                    s.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
                    s.metadata.name.clone().unwrap_or_default(),
                );
                desired.secrets.insert(key, secret_data(s));
            }
            _ => {} // anything else is not ours
        }
    }
    Ok(())
}

/// The non-empty YAML documents of one file, with their 0-based index in the file.
fn read_documents(path: &Path) -> Result<Vec<(usize, Value)>, Error> {
    let err = |message: String| Error::Manifests { path: path.to_path_buf(), message };
    let size = std::fs::metadata(path).map_err(|e| err(e.to_string()))?.len();
    if size > MAX_YAML_BYTES {
        return Err(err(format!("{size} bytes; a manifest file may have at most {MAX_YAML_BYTES}")));
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    parse_documents(&text).map_err(err)
}

/// The non-empty YAML documents of `text` (a manifest file's contents), with their 0-based
/// index; the nesting limit is checked first (see [`yaml_nesting_within`]).
pub fn parse_documents(text: &str) -> Result<Vec<(usize, Value)>, String> {
    yaml_nesting_within(text, MAX_YAML_DEPTH)?;
    let mut docs = Vec::new();
    for (i, doc) in yaml_serde::Deserializer::from_str(text).enumerate() {
        let value: Value =
            serde::Deserialize::deserialize(doc).map_err(|e| format!("document {}: {e}", i + 1))?;
        if !value.is_null() {
            docs.push((i, value));
        }
    }
    Ok(docs)
}

/// Largest manifest file read (a Kubernetes object is at most about 1.5 MiB).
pub const MAX_YAML_BYTES: u64 = 16 * 1024 * 1024;
/// Deepest nesting a manifest file may have, checked before it is parsed (the YAML parser itself
/// takes minutes for 100,000 levels before the deserializer's own limit of 128 applies).
pub const MAX_YAML_DEPTH: usize = 128;

/// Checks, in one linear pass and without parsing, that no line of `text` nests deeper than
/// `max`: flow collections (`[`, `{`) open across lines, block sequences started on one line
/// (`- - - x`) and indentation (two columns counted as one level) all count. Quoted scalars and
/// comments are skipped. Errs with what was found.
pub fn yaml_nesting_within(text: &str, max: usize) -> Result<(), String> {
    let mut flow = 0usize;
    for (n, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches([' ', '\t']).len();
        let mut rest = &line[indent..];
        let mut dashes = 0;
        while let Some(r) = rest.strip_prefix('-').filter(|r| r.is_empty() || r.starts_with([' ', '\t'])) {
            dashes += 1;
            rest = r.trim_start_matches([' ', '\t']);
        }
        let mut quote: Option<char> = None;
        for ch in rest.chars() {
            match (quote, ch) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(ch),
                (None, '#') => break,
                (None, '[' | '{') => flow += 1,
                (None, ']' | '}') => flow = flow.saturating_sub(1),
                _ => {}
            }
            if flow > max {
                return Err(format!("line {}: nested more than {max} levels deep", n + 1));
            }
        }
        if indent / 2 + dashes > max {
            return Err(format!("line {}: nested more than {max} levels deep", n + 1));
        }
    }
    Ok(())
}

/// Reads the SwitchProfiles of `path`: one YAML file (any extension), or every `*.yaml` /
/// `*.yml` under a folder (recursively, in path order), each possibly holding several
/// documents (`---`), exactly what users `kubectl apply`. Other kinds are ignored; a profile
/// without a namespace is in `default`, as in standalone mode. Status is dropped.
pub fn read_switch_profiles(path: &Path) -> Result<Vec<SwitchProfile>, Error> {
    let files = if path.is_dir() {
        fingerprint(path).into_iter().map(|(p, _, _)| p).collect()
    } else {
        vec![path.to_path_buf()]
    };
    let mut profiles = Vec::new();
    for file in files {
        for (i, value) in read_documents(&file)? {
            if validate::is_ours(&value) {
                validate::validate(&value).map_err(|e| Error::Manifests {
                    path: file.clone(),
                    message: format!("document {}: {e}", i + 1),
                })?;
            }
            if value.get("kind").and_then(Value::as_str) != Some("SwitchProfile") {
                continue;
            }
            let mut profile: SwitchProfile = serde_json::from_value(value).map_err(|e| Error::Manifests {
                path: file.clone(),
                message: format!("document {} (SwitchProfile): {e}", i + 1),
            })?;
            profile.metadata.namespace.get_or_insert_with(|| "default".into());
            profile.status = None;
            profiles.push(profile);
        }
    }
    Ok(profiles)
}

/// Standalone only: `file://./x` and `file://../x` are relative to the manifests folder, so a lab
/// folder works wherever it is checked out.
fn resolve_relative_file_url(image: &mut OsImage, dir: &Path) {
    if let Some(u) = image.spec.source.url.as_mut()
        && let Some(rel) =
            u.url.strip_prefix("file://").filter(|r| r.starts_with("./") || r.starts_with("../"))
    {
        let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()).join(rel);
        u.url = format!("file://{}", abs.display());
    }
}

struct Lookup(Arc<Mutex<Desired>>);

#[async_trait]
impl ObjectLookup for Lookup {
    async fn config_map(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, ResolveError> {
        Ok(self.0.lock().expect("desired lock").config_maps.get(&(ns.to_owned(), name.to_owned())).cloned())
    }

    async fn secret(&self, ns: &str, name: &str) -> Result<Option<BTreeMap<String, Vec<u8>>>, ResolveError> {
        Ok(self.0.lock().expect("desired lock").secrets.get(&(ns.to_owned(), name.to_owned())).cloned())
    }
}

/// Status kept in memory and in `{data}/.status/osimages.json`; one printed line per transition.
struct StatusBook {
    file: PathBuf,
    statuses: Mutex<BTreeMap<String, OsImageStatus>>,
}

impl StatusBook {
    fn open(data: &Path) -> Result<Self, Error> {
        let dir = data.join(".status");
        std::fs::create_dir_all(&dir).map_err(StoreError::io("create", data, &dir))?;
        let file = dir.join("osimages.json");
        let statuses =
            std::fs::read(&file).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        Ok(Self { file, statuses: Mutex::new(statuses) })
    }

    fn get(&self, key: &str) -> Option<OsImageStatus> {
        self.statuses.lock().expect("status lock").get(key).cloned()
    }

    fn remove(&self, key: &str) -> Result<(), ReportError> {
        self.statuses.lock().expect("status lock").remove(key);
        self.save(key)
    }

    /// Writes the file while holding the lock, so concurrent reconciles never interleave writes.
    fn save(&self, key: &str) -> Result<(), ReportError> {
        let statuses = self.statuses.lock().expect("status lock");
        let bytes = serde_json::to_vec_pretty(&*statuses).expect("statuses serialise");
        let tmp = self.file.with_extension("json.tmp");
        std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &self.file)).map_err(|e| {
            ReportError { object: key.to_owned(), message: format!("write {}: {e}", self.file.display()) }
        })
    }
}

fn summary(s: &OsImageStatus) -> (Option<OsImagePhase>, Option<String>) {
    (s.phase, find_condition(&s.conditions, crate::api::ConditionType::Ready).map(|c| c.reason.clone()))
}

#[async_trait]
impl ImageReporter for StatusBook {
    async fn status(&self, image: &OsImage, status: &OsImageStatus) -> Result<(), ReportError> {
        let key = object_name(&image.metadata);
        let before = self.statuses.lock().expect("status lock").insert(key.clone(), status.clone());
        if before.as_ref().map(summary) != Some(summary(status)) {
            let phase = status.phase.map(|p| format!("{p:?}")).unwrap_or_default();
            println!("osimage {key}: {phase}: {}", status.message.as_deref().unwrap_or_default());
        }
        self.save(&key)
    }

    async fn event(&self, image: &OsImage, kind: EventType, reason: &str, note: &str) {
        tracing::debug!(object = %object_name(&image.metadata), ?kind, reason, note, "event");
    }
}

/// What standalone prints about a profile, classified as the controller's conditions are:
/// `Ready`, `not ready (Reconciling, <reason>): …` for what clears by itself (an image still
/// fetching), `not ready (Stalled, <reason>): …` for what needs a human.
fn profile_line(problems: &[Problem]) -> String {
    match problem::verdict(problems) {
        None => "Ready".to_owned(),
        Some(v) => {
            let condition = match v.severity {
                Severity::Waiting => "Reconciling",
                Severity::NeedsHuman => "Stalled",
            };
            format!("not ready ({condition}, {}): {}", v.reason, v.all)
        }
    }
}

/// Renders the SwitchProfiles into a snapshot and publishes it; prints each profile's problems
/// when they change.
async fn publish_snapshot(
    store: &Store,
    desired: &Desired,
    book: &StatusBook,
    lookup: &Lookup,
    last_problems: &mut BTreeMap<String, String>,
) {
    let images: Vec<Arc<OsImage>> = desired
        .images
        .iter()
        .map(|i| {
            let mut i = (**i).clone();
            i.status = book.get(&object_name(&i.metadata));
            Arc::new(i)
        })
        .collect();
    let built = build::build(&desired.profiles, &images, lookup).await;
    for p in &desired.profiles {
        let key = object_name(&p.metadata);
        let now = profile_line(built.problems.get(&key).map(Vec::as_slice).unwrap_or_default());
        if last_problems.get(&key) != Some(&now) {
            println!("switchprofile {key}: {now}");
            last_problems.insert(key, now);
        }
    }
    match publish::publish(store, &built.snapshot).await {
        Ok(true) => println!(
            "snapshot {} published ({} profiles)",
            built.snapshot.version,
            built.snapshot.profiles.len()
        ),
        Ok(false) => {}
        Err(e) => println!("cannot publish the device snapshot: {e}"),
    }
}

/// Runs until interrupted (or, with `--once`, until everything settled). Returns whether every
/// image is Ready.
pub async fn run(args: StandaloneArgs) -> Result<bool, Error> {
    let backend = FsBackend::new(&args.data)?;
    backend.start_temp_sweeper();
    let core = ImageContext {
        store: Store::new(Arc::new(backend)),
        fetcher: Fetcher::new(args.images.fetch_config(None))?,
        fetch_slots: Arc::new(Semaphore::new(args.images.max_concurrent_fetches.max(1))),
        policy: args.images.policy(),
        external_url: args.images.external_url.clone(),
        metrics: Default::default(),
        in_flight: Default::default(),
    };
    let book = Arc::new(StatusBook::open(&args.data)?);
    let loaded = load(&args.manifests)?;
    for problem in &loaded.problems {
        println!("skipping {problem}");
    }
    let desired = Arc::new(Mutex::new(loaded.desired));
    let resolver = Arc::new(RefResolver(Lookup(desired.clone())));
    let profile_lookup = Lookup(desired.clone());
    let mut last_problems = BTreeMap::new();
    let mut dirty = true;
    if let Some(listen) = args.listen {
        let base_url = BaseUrl::new(args.images.external_url.as_deref(), listen);
        let state = Arc::new(ServerState::new(core.store.clone(), base_url));
        let max = args.max_downloads;
        let (admin, max_upload) = (args.admin.auth()?, args.admin.max_upload_bytes);
        let activity = Activity::new();
        let sink = FileSink::new(&args.data)?;
        let every = Duration::from_secs_f64(args.activity_flush_seconds.max(0.1));
        tokio::spawn(report_forever(activity.clone(), Arc::new(sink), every));
        tokio::spawn(async move {
            let options = serve::Options {
                listen,
                max_downloads: max,
                sendfile: true,
                activity,
                admin,
                max_upload,
                device_networks: Default::default(),
                limits: Default::default(),
            };
            // Standalone ends on Ctrl-C in its own loop; the server runs until the process ends.
            if let Err(e) = serve::run(state, options, std::future::pending()).await {
                eprintln!("error: serve on {listen}: {e}");
                std::process::exit(1);
            }
        });
        println!("serving devices on {listen}");
    }
    let poll = Duration::from_secs_f64(args.poll_seconds.max(0.1));
    println!("standalone: {} -> {}", args.manifests.display(), core.store.describe());

    let mut print = fingerprint(&args.manifests);
    let mut due: HashMap<String, Instant> = HashMap::new();
    let mut settled: HashMap<String, bool> = HashMap::new(); // key -> Ready?
    let mut running: JoinSet<(String, Result<Next, ReportError>)> = JoinSet::new();
    let mut in_flight: std::collections::HashSet<String> = Default::default();
    let mut previous: Vec<Arc<OsImage>> = desired.lock().expect("desired lock").images.clone();

    // Images whose YAML went away while a profile still uses them: kept, stored and served
    // (as the controller's finalizer keeps them) until no profile references them.
    let mut held: BTreeMap<String, Arc<OsImage>> = BTreeMap::new();

    loop {
        let (images, profiles) = {
            let d = desired.lock().expect("desired lock");
            (d.images.clone(), d.profiles.clone())
        };
        // Images whose YAML went away: honour their deletionPolicy, once no profile uses them.
        held.retain(|key, _| !images.iter().any(|i| object_name(&i.metadata) == *key));
        for gone in previous
            .iter()
            .filter(|p| !images.iter().any(|i| object_name(&i.metadata) == object_name(&p.metadata)))
        {
            let key = object_name(&gone.metadata);
            if in_flight.contains(&key) {
                continue;
            }
            let mut last = (**gone).clone();
            last.status = book.get(&key);
            let users = in_use::users(&last, &profiles);
            if !users.is_empty() {
                if held.insert(key.clone(), gone.clone()).is_none() {
                    println!("osimage {key}: removed from the manifests, but {}", in_use::message(&users));
                    dirty = true;
                }
                in_use::report_held(&last, &users, book.as_ref()).await?;
                continue;
            }
            if held.remove(&key).is_some() {
                println!("osimage {key}: no profile uses it any more");
                dirty = true;
            }
            match core.cleanup(&last, &images, book.as_ref()).await {
                Ok(()) => println!("osimage {key}: removed ({:?})", last.spec.deletion_policy),
                Err(e) => println!("osimage {key}: cleanup failed: {e}"),
            }
            book.remove(&key)?;
            due.remove(&key);
            settled.remove(&key);
        }
        previous = images.iter().chain(held.values()).cloned().collect();
        if dirty {
            let mut snapshot_input = desired.lock().expect("desired lock").clone();
            snapshot_input.images.extend(held.values().cloned());
            publish_snapshot(&core.store, &snapshot_input, &book, &profile_lookup, &mut last_problems).await;
            dirty = false;
        }

        let now = Instant::now();
        for image in &images {
            let key = object_name(&image.metadata);
            if in_flight.contains(&key) || due.get(&key).is_some_and(|t| *t > now) {
                continue;
            }
            let mut current = (**image).clone();
            current.status = book.get(&key);
            let (core, book, resolver, all) = (core.clone(), book.clone(), resolver.clone(), images.clone());
            in_flight.insert(key.clone());
            due.insert(key.clone(), Instant::now() + Duration::from_secs(3600));
            running.spawn(async move {
                let r = core.reconcile(&current, &all, book.as_ref(), resolver.as_ref()).await;
                (key, r)
            });
        }

        if args.once
            && running.is_empty()
            && images.iter().all(|i| settled.contains_key(&object_name(&i.metadata)))
        {
            return Ok(settled.values().all(|ready| *ready));
        }

        tokio::select! {
            Some(joined) = running.join_next(), if !running.is_empty() => {
                let (key, result) = joined.expect("reconcile tasks do not panic");
                in_flight.remove(&key);
                dirty = true;
                match result {
                    Ok(Next::Resync(d)) => { settled.insert(key.clone(), true); due.insert(key, Instant::now() + d); }
                    Ok(Next::Stalled) => { settled.insert(key.clone(), false); due.insert(key, Instant::now() + Duration::from_secs(3600 * 24)); }
                    Ok(Next::Retry(d)) => { settled.remove(&key); due.insert(key, Instant::now() + d); }
                    // With --once nothing else would end the run: a status that cannot be
                    // written is the run's error.
                    Err(e) if args.once => return Err(Error::Report(e)),
                    Err(e) => { println!("{e}"); due.insert(key, Instant::now() + poll); }
                }
            }
            _ = tokio::time::sleep(poll) => {}
            _ = tokio::signal::ctrl_c() => return Ok(settled.values().all(|r| *r)),
        }

        let now_print = fingerprint(&args.manifests);
        if now_print != print {
            print = now_print;
            match load(&args.manifests) {
                // A file that no longer reads keeps everything as it was: taking its objects
                // away would delete their images (deletionPolicy) over a typo.
                Ok(Folder { problems, .. }) if !problems.is_empty() => {
                    for problem in &problems {
                        println!("keeping the previous desired state: {problem}");
                    }
                }
                Ok(Folder { desired: d, .. }) => {
                    *desired.lock().expect("desired lock") = d;
                    dirty = true;
                    // Changed specs get a new generation: look at everything again.
                    due.clear();
                    settled.clear();
                }
                Err(e) => println!("keeping the previous desired state: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_nesting_is_measured_before_parsing() {
        let ok = "a:\n  b:\n    - [1, {c: \"[[[[\"}]  # [[[[\n    - - - x\n";
        assert_eq!(yaml_nesting_within(ok, 8), Ok(()));
        for deep in ["[".repeat(200), "{a: ".repeat(200), "- ".repeat(200) + "x", " ".repeat(400) + "x"] {
            let err = yaml_nesting_within(&deep, 128).expect_err("too deep");
            assert!(err.contains("nested more than 128 levels"), "{err}");
        }
        // Across lines, flow collections add up; closing brackets bring the depth back.
        let spread = "[\n".repeat(100) + &"]\n".repeat(100) + &"[\n".repeat(100);
        assert_eq!(yaml_nesting_within(&spread, 128), Ok(()));
        assert!(yaml_nesting_within(&(spread + &"[".repeat(30)), 128).is_err());
    }

    #[test]
    fn a_bad_file_is_skipped_and_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = "apiVersion: ztp.netops.dev/v1alpha1\nkind: OsImage\nmetadata: {name: a}\nspec:\n  platform: lab\n  version: \"1\"\n  source: {url: {url: \"file:///x\"}}\n  sha256: 0000000000000000000000000000000000000000000000000000000000000000\n";
        std::fs::write(dir.path().join("good.yaml"), image).expect("write");
        std::fs::write(dir.path().join("bad.yaml"), "kind: OsImage\nspec: [\n").expect("write");
        std::fs::write(dir.path().join("deep.yaml"), "[".repeat(100_000)).expect("write");
        let folder = load(dir.path()).expect("the folder loads");
        assert_eq!(folder.desired.images.len(), 1);
        let problems: Vec<String> = folder.problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("bad.yaml")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("deep.yaml") && p.contains("nested")), "{problems:?}");
    }
}

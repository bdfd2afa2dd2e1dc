//! `ztp-operator standalone`: the same reconcile core on one machine, without a cluster.
//!
//! Desired state is a folder of YAML (OsImages, and the ConfigMaps / Secrets they reference),
//! re-read when it changes; the store is a directory; status is printed as one line per
//! transition and kept in `{data}/.status/osimages.json` (so a restart resumes where it was).
//! SwitchProfiles go through the controller's pipeline ([`profiles::rebuild`]): one line per
//! change, and their conditions in `{data}/.status/switchprofiles.json`, beside the device
//! activity per SwitchProfile when it serves devices. Switches (the folder's, and the devices it
//! discovers when serving) are kept in `{data}/.status/switches.json` ([`fleet`]), with the
//! report key in `{data}/.status/report-key` unless `--report-key-file` names one. A
//! NautobotSource in the folder syncs as in a cluster, into a mirror beside the folder
//! ([`nautobot`]).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use tokio::{sync::Semaphore, task::JoinSet};

use crate::{
    activity::{Activity, SinkError, file::FileSink, report_forever},
    api::OsImage,
    cli::{ConfigError, StandaloneArgs},
    fetch::{FetchError, Fetcher},
    lookup::{Data, LookupError, ObjectLookup},
    manifests::{Desired, Folder, ManifestsError, fingerprint, load},
    reconcile::{
        ReportError, in_use, object_name,
        osimage::{ImageContext, Next},
        profiles,
        sources::RefResolver,
    },
    serve::{
        self,
        report::Reports,
        state::{BaseUrl, ServerState},
    },
    store::{Store, StoreError, fs::FsBackend},
    switch::{
        Tracking,
        fleet::{self, FleetOptions},
        k8s::Matcher,
        token::{KeyError, ReportKey},
    },
};

mod nautobot;
mod schedule;
mod status;

use nautobot::{MirrorError, Sources};
use schedule::Schedule;
use status::{ProfileBook, StatusBook};

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
    #[error(transparent)]
    Manifests(#[from] ManifestsError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error(transparent)]
    Activity(#[from] SinkError),
    #[error(transparent)]
    ReportKey(#[from] KeyError),
    #[error("the NautobotSources' mirrors: {0}")]
    Mirror(#[from] MirrorError),
}

struct Lookup(Arc<Mutex<Desired>>);

impl Lookup {
    /// The data of object `ns/name` in the map `of` picks from the declared state.
    fn find(
        &self,
        of: fn(&Desired) -> &HashMap<(String, String), Data>,
        ns: &str,
        name: &str,
    ) -> Option<Data> {
        of(&self.0.lock().unwrap_or_else(PoisonError::into_inner))
            .get(&(ns.to_owned(), name.to_owned()))
            .cloned()
    }
}

#[async_trait]
impl ObjectLookup for Lookup {
    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<Data>, LookupError> {
        Ok(self.find(|d| &d.config_maps, ns, name))
    }

    async fn secret(&self, ns: &str, name: &str) -> Result<Option<Data>, LookupError> {
        Ok(self.find(|d| &d.secrets, ns, name))
    }
}

/// Runs the shared profile pipeline over what the folder declares, each image and profile with
/// the status it has in this run.
async fn publish_snapshot(
    store: &Store,
    desired: &Desired,
    book: &StatusBook,
    profile_book: &ProfileBook,
    lookup: &Lookup,
) {
    let images = with_status(&desired.images, |i| i.status = book.get(&object_name(&i.metadata)));
    let profiles = with_status(&desired.profiles, |p| p.status = profile_book.get(&object_name(&p.metadata)));
    profiles::rebuild(store, &profiles, &desired.switches, &images, lookup, profile_book).await;
}

/// The report key: `--report-key-file`, else `{data}/.status/report-key`, generated (owner-only)
/// on the first run.
fn report_key(args: &StandaloneArgs) -> Result<ReportKey, Error> {
    let path = match &args.report_key_file {
        Some(path) => return Ok(ReportKey::load(path)?),
        None => args.data.join(".status").join("report-key"),
    };
    if !path.exists() {
        let key = ReportKey::generate()?;
        std::fs::create_dir_all(args.data.join(".status"))
            .map_err(StoreError::io("create", &args.data, &path))?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let write = |mut f: std::fs::File| std::io::Write::write_all(&mut f, key.as_bytes());
        options.open(&path).and_then(write).map_err(StoreError::io("write", &args.data, &path))?;
        println!("report key generated in {}", path.display());
    }
    Ok(ReportKey::load(&path)?)
}

/// Copies of `objects`, each given its status by `set`.
fn with_status<K: Clone>(objects: &[Arc<K>], set: impl Fn(&mut K)) -> Vec<Arc<K>> {
    objects
        .iter()
        .map(|o| {
            let mut o = (**o).clone();
            set(&mut o);
            Arc::new(o)
        })
        .collect()
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
    let profile_book = ProfileBook::open(&args.data)?;
    let loaded = load(&args.manifests)?;
    for problem in &loaded.problems {
        println!("skipping {problem}");
    }
    // What the folder declares, and beside it what its NautobotSources declare (`desired`).
    let mut folder = loaded.desired;
    let mut sources = Sources::open(&args.data)?;
    let desired = Arc::new(Mutex::new(sources.merged(&folder)));
    let mut revision = sources.revision();
    let resolver = Arc::new(RefResolver(Lookup(desired.clone())));
    let profile_lookup = Lookup(desired.clone());
    let source_lookup: Arc<dyn ObjectLookup> = Arc::new(Lookup(desired.clone()));
    sources.follow(&folder, source_lookup.clone(), args.once);
    let mut dirty = true;
    if let Some(listen) = args.listen {
        let base_url = BaseUrl::new(args.images.external_url.as_deref(), listen);
        let state = Arc::new(ServerState::new(core.store.clone(), base_url));
        let max = args.max_downloads;
        let (admin, max_upload) = (args.admin.auth()?, args.admin.max_upload_bytes);
        // The fleet keeps each device's progress and counts each profile's Switches.
        let activity = Activity::events_only();
        let sink = FileSink::new(&args.data)?;
        let profile_status = sink.path().to_owned();
        let every = Duration::from_secs_f64(args.activity_flush_seconds.max(0.1));
        tokio::spawn(report_forever(activity.clone(), Arc::new(sink), every));
        let switches = Tracking::new();
        let reports = Reports { key: Some(Arc::new(report_key(&args)?)), require_token: false };
        let fleet = FleetOptions {
            discover: args.discover,
            max_unmatched: args.max_unmatched,
            per_source_per_minute: args.discover_per_source_per_minute,
            namespace: "default".into(),
        };
        let declared = {
            let desired = desired.clone();
            move || desired.lock().unwrap_or_else(PoisonError::into_inner).switches.clone()
        };
        let matcher: Matcher = {
            let state = state.clone();
            Arc::new(move |spec| serve::matched::declared_match(&state, spec))
        };
        let file = args.data.join(".status").join(fleet::FILE);
        tokio::spawn(fleet::run(file, profile_status, switches.clone(), fleet, declared, matcher, every));
        tokio::spawn(async move {
            let options = serve::Options {
                listen,
                max_downloads: max,
                sendfile: true,
                activity,
                switches,
                reports,
                admin,
                max_upload,
                device_networks: Default::default(),
                limits: Default::default(),
                workers: serve::workers::default_count(),
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
    let mut schedule = Schedule::default();
    let mut running: JoinSet<(String, Result<Next, ReportError>)> = JoinSet::new();
    let mut previous: Vec<Arc<OsImage>> =
        desired.lock().unwrap_or_else(PoisonError::into_inner).images.clone();

    // Images whose YAML went away while a profile still uses them: kept, stored and served
    // (as the controller's finalizer keeps them) until no profile references them.
    let mut held: BTreeMap<String, Arc<OsImage>> = BTreeMap::new();

    loop {
        let (images, profiles) = {
            let d = desired.lock().unwrap_or_else(PoisonError::into_inner);
            (d.images.clone(), d.profiles.clone())
        };
        // Images whose YAML went away: honour their deletionPolicy, once no profile uses them.
        held.retain(|key, _| !images.iter().any(|i| object_name(&i.metadata) == *key));
        for gone in previous
            .iter()
            .filter(|p| !images.iter().any(|i| object_name(&i.metadata) == object_name(&p.metadata)))
        {
            let key = object_name(&gone.metadata);
            if schedule.running(&key) {
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
            schedule.forget(&key);
        }
        previous = images.iter().chain(held.values()).cloned().collect();
        if dirty {
            let mut snapshot_input = desired.lock().unwrap_or_else(PoisonError::into_inner).clone();
            snapshot_input.images.extend(held.values().cloned());
            publish_snapshot(&core.store, &snapshot_input, &book, &profile_book, &profile_lookup).await;
            dirty = false;
        }

        let now = Instant::now();
        for image in &images {
            let key = object_name(&image.metadata);
            if !schedule.start(&key, now) {
                continue;
            }
            let mut current = (**image).clone();
            current.status = book.get(&key);
            let (core, book, resolver, all) = (core.clone(), book.clone(), resolver.clone(), images.clone());
            running.spawn(async move {
                let r = core.reconcile(&current, &all, book.as_ref(), resolver.as_ref()).await;
                (key, r)
            });
        }

        let keys: Vec<String> = images.iter().map(|i| object_name(&i.metadata)).collect();
        if args.once
            && running.is_empty()
            && sources.all_synced()
            && sources.revision() == revision
            && schedule.all_settled(keys.iter().map(String::as_str))
        {
            return Ok(schedule.all_ready() && sources.all_ready());
        }

        tokio::select! {
            Some(joined) = running.join_next(), if !running.is_empty() => {
                let (key, result) = joined.expect("reconcile tasks do not panic");
                dirty = true;
                let next = match result {
                    Ok(next) => Some(next),
                    // With --once nothing else would end the run: a status that cannot be
                    // written is the run's error.
                    Err(e) if args.once => return Err(Error::Report(e)),
                    Err(e) => {
                        println!("{e}");
                        None
                    }
                };
                schedule.finished(&key, next, Instant::now(), poll);
            }
            _ = sources.changed() => {}
            _ = tokio::time::sleep(poll) => {}
            _ = tokio::signal::ctrl_c() => return Ok(schedule.all_ready()),
        }
        if sources.revision() != revision {
            revision = sources.revision();
            *desired.lock().unwrap_or_else(PoisonError::into_inner) = sources.merged(&folder);
            dirty = true;
            schedule.reset();
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
                    folder = d;
                    sources.follow(&folder, source_lookup.clone(), args.once);
                    revision = sources.revision();
                    *desired.lock().unwrap_or_else(PoisonError::into_inner) = sources.merged(&folder);
                    dirty = true;
                    // Changed specs get a new generation: look at everything again.
                    schedule.reset();
                }
                Err(e) => println!("keeping the previous desired state: {e}"),
            }
        }
    }
}

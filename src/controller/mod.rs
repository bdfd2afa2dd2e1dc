//! `ztp-operator controller`: the Kubernetes side of the reconcile core. Watches OsImages, keeps a
//! finalizer for `deletionPolicy`, writes status with server-side apply (field manager
//! `ztp-operator`), records Events, and holds a Lease so only one replica fetches.

pub mod counts;
pub mod health;
mod k8s;
pub mod nautobot;
pub mod profiles;
pub mod serving;
mod triggers;

use std::{sync::Arc, time::Duration};

use futures::{StreamExt, TryStreamExt};
use kube::{
    Api, Client,
    runtime::{
        Controller, PredicateConfig, WatchStreamExt,
        controller::Action,
        finalizer::{Event as Finalizer, finalizer},
        reflector::{self, ObjectRef, Store as Reflector, reflector},
        watcher::{self, watcher},
    },
};
use tokio::sync::{Notify, Semaphore};

use crate::{
    api::{OsImage, SwitchProfile},
    cli::{ConfigError, ControllerArgs},
    fetch::{FetchError, Fetcher},
    reconcile::{
        ReportError, in_use,
        metrics::Outcome,
        osimage::{ImageContext, Next, RETRY_ANNOTATION},
        sources::RefResolver,
    },
    store::StoreError,
};

/// Field manager of every server-side apply this controller makes.
pub const FIELD_MANAGER: &str = "ztp-operator";
/// Finalizer that lets the controller honour `deletionPolicy`.
pub const FINALIZER: &str = "ztp.netops.dev/storage";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("cannot reach the Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("the OsImage CRD is not installed (apply crds/ztp.netops.dev.yaml): {0}")]
    CrdMissing(kube::Error),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("cannot watch SwitchProfiles, ConfigMaps or Secrets: {0}")]
    Watch(String),
    #[error("leader election: {0}")]
    Lease(String),
    #[error("cannot listen on {0} (--metrics-listen): {1}")]
    Listen(std::net::SocketAddr, std::io::Error),
    #[error("lost the leader lease; exiting so that another replica takes over")]
    LostLease,
    #[error(transparent)]
    Serving(#[from] serving::ServingError),
}

impl Error {
    /// A short, stable label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Config(_) => "config",
            Self::Fetch(_) => "fetch",
            Self::Kube(_) | Self::CrdMissing(_) | Self::Watch(_) => "kube",
            Self::Report(_) => "report",
            Self::Store(_) => "store",
            Self::Finalizer(_) => "finalizer",
            Self::Lease(_) | Self::LostLease => "lease",
            Self::Listen(..) => "listen",
            Self::Serving(_) => "serving",
        }
    }
}

struct Ctx {
    client: Client,
    core: ImageContext,
    images: Reflector<OsImage>,
    /// Every SwitchProfile in scope (the snapshot loop's watch): who still uses an image.
    profiles: Reflector<SwitchProfile>,
    reporter: k8s::KubeReporter,
    resolver: RefResolver<k8s::KubeLookup>,
}

/// Runs the controller until a shutdown signal (or the loss of the lease).
pub async fn run(args: ControllerArgs) -> Result<(), Error> {
    let serving = serving::ServingConfig::from_args(&args)?;
    // First, so that the liveness probe finds the process while it connects.
    let metrics = crate::reconcile::metrics::ImageMetrics::default();
    let health = Arc::new(health::Health::new(&metrics));
    let listen = args.metrics_listen;
    let at = health.clone().serve(listen).await.map_err(|e| Error::Listen(listen, e))?;
    tracing::info!(%at, "serving /healthz, /readyz and /metrics");
    let client = Client::try_default().await?;
    let store = args.store.open().await?;
    let fetcher = Fetcher::new(args.images.fetch_config(Some(args.allow_file_sources.clone())))?;
    let core = ImageContext {
        store,
        fetcher,
        fetch_slots: Arc::new(Semaphore::new(args.images.max_concurrent_fetches.max(1))),
        policy: args.images.policy(),
        external_url: args.images.external_url.clone(),
        metrics,
        in_flight: Default::default(),
    };
    tracing::info!(store = %core.store.describe(), namespace = ?args.namespace, "controller starting");
    check_crd(&client, &args.namespace).await?;
    health.set_ready();

    if !args.leader_elect {
        return tokio::select! {
            r = run_leader(client, core, args.namespace.clone(), serving) => r,
            () = crate::shutdown::terminated() => Ok(()),
        };
    }
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let lease_ns =
        args.lease_namespace.clone().or_else(|| args.namespace.clone()).unwrap_or_else(|| "default".into());
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &args.lease_name)
        .with_namespace(&lease_ns)
        .with_identity(&identity)
        .with_duration(15)
        .with_grace(5)
        .build()
        .await
        .map_err(|e| Error::Lease(e.to_string()))?;
    let (mut leading, lease_task) = manager.watch().await;
    tracing::info!(lease = %args.lease_name, namespace = %lease_ns, %identity, "waiting for the leader lease");
    // SIGTERM (the pod deleted, a rollout) ends the wait or the leadership: the lease is released
    // below, so another replica takes over at once rather than after the lease expires.
    let mut terminated = std::pin::pin!(crate::shutdown::terminated());
    let acquired = tokio::select! {
        r = async {
            while !*leading.borrow_and_update() {
                leading.changed().await.map_err(|e| Error::Lease(e.to_string()))?;
            }
            Ok::<bool, Error>(true)
        } => r?,
        () = &mut terminated => false,
    };
    let result = if acquired {
        tracing::info!(%identity, "acquired the leader lease");
        tokio::select! {
            r = run_leader(client, core, args.namespace.clone(), serving) => r,
            _ = async { while leading.changed().await.is_ok() && *leading.borrow() {} } => Err(Error::LostLease),
            () = &mut terminated => Ok(()),
        }
    } else {
        Ok(())
    };
    drop(leading);
    let _ = lease_task.await;
    result
}

/// What the leader runs: the controller loop and, when configured, the serving objects' apply
/// loop (which ends with it).
async fn run_leader(
    client: Client,
    core: ImageContext,
    namespace: Option<String>,
    serving: Option<serving::ServingConfig>,
) -> Result<(), Error> {
    /// Stops the apply loop however this future ends (also when dropped on a lost lease).
    struct AbortOnDrop(tokio::task::JoinHandle<()>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let Some(cfg) = serving else { return run_controller(client, core, namespace).await };
    let _apply = AbortOnDrop(tokio::spawn(serving::run(client.clone(), cfg)));
    run_controller(client, core, namespace).await
}

/// One cheap list: the apiserver answers and the OsImage CRD is installed.
async fn check_crd(client: &Client, namespace: &Option<String>) -> Result<(), Error> {
    let api: Api<OsImage> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    api.list(&kube::api::ListParams::default().limit(1)).await.map_err(Error::CrdMissing)?;
    Ok(())
}

/// The controller loop itself (no leader election): used by `run` and by the tests.
pub async fn run_controller(
    client: Client,
    core: ImageContext,
    namespace: Option<String>,
) -> Result<(), Error> {
    let api: Api<OsImage> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    check_crd(&client, &namespace).await?;

    let (images, writer) = reflector::store();
    // The snapshot loop is woken from this same stream, after the store has the change. Every
    // state the watch sees also goes to the registry of running fetches (not through the
    // predicate: a fetch must hear of a deletion or a new generation while its reconcile runs,
    // which is when the controller holds the object's next reconcile back).
    let snapshot_wake = Arc::new(Notify::new());
    let (wake, mut changes) = (snapshot_wake.clone(), triggers::Changes::new(triggers::image_fingerprint()));
    let in_flight = core.in_flight.clone();
    let triggers = reflector(writer, watcher(api, watcher::Config::default().any_semantic()))
        .default_backoff()
        .inspect_ok(move |event| {
            if changes.observe(event) {
                wake.notify_one();
            }
            match event {
                watcher::Event::Apply(o) | watcher::Event::InitApply(o) => in_flight.observe(o),
                watcher::Event::Delete(o) => in_flight.forget(o),
                watcher::Event::Init | watcher::Event::InitDone => {}
            }
        })
        .applied_objects()
        .predicate_filter(wakes, PredicateConfig::default());
    // An OsImage being deleted waits for the SwitchProfiles that use it: the snapshot loop's
    // profile watch wakes exactly those images when a profile stops referencing them.
    let (profile_store, profile_writer) = reflector::store::<SwitchProfile>();
    let (released, released_images) = futures::channel::mpsc::unbounded::<ObjectRef<OsImage>>();
    let watched_images = images.clone();
    let on_released: triggers::Released = Box::new(move |ns, name| {
        let image = ObjectRef::<OsImage>::new(name).within(ns);
        if watched_images.get(&image).is_some_and(|i| i.metadata.deletion_timestamp.is_some()) {
            let _ = released.unbounded_send(image);
        }
    });
    let controller = Controller::for_stream(triggers, images.clone()).reconcile_on(released_images);
    let profile_watch = profiles::ProfileWatch {
        store: profile_store.clone(),
        writer: profile_writer,
        released: Some(on_released),
    };
    let snapshot_loop = profiles::run(
        client.clone(),
        core.store.clone(),
        namespace.clone(),
        images.clone(),
        snapshot_wake,
        profile_watch,
    );
    let snapshots = tokio::spawn(async move {
        if let Err(e) = snapshot_loop.await {
            tracing::error!(error = %e, "the snapshot loop stopped: SwitchProfiles are no longer rendered");
        }
    });
    // NautobotSources: their own controller, beside the images' (nothing when the CRD is absent).
    let nautobot_sources = tokio::spawn(nautobot::run(client.clone(), namespace.clone()));
    let reconciles = core.metrics.reconciles.clone();
    let ctx = Arc::new(Ctx {
        reporter: k8s::KubeReporter::new(client.clone()),
        resolver: RefResolver(k8s::KubeLookup(client.clone())),
        images,
        profiles: profile_store,
        client,
        core,
    });
    controller
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            let result_label = if result.is_ok() { "ok" } else { "error" };
            reconciles.get_or_create(&Outcome { result: result_label }).inc();
            async move {
                match result {
                    Ok((obj, _)) => tracing::debug!(object = %obj.name, "reconciled"),
                    // Already logged by `error_policy`, with the object.
                    Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                    Err(e) => tracing::warn!(error = %e, "controller error"),
                }
            }
        })
        .await;
    snapshots.abort();
    nautobot_sources.abort();
    Ok(())
}

/// What of an OsImage wakes the reconciler: the spec (generation), deletion, the finalizers (the
/// finalizer helper waits for its own patch) and the retry annotation. Not the status: the
/// controller's own status writes must not cut a backoff short or start a storm.
fn wakes(image: &OsImage) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let meta = &image.metadata;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    meta.generation.hash(&mut h);
    meta.deletion_timestamp.is_some().hash(&mut h);
    meta.finalizers.hash(&mut h);
    meta.annotations.as_ref().and_then(|a| a.get(RETRY_ANNOTATION)).hash(&mut h);
    Some(h.finish())
}

async fn reconcile(image: Arc<OsImage>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if image.metadata.deletion_timestamp.is_some()
        && image.metadata.finalizers.iter().flatten().any(|f| f == FINALIZER)
    {
        // Deciding "no profile uses it" from a cache not yet filled would delete a used image.
        crate::watch::filled(&ctx.profiles)
            .await
            .map_err(|_| Error::Watch("the SwitchProfile watch ended".into()))?;
        let users = in_use::users(&image, &ctx.profiles.state());
        if !users.is_empty() {
            // Keep the finalizer: the image stays stored and served. The profile watch wakes
            // this image when a profile stops using it.
            in_use::report_held(&image, &users, &ctx.reporter).await?;
            return Ok(Action::await_change());
        }
    }
    let ns = image.metadata.namespace.clone().unwrap_or_default();
    let api: Api<OsImage> = Api::namespaced(ctx.client.clone(), &ns);
    let c = ctx.clone();
    finalizer(&api, FINALIZER, image, |event| async move {
        let others = c.images.state();
        match event {
            Finalizer::Apply(image) => {
                let next = c.core.reconcile(&image, &others, &c.reporter, &c.resolver).await?;
                Ok(match next {
                    Next::Resync(d) | Next::Retry(d) => Action::requeue(d),
                    Next::Stalled => Action::await_change(),
                })
            }
            Finalizer::Cleanup(image) => {
                c.core.cleanup(&image, &others, &c.reporter).await?;
                tracing::info!(
                    namespace = image.metadata.namespace.as_deref().unwrap_or_default(),
                    name = image.metadata.name.as_deref().unwrap_or_default(),
                    generation = image.metadata.generation.unwrap_or_default(),
                    reason = "Deleted",
                    deletion_policy = ?image.spec.deletion_policy,
                    "OsImage deleted: store cleaned up per deletionPolicy, finalizer released"
                );
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

fn error_policy(image: Arc<OsImage>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    const AGAIN: Duration = Duration::from_secs(5);
    tracing::warn!(
        namespace = image.metadata.namespace.as_deref().unwrap_or_default(),
        name = image.metadata.name.as_deref().unwrap_or_default(),
        generation = image.metadata.generation.unwrap_or_default(),
        error = %error,
        label = error.metric_label(),
        retry_in_seconds = AGAIN.as_secs(),
        "OsImage reconcile error; will retry"
    );
    Action::requeue(AGAIN)
}

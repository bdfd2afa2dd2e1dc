//! SwitchProfiles (and the Switches that pin one or carry values of their own) → the device
//! snapshot, in the cluster. One debounced loop, woken by [`super::triggers`] only for changes
//! that can alter the snapshot or a status (a profile's spec, such a Switch's spec, an OsImage
//! becoming Ready or not, the data of a referenced ConfigMap or Secret), and once
//! a minute: it runs the shared pipeline ([`profiles::rebuild`]) over the watch caches (no API
//! reads), which publishes the snapshot only when its content changed and hands over each
//! profile's status (`Ready`, `Stalled`, `Conflict`, match summary) only when it differs from the
//! one the profile has. [`KubeProfileReporter`] server-side applies it unless it is the one we last
//! wrote (while the cache has not caught up), and never to a profile being deleted or gone.
//! `status.devices` belongs to the device server (field manager `ztp-operator-server`) and
//! `status.switches` to the counts beside this loop ([`counts`], from the same Switch cache): the
//! pipeline's applies never carry them, so no writer clobbers another.

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client, runtime::reflector};
use tokio::sync::Notify;

use super::{
    Error, counts,
    k8s::{CacheLookup, KubeProfileReporter},
    triggers,
};
use crate::{
    api::{OsImage, Switch, SwitchProfile},
    reconcile::profiles,
    store::Store,
};

/// `K` in `namespace`, or in every namespace.
pub(super) fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
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
    let (switches, switch_writer) = reflector::store::<Switch>();
    let _tasks = Tasks(vec![
        tokio::spawn(triggers::follow_observed(
            api::<SwitchProfile>(&client, &namespace),
            profile_writer,
            triggers::profile_fingerprint(),
            wake.clone(),
            Some(observer),
            |_| {},
        )),
        tokio::spawn(triggers::follow_observed(
            api::<Switch>(&client, &namespace),
            switch_writer,
            triggers::switch_fingerprint(),
            wake.clone(),
            None,
            triggers::trim_switch,
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
    ready("SwitchProfiles", crate::watch::filled(&profiles)).await?;
    ready("ConfigMaps", crate::watch::filled(&config_maps)).await?;
    ready("Secrets", crate::watch::filled(&secrets)).await?;
    ready("Switches", crate::watch::filled(&switches)).await?;
    ready("OsImages", crate::watch::filled(&images)).await?;
    tracing::info!("snapshot loop: every watch cache is filled");
    let _counts = Tasks(vec![tokio::spawn(counts::run(client.clone(), profiles.clone(), switches.clone()))]);
    let lookup = CacheLookup { config_maps, secrets };
    let reporter = KubeProfileReporter::new(client, profiles.clone(), switches.clone());
    let mut resync = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = resync.tick() => reporter.forget_written(),
        }
        // Debounce: a burst of changes (a Git sync) makes one rebuild; the notifications it
        // brings collapse into one.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (now_profiles, now_switches) = (profiles.state(), switches.state());
        profiles::rebuild(&store, &now_profiles, &now_switches, &images.state(), &lookup, &reporter).await;
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

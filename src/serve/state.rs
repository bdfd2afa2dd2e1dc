//! What the server answers from: the current snapshot with its device index, and the last good
//! manifest. A background task polls the store and swaps in a new snapshot atomically: requests in
//! flight keep the `Arc` they started with.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use crate::{
    profile::{index::DeviceIndex, publish, snapshot::Snapshot},
    store::{Manifest, Store},
};

/// One loaded snapshot and its index (built once per snapshot).
pub struct Loaded {
    pub snapshot: Snapshot,
    pub index: DeviceIndex,
}

/// Shared server state.
pub struct ServerState {
    pub store: Store,
    /// Base URL devices reach this server at (for URLs inside ZTP JSON and scripts).
    pub external_url: String,
    current: RwLock<Option<Arc<Loaded>>>,
    manifest: RwLock<Arc<Manifest>>,
}

impl ServerState {
    pub fn new(store: Store, external_url: String) -> Self {
        Self {
            store,
            external_url: external_url.trim_end_matches('/').to_owned(),
            current: RwLock::new(None),
            manifest: RwLock::new(Arc::new(Manifest::default())),
        }
    }

    /// The current snapshot (None until the first one is loaded).
    pub fn loaded(&self) -> Option<Arc<Loaded>> {
        self.current.read().map(|g| g.clone()).unwrap_or_default()
    }

    /// The last manifest that parsed.
    pub fn manifest(&self) -> Arc<Manifest> {
        self.manifest.read().map(|g| g.clone()).unwrap_or_default()
    }

    /// Installs a snapshot (what the reloader does; standalone and tests may call it directly).
    pub fn install(&self, snapshot: Snapshot) {
        let index = DeviceIndex::build(&snapshot);
        let loaded = Arc::new(Loaded { snapshot, index });
        if let Ok(mut g) = self.current.write() {
            *g = Some(loaded);
        }
    }

    /// One reload step: re-read the manifest (keeping the last good one if it is broken) and, if
    /// the current snapshot changed, load and swap it in.
    pub async fn reload(&self) {
        let manifest = match self.store.manifest().await {
            Ok(m) => Arc::new(m),
            Err(e) => {
                tracing::warn!(error = %e, "manifest unreadable; serving the last good one");
                return;
            }
        };
        if let Ok(mut g) = self.manifest.write() {
            *g = manifest.clone();
        }
        let Some(entry) = publish::current_entry(&manifest) else {
            // Nothing published yet: no profiles, so every device gets "not for you".
            if self.loaded().is_none() {
                self.install(Snapshot {
                    format: crate::profile::snapshot::SNAPSHOT_FORMAT,
                    ..Snapshot::default()
                });
            }
            return;
        };
        if self.loaded().is_some_and(|l| l.snapshot.version == entry.version) {
            return;
        }
        match publish::load(&self.store, entry).await {
            Ok(snapshot) => {
                tracing::info!(version = %snapshot.version, profiles = snapshot.profiles.len(), "snapshot loaded");
                self.install(snapshot);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot load the current snapshot; keeping the previous one")
            }
        }
    }

    /// Reloads every `interval` forever.
    pub async fn reload_forever(self: Arc<Self>, interval: Duration) {
        loop {
            self.reload().await;
            tokio::time::sleep(interval).await;
        }
    }
}

//! What the server answers from: the current snapshot with its device index, and the last good
//! manifest. A background task polls the store and swaps in a new snapshot atomically: requests in
//! flight keep the `Arc` they started with.

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use bytes::Bytes;

use crate::{
    profile::{identity::Family, index::DeviceIndex, publish, snapshot::Snapshot},
    store::{Manifest, Store},
};

/// One loaded snapshot, its index (built once per snapshot) and what was rendered from it.
pub struct Loaded {
    pub snapshot: Snapshot,
    pub index: DeviceIndex,
    /// ZTP JSON documents, by family, profile and serial number (they depend on nothing else).
    pub ztp_json: RenderedCache,
}

/// Which document a [`RenderedCache`] entry is: the family (it names the URLs), the profile (an
/// index into the snapshot) and the device's serial number.
pub type RenderedKey = (Family, usize, String);

/// Documents rendered from one snapshot, kept with it: a new snapshot starts with an empty cache,
/// so nothing stale is ever served. Bounded: past [`RenderedCache::MAX_ENTRIES`] documents are
/// rendered per request and not kept (a model-default profile matches any serial number).
#[derive(Default)]
pub struct RenderedCache {
    entries: RwLock<HashMap<RenderedKey, Bytes>>,
}

impl RenderedCache {
    /// Documents kept at most (about 0.5 KiB each for a typical ZTP JSON).
    pub const MAX_ENTRIES: usize = 65_536;

    /// The document for `key`, rendered by `render` the first time (an error is not kept).
    pub fn get_or_render<E>(
        &self,
        key: RenderedKey,
        render: impl FnOnce() -> Result<Bytes, E>,
    ) -> Result<Bytes, E> {
        let cached = self.entries.read().unwrap_or_else(PoisonError::into_inner).get(&key).cloned();
        if let Some(body) = cached {
            return Ok(body);
        }
        let body = render()?;
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if entries.len() < Self::MAX_ENTRIES {
            entries.insert(key, body.clone());
        }
        Ok(body)
    }

    /// Documents kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(PoisonError::into_inner).len()
    }
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
        let loaded = Arc::new(Loaded { snapshot, index, ztp_json: RenderedCache::default() });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rendered_cache_keeps_documents_but_not_errors_and_is_bounded() {
        let cache = RenderedCache::default();
        let key = |n: usize| (Family::Nvos, n, format!("SN{n}"));
        let failed: Result<Bytes, &str> = cache.get_or_render(key(0), || Err("undefined variable"));
        assert_eq!(failed, Err("undefined variable"));
        assert_eq!(cache.len(), 0, "an error is rendered again next time");

        let first = cache.get_or_render(key(0), || Ok::<_, ()>(Bytes::from_static(b"one")));
        let again = cache.get_or_render(key(0), || Ok::<_, ()>(Bytes::from_static(b"two")));
        assert_eq!((first, again), (Ok(Bytes::from_static(b"one")), Ok(Bytes::from_static(b"one"))));
        let sonic =
            cache.get_or_render((Family::Sonic, 0, "SN0".into()), || Ok::<_, ()>(Bytes::from_static(b"s")));
        assert_eq!(sonic, Ok(Bytes::from_static(b"s")), "the family is part of the key");

        for n in 1..RenderedCache::MAX_ENTRIES + 10 {
            let _ = cache.get_or_render(key(n), || Ok::<_, ()>(Bytes::new()));
        }
        assert_eq!(cache.len(), RenderedCache::MAX_ENTRIES);
        let past = cache.get_or_render(key(usize::MAX), || Ok::<_, ()>(Bytes::from_static(b"late")));
        assert_eq!(past, Ok(Bytes::from_static(b"late")), "past the bound: rendered, not kept");
        assert_eq!(cache.len(), RenderedCache::MAX_ENTRIES);
    }
}

//! What the server answers from: the current snapshot with its device index, and the last good
//! manifest. A background task polls the store and swaps in a new snapshot atomically: requests in
//! flight keep the `Arc` they started with.

use std::{
    collections::VecDeque,
    hash::{Hash, Hasher},
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::Bytes;

use crate::{
    profile::{
        identity::{Family, SentHeaders, header_text},
        index::DeviceIndex,
        publish,
        snapshot::Snapshot,
    },
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
/// index into the snapshot), the device's serial number and the base URL its URLs start with.
/// Borrowed: a request looks its document up without allocating; the cache keeps an owned copy
/// ([`StoredKey`]) only of what it renders.
#[derive(Debug, Clone, Copy)]
pub struct RenderedKey<'a> {
    pub family: Family,
    pub profile: usize,
    pub serial: &'a str,
    pub base: &'a str,
}

impl Hash for RenderedKey<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.family, self.profile, self.serial, self.base).hash(state);
    }
}

/// A [`RenderedKey`] as the cache keeps it (hashed and compared as the borrowed one).
#[derive(Debug, Clone, PartialEq, Eq)]
struct StoredKey {
    family: Family,
    profile: usize,
    serial: Box<str>,
    base: Box<str>,
}

impl StoredKey {
    fn borrowed(&self) -> RenderedKey<'_> {
        RenderedKey { family: self.family, profile: self.profile, serial: &self.serial, base: &self.base }
    }
}

impl Hash for StoredKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.borrowed().hash(state);
    }
}

impl hashbrown::Equivalent<StoredKey> for RenderedKey<'_> {
    fn equivalent(&self, key: &StoredKey) -> bool {
        let other = key.borrowed();
        (self.family, self.profile, self.serial, self.base)
            == (other.family, other.profile, other.serial, other.base)
    }
}

/// Where devices reach this server: the start of every URL inside a ZTP JSON or script, and
/// templates' `server_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseUrl {
    /// `--external-url`: always this (without a trailing `/`).
    Fixed(String),
    /// `http://` + the `Host` the request was sent to: the address the device actually reached.
    /// A request without a usable `Host` gets `fallback` (the listen address, unless that is
    /// `0.0.0.0` / `::`, which no device can reach).
    FromHost { fallback: Option<String> },
}

impl BaseUrl {
    /// `--external-url` when given; otherwise the request's `Host`, then the listen address.
    pub fn new(external_url: Option<&str>, listen: std::net::SocketAddr) -> Self {
        match external_url {
            Some(url) => BaseUrl::Fixed(url.trim_end_matches('/').to_owned()),
            None => BaseUrl::FromHost {
                fallback: (!listen.ip().is_unspecified()).then(|| format!("http://{listen}")),
            },
        }
    }

    /// The base URL for a request with these headers; `None` when it cannot be told (no usable
    /// `Host` and no fallback).
    pub fn for_request(&self, headers: &impl SentHeaders) -> Option<String> {
        match self {
            BaseUrl::Fixed(url) => Some(url.clone()),
            BaseUrl::FromHost { fallback } => headers
                .first("host")
                .and_then(header_text)
                .filter(|h| is_authority(h))
                .map(|h| format!("http://{h}"))
                .or_else(|| fallback.clone()),
        }
    }
}

/// Whether `host` is a plain `host[:port]` (a name, IPv4 or `[IPv6]`): what may go into a URL and a
/// rendered script unquoted. Anything else (user info, paths, spaces, quotes) is not used.
fn is_authority(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 261
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        && host.parse::<axum::http::uri::Authority>().is_ok()
}

/// Documents rendered from one snapshot, kept with it: a new snapshot starts with an empty cache,
/// so nothing stale is ever served. Bounded by entries ([`RenderedCache::MAX_ENTRIES`]) and by
/// bytes ([`RenderedCache::MAX_BYTES`], keys and documents counted): past either, the oldest
/// documents are forgotten (and rendered again when asked for). A model-default profile matches
/// any serial number, so the cache must not grow with the serials devices make up.
#[derive(Default)]
pub struct RenderedCache {
    inner: RwLock<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    /// hashbrown's map, for lookups by the borrowed key (and its fast seeded hasher: serial
    /// numbers come from devices, so the seed is random, as std's).
    entries: hashbrown::HashMap<StoredKey, Bytes>,
    /// Keys in insertion order, oldest first.
    order: VecDeque<StoredKey>,
    /// Bytes of every key and document kept.
    bytes: usize,
}

/// What one entry costs, as [`RenderedCache::MAX_BYTES`] counts it.
fn entry_bytes(key: &StoredKey, body: &Bytes) -> usize {
    key.serial.len() + key.base.len() + body.len() + std::mem::size_of::<(StoredKey, Bytes)>()
}

impl RenderedCache {
    /// Documents kept at most (about 0.5 KiB each for a typical ZTP JSON).
    pub const MAX_ENTRIES: usize = 65_536;
    /// Bytes kept at most (keys, documents and bookkeeping).
    pub const MAX_BYTES: usize = 32 * 1024 * 1024;

    /// The document for `key`, rendered by `render` the first time (an error is not kept).
    pub fn get_or_render<E>(
        &self,
        key: RenderedKey<'_>,
        render: impl FnOnce() -> Result<Bytes, E>,
    ) -> Result<Bytes, E> {
        let cached = self.inner.read().unwrap_or_else(PoisonError::into_inner).entries.get(&key).cloned();
        if let Some(body) = cached {
            return Ok(body);
        }
        let body = render()?;
        let key = StoredKey {
            family: key.family,
            profile: key.profile,
            serial: key.serial.into(),
            base: key.base.into(),
        };
        let size = entry_bytes(&key, &body);
        if size > Self::MAX_BYTES {
            return Ok(body);
        }
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if inner.entries.contains_key(&key.borrowed()) {
            return Ok(body);
        }
        while inner.entries.len() >= Self::MAX_ENTRIES || inner.bytes + size > Self::MAX_BYTES {
            let Some(oldest) = inner.order.pop_front() else { break };
            if let Some(old) = inner.entries.remove(&oldest) {
                inner.bytes -= entry_bytes(&oldest, &old);
            }
        }
        inner.order.push_back(key.clone());
        inner.entries.insert(key, body.clone());
        inner.bytes += size;
        Ok(body)
    }

    /// Documents kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(PoisonError::into_inner).entries.len()
    }

    /// Bytes kept.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.inner.read().unwrap_or_else(PoisonError::into_inner).bytes
    }
}

/// Shared server state.
pub struct ServerState {
    pub store: Store,
    /// Where devices reach this server (for URLs inside ZTP JSON and scripts).
    pub base_url: BaseUrl,
    /// Read by every device request on every thread: an `ArcSwap`, whose reads write no shared
    /// lock word (an `RwLock`'s did, twice a request, bouncing its cache line between cores).
    current: ArcSwapOption<Loaded>,
    manifest: ArcSwap<Manifest>,
}

impl ServerState {
    pub fn new(store: Store, base_url: BaseUrl) -> Self {
        Self {
            store,
            base_url,
            current: ArcSwapOption::empty(),
            manifest: ArcSwap::from_pointee(Manifest::default()),
        }
    }

    /// The current snapshot (None until the first one is loaded).
    pub fn loaded(&self) -> Option<Arc<Loaded>> {
        self.current.load_full()
    }

    /// The last manifest that parsed.
    pub fn manifest(&self) -> Arc<Manifest> {
        self.manifest.load_full()
    }

    /// Installs a snapshot (what the reloader does; standalone and tests may call it directly).
    pub fn install(&self, snapshot: Snapshot) {
        let index = DeviceIndex::build(&snapshot);
        let loaded = Arc::new(Loaded { snapshot, index, ztp_json: RenderedCache::default() });
        self.current.store(Some(loaded));
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
        self.manifest.store(manifest.clone());
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
    use axum::http::{HeaderMap, header};

    #[test]
    fn the_base_url_is_the_external_url_or_the_host_the_device_reached() {
        let host = |h: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, h.parse().expect("header value"));
            m
        };
        let listen = |s: &str| s.parse::<std::net::SocketAddr>().expect("addr");
        let fixed = BaseUrl::new(Some("http://ztp.example.net/"), listen("0.0.0.0:8080"));
        assert_eq!(fixed.for_request(&host("10.0.0.9:8080")).as_deref(), Some("http://ztp.example.net"));

        let any = BaseUrl::new(None, listen("0.0.0.0:8080"));
        assert_eq!(any.for_request(&host("10.0.0.9:8080")).as_deref(), Some("http://10.0.0.9:8080"));
        assert_eq!(any.for_request(&host("ztp.lab")).as_deref(), Some("http://ztp.lab"));
        assert_eq!(any.for_request(&host("[fd00::1]:8080")).as_deref(), Some("http://[fd00::1]:8080"));
        assert_eq!(any.for_request(&HeaderMap::new()), None, "0.0.0.0 is no address to give a switch");
        for hostile in ["evil@10.0.0.9", "a b", "x;reboot", "10.0.0.9/path", "'quoted'", "$(id)", ""] {
            assert_eq!(any.for_request(&host(hostile)), None, "{hostile:?}");
        }

        let one = BaseUrl::new(None, listen("127.0.0.1:8080"));
        assert_eq!(one.for_request(&HeaderMap::new()).as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!(one.for_request(&host("a b")).as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!(one.for_request(&host("localhost:8080")).as_deref(), Some("http://localhost:8080"));
    }

    #[test]
    fn the_rendered_cache_keeps_documents_but_not_errors_and_is_bounded() {
        let cache = RenderedCache::default();
        let serials: Vec<String> = (0..RenderedCache::MAX_ENTRIES + 10).map(|n| format!("SN{n}")).collect();
        let late = format!("SN{}", usize::MAX);
        let key = |n: usize| RenderedKey {
            family: Family::Nvos,
            profile: n,
            serial: serials.get(n).unwrap_or(&late),
            base: "http://a",
        };
        let failed: Result<Bytes, &str> = cache.get_or_render(key(0), || Err("undefined variable"));
        assert_eq!(failed, Err("undefined variable"));
        assert_eq!(cache.len(), 0, "an error is rendered again next time");

        let first = cache.get_or_render(key(0), || Ok::<_, ()>(Bytes::from_static(b"one")));
        let again = cache.get_or_render(key(0), || Ok::<_, ()>(Bytes::from_static(b"two")));
        assert_eq!((first, again), (Ok(Bytes::from_static(b"one")), Ok(Bytes::from_static(b"one"))));
        let sonic = cache.get_or_render(RenderedKey { family: Family::Sonic, ..key(0) }, || {
            Ok::<_, ()>(Bytes::from_static(b"s"))
        });
        assert_eq!(sonic, Ok(Bytes::from_static(b"s")), "the family is part of the key");
        let other_base = cache.get_or_render(RenderedKey { base: "http://b", ..key(0) }, || {
            Ok::<_, ()>(Bytes::from_static(b"b"))
        });
        assert_eq!(other_base, Ok(Bytes::from_static(b"b")), "the base URL is part of the key");

        for n in 1..RenderedCache::MAX_ENTRIES + 10 {
            let _ = cache.get_or_render(key(n), || Ok::<_, ()>(Bytes::new()));
        }
        assert_eq!(cache.len(), RenderedCache::MAX_ENTRIES);
        let past = cache.get_or_render(key(usize::MAX), || Ok::<_, ()>(Bytes::from_static(b"late")));
        assert_eq!(past, Ok(Bytes::from_static(b"late")), "past the bound: rendered");
        assert_eq!(cache.len(), RenderedCache::MAX_ENTRIES);
        let again = cache.get_or_render(key(usize::MAX), || Ok::<_, ()>(Bytes::from_static(b"new")));
        assert_eq!(again, Ok(Bytes::from_static(b"late")), "the newest is kept");
        let oldest = cache.get_or_render(key(0), || Ok::<_, ()>(Bytes::from_static(b"again")));
        assert_eq!(oldest, Ok(Bytes::from_static(b"again")), "the oldest was forgotten");
    }

    #[test]
    fn the_rendered_cache_is_bounded_by_bytes_and_forgets_the_oldest() {
        let cache = RenderedCache::default();
        let serials: Vec<String> = (0..=5_000).map(|n| format!("SN{n}")).collect();
        let key = |n: usize| RenderedKey {
            family: Family::Nvos,
            profile: 0,
            serial: &serials[n],
            base: "http://a",
        };
        let doc = Bytes::from(vec![b'x'; 100 * 1024]);
        for n in 0..1_000 {
            let _ = cache.get_or_render(key(n), || Ok::<_, ()>(doc.clone()));
            assert!(cache.bytes() <= RenderedCache::MAX_BYTES, "{} bytes after {n}", cache.bytes());
        }
        assert!(cache.len() < 1_000 && cache.len() > 100, "{} kept", cache.len());
        let newest = cache.get_or_render(key(999), || Ok::<_, ()>(Bytes::from_static(b"re-rendered")));
        assert_eq!(newest, Ok(doc.clone()), "the newest is still there");
        let first = cache.get_or_render(key(0), || Ok::<_, ()>(Bytes::from_static(b"re-rendered")));
        assert_eq!(first, Ok(Bytes::from_static(b"re-rendered")), "the oldest was forgotten");
        // A document larger than the whole bound is served, never kept.
        let huge = Bytes::from(vec![b'y'; RenderedCache::MAX_BYTES + 1]);
        let before = cache.bytes();
        assert_eq!(cache.get_or_render(key(5_000), || Ok::<_, ()>(huge.clone())), Ok(huge));
        assert_eq!(cache.bytes(), before);
    }
}

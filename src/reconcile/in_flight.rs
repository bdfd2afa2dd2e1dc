//! Running fetches, and the one way to stop them: a deletion or a new spec.
//!
//! Why a registry: kube's `Controller` never runs two reconciles of one object at once, so while
//! a fetch runs inside a reconcile, the wake-up that a `kubectl delete` or a spec change causes
//! waits for that reconcile to end — for a large image, the whole download. The news therefore
//! has to reach the fetch from outside the reconcile: the controller's watch stream reports every
//! OsImage it sees to [`InFlight::observe`] (and its removal to [`InFlight::forget`]); a fetch
//! registers itself with [`InFlight::start`] and selects on [`FetchGuard::cancelled`]. The
//! registry remembers the latest generation seen per object (by uid), so a change seen *before*
//! the fetch registered cancels it at once as well: whichever comes first, the lock orders them.
//!
//! Without a watch feeding it (standalone), nothing is ever cancelled. An entry lives until the
//! watch reports the object deleted; entries of objects deleted while the watch was down stay (a
//! uid and two numbers each) until the process ends.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError},
};

use tokio_util::sync::CancellationToken;

use crate::api::OsImage;

/// Why a running fetch was stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancelled {
    /// The OsImage is being deleted (or is gone).
    Deleted,
    /// The spec changed: a new generation replaces the one being fetched.
    SpecChanged { generation: Option<i64> },
}

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Deleted => f.write_str("the OsImage is being deleted"),
            Self::SpecChanged { generation: Some(g) } => write!(f, "the spec changed (generation {g})"),
            Self::SpecChanged { generation: None } => f.write_str("the spec changed"),
        }
    }
}

/// What the watch last said about one object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    pub generation: Option<i64>,
    pub deleting: bool,
}

/// Whether a fetch of generation `fetching` must stop, given what was seen last. Pure: the one
/// place the decision is made.
pub fn stop_reason(fetching: Option<i64>, seen: Seen) -> Option<Cancelled> {
    if seen.deleting {
        return Some(Cancelled::Deleted);
    }
    // Generations only grow; an older one is a stale event, not a change.
    match (fetching, seen.generation) {
        (Some(f), Some(s)) if s > f => Some(Cancelled::SpecChanged { generation: Some(s) }),
        _ => None,
    }
}

struct Running {
    id: u64,
    generation: Option<i64>,
    token: CancellationToken,
    why: Arc<OnceLock<Cancelled>>,
}

impl Running {
    fn cancel(&self, why: Cancelled) {
        let _ = self.why.set(why);
        self.token.cancel();
    }
}

#[derive(Default)]
struct Entry {
    seen: Option<Seen>,
    running: Option<Running>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    next_id: u64,
}

/// The registry of running fetches, shared (cheap to clone).
#[derive(Clone, Default)]
pub struct InFlight(Arc<Mutex<Inner>>);

fn uid_of(image: &OsImage) -> Option<&str> {
    image.metadata.uid.as_deref()
}

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The watch saw this state of an object: stops its fetch if that fetch is now obsolete.
    pub fn observe(&self, image: &OsImage) {
        let Some(uid) = uid_of(image) else { return };
        let seen = Seen {
            generation: image.metadata.generation,
            deleting: image.metadata.deletion_timestamp.is_some(),
        };
        let mut inner = self.lock();
        let entry = inner.entries.entry(uid.to_owned()).or_default();
        entry.seen = Some(seen);
        if let Some(running) = &entry.running
            && let Some(why) = stop_reason(running.generation, seen)
        {
            running.cancel(why);
        }
    }

    /// The watch saw the object go: stops its fetch and forgets it.
    pub fn forget(&self, image: &OsImage) {
        let Some(uid) = uid_of(image) else { return };
        if let Some(entry) = self.lock().entries.remove(uid)
            && let Some(running) = entry.running
        {
            running.cancel(Cancelled::Deleted);
        }
    }

    /// A fetch of `image` (its generation) starts; the guard tells when it must stop and
    /// unregisters it when dropped. Already cancelled if the watch has seen a newer state.
    pub fn start(&self, image: &OsImage) -> FetchGuard {
        let token = CancellationToken::new();
        let why = Arc::new(OnceLock::new());
        let generation = image.metadata.generation;
        let Some(uid) = uid_of(image) else {
            return FetchGuard { registry: None, uid: String::new(), id: 0, token, why };
        };
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        let entry = inner.entries.entry(uid.to_owned()).or_default();
        let running = Running { id, generation, token: token.clone(), why: why.clone() };
        if let Some(reason) = entry.seen.and_then(|seen| stop_reason(generation, seen)) {
            running.cancel(reason);
        }
        if let Some(previous) = entry.running.replace(running) {
            // Cannot happen with one reconcile per object at a time; if it does, the older
            // fetch is the obsolete one.
            previous.cancel(Cancelled::SpecChanged { generation });
        }
        FetchGuard { registry: Some(self.clone()), uid: uid.to_owned(), id, token, why }
    }

    /// Fetches registered now (for tests and diagnostics).
    pub fn running(&self) -> usize {
        self.lock().entries.values().filter(|e| e.running.is_some()).count()
    }
}

/// One registered fetch.
pub struct FetchGuard {
    registry: Option<InFlight>,
    uid: String,
    id: u64,
    token: CancellationToken,
    why: Arc<OnceLock<Cancelled>>,
}

impl FetchGuard {
    /// Resolves when the fetch must stop, with the reason.
    pub async fn cancelled(&self) -> Cancelled {
        self.token.cancelled().await;
        self.why.get().cloned().unwrap_or(Cancelled::Deleted)
    }
}

impl Drop for FetchGuard {
    fn drop(&mut self) {
        let Some(registry) = &self.registry else { return };
        let mut inner = registry.lock();
        if let Some(entry) = inner.entries.get_mut(&self.uid)
            && entry.running.as_ref().is_some_and(|r| r.id == self.id)
        {
            entry.running = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(uid: &str, generation: i64, deleting: bool) -> OsImage {
        let mut o: OsImage = serde_json::from_value(serde_json::json!({
            "apiVersion": "ztp.netops.dev/v1alpha1", "kind": "OsImage",
            "metadata": {"name": "a", "namespace": "n", "uid": uid, "generation": generation},
            "spec": {"platform": "p", "version": "1", "source": {"url": {"url": "http://h/x"}},
                     "sha256": "0".repeat(64)}
        }))
        .expect("OsImage");
        if deleting {
            o.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        }
        o
    }

    fn now_or_never(guard: &FetchGuard) -> Option<Cancelled> {
        futures::FutureExt::now_or_never(guard.cancelled())
    }

    #[test]
    fn the_decision() {
        let seen = |generation, deleting| Seen { generation: Some(generation), deleting };
        assert_eq!(stop_reason(Some(3), seen(3, false)), None);
        assert_eq!(stop_reason(Some(3), seen(2, false)), None, "a stale event changes nothing");
        assert_eq!(
            stop_reason(Some(3), seen(4, false)),
            Some(Cancelled::SpecChanged { generation: Some(4) })
        );
        assert_eq!(stop_reason(Some(3), seen(3, true)), Some(Cancelled::Deleted));
        assert_eq!(stop_reason(Some(3), seen(4, true)), Some(Cancelled::Deleted), "deletion wins");
    }

    #[test]
    fn a_change_seen_during_the_fetch_stops_it() {
        let reg = InFlight::default();
        reg.observe(&image("u", 1, false));
        let guard = reg.start(&image("u", 1, false));
        reg.observe(&image("u", 1, false));
        assert_eq!(now_or_never(&guard), None);
        reg.observe(&image("u", 2, false));
        assert_eq!(now_or_never(&guard), Some(Cancelled::SpecChanged { generation: Some(2) }));
    }

    #[test]
    fn a_change_seen_before_the_fetch_stops_it_at_once() {
        let reg = InFlight::default();
        reg.observe(&image("u", 1, true));
        let guard = reg.start(&image("u", 1, false));
        assert_eq!(now_or_never(&guard), Some(Cancelled::Deleted));
    }

    #[test]
    fn other_objects_and_finished_fetches_are_left_alone() {
        let reg = InFlight::default();
        let guard = reg.start(&image("u", 1, false));
        reg.observe(&image("v", 9, true));
        assert_eq!(now_or_never(&guard), None);
        assert_eq!(reg.running(), 1);
        drop(guard);
        assert_eq!(reg.running(), 0);
        let again = reg.start(&image("u", 1, false));
        reg.forget(&image("u", 1, false));
        assert_eq!(now_or_never(&again), Some(Cancelled::Deleted));
    }
}

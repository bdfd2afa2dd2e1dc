//! Standalone's scheduler, pure: which OsImage to reconcile when, one reconcile per image at a
//! time, and when a `--once` run is over. The loop in [`super::run`] does the work and the
//! waiting; this only keeps the books.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use crate::reconcile::osimage::Next;

/// Look again after this long when nothing else says when (a reconcile that never reports back,
/// or a settled image without a resync).
const FALLBACK: Duration = Duration::from_secs(3600);
/// A stalled image is looked at again after this long (a human changes the folder meanwhile,
/// which resets everything).
const STALLED: Duration = Duration::from_secs(3600 * 24);

/// Per image (`namespace/name`): when it is due, whether it settled (and Ready or not), and
/// whether a reconcile of it is running.
#[derive(Debug, Default)]
pub(super) struct Schedule {
    due: HashMap<String, Instant>,
    settled: HashMap<String, bool>,
    in_flight: HashSet<String>,
}

impl Schedule {
    /// Whether `key` should be reconciled at `now` (not running, and due); if so it is marked
    /// running.
    pub(super) fn start(&mut self, key: &str, now: Instant) -> bool {
        if self.in_flight.contains(key) || self.due.get(key).is_some_and(|t| *t > now) {
            return false;
        }
        self.in_flight.insert(key.to_owned());
        self.due.insert(key.to_owned(), now + FALLBACK);
        true
    }

    /// Whether a reconcile of `key` is running.
    pub(super) fn running(&self, key: &str) -> bool {
        self.in_flight.contains(key)
    }

    /// The reconcile of `key` ended at `now` with `next`, or (`None`) with a status it could not
    /// report, which is tried again after `poll`.
    pub(super) fn finished(&mut self, key: &str, next: Option<Next>, now: Instant, poll: Duration) {
        self.in_flight.remove(key);
        let wait = match next {
            Some(Next::Resync(d)) => {
                self.settled.insert(key.to_owned(), true);
                d
            }
            Some(Next::Stalled) => {
                self.settled.insert(key.to_owned(), false);
                STALLED
            }
            Some(Next::Retry(d)) => {
                self.settled.remove(key);
                d
            }
            None => poll,
        };
        self.due.insert(key.to_owned(), now + wait);
    }

    /// `key` is gone from the folder: forget it.
    pub(super) fn forget(&mut self, key: &str) {
        self.due.remove(key);
        self.settled.remove(key);
    }

    /// The folder changed (new generations, perhaps): every image is due, none settled.
    pub(super) fn reset(&mut self) {
        self.due.clear();
        self.settled.clear();
    }

    /// A `--once` run is over: nothing runs and each of `keys` settled.
    pub(super) fn all_settled<'a>(&self, mut keys: impl Iterator<Item = &'a str>) -> bool {
        self.in_flight.is_empty() && keys.all(|k| self.settled.contains_key(k))
    }

    /// Every image that settled is Ready (the exit status of a `--once` run).
    pub(super) fn all_ready(&self) -> bool {
        self.settled.values().all(|ready| *ready)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLL: Duration = Duration::from_secs(2);

    #[test]
    fn an_image_runs_once_at_a_time_and_waits_until_due() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        assert!(s.start("a", t0));
        assert!(s.running("a"));
        assert!(!s.start("a", t0 + Duration::from_secs(7200)), "started twice");
        s.finished("a", Some(Next::Retry(Duration::from_secs(5))), t0, POLL);
        assert!(!s.running("a"));
        assert!(!s.start("a", t0 + Duration::from_secs(4)), "started before it was due");
        assert!(s.start("a", t0 + Duration::from_secs(5)));
        // A status that could not be written: tried again after the poll interval.
        s.finished("a", None, t0, POLL);
        assert!(!s.start("a", t0 + Duration::from_secs(1)));
        assert!(s.start("a", t0 + POLL));
    }

    #[test]
    fn once_ends_when_every_image_settled_and_says_whether_all_are_ready() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        let keys = ["a", "b"];
        assert!(!s.all_settled(keys.into_iter()));
        assert!(s.start("a", t0) && s.start("b", t0));
        s.finished("a", Some(Next::Resync(Duration::from_secs(600))), t0, POLL);
        assert!(!s.all_settled(keys.into_iter()), "b still runs");
        s.finished("b", Some(Next::Retry(Duration::from_secs(5))), t0, POLL);
        assert!(!s.all_settled(keys.into_iter()), "b retries: not settled");
        assert!(s.start("b", t0 + Duration::from_secs(5)));
        s.finished("b", Some(Next::Stalled), t0, POLL);
        assert!(s.all_settled(keys.into_iter()));
        assert!(!s.all_ready(), "b stalled");
        // A stalled image waits a day; a settled one its resync.
        assert!(!s.start("b", t0 + Duration::from_secs(3600)));
        assert!(s.start("a", t0 + Duration::from_secs(600)));
        // A settled image whose next look fails is not settled any more.
        s.finished("a", Some(Next::Retry(Duration::from_secs(5))), t0, POLL);
        assert!(!s.all_settled(keys.into_iter()), "a retries: not settled");
    }

    #[test]
    fn a_folder_change_makes_everything_due_and_unsettled() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        assert!(s.start("a", t0));
        s.finished("a", Some(Next::Resync(Duration::from_secs(600))), t0, POLL);
        assert!(s.all_settled(["a"].into_iter()) && s.all_ready());
        s.reset();
        assert!(!s.all_settled(["a"].into_iter()));
        assert!(s.start("a", t0), "not due at once after a change");
        s.finished("a", Some(Next::Resync(Duration::from_secs(600))), t0, POLL);
        s.forget("a");
        assert!(s.start("a", t0), "an image that comes back is due at once");
    }
}

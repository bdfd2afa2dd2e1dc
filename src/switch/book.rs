//! What the server saw of each device since its last write, kept in memory: the request path
//! only adds a sighting under a short lock ([`Book::see`]); the writer takes everything
//! pending at each flush ([`Book::take`]) and applies it to the Switch's stored status
//! ([`apply`]), putting back what it could not write ([`Book::requeue`]).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use super::lifecycle::{Event, What, record, refresh, reprovision, whole_seconds};
use crate::api::{DeviceFacts, MatchedProfile, SwitchSpec, SwitchStatus};

/// Devices with something pending at most; past it new devices wait for their next request
/// (counted in a warning at the next flush).
pub const MAX_PENDING_DEVICES: usize = 20_000;
/// Events pending per device at most; past it the oldest are dropped (a device does not make
/// this many distinct steps in one flush interval unless it loops).
pub const MAX_EVENTS_PER_DEVICE: usize = 64;

/// One answered request of a device with a serial number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    pub serial: String,
    /// What the request said of the device.
    pub facts: DeviceFacts,
    /// The profile it matched at the time: `Some(None)` none; `None` not known, for a request
    /// that names the device by its serial alone (a report, the callback: no MAC or model to
    /// match by, so no answer about a profile matching by those).
    pub matched: Option<Option<MatchedProfile>>,
    /// The step it made, if any (an answer that moved it on, or a report).
    pub what: Option<What>,
    pub at: Timestamp,
}

/// What is pending for one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The latest facts (a field the latest request did not carry keeps its earlier value).
    pub facts: DeviceFacts,
    /// The profile of the latest request that could tell (see [`Sighting::matched`]).
    pub matched: Option<Option<MatchedProfile>>,
    /// The latest request; `None` for a Switch touched without one ([`Book::touch`]).
    pub last_seen: Option<Timestamp>,
    /// Steps in the order seen.
    pub events: Vec<Event>,
}

impl Pending {
    fn new(s: Sighting) -> Self {
        let mut p =
            Self { facts: DeviceFacts::default(), matched: None, last_seen: Some(s.at), events: Vec::new() };
        p.add(s);
        p
    }

    fn add(&mut self, s: Sighting) {
        if self.last_seen.is_none_or(|seen| s.at >= seen) {
            merge_facts(&mut self.facts, s.facts);
            self.matched = s.matched.or(self.matched.take());
            self.last_seen = Some(s.at);
        }
        if let Some(what) = s.what {
            if self.events.len() == MAX_EVENTS_PER_DEVICE {
                self.events.remove(0);
            }
            self.events.push(Event { at: s.at, what });
        }
    }

    /// `older` (taken earlier, not written) put back under what came since.
    fn merge_older(&mut self, older: Pending) {
        let mut facts = older.facts;
        merge_facts(&mut facts, std::mem::take(&mut self.facts));
        self.facts = facts;
        if older.last_seen > self.last_seen {
            self.last_seen = older.last_seen;
            self.matched = older.matched.or(self.matched.take());
        } else if self.matched.is_none() {
            self.matched = older.matched;
        }
        let mut events = older.events;
        events.append(&mut self.events);
        let excess = events.len().saturating_sub(MAX_EVENTS_PER_DEVICE);
        events.drain(..excess);
        self.events = events;
    }
}

/// `newer` over `facts`, field by field: what a request did not say keeps its earlier value.
fn merge_facts(facts: &mut DeviceFacts, newer: DeviceFacts) {
    let DeviceFacts { family, model, mac, os_version, address, user_agent } = newer;
    for (old, new) in [
        (&mut facts.family, family),
        (&mut facts.model, model),
        (&mut facts.mac, mac),
        (&mut facts.os_version, os_version),
        (&mut facts.address, address),
        (&mut facts.user_agent, user_agent),
    ] {
        if new.is_some() {
            *old = new;
        }
    }
}

/// Applies what is pending to a Switch's status: the device facts and `lastSeen`, a new
/// `spec.reprovision`, the events in time order, then phase and conditions. `declared` is the
/// profile the Switch's declared serial, MAC and model match, asked for a Switch whose device has
/// said nothing to match by yet. `now` is the time of the write. Returns whether anything changed.
pub fn apply(
    status: &mut SwitchStatus,
    spec: &SwitchSpec,
    generation: Option<i64>,
    pending: &Pending,
    declared: impl FnOnce() -> Option<MatchedProfile>,
    now: Timestamp,
) -> bool {
    let before = status.clone();
    let facts = status.device.get_or_insert_with(Default::default);
    merge_facts(facts, pending.facts.clone());
    if let Some(last_seen) = pending.last_seen.map(whole_seconds)
        && status.last_seen.as_ref().is_none_or(|t| t.0 < last_seen)
    {
        status.last_seen = Some(Time(last_seen));
    }
    reprovision(status, spec, now);
    let mut events: Vec<&Event> = pending.events.iter().collect();
    events.sort_by_key(|e| e.at);
    for e in events {
        record(status, spec.reprovision.as_deref(), e);
    }
    // A device that said nothing to match by keeps the profile it matched before (or, never
    // having said anything, shows what its Switch declares).
    let matched = match &pending.matched {
        Some(m) => m.clone(),
        None if status.matched_profile.is_none() => declared(),
        None => status.matched_profile.clone(),
    };
    refresh(status, spec, generation, matched, now);
    *status != before
}

/// Sightings pending per serial number. Cheap to clone (one shared map); a disabled book records
/// nothing.
#[derive(Debug, Clone, Default)]
pub struct Book {
    inner: Option<Arc<Mutex<Inner>>>,
}

#[derive(Debug, Default)]
struct Inner {
    pending: HashMap<String, Pending>,
    dropped: u64,
}

impl Book {
    /// A book that records.
    pub fn new() -> Self {
        Self { inner: Some(Arc::default()) }
    }

    /// A book that records nothing (a server that writes no Switches).
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// Whether sightings are recorded (the request path skips building them otherwise).
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    fn lock(&self) -> Option<MutexGuard<'_, Inner>> {
        // A panic while holding the lock leaves a map of plain values: keep going.
        self.inner.as_ref().map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Adds a sighting.
    pub fn see(&self, s: Sighting) {
        let Some(mut inner) = self.lock() else { return };
        if let Some(p) = inner.pending.get_mut(&s.serial) {
            p.add(s);
        } else if inner.pending.len() < MAX_PENDING_DEVICES {
            inner.pending.insert(s.serial.clone(), Pending::new(s));
        } else {
            inner.dropped += 1;
        }
    }

    /// Everything pending, by serial number (sorted), and how many sightings of new devices were
    /// dropped since the last call because too many were pending.
    pub fn take(&self) -> (Vec<(String, Pending)>, u64) {
        let Some(mut inner) = self.lock() else { return (Vec::new(), 0) };
        let mut all: Vec<(String, Pending)> = inner.pending.drain().collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        (all, std::mem::take(&mut inner.dropped))
    }

    /// Asks for the Switch of `serial` to be written at the next flush even though its device
    /// did not ask (its spec changed: a hold, a re-provision, a new Switch made by hand).
    pub fn touch(&self, serial: &str) {
        let Some(mut inner) = self.lock() else { return };
        if inner.pending.contains_key(serial) {
            return;
        }
        if inner.pending.len() < MAX_PENDING_DEVICES {
            let touched =
                Pending { facts: DeviceFacts::default(), matched: None, last_seen: None, events: Vec::new() };
            inner.pending.insert(serial.to_owned(), touched);
        } else {
            inner.dropped += 1;
        }
    }

    /// Puts back what could not be written, under what was seen since.
    pub fn requeue(&self, serial: String, older: Pending) {
        let Some(mut inner) = self.lock() else { return };
        match inner.pending.get_mut(&serial) {
            Some(newer) => newer.merge_older(older),
            None => {
                inner.pending.insert(serial, older);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AttemptResult, MatchedBy, StageResult, SwitchPhase};
    use crate::switch::lifecycle::Report;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn sighting(at: i64, what: Option<What>) -> Sighting {
        Sighting {
            serial: "SN1".into(),
            facts: DeviceFacts {
                family: Some("nvos".into()),
                address: Some(format!("192.0.2.{at}")),
                ..Default::default()
            },
            matched: Some(Some(MatchedProfile {
                name: "leaf".into(),
                namespace: Some("ns".into()),
                by: MatchedBy::Model,
            })),
            what,
            at: t(at),
        }
    }

    fn spec() -> SwitchSpec {
        SwitchSpec::for_serial("SN1")
    }

    #[test]
    fn sightings_gather_per_device_and_are_taken_once() {
        let book = Book::new();
        book.see(sighting(1, Some(What::ConfigServed { start: true })));
        book.see(Sighting {
            facts: DeviceFacts { model: Some("MSN2410".into()), ..Default::default() },
            ..sighting(2, None)
        });
        book.see(Sighting { serial: "SN2".into(), ..sighting(3, None) });
        let (all, dropped) = book.take();
        assert_eq!(dropped, 0);
        assert_eq!(all.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(), ["SN1", "SN2"]);
        let sn1 = &all[0].1;
        assert_eq!(sn1.events.len(), 1);
        assert_eq!(sn1.last_seen, Some(t(2)));
        assert_eq!(sn1.facts.model.as_deref(), Some("MSN2410"));
        assert_eq!(sn1.facts.family.as_deref(), Some("nvos"), "kept from the earlier request");
        assert_eq!(sn1.facts.address.as_deref(), Some("192.0.2.1"), "kept: the later request did not say");
        assert!(book.take().0.is_empty(), "taken");
        assert!(Book::disabled().take().0.is_empty());
        Book::disabled().see(sighting(1, None));
    }

    #[test]
    fn what_is_put_back_keeps_its_order_under_what_came_since() {
        let book = Book::new();
        book.see(sighting(1, Some(What::ConfigServed { start: true })));
        let (mut taken, _) = book.take();
        book.see(sighting(5, Some(What::ImageServed { start: false, path: None })));
        let (serial, older) = taken.remove(0);
        book.requeue(serial, older);
        let (all, _) = book.take();
        let p = &all[0].1;
        assert_eq!(p.events.iter().map(|e| e.at).collect::<Vec<_>>(), [t(1), t(5)]);
        assert_eq!(p.last_seen, Some(t(5)));
        assert_eq!(p.facts.address.as_deref(), Some("192.0.2.5"));
    }

    #[test]
    fn a_looping_device_keeps_its_newest_events() {
        let book = Book::new();
        for i in 0..200 {
            book.see(sighting(i, Some(What::ConfigServed { start: true })));
        }
        let (all, _) = book.take();
        assert_eq!(all[0].1.events.len(), MAX_EVENTS_PER_DEVICE);
        assert_eq!(all[0].1.events.last().map(|e| e.at), Some(t(199)));
    }

    #[test]
    fn the_pending_map_is_bounded() {
        let book = Book::new();
        for i in 0..MAX_PENDING_DEVICES + 3 {
            book.see(Sighting { serial: format!("SN{i}"), ..sighting(1, None) });
        }
        book.see(sighting(2, None)); // a known device still gathers
        let (all, dropped) = book.take();
        assert_eq!((all.len(), dropped), (MAX_PENDING_DEVICES, 3));
    }

    #[test]
    fn applying_pending_steps_writes_facts_history_and_phase() {
        let book = Book::new();
        book.see(sighting(1, Some(What::ConfigServed { start: true })));
        book.see(sighting(3, Some(What::Reported(Report::provisioned()))));
        book.see(sighting(2, Some(What::ImageServed { start: false, path: Some("nvos/1/x.bin".into()) })));
        let (all, _) = book.take();
        let mut status = SwitchStatus::default();
        assert!(apply(&mut status, &spec(), Some(1), &all[0].1, || None, t(10)));
        assert_eq!(status.phase, Some(SwitchPhase::Provisioned));
        assert_eq!(status.last_seen, Some(Time(t(3))));
        assert_eq!(status.device.as_ref().and_then(|d| d.address.as_deref()), Some("192.0.2.3"));
        let stages: Vec<&str> = status.attempts[0].stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(stages, ["ConfigServed", "ImageServed", "Provisioned"], "in time order");
        assert_eq!(status.attempts[0].result, Some(AttemptResult::Provisioned));
        assert!(
            !apply(&mut status, &spec(), Some(1), &all[0].1, || None, t(11)),
            "applying twice changes nothing"
        );

        // A report names the device by its serial alone: the match stands.
        let report = Sighting { matched: None, ..sighting(15, Some(What::Reported(Report::provisioned()))) };
        apply(&mut status, &spec(), Some(1), &Pending::new(report), || None, t(16));
        assert_eq!(status.phase, Some(SwitchPhase::Provisioned));
        // Unmatched at the time of a later request: the Switch says so.
        let failed = Report::new("config", StageResult::Failed, Some("boom")).unwrap();
        let mut later = Pending::new(sighting(20, Some(What::Reported(failed))));
        later.matched = Some(None);
        assert!(apply(&mut status, &spec(), Some(1), &later, || None, t(21)));
        assert_eq!(status.phase, Some(SwitchPhase::Unmatched));
    }
}

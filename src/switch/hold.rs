//! The serial numbers on hold (`spec.hold` of a Switch), as the server follows them: the request
//! path asks [`Held::contains`] (one lookup in a published set, no lock), the Switch watch keeps it
//! current ([`Held::observe`]; standalone: [`Held::declare`]). Several Switches may name one serial (in two namespaces): it is
//! held while any of them holds it.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, RwLock},
};

use arc_swap::ArcSwap;
use kube::{ResourceExt, runtime::watcher};

use crate::api::Switch;

/// `namespace/name` of each Switch that holds a serial, by serial.
type Holders = HashMap<String, HashSet<String>>;

/// The serials on hold. Cheap to clone (one shared set); the default holds nothing.
#[derive(Debug, Clone, Default)]
pub struct Held {
    inner: Arc<RwLock<Inner>>,
    /// The serials of `inner.holders`, published after every change for the request path.
    serials: Arc<ArcSwap<HashSet<String>>>,
}

#[derive(Debug, Default)]
struct Inner {
    holders: Holders,
    /// While the watch lists again: what the new list holds so far.
    relist: Option<Holders>,
}

fn key(s: &Switch) -> String {
    format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any())
}

fn set(holders: &mut Holders, s: &Switch) {
    let (serial, key) = (&s.spec.serial_number, key(s));
    // The serial of a Switch never changes (CEL), so one entry per Switch is enough.
    if s.spec.hold {
        holders.entry(serial.clone()).or_default().insert(key);
    } else if let Some(keys) = holders.get_mut(serial) {
        keys.remove(&key);
        if keys.is_empty() {
            holders.remove(serial);
        }
    }
}

impl Held {
    /// Whether the device with this serial number is on hold.
    pub fn contains(&self, serial: &str) -> bool {
        self.serials.load().contains(serial)
    }

    /// Publishes the serials `inner` holds now.
    fn publish(&self, inner: &Inner) {
        self.serials.store(Arc::new(inner.holders.keys().cloned().collect()));
    }

    /// Holds exactly what `switches` hold (standalone: the folder's Switches, read again when the
    /// folder changes).
    pub fn declare(&self, switches: &[std::sync::Arc<Switch>]) {
        let mut holders = Holders::new();
        switches.iter().for_each(|s| set(&mut holders, s));
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        inner.holders = holders;
        self.publish(&inner);
    }

    /// Follows one event of the Switch watch.
    pub fn observe(&self, event: &watcher::Event<Switch>) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        match event {
            watcher::Event::Apply(s) => set(&mut inner.holders, s),
            watcher::Event::Delete(s) => {
                let mut gone = s.clone();
                gone.spec.hold = false;
                set(&mut inner.holders, &gone);
            }
            watcher::Event::Init => inner.relist = Some(Holders::new()),
            watcher::Event::InitApply(s) => set(inner.relist.get_or_insert_with(Holders::new), s),
            watcher::Event::InitDone => {
                if let Some(fresh) = inner.relist.take() {
                    inner.holders = fresh;
                }
            }
        }
        self.publish(&inner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn switch(ns: &str, name: &str, serial: &str, hold: bool) -> Switch {
        let mut s = Switch::new(name, crate::api::SwitchSpec::for_serial(serial));
        s.metadata.namespace = Some(ns.into());
        s.spec.hold = hold;
        s
    }

    #[test]
    fn a_serial_is_held_while_any_switch_holds_it() {
        let held = Held::default();
        assert!(!held.contains("SN1"));
        held.observe(&watcher::Event::Apply(switch("a", "leaf", "SN1", true)));
        held.observe(&watcher::Event::Apply(switch("b", "leaf", "SN1", true)));
        assert!(held.contains("SN1"));
        held.observe(&watcher::Event::Apply(switch("a", "leaf", "SN1", false)));
        assert!(held.contains("SN1"), "b still holds it");
        held.observe(&watcher::Event::Delete(switch("b", "leaf", "SN1", true)));
        assert!(!held.contains("SN1"));
    }

    #[test]
    fn a_relist_replaces_what_was_held() {
        let held = Held::default();
        held.observe(&watcher::Event::Apply(switch("a", "gone", "SN1", true)));
        held.observe(&watcher::Event::Init);
        assert!(held.contains("SN1"), "until the new list is complete");
        held.observe(&watcher::Event::InitApply(switch("a", "leaf", "SN2", true)));
        held.observe(&watcher::Event::InitApply(switch("a", "other", "SN3", false)));
        held.observe(&watcher::Event::InitDone);
        assert!(!held.contains("SN1") && held.contains("SN2") && !held.contains("SN3"));
    }
}

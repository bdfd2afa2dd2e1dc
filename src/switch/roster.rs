//! The Switches a server knows, as of its last flush: what `GET /v1/switches` lists (and
//! `ztpctl switches --server` prints). In a cluster the writer refreshes it from its watch of
//! Switches ([`super::k8s`]), in standalone the fleet ([`super::fleet`]); a server without
//! Switches has none.

use std::sync::{Arc, PoisonError, RwLock};

use kube::ResourceExt;

use crate::api::Switch;

/// Every Switch, sorted by namespace and name: one list, replaced whole.
pub type Listed = Arc<Vec<Arc<Switch>>>;

/// The list, shared by the writer and the handlers.
#[derive(Debug, Clone, Default)]
pub struct Roster(Option<Arc<RwLock<Listed>>>);

impl Roster {
    /// A roster to fill (a server that keeps Switches).
    pub fn new() -> Self {
        Self(Some(Arc::default()))
    }

    /// The Switches as last set; `None` for a server without Switches.
    pub fn list(&self) -> Option<Listed> {
        self.0.as_ref().map(|r| r.read().unwrap_or_else(PoisonError::into_inner).clone())
    }

    /// Replaces the Switches.
    pub fn set(&self, mut all: Vec<Arc<Switch>>) {
        let Some(r) = &self.0 else { return };
        all.sort_by_cached_key(|s| (s.namespace(), s.name_any()));
        *r.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(all);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SwitchSpec;

    fn switch(ns: &str, name: &str) -> Arc<Switch> {
        let mut s = Switch::new(name, SwitchSpec::for_serial(name.to_uppercase()));
        s.metadata.namespace = Some(ns.into());
        Arc::new(s)
    }

    #[test]
    fn a_roster_lists_what_was_set_in_order_and_none_without_switches() {
        assert!(Roster::default().list().is_none());
        Roster::default().set(vec![switch("a", "x")]); // nowhere to keep it: no panic
        let r = Roster::new();
        assert_eq!(r.list().map(|l| l.len()), Some(0));
        r.set(vec![switch("net", "b"), switch("lab", "z"), switch("net", "a")]);
        let names: Vec<String> = r.list().expect("kept").iter().map(|s| s.name_any()).collect();
        assert_eq!(names, ["z", "a", "b"]);
    }
}

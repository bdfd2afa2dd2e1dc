//! A SwitchProfile's Switches counted by phase (`status.switches`): computed from the Switches'
//! own status (`matchedProfile`, `phase`), so several server replicas, restarts and re-provisions
//! never count a device twice — the figures are what the Switches say now. Pure: the controller
//! ([`crate::controller::counts`]) and standalone's fleet ([`super::fleet`]) write what
//! [`changes`] returns.

use std::collections::BTreeMap;

use kube::ResourceExt;

use crate::api::{Switch, SwitchCounts, SwitchPhase};

/// A profile, as (namespace, name).
pub type ProfileKey = (String, String);

/// Counts per profile of every Switch that names one in `status.matchedProfile` (a pinned
/// profile without a namespace is in the Switch's). A Switch with no matched profile, or no phase
/// yet, counts nowhere.
pub fn tally<'a>(switches: impl IntoIterator<Item = &'a Switch>) -> BTreeMap<ProfileKey, SwitchCounts> {
    let mut all: BTreeMap<ProfileKey, SwitchCounts> = BTreeMap::new();
    for sw in switches {
        let Some(status) = &sw.status else { continue };
        let (Some(matched), Some(phase)) = (&status.matched_profile, status.phase) else { continue };
        let namespace = matched.namespace.clone().or_else(|| sw.namespace()).unwrap_or_default();
        let counts = all.entry((namespace, matched.name.clone())).or_default();
        counts.total += 1;
        match phase {
            SwitchPhase::Discovered => counts.discovered += 1,
            SwitchPhase::Configuring => counts.configuring += 1,
            SwitchPhase::Installing => counts.installing += 1,
            SwitchPhase::Provisioned => counts.provisioned += 1,
            SwitchPhase::Failed => counts.failed += 1,
            SwitchPhase::Held => counts.held += 1,
            // A Switch with a profile is not Unmatched; were one so, it is in `total` only.
            SwitchPhase::Unmatched => {}
        }
    }
    all
}

/// The counts to write: for each profile (`have`: its key and the counts its status shows), the
/// tallied counts when they differ from those — zeros for a profile that shows counts but has no
/// Switch left; nothing for a profile that never had one.
pub fn changes<'a>(
    have: impl IntoIterator<Item = (ProfileKey, Option<&'a SwitchCounts>)>,
    tally: &BTreeMap<ProfileKey, SwitchCounts>,
) -> Vec<(ProfileKey, SwitchCounts)> {
    have.into_iter()
        .filter_map(|(key, shown)| {
            let want = match (tally.get(&key), shown) {
                (Some(want), _) => want.clone(),
                (None, Some(_)) => SwitchCounts::default(),
                (None, None) => return None,
            };
            (shown != Some(&want)).then_some((key, want))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{MatchedBy, MatchedProfile, SwitchSpec, SwitchStatus};

    fn switch(
        ns: &str,
        serial: &str,
        profile: Option<(&str, Option<&str>)>,
        phase: Option<SwitchPhase>,
    ) -> Switch {
        let mut sw = Switch::new(&serial.to_lowercase(), SwitchSpec::for_serial(serial));
        sw.metadata.namespace = Some(ns.into());
        sw.status = Some(SwitchStatus {
            phase,
            matched_profile: profile.map(|(name, namespace)| MatchedProfile {
                name: name.into(),
                namespace: namespace.map(Into::into),
                by: MatchedBy::Model,
            }),
            ..Default::default()
        });
        sw
    }

    fn key(ns: &str, name: &str) -> ProfileKey {
        (ns.into(), name.into())
    }

    #[test]
    fn switches_are_counted_by_their_profile_and_phase() {
        let all = [
            switch("net", "A", Some(("leaf", Some("net"))), Some(SwitchPhase::Provisioned)),
            switch("net", "B", Some(("leaf", Some("net"))), Some(SwitchPhase::Failed)),
            switch("net", "C", Some(("leaf", None)), Some(SwitchPhase::Installing)), // pinned: its own namespace
            switch("lab", "D", Some(("leaf", None)), Some(SwitchPhase::Held)),
            switch("net", "E", None, Some(SwitchPhase::Unmatched)),
            switch("net", "F", Some(("leaf", Some("net"))), None), // declared, no phase yet
            Switch::new("g", SwitchSpec::for_serial("G")),         // no status at all
        ];
        let t = tally(&all);
        assert_eq!(t.len(), 2, "{t:?}");
        let leaf = &t[&key("net", "leaf")];
        assert_eq!(
            (leaf.total, leaf.provisioned, leaf.failed, leaf.installing, leaf.discovered),
            (3, 1, 1, 1, 0)
        );
        assert_eq!((t[&key("lab", "leaf")].total, t[&key("lab", "leaf")].held), (1, 1));
    }

    #[test]
    fn only_changed_counts_are_written_and_a_profile_left_empty_shows_zeros() {
        let t = tally(&[switch("net", "A", Some(("leaf", Some("net"))), Some(SwitchPhase::Provisioned))]);
        let current = t[&key("net", "leaf")].clone();
        let stale = SwitchCounts { total: 2, provisioned: 2, ..Default::default() };
        let have = [
            (key("net", "leaf"), Some(&current)), // unchanged: nothing
            (key("net", "spine"), Some(&stale)),  // its Switches are gone: zeros
            (key("net", "border"), None),         // never had one: nothing
        ];
        assert_eq!(changes(have, &t), vec![(key("net", "spine"), SwitchCounts::default())]);
        let first = changes([(key("net", "leaf"), None)], &t);
        assert_eq!(first, vec![(key("net", "leaf"), current)], "a profile's first Switch is written");
    }
}

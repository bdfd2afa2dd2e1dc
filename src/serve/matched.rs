//! The profile a device or a Switch matches, as a Switch shows it: [`matched_profile`] for a
//! device's identity (its requests), [`declared_match`] for a Switch's declared serial, MAC and
//! model (a Switch whose device has not asked yet).

use super::state::{Loaded, ServerState};
use crate::{
    api::{MatchedBy, MatchedProfile, SwitchSpec},
    profile::{identity::DeviceIdentity, index::KeyKind},
};

/// The profile `id` matches in `loaded`, as a Switch shows it.
pub fn matched_profile(loaded: &Loaded, id: &DeviceIdentity) -> Option<MatchedProfile> {
    let m = loaded.index.lookup(id)?;
    let p = &loaded.snapshot.profiles[m.profile];
    let by = match m.by {
        KeyKind::Serial => MatchedBy::Serial,
        KeyKind::Mac => MatchedBy::Mac,
        KeyKind::Model => MatchedBy::Model,
        KeyKind::Pinned => MatchedBy::Pinned,
    };
    Some(MatchedProfile { name: p.name.clone(), namespace: Some(p.namespace.clone()), by })
}

/// The profile a Switch's declared serial, MAC and model match, for a Switch whose device has not
/// said anything to match by yet (the Switch writer's [`crate::switch::k8s::Matcher`]).
pub fn declared_match(server: &ServerState, spec: &SwitchSpec) -> Option<MatchedProfile> {
    let loaded = server.loaded()?;
    let id =
        DeviceIdentity::declared(&spec.serial_number, spec.mac_address.as_deref(), spec.model.as_deref());
    matched_profile(&loaded, &id)
}

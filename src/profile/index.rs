//! Finding a device's profile: an index over one [`Snapshot`], built once when the snapshot is
//! loaded, answering each request with a few hash lookups.
//!
//! A device is matched by its most specific key: serial number, then MAC address, then model
//! (every model string the device sent, most specific first; each compared exactly, then
//! ignoring ASCII case). When two profiles claim the same key, the **older** claim wins: the
//! profile created first ([`ProfileSnapshot::created`], the object's `creationTimestamp`), then
//! the first by namespace/name (profiles created in the same second, or in standalone, where
//! files have no creation time). A new profile therefore never takes over a switch another
//! profile already serves, in its namespace or in another. The clash is recorded as a
//! [`Conflict`] so the controller can report it on both profiles.
//!
//! A Switch in the snapshot ([`SwitchSnapshot`]) goes first: the device that sends its serial
//! number (or, sending none, its MAC address) gets the profile the Switch pins, and only that one
//! (none when the pinned profile is not in the snapshot: a pin is never silently replaced by a
//! match), or else the profile its keys match; and the Switch's values for templates
//! ([`DeviceIndex::switch_of`]). Two Switches naming the same serial: the older counts.
//!
//! [`ProfileSnapshot::created`]: super::snapshot::ProfileSnapshot::created
//! [`SwitchSnapshot`]: super::snapshot::SwitchSnapshot

// hashbrown's map, for its fast hasher: the keys are the snapshot's, only looked up by what
// devices send (SipHash cost a twentieth of a ZTP JSON answer, over its three lookups).
use hashbrown::HashMap;

use super::{identity::DeviceIdentity, identity::normalize_mac, snapshot::Snapshot};

/// Which kind of key matched a device, or is contested between profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyKind {
    /// A serial number (compared exactly).
    Serial,
    /// A MAC address (normalised, so case and separators do not matter).
    Mac,
    /// A model (exactly, then ignoring ASCII case).
    Model,
    /// The device's Switch names the profile (`spec.profile`); never contested.
    Pinned,
}

impl KeyKind {
    /// `serial`, `mac` or `model`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Serial => "serial",
            KeyKind::Mac => "mac",
            KeyKind::Model => "model",
            KeyKind::Pinned => "pinned",
        }
    }
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Two profiles claim the same key; `winner` (the older claim) gets the devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub key_kind: KeyKind,
    /// The contested key: the serial, the normalised MAC, or the model (lower-cased when the two
    /// profiles spell it with different case).
    pub key: String,
    /// `namespace/name` of the profile that wins.
    pub winner: String,
    /// `namespace/name` of the profile that loses.
    pub loser: String,
}

/// The profile a device matched and by which key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    /// Position in [`Snapshot::profiles`].
    pub profile: usize,
    pub by: KeyKind,
}

/// Serial / MAC / model → profile position, for one snapshot.
#[derive(Debug, Clone, Default)]
pub struct DeviceIndex {
    serials: HashMap<String, usize>,
    macs: HashMap<String, usize>,
    models: HashMap<String, usize>,
    /// Models lower-cased (ASCII), for the case-insensitive fallback.
    models_folded: HashMap<String, usize>,
    conflicts: Vec<Conflict>,
    /// Switch serial number → position in [`Snapshot::switches`].
    switch_serials: HashMap<String, usize>,
    /// Switch MAC address (normalised) → position in [`Snapshot::switches`].
    switch_macs: HashMap<String, usize>,
    /// Position in [`Snapshot::switches`] → the position of the profile it pins, `None` when
    /// that profile is not in the snapshot; absent for a Switch that pins none.
    pins: HashMap<usize, Option<usize>>,
    /// Per Switch (its position): the MAC address (normalised) and model it declares.
    declared: Vec<(Option<String>, Vec<String>)>,
}

/// Claims `key` for profile `pos` unless an earlier profile holds it; a clash between two
/// different profiles is recorded.
fn claim(
    map: &mut HashMap<String, usize>,
    key: String,
    pos: usize,
    kind: KeyKind,
    names: &[String],
    conflicts: &mut Vec<Conflict>,
) {
    match map.get(&key) {
        None => {
            map.insert(key, pos);
        }
        Some(&holder) if holder != pos => conflicts.push(Conflict {
            key_kind: kind,
            key,
            winner: names[holder].clone(),
            loser: names[pos].clone(),
        }),
        Some(_) => {}
    }
}

impl DeviceIndex {
    /// Indexes every serial, MAC and model of every profile of `snapshot`. Profiles are taken
    /// oldest first (creation time, then namespace/name), so the oldest profile claiming a key
    /// keeps it. MACs are normalised with [`normalize_mac`] (a MAC that does not parse is
    /// ignored); empty keys are ignored.
    pub fn build(snapshot: &Snapshot) -> DeviceIndex {
        let names: Vec<String> =
            snapshot.profiles.iter().map(|p| format!("{}/{}", p.namespace, p.name)).collect();
        let mut oldest_first: Vec<usize> = (0..snapshot.profiles.len()).collect();
        oldest_first.sort_by(|&a, &b| {
            let (pa, pb) = (&snapshot.profiles[a], &snapshot.profiles[b]);
            // No creation time (standalone) sorts as oldest, then by name: the old rule.
            (&pa.created, &names[a]).cmp(&(&pb.created, &names[b]))
        });
        let mut index = DeviceIndex::default();
        let mut conflicts = Vec::new();
        for pos in oldest_first {
            let p = &snapshot.profiles[pos];
            for serial in p.serial_numbers.iter().filter(|s| !s.is_empty()) {
                claim(&mut index.serials, serial.clone(), pos, KeyKind::Serial, &names, &mut conflicts);
            }
            for mac in p.mac_addresses.iter().filter_map(|m| normalize_mac(m)) {
                claim(&mut index.macs, mac, pos, KeyKind::Mac, &names, &mut conflicts);
            }
            for model in p.models.iter().filter(|m| !m.is_empty()) {
                // A model is owned as a whole, whatever its case: a newer profile spelling a
                // held model differently (`sn2410` / `SN2410`) takes none of its devices.
                let folded = model.to_ascii_lowercase();
                match index.models_folded.get(&folded).copied() {
                    None => {
                        index.models_folded.insert(folded, pos);
                        index.models.insert(model.clone(), pos);
                    }
                    Some(holder) if holder == pos => {
                        index.models.entry(model.clone()).or_insert(pos);
                    }
                    Some(holder) => {
                        let same_spelling = index.models.get(model) == Some(&holder);
                        conflicts.push(Conflict {
                            key_kind: KeyKind::Model,
                            key: if same_spelling { model.clone() } else { folded },
                            winner: names[holder].clone(),
                            loser: names[pos].clone(),
                        });
                    }
                }
            }
        }
        index.conflicts = conflicts;
        index.index_switches(snapshot, &names);
        index
    }

    /// Indexes the snapshot's Switches by serial number and MAC address, oldest first (creation
    /// time, then namespace/name), and resolves their pins.
    fn index_switches(&mut self, snapshot: &Snapshot, profile_names: &[String]) {
        let mut oldest_first: Vec<usize> = (0..snapshot.switches.len()).collect();
        let name = |i: usize| (&snapshot.switches[i].namespace, &snapshot.switches[i].name);
        oldest_first.sort_by(|&a, &b| {
            (&snapshot.switches[a].created, name(a)).cmp(&(&snapshot.switches[b].created, name(b)))
        });
        let by_name: HashMap<&str, usize> =
            profile_names.iter().enumerate().map(|(pos, n)| (n.as_str(), pos)).collect();
        self.declared = snapshot
            .switches
            .iter()
            .map(|s| (s.mac_address.as_deref().and_then(normalize_mac), s.model.iter().cloned().collect()))
            .collect();
        for pos in oldest_first {
            let sw = &snapshot.switches[pos];
            if !sw.serial_number.is_empty() {
                self.switch_serials.entry(sw.serial_number.clone()).or_insert(pos);
            }
            if let Some(mac) = sw.mac_address.as_deref().and_then(normalize_mac) {
                self.switch_macs.entry(mac).or_insert(pos);
            }
            if let Some(pinned) = &sw.profile {
                let wanted = format!("{}/{pinned}", sw.namespace);
                self.pins.insert(pos, by_name.get(wanted.as_str()).copied());
            }
        }
    }

    /// The device's Switch (its position in [`Snapshot::switches`]): the one with its serial
    /// number; for a device that sends no serial, the one with its MAC address.
    pub fn switch_of(&self, id: &DeviceIdentity) -> Option<usize> {
        match id.serial.as_deref() {
            Some(serial) => self.switch_serials.get(serial).copied(),
            None => id.mac.as_deref().and_then(normalize_mac).and_then(|m| self.switch_macs.get(&m).copied()),
        }
    }

    /// The profile for `id`: the one its Switch pins, else by serial, else by MAC, else by the
    /// first of `id.models` that some profile lists (exact spelling first, then ignoring ASCII
    /// case). `None` when nothing matches, or the pinned profile is not in the snapshot.
    pub fn lookup(&self, id: &DeviceIdentity) -> Option<Match> {
        self.matches(id).next()
    }

    /// Every profile that matches `id`, most specific first: the serial's, the MAC's, then the
    /// profile of each of `id.models` in order (as in [`DeviceIndex::lookup`], whose answer is
    /// the first of these); each profile once. Per-item fallback walks this list: an item the
    /// most specific profile does not set (e.g. an ONIE update image) is taken from the next
    /// profile that sets it. A device whose Switch pins a profile has that one only (or none);
    /// one whose Switch declares a MAC address or model is matched by it when the device does
    /// not send its own.
    pub fn matches<'a>(&'a self, id: &'a DeviceIdentity) -> impl Iterator<Item = Match> + 'a {
        let sw = self.switch_of(id);
        let pin = sw.and_then(|sw| self.pins.get(&sw).copied());
        let pinned = pin.flatten().map(|profile| Match { profile, by: KeyKind::Pinned });
        let declared = sw.map(|sw| &self.declared[sw]);
        let mac = id.mac.as_deref().and_then(normalize_mac).or_else(|| declared.and_then(|d| d.0.clone()));
        let models = match declared {
            Some((_, models)) if id.models.is_empty() => models.as_slice(),
            _ => id.models.as_slice(),
        };
        let by_keys = self.matched_by_keys(id.serial.as_deref(), mac, models);
        pinned.into_iter().chain(by_keys.filter(move |_| pin.is_none()))
    }

    /// [`DeviceIndex::matches`] by keys, pins aside.
    fn matched_by_keys<'a>(
        &'a self,
        serial: Option<&str>,
        mac: Option<String>,
        models: &'a [String],
    ) -> impl Iterator<Item = Match> + 'a {
        let serial = serial.and_then(|s| self.serials.get(s));
        let serial = serial.map(|&profile| Match { profile, by: KeyKind::Serial });
        let mac = mac.and_then(|m| self.macs.get(&m).copied());
        let mac = mac.map(|profile| Match { profile, by: KeyKind::Mac });
        let models = models.iter().filter_map(|model| {
            let profile = match self.models.get(model) {
                Some(&p) => p,
                None => *self.models_folded.get(&model.to_ascii_lowercase())?,
            };
            Some(Match { profile, by: KeyKind::Model })
        });
        // The first match needs no memory of others: a lookup (the first only) allocates nothing.
        let (mut first, mut seen) = (None, Vec::new());
        serial.into_iter().chain(mac).chain(models).filter(move |m| match first {
            None => {
                first = Some(m.profile);
                true
            }
            Some(first) => {
                let new = first != m.profile && !seen.contains(&m.profile);
                seen.push(m.profile);
                new
            }
        })
    }

    /// Keys claimed by more than one profile, oldest loser first (deterministic for a snapshot).
    pub fn conflicts(&self) -> &[Conflict] {
        &self.conflicts
    }

    /// Conflicts in which profile `ns_name` (`namespace/name`) wins or loses.
    pub fn conflicts_of<'a>(&'a self, ns_name: &'a str) -> impl Iterator<Item = &'a Conflict> + 'a {
        self.conflicts.iter().filter(move |c| c.winner == ns_name || c.loser == ns_name)
    }

    /// Number of distinct keys indexed (serials + MACs + models).
    pub fn len(&self) -> usize {
        self.serials.len() + self.macs.len() + self.models.len()
    }

    /// True when no profile claims any key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::profile::{
        identity::Family,
        snapshot::{ProfileSnapshot, SwitchSnapshot},
    };

    /// A profile `net/{name}` claiming these keys (the serve tests build on it too).
    pub(crate) fn profile(name: &str, serials: &[&str], macs: &[&str], models: &[&str]) -> ProfileSnapshot {
        ProfileSnapshot {
            namespace: "net".into(),
            name: name.into(),
            serial_numbers: serials.iter().map(|s| s.to_string()).collect(),
            mac_addresses: macs.iter().map(|s| s.to_string()).collect(),
            models: models.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn snapshot(profiles: Vec<ProfileSnapshot>) -> Snapshot {
        Snapshot { format: 1, profiles, ..Default::default() }
    }

    fn device(serial: Option<&str>, mac: Option<&str>, models: &[&str]) -> DeviceIdentity {
        DeviceIdentity {
            family: Family::Onie,
            serial: serial.map(str::to_owned),
            mac: mac.map(str::to_owned),
            models: models.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn serial_beats_mac_beats_model() {
        let snap = snapshot(vec![
            profile("a-model", &[], &[], &["accton_as7712_32x"]),
            profile("b-mac", &[], &["08:9e:01:62:d1:93"], &[]),
            profile("c-serial", &["XYZ123004"], &[], &[]),
        ]);
        let index = DeviceIndex::build(&snap);
        assert!(index.conflicts().is_empty());

        let all = device(Some("XYZ123004"), Some("08:9e:01:62:d1:93"), &["accton_as7712_32x"]);
        assert_eq!(index.lookup(&all), Some(Match { profile: 2, by: KeyKind::Serial }));

        let no_serial = device(Some("OTHER"), Some("08:9e:01:62:d1:93"), &["accton_as7712_32x"]);
        assert_eq!(index.lookup(&no_serial), Some(Match { profile: 1, by: KeyKind::Mac }));

        let model_only = device(Some("OTHER"), Some("00:00:00:00:00:01"), &["accton_as7712_32x"]);
        assert_eq!(index.lookup(&model_only), Some(Match { profile: 0, by: KeyKind::Model }));

        let nothing = device(Some("OTHER"), None, &["other_model"]);
        assert_eq!(index.lookup(&nothing), None);
        assert_eq!(index.lookup(&DeviceIdentity::default()), None);
    }

    #[test]
    fn matches_lists_every_matching_profile_most_specific_first_once_each() {
        let snap = snapshot(vec![
            profile("machine", &[], &[], &["accton_as7712_32x"]),
            profile("mac", &[], &["08:9e:01:62:d1:93"], &[]),
            profile("serial", &["XYZ123004"], &[], &["x86_64-accton_as7712_32x-r0"]),
        ]);
        let index = DeviceIndex::build(&snap);
        let all = device(
            Some("XYZ123004"),
            Some("08:9E:01:62:D1:93"),
            &["x86_64-accton_as7712_32x-r0", "accton_as7712_32x"],
        );
        let found: Vec<Match> = index.matches(&all).collect();
        assert_eq!(
            found,
            [
                Match { profile: 2, by: KeyKind::Serial },
                Match { profile: 1, by: KeyKind::Mac },
                // The serial's profile also lists the platform: not twice.
                Match { profile: 0, by: KeyKind::Model },
            ]
        );
        assert_eq!(index.lookup(&all), Some(found[0]));
        let stranger = device(Some("OTHER"), None, &["celestica_e1031"]);
        assert_eq!(index.matches(&stranger).count(), 0);
    }

    #[test]
    fn a_model_profile_is_the_default_for_that_model() {
        let snap = snapshot(vec![
            profile("default-sn2410", &[], &[], &["sn2410"]),
            profile("leaf01", &["MT01"], &[], &[]),
        ]);
        let index = DeviceIndex::build(&snap);
        // Any unknown sn2410 gets the default; the known one its own profile.
        for serial in ["MT02", "MT03", "MT99"] {
            let m = index.lookup(&device(Some(serial), None, &["sn2410"]));
            assert_eq!(m, Some(Match { profile: 0, by: KeyKind::Model }));
        }
        assert_eq!(index.lookup(&device(Some("MT01"), None, &["sn2410"])).map(|m| m.profile), Some(1));
    }

    #[test]
    fn models_are_tried_in_order_exact_then_case_insensitive() {
        let snap = snapshot(vec![
            profile("machine", &[], &[], &["accton_as7712_32x"]),
            profile("platform", &[], &[], &["X86_64-Accton_AS7712_32X-r0"]),
            profile("sn", &[], &[], &["SN2410"]),
            profile("sn-lower", &[], &[], &["sn2410"]),
        ]);
        let index = DeviceIndex::build(&snap);
        // The platform (first, more specific) matches case-insensitively before the machine
        // matches exactly.
        let onie = device(None, None, &["x86_64-accton_as7712_32x-r0", "accton_as7712_32x"]);
        assert_eq!(index.lookup(&onie), Some(Match { profile: 1, by: KeyKind::Model }));
        let machine_only = device(None, None, &["x86_64-accton_as7712_32x-r1", "accton_as7712_32x"]);
        assert_eq!(index.lookup(&machine_only).map(|m| m.profile), Some(0));
        // The model belongs to its older claim whatever the spelling: sn-lower takes nothing.
        assert_eq!(index.lookup(&device(None, None, &["sn2410"])).map(|m| m.profile), Some(2));
        assert_eq!(index.lookup(&device(None, None, &["SN2410"])).map(|m| m.profile), Some(2));
        assert_eq!(index.lookup(&device(None, None, &["Sn2410"])).map(|m| m.profile), Some(2));
        // The two spellings clash for the case-insensitive fallback.
        assert_eq!(
            index.conflicts(),
            &[Conflict {
                key_kind: KeyKind::Model,
                key: "sn2410".into(),
                winner: "net/sn".into(),
                loser: "net/sn-lower".into(),
            }]
        );
    }

    #[test]
    fn macs_match_whatever_the_case_or_separator() {
        // A profile written with ONIE's lower case, another with Cumulus' upper case.
        let snap = snapshot(vec![
            profile("lower", &[], &["44:38:39:ff:40:94"], &[]),
            profile("upper", &[], &["08:9E:01:62:D1:93"], &[]),
            profile("dashes", &[], &["0C-42-A1-00-00-01"], &[]),
            profile("broken", &[], &["not-a-mac"], &[]),
        ]);
        let index = DeviceIndex::build(&snap);
        let by_mac = |mac: &str| index.lookup(&device(None, Some(mac), &[]));
        assert_eq!(by_mac("44:38:39:FF:40:94"), Some(Match { profile: 0, by: KeyKind::Mac }));
        assert_eq!(by_mac("44:38:39:ff:40:94").map(|m| m.profile), Some(0));
        assert_eq!(by_mac("08:9e:01:62:d1:93").map(|m| m.profile), Some(1));
        assert_eq!(by_mac("0c:42:a1:00:00:01").map(|m| m.profile), Some(2));
        assert_eq!(by_mac("0c42.a100.0001").map(|m| m.profile), Some(2));
        assert_eq!(by_mac("not-a-mac"), None);
        assert_eq!(index.len(), 3);
    }

    #[test]
    fn conflicts_are_recorded_and_the_first_profile_wins() {
        let snap = snapshot(vec![
            profile("a", &["S1", "S2"], &["aa:bb:cc:dd:ee:ff"], &["sn2410"]),
            profile("b", &["S2"], &["AA-BB-CC-DD-EE-FF"], &["sn2410"]),
            profile("c", &["S2", "S3"], &[], &[]),
            // One profile listing a key twice is no conflict.
            profile("d", &["S4", "S4"], &[], &["m", "m"]),
        ]);
        let index = DeviceIndex::build(&snap);
        let c = |kind, key: &str, winner: &str, loser: &str| Conflict {
            key_kind: kind,
            key: key.into(),
            winner: winner.into(),
            loser: loser.into(),
        };
        assert_eq!(
            index.conflicts(),
            &[
                c(KeyKind::Serial, "S2", "net/a", "net/b"),
                c(KeyKind::Mac, "aa:bb:cc:dd:ee:ff", "net/a", "net/b"),
                c(KeyKind::Model, "sn2410", "net/a", "net/b"),
                c(KeyKind::Serial, "S2", "net/a", "net/c"),
            ]
        );
        assert_eq!(index.lookup(&device(Some("S2"), None, &[])).map(|m| m.profile), Some(0));
        assert_eq!(index.lookup(&device(None, Some("aa:bb:cc:dd:ee:ff"), &[])).map(|m| m.profile), Some(0));
        assert_eq!(index.lookup(&device(None, None, &["SN2410"])).map(|m| m.profile), Some(0));
        assert_eq!(index.lookup(&device(Some("S3"), None, &[])).map(|m| m.profile), Some(2));
        assert_eq!(index.conflicts_of("net/c").count(), 1);
        assert_eq!(index.conflicts_of("net/a").count(), 4);
        assert_eq!(index.conflicts_of("net/d").count(), 0);

        // Deterministic: the same snapshot gives the same conflicts.
        assert_eq!(DeviceIndex::build(&snap).conflicts(), index.conflicts());
    }

    fn created_at(mut p: ProfileSnapshot, ns: &str, millis: i64) -> ProfileSnapshot {
        use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
        p.namespace = ns.into();
        p.created = Some(Time(Timestamp::from_millisecond(millis).expect("timestamp")));
        p
    }

    #[test]
    fn the_older_claim_wins_whatever_the_names_to_the_millisecond() {
        const T: i64 = 1_780_000_000_000;
        // Snapshot order is by namespace/name: the newcomer `a-new` sorts first.
        let snap = snapshot(vec![
            created_at(profile("a-new", &["S1"], &["aa:bb:cc:dd:ee:ff"], &["sn2410"]), "net", T + 1),
            created_at(profile("z-old", &["S1"], &["AA:BB:CC:DD:EE:FF"], &["SN2410"]), "net", T),
            // Another namespace, newer still: it takes nothing either.
            created_at(profile("a-tenant", &["S1"], &[], &[]), "aaa", T + 2),
        ]);
        let snap = Snapshot {
            profiles: {
                let mut p = snap.profiles;
                p.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
                p
            },
            ..snap
        };
        let names: Vec<&str> = snap.profiles.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a-tenant", "a-new", "z-old"]);
        let index = DeviceIndex::build(&snap);
        let z_old = 2;
        assert_eq!(index.lookup(&device(Some("S1"), None, &[])).map(|m| m.profile), Some(z_old));
        assert_eq!(
            index.lookup(&device(None, Some("aa:bb:cc:dd:ee:ff"), &[])).map(|m| m.profile),
            Some(z_old)
        );
        assert_eq!(index.lookup(&device(None, None, &["SN2410"])).map(|m| m.profile), Some(z_old));
        // a-new spells the model `sn2410`: that spelling is z-old's too, as is any other.
        assert_eq!(index.lookup(&device(None, None, &["sn2410"])).map(|m| m.profile), Some(z_old));
        assert_eq!(index.lookup(&device(None, None, &["Sn2410"])).map(|m| m.profile), Some(z_old));
        let winners: Vec<&str> = index.conflicts().iter().map(|c| c.winner.as_str()).collect();
        assert!(winners.iter().all(|w| *w == "net/z-old"), "{:?}", index.conflicts());
        let losers: Vec<(&str, KeyKind)> =
            index.conflicts().iter().map(|c| (c.loser.as_str(), c.key_kind)).collect();
        assert_eq!(
            losers,
            [
                ("net/a-new", KeyKind::Serial),
                ("net/a-new", KeyKind::Mac),
                ("net/a-new", KeyKind::Model),
                ("aaa/a-tenant", KeyKind::Serial),
            ]
        );

        // One millisecond the other way round: a-new is the older claim and keeps everything.
        let mut swapped = snap.clone();
        swapped.profiles[1] = created_at(swapped.profiles[1].clone(), "net", T - 1);
        let index = DeviceIndex::build(&swapped);
        assert_eq!(index.lookup(&device(Some("S1"), None, &[])).map(|m| m.profile), Some(1));
        assert!(index.conflicts().iter().all(|c| c.winner == "net/a-new"));

        // The same instant: the first by namespace/name wins (the rule standalone keeps).
        let mut tied = snap.clone();
        for p in &mut tied.profiles {
            *p = created_at(p.clone(), &p.namespace.clone(), T);
        }
        let index = DeviceIndex::build(&tied);
        assert_eq!(index.lookup(&device(Some("S1"), None, &[])).map(|m| m.profile), Some(0));
    }

    #[test]
    fn empty_snapshot_and_empty_keys() {
        let index = DeviceIndex::build(&Snapshot::default());
        assert!(index.is_empty());
        assert_eq!(index.lookup(&device(Some("S"), Some("aa:bb:cc:dd:ee:ff"), &["m"])), None);

        let index = DeviceIndex::build(&snapshot(vec![profile("e", &[""], &[""], &[""])]));
        assert!(index.is_empty());
        assert_eq!(index.lookup(&device(Some(""), None, &[""])), None);
    }

    #[test]
    fn ten_thousand_profiles() {
        const N: usize = 10_000;
        let profiles: Vec<ProfileSnapshot> = (0..N)
            .map(|i| {
                let mac =
                    format!("02:00:00:{:02x}:{:02x}:{:02x}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff);
                let model = format!("model_{}", i % 100);
                profile(&format!("p{i:05}"), &[&format!("SN{i:05}")], &[&mac], &[&model])
            })
            .collect();
        let index = DeviceIndex::build(&snapshot(profiles));
        assert_eq!(index.len(), N + N + 100);
        // Models 0..99 are claimed by the first 100 profiles; every later one loses.
        assert_eq!(index.conflicts().len(), N - 100);
        assert!(index.conflicts().iter().all(|c| c.key_kind == KeyKind::Model));

        for i in (0..N).step_by(7) {
            let serial = format!("SN{i:05}");
            let m = index.lookup(&device(Some(&serial), None, &[]));
            assert_eq!(m, Some(Match { profile: i, by: KeyKind::Serial }));
            let mac = format!("02:00:00:{:02X}:{:02X}:{:02X}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff);
            let m = index.lookup(&device(Some("unknown"), Some(&mac), &[]));
            assert_eq!(m, Some(Match { profile: i, by: KeyKind::Mac }));
            let model = format!("MODEL_{}", i % 100);
            let m = index.lookup(&device(Some("unknown"), None, &[&model]));
            assert_eq!(m, Some(Match { profile: i % 100, by: KeyKind::Model }));
        }
    }

    /// A Switch `net/{name}` for `serial` (and `mac`), pinning `profile`.
    pub(crate) fn switch(
        name: &str,
        serial: &str,
        mac: Option<&str>,
        profile: Option<&str>,
    ) -> SwitchSnapshot {
        SwitchSnapshot {
            namespace: "net".into(),
            name: name.into(),
            serial_number: serial.into(),
            mac_address: mac.map(str::to_owned),
            profile: profile.map(str::to_owned),
            ..Default::default()
        }
    }

    #[test]
    fn a_switch_pins_its_device_to_one_profile_and_only_that_one() {
        let mut snap = snapshot(vec![
            profile("by-model", &[], &[], &["sn2410"]),
            profile("by-serial", &["MT01"], &[], &[]),
            profile("special", &[], &[], &[]),
        ]);
        snap.switches = vec![
            switch("leaf01", "MT01", None, Some("special")),
            switch("leaf02", "MT02", Some("0C:42:A1:00:00:02"), Some("gone")),
            switch("leaf03", "MT03", Some("0c:42:a1:00:00:03"), Some("by-serial")),
        ];
        let index = DeviceIndex::build(&snap);
        // The pin beats the profile that lists the serial, and is the only match (no fallback).
        let leaf01 = device(Some("MT01"), None, &["sn2410"]);
        assert_eq!(index.matches(&leaf01).collect::<Vec<_>>(), [Match { profile: 2, by: KeyKind::Pinned }]);
        // A pinned profile that is not in the snapshot: nothing, never the model's profile.
        assert_eq!(index.lookup(&device(Some("MT02"), None, &["sn2410"])), None);
        assert_eq!(index.switch_of(&device(Some("MT02"), None, &[])), Some(1));
        // A device without a serial is its Switch's by MAC (normalised); one with another serial
        // is not, whatever MAC it sends.
        let by_mac = device(None, Some("0c-42-a1-00-00-03"), &[]);
        assert_eq!(index.lookup(&by_mac), Some(Match { profile: 1, by: KeyKind::Pinned }));
        let liar = device(Some("MT99"), Some("0c:42:a1:00:00:03"), &["sn2410"]);
        assert_eq!(index.switch_of(&liar), None);
        assert_eq!(index.lookup(&liar), Some(Match { profile: 0, by: KeyKind::Model }));
        // A device without a Switch matches as before.
        assert_eq!(index.lookup(&device(Some("MT04"), None, &["SN2410"])).map(|m| m.profile), Some(0));
    }

    #[test]
    fn a_switchs_declared_model_and_mac_match_a_device_that_sends_none() {
        let mut snap = snapshot(vec![
            profile("by-model", &[], &[], &["sn2410"]),
            profile("by-mac", &[], &["0c:42:a1:00:00:05"], &[]),
        ]);
        snap.switches = vec![
            SwitchSnapshot { model: Some("sn2410".into()), ..switch("leaf04", "MT04", None, None) },
            switch("leaf05", "MT05", Some("0C:42:A1:00:00:05"), None),
        ];
        let index = DeviceIndex::build(&snap);
        // A section fetched by serial alone: the Switch's model stands in.
        assert_eq!(
            index.lookup(&device(Some("MT04"), None, &[])),
            Some(Match { profile: 0, by: KeyKind::Model })
        );
        assert_eq!(
            index.lookup(&device(Some("MT05"), None, &[])),
            Some(Match { profile: 1, by: KeyKind::Mac })
        );
        // What the device sends comes first.
        assert_eq!(index.lookup(&device(Some("MT04"), None, &["other"])), None);
        assert_eq!(index.lookup(&device(Some("MT05"), Some("0c:42:a1:00:00:99"), &[])), None);
    }

    #[test]
    fn of_two_switches_naming_one_serial_the_older_counts() {
        let mut snap = snapshot(vec![profile("a", &[], &[], &[]), profile("b", &[], &[], &[])]);
        let t = |s: &str| Some(Time(s.parse().expect("time")));
        snap.switches = vec![
            SwitchSnapshot {
                created: t("2026-11-02T00:00:00Z"),
                ..switch("a-newer", "MT01", None, Some("a"))
            },
            SwitchSnapshot {
                created: t("2026-11-01T00:00:00Z"),
                ..switch("b-older", "MT01", None, Some("b"))
            },
        ];
        let index = DeviceIndex::build(&snap);
        assert_eq!(index.switch_of(&device(Some("MT01"), None, &[])), Some(1));
        assert_eq!(index.lookup(&device(Some("MT01"), None, &[])).map(|m| m.profile), Some(1));
        // Without creation times (standalone): the first by namespace/name.
        snap.switches.iter_mut().for_each(|s| s.created = None);
        assert_eq!(DeviceIndex::build(&snap).switch_of(&device(Some("MT01"), None, &[])), Some(0));
    }
}

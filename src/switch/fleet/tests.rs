use std::collections::BTreeMap;

use super::*;
use crate::switch::limit::PerSource;
use crate::{
    api::{DeviceFacts, MatchedBy, SwitchPhase},
    switch::lifecycle::{Event, What},
};

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).expect("time")
}

fn options(discover: Discover, max_unmatched: usize) -> FleetOptions {
    FleetOptions { discover, max_unmatched, per_source_per_minute: 1000, namespace: "default".into() }
}

/// A limit no test reaches.
fn free() -> PerSource {
    PerSource::new(1000)
}

fn leaf() -> Option<MatchedProfile> {
    Some(MatchedProfile { name: "leaf".into(), namespace: Some("net".into()), by: MatchedBy::Serial })
}

/// A request of `serial` at `at` that matched `matched`, with `what` it did.
fn seen(at: i64, matched: Option<MatchedProfile>, what: Option<What>) -> Pending {
    Pending {
        facts: DeviceFacts { address: Some("192.0.2.7".into()), ..Default::default() },
        matched: Some(matched),
        last_seen: Some(t(at)),
        events: what.map(|what| Event { at: t(at), what }).into_iter().collect(),
    }
}

fn declared(name: &str, serial: &str, f: impl FnOnce(&mut SwitchSpec)) -> Arc<Switch> {
    let mut spec = SwitchSpec::for_serial(serial);
    f(&mut spec);
    Arc::new(Switch::new(name, spec))
}

fn none(_: &SwitchSpec) -> Option<MatchedProfile> {
    None
}

fn phase(f: &Fleet, serial: &str) -> Option<SwitchPhase> {
    f.by_serial[serial].status.as_ref().and_then(|s| s.phase)
}

#[test]
fn a_matched_device_is_discovered_and_follows_its_lifecycle() {
    let mut f = Fleet::default();
    let o = options(Discover::Matched, 10);
    assert!(f.flush(
        vec![("SN1".into(), seen(1, leaf(), Some(What::ConfigServed { start: true })))],
        &o,
        &mut free(),
        &none,
        t(2)
    ));
    let s = &f.by_serial["SN1"];
    assert_eq!(s.metadata.name.as_deref(), Some(name::for_serial("SN1").as_str()));
    assert_eq!(s.metadata.namespace.as_deref(), Some("net"), "in its profile's namespace");
    assert!(discovered(s));
    assert_eq!(phase(&f, "SN1"), Some(SwitchPhase::Configuring));
    // Nothing new: nothing changes (the file is not written again).
    assert!(!f.flush(Vec::new(), &o, &mut free(), &none, t(3)));
    // An unmatched device: not with `matched`, yes with `all`.
    assert!(!f.flush(vec![("SN2".into(), seen(4, None, None))], &o, &mut free(), &none, t(5)));
    assert!(f.flush(
        vec![("SN2".into(), seen(4, None, None))],
        &options(Discover::All, 10),
        &mut free(),
        &none,
        t(5)
    ));
    assert_eq!(phase(&f, "SN2"), Some(SwitchPhase::Unmatched));
    assert_eq!(f.by_serial["SN2"].metadata.namespace.as_deref(), Some("default"));
}

#[test]
fn made_up_serials_keep_at_most_max_unmatched_the_oldest_going_first() {
    let mut f = Fleet::default();
    let o = options(Discover::All, 3);
    for i in 0..10 {
        f.flush(vec![(format!("FAKE{i}"), seen(i, None, None))], &o, &mut free(), &none, t(i));
    }
    let left: Vec<&String> = f.by_serial.keys().collect();
    assert_eq!(left, ["FAKE7", "FAKE8", "FAKE9"]);
}

#[test]
fn the_folders_switches_are_declared_their_status_kept_and_a_spec_change_shows_at_once() {
    let mut f = Fleet::default();
    let o = options(Discover::All, 10);
    f.flush(vec![("SN1".into(), seen(1, leaf(), None))], &o, &mut free(), &none, t(1));
    // Declared with the same serial: it replaces the discovered one, keeping the status.
    let mine = declared("leaf-1", "SN1", |s| s.hostname = Some("leaf-1".into()));
    assert!(f.declare(std::slice::from_ref(&mine)));
    assert_eq!(f.by_serial["SN1"].metadata.name.as_deref(), Some("leaf-1"));
    assert!(f.by_serial["SN1"].status.is_some());
    assert!(!f.declare(&[mine]), "the same folder again changes nothing");
    // Put on hold in the folder: Held at the next flush, without its device.
    f.declare(&[declared("leaf-1", "SN1", |s| s.hold = true)]);
    assert!(f.flush(Vec::new(), &o, &mut free(), &none, t(2)));
    assert_eq!(phase(&f, "SN1"), Some(SwitchPhase::Held));
    // A Switch new in the folder shows the profile its declared keys match before its device asks.
    f.declare(&[declared("leaf-1", "SN1", |s| s.hold = true), declared("leaf-2", "SN2", |_| {})]);
    f.flush(Vec::new(), &o, &mut free(), &|_| leaf(), t(3));
    assert_eq!(f.by_serial["SN2"].status.as_ref().and_then(|s| s.matched_profile.clone()), leaf());
    assert_eq!(phase(&f, "SN2"), Some(SwitchPhase::Discovered));
    // Gone from the folder: gone; a discovered one stays.
    f.flush(vec![("SN3".into(), seen(4, None, None))], &o, &mut free(), &none, t(4));
    assert!(f.declare(&[]));
    let left: Vec<&String> = f.by_serial.keys().collect();
    assert_eq!(left, ["SN3"]);
}

#[test]
fn one_source_makes_up_at_most_its_share_of_serials_a_minute() {
    let mut f = Fleet::default();
    let o = FleetOptions { per_source_per_minute: 2, ..options(Discover::All, 100) };
    let mut limit = PerSource::new(o.per_source_per_minute);
    for i in 0..5 {
        f.flush(vec![(format!("FAKE{i}"), seen(i, None, None))], &o, &mut limit, &none, t(i));
    }
    let left: Vec<&String> = f.by_serial.keys().collect();
    assert_eq!(left, ["FAKE0", "FAKE1"], "the same source (192.0.2.7) past its share creates nothing");
}

#[tokio::test]
async fn the_file_round_trips_and_a_bad_one_starts_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(FILE);
    assert!(load(&path).by_serial.is_empty(), "no file yet");
    let mut f = Fleet::default();
    f.declare(&[declared("leaf-1", "SN1", |s| s.variables = BTreeMap::from([("a".into(), "b".into())]))]);
    f.flush(
        vec![("SN1".into(), seen(1, leaf(), None))],
        &options(Discover::All, 10),
        &mut free(),
        &none,
        t(1),
    );
    save(&path, &f).await.expect("save");
    let json = |f: &Fleet| serde_json::to_value(f.switches()).expect("json");
    assert_eq!(json(&load(&path)), json(&f));
    let listed: Vec<Switch> =
        serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("a list of Switches");
    assert_eq!(listed.len(), 1);
    std::fs::write(&path, b"{not json").expect("write");
    assert!(load(&path).by_serial.is_empty());
}

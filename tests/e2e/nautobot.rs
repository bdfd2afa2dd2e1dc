//! NautobotSource against a real Nautobot 3.2.7 (`scripts/nautobot`: PostgreSQL, Redis and
//! Nautobot's web server on loopback; the fleet made through Nautobot's own REST API).
//!
//! The reader: a full read maps the fleet; the change log then brings exactly what changed (a
//! serial, a MAC, intended software, a deleted device) with requests in proportion to the
//! changes, and a poll without changes is one request; a wrong token or a stopped Nautobot is a
//! clear error that leaves the inventory as it was.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{
    ResourceExt,
    api::{Api, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use ztp_operator::{
    api::{NautobotSource, OsImage, Switch, nautobot::NautobotSourceSpec},
    nautobot::{
        client::{Nautobot as Client, NautobotError},
        desired,
        plan::SOURCE_LABEL,
        read::{self, Delta},
    },
    switch::name::for_serial,
};

use crate::support::{
    self,
    controller::{is_ready, start_controller, wait_for},
    forward::{Forwarder, Options},
    nautobot::{Nautobot, SonicFleet},
    pki::Pki,
    store::{Backend, TestStore},
};

fn spec(url: &str) -> NautobotSourceSpec {
    serde_json::from_value(serde_json::json!({
        "url": url, "tokenSecretRef": {"name": "nautobot", "key": "token"},
    }))
    .expect("spec")
}

#[tokio::test]
async fn the_reader_follows_the_fleet_fully_then_by_change_log() {
    let nb = Nautobot::start("reader").await;
    let loaded = nb.load(&["--devices", "12", "--images", "4"]).await;
    assert_eq!(loaded["devices"], 12, "{loaded}");
    let spec = spec(&nb.url);
    let client = Client::new(&nb.url, &nb.token, None).expect("client");

    let (mut inv, mut mark) = read::full(&client, &spec).await.expect("full read");
    let first = desired(&inv, &spec);
    assert_eq!(first.switches.len(), 12, "{:?}", first.skipped);
    assert!(first.skipped.is_empty(), "{:?}", first.skipped);
    let full_requests = client.requests();

    // Nothing changed: one request.
    assert_eq!(read::changes(&client, &spec, &mut inv, &mut mark).await.expect("poll"), Delta::Nothing);
    assert_eq!(client.requests(), full_requests + 1);

    // A new serial, a new MAC, another device deleted: read again by id, not the fleet.
    nb.fleet(&["set-serial", "sw-00002", "SN-NEW-2"]).await;
    nb.fleet(&["set-mac", "sw-00003", "02:5a:00:aa:bb:cc"]).await;
    nb.fleet(&["delete", "sw-00004"]).await;
    let before = client.requests();
    let delta = read::changes(&client, &spec, &mut inv, &mut mark).await.expect("poll");
    assert!(matches!(delta, Delta::Applied(n) if n >= 3), "{delta:?}");
    assert!(client.requests() - before <= 4, "{} requests for three changes", client.requests() - before);
    let now = desired(&inv, &spec);
    assert_eq!(now.switches.len(), 11);
    let serials: Vec<&str> = now.switches.values().map(|s| s.spec.serial_number.as_str()).collect();
    assert!(serials.contains(&"SN-NEW-2") && !serials.contains(&"SN00002") && !serials.contains(&"SN00004"));
    let sw3 = now.switches.values().find(|s| s.device_name.as_deref() == Some("sw-00003")).expect("sw-00003");
    assert_eq!(sw3.spec.mac_address.as_deref(), Some("02:5a:00:aa:bb:cc"));
    // The incremental inventory is what a full read gives.
    let (fresh, _) = read::full(&client, &spec).await.expect("full read");
    assert_eq!(desired(&fresh, &spec), now);
    assert_eq!(read::changes(&client, &spec, &mut inv, &mut mark).await.expect("poll"), Delta::Nothing);

    // A wrong token: refused, said so; Nautobot stopped: unreachable. The inventory stays.
    let wrong = Client::new(&nb.url, "0123456789abcdef0123456789abcdef01234567", None).expect("client");
    let e = read::full(&wrong, &spec).await.expect_err("a wrong token");
    assert!(
        matches!(&e, NautobotError::Refused { status: 403, detail, .. } if detail == "Invalid token"),
        "{e}"
    );
    nb.stop_web().await;
    let kept = inv.clone();
    let e = read::changes(&client, &spec, &mut inv, &mut mark).await.expect_err("Nautobot is down");
    assert!(matches!(e, NautobotError::Unreachable { .. }), "{e}");
    assert_eq!(inv, kept);
    nb.start_web().await;
    assert_eq!(read::changes(&client, &spec, &mut inv, &mut mark).await.expect("poll"), Delta::Nothing);
}

/// The Switches of namespace `ns` by name.
async fn switches(api: &Api<Switch>) -> BTreeMap<String, Switch> {
    let list = api.list(&ListParams::default()).await.expect("list Switches");
    list.items.into_iter().map(|s| (s.name_any(), s)).collect()
}

/// Polls the source until `want` holds for it.
async fn wait_source(
    api: &Api<NautobotSource>,
    what: &str,
    want: impl Fn(&NautobotSource) -> bool,
) -> NautobotSource {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = api.get("dc1").await.expect("get source");
        if want(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: not within 60 s; status {:#?}", s.status);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn condition(s: &NautobotSource, type_: &str) -> Option<(String, String, String)> {
    let c = s.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn is(s: &NautobotSource, type_: &str, status: &str) -> bool {
    condition(s, type_).is_some_and(|(st, _, _)| st == status)
}

fn synced_after(
    s: &NautobotSource,
    t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
) -> bool {
    let last = s.status.as_ref().and_then(|st| st.last_sync_time.clone());
    last.is_some() && last > *t && is(s, "Ready", "True")
}

/// A NautobotSource against a real apiserver and a real Nautobot: the fleet becomes Switches and
/// OsImages (which then fetch and verify from a test HTTP source), each device's Switch pinned to
/// its intended software's image; a hand-made Switch is never touched (a `Conflict`); changes in
/// Nautobot reach the Switches at the next poll (serial, MAC, intended software), a duplicate
/// serial is skipped and reported while both Switches stay as they were, a deleted device's Switch
/// is orphaned (`prune: Orphan`) or deleted (`prune: Delete`); Nautobot down or a wrong token is a
/// `Stalled` source that changes nothing.
#[tokio::test]
async fn a_source_keeps_switches_and_images_as_nautobot_says() {
    let t = support::kube_test("nautobot-source").await;
    let store = TestStore::new(Backend::Fs, "nautobot-source").await;
    // Eight devices: sw-00002 and sw-00006 are SONiC, with 4.0.1 (sonic-a.bin) and 4.0.2 (sonic-b.bin).
    let SonicFleet { nb, src: _src, .. } = SonicFleet::start("source", 8, 81).await;

    let ns = t.namespace.clone();
    let secrets: Api<Secret> = Api::namespaced(t.client.clone(), &ns);
    let token_secret = |token: &str| -> Secret {
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "nautobot"}, "stringData": {"token": token}}))
        .expect("secret")
    };
    secrets.create(&PostParams::default(), &token_secret(&nb.token)).await.expect("create Secret");
    // A Switch made by hand for sw-00005's serial: the source must leave it alone.
    let sw_api: Api<Switch> = Api::namespaced(t.client.clone(), &ns);
    let hand_name = for_serial("SN00005");
    let hand: Switch =
        serde_json::from_value(json!({"apiVersion": "ztp.netops.dev/v1alpha1", "kind": "Switch",
        "metadata": {"name": hand_name}, "spec": {"serialNumber": "SN00005", "hostname": "by-hand"}}))
        .expect("switch");
    sw_api.create(&PostParams::default(), &hand).await.expect("create hand-made Switch");

    let _controller = start_controller(&t, &store);
    let sources: Api<NautobotSource> = Api::namespaced(t.client.clone(), &ns);
    let source: NautobotSource = serde_json::from_value(json!({
        "apiVersion": "ztp.netops.dev/v1alpha1", "kind": "NautobotSource", "metadata": {"name": "dc1"},
        "spec": {"url": nb.url, "tokenSecretRef": {"name": "nautobot", "key": "token"}, "intervalSeconds": 10,
                 "switches": {"profiles": [{"role": "spine", "profile": "spines"}, {"role": "leaf", "profile": "leafs"}]}},
    }))
    .expect("source");
    sources.create(&PostParams::default(), &source).await.expect("create source");

    // First sync: seven Switches (the eighth clashes), two OsImages, Ready.
    let synced = wait_source(&sources, "first sync", |s| is(s, "Ready", "True")).await;
    let st = synced.status.clone().expect("status");
    assert_eq!(st.devices, Some(8));
    assert_eq!(st.switches.as_ref().map(|c| (c.total, c.created)), Some((7, 7)), "{st:#?}");

    let (conflict, reason, message) = condition(&synced, "Conflict").expect("Conflict");
    assert_eq!((conflict.as_str(), reason.as_str()), ("True", "NameClash"));
    assert!(message.contains(&hand_name) && message.contains("made by hand"), "{message}");
    let all = switches(&sw_api).await;
    assert_eq!(all.len(), 8);
    assert_eq!(
        all[&hand_name].spec.hostname.as_deref(),
        Some("by-hand"),
        "the hand-made Switch is untouched"
    );
    assert!(all[&hand_name].labels().get(SOURCE_LABEL).is_none());
    let sw1 = &all[&for_serial("SN00001")];
    assert_eq!(sw1.labels().get(SOURCE_LABEL).map(String::as_str), Some("dc1"));
    assert_eq!(sw1.spec.hostname.as_deref(), Some("sw-00001"));
    assert_eq!(sw1.spec.mac_address.as_deref(), Some("02:5a:00:00:00:01"));
    assert_eq!(sw1.spec.os_image, None, "not SONiC: no intended software here");
    assert_eq!(sw1.spec.profile.as_deref(), Some("leafs"), "by its role");
    let sonic = &all[&for_serial("SN00002")];
    let pinned = sonic.spec.os_image.clone().expect("SONiC devices are pinned");
    // `images.select: Intended`: an OsImage for each image file a device is pinned to.
    let pins: std::collections::BTreeSet<&String> =
        all.values().filter_map(|s| s.spec.os_image.as_ref()).collect();
    assert_eq!(
        pins.len(),
        if all[&for_serial("SN00006")].spec.os_image == Some(pinned.clone()) { 1 } else { 2 }
    );
    let n = i64::try_from(pins.len()).expect("small");
    assert_eq!(st.images.as_ref().map(|c| (c.total, c.created)), Some((n, n)), "{st:#?}");
    // The OsImages fetch and verify from the source; the pin names one of them.
    let os_images: Api<OsImage> = Api::namespaced(t.client.clone(), &ns);
    let ready = wait_for(&os_images, &pinned, "Ready", is_ready).await;
    assert_eq!(ready.spec.platform, "sonic");
    assert_eq!(ready.labels().get(SOURCE_LABEL).map(String::as_str), Some("dc1"));
    let other = ["sonic-a.bin", "sonic-b.bin"]
        .into_iter()
        .find(|f| ready.spec.filename.as_deref() != Some(*f))
        .expect("the other file");
    let other_version = if other == "sonic-a.bin" { "4.0.1" } else { "4.0.2" };

    // Changes in Nautobot reach the Switches at the next poll.
    let before = synced.status.as_ref().and_then(|s| s.last_sync_time.clone());
    nb.fleet(&["set-serial", "sw-00001", "SN-NEW-1"]).await;
    nb.fleet(&["set-mac", "sw-00003", "02:5a:00:aa:bb:cc"]).await;
    nb.fleet(&["set-software", "sw-00002", other_version]).await;
    nb.fleet(&["delete", "sw-00008"]).await;
    // Last: the skips it makes say the poll saw every change before it.
    nb.fleet(&["duplicate-serial", "sw-00004", "sw-00007"]).await;
    let after = wait_source(&sources, "the changes synced", |s| {
        synced_after(s, &before) && s.status.as_ref().is_some_and(|st| st.skipped == Some(2))
    })
    .await;
    let st = after.status.clone().expect("status");
    let mut skipped: Vec<(&str, String)> =
        st.skipped_devices.iter().map(|s| (s.name.as_str(), format!("{:?}", s.reason))).collect();
    skipped.sort();
    assert_eq!(
        skipped,
        [("sw-00004", "DuplicateSerial".to_owned()), ("sw-00007", "DuplicateSerial".to_owned())],
        "{st:#?}"
    );
    let all = switches(&sw_api).await;
    assert!(all.contains_key(&for_serial("SN-NEW-1")), "the new serial's Switch");
    let old = &all[&for_serial("SN00001")];
    assert!(old.labels().get(SOURCE_LABEL).is_none(), "prune: Orphan leaves the old Switch, unmanaged");
    assert_eq!(all[&for_serial("SN00003")].spec.mac_address.as_deref(), Some("02:5a:00:aa:bb:cc"));
    let repinned = all[&for_serial("SN00002")].spec.os_image.clone().expect("pinned");
    assert_ne!(repinned, pinned, "the intended version moved");
    assert_eq!(os_images.get(&repinned).await.expect("image").spec.filename.as_deref(), Some(other));
    // Skipped devices keep their Switches as they were; the deleted device's is orphaned.
    for serial in ["SN00004", "SN00007"] {
        let sw = &all[&for_serial(serial)];
        assert_eq!(sw.labels().get(SOURCE_LABEL).map(String::as_str), Some("dc1"), "{serial} kept");
    }
    assert!(all[&for_serial("SN00008")].labels().get(SOURCE_LABEL).is_none());
    assert_eq!(st.switches.as_ref().map(|c| c.orphaned), Some(2), "{st:#?}");

    // Nautobot down: Stalled, nothing changes; back up: Ready.
    nb.stop_web().await;
    let down = wait_source(&sources, "Stalled while Nautobot is down", |s| is(s, "Stalled", "True")).await;
    let (_, reason, message) = condition(&down, "Stalled").expect("Stalled");
    assert_eq!(reason, "NautobotError");
    assert!(message.contains("cannot reach Nautobot"), "{message}");
    let versions = |m: &BTreeMap<String, Switch>| -> Vec<(String, Option<String>)> {
        m.iter().map(|(k, s)| (k.clone(), s.resource_version())).collect()
    };
    assert_eq!(versions(&switches(&sw_api).await), versions(&all), "nothing changed while Nautobot was down");
    nb.start_web().await;
    let back =
        wait_source(&sources, "Ready again", |s| is(s, "Ready", "True") && is(s, "Stalled", "False")).await;
    // A wrong token: Stalled, saying so.
    let wrong = json!({"stringData": {"token": "0123456789abcdef0123456789abcdef01234567"}});
    secrets.patch("nautobot", &PatchParams::default(), &Patch::Merge(&wrong)).await.expect("patch Secret");
    let refused = wait_source(&sources, "Stalled on a wrong token", |s| is(s, "Stalled", "True")).await;
    let (_, _, message) = condition(&refused, "Stalled").expect("Stalled");
    assert!(message.contains("refused the token") && message.contains("Invalid token"), "{message}");
    let right = json!({"stringData": {"token": nb.token}});
    secrets.patch("nautobot", &PatchParams::default(), &Patch::Merge(&right)).await.expect("patch Secret");
    let _ = back;

    // prune: Delete: a deleted device's Switch goes.
    let delete = json!({"spec": {"prune": "Delete"}});
    sources.patch("dc1", &PatchParams::default(), &Patch::Merge(&delete)).await.expect("patch source");
    let before = wait_source(&sources, "Ready with prune Delete", |s| {
        is(s, "Ready", "True")
            && s.status.as_ref().and_then(|st| st.observed_generation) == s.metadata.generation
    })
    .await
    .status
    .and_then(|s| s.last_sync_time);
    nb.fleet(&["delete", "sw-00003"]).await;
    wait_source(&sources, "the deletion synced", |s| synced_after(s, &before)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while sw_api.get_opt(&for_serial("SN00003")).await.expect("get").is_some() {
        assert!(Instant::now() < deadline, "sw-00003's Switch not deleted with prune: Delete");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(sw_api.get_opt(&hand_name).await.expect("get").is_some(), "the hand-made one stays");
}

/// The source `dc1` of `spec` (the fields a test sets beside url and token).
fn source_of(url: &str, spec: serde_json::Value) -> NautobotSource {
    let mut all = json!({"url": url, "tokenSecretRef": {"name": "nautobot", "key": "token"}});
    all.as_object_mut().expect("object").extend(spec.as_object().expect("object").clone());
    serde_json::from_value(json!({
        "apiVersion": "ztp.netops.dev/v1alpha1", "kind": "NautobotSource", "metadata": {"name": "dc1"},
        "spec": all,
    }))
    .expect("source")
}

async fn token_secret(client: &kube::Client, ns: &str, token: &str) {
    let secret: Secret = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "nautobot"}, "stringData": {"token": token}}))
    .expect("secret");
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create Secret");
}

/// Every Switch and OsImage of the namespace with its resourceVersion.
async fn versions(client: &kube::Client, ns: &str) -> BTreeMap<String, Option<String>> {
    let lp = ListParams::default();
    let switches = Api::<Switch>::namespaced(client.clone(), ns).list(&lp).await.expect("list Switches");
    let images = Api::<OsImage>::namespaced(client.clone(), ns).list(&lp).await.expect("list OsImages");
    // What the sync writes (spec, labels, annotations), not the resourceVersion: the image and
    // Switch controllers write status (an OsImage's fetch) at their own pace.
    let written =
        |m: &kube::api::ObjectMeta| Some(format!("{:?} {:?} {:?}", m.generation, m.labels, m.annotations));
    let switches = switches.items.iter().map(|s| (format!("Switch/{}", s.name_any()), written(&s.metadata)));
    let images = images.items.iter().map(|i| (format!("OsImage/{}", i.name_any()), written(&i.metadata)));
    switches.chain(images).collect()
}

/// The full read: its one GraphQL query.
fn graphql(target: &str) -> bool {
    target == "/api/graphql/"
}

/// The incremental read's second step: devices read again by id (after the change log named them).
fn device_reread(target: &str) -> bool {
    target.split_once('?').is_some_and(|(path, query)| {
        path == "/api/dcim/devices/" && query.split('&').any(|p| p.starts_with("id="))
    })
}

fn last_sync(s: &NautobotSource) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time> {
    s.status.as_ref().and_then(|st| st.last_sync_time.clone())
}

/// Nautobot's web server stopped in the middle of a read changes nothing: a forwarder between the
/// controller and Nautobot holds one request of a read, and the test stops Nautobot's web server
/// (for real: `scripts/nautobot stop-web`) before it lets the request go on.
///
/// 1. The first sync (a full read: one GraphQL query) cut off that way creates no Switch and no
///    OsImage; the source is `Stalled` (`Ready=False`) with Nautobot's error and has no
///    `lastSyncTime`. Nautobot back: the next poll creates all.
/// 2. After that sync a device is deleted in Nautobot, and the incremental read that follows is
///    cut off half-way: the change log naming the deletion is read, the device's read by id (which
///    would find it gone) is held and Nautobot stopped. No object is created, changed or deleted
///    (its Switch included: `prune: Delete`), `lastSyncTime` and the change-log cursor stay (the
///    deletion is not taken as read). Nautobot back: the next read prunes the device's Switch.
#[tokio::test]
async fn nautobot_stopped_in_the_middle_of_a_read_changes_nothing() {
    let t = support::kube_test("nautobot-cut").await;
    let store = TestStore::new(Backend::Fs, "nautobot-cut").await;
    let (client, ns) = (t.client.clone(), t.namespace.clone());
    // Eight devices: sw-00002 and sw-00006 are SONiC, pinned to served images.
    let SonicFleet { nb, src: _src, .. } = SonicFleet::start("cut", 8, 71).await;
    let fwd = Forwarder::start(&nb.url, Options::default()).await;
    token_secret(&client, &ns, &nb.token).await;
    let sources: Api<NautobotSource> = Api::namespaced(client.clone(), &ns);
    let _controller = start_controller(&t, &store);

    // 1. The first sync, its full read cut off.
    let mut held = fwd.hold(graphql);
    let spec = json!({"intervalSeconds": 10, "prune": "Delete"});
    sources.create(&PostParams::default(), &source_of(&fwd.url, spec)).await.expect("create source");
    let query = held.arrived(Duration::from_secs(60)).await;
    nb.stop_web().await;
    held.release();
    let down = wait_source(&sources, "Stalled after the cut-off read", |s| is(s, "Stalled", "True")).await;
    let (_, reason, message) = condition(&down, "Stalled").expect("Stalled");
    println!("held {query}; then Stalled ({reason}): {message}");
    assert_eq!(reason, "NautobotError");
    assert!(message.contains(&format!("cannot reach Nautobot at {}/api/", fwd.url)), "{message}");
    assert_eq!(condition(&down, "Ready").map(|c| c.0).as_deref(), Some("False"));
    assert_eq!(last_sync(&down), None, "no sync succeeded");
    assert_eq!(versions(&client, &ns).await, BTreeMap::new(), "no Switch or OsImage made");
    nb.start_web().await;
    let up = wait_source(&sources, "Ready once Nautobot is back", |s| is(s, "Ready", "True")).await;
    let st = up.status.clone().expect("status");
    assert_eq!(st.switches.as_ref().map(|c| (c.total, c.created)), Some((8, 8)), "{st:#?}");
    assert!(is(&up, "Stalled", "False"));

    // 2. A device leaves Nautobot; the incremental read that follows is cut off after the change
    //    log: nothing is pruned.
    let before = versions(&client, &ns).await;
    let gone = format!("Switch/{}", for_serial("SN00008"));
    assert!(before.contains_key(&gone), "{before:?}");
    let mut held = fwd.hold(device_reread);
    nb.fleet(&["delete", "sw-00008"]).await;
    let reread = held.arrived(Duration::from_secs(60)).await;
    let requests = fwd.requests();
    let log = requests.iter().rev().nth(1).cloned().unwrap_or_default();
    assert!(log.starts_with("/api/extras/object-changes/?"), "the change log came first: {requests:?}");
    // The status as the held sync found it (the controller runs one sync of a source at a time).
    let cut_from = sources.get("dc1").await.expect("get source");
    nb.stop_web().await;
    held.release();
    let down =
        wait_source(&sources, "Stalled after the cut-off incremental read", |s| is(s, "Stalled", "True"))
            .await;
    let (_, _, message) = condition(&down, "Stalled").expect("Stalled");
    println!("held {reread} after {log}; then Stalled: {message}");
    assert!(message.contains("cannot reach Nautobot"), "{message}");
    assert_eq!(last_sync(&down), last_sync(&cut_from), "the last successful sync stays");
    let (was, is_now) = (cut_from.status.expect("status"), down.status.clone().expect("status"));
    assert_eq!(is_now.cursor, was.cursor, "the change log's cursor does not move past the deletion");
    assert_eq!(is_now.switches, was.switches);
    assert_eq!(versions(&client, &ns).await, before, "nothing created, changed or deleted");
    nb.start_web().await;
    let pruned = wait_source(&sources, "Ready with the device pruned", |s| {
        is(s, "Ready", "True")
            && s.status.as_ref().and_then(|st| st.switches.as_ref()).is_some_and(|c| c.total == 7)
    })
    .await;
    assert!(is(&pruned, "Stalled", "False"));
    let after = versions(&client, &ns).await;
    assert!(!after.contains_key(&gone), "a complete read prunes: {after:?}");
    assert_eq!(after.len(), before.len() - 1, "only the deleted device's Switch went: {after:?}");
}

/// Nautobot over HTTPS (a TLS-terminating forwarder in front of it, its certificate from a test
/// CA): a `caBundleRef` ConfigMap holding another CA is a `Stalled` source whose message says the
/// certificate is not trusted and where the CA bundle comes from, with nothing made; the right
/// CA in the ConfigMap makes the next poll `Ready` with the Switches.
#[tokio::test]
async fn a_wrong_ca_for_nautobot_over_https_is_a_clear_stalled() {
    let t = support::kube_test("nautobot-ca").await;
    let store = TestStore::new(Backend::Fs, "nautobot-ca").await;
    let (client, ns) = (t.client.clone(), t.namespace.clone());
    let SonicFleet { nb, src: _src, .. } = SonicFleet::start("ca", 4, 61).await;
    let pki = tempfile::tempdir().expect("tempdir");
    let (right, wrong) = (pki.path().join("right"), pki.path().join("wrong"));
    std::fs::create_dir_all(&right).and_then(|()| std::fs::create_dir_all(&wrong)).expect("mkdir");
    let (right, wrong) = (Pki::new(&right, "nautobot-test-ca"), Pki::new(&wrong, "another-ca"));
    let tls = right.serving("nautobot", &["localhost"], &[Ipv4Addr::LOCALHOST]);
    let fwd = Forwarder::start(&nb.url, Options { tls: Some(tls), ..Default::default() }).await;
    assert!(fwd.url.starts_with("https://"));
    token_secret(&client, &ns, &nb.token).await;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let bundle = |pem: &str| -> ConfigMap {
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "nautobot-ca"}, "data": {"ca.crt": pem}}))
        .expect("ConfigMap")
    };
    config_maps.create(&PostParams::default(), &bundle(&wrong.ca_pem)).await.expect("create ConfigMap");
    let sources: Api<NautobotSource> = Api::namespaced(client.clone(), &ns);
    let _controller = start_controller(&t, &store);
    let spec = json!({"intervalSeconds": 10, "caBundleRef": {"name": "nautobot-ca", "key": "ca.crt"}});
    sources.create(&PostParams::default(), &source_of(&fwd.url, spec)).await.expect("create source");

    let refused = wait_source(&sources, "Stalled on a wrong CA", |s| is(s, "Stalled", "True")).await;
    let (_, reason, message) = condition(&refused, "Stalled").expect("Stalled");
    println!("a wrong CA: Stalled ({reason}): {message}");
    assert_eq!(reason, "NautobotError");
    assert!(message.contains(&fwd.url), "{message}");
    assert!(message.starts_with(&format!("Nautobot's TLS certificate at {}/api/", fwd.url)), "{message}");
    assert!(message.contains("is not trusted: it is not signed by a CA this client trusts"), "{message}");
    assert!(message.contains("caBundleRef names (ConfigMap nautobot-ca, key ca.crt)"), "{message}");
    assert_eq!(condition(&refused, "Ready").map(|c| c.0).as_deref(), Some("False"));
    assert_eq!(versions(&client, &ns).await, BTreeMap::new(), "nothing made");
    assert!(fwd.requests().is_empty(), "no request got through TLS: {:?}", fwd.requests());

    let fixed = json!({"data": {"ca.crt": right.ca_pem}});
    config_maps.patch("nautobot-ca", &PatchParams::default(), &Patch::Merge(&fixed)).await.expect("patch");
    let ready = wait_source(&sources, "Ready with the right CA", |s| is(s, "Ready", "True")).await;
    let st = ready.status.expect("status");
    assert_eq!(st.switches.as_ref().map(|c| (c.total, c.created)), Some((4, 4)), "{st:#?}");
    assert_eq!(switches(&Api::namespaced(client.clone(), &ns)).await.len(), 4);
}

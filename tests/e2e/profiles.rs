//! SwitchProfiles claiming the same device on the real apiserver: the older claim keeps the
//! switch, in its namespace or across namespaces; the newcomer is `Ready=False` / `Stalled=True`
//! with reason `Conflict` (kstatus: Failed) and gets one Warning Event.

use std::time::{Duration, Instant};

use k8s_openapi::api::{core::v1::Namespace, events::v1::Event};
use kube::{
    Api, Client,
    api::{ListParams, ObjectMeta, PostParams},
};
use ztp_operator::{
    api::{ConditionType, SwitchProfile},
    profile::{
        identity::{DeviceIdentity, Family},
        index::DeviceIndex,
        publish,
        snapshot::Resolved,
    },
};

use crate::support::{
    self, ControlPlane,
    controller::start_controller_in,
    profiles::{claiming, condition, ready_is, wait_profile},
    store::{Backend, TestStore},
};

/// Which profile (`namespace/name`, and its `startup` text) the current snapshot gives `serial`,
/// through the index the device server uses.
async fn served(store: &TestStore, serial: &str) -> Option<(String, String)> {
    let manifest = store.store.manifest().await.expect("manifest");
    let entry = publish::current_entry(&manifest)?.clone();
    let snapshot = publish::load(&store.store, &entry).await.expect("load snapshot");
    let id = DeviceIdentity { family: Family::Onie, serial: Some(serial.into()), ..Default::default() };
    let m = DeviceIndex::build(&snapshot).lookup(&id)?;
    let p = &snapshot.profiles[m.profile];
    let startup = match p.files.get("startup") {
        Some(Resolved::Text(t)) => t.text.clone(),
        other => panic!("startup of {}: {other:?}", p.name),
    };
    Some((format!("{}/{}", p.namespace, p.name), startup))
}

/// The Events about profile `name` with reason `reason`, after waiting up to 10 s for one.
async fn warnings(client: &Client, ns: &str, name: &str, reason: &str) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ours: Vec<Event> = events
            .list(&ListParams::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .filter(|e| e.reason.as_deref() == Some(reason))
            .collect();
        if !ours.is_empty() || Instant::now() > deadline {
            return ours;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates `b` claiming `serial` after `a` (older by more than the apiserver's one-second
/// timestamps), and checks that `a` keeps the switch and `b` is refused, visibly.
async fn newcomer_is_refused(
    client: &Client,
    store: &TestStore,
    (a_ns, a): (&str, &str),
    (b_ns, b): (&str, &str),
    serial: &str,
) {
    let a_api: Api<SwitchProfile> = Api::namespaced(client.clone(), a_ns);
    let b_api: Api<SwitchProfile> = Api::namespaced(client.clone(), b_ns);
    a_api.create(&PostParams::default(), &claiming(a, serial)).await.expect("create a");
    wait_profile(&a_api, a, "Ready", |p| ready_is(p, "True")).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while served(store, serial).await.as_ref().map(|(n, _)| n.as_str()) != Some(&format!("{a_ns}/{a}")) {
        assert!(Instant::now() < deadline, "{a} never served {serial}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    b_api.create(&PostParams::default(), &claiming(b, serial)).await.expect("create b");

    let lost = wait_profile(&b_api, b, "Ready=False", |p| ready_is(p, "False")).await;
    let (_, reason, msg) = condition(&lost, ConditionType::Ready).expect("Ready");
    assert_eq!(reason, "Conflict", "{msg}");
    assert!(msg.contains(&format!("serial {serial} is also claimed by {a_ns}/{a}, which wins")), "{msg}");
    let (stalled, reason, _) = condition(&lost, ConditionType::Stalled).expect("Stalled");
    assert_eq!((stalled.as_str(), reason.as_str()), ("True", "Conflict"));

    // Let a few rebuilds pass: the switch stays the older profile's, which stays Ready.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kept = a_api.get(a).await.expect("get a");
    assert!(ready_is(&kept, "True"), "{:?}", kept.status);
    assert!(condition(&kept, ConditionType::Stalled).is_none(), "{:?}", kept.status);
    assert_eq!(served(store, serial).await, Some((format!("{a_ns}/{a}"), format!("from {a}"))));

    let events = warnings(client, b_ns, b, "Conflict").await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0].type_.as_deref(), Some("Warning"));
    assert!(events[0].note.as_deref().is_some_and(|n| n.contains(&format!("{a_ns}/{a}"))), "{events:?}");
    // Once, on the transition: not on every rebuild.
    assert_eq!(events[0].series.as_ref().map(|s| s.count), None, "{events:#?}");
}

#[tokio::test]
async fn a_new_profile_never_takes_over_another_profiles_switch() {
    let t = support::kube_test("profiles-older-wins").await;
    let store = TestStore::new(Backend::Fs, "profiles-older-wins").await;
    let _c = start_controller_in(&t.client, Some(t.namespace.clone()), &store);
    let ns = t.namespace.as_str();
    // The newcomer sorts first by name: before, it took the switch.
    newcomer_is_refused(&t.client, &store, (ns, "z-first"), (ns, "a-later"), "SN-OLDER-WINS").await;

    // The older one deleted, the newcomer's claim is no longer contested: it serves and is Ready.
    let api: Api<SwitchProfile> = Api::namespaced(t.client.clone(), ns);
    api.delete("z-first", &Default::default()).await.expect("delete");
    wait_profile(&api, "a-later", "Ready", |p| ready_is(p, "True")).await;
    assert_eq!(served(&store, "SN-OLDER-WINS").await.map(|(n, _)| n), Some(format!("{ns}/a-later")));
}

/// Across namespaces (tenants), on a control plane of its own: the controller watches every
/// namespace, which must not fight the namespaced controllers of the other tests.
#[tokio::test]
async fn a_profile_in_another_namespace_never_takes_over_a_switch() {
    let env = support::env().await;
    let dir = env.run_dir.join(format!("cross-ns-{:x}", support::unique()));
    let logs = env.log_dir.join("cross-ns");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::create_dir_all(&logs).expect("logs");
    let cp = ControlPlane::start(&dir, &logs).await;
    let client = cp.client().await;
    for ns in ["tenant-a", "aaa-tenant-b"] {
        let ns = Namespace {
            metadata: ObjectMeta { name: Some(ns.into()), ..Default::default() },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("namespace");
    }
    let store = TestStore::new(Backend::Fs, "profiles-cross-ns").await;
    let _c = start_controller_in(&client, None, &store);
    newcomer_is_refused(&client, &store, ("tenant-a", "leaf01"), ("aaa-tenant-b", "leaf01"), "SN-TENANT-A")
        .await;
}

//! Device activity, end to end: two replicas of the real `serve` binary with `--report-status`,
//! authenticated as a ServiceAccount whose Role allows nothing but `patch` on
//! `switchprofiles/status` and `create`/`patch` on Events (a token from the TokenRequest API),
//! answer devices that send their family's exact headers; the SwitchProfile's `status.devices`
//! shows the merged counts and recent devices, the Events exist, and the controller's conditions
//! and the server's devices survive each other's writes. Standalone (whose server keeps
//! Switches) writes each profile's Switch counts to `{data}/.status/switchprofiles.json`.

use std::time::{Duration, Instant};

use k8s_openapi::api::{core::v1::Secret, events::v1::Event};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use reqwest::StatusCode;
use serde_json::json;
use ztp_operator::api::{
    ConditionType, DeviceStage, DeviceSummary, SwitchProfile, conditions::find_condition,
};

use crate::support::{
    self,
    controller::{image_lab, start_controller},
    lab::{lab, nvos_headers as nvos, onie_headers},
    procs,
    reporting::{narrow_identity, serve},
    store::{Backend, TestStore},
};

fn summary(p: &SwitchProfile) -> Option<DeviceSummary> {
    p.status.as_ref()?.devices.clone()
}

fn counts(d: &DeviceSummary) -> [i64; 4] {
    [d.seen, d.config_served, d.image_served, d.provisioned]
}

/// Polls the profile until `cond` holds for its status.
async fn wait_profile(
    api: &Api<SwitchProfile>,
    what: &str,
    cond: impl Fn(&SwitchProfile) -> bool,
) -> SwitchProfile {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let p = api.get("leaf").await.expect("get profile");
        if cond(&p) {
            return p;
        }
        assert!(Instant::now() < deadline, "profile not {what} within 30 s; status: {:#?}", p.status);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn ready(p: &SwitchProfile) -> bool {
    p.status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, ConditionType::Ready))
        .is_some_and(|c| c.status == "True")
}

#[tokio::test]
async fn servers_report_device_stages_into_profile_status_and_events() {
    let t = support::kube_test("activity-status").await;
    let store = TestStore::new(Backend::Fs, "activity-status").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let profile = json!({
        "apiVersion": "ztp.netops.dev/v1alpha1", "kind": "SwitchProfile", "metadata": {"name": "leaf"},
        "spec": {
            "match": {"serialNumbers": ["SN-A", "SN-B"]},
            "onie": {"installImage": {"name": "nos"}},
            "ztp": {"sections": [{"kind": "commands-list", "content": {"inline": "nv set system hostname {{ serial }}\n", "template": true}}]},
        },
    });
    let lab = image_lab(&t, &store, 300_000, 41, profile).await;
    let profiles: Api<SwitchProfile> = Api::namespaced(t.client.clone(), &t.namespace);
    wait_profile(&profiles, "Ready", ready).await;

    // The narrow identity: the server works with it, and can read nothing.
    let kubeconfig = narrow_identity(&t, dir.path()).await;
    let narrow = support::controlplane::client_from(&kubeconfig).await;
    let denied = Api::<SwitchProfile>::namespaced(narrow.clone(), &t.namespace).get("leaf").await;
    assert!(matches!(denied, Err(kube::Error::Api(ref s)) if s.code == 403), "{denied:?}");
    let denied = Api::<Secret>::namespaced(narrow, &t.namespace).list(&ListParams::default()).await;
    assert!(matches!(denied, Err(kube::Error::Api(ref s)) if s.code == 403), "{denied:?}");

    let mut a = serve(&store, &kubeconfig, "activity-status-a.log", 1).await;
    let b = serve(&store, &kubeconfig, "activity-status-b.log", 1).await;
    let c = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    // SN-A: its ZTP JSON from replica a, its image (ONIE) from replica b.
    let r = c.get(format!("{}/nvos/ztp.json", a.base)).headers(nvos("SN-A")).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .get(format!("{}/onie-installer", b.base))
        .headers(onie_headers("SN-A", "0c:42:a1:00:00:0a", "os-install"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.expect("body").len(), lab.body.len());
    // SN-B: a section from replica b; a HEAD of the image from replica a is no download.
    let r = c
        .get(format!("{}/nvos/SN-B/sections/01-commands-list", b.base))
        .headers(nvos("SN-B"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.text().await.expect("text"), "nv set system hostname SN-B\n");
    let r =
        c.head(format!("{}/images/nos/1/nos.bin", a.base)).headers(nvos("SN-B")).send().await.expect("head");
    assert_eq!(r.status(), StatusCode::OK);
    // Stored times have whole seconds: let the callback be clearly the newest.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = c.post(format!("{}/v1/devices/SN-A/provisioned", a.base)).send().await.expect("post");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = c.post(format!("{}/v1/devices/SN-NOBODY/provisioned", a.base)).send().await.expect("post");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.text().await.expect("text"), "no profile matches this device\n");

    let p = wait_profile(&profiles, "showing both devices", |p| {
        summary(p).is_some_and(|d| counts(&d) == [2, 2, 1, 1] && d.recent.len() == 2)
    })
    .await;
    let d = summary(&p).expect("devices");
    assert_eq!(d.recent[0].serial.as_deref(), Some("SN-A"), "{d:#?}");
    assert_eq!(d.recent[0].stage, DeviceStage::Provisioned);
    assert_eq!(
        d.recent[0].stages,
        [DeviceStage::Seen, DeviceStage::ConfigServed, DeviceStage::ImageServed, DeviceStage::Provisioned]
    );
    assert_eq!(d.recent[0].mac.as_deref(), Some("0c:42:a1:00:00:0a"));
    assert_eq!(d.recent[0].address.as_deref(), Some("127.0.0.1"));
    assert!(d.recent[0].last_seen.is_some());
    assert_eq!(d.recent[1].serial.as_deref(), Some("SN-B"));
    assert_eq!(d.recent[1].stages, [DeviceStage::Seen, DeviceStage::ConfigServed]);
    // The controller's conditions are untouched; each side owns its own fields.
    assert!(ready(&p), "{:#?}", p.status);
    let managers = p.metadata.managed_fields.clone().unwrap_or_default();
    let fields_of = |manager: &str| {
        managers
            .iter()
            .filter(|m| m.manager.as_deref() == Some(manager) && m.subresource.as_deref() == Some("status"))
            .map(|m| serde_json::to_string(&m.fields_v1).unwrap_or_default())
            .collect::<String>()
    };
    let (server, controller) = (fields_of("ztp-operator-server"), fields_of("ztp-operator"));
    assert!(server.contains("f:devices") && !server.contains("f:conditions"), "{server}");
    assert!(controller.contains("f:conditions") && !controller.contains("f:devices"), "{controller}");

    // Events on the profile, from the server, naming the devices.
    let events: Api<Event> = Api::namespaced(t.client.clone(), &t.namespace);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = events.list(&ListParams::default()).await.expect("list events");
        let ours: Vec<&Event> = list
            .items
            .iter()
            .filter(|e| e.reporting_controller.as_deref() == Some("ztp-operator-server"))
            .collect();
        let notes = |reason: &str| -> Vec<String> {
            ours.iter()
                .filter(|e| e.reason.as_deref() == Some(reason))
                .filter_map(|e| e.note.clone())
                .collect()
        };
        let (seen, provisioned) = (notes("DeviceSeen"), notes("DeviceProvisioned"));
        let names = |serial: &str| seen.iter().any(|n| n.contains(serial) && n.contains("127.0.0.1"));
        if names("SN-A") && names("SN-B") && provisioned.len() == 1 {
            assert!(provisioned[0].contains("SN-A"), "{provisioned:?}");
            let regarding = ours[0].regarding.as_ref().expect("regarding");
            assert_eq!(regarding.name.as_deref(), Some("leaf"));
            assert_eq!(regarding.uid, p.metadata.uid, "events point at the profile's uid");
            break;
        }
        assert!(Instant::now() < deadline, "events missing: seen {seen:?}, provisioned {provisioned:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A controller re-render (new generation) keeps the devices; the server's next write keeps
    // the controller's new observedGeneration.
    let patch = json!({"spec": {"hostname": "leaf-renamed"}});
    let p = profiles.patch("leaf", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch spec");
    let generation = p.metadata.generation;
    let p = wait_profile(&profiles, "re-rendered", |p| {
        p.status.as_ref().and_then(|s| s.observed_generation) == generation
    })
    .await;
    assert_eq!(summary(&p).map(|d| counts(&d)), Some([2, 2, 1, 1]), "{:#?}", p.status);
    assert!(ready(&p));

    // Replica a restarts: a device it knew comes back; it is not counted twice.
    let _ = a.proc.child.kill();
    let _ = a.proc.child.wait();
    a = serve(&store, &kubeconfig, "activity-status-a2.log", 1).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = Instant::now();
    let r = c.get(format!("{}/nvos/ztp.json", a.base)).headers(nvos("SN-B")).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    let p = wait_profile(&profiles, "showing SN-B again", |p| {
        summary(p).is_some_and(|d| d.recent.first().and_then(|r| r.serial.as_deref()) == Some("SN-B"))
    })
    .await;
    assert!(before.elapsed() < Duration::from_secs(30));
    assert_eq!(summary(&p).map(|d| counts(&d)), Some([2, 2, 1, 1]), "{:#?}", p.status);
    assert_eq!(p.status.as_ref().and_then(|s| s.observed_generation), generation);
    for s in [&a, &b] {
        let log = std::fs::read_to_string(&s.proc.log).unwrap_or_default();
        assert!(!log.contains("cannot write device activity"), "{log}");
        assert!(!log.contains("cannot publish device event"), "{log}");
    }
}

#[tokio::test]
async fn standalone_counts_each_profile_s_switches_in_its_status_folder() {
    let lab = lab("activity-standalone").await;
    let c = reqwest::Client::new();
    let r = c
        .get(format!("{}/onie-installer", lab.base))
        .headers(onie_headers("SN-LEAF07", "0c:42:a1:00:00:07", "os-install"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.expect("body").len(), lab.install.len());
    let r = c.post(format!("{}/v1/devices/SN-LEAF07/provisioned", lab.base)).send().await.expect("post");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let file = lab.manifests.parent().expect("dir").join("d/.status/switchprofiles.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status: Option<serde_json::Value> =
            std::fs::read(&file).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let profile = status.as_ref().map(|s| s["default/leaf07"].clone());
        // Counted from standalone's fleet, as the controller counts Switches in a cluster; the
        // device summaries of a server without Switches are not written.
        if let Some(p) = profile.filter(|p| p["switches"]["provisioned"] == 1) {
            assert_eq!(p["switches"]["total"], 1, "{p}");
            assert!(p["devices"].is_null(), "{p}");
            let ready = p["conditions"].as_array().is_some_and(|c| c.iter().any(|c| c["type"] == "Ready"));
            assert!(ready, "the pipeline's status kept: {p}");
            break;
        }
        assert!(Instant::now() < deadline, "no activity in {}: {status:?}", file.display());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = std::fs::read_to_string(&lab.proc.log).unwrap_or_default();
    assert!(log.contains("switchprofile default/leaf07: DeviceProvisioned: device SN-LEAF07"), "{log}");
}

/// The sink's writes are conditional on the resourceVersion they merged from: a write made from
/// a stale view (another replica wrote in between) is refused by the apiserver (409), re-read and
/// merged again, so nothing the other replica wrote is lost. A deleted profile is forgotten.
#[tokio::test]
async fn concurrent_writers_merge_instead_of_overwriting() {
    use ztp_operator::activity::{Activity, DeviceOutcome, Stage, flush, k8s::KubeSink};

    let t = support::kube_test("activity-merge").await;
    let profile: SwitchProfile = serde_json::from_value(json!({
        "apiVersion": "ztp.netops.dev/v1alpha1", "kind": "SwitchProfile", "metadata": {"name": "leaf"},
        "spec": {"match": {"models": ["sn2410"]}},
    }))
    .expect("profile");
    let profiles: Api<SwitchProfile> = Api::namespaced(t.client.clone(), &t.namespace);
    profiles.create(&PostParams::default(), &profile).await.expect("create profile");
    let outcome = |serial: &str| DeviceOutcome {
        namespace: t.namespace.clone().into(),
        profile: "leaf".into(),
        serial: Some(serial.to_owned().into()),
        mac: None,
        stage: Stage::ConfigServed,
    };
    let (one, two) = (KubeSink::new(t.client.clone(), None), KubeSink::new(t.client.clone(), None));
    let (a, b) = (Activity::new(), Activity::new());
    a.record(&outcome("SN-1"), None);
    flush(&a, &one).await;
    b.record(&outcome("SN-2"), None);
    flush(&b, &two).await;
    // `one` still holds the resourceVersion of its own write: stale now.
    a.record(&outcome("SN-3"), None);
    flush(&a, &one).await;
    let d = summary(&profiles.get("leaf").await.expect("get")).expect("devices");
    assert_eq!(counts(&d), [3, 3, 0, 0], "{d:#?}");
    let mut serials: Vec<&str> = d.recent.iter().filter_map(|r| r.serial.as_deref()).collect();
    serials.sort();
    assert_eq!(serials, ["SN-1", "SN-2", "SN-3"]);

    // The profile is deleted: the next write finds it gone and the activity is forgotten.
    profiles.delete("leaf", &Default::default()).await.expect("delete");
    a.record(&outcome("SN-4"), None);
    flush(&a, &one).await;
    assert!(a.take_batch(10).plans.is_empty(), "a gone profile is not retried");
}

/// A template that renders for the profile's first serial (the sample device a trial render at
/// build time would use) but not for another of its devices: that device gets a 500, and the
/// server (in-cluster, with the server's narrow identity) tells the profile with one Warning
/// Event `RenderFailed` naming the device and the error — one, however often the device asks.
#[tokio::test]
async fn a_render_error_at_request_time_is_a_warning_event_on_the_profile() {
    let t = support::kube_test("render-failed").await;
    let store = TestStore::new(Backend::Fs, "render-failed").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let profile: SwitchProfile = serde_json::from_value(json!({
        "apiVersion": "ztp.netops.dev/v1alpha1", "kind": "SwitchProfile", "metadata": {"name": "leaf"},
        "spec": {
            "match": {"serialNumbers": ["GOOD1", "BAD2"]},
            "variables": {"host_GOOD1": "leaf1"},
            "ztp": {"sections": [{"kind": "commands-list", "content": {"inline": "nv set system hostname {{ variables[\"host_\" ~ serial] }}\n", "template": true}}]},
        },
    }))
    .expect("profile");
    let profiles: Api<SwitchProfile> = Api::namespaced(t.client.clone(), &t.namespace);
    profiles.create(&PostParams::default(), &profile).await.expect("create profile");
    let _controller = start_controller(&t, &store);
    wait_profile(&profiles, "Ready", ready).await;
    let kubeconfig = narrow_identity(&t, dir.path()).await;
    let server = serve(&store, &kubeconfig, "render-failed.log", 1).await;
    let c = reqwest::Client::new();
    let section = |serial: &str| {
        c.get(format!("{}/nvos/{serial}/sections/01-commands-list", server.base)).headers(nvos(serial)).send()
    };
    let r = section("GOOD1").await.expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.expect("text"), "nv set system hostname leaf1\n");
    // A boot storm of one failing device: every answer a 500 saying why.
    for _ in 0..20 {
        let r = section("BAD2").await.expect("get");
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = r.text().await.expect("text");
        assert!(body.contains("undefined"), "{body}");
    }

    let events: Api<Event> = Api::namespaced(t.client.clone(), &t.namespace);
    let failed = || async {
        let list = events.list(&ListParams::default()).await.expect("list events");
        list.items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("RenderFailed"))
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("leaf"))
            .collect::<Vec<Event>>()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let found = loop {
        let found = failed().await;
        if !found.is_empty() {
            break found;
        }
        assert!(Instant::now() < deadline, "no RenderFailed Event:\n{}", procs::tail(&server.proc.log, 30));
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let e = &found[0];
    assert_eq!(e.type_.as_deref(), Some("Warning"));
    assert_eq!(e.reporting_controller.as_deref(), Some("ztp-operator-server"));
    let note = e.note.clone().unwrap_or_default();
    assert!(note.contains("device BAD2") && note.contains("got a 500"), "{note}");
    assert!(note.contains("01-commands-list") && note.contains("undefined"), "{note}");
    let p = profiles.get("leaf").await.expect("get profile");
    assert_eq!(e.regarding.as_ref().and_then(|r| r.uid.clone()), p.metadata.uid);
    // Three more flushes: still the one Event for the twenty failures.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let again = failed().await;
    assert_eq!(again.len(), 1, "{again:#?}");
    assert_eq!(again[0].series.as_ref().map(|s| s.count), None, "{again:#?}");
}

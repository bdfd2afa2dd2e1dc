//! A Switch changes what its device gets, end to end: the controller (against a real apiserver)
//! puts the Switches that pin a profile or carry values into the device snapshot, and the real
//! `serve` binary (which never reads the API) answers each device with them. A profile per model
//! plus a Switch per device: each device's NVOS section renders with its own hostname and
//! loopback; a Switch that lacks the variable gets a Warning Event naming it (its device a 500
//! saying so) while the profile stays Ready; adding the variable re-renders the snapshot and the
//! Switch gets a Normal Event; a Switch pinned to a profile that matches nothing gets that one.

use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams, PostParams};
use reqwest::StatusCode;
use serde_json::json;
use ztp_operator::api::{Switch, SwitchProfile};

use crate::support::{
    self,
    binaries::serve,
    controller::start_controller,
    events::{switch_events, wait_switch_event},
    lab::nvos_headers,
    profiles::{ready_is, wait_profile},
    store::{Backend, TestStore},
};

const SECTION: &str =
    "nv set system hostname {{ hostname }}\nnv set interface lo ip address {{ variables.loopback }}\n";

/// The rendered commands-list section `serial` gets (NVOS sends its headers with every request):
/// status and body.
async fn section(c: &reqwest::Client, base: &str, serial: &str) -> (StatusCode, String) {
    let r = c.get(format!("{base}/nvos/ztp.json")).headers(nvos_headers(serial)).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::OK, "{serial}: the ZTP JSON");
    let url = format!("{base}/nvos/{serial}/sections/01-commands-list");
    let r = c.get(url).headers(nvos_headers(serial)).send().await.expect("get");
    (r.status(), r.text().await.expect("body"))
}

/// Polls `serial`'s section until `want` holds (the server reloads the snapshot by itself).
async fn wait_section(
    c: &reqwest::Client,
    base: &str,
    serial: &str,
    want: impl Fn(StatusCode, &str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = section(c, base, serial).await;
        if want(status, &body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{serial}: section not as wanted within 30 s: {status} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn each_switch_gets_its_own_values_and_its_pinned_profile() {
    let t = support::kube_test("switch-values").await;
    let store = TestStore::new(Backend::Fs, "switch-values").await;
    let profiles: Api<SwitchProfile> = Api::namespaced(t.client.clone(), &t.namespace);
    let switches: Api<Switch> = Api::namespaced(t.client.clone(), &t.namespace);
    let create_profile = async |v: serde_json::Value| {
        let p: SwitchProfile = serde_json::from_value(v).expect("profile");
        profiles.create(&PostParams::default(), &p).await.expect("create profile");
    };
    // One profile per model, its hostname and loopback per device.
    create_profile(json!({
        "apiVersion": "ztp.netops.dev/v1alpha1", "kind": "SwitchProfile", "metadata": {"name": "n5110"},
        "spec": {
            "match": {"models": ["N5110_LD"]},
            "ztp": {"sections": [{"kind": "commands-list", "content": {"template": true, "inline": SECTION}}]},
        },
    }))
    .await;
    // A profile that matches no device: only a Switch that pins it gets it.
    create_profile(json!({
        "apiVersion": "ztp.netops.dev/v1alpha1", "kind": "SwitchProfile", "metadata": {"name": "lab-bench"},
        "spec": {"ztp": {"sections": [{"kind": "commands-list", "content": {"template": true,
            "inline": "nv set system hostname bench-{{ variables.bench }}\n"}}]}},
    }))
    .await;
    let create_switch = async |name: &str, spec: serde_json::Value| {
        let s: Switch = serde_json::from_value(json!({
            "apiVersion": "ztp.netops.dev/v1alpha1", "kind": "Switch", "metadata": {"name": name}, "spec": spec,
        }))
        .expect("switch");
        switches.create(&PostParams::default(), &s).await.expect("create Switch");
    };
    // Each names its model, so the model's profile is tried with its values before it boots.
    let leaf17 = json!({"serialNumber": "MT17", "model": "N5110_LD", "hostname": "leaf17",
        "variables": {"loopback": "10.0.0.17/32"}});
    create_switch("leaf17", leaf17).await;
    create_switch("leaf18", json!({"serialNumber": "MT18", "model": "N5110_LD", "hostname": "leaf18"})).await;
    create_switch(
        "bench",
        json!({"serialNumber": "MT19", "profile": "lab-bench", "variables": {"bench": "3"}}),
    )
    .await;
    let _controller = start_controller(&t, &store);
    // Both profiles Ready: a template that needs a Switch's value is not the profile's fault.
    for name in ["n5110", "lab-bench"] {
        let p = wait_profile(&profiles, name, "Ready", |p| ready_is(p, "True")).await;
        assert!(p.spec.selector.is_empty() == (name == "lab-bench"));
    }
    let (_server, base) = serve("switch-values-serve", &store.flags(), &[]).await;
    let c = reqwest::Client::new();

    let leaf17 = wait_section(&c, &base, "MT17", |s, _| s == StatusCode::OK).await;
    assert_eq!(leaf17, "nv set system hostname leaf17\nnv set interface lo ip address 10.0.0.17/32\n");
    // Asked by serial alone (no headers), its Switch's declared model finds the profile.
    let r = c.get(format!("{base}/nvos/MT17/sections/01-commands-list")).send().await.expect("get");
    assert_eq!(r.text().await.expect("body"), leaf17);
    // leaf18 lacks its loopback: its device gets a 500 naming the variable, the Switch an Event.
    let (status, body) = section(&c, &base, "MT18").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(body.contains("variables.loopback"), "{body}");
    let note = wait_switch_event(&t, "leaf18", "TemplateError").await;
    assert!(note.contains("profile ") && note.contains("/n5110: ztp.01-commands-list"), "{note}");
    assert!(note.contains("`variables.loopback` is undefined"), "{note}");
    assert!(switch_events(&t, "leaf17", "TemplateError").await.is_empty(), "leaf17 renders");
    // Pinned: the bench profile, though the device's model matches n5110.
    let bench = wait_section(&c, &base, "MT19", |s, _| s == StatusCode::OK).await;
    assert_eq!(bench, "nv set system hostname bench-3\n");

    // Give leaf18 its loopback: the snapshot is rendered again, its device gets it, the Switch
    // is told it renders again; a device without a Switch is told what it lacks.
    let patch = json!({"spec": {"variables": {"loopback": "10.0.0.18/32"}}});
    switches.patch("leaf18", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch");
    let leaf18 = wait_section(&c, &base, "MT18", |s, _| s == StatusCode::OK).await;
    assert_eq!(leaf18, "nv set system hostname leaf18\nnv set interface lo ip address 10.0.0.18/32\n");
    wait_switch_event(&t, "leaf18", "TemplateRendered").await;
    let (status, body) = section(&c, &base, "MT99").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    // Unpinned, the bench device falls back to its model's profile.
    let patch =
        json!({"spec": {"profile": null, "variables": {"loopback": "10.0.0.19/32"}, "hostname": "bench"}});
    switches.patch("bench", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch");
    let bench = wait_section(&c, &base, "MT19", |s, b| s == StatusCode::OK && b.contains("10.0.0.19")).await;
    assert_eq!(bench, "nv set system hostname bench\nnv set interface lo ip address 10.0.0.19/32\n");
}

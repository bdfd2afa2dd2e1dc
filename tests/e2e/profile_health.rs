//! SwitchProfile health as GitOps tools read it, on the real apiserver: a profile whose image is
//! still being fetched is `Reconciling` (kstatus InProgress) and turns Ready (Current) once the
//! image is stored; a missing ConfigMap key, a template that does not render for a sample device
//! and an image that failed are `Stalled` (kstatus Failed), and the switch gets a 404 for the
//! withheld content from the real server, never a 500.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use reqwest::StatusCode;
use serde_json::json;
use ztp_operator::{
    api::{ConditionType, OsImage, SwitchProfile},
    hash::Sha256Digest,
};

use crate::{
    support::binaries::serve,
    support::{
        self,
        controller::{is_ready, osimage, start_controller, wait_for},
        lab::headers,
        profiles::{condition, wait_profile},
        random_bytes,
        source::{Behavior, SourceServer},
        store::{Backend, TestStore},
    },
};

/// What Flux's kstatus computes for a resource of unknown kind from its status (its generic
/// rules, `checkGenericProperties`): the status must be of the current generation; then
/// `Reconciling=True` is InProgress, `Stalled=True` is Failed, anything else Current. `Ready` is
/// not read.
fn kstatus(p: &SwitchProfile) -> &'static str {
    let Some(s) = p.status.as_ref() else { return "InProgress" };
    if s.observed_generation != p.metadata.generation {
        return "InProgress";
    }
    let is_true = |t| condition(p, t).is_some_and(|(s, _, _)| s == "True");
    if is_true(ConditionType::Reconciling) {
        "InProgress"
    } else if is_true(ConditionType::Stalled) {
        "Failed"
    } else {
        "Current"
    }
}

fn profile(name: &str, serial: &str, spec: serde_json::Value) -> SwitchProfile {
    let mut full = json!({"match": {"serialNumbers": [serial]}});
    if let (Some(f), Some(s)) = (full.as_object_mut(), spec.as_object()) {
        f.extend(s.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "ztp.netops.dev/v1alpha1", "kind": "SwitchProfile",
        "metadata": {"name": name}, "spec": full
    }))
    .expect("profile")
}

/// `(status, reason, message)` of a condition, or a panic naming the profile's whole status.
fn must(p: &SwitchProfile, t: ConditionType) -> (String, String, String) {
    condition(p, t).unwrap_or_else(|| panic!("no {t:?} condition: {:#?}", p.status))
}

#[tokio::test]
async fn a_profile_waiting_for_its_image_is_in_progress_then_current_and_a_failed_image_stalls_it() {
    let t = support::kube_test("profile-health-image").await;
    let store = TestStore::new(Backend::Fs, "profile-health-image").await;
    // 600 kB at 100 kB/s: about six seconds of fetching.
    let body = random_bytes(600_000, 41);
    let src = SourceServer::start(vec![
        ("/slow.bin", body.clone(), Behavior::Slow { bytes_per_sec: 100_000 }),
        ("/gone.bin", body.clone(), Behavior::Status(404)),
    ])
    .await;
    let sha = Sha256Digest::of(&body).to_string();
    let images: Api<OsImage> = Api::namespaced(t.client.clone(), &t.namespace);
    let profiles: Api<SwitchProfile> = Api::namespaced(t.client.clone(), &t.namespace);
    for (name, path) in [("slow", "/slow.bin"), ("gone", "/gone.bin")] {
        let image = osimage(name, name, "1", &src.url_of(path), &sha, json!({}));
        images.create(&PostParams::default(), &image).await.expect("create image");
    }
    for (name, serial, image) in [("waits", "SN-WAITS", "slow"), ("broken-image", "SN-GONE", "gone")] {
        let p = profile(name, serial, json!({"onie": {"installImage": {"name": image}}}));
        profiles.create(&PostParams::default(), &p).await.expect("create profile");
    }
    let _c = start_controller(&t, &store);

    // While the image is fetched: Reconciling, naming the image; kstatus InProgress.
    let waiting = wait_profile(&profiles, "waits", "Reconciling", |p| {
        condition(p, ConditionType::Reconciling).is_some_and(|(s, _, _)| s == "True")
    })
    .await;
    let image_now = images.get("slow").await.expect("get image");
    assert!(!is_ready(&image_now), "the image was still being fetched: {:?}", image_now.status);
    let (_, reason, msg) = must(&waiting, ConditionType::Reconciling);
    assert_eq!(reason, "WaitingForImage", "{msg}");
    assert!(
        msg.contains(&format!("onie.installImage: OsImage {}/slow is not Ready yet", t.namespace)),
        "{msg}"
    );
    let (ready, ready_reason, _) = must(&waiting, ConditionType::Ready);
    assert_eq!((ready.as_str(), ready_reason.as_str()), ("False", "WaitingForImage"));
    assert!(condition(&waiting, ConditionType::Stalled).is_none(), "{:#?}", waiting.status);
    assert_eq!(kstatus(&waiting), "InProgress");

    // The image that cannot be fetched (404 stalls it) needs a human: the profile stalls too.
    let broken = wait_profile(&profiles, "broken-image", "Stalled", |p| kstatus(p) == "Failed").await;
    let (_, reason, msg) = must(&broken, ConditionType::Stalled);
    assert_eq!(reason, "ImageFailed", "{msg}");
    assert!(msg.contains(&format!("OsImage {}/gone failed", t.namespace)), "{msg}");
    assert!(msg.contains("404"), "the image's own message: {msg}");
    assert!(condition(&broken, ConditionType::Reconciling).is_none(), "{:#?}", broken.status);

    // Stored: Ready, Current, and the Reconciling condition is gone.
    wait_for(&images, "slow", "Ready", is_ready).await;
    let done = wait_profile(&profiles, "waits", "Ready", |p| kstatus(p) == "Current").await;
    assert_eq!(must(&done, ConditionType::Ready).0, "True");
    assert!(condition(&done, ConditionType::Reconciling).is_none(), "{:#?}", done.status);
    let gen_ = done.metadata.generation;
    assert!(done.status.as_ref().is_some_and(|s| s.conditions.iter().all(|c| c.observed_generation == gen_)));
}

#[tokio::test]
async fn a_missing_key_or_a_template_that_does_not_render_stalls_and_the_switch_gets_no_500() {
    let t = support::kube_test("profile-health-content").await;
    let store = TestStore::new(Backend::Fs, "profile-health-content").await;
    let cms: Api<ConfigMap> = Api::namespaced(t.client.clone(), &t.namespace);
    let cm: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ctrld"}, "data": {"other": "x"}
    }))
    .expect("cm");
    cms.create(&PostParams::default(), &cm).await.expect("create cm");
    let profiles: Api<SwitchProfile> = Api::namespaced(t.client.clone(), &t.namespace);
    let specs = [
        (
            "no-key",
            "SN-NOKEY",
            json!({"files": {"ctrld": {"configMapKeyRef": {"name": "ctrld", "key": "ctrld.json"}}}}),
        ),
        (
            "bad-template",
            "SN-TPL",
            json!({"variables": {"site": "par1"}, "files": {
                "startup": {"inline": "{\"site\": \"{{ variables.sitee }}\"}\n", "template": true},
                "motd": {"inline": "welcome to {{ variables.site }}\n", "template": true}
            }}),
        ),
    ];
    for (name, serial, spec) in specs {
        profiles.create(&PostParams::default(), &profile(name, serial, spec)).await.expect("create profile");
    }
    let _c = start_controller(&t, &store);

    let no_key = wait_profile(&profiles, "no-key", "Stalled", |p| kstatus(p) == "Failed").await;
    let (_, reason, msg) = must(&no_key, ConditionType::Stalled);
    assert_eq!(reason, "InvalidContent", "{msg}");
    assert_eq!(msg, format!("files.ctrld: ConfigMap {}/ctrld has no key \"ctrld.json\"", t.namespace));
    assert_eq!(must(&no_key, ConditionType::Ready).0, "False");

    // The unknown variable is found when the profile is built, not when the switch boots.
    let bad = wait_profile(&profiles, "bad-template", "Stalled", |p| kstatus(p) == "Failed").await;
    let (_, reason, msg) = must(&bad, ConditionType::Stalled);
    assert_eq!(reason, "TemplateError", "{msg}");
    assert!(msg.starts_with("files.startup: undefined value"), "{msg}");
    assert!(msg.contains("`variables.sitee` is undefined"), "{msg}");
    assert!(msg.contains("serial SN-TPL"), "{msg}");
    let (ready, ready_reason, _) = must(&bad, ConditionType::Ready);
    assert_eq!((ready.as_str(), ready_reason.as_str()), ("False", "TemplateError"));

    // The real server on that store: the broken file is withheld (404), the good one served; no 500.
    let (_server, base) = serve("profile-health-content", &store.flags(), &[]).await;
    let c = reqwest::Client::new();
    let get = |file: &str| {
        c.get(format!("{base}/ztp/config/{file}")).headers(headers(&[
            ("ONIE-SERIAL-NUMBER", "SN-TPL"),
            ("CONTAINER-NAME", "rtbrick"),
            ("ELEMENT-NAME", "leaf01"),
        ]))
    };
    let r = get("startup").send().await.expect("get startup");
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "{:?}", r.text().await);
    let r = get("motd").send().await.expect("get motd");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.expect("text"), "welcome to par1\n");

    // Fixed by a human: Ready, Current, the Stalled condition gone.
    let patch = json!({"data": {"ctrld.json": "{}"}});
    cms.patch("ctrld", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch cm");
    let fixed = wait_profile(&profiles, "no-key", "Ready", |p| kstatus(p) == "Current").await;
    assert_eq!(must(&fixed, ConditionType::Ready).0, "True");
    assert!(condition(&fixed, ConditionType::Stalled).is_none(), "{:#?}", fixed.status);
}

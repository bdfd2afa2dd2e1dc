//! The Argo CD health check the README gives for `argocd-cm`, run as Argo CD runs it: the exact
//! Lua text, taken from README.md by this test (README and test cannot drift), evaluated with
//! Lua 5.4 (`mlua`, vendored) on OsImages and SwitchProfiles as the real controller left them on
//! the real apiserver: not seen yet, fetching, Ready, Stalled (404, wrong checksum), waiting for
//! an image, and stalled by a failed image. Argo CD's gopher-lua is Lua 5.1; the check uses
//! nothing that differs between the two.

use std::path::Path;

use kube::{
    Api,
    api::{DynamicObject, PostParams},
};
use mlua::{Lua, LuaSerdeExt, Table, serde::SerializeOptions};
use serde_json::{Value, json};
use ztp_operator::{
    api::{ConditionType, OsImage, SwitchProfile},
    hash::Sha256Digest,
};

use crate::support::{
    self,
    controller::{condition, is_ready, osimage, start_controller, wait_for},
    profiles::wait_profile,
    random_bytes,
    source::{Behavior, SourceServer},
    store::{Backend, TestStore},
};

const OSIMAGE_KEY: &str = "resource.customizations.health.ztp.netops.dev_OsImage";
const PROFILE_KEY: &str = "resource.customizations.health.ztp.netops.dev_SwitchProfile";

/// The Lua of README's `argocd-cm` block: the YAML block holding [`OSIMAGE_KEY`], parsed as
/// YAML (so the anchor and alias are checked too: both kinds get the same script).
fn readme_lua() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&path).expect("read README.md");
    let start = readme
        .find(&format!("```yaml\n{OSIMAGE_KEY}"))
        .expect("README has a ```yaml block starting with the OsImage health check");
    let block = &readme[start + "```yaml\n".len()..];
    let block = &block[..block.find("\n```").expect("the block ends")];
    let cm: Value = yaml_serde::from_str(block).expect("the argocd-cm block is YAML");
    let lua = cm[OSIMAGE_KEY].as_str().expect("the OsImage check is a string").to_owned();
    assert_eq!(cm[PROFILE_KEY].as_str(), Some(lua.as_str()), "SwitchProfile gets the same check");
    assert!(lua.contains("return"), "{lua}");
    lua
}

/// `(status, message)` the check returns for `obj` (JSON as the apiserver serves it; `null`
/// becomes `nil`, as Argo CD's conversion drops it).
fn health(lua_text: &str, obj: &Value) -> (String, String) {
    let lua = Lua::new();
    let options = SerializeOptions::new().serialize_none_to_null(false).serialize_unit_to_null(false);
    let value = lua.to_value_with(obj, options).expect("object into Lua");
    lua.globals().set("obj", value).expect("set obj");
    let result: Table = lua.load(lua_text).set_name("argocd health").eval().expect("the check runs");
    (result.get::<String>("status").expect("status"), result.get::<String>("message").expect("message"))
}

/// `reason: message` of a condition that is `True` (or of `Ready` whatever its status).
fn shown(obj: &Value, t: &str) -> String {
    let c = obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == t))
        .unwrap_or_else(|| panic!("no {t} condition: {obj:#}"));
    format!("{}: {}", c["reason"].as_str().unwrap_or(""), c["message"].as_str().unwrap_or(""))
}

async fn get_json(api: &Api<DynamicObject>, name: &str) -> Value {
    serde_json::to_value(api.get(name).await.expect("get")).expect("json")
}

#[tokio::test]
async fn the_readme_argocd_health_check_reads_the_controllers_statuses() {
    let lua = readme_lua();
    let t = support::kube_test("argocd-health").await;
    let store = TestStore::new(Backend::Fs, "argocd-health").await;
    // 600 kB at 100 kB/s: about six seconds of fetching.
    let body = random_bytes(600_000, 71);
    let src = SourceServer::start(vec![
        ("/slow.bin", body.clone(), Behavior::Slow { bytes_per_sec: 100_000 }),
        ("/good.bin", body.clone(), Behavior::Serve),
        ("/gone.bin", body.clone(), Behavior::Status(404)),
    ])
    .await;
    let sha = Sha256Digest::of(&body).to_string();
    let wrong = Sha256Digest::of(b"something else").to_string();
    let images: Api<OsImage> = Api::namespaced(t.client.clone(), &t.namespace);
    let profiles: Api<SwitchProfile> = Api::namespaced(t.client.clone(), &t.namespace);
    for (name, path, sum) in [
        ("slow", "/slow.bin", &sha),
        ("good", "/good.bin", &sha),
        ("gone", "/gone.bin", &sha),
        ("bad-sum", "/good.bin", &wrong),
    ] {
        let image = osimage(name, name, "1", &src.url_of(path), sum, json!({}));
        images.create(&PostParams::default(), &image).await.expect("create image");
    }
    for (name, serial, image) in
        [("ready", "SN-R", "good"), ("waits", "SN-W", "slow"), ("broken", "SN-B", "gone")]
    {
        let p: SwitchProfile = serde_json::from_value(json!({
            "apiVersion": "ztp.netops.dev/v1alpha1", "kind": "SwitchProfile", "metadata": {"name": name},
            "spec": {"match": {"serialNumbers": [serial]}, "onie": {"installImage": {"name": image}}},
        }))
        .expect("profile");
        profiles.create(&PostParams::default(), &p).await.expect("create profile");
    }
    let dyn_images: Api<DynamicObject> =
        Api::namespaced_with(t.client.clone(), &t.namespace, &kube::api::ApiResource::erase::<OsImage>(&()));
    let dyn_profiles: Api<DynamicObject> = Api::namespaced_with(
        t.client.clone(),
        &t.namespace,
        &kube::api::ApiResource::erase::<SwitchProfile>(&()),
    );

    // Not seen by a controller yet: no status.
    for obj in [get_json(&dyn_images, "slow").await, get_json(&dyn_profiles, "ready").await] {
        assert_eq!(
            health(&lua, &obj),
            ("Progressing".into(), "waiting for the controller".into()),
            "{obj:#}"
        );
    }

    let _c = start_controller(&t, &store);

    // Fetching (progress written): Progressing with the Reconciling condition's reason and message;
    // the profile waiting for it: Progressing, WaitingForImage.
    let fetching = wait_for(&images, "slow", "fetching", |i| {
        condition(i, ConditionType::Reconciling).is_some_and(|(s, r, _)| s == "True" && r == "Fetching")
            && i.status.as_ref().is_some_and(|s| s.progress_text.is_some())
    })
    .await;
    assert!(!is_ready(&fetching));
    let obj = get_json(&dyn_images, "slow").await;
    let (status, message) = health(&lua, &obj);
    assert_eq!(status, "Progressing", "{obj:#}");
    assert!(message.starts_with("Fetching: fetching "), "{message}");
    assert_eq!(message, shown(&obj, "Reconciling"));
    wait_profile(&profiles, "waits", "Reconciling", |p| {
        crate::support::profiles::condition(p, ConditionType::Reconciling)
            .is_some_and(|(s, _, _)| s == "True")
    })
    .await;
    let obj = get_json(&dyn_profiles, "waits").await;
    let (status, message) = health(&lua, &obj);
    assert_eq!(status, "Progressing", "{obj:#}");
    assert!(message.starts_with("WaitingForImage: onie.installImage: OsImage "), "{message}");
    assert_eq!(message, shown(&obj, "Reconciling"));

    // Stalled images (404, wrong checksum) and the profile using one: Degraded, with the reason.
    for (name, reason) in [("gone", "FetchFailed"), ("bad-sum", "ChecksumMismatch")] {
        wait_for(&images, name, "Stalled", |i| {
            condition(i, ConditionType::Stalled).is_some_and(|(s, _, _)| s == "True")
        })
        .await;
        let obj = get_json(&dyn_images, name).await;
        let (status, message) = health(&lua, &obj);
        assert_eq!(status, "Degraded", "{obj:#}");
        assert!(message.starts_with(&format!("{reason}: ")), "{name}: {message}");
        assert_eq!(message, shown(&obj, "Stalled"));
    }
    wait_profile(&profiles, "broken", "Stalled", |p| {
        crate::support::profiles::condition(p, ConditionType::Stalled).is_some_and(|(s, _, _)| s == "True")
    })
    .await;
    let obj = get_json(&dyn_profiles, "broken").await;
    let (status, message) = health(&lua, &obj);
    assert_eq!(status, "Degraded", "{obj:#}");
    assert!(message.starts_with("ImageFailed: ") && message.contains("404"), "{message}");

    // Ready: Healthy with the Ready message.
    for name in ["good", "slow"] {
        wait_for(&images, name, "Ready", is_ready).await;
        let obj = get_json(&dyn_images, name).await;
        let ready =
            obj["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"));
        let ready_message = ready.and_then(|c| c["message"].as_str()).unwrap_or_default().to_owned();
        assert!(!ready_message.is_empty(), "{obj:#}");
        assert_eq!(health(&lua, &obj), ("Healthy".into(), ready_message), "{name}");
    }
    for name in ["ready", "waits"] {
        wait_profile(&profiles, name, "Ready", |p| {
            crate::support::profiles::condition(p, ConditionType::Ready).is_some_and(|(s, _, _)| s == "True")
        })
        .await;
        let obj = get_json(&dyn_profiles, name).await;
        assert_eq!(health(&lua, &obj), ("Healthy".into(), "every reference resolves".into()), "{obj:#}");
        // The moment a spec changes the apiserver bumps the generation; until the controller has
        // written a status for it, the old Ready is not believed.
        let mut newer = obj.clone();
        newer["metadata"]["generation"] =
            json!(obj["metadata"]["generation"].as_i64().expect("generation") + 1);
        assert_eq!(health(&lua, &newer), ("Progressing".into(), "waiting for the controller".into()));
    }
}

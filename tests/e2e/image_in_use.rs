//! An OsImage that SwitchProfiles use is not deleted under them: `kubectl delete` leaves it
//! Terminating (the controller keeps its finalizer) with a status naming the profiles, the
//! switch keeps getting the image from the real server binary, and the deletion completes (its
//! `deletionPolicy` honoured) once the last profile stops using it — by a spec change or by
//! going away.

use std::time::{Duration, Instant};

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use reqwest::StatusCode;
use serde_json::json;
use ztp_operator::{
    api::{ConditionType, ImagePath, OsImage, SwitchProfile},
    hash::Sha256Digest,
};

use crate::support::{
    self,
    controller::{condition, is_ready, osimage, start_controller, wait_for},
    lab::onie_headers,
    random_bytes,
    reporting::{Server, narrow_identity, serve},
    source::{Behavior, SourceServer},
    store::{Backend, TestStore},
};

fn profile(name: &str, serial: &str) -> SwitchProfile {
    serde_json::from_value(json!({
        "apiVersion": "ztp.netops.dev/v1alpha1", "kind": "SwitchProfile", "metadata": {"name": name},
        "spec": {"match": {"serialNumbers": [serial]}, "onie": {"installImage": {"name": "nos"}}},
    }))
    .expect("profile")
}

/// The install image `serial` gets from `server` (status and body).
async fn install_image(server: &Server, serial: &str) -> (StatusCode, bytes::Bytes) {
    let r = reqwest::Client::new()
        .get(format!("{}/onie-installer", server.base))
        .headers(onie_headers(serial, "0c:42:a1:00:00:0b", "os-install"))
        .send()
        .await
        .expect("get");
    (r.status(), r.bytes().await.expect("body"))
}

/// The `Terminating` condition's status, reason and message.
fn terminating(o: &OsImage) -> Option<(String, String, String)> {
    condition(o, ConditionType::Terminating)
}

#[tokio::test]
async fn an_image_in_use_is_deleted_only_when_no_profile_uses_it() {
    let t = support::kube_test("image-in-use").await;
    let ns = t.namespace.clone();
    let store = TestStore::new(Backend::Fs, "image-in-use").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let body = random_bytes(200_000, 43);
    let src = SourceServer::start(vec![("/nos.bin", body.clone(), Behavior::Serve)]).await;
    let images: Api<OsImage> = Api::namespaced(t.client.clone(), &ns);
    let sha = Sha256Digest::of(&body).to_string();
    let spec = json!({"deletionPolicy": "Delete"});
    images
        .create(&PostParams::default(), &osimage("nos", "nos", "1", &src.url_of("/nos.bin"), &sha, spec))
        .await
        .expect("create image");
    let profiles: Api<SwitchProfile> = Api::namespaced(t.client.clone(), &ns);
    for (name, serial) in [("leaf", "SN-LEAF"), ("spine", "SN-SPINE")] {
        profiles.create(&PostParams::default(), &profile(name, serial)).await.expect("create profile");
    }
    let _controller = start_controller(&t, &store);
    wait_for(&images, "nos", "Ready", is_ready).await;
    let kubeconfig = narrow_identity(&t, dir.path()).await;
    let server = serve(&store, &kubeconfig, "image-in-use.log", 2).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while install_image(&server, "SN-LEAF").await.0 != StatusCode::OK {
        assert!(Instant::now() < deadline, "the install image is never served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // `kubectl delete`: the image stays, Terminating, saying who holds it.
    images.delete("nos", &DeleteParams::default()).await.expect("delete image");
    let held = wait_for(&images, "nos", "held for both profiles", |o| {
        o.metadata.deletion_timestamp.is_some()
            && terminating(o).is_some_and(|(s, r, m)| {
                s == "True" && r == "InUse" && m.contains(&format!("{ns}/leaf, {ns}/spine"))
            })
    })
    .await;
    assert!(is_ready(&held), "still Ready: it is still served; {:#?}", held.status);
    let message = held.status.as_ref().and_then(|s| s.message.clone()).unwrap_or_default();
    assert!(message.starts_with("deletion waits: still used by SwitchProfiles"), "{message}");
    // Not a moment's grace: it stays while the profiles use it, and both switches get it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(images.get_opt("nos").await.expect("get").is_some(), "deleted under its profiles");
    for serial in ["SN-LEAF", "SN-SPINE"] {
        let (status, got) = install_image(&server, serial).await;
        assert_eq!(status, StatusCode::OK, "{serial}: {}", String::from_utf8_lossy(&got));
        assert!(got == body, "{serial}: not the image's bytes");
    }
    let path = ImagePath::new("nos", "1", "nos.bin").expect("path");
    assert!(store.store.stat(&path).await.expect("stat").is_some(), "the file is kept meanwhile");
    let events: Api<Event> = Api::namespaced(t.client.clone(), &ns);
    let in_use: Vec<Event> = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("nos"))
        .filter(|e| e.reason.as_deref() == Some("InUse"))
        .collect();
    assert_eq!(in_use.len(), 1, "one InUse Event: {in_use:#?}");
    assert_eq!(in_use[0].type_.as_deref(), Some("Warning"));

    // spine stops using it (a spec change): leaf still holds it.
    let patch = json!({"spec": {"onie": null}});
    profiles.patch("spine", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch spine");
    wait_for(&images, "nos", "held for leaf only", |o| {
        terminating(o).is_some_and(|(_, _, m)| m.contains(&format!("SwitchProfile {ns}/leaf;")))
    })
    .await;
    assert_eq!(install_image(&server, "SN-LEAF").await.0, StatusCode::OK);

    // leaf goes: the deletion completes, and deletionPolicy Delete removes the file.
    profiles.delete("leaf", &DeleteParams::default()).await.expect("delete leaf");
    let deadline = Instant::now() + Duration::from_secs(30);
    while images.get_opt("nos").await.expect("get").is_some() {
        assert!(Instant::now() < deadline, "nos not deleted after its last profile went");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(store.store.stat(&path).await.expect("stat"), None, "deletionPolicy Delete removes the file");
    assert!(store.store.manifest().await.expect("manifest").get(&path).is_none());
    drop(server);
}

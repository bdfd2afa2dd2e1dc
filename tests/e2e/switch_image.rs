//! A Switch pins its device's install image (`spec.osImage`), end to end: the controller
//! (against a real apiserver) fetches the images and puts the pin into the device snapshot, and
//! the real `serve` binary answers every family with it — ONIE's installer, the NVOS image
//! section, SONiC's `firmware.install` — while the profile's other devices keep the profile's
//! image and updates stay the profile's. A pin to an OsImage that does not exist yet gets no
//! install image at all (ONIE 404, the ZTP JSON 503), never the profile's, and a Warning Event on
//! the Switch; once the image is created and Ready the device gets it and the Switch is told.

use std::time::{Duration, Instant};

use kube::api::{Api, PostParams};
use reqwest::{StatusCode, header::HeaderMap};
use serde_json::{Value, json};
use ztp_operator::{
    api::{OsImage, Switch, SwitchProfile},
    hash::Sha256Digest,
};

use crate::support::{
    self,
    binaries::serve,
    controller::{is_ready, osimage, start_controller, wait_for},
    events::{switch_events, wait_switch_event},
    lab::{headers, nvos_headers, onie_headers},
    profiles::{ready_is, wait_profile},
    random_bytes,
    source::{Behavior, SourceServer},
    store::{Backend, TestStore},
};

/// A SONiC switch (its ZTP engine's headers) with this serial number.
fn sonic_headers(serial: &str) -> HeaderMap {
    headers(&[
        ("User-Agent", "SONiC-ZTP/0.1"),
        ("PRODUCT-NAME", "sonic-as7712"),
        ("SERIAL-NUMBER", serial),
        ("SONiC-VERSION", "SONiC.202311.1"),
    ])
}

/// GET `path` as the device of `h`: status, `Retry-After`, body.
async fn get(c: &reqwest::Client, url: String, h: HeaderMap) -> (StatusCode, Option<String>, bytes::Bytes) {
    let r = c.get(url).headers(h).send().await.expect("get");
    let retry = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    (r.status(), retry, r.bytes().await.expect("body"))
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

#[tokio::test]
async fn a_switchs_os_image_is_what_its_device_installs_in_every_family() {
    let t = support::kube_test("switch-image").await;
    let store = TestStore::new(Backend::Fs, "switch-image").await;
    let (nos1, nos2, late, onie) = (
        random_bytes(50_000, 71),
        random_bytes(60_000, 72),
        random_bytes(70_000, 73),
        random_bytes(30_000, 74),
    );
    let src = SourceServer::start(vec![
        ("/nos-1.bin", nos1.clone(), Behavior::Serve),
        ("/nos-2.bin", nos2.clone(), Behavior::Serve),
        ("/nos-late.bin", late.clone(), Behavior::Serve),
        ("/onie.bin", onie.clone(), Behavior::Serve),
    ])
    .await;
    let images: Api<OsImage> = Api::namespaced(t.client.clone(), &t.namespace);
    let image = |name: &str, version: &str, file: &str, body: &bytes::Bytes| {
        let sha = Sha256Digest::of(body).to_string();
        osimage(name, "nos", version, &src.url_of(file), &sha, json!({}))
    };
    for (name, version, file, body) in [
        ("nos-1", "1", "/nos-1.bin", &nos1),
        ("nos-2", "2", "/nos-2.bin", &nos2),
        ("onie", "u", "/onie.bin", &onie),
    ] {
        images.create(&PostParams::default(), &image(name, version, file, body)).await.expect("create image");
    }
    // One profile for every family, all installing nos-1.
    let profile: SwitchProfile = serde_json::from_value(json!({
        "apiVersion": "ztp.netops.dev/v1alpha1", "kind": "SwitchProfile", "metadata": {"name": "leafs"},
        "spec": {
            "match": {"models": ["accton_as7712_32x", "N5110_LD", "sonic-as7712"]},
            "onie": {"installImage": {"name": "nos-1"}, "updateImage": {"name": "onie"}},
            "ztp": {"sections": [
                {"kind": "image", "content": {"osImageRef": {"name": "nos-1"}}},
                {"kind": "commands-list", "content": {"inline": "nv config apply -y\n"}},
            ]},
            "sonic": {"sections": [{"firmware": {"install": {"image": {"name": "nos-1"}, "version": "SONiC-OS-1"}}}]},
        },
    }))
    .expect("profile");
    let profiles: Api<SwitchProfile> = Api::namespaced(t.client.clone(), &t.namespace);
    profiles.create(&PostParams::default(), &profile).await.expect("create profile");
    let switches: Api<Switch> = Api::namespaced(t.client.clone(), &t.namespace);
    for (name, serial, os_image) in [("pinned", "SN-PIN", "nos-2"), ("waiting", "SN-WAIT", "nos-late")] {
        let s: Switch = serde_json::from_value(json!({
            "apiVersion": "ztp.netops.dev/v1alpha1", "kind": "Switch", "metadata": {"name": name},
            "spec": {"serialNumber": serial, "osImage": os_image},
        }))
        .expect("switch");
        switches.create(&PostParams::default(), &s).await.expect("create Switch");
    }
    let _controller = start_controller(&t, &store);
    for name in ["nos-1", "nos-2", "onie"] {
        wait_for(&images, name, "Ready", is_ready).await;
    }
    wait_profile(&profiles, "leafs", "Ready", |p| ready_is(p, "True")).await;
    let (_server, base) = serve("switch-image-serve", &store.flags(), &[]).await;
    let c = reqwest::Client::new();
    let onie_install = |serial: &str| onie_headers(serial, "0c:42:a1:00:00:0b", "os-install");

    // The pinned switch's installer is nos-2 (the snapshot may take a moment to load).
    let deadline = Instant::now() + Duration::from_secs(30);
    let pinned = loop {
        let got = get(&c, format!("{base}/onie-installer"), onie_install("SN-PIN")).await;
        if got.0 == StatusCode::OK || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(pinned.0, StatusCode::OK, "{}", String::from_utf8_lossy(&pinned.2));
    assert!(pinned.2 == nos2, "the pinned switch gets nos-2's bytes");
    // Another device of the profile keeps the profile's image; updates stay the profile's.
    let other = get(&c, format!("{base}/onie-installer"), onie_install("SN-OTHER")).await;
    assert!(other.0 == StatusCode::OK && other.2 == nos1, "{:?}", other.0);
    let update =
        get(&c, format!("{base}/onie-updater"), onie_headers("SN-PIN", "0c:42:a1:00:00:0b", "onie-update"))
            .await;
    assert!(update.0 == StatusCode::OK && update.2 == onie, "{:?}", update.0);

    // NVOS: the image section points at nos-2; the URL serves its bytes.
    let (status, _, body) = get(&c, format!("{base}/nvos/ztp.json"), nvos_headers("SN-PIN")).await;
    assert_eq!(status, StatusCode::OK);
    let url = json_of(&body)["ztp"]["01-image"]["install"]["url"].as_str().expect("image url").to_owned();
    assert!(url.ends_with("/images/nos/2/nos-2.bin"), "{url}");
    let (status, _, got) = get(&c, url, nvos_headers("SN-PIN")).await;
    assert!(status == StatusCode::OK && got == nos2, "{status}");
    let (_, _, body) = get(&c, format!("{base}/nvos/ztp.json"), nvos_headers("SN-OTHER")).await;
    let url = json_of(&body)["ztp"]["01-image"]["install"]["url"].as_str().expect("url").to_owned();
    assert!(url.ends_with("/images/nos/1/nos-1.bin"), "{url}");

    // SONiC: firmware.install is nos-2, without the profile's version (which described nos-1).
    let (status, _, body) = get(&c, format!("{base}/sonic/ztp.json"), sonic_headers("SN-PIN")).await;
    assert_eq!(status, StatusCode::OK);
    let install = json_of(&body)["ztp"]["01-firmware"]["install"].clone();
    assert!(install["url"].as_str().is_some_and(|u| u.ends_with("/images/nos/2/nos-2.bin")), "{install}");
    assert_eq!(install.get("version"), None, "{install}");
    let (_, _, body) = get(&c, format!("{base}/sonic/ztp.json"), sonic_headers("SN-OTHER")).await;
    assert_eq!(json_of(&body)["ztp"]["01-firmware"]["install"]["version"], json!("SONiC-OS-1"));

    // Pinned to an OsImage that does not exist: no install image at all, never the profile's.
    let (status, _, body) = get(&c, format!("{base}/onie-installer"), onie_install("SN-WAIT")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(String::from_utf8_lossy(&body), "the OsImage its Switch pins (spec.osImage) is not Ready\n");
    for (family, h) in [("nvos", nvos_headers("SN-WAIT")), ("sonic", sonic_headers("SN-WAIT"))] {
        let (status, retry, body) = get(&c, format!("{base}/{family}/ztp.json"), h).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{family}: {}", String::from_utf8_lossy(&body));
        assert_eq!(retry.as_deref(), Some("30"), "{family}");
        assert_eq!(
            String::from_utf8_lossy(&body),
            "the OsImage its Switch pins (spec.osImage) is not Ready yet\n"
        );
    }
    let note = wait_switch_event(&t, "waiting", "WaitingForReference").await;
    assert!(note.contains(&format!("osImage: OsImage {}/nos-late not found", t.namespace)), "{note}");
    assert!(switch_events(&t, "pinned", "WaitingForReference").await.is_empty(), "the Ready pin is not told");

    // The image arrives: the device gets it, and the Switch is told.
    images
        .create(&PostParams::default(), &image("nos-late", "3", "/nos-late.bin", &late))
        .await
        .expect("create");
    wait_for(&images, "nos-late", "Ready", is_ready).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, got) = get(&c, format!("{base}/onie-installer"), onie_install("SN-WAIT")).await;
        if status == StatusCode::OK {
            assert!(got == late, "the late image's bytes");
            break;
        }
        assert!(Instant::now() < deadline, "the late image is never served: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _, body) = get(&c, format!("{base}/nvos/ztp.json"), nvos_headers("SN-WAIT")).await;
    assert_eq!(status, StatusCode::OK);
    let url = json_of(&body)["ztp"]["01-image"]["install"]["url"].as_str().expect("url").to_owned();
    assert!(url.ends_with("/images/nos/3/nos-late.bin"), "{url}");
    wait_switch_event(&t, "waiting", "Resolved").await;
}

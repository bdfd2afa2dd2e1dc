//! NVOS and SONiC (docs/protocols.md §3): the ZTP JSON by headers or by serial in the path, its
//! URLs pointing back at this server, and what they lead to.

use axum::http::StatusCode;
use serde_json::json;

use super::{BASE, Lab, device, headers, sent_by};
use crate::{dryrun::Device, profile::identity::Family};

/// An NVOS switch with leaf07's MAC (so it is leaf07 whatever its serial), or with none.
fn nvos(serial: &str) -> Device {
    Device { model: Some("N5110_LD".into()), ..device(serial, Some("0C:42:A1:00:00:07"), "") }
}

fn nvos_without_mac(serial: &str) -> Device {
    Device { mac: None, ..nvos(serial) }
}

#[tokio::test]
async fn nvos_gets_its_sections_in_order_with_urls_back_to_the_server() {
    let lab = Lab::new().await;
    let sent = sent_by(Family::Nvos, &nvos("SN-LEAF07"));
    let r = lab.get("/nvos/ztp.json", &sent).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert!(r.header("content-type").starts_with("application/json"), "{r:?}");
    let doc = r.json();
    let ztp = doc["ztp"].as_object().expect("a top-level ztp object");
    let keys: Vec<&String> = ztp.keys().filter(|k| k.as_bytes()[0].is_ascii_digit()).collect();
    assert_eq!(keys, ["01-image", "02-commands-list", "03-connectivity-check"]);
    assert_eq!(doc["ztp"]["01-image"]["install"]["url"], format!("{BASE}/images/nos/1/nos.bin"));
    assert_eq!(doc["ztp"]["02-commands-list"]["clear-config"], true);
    assert_eq!(doc["ztp"]["03-connectivity-check"]["ping-hosts"], json!(["192.0.2.1"]));
    assert_eq!(doc["ztp"]["03-connectivity-check"]["ignore-result"], true);

    // The commands' URL, asked as NVOS asks it, gives them rendered for leaf07.
    let url = doc["ztp"]["02-commands-list"]["url"].as_str().expect("a url");
    let path = url.strip_prefix(BASE).unwrap_or_else(|| panic!("{url} is not on {BASE}"));
    let r = lab.get(path, &sent).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.text(), "nv set system hostname leaf07\nnv set service ntp default server 192.0.2.1\n");
    // And the image URL the verified image.
    let r = lab.get("/images/nos/1/nos.bin", &sent).await;
    assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &lab.install[..]));
}

#[tokio::test]
async fn nvos_by_serial_in_the_path_is_what_ztpctl_device_asks() {
    let lab = Lab::new().await;
    let sent = sent_by(Family::Nvos, &nvos_without_mac("SN-NVOS-ONLY"));
    let r = lab.get("/nvos/SN-NVOS-ONLY/ztp.json", &sent).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.json()["ztp"]["01-connectivity-check"]["ping-hosts"], json!(["192.0.2.1"]));
    let r = lab.get("/nvos/SN-NOBODY/ztp.json", &sent_by(Family::Nvos, &nvos_without_mac("SN-NOBODY"))).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    // The headers say who the switch is: leaf07's MAC gets leaf07's document at any serial's URL.
    let r = lab.get("/nvos/SN-NOBODY/ztp.json", &sent_by(Family::Nvos, &nvos("SN-NOBODY"))).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert!(r.text().contains("/nvos/SN-NOBODY/sections/02-commands-list"), "{}", r.text());
}

#[tokio::test]
async fn sonic_gets_its_own_sections_and_never_an_nvos_only_profile() {
    let lab = Lab::new().await;
    // What sonic-ztp's curl sends, by serial in the path (a dynamic-url with serial-number).
    let curl =
        headers([("User-Agent", "curl/7.88.1"), ("SONiC-VERSION", "SONiC.202411"), ("PRODUCT-NAME", "x")]);
    let r = lab.get("/sonic/SN-LEAF07/ztp.json", &curl).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let doc = r.json();
    let sections: Vec<&String> =
        doc["ztp"].as_object().expect("ztp").keys().filter(|k| k.as_bytes()[0].is_ascii_digit()).collect();
    assert_eq!(sections, ["01-connectivity-check"], "leaf07's one SONiC section, not its NVOS ones: {doc}");
    assert_eq!(doc["ztp"]["01-connectivity-check"]["ping-hosts"], json!(["192.0.2.1"]));
    // By its own headers, as `ztpctl device --family sonic` sends them.
    let sent = sent_by(Family::Sonic, &nvos("SN-LEAF07"));
    assert_eq!(lab.get("/sonic/ztp.json", &sent).await.status, StatusCode::OK);

    let r = lab.get("/sonic/SN-NVOS-ONLY/ztp.json", &curl).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "an NVOS-only profile is not served to SONiC: {r:?}");
    let r = lab.get("/sonic/SN-NOBODY/ztp.json", &curl).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
}

#[tokio::test]
async fn device_requests_are_counted_by_family_and_status_class() {
    let lab = Lab::new().await;
    let r = lab.get("/nvos/ztp.json", &sent_by(Family::Nvos, &nvos("SN-LEAF07"))).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = lab.get("/sonic/SN-NOBODY/ztp.json", &headers([("User-Agent", "curl/7.88.1")])).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let metrics = lab.get("/metrics", &headers([])).await;
    for line in [
        "ztp_device_requests_total{family=\"nvos\",code=\"2xx\"} 1",
        "ztp_device_requests_total{family=\"sonic\",code=\"4xx\"} 1",
        "ztp_snapshot_profiles 3",
    ] {
        assert!(metrics.text().contains(line), "{line} missing from:\n{}", metrics.text());
    }
}

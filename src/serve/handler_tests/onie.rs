//! ONIE (docs/protocols.md §1): the waterfall names and the fixed `/onie` URL, with ONIE's
//! `ONIE-*` headers; the image is chosen by `ONIE-OPERATION` and the switch's identity.

use axum::http::{HeaderValue, Method, StatusCode};

use super::{Lab, device, sent_by};
use crate::profile::identity::Family;
use crate::serve::onie_pass::tests::NAMES as WATERFALL;

#[tokio::test]
async fn onie_gets_the_installer_of_its_profile_at_any_waterfall_name() {
    let lab = Lab::new().await;
    let leaf07 = sent_by(Family::Onie, &device("SN-LEAF07", Some("0c:42:a1:00:00:07"), "os-install"));
    // The least specific name first: after a full download, ONIE asks a later name of the same
    // pass only when the installer failed (and that one is refused, see `onie_pass`).
    for name in [format!("{}.bin", WATERFALL[5]), WATERFALL[0].to_owned()] {
        let r = lab.get(&format!("/{name}"), &leaf07).await;
        assert_eq!(r.status, StatusCode::OK, "{name}: {r:?}");
        assert_eq!(r.header("content-length"), lab.install.len().to_string());
        assert_eq!(r.body, lab.install, "{name}");
    }
}

#[tokio::test]
async fn onie_update_gets_the_updater_never_the_installer() {
    let lab = Lab::new().await;
    // A switch only the model default knows.
    let other = sent_by(Family::Onie, &device("SN-OTHER", Some("0c:42:a1:00:00:99"), "onie-update"));
    let r = lab.get("/onie-updater-x86_64-accton_as7712_32x-r0", &other).await;
    assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &lab.update[..]));
    // leaf07's own profile sets no updater: the model default's, per item, not leaf07's installer.
    let leaf07 = sent_by(Family::Onie, &device("SN-LEAF07", Some("0c:42:a1:00:00:07"), "onie-update"));
    let r = lab.get("/onie-updater", &leaf07).await;
    assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &lab.update[..]));
    // A name and an operation that disagree get nothing.
    let r = lab.get("/onie-installer", &leaf07).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
}

#[tokio::test]
async fn an_unknown_onie_switch_gets_404_for_every_name() {
    let lab = Lab::new().await;
    let mut unknown = sent_by(Family::Onie, &device("SN-NOBODY", Some("0c:42:a1:00:00:98"), "os-install"));
    unknown.insert("ONIE-MACHINE", HeaderValue::from_static("celestica_e1031"));
    for name in WATERFALL {
        let r = lab.get(&format!("/{name}"), &unknown).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{name}: {r:?}");
    }
    let r = lab.get("/index.html", &unknown).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "not a waterfall name: {r:?}");
}

#[tokio::test]
async fn the_fixed_onie_url_answers_what_ztpctl_device_asks_and_the_mac_identifies() {
    let lab = Lab::new().await;
    // `ztpctl device --family onie` asks `HEAD /onie`: the size, no bytes.
    let unlisted = sent_by(Family::Onie, &device("SN-UNLISTED", Some("0C:42:A1:00:00:07"), "os-install"));
    let r = lab.send(Method::HEAD, "/onie", &unlisted).await;
    assert_eq!(r.status, StatusCode::OK, "leaf07's MAC, whatever its case: {r:?}");
    assert_eq!(r.header("content-length"), lab.install.len().to_string());
    assert!(r.body.is_empty());
    let r = lab.get("/onie", &unlisted).await;
    assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &lab.install[..]));
}

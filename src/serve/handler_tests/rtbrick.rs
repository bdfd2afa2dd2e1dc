//! RtBrick CTRLD (docs/protocols.md §4): named configuration files rendered per device, 404 for a
//! file the profile does not have (CTRLD skips it), and its status messages.

use axum::http::{HeaderValue, Method, StatusCode};
use serde_json::json;

use super::{Lab, device, sent_by};
use crate::{dryrun::RTBRICK_FILES, profile::identity::Family};

#[tokio::test]
async fn ctrld_gets_its_files_rendered_with_its_headers_and_404_for_the_others() {
    let lab = Lab::new().await;
    let mut ctrld = sent_by(Family::RtBrick, &device("SN-SPINE", None, ""));
    ctrld.insert("ELEMENT-NAME", HeaderValue::from_static("spine01"));
    let r = lab.get("/ztp/config/startup", &ctrld).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.json(), json!({"host": "default-leaf", "serial": "SN-SPINE", "element": "spine01"}));
    for file in RTBRICK_FILES.iter().filter(|f| **f != "startup") {
        let r = lab.get(&format!("/ztp/config/{file}"), &ctrld).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{file}: {r:?}");
    }
    let r = lab.send(Method::POST, "/ztp/message", &ctrld).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
}

#[tokio::test]
async fn ctrld_gets_the_image_onie_would_get() {
    let lab = Lab::new().await;
    let mut ctrld = sent_by(Family::RtBrick, &device("SN-SPINE", None, ""));
    ctrld.insert("ONIE-OPERATION", HeaderValue::from_static("os-install"));
    let r = lab.get("/ztp/image", &ctrld).await;
    assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &lab.install[..]));
    let r = lab.get("/ztp/images/nos.bin", &ctrld).await;
    assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &lab.install[..]));
    let r = lab.get("/ztp/images/other.bin", &ctrld).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "not one of its images: {r:?}");
}

//! Cumulus Linux (docs/protocols.md §2): the per-device script by its `CUMULUS-*` headers or by
//! serial in the path.

use axum::http::StatusCode;

use super::{Lab, device, sent_by};
use crate::{dryrun::Device, profile::identity::Family};

fn cumulus(serial: &str) -> Device {
    Device { model: Some("MSN2410".into()), ..device(serial, Some("0c:42:a1:00:00:07"), "") }
}

#[tokio::test]
async fn cumulus_gets_its_script_rendered_with_the_marker() {
    let lab = Lab::new().await;
    let sent = sent_by(Family::Cumulus, &cumulus("SN-LEAF07"));
    for path in ["/cumulus/ztp.sh", "/cumulus/SN-LEAF07/ztp.sh"] {
        let r = lab.get(path, &sent).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {r:?}");
        assert!(r.header("content-type").starts_with("text/plain"), "{r:?}");
        assert_eq!(r.text(), "#!/bin/bash\n# CUMULUS-AUTOPROVISIONING\necho leaf07\n", "{path}");
    }
}

#[tokio::test]
async fn cumulus_gets_404_without_a_profile_or_a_script() {
    let lab = Lab::new().await;
    // Known only by serial to a profile without a Cumulus script (its MAC is not leaf07's).
    let nvos_only = Device { mac: Some("0c:42:a1:00:00:55".into()), ..cumulus("SN-NVOS-ONLY") };
    let r = lab.get("/cumulus/ztp.sh", &sent_by(Family::Cumulus, &nvos_only)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    let nobody = Device { mac: Some("0c:42:a1:00:00:56".into()), ..cumulus("SN-NOBODY") };
    let r = lab.get("/cumulus/ztp.sh", &sent_by(Family::Cumulus, &nobody)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
}

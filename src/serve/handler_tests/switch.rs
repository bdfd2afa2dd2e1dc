//! A Switch in the snapshot changes what its device gets: the profile it pins (and only that
//! one), its hostname and variables over its profile's — for every family's rendered content —
//! while a device without a Switch is answered as before.

use std::collections::BTreeMap;

use axum::http::{HeaderValue, StatusCode};
use serde_json::json;

use super::{Lab, device, headers, sent_by};
use crate::profile::{identity::Family, snapshot::SwitchSnapshot};

fn switch(
    name: &str,
    serial: &str,
    profile: Option<&str>,
    hostname: Option<&str>,
    vars: &[(&str, &str)],
) -> SwitchSnapshot {
    SwitchSnapshot {
        namespace: "net".into(),
        name: name.into(),
        serial_number: serial.into(),
        profile: profile.map(str::to_owned),
        hostname: hostname.map(str::to_owned),
        variables: vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_switchs_hostname_reaches_the_model_profiles_template() {
    let lab = Lab::with_switches(vec![switch("leaf17", "SN-LEAF17", None, Some("leaf17"), &[])]).await;
    for (serial, host) in [("SN-LEAF17", "leaf17"), ("SN-OTHER", "default-leaf")] {
        let mut ctrld = sent_by(Family::RtBrick, &device(serial, None, ""));
        ctrld.insert("ELEMENT-NAME", HeaderValue::from_static("e1"));
        let r = lab.get("/ztp/config/startup", &ctrld).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        assert_eq!(r.json(), json!({"host": host, "serial": serial, "element": "e1"}));
    }
}

#[tokio::test]
async fn a_pinned_switch_gets_its_profile_with_its_own_values() {
    let pinned = switch("odd", "SN-ODD", Some("leaf07"), Some("odd01"), &[("ntp", "198.51.100.9")]);
    let lab = Lab::with_switches(vec![pinned, switch("lost", "SN-LOST", Some("no-such"), None, &[])]).await;
    // By model it would get the ONIE default (which has no NVOS sections); pinned, leaf07's.
    let nvos = sent_by(Family::Nvos, &device("SN-ODD", None, ""));
    let r = lab.get("/nvos/ztp.json", &nvos).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert!(r.text().contains("/nvos/SN-ODD/sections/02-commands-list"), "{}", r.text());
    let r = lab.get("/nvos/SN-ODD/sections/02-commands-list", &headers([])).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.text(), "nv set system hostname odd01\nnv set service ntp default server 198.51.100.9\n");
    // leaf07 itself still gets its own values.
    let r = lab.get("/nvos/SN-LEAF07/sections/02-commands-list", &headers([])).await;
    assert_eq!(r.text(), "nv set system hostname leaf07\nnv set service ntp default server 192.0.2.1\n");
    // A pin to a profile the snapshot lacks: nothing, never the model's profile instead.
    let onie = sent_by(Family::Onie, &device("SN-LOST", None, "os-install"));
    let r = lab.get("/onie-installer", &onie).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    assert!(r.text().contains("its Switch pins a profile that is not ready"), "{}", r.text());
    let other = sent_by(Family::Onie, &device("SN-OTHER", None, "os-install"));
    assert_eq!(lab.get("/onie-installer", &other).await.status, StatusCode::OK);
}

/// `GET /v1/switches[/{serial}]` lists what the writer last set, to an admin only.
#[tokio::test]
async fn the_switches_a_server_knows_are_listed_to_an_admin() {
    use std::sync::Arc;

    use crate::api::{Switch, SwitchSpec};

    let lab = Lab::new().await;
    let admin = headers([("Authorization", format!("Bearer {}", super::ADMIN_TOKEN).as_str())]);
    let r = lab.get("/v1/switches", &headers([])).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    let r = lab.get("/v1/switches", &admin).await;
    assert_eq!((r.status, r.json()), (StatusCode::OK, json!([])), "nothing written yet");
    let made = |name: &str, serial: &str| {
        let mut s = Switch::new(name, SwitchSpec::for_serial(serial));
        s.metadata.namespace = Some("net".into());
        Arc::new(s)
    };
    lab.roster.set(vec![made("spine-1", "SN-SPINE1"), made("leaf-7", "SN-LEAF07")]);
    let r = lab.get("/v1/switches", &admin).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let names: Vec<serde_json::Value> =
        r.json().as_array().expect("a list").iter().map(|s| s["metadata"]["name"].clone()).collect();
    assert_eq!(names, [json!("leaf-7"), json!("spine-1")]);
    let r = lab.get("/v1/switches/SN-SPINE1", &admin).await;
    assert_eq!((r.status, &r.json()["spec"]["serialNumber"]), (StatusCode::OK, &json!("SN-SPINE1")));
    let r = lab.get("/v1/switches/SN-NONE", &admin).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    assert_eq!(r.json(), json!({"detail": "no Switch has serial number \"SN-NONE\""}));
}

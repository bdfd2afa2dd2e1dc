//! `spec.hold`: a device whose Switch is on hold gets 403 on every device route — ONIE, NVOS,
//! SONiC, Cumulus, RtBrick, its sections, an image by path named by its headers, the callback
//! and reports — and everything again once the hold is lifted; other devices are not affected.

use axum::http::{HeaderValue, Method, StatusCode};
use kube::runtime::watcher::Event;

use super::{Lab, device, headers, sent_by};
use crate::{api::Switch, profile::identity::Family};

fn switch(serial: &str, hold: bool) -> Switch {
    let mut s = Switch::new("leaf07", crate::api::SwitchSpec::for_serial(serial));
    s.metadata.namespace = Some("net".into());
    s.spec.hold = hold;
    s
}

const HELD: &str = "this switch is on hold (spec.hold of its Switch): it gets nothing here\n";

#[tokio::test]
async fn a_device_on_hold_gets_403_on_every_device_route_until_released() {
    let lab = Lab::new().await;
    let leaf07 = device("SN-LEAF07", Some("0c:42:a1:00:00:07"), "os-install");
    let mut ctrld = sent_by(Family::RtBrick, &leaf07);
    ctrld.insert("ELEMENT-NAME", HeaderValue::from_static("leaf07"));
    let token = format!("Bearer {}", lab.report_key.token("SN-LEAF07"));
    let requests = [
        (Method::GET, "/onie-installer", sent_by(Family::Onie, &leaf07)),
        (Method::GET, "/nvos/ztp.json", sent_by(Family::Nvos, &leaf07)),
        (Method::GET, "/nvos/SN-LEAF07/sections/02-commands-list", headers([])),
        (Method::GET, "/sonic/SN-LEAF07/ztp.json", headers([])),
        (Method::GET, "/cumulus/ztp.sh", sent_by(Family::Cumulus, &leaf07)),
        (Method::GET, "/ztp/config/report", ctrld),
        (Method::GET, "/images/nos/1/nos.bin", sent_by(Family::Nvos, &leaf07)),
        (Method::POST, "/v1/devices/SN-LEAF07/provisioned", headers([])),
        (Method::POST, "/v1/devices/SN-LEAF07/report", headers([("Authorization", token.as_str())])),
    ];
    let body = || axum::body::Bytes::from_static(br#"{"stage": "x"}"#);
    for (method, path, sent) in &requests {
        let r = lab.send_body(method.clone(), path, sent, body()).await;
        assert!(r.status.is_success(), "{method} {path} before the hold: {r:?}");
    }
    lab.held.observe(&Event::Apply(switch("SN-LEAF07", true)));
    for (method, path, sent) in &requests {
        let r = lab.send_body(method.clone(), path, sent, body()).await;
        assert_eq!((r.status, r.text()), (StatusCode::FORBIDDEN, HELD), "{method} {path} on hold");
    }
    let (pending, _) = lab.switches.take();
    let steps: usize = pending.iter().map(|(_, p)| p.events.len()).sum();
    assert_eq!(steps, 9, "the nine answers before the hold; nothing while held");
    // Another device, and an image by path without identity, are served as before.
    let other = sent_by(Family::Nvos, &device("SN-NVOS-ONLY", None, ""));
    assert_eq!(lab.get("/nvos/ztp.json", &other).await.status, StatusCode::OK);
    assert_eq!(lab.get("/images/nos/1/nos.bin", &headers([])).await.status, StatusCode::OK);
    lab.held.observe(&Event::Apply(switch("SN-LEAF07", false)));
    for (method, path, sent) in &requests {
        let r = lab.send_body(method.clone(), path, sent, body()).await;
        assert!(r.status.is_success(), "{method} {path} after the hold: {r:?}");
    }
}

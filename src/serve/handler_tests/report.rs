//! Stage reports (`POST /v1/devices/{serial}/report`) with the device's report token, the
//! template variables that hand a device its URL and token, and the old callback beside them:
//! what the request log hands the Switch book for each (nothing for a refused report).

use axum::{
    body::Bytes,
    http::{HeaderMap, Method, StatusCode},
};

use super::{Lab, device, headers, sent_by};
use crate::{
    api::StageResult,
    profile::identity::Family,
    switch::lifecycle::{Report, What},
};

/// The steps the lab's request log gathered for `serial` since the last call.
fn steps(lab: &Lab, serial: &str) -> Vec<What> {
    let (pending, _) = lab.switches.take();
    pending.into_iter().filter(|(s, _)| s == serial).flat_map(|(_, p)| p.events).map(|e| e.what).collect()
}

fn bearer(token: &str) -> HeaderMap {
    headers([("Authorization", format!("Bearer {token}").as_str())])
}

async fn report(lab: &Lab, serial: &str, auth: &HeaderMap, body: &str) -> (StatusCode, String) {
    let uri = format!("/v1/devices/{serial}/report");
    let r = lab.send_body(Method::POST, &uri, auth, Bytes::from(body.to_owned())).await;
    (r.status, r.text().to_owned())
}

#[tokio::test]
async fn a_report_with_the_device_s_token_is_recorded_and_any_other_is_refused() {
    let lab = Lab::new().await;
    let token = lab.report_key.token("SN-LEAF07");
    let body = r#"{"stage": "image-installed", "message": "nos 1"}"#;

    let (status, text) = report(&lab, "SN-LEAF07", &HeaderMap::new(), body).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    assert!(text.contains("report token"), "{text}");
    let (status, _) = report(&lab, "SN-LEAF07", &bearer(&lab.report_key.token("SN-OTHER")), body).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "another device's token");
    let (status, _) = report(&lab, "SN-LEAF07", &bearer("0123"), body).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "not a token");
    assert_eq!(steps(&lab, "SN-LEAF07"), [], "nothing recorded for a refused report");

    let (status, text) = report(&lab, "SN-LEAF07", &bearer(&token), r#"{"stage": "a b"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("stage must be"), "{text}");
    let (status, text) = report(&lab, "SN-LEAF07", &bearer(&token), "stage=x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("not a stage report"), "{text}");
    let (status, _) = report(&lab, "..", &bearer(&token), body).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not a serial number");
    assert_eq!(steps(&lab, "SN-LEAF07"), []);

    let (status, text) = report(&lab, "SN-LEAF07", &bearer(&token), body).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
    let failed = r#"{"stage": "config", "result": "failed", "message": "nv config apply: exit 1"}"#;
    let (status, _) = report(&lab, "SN-LEAF07", &bearer(&token), failed).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        steps(&lab, "SN-LEAF07"),
        [
            What::Reported(Report::new("image-installed", StageResult::Ok, Some("nos 1")).unwrap()),
            What::Reported(
                Report::new("config", StageResult::Failed, Some("nv config apply: exit 1")).unwrap()
            ),
        ]
    );
    // A device no profile matches reports too: its Switch may exist without one.
    let stranger = lab.report_key.token("SN-STRANGER");
    let (status, _) = report(&lab, "SN-STRANGER", &bearer(&stranger), r#"{"stage": "provisioned"}"#).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(steps(&lab, "SN-STRANGER"), [What::Reported(Report::provisioned())]);
}

#[tokio::test]
async fn templates_get_the_device_s_report_url_and_token() {
    let lab = Lab::new().await;
    let ctrld = sent_by(Family::RtBrick, &device("SN-LEAF07", Some("0c:42:a1:00:00:07"), ""));
    let r = lab.get("/ztp/config/report", &ctrld).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let token = lab.report_key.token("SN-LEAF07");
    assert_eq!(
        r.text(),
        format!("curl -H 'Authorization: Bearer {token}' http://ztp.test:8080/v1/devices/SN-LEAF07/report\n")
    );
    // What a script does with them is recorded.
    let (status, _) = report(&lab, "SN-LEAF07", &bearer(&token), r#"{"stage": "provisioned"}"#).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(steps(&lab, "SN-LEAF07").contains(&What::Reported(Report::provisioned())));
}

#[tokio::test]
async fn the_old_callback_stays_open_and_records_the_final_stage() {
    let lab = Lab::new().await;
    let r = lab.send(Method::POST, "/v1/devices/SN-LEAF07/provisioned", &HeaderMap::new()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    assert_eq!(steps(&lab, "SN-LEAF07"), [What::Reported(Report::provisioned())]);
}

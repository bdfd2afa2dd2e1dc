//! `POST /v1/devices/{serial}/report`: a device's scripts report their stages, each with the
//! device's report token ([`crate::switch::token`]); and the token check the old `provisioned`
//! callback makes with `--require-report-token`. A report is recorded for the device's Switch
//! (the request log hands it to the Switch book); nothing is recorded for a refused one.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use utoipa::ToSchema;

use super::{
    AppState,
    auth::bearer,
    device::{find_device, refuse_held},
    reply::Refusal,
};
use crate::{
    activity::Stage,
    api::{StageResult, validate_segment},
    profile::identity::Family,
    switch::{
        lifecycle::{PROVISIONED, Report, What},
        token::ReportKey,
    },
};

/// How the server takes reports.
#[derive(Debug, Clone, Default)]
pub struct Reports {
    /// The key report tokens are checked with (`--report-key-file`); `None`: reports are
    /// refused (503) and templates have no `report_token`.
    pub key: Option<Arc<ReportKey>>,
    /// `--require-report-token`: the old `provisioned` callback needs the token too.
    pub require_token: bool,
}

impl Reports {
    /// Whether `headers` carry `serial`'s report token.
    fn authentic(&self, serial: &str, headers: &HeaderMap) -> bool {
        match (&self.key, bearer(headers)) {
            (Some(key), Some(token)) => key.verify(serial, token),
            _ => false,
        }
    }

    /// The `provisioned` callback's check: none unless `--require-report-token`.
    pub fn check_callback(&self, serial: &str, headers: &HeaderMap) -> Result<(), Refusal> {
        if self.require_token && !self.authentic(serial, headers) {
            return Err(Refusal::BadReportToken);
        }
        Ok(())
    }
}

/// A stage report.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StageReport {
    /// The stage: 1 to 64 of `A-Z a-z 0-9 . _ -`, e.g. `image-installed`. `provisioned` (any
    /// case) with result `ok` closes the attempt as Provisioned.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$", min_length = 1, max_length = 64)]
    pub stage: String,
    /// `ok` (the default) or `failed`: a failure closes the attempt as Failed.
    #[serde(default)]
    pub result: ReportResult,
    /// What to show with it (the first 512 bytes are kept), e.g. the failure's reason.
    #[serde(default)]
    #[schema(max_length = 1024)]
    pub message: Option<String>,
}

/// A reported stage's result.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReportResult {
    #[default]
    Ok,
    Failed,
}

/// Longest report body read.
const MAX_REPORT_BYTES: usize = 16 * 1024;

/// `POST /v1/devices/{serial}/report`.
#[utoipa::path(post, path = "/v1/devices/{serial}/report", tag = "devices",
    params(
        ("serial" = String, Path, description = "Serial number of the switch"),
        ("Authorization" = String, Header, description = "`Bearer ` and the device's report token (the template variable `report_token`)"),
    ),
    request_body(content = StageReport, content_type = "application/json"),
    responses(
        (status = 204, description = "Recorded for the device's Switch"),
        (status = 400, description = "The body is not a stage report", body = String, content_type = "text/plain"),
        (status = 403, description = "No token, or not this device's, or the device is on hold: nothing recorded", body = String, content_type = "text/plain"),
        (status = 404, description = "The path's serial is not a serial number", body = String, content_type = "text/plain"),
        (status = 503, description = "This server takes no reports (no --report-key-file)", body = String, content_type = "text/plain")))]
pub async fn report(
    State(state): State<AppState>,
    Path(serial): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    if validate_segment("serial number", &serial).is_err() {
        return Err(Refusal::NotForYou("not a serial number"));
    }
    let report = parse(&body).map_err(Refusal::BadReport)?;
    refuse_held(&state, Some(&serial))?;
    if bearer(&headers).is_none() {
        return Err(Refusal::BadReportToken);
    }
    if state.reports.key.is_none() {
        return Err(Refusal::NoReportKey);
    }
    if !state.reports.authentic(&serial, &headers) {
        tracing::warn!(target: "ztp_operator::device", serial = %serial, stage = %report.stage, "report refused: wrong token");
        return Err(Refusal::BadReportToken);
    }
    tracing::info!(target: "ztp_operator::device", serial = %serial, stage = %report.stage, result = ?report.result, "device reported");
    let mut response = StatusCode::NO_CONTENT.into_response();
    // A matched device's profile counts it provisioned, as with the old callback.
    if report.stage == PROVISIONED
        && report.result == StageResult::Ok
        && let Ok(device) = find_device(&state, &headers, Family::Unknown, Some(&serial))
    {
        response.extensions_mut().insert(device.outcome(Stage::Provisioned).into_owned());
    }
    response.extensions_mut().insert(What::Reported(report));
    Ok(response)
}

/// The report in a request body, checked.
fn parse(body: &[u8]) -> Result<Report, String> {
    if body.len() > MAX_REPORT_BYTES {
        return Err(format!("a report has at most {MAX_REPORT_BYTES} bytes"));
    }
    let r: StageReport = serde_json::from_slice(body).map_err(|e| format!("not a stage report: {e}"))?;
    let result = match r.result {
        ReportResult::Ok => StageResult::Ok,
        ReportResult::Failed => StageResult::Failed,
    };
    Report::new(&r.stage, result, r.message.as_deref()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn the_callback_needs_the_token_only_when_required() {
        let key = ReportKey::from_bytes("test", &[b'k'; 32]).unwrap();
        let token = key.token("SN1");
        let open = Reports { key: Some(Arc::new(key)), require_token: false };
        assert!(open.check_callback("SN1", &HeaderMap::new()).is_ok(), "existing scripts keep working");
        let strict = Reports { require_token: true, ..open };
        assert!(matches!(strict.check_callback("SN1", &HeaderMap::new()), Err(Refusal::BadReportToken)));
        let mut with = HeaderMap::new();
        with.insert("authorization", HeaderValue::from_str(&format!("bearer {token}")).unwrap());
        assert!(strict.check_callback("SN1", &with).is_ok());
        assert!(
            matches!(strict.check_callback("SN2", &with), Err(Refusal::BadReportToken)),
            "another serial"
        );
    }

    #[test]
    fn a_report_body_is_checked_before_anything_is_recorded() {
        let ok = parse(br#"{"stage": "image-installed"}"#).unwrap();
        assert_eq!((ok.stage.as_str(), ok.result, ok.message), ("image-installed", StageResult::Ok, None));
        let failed =
            parse(br#"{"stage": "config", "result": "failed", "message": "nv config apply: exit 1"}"#)
                .unwrap();
        assert_eq!(
            (failed.result, failed.message.as_deref()),
            (StageResult::Failed, Some("nv config apply: exit 1"))
        );
        assert_eq!(parse(br#"{"stage": "Provisioned"}"#).unwrap().stage, PROVISIONED);
        for (body, says) in [
            (&b"not json"[..], "not a stage report"),
            (br#"{"result": "ok"}"#, "missing field `stage`"),
            (br#"{"stage": "a b"}"#, "stage must be"),
            (br#"{"stage": "x", "result": "maybe"}"#, "unknown variant"),
            (br#"{"stage": "x", "token": "t"}"#, "unknown field"),
        ] {
            let e = parse(body).unwrap_err();
            assert!(e.contains(says), "{}: {e}", String::from_utf8_lossy(body));
        }
        assert!(parse(&vec![b' '; MAX_REPORT_BYTES + 1]).unwrap_err().contains("at most"));
    }
}

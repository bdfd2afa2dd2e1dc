//! Replies every device route shares: plain text, the 404 that sends ONIE to its next name, a
//! rendered file (never cached by the client), and [`Refusal`], every reason a device request is
//! refused, turned into its response in one place.

use axum::{
    body::Body,
    http::{HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use super::{files, onie_pass};
use crate::{activity::RenderFailure, api::SegmentError};

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<String>) -> Response {
    let mut r = (status, body.into()).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// 404: this device gets nothing here (ONIE then tries its next name).
pub fn not_for_you(why: &str) -> Response {
    text(StatusCode::NOT_FOUND, format!("{why}\n"))
}

/// The body of a rendered text file.
pub fn rendered(content_type: &'static str, body: impl Into<Body>) -> Response {
    let mut r = Response::new(body.into());
    for (name, value) in rendered_headers(content_type) {
        r.headers_mut().insert(name, value);
    }
    r
}

/// The headers of [`rendered`] (for the connection loop, which writes a rendered document's head
/// itself).
pub fn rendered_headers(content_type: &'static str) -> [(HeaderName, HeaderValue); 2] {
    [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ]
}

/// Why a device request gets no answer of its own. Handlers return `Result<Response, Refusal>`;
/// the one [`IntoResponse`] below writes each refusal's status and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 503: no device snapshot is loaded yet.
    NoSnapshot,
    /// 400: an identity header longer than a path segment may be.
    BadIdentity(SegmentError),
    /// 400: no usable Host header, so no base URL for the URLs of the answer.
    NoBaseUrl,
    /// 404: this device gets nothing here, and why (ONIE then tries its next name).
    NotForYou(&'static str),
    /// 404: a later candidate of ONIE's discovery pass, right after the device downloaded the same
    /// installer in full (the [`onie_pass::Refused`] rides on the response as an extension).
    SamePass(Box<onie_pass::Refused>),
    /// 500: a template failed for this device (the [`RenderFailure`] rides on the response as an
    /// extension, for the request-log middleware's Warning Event).
    Render(Box<RenderFailure>),
    /// 404 `{"detail": "Firmware image not found in S3."}`: the reference's answer (JSON, unlike
    /// the device routes' plain-text 404s).
    FirmwareNotFound,
    /// 400: a report's body is not a stage report, and why.
    BadReport(String),
    /// 403: a report (or, with `--require-report-token`, a callback) without the device's token.
    BadReportToken,
    /// 503: this server has no report key (`--report-key-file`).
    NoReportKey,
    /// 403: the device's Switch is on hold (`spec.hold`): it gets nothing.
    Held,
    /// 503: the device's ZTP JSON installs the OsImage its Switch pins (`spec.osImage`), which
    /// is not Ready yet (the switch asks again; it never gets its profile's image instead).
    PinnedImageNotReady,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::NoSnapshot => text(StatusCode::SERVICE_UNAVAILABLE, "no device snapshot loaded yet\n"),
            Refusal::BadIdentity(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
            Refusal::NoBaseUrl => text(
                StatusCode::BAD_REQUEST,
                "no usable Host header: this server cannot tell which address you reached \
                 (start it with --external-url, or listen on a specific address)\n",
            ),
            Refusal::NotForYou(why) => not_for_you(why),
            Refusal::SamePass(refused) => {
                let mut response = not_for_you(onie_pass::REFUSED_BODY);
                response.extensions_mut().insert(*refused);
                response
            }
            Refusal::Render(failure) => {
                let mut response = text(StatusCode::INTERNAL_SERVER_ERROR, format!("{}\n", failure.error));
                response.extensions_mut().insert(*failure);
                response
            }
            Refusal::FirmwareNotFound => {
                files::detail(StatusCode::NOT_FOUND, "Firmware image not found in S3.")
            }
            Refusal::BadReport(why) => text(StatusCode::BAD_REQUEST, format!("{why}\n")),
            Refusal::BadReportToken => text(
                StatusCode::FORBIDDEN,
                "this needs the device's report token (Authorization: Bearer <report_token>): nothing recorded\n",
            ),
            Refusal::Held => text(
                StatusCode::FORBIDDEN,
                "this switch is on hold (spec.hold of its Switch): it gets nothing here\n",
            ),
            Refusal::PinnedImageNotReady => {
                let mut response = text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the OsImage its Switch pins (spec.osImage) is not Ready yet\n",
                );
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
                response
            }
            Refusal::NoReportKey => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "this server takes no reports: it was started without --report-key-file\n",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn body(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.expect("body");
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    /// Each refusal's status, content type and text, as devices and the reference's clients read
    /// them.
    #[tokio::test]
    async fn every_refusal_has_its_status_and_text() {
        let plain = "text/plain; charset=utf-8";
        let cases: Vec<(Refusal, StatusCode, &str, &str)> = vec![
            (Refusal::NoSnapshot, StatusCode::SERVICE_UNAVAILABLE, plain, "no device snapshot loaded yet\n"),
            (
                Refusal::NotForYou("no profile matches this device"),
                StatusCode::NOT_FOUND,
                plain,
                "no profile matches this device\n",
            ),
            (
                Refusal::NoBaseUrl,
                StatusCode::BAD_REQUEST,
                plain,
                "no usable Host header: this server cannot tell which address you reached (start it with --external-url, or listen on a specific address)\n",
            ),
            (
                Refusal::BadReportToken,
                StatusCode::FORBIDDEN,
                plain,
                "this needs the device's report token (Authorization: Bearer <report_token>): nothing recorded\n",
            ),
            (
                Refusal::Held,
                StatusCode::FORBIDDEN,
                plain,
                "this switch is on hold (spec.hold of its Switch): it gets nothing here\n",
            ),
            (
                Refusal::NoReportKey,
                StatusCode::SERVICE_UNAVAILABLE,
                plain,
                "this server takes no reports: it was started without --report-key-file\n",
            ),
            (
                Refusal::BadReport("missing field `stage`".into()),
                StatusCode::BAD_REQUEST,
                plain,
                "missing field `stage`\n",
            ),
            (
                Refusal::FirmwareNotFound,
                StatusCode::NOT_FOUND,
                "application/json",
                "{\"detail\":\"Firmware image not found in S3.\"}",
            ),
        ];
        for (refusal, status, content_type, text) in cases {
            let response = refusal.clone().into_response();
            assert_eq!(response.status(), status, "{refusal:?}");
            assert_eq!(response.headers()[header::CONTENT_TYPE], content_type, "{refusal:?}");
            assert_eq!(body(response).await, text, "{refusal:?}");
        }
        let long = crate::api::validate_length("serial number", &"x".repeat(300)).expect_err("too long");
        let response = Refusal::BadIdentity(long.clone()).into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(body(response).await, format!("{long}\n"));
    }

    /// The refusals that carry evidence hand it to whoever logs the request.
    #[tokio::test]
    async fn refusals_carry_their_evidence_as_extensions() {
        let failure = RenderFailure {
            namespace: "net".into(),
            profile: "leaf".into(),
            serial: Some("SN1".into()),
            mac: None,
            error: "undefined value `x`".into(),
        };
        let response = Refusal::Render(Box::new(failure.clone())).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.extensions().get::<RenderFailure>(), Some(&failure));
        assert_eq!(body(response).await, "undefined value `x`\n");

        let refused = onie_pass::Refused {
            device: "serial SN1".into(),
            image: "nos/1/nos.bin".into(),
            sha256: "ab".into(),
            after: Duration::from_secs(3),
        };
        let response = Refusal::SamePass(Box::new(refused.clone())).into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.extensions().get::<onie_pass::Refused>(), Some(&refused));
        assert_eq!(body(response).await, format!("{}\n", onie_pass::REFUSED_BODY));
    }
}

//! RtBrick: after ONIE installed RBFS, CTRLD fetches `<base>/ztp/config/{ctrld,ctrldrbac,element,
//! startup,apigwd,accessjwks,tls}` (DHCP option 210 gives the base); a missing file is skipped by
//! CTRLD, so absent files are 404. `/ztp/image` chooses the image like ONIE does.

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
};
use utoipa::IntoParams;

use super::{
    AppState,
    choose::ImageRequest,
    device::{config_served, find_device, image_served, render_failed},
    observe::loggable,
    reply::{Refusal, rendered},
};
use crate::profile::{
    identity::{Family, H_ONIE_SERIAL},
    render::render_text,
    snapshot::Resolved,
};

/// `GET /ztp/image`: install or update image by serial and `ONIE-OPERATION`.
#[utoipa::path(get, path = "/ztp/image", tag = "rtbrick", params(super::onie::OnieHeaders),
    responses((status = 200, description = "The install or update image for this switch and `ONIE-OPERATION`", content_type = "application/octet-stream"),
        (status = 404, description = "No profile matches, or no image for this operation")))]
pub async fn image(State(state): State<AppState>, method: Method, headers: HeaderMap) -> Response {
    state.answer_image(&method, &headers, None, &ImageRequest::RtBrickImage).await
}

/// `GET /ztp/images/{file}`: one of the device's images by file name.
#[utoipa::path(get, path = "/ztp/images/{file}", tag = "rtbrick",
    params(("file" = String, Path, description = "File name of one of the switch's images"), RtBrickHeaders),
    responses((status = 200, description = "The image", content_type = "application/octet-stream"),
        (status = 404, description = "Not one of this switch's images")))]
pub async fn image_file(
    State(state): State<AppState>,
    Path(file): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    state.answer_image(&method, &headers, None, &ImageRequest::RtBrickFile(file)).await
}

/// `GET /ztp/config/{name}`: a named file of the profile, rendered for this device.
#[utoipa::path(get, path = "/ztp/config/{name}", tag = "rtbrick",
    params(("name" = String, Path, description = "`ctrld`, `ctrldrbac`, `element`, `startup`, `apigwd`, `accessjwks` or `tls`"), RtBrickHeaders),
    responses((status = 200, description = "The profile's file of that name, rendered for this switch"),
        (status = 404, description = "No profile matches, or it has no such file")))]
pub async fn config(
    State(state): State<AppState>,
    Path(name): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let device = find_device(&state, &headers, Family::RtBrick, None)?;
    match device.profile().files.get(&name) {
        Some(Resolved::Text(t)) => {
            let body = render_text(t, &device.render_context()?).map_err(|e| render_failed(&device, e))?;
            Ok(config_served(rendered("application/octet-stream", body), &device))
        }
        Some(Resolved::Image(k)) => {
            let img =
                device.loaded.snapshot.images.get(k).ok_or(Refusal::NotForYou("image not available"))?;
            let response = state.serve_image(&method, &headers, img).await;
            Ok(image_served(response, &device, &method))
        }
        None => Err(Refusal::NotForYou("no such config file for this device")),
    }
}

/// `POST /ztp/message`: CTRLD's status message; logged, answered 204.
#[utoipa::path(post, path = "/ztp/message", tag = "rtbrick", params(RtBrickHeaders),
    request_body(content = Option<String>, description = "CTRLD's status message (may be empty)", content_type = "text/plain"),
    responses((status = 204, description = "Logged")))]
pub async fn message(headers: HeaderMap, body: Bytes) -> Response {
    let serial = headers.get(&H_ONIE_SERIAL).and_then(|v| v.to_str().ok()).unwrap_or("-");
    let serial = loggable(serial, crate::api::names::MAX_SEGMENT_LEN);
    let text = loggable(&String::from_utf8_lossy(&body), 2048);
    tracing::info!(target: "ztp_operator::device", serial, message = %text, "device message");
    StatusCode::NO_CONTENT.into_response()
}

/// What RtBrick's CTRLD sends beside `ONIE-SERIAL-NUMBER` (docs/protocols.md §4).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct RtBrickHeaders {
    /// Serial number of the switch.
    #[param(rename = "ONIE-SERIAL-NUMBER")]
    serial_number: Option<String>,
    /// The RBFS container.
    #[param(rename = "CONTAINER-NAME")]
    container_name: Option<String>,
    /// The element (switch) name.
    #[param(rename = "ELEMENT-NAME")]
    element_name: Option<String>,
    /// The host name.
    #[param(rename = "HOST-NAME")]
    host_name: Option<String>,
}

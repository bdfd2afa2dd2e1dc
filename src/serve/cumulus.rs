//! Cumulus Linux ZTP: a per-device script (DHCP option 239 points at `/cumulus/ztp.sh`), with the
//! `CUMULUS-AUTOPROVISIONING` marker and LF line endings only.

use axum::{
    extract::{Path, State},
    http::HeaderMap,
    response::Response,
};

use super::{
    AppState, activity,
    common::{find_device, not_for_you, render_failed, rendered},
};
use crate::profile::{identity::Family, render::cumulus_script};

/// `GET /cumulus/ztp.sh`: identified by the `CUMULUS-*` headers.
#[utoipa::path(get, path = "/cumulus/ztp.sh", tag = "cumulus", params(super::openapi::CumulusHeaders),
    responses((status = 200, description = "This switch's ZTP script (contains `CUMULUS-AUTOPROVISIONING`, LF line endings)", content_type = "text/plain"),
        (status = 404, description = "No profile matches, or the profile has no Cumulus script")))]
pub async fn by_headers(State(state): State<AppState>, headers: HeaderMap) -> Response {
    script(&state, &headers, None)
}

/// `GET /cumulus/{serial}/ztp.sh`.
#[utoipa::path(get, path = "/cumulus/{serial}/ztp.sh", tag = "cumulus",
    params(("serial" = String, Path, description = "Serial number of the switch"), super::openapi::CumulusHeaders),
    responses((status = 200, description = "The ZTP script of the switch with this serial number", content_type = "text/plain"),
        (status = 404, description = "No profile matches, or the profile has no Cumulus script")))]
pub async fn by_serial(
    State(state): State<AppState>,
    Path(serial): Path<String>,
    headers: HeaderMap,
) -> Response {
    script(&state, &headers, Some(&serial))
}

fn script(state: &AppState, headers: &HeaderMap, serial: Option<&str>) -> Response {
    let device = match find_device(state, headers, Family::Cumulus, serial) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let Some(text) = device.profile().cumulus_script.as_ref() else {
        return not_for_you("this profile has no Cumulus script");
    };
    let ctx = match device.render_context() {
        Ok(ctx) => ctx,
        Err(r) => return r,
    };
    match cumulus_script(text, &ctx) {
        Ok(body) => activity::config_served(rendered("text/plain; charset=utf-8", body), &device),
        Err(e) => render_failed(&device, e),
    }
}

//! Cumulus Linux ZTP: a per-device script (DHCP option 239 points at `/cumulus/ztp.sh`), with the
//! `CUMULUS-AUTOPROVISIONING` marker and LF line endings only.

use axum::{
    extract::{Path, State},
    http::HeaderMap,
    response::Response,
};
use utoipa::IntoParams;

use super::{
    AppState,
    device::{config_served, find_device, render_failed},
    reply::{Refusal, rendered},
};
use crate::profile::{identity::Family, render::cumulus_script};

/// `GET /cumulus/ztp.sh`: identified by the `CUMULUS-*` headers.
#[utoipa::path(get, path = "/cumulus/ztp.sh", tag = "cumulus", params(CumulusHeaders),
    responses((status = 200, description = "This switch's ZTP script (contains `CUMULUS-AUTOPROVISIONING`, LF line endings)", content_type = "text/plain"),
        (status = 404, description = "No profile matches, or the profile has no Cumulus script")))]
pub async fn by_headers(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, Refusal> {
    script(&state, &headers, None)
}

/// `GET /cumulus/{serial}/ztp.sh`.
#[utoipa::path(get, path = "/cumulus/{serial}/ztp.sh", tag = "cumulus",
    params(("serial" = String, Path, description = "Serial number of the switch"), CumulusHeaders),
    responses((status = 200, description = "The ZTP script of the switch with this serial number", content_type = "text/plain"),
        (status = 404, description = "No profile matches, or the profile has no Cumulus script")))]
pub async fn by_serial(
    State(state): State<AppState>,
    Path(serial): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    script(&state, &headers, Some(&serial))
}

fn script(state: &AppState, headers: &HeaderMap, serial: Option<&str>) -> Result<Response, Refusal> {
    let device = find_device(state, headers, Family::Cumulus, serial)?;
    let text = device.profile().cumulus_script.as_ref();
    let text = text.ok_or(Refusal::NotForYou("this profile has no Cumulus script"))?;
    let ctx = device.render_context()?;
    let body = cumulus_script(text, &ctx).map_err(|e| render_failed(&device, e))?;
    Ok(config_served(rendered("text/plain; charset=utf-8", body), &device))
}

/// The headers Cumulus Linux ZTP sends (docs/protocols.md §2.3).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct CumulusHeaders {
    /// Serial number of the switch.
    #[param(rename = "CUMULUS-SERIAL")]
    serial: Option<String>,
    /// Base MAC address.
    #[param(rename = "CUMULUS-BASE-MAC")]
    base_mac: Option<String>,
    /// Product name (matches `spec.match.models`).
    #[param(rename = "CUMULUS-PRODUCTNAME")]
    product_name: Option<String>,
}

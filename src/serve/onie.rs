//! ONIE image discovery: the default-name waterfall at `/` and one fixed URL (`/onie`) for DHCP
//! option 114. The image is chosen (in [`super::choose`]) by `ONIE-OPERATION` (`os-install` →
//! the profile's install image, `onie-update` → its update image) and the device's identity; 404
//! when nothing matches. Never a redirect. Each image falls back on its own to the next less
//! specific matching profile that sets it ([`super::choose::onie_image`]), and a failing installer
//! is sent once per discovery pass ([`super::onie_pass`]). Plain GETs are usually answered by the
//! connection loop ([`super::conn`]) through the same [`super::choose`], before any handler here.

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{ConnectInfo, Path, State},
    http::{Extensions, HeaderMap, Method},
    response::Response,
};
use utoipa::IntoParams;

use super::{AppState, choose::ImageRequest, reply::Refusal};
use crate::routes::operation_of_name;

/// The client's address, when the connection recorded it.
pub fn source_of(extensions: &Extensions) -> Option<IpAddr> {
    extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

/// `GET /{name}`: one of the waterfall names.
#[utoipa::path(get, path = "/{name}", tag = "onie",
    params(("name" = String, Path, description = "A name of ONIE's discovery waterfall: `onie-installer-<arch>-<vendor>_<machine>-r<rev>`, … `onie-installer`, `onie-updater…`, with or without `.bin`"), OnieHeaders),
    responses((status = 200, description = "The image for this switch and operation", content_type = "application/octet-stream"),
        (status = 404, description = "Not for this device (ONIE tries its next name)"),
        (status = 503, description = "Too many downloads at once (`Retry-After`)")))]
pub async fn waterfall(
    State(state): State<AppState>,
    Path(name): Path<String>,
    method: Method,
    extensions: Extensions,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    operation_of_name(&name).ok_or(Refusal::NotForYou("not an ONIE installer or updater name"))?;
    let source = source_of(&extensions);
    Ok(state.answer_image(&method, &headers, source, &ImageRequest::Onie(Some(name))).await)
}

/// `GET /onie`: the fixed URL for DHCP option 114.
#[utoipa::path(get, path = "/onie", tag = "onie", params(OnieHeaders),
    responses((status = 200, description = "The installer (`os-install`) or updater (`onie-update`) for this switch; HEAD and single ranges (206) work", content_type = "application/octet-stream"),
        (status = 404, description = "No profile matches this device, or it gets no image for this operation"),
        (status = 503, description = "Too many downloads at once; `Retry-After` says when to come back")))]
pub async fn fixed(
    State(state): State<AppState>,
    method: Method,
    extensions: Extensions,
    headers: HeaderMap,
) -> Response {
    state.answer_image(&method, &headers, source_of(&extensions), &ImageRequest::Onie(None)).await
}

/// The headers ONIE sends with every discovery request (docs/protocols.md §1); RtBrick's CTRLD sends
/// the serial number too.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // read from the HeaderMap; here only to document them
pub struct OnieHeaders {
    /// Serial number of the switch (matches `spec.match.serialNumbers`).
    #[param(rename = "ONIE-SERIAL-NUMBER")]
    serial_number: Option<String>,
    /// Base MAC address (matches `spec.match.macAddresses`).
    #[param(rename = "ONIE-ETH-ADDR")]
    eth_addr: Option<String>,
    /// Platform name, e.g. `accton_as7712_32x` (matches `spec.match.models`).
    #[param(rename = "ONIE-MACHINE")]
    machine: Option<String>,
    /// Machine revision.
    #[param(rename = "ONIE-MACHINE-REV")]
    machine_rev: Option<String>,
    /// CPU architecture, e.g. `x86_64`.
    #[param(rename = "ONIE-ARCH")]
    arch: Option<String>,
    /// IANA enterprise number of the vendor.
    #[param(rename = "ONIE-VENDOR-ID")]
    vendor_id: Option<String>,
    /// `os-install` (the NOS installer) or `onie-update` (the ONIE updater).
    #[param(rename = "ONIE-OPERATION")]
    operation: Option<String>,
}

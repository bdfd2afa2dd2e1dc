//! ONIE image discovery: the default-name waterfall at `/` and one fixed URL (`/onie`) for DHCP
//! option 114. The image is chosen (in [`super::choose`]) by `ONIE-OPERATION` (`os-install` →
//! the profile's install image, `onie-update` → its update image) and the device's identity; 404
//! when nothing matches. Never a redirect. Each image falls back on its own to the next less
//! specific matching profile that sets it ([`super::choose::onie_image`]), and a failing installer
//! is sent once per discovery pass ([`super::onie_pass`]).

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{ConnectInfo, Path, State},
    http::{Extensions, HeaderMap, Method},
    response::Response,
};

use super::{AppState, choose::ImageRequest, common::not_for_you};

/// The client's address, when the connection recorded it.
pub fn source_of(extensions: &Extensions) -> Option<IpAddr> {
    extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

/// What ONIE is asking for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Install,
    Update,
}

/// `onie-installer…` / `onie-updater…` names of the waterfall (with or without `.bin`).
pub fn operation_of_name(name: &str) -> Option<Operation> {
    let (op, rest) = if let Some(rest) = name.strip_prefix("onie-installer") {
        (Operation::Install, rest)
    } else if let Some(rest) = name.strip_prefix("onie-updater") {
        (Operation::Update, rest)
    } else {
        return None;
    };
    let rest = rest.strip_suffix(".bin").unwrap_or(rest);
    let ok = rest.is_empty()
        || (rest.len() > 1
            && rest.starts_with('-')
            && rest[1..].chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')));
    ok.then_some(op)
}

/// The operation an `ONIE-OPERATION` header value names.
pub fn operation_of_header(value: Option<&str>) -> Option<Operation> {
    match value? {
        "os-install" => Some(Operation::Install),
        "onie-update" => Some(Operation::Update),
        _ => None,
    }
}

/// `GET /{name}`: one of the waterfall names.
#[utoipa::path(get, path = "/{name}", tag = "onie",
    params(("name" = String, Path, description = "A name of ONIE's discovery waterfall: `onie-installer-<arch>-<vendor>_<machine>-r<rev>`, … `onie-installer`, `onie-updater…`, with or without `.bin`"), super::openapi::OnieHeaders),
    responses((status = 200, description = "The image for this switch and operation", content_type = "application/octet-stream"),
        (status = 404, description = "Not for this device (ONIE tries its next name)"),
        (status = 503, description = "Too many downloads at once (`Retry-After`)")))]
pub async fn waterfall(
    State(state): State<AppState>,
    Path(name): Path<String>,
    method: Method,
    extensions: Extensions,
    headers: HeaderMap,
) -> Response {
    match operation_of_name(&name) {
        Some(_) => {
            let source = source_of(&extensions);
            state.answer_image(&method, &headers, source, &ImageRequest::Onie(Some(name))).await
        }
        None => not_for_you("not an ONIE installer or updater name"),
    }
}

/// `GET /onie`: the fixed URL for DHCP option 114.
#[utoipa::path(get, path = "/onie", tag = "onie", params(super::openapi::OnieHeaders),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waterfall_names() {
        for n in [
            "onie-installer-x86_64-accton_as7712_32x-r0",
            "onie-installer-x86_64-accton_as7712_32x-r0.bin",
            "onie-installer-x86_64-accton_as7712_32x",
            "onie-installer-accton_as7712_32x",
            "onie-installer-x86_64-bcm",
            "onie-installer-x86_64",
            "onie-installer",
            "onie-installer.bin",
        ] {
            assert_eq!(operation_of_name(n), Some(Operation::Install), "{n}");
        }
        assert_eq!(operation_of_name("onie-updater-x86_64-mlnx_x86-r0"), Some(Operation::Update));
        assert_eq!(operation_of_name("onie-updater"), Some(Operation::Update));
        for n in
            ["index.html", "onie-installerX", "onie-installer-", "onie-installer-a/b", "onie-installer-%2e"]
        {
            assert_eq!(operation_of_name(n), None, "{n}");
        }
    }
}

//! ONIE image discovery: the default-name waterfall at `/` and one fixed URL (`/onie`) for DHCP
//! option 114. The image is chosen by `ONIE-OPERATION` (`os-install` → the profile's install
//! image, `onie-update` → its update image) and the device's identity; 404 when nothing matches.
//! Never a redirect.

use axum::{
    extract::{Path, State},
    http::{HeaderMap, Method},
    response::Response,
};

use super::{
    AppState, activity,
    common::{find_device, not_for_you},
};
use crate::profile::identity::Family;

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

fn operation_of_header(value: Option<&str>) -> Option<Operation> {
    match value? {
        "os-install" => Some(Operation::Install),
        "onie-update" => Some(Operation::Update),
        _ => None,
    }
}

/// `GET /{name}`: one of the waterfall names.
pub async fn waterfall(
    State(state): State<AppState>,
    Path(name): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    match operation_of_name(&name) {
        Some(op) => serve(&state, &method, &headers, Some(op), Family::Onie).await,
        None => not_for_you("not an ONIE installer or updater name"),
    }
}

/// `GET /onie`: the fixed URL for DHCP option 114.
pub async fn fixed(State(state): State<AppState>, method: Method, headers: HeaderMap) -> Response {
    serve(&state, &method, &headers, None, Family::Onie).await
}

/// Serves the install or update image of the device's profile. `by_name` is what the file name
/// asked for; when both it and the header are present they must agree (install and update
/// images never mix).
pub async fn serve(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    by_name: Option<Operation>,
    family: Family,
) -> Response {
    let device = match find_device(state, headers, family, None) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let by_header = operation_of_header(device.id.onie_operation.as_deref());
    let op = match (by_header, by_name) {
        (Some(h), Some(n)) if h != n => return not_for_you("the file name and ONIE-OPERATION disagree"),
        (Some(h), _) => h,
        (None, Some(n)) => n,
        (None, None) => return not_for_you("no ONIE-OPERATION header"),
    };
    let profile = device.profile();
    let key = match op {
        Operation::Install => profile.onie_install.as_ref(),
        Operation::Update => profile.onie_update.as_ref(),
    };
    let Some(image) = key.and_then(|k| device.loaded.snapshot.images.get(k)) else {
        return not_for_you("no image for this operation");
    };
    let response = state.serve_image(method, headers, image).await;
    activity::image_served(response, &device, method)
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

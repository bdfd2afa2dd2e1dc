//! Which image a request gets. One place for every route whose answer is an image (ONIE's
//! waterfall and fixed URL, RtBrick's `/ztp/image` and `/ztp/images/{file}`, `/images/…` and
//! `/v1/firmware/…`), shared by the axum handlers and the sendfile fast path, so both always
//! choose the same bytes.

use axum::{http::HeaderMap, response::Response};

use super::{
    AppState,
    activity::identify,
    common::{Device, find_device, not_for_you},
    onie::{Operation, operation_of_header, operation_of_name},
};
use crate::{
    api::ImagePath,
    profile::{
        identity::Family,
        publish::is_snapshot,
        snapshot::{ImageRef, Resolved},
    },
    store::ManifestEntry,
};

/// A request for an image, as its route names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRequest {
    /// ONIE: `/onie` (no name) or a waterfall name (`onie-installer…`, `onie-updater…`).
    Onie(Option<Operation>),
    /// RtBrick `/ztp/image`: chosen like ONIE's, by serial and `ONIE-OPERATION`.
    RtBrickImage,
    /// RtBrick `/ztp/images/{file}`: one of the device's images by file name.
    RtBrickFile(String),
    /// `/images/{platform}/{version}/{filename}`: any image in the manifest.
    ByPath { platform: String, version: String, filename: String },
    /// `/v1/firmware/{platform}/{version}`: the directory's firmware image.
    Firmware { platform: String, version: String },
}

impl ImageRequest {
    /// Recognises an image route from a request path as it came off the wire (no query string).
    /// Paths with percent-escapes, empty segments or a trailing slash are not recognised: the
    /// router answers those.
    pub fn from_path(path: &str) -> Option<Self> {
        let rest = path.strip_prefix('/')?;
        if rest.contains('%') {
            return None;
        }
        let segments: Vec<&str> = rest.split('/').collect();
        if segments.iter().any(|s| s.is_empty()) {
            return None;
        }
        let owned = |s: &str| s.to_owned();
        match segments.as_slice() {
            ["onie"] => Some(Self::Onie(None)),
            [name] => operation_of_name(name).map(|op| Self::Onie(Some(op))),
            ["ztp", "image"] => Some(Self::RtBrickImage),
            ["ztp", "images", file] => Some(Self::RtBrickFile(owned(file))),
            ["images", p, v, f] => {
                Some(Self::ByPath { platform: owned(p), version: owned(v), filename: owned(f) })
            }
            ["v1", "firmware", p, v] => Some(Self::Firmware { platform: owned(p), version: owned(v) }),
            _ => None,
        }
    }
}

/// The image chosen for a request, and the device it was chosen for (for routes by path: the
/// device its headers identify, if any).
pub struct Chosen {
    pub image: ImageRef,
    pub path: ImagePath,
    pub device: Option<Device>,
}

/// Chooses the image for `request`; the error is the response to send (a 404 saying why).
#[allow(clippy::result_large_err)] // the error is the HTTP response itself, returned at once
pub async fn choose(
    state: &AppState,
    request: &ImageRequest,
    headers: &HeaderMap,
) -> Result<Chosen, Response> {
    let (image, device) = match request {
        ImageRequest::Onie(by_name) => by_operation(state, headers, *by_name, Family::Onie)?,
        ImageRequest::RtBrickImage => by_operation(state, headers, None, Family::RtBrick)?,
        ImageRequest::RtBrickFile(file) => {
            let device = find_device(state, headers, Family::RtBrick, None)?;
            let p = device.profile();
            let image = [p.onie_install.as_ref(), p.onie_update.as_ref()]
                .into_iter()
                .flatten()
                .chain(p.files.values().filter_map(|r| match r {
                    Resolved::Image(k) => Some(k),
                    Resolved::Text(_) => None,
                }))
                .filter_map(|k| device.loaded.snapshot.images.get(k))
                .find(|img| img.path.rsplit('/').next() == Some(file.as_str()))
                .cloned()
                .ok_or_else(|| not_for_you("no such image for this device"))?;
            (image, Some(device))
        }
        ImageRequest::ByPath { platform, version, filename } => {
            let path = ImagePath::new(platform, version, filename)
                .map_err(|_| not_for_you("not a valid image path"))?;
            let manifest = state.server.manifest();
            let entry = manifest.get(&path).filter(|e| !is_snapshot(e));
            let entry = entry.ok_or_else(|| not_for_you("no such image"))?;
            let image = from_manifest(state, entry).await.ok_or_else(|| not_for_you("no such image"))?;
            (image, identify(state, headers))
        }
        ImageRequest::Firmware { platform, version } => {
            let entry = firmware_entry(state, platform, version).ok_or_else(firmware_not_found)?;
            let image = from_manifest(state, &entry).await.ok_or_else(firmware_not_found)?;
            (image, identify(state, headers))
        }
    };
    let path = image_path(&image).ok_or_else(|| not_for_you("not a valid image path"))?;
    Ok(Chosen { image, path, device })
}

/// `404 {"detail": "Firmware image not found in S3."}`: the reference's answer (JSON, unlike the
/// device routes' plain-text 404s).
pub fn firmware_not_found() -> Response {
    super::files::detail(axum::http::StatusCode::NOT_FOUND, "Firmware image not found in S3.")
}

/// ONIE and RtBrick: the install or update image of the device's profile. `by_name` is what the
/// file name asked for; when both it and the header are present they must agree (install and
/// update images never mix).
#[allow(clippy::result_large_err)]
fn by_operation(
    state: &AppState,
    headers: &HeaderMap,
    by_name: Option<Operation>,
    family: Family,
) -> Result<(ImageRef, Option<Device>), Response> {
    let device = find_device(state, headers, family, None)?;
    let by_header = operation_of_header(device.id.onie_operation.as_deref());
    let op = match (by_header, by_name) {
        (Some(h), Some(n)) if h != n => return Err(not_for_you("the file name and ONIE-OPERATION disagree")),
        (Some(h), _) => h,
        (None, Some(n)) => n,
        (None, None) => return Err(not_for_you("no ONIE-OPERATION header")),
    };
    let profile = device.profile();
    let key = match op {
        Operation::Install => profile.onie_install.as_ref(),
        Operation::Update => profile.onie_update.as_ref(),
    };
    match key.and_then(|k| device.loaded.snapshot.images.get(k)) {
        Some(image) => Ok((image.clone(), Some(device))),
        None => Err(not_for_you("no image for this operation")),
    }
}

/// The firmware image of a `{platform}/{version}` directory (None for names that cannot be one).
pub fn firmware_entry(state: &AppState, platform: &str, version: &str) -> Option<ManifestEntry> {
    ImagePath::new(platform, version, "x").ok()?;
    state.server.manifest().firmware_of(platform, version).cloned()
}

/// What devices download for a manifest entry; hand-edited entries without a size are stat'ed.
async fn from_manifest(state: &AppState, entry: &ManifestEntry) -> Option<ImageRef> {
    let size = match entry.size {
        Some(s) => s,
        None => state.server.store.stat(&entry.image_path().ok()?).await.ok()??.size,
    };
    Some(ImageRef { path: entry.path.clone(), sha256: entry.sha256.to_string(), size })
}

/// The store path of an image (validated again: a snapshot is data read from storage).
pub fn image_path(image: &ImageRef) -> Option<ImagePath> {
    let mut parts = image.path.splitn(3, '/');
    ImagePath::new(parts.next()?, parts.next()?, parts.next()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_routes_are_recognised_like_the_router_does() {
        let by_path = |p: &str, v: &str, f: &str| ImageRequest::ByPath {
            platform: p.into(),
            version: v.into(),
            filename: f.into(),
        };
        let cases: &[(&str, Option<ImageRequest>)] = &[
            ("/onie", Some(ImageRequest::Onie(None))),
            (
                "/onie-installer-x86_64-accton_as7712_32x-r0",
                Some(ImageRequest::Onie(Some(Operation::Install))),
            ),
            ("/onie-updater.bin", Some(ImageRequest::Onie(Some(Operation::Update)))),
            ("/ztp/image", Some(ImageRequest::RtBrickImage)),
            ("/ztp/images/rbfs.img", Some(ImageRequest::RtBrickFile("rbfs.img".into()))),
            ("/images/sonic/4.1/sonic.bin", Some(by_path("sonic", "4.1", "sonic.bin"))),
            (
                "/v1/firmware/sonic/4.1",
                Some(ImageRequest::Firmware { platform: "sonic".into(), version: "4.1".into() }),
            ),
            // Everything else is the router's.
            ("/", None),
            ("/healthz", None),
            ("/index.html", None),
            ("/onie/", None),
            ("/images/sonic/4.1/", None),
            ("/images/sonic//sonic.bin", None),
            ("/images/sonic/4.1/sonic.bin/x", None),
            ("/images/%2e%2e/4.1/sonic.bin", None),
            ("/v1/firmware/sonic/4.1/checksum", None),
            ("/ztp/config/startup", None),
            ("/nvos/ztp.json", None),
            ("images/sonic/4.1/sonic.bin", None),
        ];
        for (path, want) in cases {
            assert_eq!(&ImageRequest::from_path(path), want, "{path}");
        }
    }
}

//! Which image a request gets. One place for every route whose answer is an image (ONIE's
//! waterfall and fixed URL, RtBrick's `/ztp/image` and `/ztp/images/{file}`, `/images/…` and
//! `/v1/firmware/…`), shared by the axum handlers and the sendfile fast path, so both always
//! choose the same bytes — and refuse the same ones: a later candidate of ONIE's discovery pass
//! after the device got the same image in full ([`super::onie_pass`]).
//!
//! ONIE images fall back per item: a device's install image is the `onie.installImage` of the
//! most specific matching profile that sets one (serial, then MAC, then model), and its update
//! image likewise, independently ([`onie_image`]). A serial profile that names only an installer
//! leaves firmware updates to its model default.

use std::{net::IpAddr, time::Instant};

use axum::http::{HeaderMap, Method};

use super::{
    AppState,
    device::{Device, device_by_headers, find_device},
    onie_pass::{Candidate, Ticket, device_key, is_plain_get},
    reply::Refusal,
};
use crate::{
    api::ImagePath,
    profile::{
        identity::Family,
        publish::is_snapshot,
        snapshot::{ImageRef, Resolved},
    },
    routes::{DeviceRoute, Operation, operation_of_header, operation_of_name},
    store::ManifestEntry,
};

/// A request for an image, as its route names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRequest {
    /// ONIE: `/onie` (no name) or a waterfall name (`onie-installer…`, `onie-updater…`, checked
    /// with [`operation_of_name`]).
    Onie(Option<String>),
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
    /// The image a device route asks for; `None` for routes whose answer is not an image.
    pub fn of_route(route: DeviceRoute<'_>) -> Option<Self> {
        let owned = |s: &str| s.to_owned();
        match route {
            DeviceRoute::Onie => Some(Self::Onie(None)),
            DeviceRoute::OnieName(name, _) => Some(Self::Onie(Some(owned(name)))),
            DeviceRoute::RtBrickImage => Some(Self::RtBrickImage),
            DeviceRoute::RtBrickImageFile(file) => Some(Self::RtBrickFile(owned(file))),
            DeviceRoute::Image { platform, version, filename } => Some(Self::ByPath {
                platform: owned(platform),
                version: owned(version),
                filename: owned(filename),
            }),
            DeviceRoute::Firmware { platform, version } => {
                Some(Self::Firmware { platform: owned(platform), version: owned(version) })
            }
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
    /// A plain GET on an ONIE route: hand it to [`super::onie_pass::Passes::served`] once the
    /// whole body (a `200`) was sent.
    pub ticket: Option<Ticket>,
}

/// Who asks: the method and source address matter to ONIE's pass ([`super::onie_pass`]).
#[derive(Debug, Clone, Copy)]
pub struct Asker<'a> {
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    pub source: Option<IpAddr>,
}

/// Chooses the image for `request`, or refuses it (a 404 saying why; a refused later candidate of
/// ONIE's pass is [`Refusal::SamePass`]).
pub async fn choose(state: &AppState, request: &ImageRequest, asker: Asker<'_>) -> Result<Chosen, Refusal> {
    let headers = asker.headers;
    let mut ticket = None;
    let (image, device) = match request {
        ImageRequest::Onie(name) => {
            let by_name = name.as_deref().and_then(operation_of_name);
            let (image, device) = by_operation(state, headers, by_name, Family::Onie)?;
            if is_plain_get(asker.method, headers) {
                let candidate = match name {
                    None => Some(Candidate::FIXED),
                    Some(name) => Candidate::of_name(name, &device.id),
                };
                let key = device_key(&device.id, asker.source);
                ticket = state
                    .passes
                    .check(key, candidate, &image, Instant::now())
                    .map_err(|why| Refusal::SamePass(Box::new(why)))?;
            }
            (image, Some(device))
        }
        ImageRequest::RtBrickImage => {
            let (image, device) = by_operation(state, headers, None, Family::RtBrick)?;
            (image, Some(device))
        }
        ImageRequest::RtBrickFile(file) => {
            let device = find_device(state, headers, Family::RtBrick, None)?;
            let p = device.profile();
            let image = [onie_image(&device, Operation::Install), onie_image(&device, Operation::Update)]
                .into_iter()
                .flatten()
                .chain(
                    p.files
                        .values()
                        .filter_map(|r| match r {
                            Resolved::Image(k) => Some(k),
                            Resolved::Text(_) => None,
                        })
                        .filter_map(|k| device.loaded.snapshot.images.get(k)),
                )
                .find(|img| img.path.rsplit('/').next() == Some(file.as_str()))
                .cloned()
                .ok_or(Refusal::NotForYou("no such image for this device"))?;
            (image, Some(device))
        }
        ImageRequest::ByPath { platform, version, filename } => {
            let path = ImagePath::new(platform, version, filename)
                .map_err(|_| Refusal::NotForYou("not a valid image path"))?;
            let manifest = state.server.manifest();
            let entry = manifest.get(&path).filter(|e| !is_snapshot(e));
            let entry = entry.ok_or(Refusal::NotForYou("no such image"))?;
            let image = from_manifest(state, entry).await.ok_or(Refusal::NotForYou("no such image"))?;
            (image, device_by_headers(state, headers)?)
        }
        ImageRequest::Firmware { platform, version } => {
            let entry = firmware_entry(state, platform, version).ok_or(Refusal::FirmwareNotFound)?;
            let image = from_manifest(state, &entry).await.ok_or(Refusal::FirmwareNotFound)?;
            (image, device_by_headers(state, headers)?)
        }
    };
    let path = image_path(&image).ok_or(Refusal::NotForYou("not a valid image path"))?;
    Ok(Chosen { image, path, device, ticket })
}

/// The device's ONIE image for `op`: the install image its Switch pins (`spec.osImage`), else,
/// falling back per item, the image of the most specific matching profile (serial, then MAC, then
/// model; see [`DeviceIndex::matches`](crate::profile::index::DeviceIndex::matches)) that sets
/// one for this operation. None when no matching profile sets one, or the pin or the profile that
/// does names an image the snapshot lacks (never another image instead).
pub fn onie_image(device: &Device, op: Operation) -> Option<&ImageRef> {
    if op == Operation::Install
        && let Some(pinned) = device.pinned_install()
    {
        return pinned;
    }
    let loaded = &device.loaded;
    let key = loaded.index.matches(&device.id).find_map(|m| {
        let p = &loaded.snapshot.profiles[m.profile];
        match op {
            Operation::Install => p.onie_install.as_ref(),
            Operation::Update => p.onie_update.as_ref(),
        }
    })?;
    loaded.snapshot.images.get(key)
}

/// ONIE and RtBrick: the install or update image of the device ([`onie_image`]), for the
/// [`operation`] asked.
fn by_operation(
    state: &AppState,
    headers: &HeaderMap,
    by_name: Option<Operation>,
    family: Family,
) -> Result<(ImageRef, Device), Refusal> {
    let device = find_device(state, headers, family, None)?;
    let op = operation(operation_of_header(device.id.onie_operation.as_deref()), by_name)?;
    match onie_image(&device, op).cloned() {
        Some(image) => Ok((image, device)),
        None if op == Operation::Install && device.pinned_install().is_some() => {
            Err(Refusal::NotForYou("the OsImage its Switch pins (spec.osImage) is not Ready"))
        }
        None => Err(Refusal::NotForYou("no image for this operation")),
    }
}

/// The operation asked by the `ONIE-OPERATION` header and by the file name: when both are
/// present they must agree (install and update images never mix).
fn operation(by_header: Option<Operation>, by_name: Option<Operation>) -> Result<Operation, Refusal> {
    match (by_header, by_name) {
        (Some(h), Some(n)) if h != n => Err(Refusal::NotForYou("the file name and ONIE-OPERATION disagree")),
        (Some(h), _) => Ok(h),
        (None, Some(n)) => Ok(n),
        (None, None) => Err(Refusal::NotForYou("no ONIE-OPERATION header")),
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
    use std::sync::Arc;

    use super::*;
    use crate::{
        profile::{identity::DeviceIdentity, index::DeviceIndex, snapshot::ProfileSnapshot},
        serve::state::{Loaded, RenderedCache},
    };

    /// Each ONIE image comes from the most specific matching profile that sets it: a serial
    /// profile with only an installer leaves the updater to the MAC's or the model's profile.
    #[test]
    fn onie_images_fall_back_per_item_serial_then_mac_then_model() {
        let profile = |name: &str,
                       serials: &[&str],
                       macs: &[&str],
                       models: &[&str],
                       i: Option<&str>,
                       u: Option<&str>| {
            ProfileSnapshot {
                onie_install: i.map(str::to_owned),
                onie_update: u.map(str::to_owned),
                ..crate::profile::index::tests::profile(name, serials, macs, models)
            }
        };
        let image = |n: &str| {
            (format!("net/{n}"), ImageRef { path: format!("{n}/1/{n}.bin"), sha256: "ab".into(), size: 1 })
        };
        let snapshot = crate::profile::snapshot::Snapshot {
            format: 1,
            profiles: vec![
                profile(
                    "a-model",
                    &[],
                    &[],
                    &["accton_as7712_32x"],
                    Some("net/nos-default"),
                    Some("net/onie-default"),
                ),
                profile("b-mac", &[], &["0c:42:a1:00:00:07"], &[], None, Some("net/onie-mac")),
                profile("c-serial", &["SN-LEAF07"], &[], &[], Some("net/nos-leaf07"), None),
                profile("d-serial-broken", &["SN-BROKEN"], &[], &[], None, Some("net/absent")),
            ],
            images: ["nos-default", "onie-default", "onie-mac", "nos-leaf07"]
                .into_iter()
                .map(image)
                .collect(),
            ..Default::default()
        };
        let index = DeviceIndex::build(&snapshot);
        let loaded = Arc::new(Loaded { snapshot, index, ztp_json: RenderedCache::default() });
        let device = |serial: &str, mac: &str| {
            let id = DeviceIdentity {
                family: Family::Onie,
                serial: Some(serial.into()),
                mac: Some(mac.into()),
                models: vec!["x86_64-accton_as7712_32x-r0".into(), "accton_as7712_32x".into()],
                ..Default::default()
            };
            let profile = loaded.index.lookup(&id).expect("a profile").profile;
            Device {
                loaded: loaded.clone(),
                id: Box::new(id),
                profile,
                switch: None,
                base: None,
                report_key: None,
            }
        };
        let got = |d: &Device, op| onie_image(d, op).map(|i| i.path.clone());
        let path = |n: &str| Some(format!("{n}/1/{n}.bin"));
        // Serial sets the installer; the MAC's profile the updater.
        let leaf07 = device("SN-LEAF07", "0c:42:a1:00:00:07");
        assert_eq!(got(&leaf07, Operation::Install), path("nos-leaf07"));
        assert_eq!(got(&leaf07, Operation::Update), path("onie-mac"));
        // Serial sets the installer; nothing but the model default sets the updater.
        let other_mac = device("SN-LEAF07", "0c:42:a1:00:00:99");
        assert_eq!(got(&other_mac, Operation::Update), path("onie-default"));
        // Only the model default matches.
        let stranger = device("SN-X", "0c:42:a1:00:00:99");
        assert_eq!(got(&stranger, Operation::Install), path("nos-default"));
        assert_eq!(got(&stranger, Operation::Update), path("onie-default"));
        // A profile naming an image the snapshot lacks gets no other profile's instead.
        let broken = device("SN-BROKEN", "0c:42:a1:00:00:99");
        assert_eq!(got(&broken, Operation::Update), None);
        assert_eq!(got(&broken, Operation::Install), path("nos-default"));
    }

    /// A Switch's `osImage` is its device's install image, over every profile's; while it is not
    /// in the snapshot (not Ready) the device gets no installer at all. Updates are untouched.
    #[test]
    fn a_switchs_os_image_is_its_install_image_and_nothing_else_while_not_ready() {
        let image = |n: &str| {
            (format!("net/{n}"), ImageRef { path: format!("{n}/1/{n}.bin"), sha256: "ab".into(), size: 1 })
        };
        let pinned = |name: &str, serial: &str, os_image: &str| crate::profile::snapshot::SwitchSnapshot {
            os_image: Some(format!("net/{os_image}")),
            ..crate::profile::index::tests::switch(name, serial, None, None)
        };
        let snapshot = crate::profile::snapshot::Snapshot {
            format: 1,
            profiles: vec![ProfileSnapshot {
                onie_install: Some("net/nos-1".into()),
                onie_update: Some("net/onie-1".into()),
                ..crate::profile::index::tests::profile("leafs", &[], &[], &["as7712"])
            }],
            images: ["nos-1", "nos-2", "onie-1"].into_iter().map(image).collect(),
            switches: vec![pinned("leaf1", "SN1", "nos-2"), pinned("leaf2", "SN2", "nos-3")],
            ..Default::default()
        };
        let index = DeviceIndex::build(&snapshot);
        let loaded = Arc::new(Loaded { snapshot, index, ztp_json: RenderedCache::default() });
        let device = |serial: &str| {
            let id = DeviceIdentity {
                family: Family::Onie,
                serial: Some(serial.into()),
                models: vec!["as7712".into()],
                ..Default::default()
            };
            let profile = loaded.index.lookup(&id).expect("a profile").profile;
            let switch = loaded.index.switch_of(&id);
            Device { loaded: loaded.clone(), id: Box::new(id), profile, switch, base: None, report_key: None }
        };
        let got = |d: &Device, op| onie_image(d, op).map(|i| i.path.clone());
        let (leaf1, leaf2, other) = (device("SN1"), device("SN2"), device("SN3"));
        assert_eq!(got(&leaf1, Operation::Install).as_deref(), Some("nos-2/1/nos-2.bin"));
        assert_eq!(got(&leaf1, Operation::Update).as_deref(), Some("onie-1/1/onie-1.bin"));
        assert_eq!(got(&leaf2, Operation::Install), None, "never the profile's image instead");
        assert_eq!(got(&leaf2, Operation::Update).as_deref(), Some("onie-1/1/onie-1.bin"));
        assert_eq!(got(&other, Operation::Install).as_deref(), Some("nos-1/1/nos-1.bin"));
    }

    #[test]
    fn the_operation_comes_from_the_header_or_the_name_and_they_must_agree() {
        use Operation::{Install, Update};
        assert_eq!(operation(Some(Install), None), Ok(Install));
        assert_eq!(operation(None, Some(Update)), Ok(Update));
        assert_eq!(operation(Some(Update), Some(Update)), Ok(Update));
        assert_eq!(
            operation(Some(Install), Some(Update)),
            Err(Refusal::NotForYou("the file name and ONIE-OPERATION disagree"))
        );
        assert_eq!(operation(None, None), Err(Refusal::NotForYou("no ONIE-OPERATION header")));
    }

    /// The image route of a path, as the connection loop reads it.
    fn from_path(path: &str) -> Option<ImageRequest> {
        DeviceRoute::parse(path).and_then(ImageRequest::of_route)
    }

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
                Some(ImageRequest::Onie(Some("onie-installer-x86_64-accton_as7712_32x-r0".into()))),
            ),
            ("/onie-updater.bin", Some(ImageRequest::Onie(Some("onie-updater.bin".into())))),
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
            assert_eq!(&from_path(path), want, "{path}");
        }
    }
}

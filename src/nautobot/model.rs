//! Nautobot's REST objects as 3.2.7 returns them at depth 0 (see `docs/nautobot.md`), only the
//! fields ztp-operator reads. Tolerant: unknown fields are ignored, and every field Nautobot may
//! leave out or send as `null` is an `Option` or defaults to empty, so a newer Nautobot that adds
//! fields, or a blank value, is not a parse error. The full read's GraphQL query asks for these
//! fields under the same names (`read::full_query`), so its answer parses into the same types.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

/// One page of a list: `{"count", "next", "previous", "results"}`. `next` is an absolute URL, or
/// `None` on the last page.
#[derive(Deserialize, Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// Objects the whole list holds (every page). Required, as `results` is: a body without them
    /// (a proxy's `{}`) is not an empty list.
    pub count: u64,
    /// The next page's absolute URL.
    #[serde(default)]
    pub next: Option<String>,
    /// The previous page's absolute URL.
    #[serde(default)]
    pub previous: Option<String>,
    /// This page's objects.
    pub results: Vec<T>,
}

/// A related object at depth 0: `{"id", "object_type", "url"}` (no name), of which only the id
/// is kept (the inventory holds some ten per device).
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Ref {
    /// Its UUID.
    pub id: String,
}

/// `dcim.device` (`/api/dcim/devices/`). The rendered `config_context` is there only with
/// `?include=config_context`, `software_image_files` only with `?exclude_m2m=false`.
#[derive(Deserialize, Debug, Clone, PartialEq)]
pub struct Device {
    pub id: String,
    /// Nautobot allows devices without a name.
    #[serde(default)]
    pub name: Option<String>,
    /// Blank (`""`) when unknown.
    #[serde(default)]
    pub serial: Option<String>,
    #[serde(default)]
    pub role: Option<Ref>,
    #[serde(default)]
    pub platform: Option<Ref>,
    #[serde(default)]
    pub device_type: Option<Ref>,
    /// The device's intended software.
    #[serde(default)]
    pub software_version: Option<Ref>,
    /// Image files of the device's own, over its software version's (`?exclude_m2m=false`).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub software_image_files: Vec<Ref>,
    /// Custom field key → value (`null` when unset).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub custom_fields: BTreeMap<String, Value>,
    /// The rendered config context (`?include=config_context`).
    #[serde(default)]
    pub config_context: Option<Map<String, Value>>,
}

/// `dcim.interface` (`/api/dcim/interfaces/`).
#[derive(Deserialize, Debug, Clone, PartialEq)]
pub struct Interface {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub device: Option<Ref>,
    /// Upper-case with colons on read, e.g. `02:5A:00:00:00:01`; `null` when unset.
    #[serde(default)]
    pub mac_address: Option<String>,
    #[serde(default)]
    pub mgmt_only: bool,
}

/// `dcim.platform` (`/api/dcim/platforms/`).
#[derive(Deserialize, Debug, Clone, PartialEq)]
pub struct Platform {
    pub id: String,
    pub name: String,
    /// E.g. `cumulus_linux`, `sonic`; blank when unset.
    #[serde(default)]
    pub network_driver: Option<String>,
    #[serde(default)]
    pub manufacturer: Option<Ref>,
}

/// `extras.role` (`/api/extras/roles/`).
#[derive(Deserialize, Debug, Clone, PartialEq)]
pub struct Role {
    pub id: String,
    pub name: String,
}

/// `dcim.devicetype` (`/api/dcim/device-types/`).
#[derive(Deserialize, Debug, Clone, PartialEq)]
pub struct DeviceType {
    pub id: String,
    /// E.g. `SN2410`.
    pub model: String,
    #[serde(default)]
    pub manufacturer: Option<Ref>,
}

/// `dcim.location` (`/api/dcim/locations/`).
#[derive(Deserialize, Debug, Clone, PartialEq)]
pub struct Location {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub parent: Option<Ref>,
}

/// `extras.status` (`/api/extras/statuses/`).
#[derive(Deserialize, Debug, Clone, PartialEq)]
pub struct Status {
    pub id: String,
    pub name: String,
}

/// `extras.tag` (`/api/extras/tags/`).
#[derive(Deserialize, Debug, Clone, PartialEq)]
pub struct Tag {
    pub id: String,
    pub name: String,
}

/// `dcim.softwareversion` (`/api/dcim/software-versions/`).
#[derive(Deserialize, Debug, Clone, PartialEq)]
pub struct SoftwareVersion {
    pub id: String,
    /// E.g. `5.14.0`.
    pub version: String,
    #[serde(default)]
    pub alias: Option<String>,
    #[serde(default)]
    pub platform: Option<Ref>,
    #[serde(default)]
    pub status: Option<Ref>,
    #[serde(default)]
    pub last_updated: Option<String>,
}

/// `dcim.softwareimagefile` (`/api/dcim/software-image-files/`).
#[derive(Deserialize, Debug, Clone, PartialEq)]
pub struct SoftwareImageFile {
    pub id: String,
    pub image_file_name: String,
    /// Blank when unknown.
    #[serde(default)]
    pub image_file_checksum: Option<String>,
    /// `md5`, `sha1`, `sha224`, `sha256`, `sha384`, `sha512`, `sha3`, `blake2`, `blake3`, or blank.
    #[serde(default)]
    pub hashing_algorithm: Option<String>,
    #[serde(default)]
    pub image_file_size: Option<u64>,
    /// Blank when unknown.
    #[serde(default)]
    pub download_url: Option<String>,
    /// The default image of its software version.
    #[serde(default)]
    pub default_image: bool,
    #[serde(default)]
    pub software_version: Option<Ref>,
    #[serde(default)]
    pub status: Option<Ref>,
    #[serde(default)]
    pub last_updated: Option<String>,
}

/// An object with an id, for indexing.
pub trait Identified {
    /// Its UUID.
    fn id(&self) -> &str;
}

macro_rules! identified {
    ($($t:ty),*) => {
        $(impl Identified for $t {
            fn id(&self) -> &str {
                &self.id
            }
        })*
    };
}

identified!(
    Device,
    Interface,
    Platform,
    Role,
    DeviceType,
    Location,
    Status,
    Tag,
    SoftwareVersion,
    SoftwareImageFile
);

/// `null` read as the type's empty value (a list or map Nautobot sends as `null`).
fn null_as_empty<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page<T: for<'de> Deserialize<'de>>(json: &str) -> Page<T> {
        serde_json::from_str(json).expect("a page of Nautobot 3.2.7's")
    }

    #[test]
    fn real_pages_parse() {
        let devices: Page<Device> = page(include_str!("../../tests/fixtures/nautobot/devices.json"));
        assert_eq!((devices.count, devices.results.len(), devices.next.as_deref()), (6, 6, None));
        let d = &devices.results[0];
        assert_eq!((d.name.as_deref(), d.serial.as_deref()), (Some("sw-00001"), Some("SN00001")));
        assert_eq!(d.custom_fields["ztp_profile"], "default");
        assert!(d.config_context.as_ref().is_some_and(|c| c.contains_key("ztp")));
        assert_eq!(d.software_image_files.len(), 1, "exclude_m2m=false lists the device's own files");
        assert!(
            d.platform.is_some()
                && d.role.is_some()
                && d.device_type.is_some()
                && d.software_version.is_some()
        );
        assert_eq!(devices.results[2].software_version, None);

        let first: Page<Device> = page(include_str!("../../tests/fixtures/nautobot/devices-page.json"));
        assert_eq!((first.count, first.results.len()), (6, 2));
        assert!(first.next.as_deref().is_some_and(|n| n.contains("offset=2")), "{:?}", first.next);
        assert!(first.results[0].software_image_files.is_empty(), "absent without exclude_m2m=false");

        let ifaces: Page<Interface> = page(include_str!("../../tests/fixtures/nautobot/interfaces.json"));
        assert!(ifaces.results.iter().all(|i| i.name == "eth0" && i.device.is_some() && i.mgmt_only));
        assert!(ifaces.results.iter().any(|i| i.mac_address.as_deref() == Some("02:5A:00:00:00:01")));

        let files: Page<SoftwareImageFile> =
            page(include_str!("../../tests/fixtures/nautobot/software-image-files.json"));
        assert_eq!(files.results.len(), 3);
        let md5 = files.results.iter().find(|f| f.hashing_algorithm.as_deref() == Some("md5")).unwrap();
        assert!(!md5.default_image && md5.software_version.is_some());

        let n = |c: u64, len: usize| (c as usize, len);
        let p: Page<Platform> = page(include_str!("../../tests/fixtures/nautobot/platforms.json"));
        assert_eq!(n(p.count, p.results.len()), (4, 4));
        assert!(p.results.iter().any(|p| p.network_driver.as_deref() == Some("cumulus_linux")));
        let r: Page<Role> = page(include_str!("../../tests/fixtures/nautobot/roles.json"));
        assert_eq!(r.results.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["leaf", "spine"]);
        let t: Page<DeviceType> = page(include_str!("../../tests/fixtures/nautobot/device-types.json"));
        assert!(t.results.iter().any(|t| t.model == "SN2410"));
        let v: Page<SoftwareVersion> =
            page(include_str!("../../tests/fixtures/nautobot/software-versions.json"));
        assert!(v.results.iter().all(|v| v.platform.is_some()));
        let l: Page<Location> = page(include_str!("../../tests/fixtures/nautobot/locations.json"));
        assert_eq!(l.results[0].name, "ztp-site-1");
        let s: Page<Status> = page(include_str!("../../tests/fixtures/nautobot/statuses.json"));
        assert_eq!(s.results[0].name, "Active");
        let g: Page<Tag> = page(include_str!("../../tests/fixtures/nautobot/tags.json"));
        assert_eq!(g.results[0].name, "ztp");
    }

    #[test]
    fn nulls_and_missing_fields_are_tolerated() {
        let d: Device = serde_json::from_value(serde_json::json!({
            "id": "d1", "name": null, "serial": "", "custom_fields": null, "tags": null,
            "software_image_files": null, "a_field_from_a_later_nautobot": {"x": 1},
        }))
        .unwrap();
        assert!(d.name.is_none() && d.custom_fields.is_empty() && d.software_image_files.is_empty());
        assert_eq!(d.serial.as_deref(), Some(""));
        let f: SoftwareImageFile = serde_json::from_value(serde_json::json!({
            "id": "f1", "image_file_name": "x.bin", "image_file_checksum": "", "hashing_algorithm": "",
            "download_url": "", "image_file_size": null,
        }))
        .unwrap();
        assert!(!f.default_image && f.software_version.is_none());
        let p: Page<Role> = serde_json::from_str(r#"{"count": 0, "next": null, "results": []}"#).unwrap();
        assert!(p.results.is_empty() && p.previous.is_none());
    }
}

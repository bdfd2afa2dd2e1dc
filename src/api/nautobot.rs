//! `NautobotSource`: a Nautobot inventory as the source of a namespace's Switches and OsImages —
//! which devices to read (a filter in Nautobot's own terms), how a device becomes a Switch and an
//! image file an OsImage, and what happens to the objects of devices that left the inventory.
//!
//! The mapping rules themselves live in [`crate::nautobot`]; this module is only the resource's
//! shape.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::content::KeyRef;

/// Entries kept in `status.skippedDevices` and `status.skippedImages`; past it they are only
/// counted.
pub const MAX_SKIPPED: usize = 50;
/// Default of `spec.intervalSeconds`.
pub const DEFAULT_INTERVAL_SECONDS: i32 = 60;
/// Shortest `spec.intervalSeconds` accepted (a full read of 5,000 devices takes about 10 s).
pub const MIN_INTERVAL_SECONDS: i32 = 10;
/// Longest `spec.intervalSeconds` accepted (a day).
pub const MAX_INTERVAL_SECONDS: i32 = 86_400;
/// The label on every Switch and OsImage a NautobotSource declares; its value is the source's
/// name.
pub const SOURCE_LABEL: &str = "ztp.netops.dev/nautobot-source";
/// The annotation on every Switch and OsImage a NautobotSource declares: the Nautobot id of its
/// device or image file.
pub const ID_ANNOTATION: &str = "ztp.netops.dev/nautobot-id";
/// Default of `spec.switches.mac.interface`: the management interface's name.
pub const DEFAULT_MAC_INTERFACE: &str = "eth0";

/// A Nautobot inventory that declares this namespace's Switches (one per device, named for its
/// serial number) and OsImages (one per image file of the devices' intended software). It reads
/// Nautobot every `intervalSeconds` (fully through one GraphQL query, then REST's change log) and
/// creates, updates and prunes only the objects it made; hand-made objects are never touched.
#[allow(clippy::duplicated_attributes)] // several `printcolumn(type_ = …)` entries are intended
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ztp.netops.dev",
    version = "v1alpha1",
    kind = "NautobotSource",
    plural = "nautobotsources",
    namespaced,
    status = "NautobotSourceStatus",
    shortname = "nbs",
    category = "ztp",
    doc = "A Nautobot inventory that declares this namespace's Switches and OsImages.",
    printcolumn(name = "URL", type_ = "string", json_path = ".spec.url"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Switches", type_ = "integer", json_path = ".status.switches.total"),
    printcolumn(name = "Images", type_ = "integer", json_path = ".status.images.total"),
    printcolumn(name = "Last Sync", type_ = "date", json_path = ".status.lastSyncTime"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct NautobotSourceSpec {
    /// Nautobot's base URL, `http://` or `https://`, e.g. `https://nautobot.example.net` (the
    /// REST API is read under its `/api/`). No query string or fragment.
    #[schemars(length(min = 8, max = 2048))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^https?://[^/?#@\\\\s]+(/[^?#\\\\s]*)?$')")
        .message("url must be an http:// or https:// URL without query, fragment or user info, e.g. https://nautobot.example.net"))]
    pub url: String,

    /// The Secret key holding the API token (40 hexadecimal characters), sent as
    /// `Authorization: Token …`. The token needs read access to devices, interfaces, platforms,
    /// roles, device types, software versions, image files and the change log. Never logged.
    pub token_secret_ref: KeyRef,

    /// A ConfigMap key holding PEM CA certificates to trust for an https `url`, in addition to the
    /// system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_ref: Option<KeyRef>,

    /// Which devices to read, in Nautobot's own filter terms. Empty: every device.
    #[serde(default)]
    pub filter: NautobotFilter,

    /// Seconds between two reads of Nautobot (10 to 86400). After a failed read the next comes
    /// sooner: 5 s, doubling, up to this or 5 minutes.
    #[serde(default = "default_interval")]
    #[schemars(range(min = 10, max = 86400))]
    pub interval_seconds: i32,

    /// What happens to a Switch or OsImage this source made when its device or image file is no
    /// longer in the inventory (deleted in Nautobot, or no longer matching `filter`): `Orphan`
    /// (the default) leaves the object and only stops managing it; `Delete` deletes it. Nothing
    /// is pruned after a failed or partial read.
    #[serde(default)]
    pub prune: PrunePolicy,

    /// How a device becomes a Switch.
    #[serde(default)]
    pub switches: SwitchMapping,

    /// How image files become OsImages, and Switches are pinned to them.
    #[serde(default)]
    pub images: ImageMapping,
}

fn default_interval() -> i32 {
    DEFAULT_INTERVAL_SECONDS
}

fn default_true() -> bool {
    true
}

/// Which devices to read. Each list is Nautobot's filter of the same meaning (values are names,
/// or ids); a device must pass every non-empty list. A name Nautobot does not know makes it
/// refuse the read (HTTP 400), which the source reports in its `Stalled` condition.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NautobotFilter {
    /// Locations (Nautobot's `location`): a device at any of them, or at a location under one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 255)))]
    pub locations: Vec<String>,
    /// Device roles (Nautobot's `role`): a device with any of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 255)))]
    pub roles: Vec<String>,
    /// Statuses (Nautobot's `status`), e.g. `Active`, `Planned`: a device with any of them.
    /// Empty: every status.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 255)))]
    pub statuses: Vec<String>,
    /// Tags (Nautobot's `tags`): a device carrying every tag named.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 255)))]
    pub tags: Vec<String>,
    /// Platforms (Nautobot's `platform`): a device with any of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 255)))]
    pub platforms: Vec<String>,
}

/// What happens to an object whose device or image file left the inventory.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PrunePolicy {
    /// Delete the object (an OsImage then follows its own `deletionPolicy` for the stored file).
    Delete,
    /// Leave the object, no longer managed by this source (its owner reference is removed).
    #[default]
    Orphan,
}

/// How a device becomes a Switch. The Switch is named for the device's serial number (the name
/// discovery gives the same serial), with `serialNumber` the serial, `hostname` the device's
/// name, `model` its device type's model, `macAddress` from `mac`, `profile` from
/// `profileCustomField` or `profiles`, `variables` from the config context and `customFields`,
/// and `osImage` from its intended software (see `images`). A device without a serial, with a
/// serial another selected device also has, or without a valid MAC is skipped and reported.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SwitchMapping {
    /// Where the device's base MAC address is read.
    #[serde(default)]
    pub mac: MacSource,
    /// Copy the top-level keys of the device's rendered config context into the Switch's
    /// `variables`: a string as it is, any other value JSON-encoded.
    #[serde(default = "default_true")]
    pub config_context: bool,
    /// Keys of device custom fields copied into `variables` (over the config context's keys of
    /// the same name): a string as it is, any other value JSON-encoded, an empty one left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 255)))]
    pub custom_fields: Vec<String>,
    /// Key of a device custom field that names the device's SwitchProfile. When the device has a
    /// non-empty value it is the Switch's `profile`, over `profiles`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub profile_custom_field: Option<String>,
    /// Which SwitchProfile a device gets, by role and platform: the first rule that matches sets
    /// the Switch's `profile`. No rule matches: `profile` is left unset, and the profiles' own
    /// `match` decide.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub profiles: Vec<ProfileRule>,
}

impl Default for SwitchMapping {
    fn default() -> Self {
        Self {
            mac: MacSource::default(),
            config_context: true,
            custom_fields: Vec::new(),
            profile_custom_field: None,
            profiles: Vec::new(),
        }
    }
}

/// Where a device's MAC address is read: exactly one of an interface's `mac_address` or a
/// custom field. Six hex pairs in any common notation; written lower-case with colons.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.interface) != has(self.customField)")
    .message("mac must set exactly one of interface or customField"))]
pub struct MacSource {
    /// Name of the device's interface whose MAC address is the switch's (the management port,
    /// `eth0` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub interface: Option<String>,
    /// Key of a device custom field holding the MAC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub custom_field: Option<String>,
}

impl Default for MacSource {
    fn default() -> Self {
        Self { interface: Some(DEFAULT_MAC_INTERFACE.to_owned()), custom_field: None }
    }
}

/// One row of the profile table: devices with this role and/or platform get `profile`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.role) || has(self.platform)")
    .message("a profile rule must name a role, a platform, or both"))]
pub struct ProfileRule {
    /// A device role's name in Nautobot. Unset: any role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub role: Option<String>,
    /// A platform's name in Nautobot. Unset: any platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub platform: Option<String>,
    /// Name of the SwitchProfile (in this namespace) the matching devices get.
    #[schemars(length(min = 1, max = 253))]
    pub profile: String,
}

/// How Nautobot's software image files become OsImages. An image file becomes an OsImage with
/// `platform` its software version's platform (mapped by `platforms`), `version` the version
/// string, `filename` the image file name, `source.url` its download URL and `sha256` its
/// checksum; a file whose algorithm is not sha256, or without a download URL, is skipped and
/// reported. A device's Switch is pinned (`osImage`) to the install image of its intended
/// software: the device's own image file of that version if it lists one, else the version's
/// default image, else the version's only file. A device without intended software, or whose
/// version has no image file, is not pinned.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ImageMapping {
    /// Make OsImages and pin Switches to them. `false`: no OsImages are made and no Switch is
    /// pinned (images and profiles are managed otherwise).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Which image files become OsImages: `Intended` (the default) only those some selected
    /// device is pinned to; `All` every image file of the selected platforms (`filter.platforms`,
    /// or every platform).
    #[serde(default)]
    pub select: ImageSelect,
    /// A Nautobot platform's name → the store's platform segment for its images (e.g.
    /// `nvidia-cumulus: cumulus-linux`). A platform not listed keeps its Nautobot name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "minLength": 1, "maxLength": 128}))]
    #[x_kube(validation = super::names::each_value_segment_rule("a store platform"))]
    pub platforms: BTreeMap<String, String>,
}

impl Default for ImageMapping {
    fn default() -> Self {
        Self { enabled: true, select: ImageSelect::default(), platforms: BTreeMap::new() }
    }
}

/// Which image files become OsImages.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ImageSelect {
    /// Only the image files some selected device's Switch is pinned to: a filter that selects
    /// one site fetches that site's images, not the whole catalogue.
    #[default]
    Intended,
    /// Every image file of the selected platforms.
    All,
}

/// What the source last read and did, written by its controller.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NautobotSourceStatus {
    /// The `metadata.generation` this status describes; -1 (the CRD's default) until a status
    /// has been written, so that a new object reads as in progress, not healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// kstatus conditions: `Ready` (the last sync read Nautobot and applied everything),
    /// `Reconciling` (a sync is under way), `Stalled` (Nautobot refused or failed the read, or
    /// the token Secret is missing: the message says what Nautobot said).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// When the last sync that read Nautobot without error ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
    /// When the last full read (every selected device, not only the changed ones) ended: at the
    /// first poll, after a spec change, and every hour. Objects are pruned only after a read
    /// (full or from the change log) that succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_full_sync_time: Option<Time>,
    /// Where the next incremental read starts: the time (Nautobot's own clock, ISO 8601 with
    /// microseconds) of the newest change-log entry when the last read began. The next poll asks
    /// Nautobot's change log for what changed since and reads only that again. Unset: the change
    /// log was empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub cursor: Option<String>,
    /// Devices the last read selected (skipped ones included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<i64>,
    /// What the last sync did to Switches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switches: Option<ObjectCounts>,
    /// What the last sync did to OsImages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<ObjectCounts>,
    /// Devices of the last read that made no Switch (and left an existing one as it was).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<i64>,
    /// Why, device by device (at most 50; `skipped` counts them all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub skipped_devices: Vec<SkippedObject>,
    /// Image files of the last read that made no OsImage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_image_files: Option<i64>,
    /// Why, file by file (at most 50; `skippedImageFiles` counts them all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub skipped_images: Vec<SkippedObject>,
}

/// What one sync did to the objects of one kind.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectCounts {
    /// Objects this source manages now.
    pub total: i64,
    /// Made by this sync.
    #[serde(default)]
    pub created: i64,
    /// Changed by this sync.
    #[serde(default)]
    pub updated: i64,
    /// Already as declared.
    #[serde(default)]
    pub unchanged: i64,
    /// Left in place, no longer managed (`prune: Orphan`).
    #[serde(default)]
    pub orphaned: i64,
    /// Deleted (`prune: Delete`).
    #[serde(default)]
    pub deleted: i64,
}

/// A device or image file that made no object, and why.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SkippedObject {
    /// The device's name (its id when it has none), or the image file's
    /// `{platform} {version} {file name}`.
    #[schemars(length(max = 512))]
    pub name: String,
    /// Why, as one word: a [`SkipReason`].
    pub reason: SkipReason,
    /// What to change in Nautobot.
    #[schemars(length(max = 1024))]
    pub message: String,
}

/// Why a device made no Switch, or an image file no OsImage.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SkipReason {
    /// The device has no serial number.
    NoSerial,
    /// The serial number cannot be a Switch's (characters, length).
    BadSerial,
    /// Another selected device has the same serial number: every one of them is skipped.
    DuplicateSerial,
    /// No MAC address: the interface is missing or has none, or the custom field is empty.
    NoMac,
    /// The MAC address is not six hex pairs.
    BadMac,
    /// A value cannot be a Switch's (a too long host name or model, too many variables).
    Invalid,
    /// The device's intended software has several image files and nothing says which one it
    /// installs (no own image file, no default image).
    AmbiguousImage,
    /// The image file the device would be pinned to made no OsImage (see `skippedImages`).
    ImageSkipped,
    /// The image file's checksum algorithm is not sha256.
    NotSha256,
    /// The image file's checksum is not 64 hexadecimal digits.
    BadChecksum,
    /// The image file has no download URL, or not an http(s) one.
    NoDownloadUrl,
    /// The platform, version or file name cannot be a store path segment.
    BadPath,
    /// Two image files would be the same store path (same platform, version and file name).
    DuplicatePath,
    /// An object it refers to (software version, platform) was not in the read.
    Unresolved,
}

impl SkipReason {
    /// The reason's name, as it appears in the status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoSerial => "NoSerial",
            Self::BadSerial => "BadSerial",
            Self::DuplicateSerial => "DuplicateSerial",
            Self::NoMac => "NoMac",
            Self::BadMac => "BadMac",
            Self::Invalid => "Invalid",
            Self::AmbiguousImage => "AmbiguousImage",
            Self::ImageSkipped => "ImageSkipped",
            Self::NotSha256 => "NotSha256",
            Self::BadChecksum => "BadChecksum",
            Self::NoDownloadUrl => "NoDownloadUrl",
            Self::BadPath => "BadPath",
            Self::DuplicatePath => "DuplicatePath",
            Self::Unresolved => "Unresolved",
        }
    }
}

/// The status's bounded list of skipped objects: at most [`MAX_SKIPPED`] of them, in order, and
/// how many there were in all.
pub fn bounded_skips(all: impl IntoIterator<Item = SkippedObject>) -> (i64, Vec<SkippedObject>) {
    let mut count = 0i64;
    let mut kept = Vec::new();
    for s in all {
        count += 1;
        if kept.len() < MAX_SKIPPED {
            kept.push(s);
        }
    }
    (count, kept)
}

#[cfg(test)]
mod tests;

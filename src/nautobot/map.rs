//! The pure mapping: what a NautobotSource declares, from the Nautobot objects read.
//!
//! [`desired`] turns an [`Inventory`] (devices, their MAC interfaces, and the platforms, roles,
//! device types, software versions and image files they refer to, by id) and the source's spec
//! into the Switches and OsImages the source declares, and the devices and image files it skips,
//! with why. No I/O and no clock: the controller reads, calls it, and applies the result.
//!
//! The rules (the resource's doc comments say them to users too):
//! - A device's Switch is named [`for_serial`]`(serial)`, the name discovery gives that serial, so
//!   a Switch discovery made is the same object. `serialNumber` is the serial, `hostname` the
//!   device's name, `model` its device type's model, `macAddress` the MAC (interface or custom
//!   field) in lower-case colon form, `profile` the profile custom field's value or the first
//!   matching rule's profile, `variables` the rendered config context's top-level keys and the
//!   chosen custom fields (strings as they are, other values JSON-encoded, nulls and empty
//!   strings left out; a custom field wins over a config-context key of the same name).
//! - Skipped devices: no serial; a serial two or more selected devices share (every one of
//!   them); a serial that cannot be a Switch's; no MAC or an invalid one; a value too long for
//!   the Switch; intended software whose image file is ambiguous or itself skipped.
//! - `osImage`: the OsImage of the device's intended software's install image — the device's own
//!   image file of that version if it lists one, else the version's default image, else the
//!   version's only file (several candidates: the default among them, else ambiguous). A device
//!   without intended software, or whose version has no file, is not pinned.
//! - An image file's OsImage is named [`image_name`] of its store path; platform is the software
//!   version's platform (mapped by `images.platforms`), version the version string, filename the
//!   image file name, `source.url` the download URL, `sha256` the checksum. Skipped: a checksum
//!   algorithm other than sha256 (reported, never guessed), a checksum that is not 64 hex digits,
//!   no http(s) download URL, a segment the store refuses, two files on one store path.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::model::{
    Device, DeviceType, Identified, Interface, Platform, Role, SoftwareImageFile, SoftwareVersion,
};
use crate::api::nautobot::{ImageSelect, NautobotFilter, NautobotSourceSpec, SkipReason, SkippedObject};
use crate::api::{DeletionPolicy, ImageSource, OsImageSpec, SwitchSpec, UrlSource, validate_segment};
use crate::profile::identity::normalize_mac;
use crate::switch::name::{for_serial, label_for};

/// Longest `hostname` a Switch takes.
const MAX_HOSTNAME: usize = 253;
/// Longest `model` a Switch takes.
const MAX_MODEL: usize = 128;
/// Longest `profile` a Switch takes.
const MAX_PROFILE: usize = 253;
/// Most `variables` a Switch takes.
const MAX_VARIABLES: usize = 256;
/// Longest URL an OsImage source takes.
const MAX_URL: usize = 4096;

/// The objects read from Nautobot, indexed by id (interfaces by device id and name). Built by
/// the reader with the `add_*` methods; iteration is in id order, so [`desired`] is deterministic.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inventory {
    pub devices: BTreeMap<String, Device>,
    /// `(device id, interface name)` → interface. Interfaces without a device are left out.
    pub interfaces: BTreeMap<(String, String), Interface>,
    pub platforms: BTreeMap<String, Platform>,
    pub roles: BTreeMap<String, Role>,
    pub device_types: BTreeMap<String, DeviceType>,
    pub software_versions: BTreeMap<String, SoftwareVersion>,
    pub image_files: BTreeMap<String, SoftwareImageFile>,
}

fn index<T: Identified>(map: &mut BTreeMap<String, T>, items: impl IntoIterator<Item = T>) {
    map.extend(items.into_iter().map(|t| (t.id().to_owned(), t)));
}

impl Inventory {
    pub fn add_devices(&mut self, items: impl IntoIterator<Item = Device>) {
        index(&mut self.devices, items);
    }
    pub fn add_interfaces(&mut self, items: impl IntoIterator<Item = Interface>) {
        for i in items {
            if let Some(d) = &i.device {
                self.interfaces.insert((d.id.clone(), i.name.clone()), i);
            }
        }
    }
    pub fn add_platforms(&mut self, items: impl IntoIterator<Item = Platform>) {
        index(&mut self.platforms, items);
    }
    pub fn add_roles(&mut self, items: impl IntoIterator<Item = Role>) {
        index(&mut self.roles, items);
    }
    pub fn add_device_types(&mut self, items: impl IntoIterator<Item = DeviceType>) {
        index(&mut self.device_types, items);
    }
    pub fn add_software_versions(&mut self, items: impl IntoIterator<Item = SoftwareVersion>) {
        index(&mut self.software_versions, items);
    }
    pub fn add_image_files(&mut self, items: impl IntoIterator<Item = SoftwareImageFile>) {
        index(&mut self.image_files, items);
    }

    fn platform_name(&self, id: Option<&str>) -> Option<&str> {
        id.and_then(|id| self.platforms.get(id)).map(|p| p.name.as_str())
    }
}

/// What the source declares: Switches and OsImages by object name, and what it skipped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Desired {
    /// Switch name ([`for_serial`]) → the device's Switch.
    pub switches: BTreeMap<String, DesiredSwitch>,
    /// OsImage name ([`image_name`]) → the image file's OsImage.
    pub images: BTreeMap<String, DesiredImage>,
    /// Devices that made no Switch, in device-id order. They are still in the inventory: a
    /// Switch the source made for one earlier is to be left as it is, not pruned.
    pub skipped: Vec<Skipped>,
    /// Image files that made no OsImage, in file-id order (with `select: Intended`, only the files
    /// some device would have been pinned to).
    pub skipped_images: Vec<Skipped>,
}

/// One device's Switch.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredSwitch {
    /// The Nautobot device's id (for the controller's labels and messages).
    pub device_id: String,
    /// The device's name in Nautobot.
    pub device_name: Option<String>,
    pub spec: SwitchSpec,
}

/// One image file's OsImage.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredImage {
    /// The Nautobot image file's id.
    pub file_id: String,
    pub spec: OsImageSpec,
}

/// A device or image file that made no object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The Nautobot object's id.
    pub id: String,
    /// For humans: the device's name (its id when it has none), or the image file as Nautobot
    /// shows it (`{platform} - {version} - {file name}`).
    pub name: String,
    pub reason: SkipReason,
    /// What is wrong, and what to change in Nautobot.
    pub message: String,
}

impl Skipped {
    fn new(id: &str, name: String, why: Skip) -> Self {
        Self { id: id.to_owned(), name, reason: why.reason(), message: why.to_string() }
    }

    /// The status's entry for it.
    pub fn to_status(&self) -> SkippedObject {
        SkippedObject { name: self.name.clone(), reason: self.reason, message: self.message.clone() }
    }
}

/// Why one device or image file is skipped; the message is what the status shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum Skip {
    #[error("the device has no serial number: give it one in Nautobot")]
    NoSerial,
    #[error("serial number {serial:?} cannot be a Switch's: {why}")]
    BadSerial { serial: String, why: String },
    #[error(
        "serial number {serial:?} is also on device(s) {others}: give each device its own serial in Nautobot"
    )]
    DuplicateSerial { serial: String, others: String },
    #[error("{0}")]
    NoMac(String),
    #[error("{0}")]
    BadMac(String),
    #[error("{0}")]
    Invalid(String),
    #[error(
        "software version {version} has image files {files} and none of them is the device's own or the version's \
         default image: mark one as default, or give the device its own image file, in Nautobot"
    )]
    AmbiguousImage { version: String, files: String },
    #[error("its intended software's image file {file} is skipped: {why}")]
    ImageSkipped { file: String, why: String },
    #[error("checksum algorithm {0} is not sha256: give the file a sha256 checksum in Nautobot")]
    NotSha256(String),
    #[error("the file has no checksum algorithm: give it a sha256 checksum in Nautobot")]
    NoAlgorithm,
    #[error("sha256 checksum {0:?} is not 64 hexadecimal digits")]
    BadChecksum(String),
    #[error("{0}")]
    NoDownloadUrl(String),
    #[error("{0}")]
    BadPath(String),
    #[error("its store path {path} is also that of image file(s) {others}: give them distinct file names")]
    DuplicatePath { path: String, others: String },
    #[error("{0} was not read from Nautobot")]
    Unresolved(String),
}

impl Skip {
    fn reason(&self) -> SkipReason {
        match self {
            Skip::NoSerial => SkipReason::NoSerial,
            Skip::BadSerial { .. } => SkipReason::BadSerial,
            Skip::DuplicateSerial { .. } => SkipReason::DuplicateSerial,
            Skip::NoMac(_) => SkipReason::NoMac,
            Skip::BadMac(_) => SkipReason::BadMac,
            Skip::Invalid(_) => SkipReason::Invalid,
            Skip::AmbiguousImage { .. } => SkipReason::AmbiguousImage,
            Skip::ImageSkipped { .. } => SkipReason::ImageSkipped,
            Skip::NotSha256(_) | Skip::NoAlgorithm => SkipReason::NotSha256,
            Skip::BadChecksum(_) => SkipReason::BadChecksum,
            Skip::NoDownloadUrl(_) => SkipReason::NoDownloadUrl,
            Skip::BadPath(_) => SkipReason::BadPath,
            Skip::DuplicatePath { .. } => SkipReason::DuplicatePath,
            Skip::Unresolved(_) => SkipReason::Unresolved,
        }
    }
}

/// The OsImage name for a store path: a DNS-1123 label made by [`label_for`] from
/// `{platform}/{version}/{filename}` (never a label by itself, so always its readable part plus
/// a hash of the path: two paths never share a name).
pub fn image_name(platform: &str, version: &str, filename: &str) -> String {
    label_for(&format!("{platform}/{version}/{filename}"), "osi")
}

/// Nautobot's query parameters for the device filter, one pair per value (`location=a&location=b`),
/// with the names Nautobot 3.2.7 accepts on `/api/dcim/devices/` (an unknown one is a 400).
pub fn device_query(filter: &NautobotFilter) -> Vec<(&'static str, String)> {
    let lists: [(&'static str, &Vec<String>); 5] = [
        ("location", &filter.locations),
        ("role", &filter.roles),
        ("status", &filter.statuses),
        ("tags", &filter.tags),
        ("platform", &filter.platforms),
    ];
    lists.into_iter().flat_map(|(name, values)| values.iter().map(move |v| (name, v.clone()))).collect()
}

/// The parameters every device read adds to [`device_query`]'s: the rendered config context, and
/// the many-to-many fields, which hold the device's own `software_image_files` (without
/// `exclude_m2m=false` Nautobot 3.2.7 leaves them out).
pub const DEVICE_READ_PARAMS: [(&str, &str); 2] = [("include", "config_context"), ("exclude_m2m", "false")];

/// What the source declares for this inventory.
pub fn desired(inv: &Inventory, spec: &NautobotSourceSpec) -> Desired {
    let mut out = Desired::default();
    let images = spec.images.enabled.then(|| Images::new(inv, spec));
    let mut used: BTreeSet<&str> = BTreeSet::new();

    let mut by_serial: BTreeMap<&str, Vec<&Device>> = BTreeMap::new();
    for d in inv.devices.values() {
        if let Some(s) = serial_of(d) {
            by_serial.entry(s).or_default().push(d);
        }
    }

    for d in inv.devices.values() {
        match switch_for(d, inv, spec, &by_serial, images.as_ref()) {
            Ok((spec, file)) => {
                if let Some(f) = file {
                    used.insert(f);
                }
                let name = for_serial(&spec.serial_number);
                out.switches.insert(
                    name,
                    DesiredSwitch { device_id: d.id.clone(), device_name: d.name.clone(), spec },
                );
            }
            Err((why, file)) => {
                if let Some(f) = file {
                    used.insert(f);
                }
                out.skipped.push(Skipped::new(&d.id, device_label(d), why));
            }
        }
    }

    if let Some(images) = images {
        let platforms: BTreeSet<&str> = spec.filter.platforms.iter().map(String::as_str).collect();
        for (id, outcome) in images.outcomes {
            let wanted = match spec.images.select {
                ImageSelect::Intended => used.contains(id.as_str()),
                ImageSelect::All => {
                    platforms.is_empty()
                        || images.nautobot_platform.get(&id).is_some_and(|p| platforms.contains(p.as_str()))
                }
            };
            if !wanted {
                continue;
            }
            match outcome {
                Ok((name, spec)) => {
                    out.images.insert(name, DesiredImage { file_id: id, spec });
                }
                Err(why) => {
                    let label = images.labels.get(&id).cloned().unwrap_or_else(|| id.clone());
                    out.skipped_images.push(Skipped::new(&id, label, why));
                }
            }
        }
    }
    out
}

/// Drops what of a device [`desired`] never reads with `spec`: the custom fields it does not
/// name (a site may have dozens, on every device) and the config context when it takes none.
pub fn keep_what_is_read(d: &mut Device, spec: &NautobotSourceSpec) {
    let m = &spec.switches;
    d.custom_fields.retain(|k, _| {
        m.custom_fields.contains(k)
            || m.mac.custom_field.as_ref() == Some(k)
            || m.profile_custom_field.as_ref() == Some(k)
    });
    if !m.config_context {
        d.config_context = None;
    }
}

/// The device's serial, when it has a non-blank one.
fn serial_of(d: &Device) -> Option<&str> {
    d.serial.as_deref().filter(|s| !s.trim().is_empty())
}

fn device_label(d: &Device) -> String {
    d.name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| d.id.clone())
}

/// A device's Switch spec and the image file it is pinned to; or why it is skipped (and the image
/// file it would have been pinned to, whose skip is then reported too).
#[allow(clippy::type_complexity)]
fn switch_for<'a>(
    d: &Device,
    inv: &'a Inventory,
    spec: &NautobotSourceSpec,
    by_serial: &BTreeMap<&str, Vec<&Device>>,
    images: Option<&Images<'a>>,
) -> Result<(SwitchSpec, Option<&'a str>), (Skip, Option<&'a str>)> {
    let serial = serial_of(d).ok_or((Skip::NoSerial, None))?;
    if let Some(all) = by_serial.get(serial).filter(|all| all.len() > 1) {
        let others: Vec<String> = all.iter().filter(|o| o.id != d.id).map(|o| device_label(o)).collect();
        return Err((Skip::DuplicateSerial { serial: serial.to_owned(), others: others.join(", ") }, None));
    }
    validate_segment("serialNumber", serial)
        .map_err(|e| (Skip::BadSerial { serial: serial.to_owned(), why: e.to_string() }, None))?;
    let mac = mac_of(d, inv, spec).map_err(|e| (e, None))?;

    let mut sw = SwitchSpec::for_serial(serial);
    sw.mac_address = Some(mac);
    sw.hostname = d.name.clone().filter(|n| !n.is_empty());
    if let Some(h) = sw.hostname.as_ref().filter(|h| h.len() > MAX_HOSTNAME) {
        return Err((
            Skip::Invalid(format!(
                "the device's name is {} characters long; a host name takes at most {MAX_HOSTNAME}",
                h.len()
            )),
            None,
        ));
    }
    let model = d.device_type.as_ref().and_then(|t| inv.device_types.get(&t.id)).map(|t| t.model.trim());
    sw.model = model.filter(|m| !m.is_empty()).map(str::to_owned);
    if let Some(m) = sw.model.as_ref().filter(|m| m.chars().count() > MAX_MODEL) {
        return Err((
            Skip::Invalid(format!("its device type's model {m:?} is longer than {MAX_MODEL} characters")),
            None,
        ));
    }
    sw.profile = profile_of(d, inv, spec);
    if let Some(p) = sw.profile.as_ref().filter(|p| p.len() > MAX_PROFILE) {
        return Err((
            Skip::Invalid(format!("profile name {p:?} is longer than {MAX_PROFILE} characters")),
            None,
        ));
    }
    sw.variables = variables_of(d, spec);
    if sw.variables.len() > MAX_VARIABLES {
        let n = sw.variables.len();
        return Err((
            Skip::Invalid(format!(
                "the config context and custom fields give {n} variables; a Switch takes at most {MAX_VARIABLES}"
            )),
            None,
        ));
    }

    let Some(images) = images else { return Ok((sw, None)) };
    let Some(file) = images.intended(d).map_err(|e| (e, None))? else { return Ok((sw, None)) };
    match images.outcomes.get(&file.id) {
        Some(Ok((name, _))) => {
            sw.os_image = Some(name.clone());
            Ok((sw, Some(file.id.as_str())))
        }
        Some(Err(why)) => {
            let label = images.labels.get(&file.id).cloned().unwrap_or_else(|| file.id.clone());
            Err((Skip::ImageSkipped { file: label, why: why.to_string() }, Some(file.id.as_str())))
        }
        None => Err((Skip::Unresolved(format!("image file {}", file.id)), None)),
    }
}

/// The device's MAC address, normalised.
fn mac_of(d: &Device, inv: &Inventory, spec: &NautobotSourceSpec) -> Result<String, Skip> {
    let source = &spec.switches.mac;
    let (raw, from) = if let Some(key) = &source.custom_field {
        let raw = match d.custom_fields.get(key) {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(Value::Null | Value::String(_)) | None => {
                return Err(Skip::NoMac(format!(
                    "custom field {key} is empty: set the device's MAC address there"
                )));
            }
            Some(other) => {
                return Err(Skip::BadMac(format!("custom field {key} holds {other}, not a MAC address")));
            }
        };
        (raw, format!("custom field {key}"))
    } else {
        let name = source.interface.as_deref().unwrap_or(crate::api::nautobot::DEFAULT_MAC_INTERFACE);
        let Some(iface) = inv.interfaces.get(&(d.id.clone(), name.to_owned())) else {
            return Err(Skip::NoMac(format!(
                "the device has no interface {name}: add it, with its MAC address"
            )));
        };
        match iface.mac_address.as_deref().filter(|m| !m.trim().is_empty()) {
            Some(m) => (m.to_owned(), format!("interface {name}")),
            None => {
                return Err(Skip::NoMac(format!("interface {name} has no MAC address: set it in Nautobot")));
            }
        }
    };
    normalize_mac(&raw)
        .ok_or_else(|| Skip::BadMac(format!("{from} holds {raw:?}, not a MAC address (six hex pairs)")))
}

/// The profile custom field's value, else the first matching rule's profile.
fn profile_of(d: &Device, inv: &Inventory, spec: &NautobotSourceSpec) -> Option<String> {
    let m = &spec.switches;
    if let Some(Value::String(p)) = m.profile_custom_field.as_ref().and_then(|k| d.custom_fields.get(k))
        && !p.trim().is_empty()
    {
        return Some(p.trim().to_owned());
    }
    let role = d.role.as_ref().and_then(|r| inv.roles.get(&r.id)).map(|r| r.name.as_str());
    let platform = inv.platform_name(d.platform.as_ref().map(|p| p.id.as_str()));
    m.profiles
        .iter()
        .find(|rule| {
            rule.role.as_deref().is_none_or(|r| Some(r) == role)
                && rule.platform.as_deref().is_none_or(|p| Some(p) == platform)
        })
        .map(|rule| rule.profile.clone())
}

/// The config context's top-level keys, then the chosen custom fields.
fn variables_of(d: &Device, spec: &NautobotSourceSpec) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    let mut put = |k: &str, v: &Value| match v {
        Value::Null => {}
        Value::String(s) if s.is_empty() => {}
        Value::String(s) => {
            vars.insert(k.to_owned(), s.clone());
        }
        other => {
            vars.insert(k.to_owned(), other.to_string());
        }
    };
    if spec.switches.config_context {
        for (k, v) in d.config_context.iter().flatten() {
            put(k, v);
        }
    }
    for k in &spec.switches.custom_fields {
        if let Some(v) = d.custom_fields.get(k) {
            put(k, v);
        }
    }
    vars
}

/// Every image file's outcome, and the lookups the device pass needs.
struct Images<'a> {
    inv: &'a Inventory,
    /// File id → its OsImage (name, spec), or why it makes none.
    outcomes: BTreeMap<String, Result<(String, OsImageSpec), Skip>>,
    /// File id → `{platform} - {version} - {file name}`.
    labels: BTreeMap<String, String>,
    /// File id → its software version's platform's Nautobot name.
    nautobot_platform: BTreeMap<String, String>,
    /// Software version id → its files, by file name.
    by_version: BTreeMap<&'a str, Vec<&'a SoftwareImageFile>>,
}

impl<'a> Images<'a> {
    fn new(inv: &'a Inventory, spec: &NautobotSourceSpec) -> Self {
        let mut by_version: BTreeMap<&str, Vec<&SoftwareImageFile>> = BTreeMap::new();
        for f in inv.image_files.values() {
            if let Some(v) = &f.software_version {
                by_version.entry(v.id.as_str()).or_default().push(f);
            }
        }
        for files in by_version.values_mut() {
            files.sort_by(|a, b| (&a.image_file_name, &a.id).cmp(&(&b.image_file_name, &b.id)));
        }
        let mut labels = BTreeMap::new();
        let mut nautobot_platform = BTreeMap::new();
        let mut outcomes = BTreeMap::new();
        for f in inv.image_files.values() {
            let version = f.software_version.as_ref().and_then(|v| inv.software_versions.get(&v.id));
            let platform =
                inv.platform_name(version.and_then(|v| v.platform.as_ref()).map(|p| p.id.as_str()));
            labels.insert(
                f.id.clone(),
                format!(
                    "{} - {} - {}",
                    platform.unwrap_or("?"),
                    version.map_or("?", |v| v.version.as_str()),
                    f.image_file_name
                ),
            );
            if let Some(p) = platform {
                nautobot_platform.insert(f.id.clone(), p.to_owned());
            }
            let only = version.and_then(|v| by_version.get(v.id.as_str())).is_some_and(|fs| fs.len() == 1);
            outcomes.insert(f.id.clone(), image_for(f, version, platform, only, spec));
        }
        dedupe_paths(&mut outcomes, &labels);
        Self { inv, outcomes, labels, nautobot_platform, by_version }
    }

    /// The image file a device is pinned to: none without intended software or when its version
    /// has no file.
    fn intended(&self, d: &Device) -> Result<Option<&'a SoftwareImageFile>, Skip> {
        let Some(v) = &d.software_version else { return Ok(None) };
        let Some(version) = self.inv.software_versions.get(&v.id) else {
            return Err(Skip::Unresolved(format!("its intended software version {}", v.id)));
        };
        let files = self.by_version.get(v.id.as_str()).map(Vec::as_slice).unwrap_or_default();
        if files.is_empty() {
            return Ok(None);
        }
        let own: Vec<&SoftwareImageFile> =
            files.iter().copied().filter(|f| d.software_image_files.iter().any(|r| r.id == f.id)).collect();
        let candidates = if own.is_empty() { files.to_vec() } else { own };
        if let [one] = candidates.as_slice() {
            return Ok(Some(*one));
        }
        let defaults: Vec<_> = candidates.iter().filter(|f| f.default_image).collect();
        if let [one] = defaults.as_slice() {
            return Ok(Some(**one));
        }
        let platform =
            self.inv.platform_name(version.platform.as_ref().map(|p| p.id.as_str())).unwrap_or("?");
        let names: Vec<&str> = candidates.iter().map(|f| f.image_file_name.as_str()).collect();
        Err(Skip::AmbiguousImage {
            version: format!("{platform} {}", version.version),
            files: names.join(", "),
        })
    }
}

/// One image file's OsImage (name and spec), or why it makes none.
fn image_for(
    f: &SoftwareImageFile,
    version: Option<&SoftwareVersion>,
    platform: Option<&str>,
    only_file: bool,
    spec: &NautobotSourceSpec,
) -> Result<(String, OsImageSpec), Skip> {
    let version = version.ok_or_else(|| {
        Skip::Unresolved(format!(
            "its software version {}",
            f.software_version.as_ref().map_or("(none)", |v| &v.id)
        ))
    })?;
    let platform = platform
        .ok_or_else(|| Skip::Unresolved(format!("the platform of software version {}", version.id)))?;
    let store_platform = spec.images.platforms.get(platform).map_or(platform, String::as_str);
    let bad_path = |e: crate::api::SegmentError| Skip::BadPath(e.to_string());
    validate_segment("platform", store_platform).map_err(|e| {
        Skip::BadPath(format!("{e}: map platform {platform} to a store platform in spec.images.platforms"))
    })?;
    validate_segment("version", &version.version).map_err(bad_path)?;
    validate_segment("filename", &f.image_file_name).map_err(bad_path)?;

    let algorithm = f.hashing_algorithm.as_deref().unwrap_or_default().trim().to_ascii_lowercase();
    match algorithm.as_str() {
        "sha256" => {}
        "" => return Err(Skip::NoAlgorithm),
        _ => return Err(Skip::NotSha256(algorithm)),
    }
    let checksum = f.image_file_checksum.as_deref().unwrap_or_default().trim().to_ascii_lowercase();
    if checksum.len() != 64 || !checksum.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Skip::BadChecksum(f.image_file_checksum.clone().unwrap_or_default()));
    }
    let url = f.download_url.as_deref().unwrap_or_default().trim();
    if url.is_empty() {
        return Err(Skip::NoDownloadUrl("the file has no download URL: set one in Nautobot".into()));
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() > MAX_URL {
        return Err(Skip::NoDownloadUrl(format!(
            "download URL {url:?} is not an http:// or https:// URL of at most {MAX_URL} characters"
        )));
    }
    let name = image_name(store_platform, &version.version, &f.image_file_name);
    let spec = OsImageSpec {
        platform: store_platform.to_owned(),
        version: version.version.clone(),
        filename: Some(f.image_file_name.clone()),
        source: ImageSource { url: Some(UrlSource { url: url.to_owned(), ..Default::default() }), s3: None },
        sha256: checksum,
        firmware_image: f.default_image || only_file,
        deletion_policy: DeletionPolicy::Delete,
    };
    Ok((name, spec))
}

/// Image files on one store path (two Nautobot platforms mapped to one store platform, with the
/// same version and file name) all become [`Skip::DuplicatePath`].
fn dedupe_paths(
    outcomes: &mut BTreeMap<String, Result<(String, OsImageSpec), Skip>>,
    labels: &BTreeMap<String, String>,
) {
    let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, o) in outcomes.iter() {
        if let Ok((name, _)) = o {
            by_name.entry(name.clone()).or_default().push(id.clone());
        }
    }
    for ids in by_name.into_values().filter(|ids| ids.len() > 1) {
        for id in &ids {
            let Some(Ok((_, s))) = outcomes.get(id) else { continue };
            let path = format!("{}/{}/{}", s.platform, s.version, s.filename.as_deref().unwrap_or_default());
            let others: Vec<&str> = ids
                .iter()
                .filter(|o| *o != id)
                .map(|o| labels.get(o).map_or(o.as_str(), String::as_str))
                .collect();
            outcomes.insert(id.clone(), Err(Skip::DuplicatePath { path, others: others.join(", ") }));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;

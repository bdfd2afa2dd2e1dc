//! The device snapshot: everything the server needs to answer devices, rendered by the controller
//! (or standalone) from SwitchProfiles, their ConfigMap / Secret content and the OsImages they
//! use. It is written to the store as one immutable JSON object and swapped atomically by the
//! server, which therefore never reads Kubernetes objects (or Secrets) itself.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};

use crate::api::{SonicSection, ZtpSectionKind, switchprofile::ZtpSection};

/// Schema version of the snapshot JSON.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// The whole snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub format: u32,
    /// Content hash of everything below (hex): the snapshot's version.
    #[serde(default)]
    pub version: String,
    /// Profiles, ordered by namespace/name.
    pub profiles: Vec<ProfileSnapshot>,
    /// Every OsImage a profile uses, by `namespace/name`.
    pub images: BTreeMap<String, ImageRef>,
    /// The Switches that change what their device gets (a pinned profile or install image, their
    /// own hostname or variables, a MAC address or model to match by when the device sends none), ordered by
    /// namespace/name. A Switch that only names its serial number is not here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub switches: Vec<SwitchSnapshot>,
}

/// One Switch whose device gets something of its own: the profile and install image it pins, the values merged
/// over its profile's for templates, the MAC address and model it is matched by when it sends
/// none. Its device is the one that sends its serial number (or, when a device sends no serial,
/// its MAC address).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SwitchSnapshot {
    pub namespace: String,
    pub name: String,
    /// The Switch's `metadata.creationTimestamp` (none in standalone): when two Switches name the
    /// same serial number, the older one counts ([`crate::profile::index`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<Time>,
    pub serial_number: String,
    /// Normalised (lower case, colon separated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Name of the SwitchProfile (in [`SwitchSnapshot::namespace`]) the device gets whatever the
    /// profiles' `match` say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The install image the device gets over its profile's (`namespace/name`, a key into
    /// [`Snapshot::images`] once that OsImage is Ready; until then the device gets no install
    /// image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_image: Option<String>,
    /// Overrides the profile's `hostname` for templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Merged over the profile's `variables` for templates (these win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
}

impl SwitchSnapshot {
    /// True when the Switch gives its device values of its own (a trial render of its profile
    /// with them is worth doing).
    pub fn has_values(&self) -> bool {
        self.hostname.is_some() || !self.variables.is_empty()
    }

    /// True when the Switch changes what its device gets (else the snapshot leaves it out).
    pub fn matters(&self) -> bool {
        self.has_values()
            || self.profile.is_some()
            || self.os_image.is_some()
            || self.mac_address.is_some()
            || self.model.is_some()
    }
}

/// A stored, verified image as devices get it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRef {
    /// `{platform}/{version}/{filename}` in the store.
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

/// One SwitchProfile with every reference resolved.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileSnapshot {
    pub namespace: String,
    pub name: String,
    /// The profile's `metadata.creationTimestamp` (none in standalone): when two profiles claim
    /// the same key, the older one wins ([`crate::profile::index`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<Time>,
    /// Serial numbers, exactly as given.
    #[serde(default)]
    pub serial_numbers: Vec<String>,
    /// MAC addresses, normalised (lower case, colon separated).
    #[serde(default)]
    pub mac_addresses: Vec<String>,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// ONIE images (`namespace/name` keys into [`Snapshot::images`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onie_install: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onie_update: Option<String>,
    /// NVOS ZTP sections, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ztp: Option<ZtpSnapshot>,
    /// SONiC ZTP sections, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sonic: Option<SonicSnapshot>,
    /// The Cumulus script (LF line endings already).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cumulus_script: Option<Text>,
    /// Named files (RtBrick `/ztp/config/{name}` and anything else).
    #[serde(default)]
    pub files: BTreeMap<String, Resolved>,
}

/// Text content, maybe a template.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Text {
    pub text: String,
    #[serde(default)]
    pub template: bool,
}

/// A resolved piece of content: text (maybe a template) or an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Resolved {
    Text(Text),
    /// `namespace/name` of an OsImage in [`Snapshot::images`].
    Image(String),
}

/// The ZTP JSON description with contents resolved.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZtpSnapshot {
    pub sections: Vec<ZtpSectionSnapshot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_ztp_no_config: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_ztp_on_failure: Option<bool>,
}

/// One section: its options as declared, its content resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZtpSectionSnapshot {
    /// The declared section (its `content` field is superseded by `resolved`).
    pub section: ZtpSection,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<Resolved>,
}

impl ZtpSectionSnapshot {
    pub fn kind(&self) -> ZtpSectionKind {
        self.section.kind
    }
}

/// The SONiC ZTP JSON description with contents resolved.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SonicSnapshot {
    pub sections: Vec<SonicSectionSnapshot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_ztp_no_config: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_ztp_on_failure: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_fallback: Option<bool>,
}

/// One SONiC section: its options as declared (contents removed), and each content it refers to
/// resolved, by part name ([`crate::profile::sonic::part`] names them: `install`, `config_db.json`,
/// `file-1`, …). A text part is served at `/sonic/{serial}/sections/{key}/{part}`; an image part
/// by its image URL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SonicSectionSnapshot {
    pub section: SonicSection,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parts: BTreeMap<String, Resolved>,
}

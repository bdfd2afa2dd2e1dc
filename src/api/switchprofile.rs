//! `SwitchProfile`: which switches (by serial, MAC or model) get which image and configuration.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    content::{Content, ObjectRef},
    sonic::SonicSpec,
};

/// Most devices remembered in `status.devices.recent`.
pub const MAX_RECENT_DEVICES: usize = 20;

/// What a set of switches receives during zero-touch provisioning: the ONIE install and update
/// images, an NVIDIA NVOS ZTP JSON, a SONiC ZTP JSON, a Cumulus ZTP script, and named files
/// (RtBrick's `/ztp/config/*`). Devices are matched by serial number, then MAC address, then model.
#[allow(clippy::duplicated_attributes)] // several `printcolumn(type_ = …)` entries are intended
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ztp.netops.dev",
    version = "v1alpha1",
    kind = "SwitchProfile",
    plural = "switchprofiles",
    namespaced,
    status = "SwitchProfileStatus",
    shortname = "swp",
    shortname = "swprof",
    category = "ztp",
    doc = "Which switches (by serial, MAC or model) get which image and which configuration.",
    printcolumn(name = "Match", type_ = "string", json_path = ".status.matchSummary"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Switches", type_ = "integer", json_path = ".status.switches.total"),
    printcolumn(name = "Provisioned", type_ = "integer", json_path = ".status.switches.provisioned"),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.switches.failed"),
    printcolumn(name = "Devices", type_ = "integer", json_path = ".status.devices.seen", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].message",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SwitchProfileSpec {
    /// Which devices this profile is for. A device is matched by the most specific key: serial
    /// number first, then MAC address, then model (a profile listing only models is the default
    /// for those models). A device whose Switch pins a profile (`spec.profile`) gets that one
    /// whatever this says. Absent: only the Switches that pin this profile get it.
    #[serde(rename = "match", default, skip_serializing_if = "DeviceMatch::is_empty")]
    pub selector: DeviceMatch,

    /// Host name given to the device; available to templates as `hostname`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub hostname: Option<String>,

    /// Free-form values for templates, available as `variables.<name>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 256))]
    pub variables: BTreeMap<String, String>,

    /// Images served to ONIE (NOS install and ONIE self-update), chosen by `ONIE-OPERATION`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onie: Option<OnieSpec>,

    /// The ZTP JSON served to NVIDIA NVOS switches (`/nvos/ztp.json`), with NVOS's section kinds.
    /// SONiC switches never get it: theirs is `sonic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ztp: Option<ZtpSpec>,

    /// The ZTP JSON served to SONiC switches (`/sonic/ztp.json`), whose sections are the plugins
    /// SONiC's ZTP engine runs (`firmware`, `configdb-json`, `connectivity-check`, `snmp`,
    /// `download`, or a script served here as the section's plugin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sonic: Option<SonicSpec>,

    /// The ZTP script served to Cumulus Linux switches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cumulus: Option<CumulusSpec>,

    /// Named files served at `/ztp/config/{name}` (RtBrick: `ctrld`, `ctrldrbac`, `element`,
    /// `startup`, `apigwd`, `accessjwks`, `tls`) and referable from ZTP sections. Any safe name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = super::names::each_segment_rule("file names"))]
    pub files: BTreeMap<String, Content>,
}

/// The identities a profile claims. At least one key is given.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "(has(self.serialNumbers) && size(self.serialNumbers) > 0) || (has(self.macAddresses) && size(self.macAddresses) > 0) || (has(self.models) && size(self.models) > 0)"
).message("match needs at least one of serialNumbers, macAddresses or models"))]
pub struct DeviceMatch {
    /// Serial numbers, as the switch reports them (`ONIE-SERIAL-NUMBER`, `SERIAL-NUMBER`,
    /// `CUMULUS-SERIAL`). Compared exactly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024), inner(length(min = 1, max = 128)))]
    #[x_kube(validation = super::names::each_segment_rule("serial numbers"))]
    pub serial_numbers: Vec<String>,

    /// Base MAC addresses (`ONIE-ETH-ADDR`, `BASE-MAC-ADDRESS`, `CUMULUS-BASE-MAC`), six
    /// colon- or dash-separated hex pairs. Compared case-insensitively.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024), inner(length(max = 17)))]
    #[x_kube(validation = kube::core::Rule::new(
        "self.all(m, m.matches('^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$'))"
    ).message("MAC addresses must be six hex pairs separated by ':' or '-', e.g. 0c:42:a1:00:00:01"))]
    pub mac_addresses: Vec<String>,

    /// Models: ONIE machine (`accton_as7712_32x`) or platform, `PRODUCT-NAME`,
    /// `CUMULUS-PRODUCTNAME`. A device whose serial and MAC match no profile gets the profile of
    /// its model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 128)))]
    pub models: Vec<String>,
}

/// Images for ONIE, by OsImage name. Each falls back on its own: a device gets the installImage
/// of the most specific matching profile that sets one (serial, then MAC, then model), and the
/// updateImage of the most specific one that sets that.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OnieSpec {
    /// The NOS installer served when `ONIE-OPERATION` is `os-install`. Unset: the device's next
    /// less specific matching profile (MAC, then model) that sets one provides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_image: Option<ObjectRef>,
    /// The ONIE updater served when `ONIE-OPERATION` is `onie-update`. Unset: the device's next
    /// less specific matching profile (MAC, then model) that sets one provides it, so a
    /// serial-specific profile naming only an installer keeps its model default's updater.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_image: Option<ObjectRef>,
}

/// An NVIDIA NVOS ZTP JSON. Sections are emitted in list order as `01-<kind>`, `02-<kind>`, …,
/// so the switch (which processes them in lexical order) runs them in the order written here.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ZtpSpec {
    /// The configuration sections, in execution order.
    #[schemars(length(min = 1, max = 64))]
    pub sections: Vec<ZtpSection>,
    /// `restart-ztp-no-config`: restart ZTP when no startup configuration exists at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_ztp_no_config: Option<bool>,
    /// `restart-ztp-on-failure` for the whole file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_ztp_on_failure: Option<bool>,
}

/// The five section kinds of the NVOS ZTP JSON.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ZtpSectionKind {
    /// Install (`content` = an osImageRef) and/or uninstall a system image.
    Image,
    /// Apply NVUE CLI commands from a text file (`content`).
    CommandsList,
    /// Apply a YAML startup configuration (`content`).
    StartupFile,
    /// Ping hosts to check connectivity.
    ConnectivityCheck,
    /// Download and run a script with a shebang (`content`).
    ProvisioningScript,
}

/// One section of the ZTP JSON, with the common keys and the keys of its kind.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "!(self.kind in ['commands-list', 'startup-file', 'provisioning-script']) || has(self.content)"
).message("commands-list, startup-file and provisioning-script sections need content"))]
#[x_kube(validation = kube::core::Rule::new(
    "self.kind != 'image' || (has(self.content) && has(self.content.osImageRef)) || (has(self.uninstall) && self.uninstall)"
).message("an image section needs content.osImageRef (install) or uninstall: true"))]
pub struct ZtpSection {
    /// The section kind.
    pub kind: ZtpSectionKind,
    /// What the section downloads: the image (osImageRef), commands file, startup YAML or script.
    /// The switch gets a URL on this server that serves it for that device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// `description`: free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// `ignore-result`: mark the section successful even if it fails (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_result: Option<bool>,
    /// `halt-on-failure`: stop ZTP when this section fails (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halt_on_failure: Option<bool>,
    /// `restart-ztp-on-failure` for this section (default true on NVOS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_ztp_on_failure: Option<bool>,
    /// `clear-config` (commands-list, startup-file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear_config: Option<bool>,
    /// `save-config` (commands-list, startup-file). Saving disables ZTP at the end of the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save_config: Option<bool>,
    /// `skip-reboot` (image install).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_reboot: Option<bool>,
    /// `uninstall` (image): remove the image on the second partition before installing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uninstall: Option<bool>,
    /// `ping-hosts` (connectivity-check): IPv4 hosts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 253)))]
    pub ping_hosts: Vec<String>,
    /// `ping6-hosts` (connectivity-check): IPv6 hosts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 253)))]
    pub ping6_hosts: Vec<String>,
    /// `ping-count` (connectivity-check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub ping_count: Option<i32>,
    /// `retry-count` (connectivity-check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub retry_count: Option<i32>,
    /// `retry-interval` in seconds (connectivity-check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub retry_interval: Option<i32>,
    /// `deadline` in seconds (connectivity-check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub deadline: Option<i32>,
    /// `timeout` in seconds (connectivity-check reply wait; provisioning-script run time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub timeout: Option<i32>,
}

/// The Cumulus Linux ZTP script.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CumulusSpec {
    /// The script. It must contain the marker `CUMULUS-AUTOPROVISIONING`; it is served with LF
    /// line endings only.
    pub script: Content,
}

/// Observed state of a SwitchProfile.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SwitchProfileStatus {
    /// The `metadata.generation` this status describes; -1 (the CRD's default) until the
    /// controller has written a status, so that a new object reads as in progress, not healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (every reference resolves, every referenced OsImage is Ready, and no key is lost
    /// to an older profile: reason `Conflict` when one is), `Stalled` (reason `Conflict`: a key
    /// this profile claims is served by an older profile; it needs a human) and `Conflict`
    /// (another profile claims one of the same devices; on the winner and the loser).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// A one-line summary of `spec.match`, e.g. `2 serials, 1 model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_summary: Option<String>,
    /// Devices that asked for this profile, as the device server counted them: written only by
    /// servers that run without Switches (`serve --switches=false`); with Switches, see
    /// `switches` (and each Switch for its device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<DeviceSummary>,
    /// The Switches this profile serves (their `status.matchedProfile`), by phase: counted from
    /// the Switches by the controller (field manager `ztp-operator-switch-counts`) every few
    /// seconds. Current figures: a Switch re-provisioned, moved to another profile or deleted
    /// leaves its count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switches: Option<SwitchCounts>,
}

impl SwitchProfileStatus {
    /// The part the profile pipeline computes: without `devices` (the device server's) and
    /// `switches` (counted from the Switches).
    pub fn pipeline_part(self) -> Self {
        Self { devices: None, switches: None, ..self }
    }
}

/// How many of a profile's Switches are in each phase.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SwitchCounts {
    /// Switches this profile serves, whatever their phase.
    pub total: i64,
    /// Seen (or declared), nothing served in the current attempt yet.
    pub discovered: i64,
    /// Received their configuration or reported a stage.
    pub configuring: i64,
    /// Downloading their image.
    pub installing: i64,
    /// Reported success in their current attempt.
    pub provisioned: i64,
    /// Reported failure in their current attempt.
    pub failed: i64,
    /// On hold (`spec.hold`).
    pub held: i64,
}

/// Counts per provisioning stage and the most recent devices, written by the device server
/// (field manager `ztp-operator-server`) every few seconds. Counts never go down; they are exact
/// for one server, and may count a device twice when it comes back to another replica (or after
/// a restart) once it is no longer among the `recent` ones.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeviceSummary {
    /// Distinct devices seen (any stage).
    pub seen: i64,
    /// Distinct devices that received their configuration (ZTP JSON or a section, a Cumulus
    /// script, an RtBrick config file).
    pub config_served: i64,
    /// Distinct devices whose image download was answered (200 or 206).
    pub image_served: i64,
    /// Distinct devices that called `POST /v1/devices/{serial}/provisioned`.
    pub provisioned: i64,
    /// The most recently active devices, newest first (at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub recent: Vec<DeviceRecord>,
}

/// One device's latest activity. A device is identified by its serial number, or by its MAC
/// address when it sent no serial.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRecord {
    /// Serial number, when sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Base MAC address, when sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Model, when sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Source IP of the last request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Furthest stage reached.
    pub stage: DeviceStage,
    /// Every stage reached (a device may download its image before it asks for its
    /// configuration, or report `Provisioned` without either).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    pub stages: Vec<DeviceStage>,
    /// Time of the last request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Time>,
}

/// Provisioning stages a device moves through.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum DeviceStage {
    /// Asked, nothing served yet.
    #[default]
    Seen,
    /// Received its configuration (ZTP JSON, script or config file).
    ConfigServed,
    /// Downloaded an image.
    ImageServed,
    /// Reported success through `POST /v1/devices/{serial}/provisioned`.
    Provisioned,
}

impl DeviceMatch {
    /// True when it names no device (a profile only Switches pin).
    pub fn is_empty(&self) -> bool {
        self.serial_numbers.is_empty() && self.mac_addresses.is_empty() && self.models.is_empty()
    }

    /// A one-line summary for the `Match` printer column: `2 serials, 1 MAC, 1 model`
    /// (`pinned only` when it names no device).
    pub fn summary(&self) -> String {
        if self.is_empty() {
            return "pinned only".into();
        }
        let part = |n: usize, one: &str, many: &str| match n {
            0 => None,
            1 => Some(format!("1 {one}")),
            n => Some(format!("{n} {many}")),
        };
        [
            part(self.serial_numbers.len(), "serial", "serials"),
            part(self.mac_addresses.len(), "MAC", "MACs"),
            part(self.models.len(), "model", "models"),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_summary_counts_each_key() {
        let m = DeviceMatch {
            serial_numbers: vec!["a".into(), "b".into()],
            mac_addresses: vec![],
            models: vec!["sn2410".into()],
        };
        assert_eq!(m.summary(), "2 serials, 1 model");
        assert_eq!(DeviceMatch::default().summary(), "pinned only");
    }

    #[test]
    fn section_kind_uses_the_nvos_names() {
        let kinds = [
            (ZtpSectionKind::Image, "image"),
            (ZtpSectionKind::CommandsList, "commands-list"),
            (ZtpSectionKind::StartupFile, "startup-file"),
            (ZtpSectionKind::ConnectivityCheck, "connectivity-check"),
            (ZtpSectionKind::ProvisioningScript, "provisioning-script"),
        ];
        for (k, s) in kinds {
            assert_eq!(serde_json::to_value(k).unwrap(), serde_json::json!(s));
        }
    }
}

//! `Switch`: one object per device — what the team declares about it (serial, pinned profile,
//! per-device variables, re-provision, hold) and what the device did (phase, conditions, the
//! facts it sent, a bounded history of provisioning attempts).
//!
//! The lifecycle rules (how requests and reports become stages, attempts, a phase and
//! conditions) live in [`crate::switch`]; this module is only the resource's shape.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Attempts kept in `status.attempts` (newest first); older ones are dropped.
pub const MAX_ATTEMPTS: usize = 10;
/// Stages kept per attempt; past it the oldest reported stages are dropped (the first and the
/// closing stage are always kept).
pub const MAX_STAGES: usize = 32;
/// Longest stage name a device may report.
pub const MAX_STAGE_NAME: usize = 64;
/// Longest message kept with a stage (longer ones are cut, on a character boundary).
pub const MAX_STAGE_MESSAGE: usize = 512;

/// One switch: its serial number (the key the server knows it by), optionally a pinned
/// SwitchProfile, per-device template values, and the controls to hold it or start its
/// provisioning again. The server creates one for every device that asks (`--discover`), and
/// writes what the device did into its status.
#[allow(clippy::duplicated_attributes)] // several `printcolumn(type_ = …)` entries are intended
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ztp.netops.dev",
    version = "v1alpha1",
    kind = "Switch",
    plural = "switches",
    namespaced,
    status = "SwitchStatus",
    shortname = "sw",
    category = "ztp",
    doc = "One switch: its serial, pinned profile, per-device values, and its provisioning lifecycle.",
    printcolumn(name = "Serial", type_ = "string", json_path = ".spec.serialNumber"),
    printcolumn(name = "Hostname", type_ = "string", json_path = ".spec.hostname"),
    printcolumn(name = "Model", type_ = "string", json_path = ".status.device.model"),
    printcolumn(name = "Profile", type_ = "string", json_path = ".status.matchedProfile.name"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "IP", type_ = "string", json_path = ".status.device.address"),
    printcolumn(name = "Last Seen", type_ = "date", json_path = ".status.lastSeen"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct SwitchSpec {
    /// Serial number, exactly as the switch reports it (`ONIE-SERIAL-NUMBER`, `SERIAL-NUMBER`,
    /// `CUMULUS-SERIAL`, RtBrick's `SERIAL-NUMBER`). It identifies the switch and cannot change:
    /// a different serial is a different switch.
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = super::names::segment_rule("serialNumber"))]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("serialNumber is immutable"))]
    pub serial_number: String,

    /// Base MAC address, six colon- or dash-separated hex pairs. Used for matching a profile by
    /// MAC when the switch does not send it, and shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 17))]
    #[x_kube(validation = kube::core::Rule::new(
        "self.matches('^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$')"
    ).message("macAddress must be six hex pairs separated by ':' or '-', e.g. 0c:42:a1:00:00:01"))]
    pub mac_address: Option<String>,

    /// Model, as a profile's `match.models` names it (ONIE machine, `PRODUCT-NAME`,
    /// `CUMULUS-PRODUCTNAME`). Used for matching a profile by model when the switch does not
    /// send one, and shown. Name it (or pin `profile`) when this Switch's `hostname` or
    /// `variables` are what its model's profile templates need: that profile is then
    /// trial-rendered with them before the switch first asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub model: Option<String>,

    /// Name of a SwitchProfile in this namespace that this switch gets, whatever the profiles'
    /// `match` say (a profile without `match` is for pinned switches only). While that profile
    /// does not exist the switch gets nothing (404), never another profile instead. Unset: the
    /// most specific matching profile (serial, then MAC, then model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub profile: Option<String>,

    /// Name of an OsImage in this namespace that this switch installs, over its profile's: ONIE's
    /// `os-install` and RtBrick's `/ztp/image` serve it (whether or not the profile names an
    /// installer), and an NVOS `image` section or a SONiC `firmware.install` of its profile points
    /// at it instead (SONiC's `install.version`, which described the profile's image, is then left
    /// out); a ZTP JSON that installs nothing is not given an install. Update images are untouched.
    /// While that OsImage is not Ready the switch gets no install image (404) and no ZTP JSON that
    /// would install one (503), never its profile's image instead. Set by a NautobotSource from
    /// the device's intended software, or by hand to pin one switch to a version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub os_image: Option<String>,

    /// Host name given to the device, over the profile's `hostname`; available to templates as
    /// `hostname`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub hostname: Option<String>,

    /// Per-device template values, merged over the profile's `variables` (a key here wins):
    /// one profile per model and one Switch per device replaces one profile per device.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 256))]
    pub variables: BTreeMap<String, String>,

    /// An opaque value: setting it to a new value closes the current attempt (result
    /// `Superseded`) and opens a new one, so the switch's next requests are a new provisioning
    /// run (e.g. a date, a ticket number, a counter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub reprovision: Option<String>,

    /// Hold the switch: the server answers it nothing (403 on every device route, logged), for a
    /// returned, suspect or not yet racked unit. Phase `Held` while set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hold: bool,
}

impl SwitchSpec {
    /// A Switch for `serial` and nothing else declared (what discovery creates).
    pub fn for_serial(serial: impl Into<String>) -> Self {
        Self {
            serial_number: serial.into(),
            mac_address: None,
            model: None,
            profile: None,
            os_image: None,
            hostname: None,
            variables: BTreeMap::new(),
            reprovision: None,
            hold: false,
        }
    }
}

/// What the switch did and said, written by the device server (field manager
/// `ztp-operator-server`) and the controller.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SwitchStatus {
    /// The `metadata.generation` this status describes; -1 (the CRD's default) until a status
    /// has been written, so that a new object reads as in progress, not healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Coarse state for humans: Discovered, Configuring, Installing, Provisioned, Failed,
    /// Unmatched or Held. Automation should read `conditions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SwitchPhase>,
    /// kstatus conditions: `Ready` (provisioned in the current attempt), `Reconciling` (an
    /// attempt is under way), `Stalled` (the attempt failed, or no profile matches), so
    /// `kubectl wait --for=condition=Ready switch/NAME` works.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The SwitchProfile this switch gets, and how it was chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_profile: Option<MatchedProfile>,
    /// What the switch last said about itself in its requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceFacts>,
    /// Time of the switch's last request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Time>,
    /// Provisioning attempts, newest first (at most 10). The first is the current one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub attempts: Vec<Attempt>,
}

/// Coarse lifecycle state of a Switch.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchPhase {
    /// Seen and matched to a profile; nothing served in the current attempt yet.
    Discovered,
    /// Received its configuration (ZTP JSON, script, config file) or reported a stage.
    Configuring,
    /// Downloading its image (ONIE install or update, an image section).
    Installing,
    /// Reported success in the current attempt.
    Provisioned,
    /// Reported failure in the current attempt; stays until `spec.reprovision` changes or the
    /// switch starts over by itself.
    Failed,
    /// Asked, but no SwitchProfile matches it (and none is pinned).
    Unmatched,
    /// `spec.hold` is set: the server answers it nothing.
    Held,
}

impl SwitchPhase {
    /// The phase's name, as it appears in the status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Discovered => "Discovered",
            Self::Configuring => "Configuring",
            Self::Installing => "Installing",
            Self::Provisioned => "Provisioned",
            Self::Failed => "Failed",
            Self::Unmatched => "Unmatched",
            Self::Held => "Held",
        }
    }
}

/// The profile a switch gets.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MatchedProfile {
    /// Name of the SwitchProfile (in the Switch's namespace when pinned; else see `namespace`).
    pub name: String,
    /// Namespace of the SwitchProfile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// How it was chosen: `Serial`, `Mac`, `Model` (the profile's `match`), or `Pinned`
    /// (`spec.profile`).
    pub by: MatchedBy,
}

/// How a switch's profile was chosen.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchedBy {
    /// The profile lists the switch's serial number.
    Serial,
    /// The profile lists the switch's MAC address.
    Mac,
    /// The profile lists the switch's model.
    Model,
    /// `spec.profile` names it.
    Pinned,
}

/// What a switch last said about itself (from its request headers).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DeviceFacts {
    /// The client that asked: `onie`, `nvos`, `sonic`, `cumulus` or `rtbrick`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// The most specific model it sent (ONIE platform or machine, `PRODUCT-NAME`,
    /// `CUMULUS-PRODUCTNAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Base MAC address, normalised (`aa:bb:cc:dd:ee:ff`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The version of the software it runs: `ONIE-VERSION`, `NVOS-VERSION`, `SONiC-VERSION`,
    /// `CUMULUS-VERSION`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    /// Source IP address of its last request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// `User-Agent` of its last request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

/// One provisioning attempt: from the first request (or a re-provision) to success, failure,
/// or being superseded.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// When the attempt opened.
    pub started: Time,
    /// When it closed; unset while it is under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<Time>,
    /// How it closed; unset while it is under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<AttemptResult>,
    /// What opened it: `Discovered` (first contact), `Restarted` (the switch started over after
    /// a closed attempt), `Reprovision` (`spec.reprovision` changed).
    pub trigger: AttemptTrigger,
    /// The `spec.reprovision` value this attempt belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reprovision: Option<String>,
    /// Its stages in time order (at most 32).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub stages: Vec<StageRecord>,
}

/// How an attempt closed.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptResult {
    /// The switch reported success (`Provisioned`).
    Provisioned,
    /// The switch reported failure.
    Failed,
    /// `spec.reprovision` changed while the attempt was open.
    Superseded,
}

/// What opened an attempt.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptTrigger {
    /// The switch's first request.
    Discovered,
    /// The switch asked for its configuration or installer again after a closed attempt.
    Restarted,
    /// `spec.reprovision` changed.
    Reprovision,
}

/// One stage of an attempt.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StageRecord {
    /// `ConfigServed`, `ImageServed`, a stage the switch reported (e.g. `image-installed`), or
    /// `Provisioned` / `Failed` (the closing report).
    #[schemars(length(min = 1, max = 64))]
    pub name: String,
    /// When it happened (the server's clock).
    pub time: Time,
    /// `ok` or `failed`, for reported stages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<StageResult>,
    /// What the switch reported with it, or what was served (e.g. the image's path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub message: Option<String>,
}

/// The result a switch reported for a stage.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StageResult {
    /// The stage succeeded.
    Ok,
    /// The stage failed (a `failed` report closes the attempt as `Failed`).
    Failed,
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;
    use serde_json::{Value, json};

    use super::*;

    /// The schema's bounds are the ones the lifecycle code keeps to.
    #[test]
    fn the_schema_bounds_are_the_code_s() {
        let crd = serde_json::to_value(Switch::crd()).unwrap();
        let status = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"];
        let attempts = &status["properties"]["attempts"];
        let stage = &attempts["items"]["properties"]["stages"];
        let n = |v: &Value| v.as_u64().map(|n| n as usize);
        assert_eq!(n(&attempts["maxItems"]), Some(MAX_ATTEMPTS));
        assert_eq!(n(&stage["maxItems"]), Some(MAX_STAGES));
        assert_eq!(n(&stage["items"]["properties"]["name"]["maxLength"]), Some(MAX_STAGE_NAME));
        assert_eq!(n(&stage["items"]["properties"]["message"]["maxLength"]), Some(MAX_STAGE_MESSAGE));
    }

    #[test]
    fn kubectl_get_shows_the_fleet_columns() {
        let crd = serde_json::to_value(Switch::crd()).unwrap();
        let cols: Vec<&str> = crd["spec"]["versions"][0]["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(cols, ["Serial", "Hostname", "Model", "Profile", "Phase", "IP", "Last Seen", "Age"]);
        assert_eq!(crd["spec"]["names"]["shortNames"], json!(["sw"]));
        assert_eq!(crd["spec"]["names"]["categories"], json!(["ztp"]));
    }

    #[test]
    fn a_minimal_switch_round_trips_without_noise() {
        let spec: SwitchSpec = serde_json::from_value(json!({"serialNumber": "SN1"})).unwrap();
        assert!(!spec.hold && spec.variables.is_empty());
        assert_eq!(serde_json::to_value(&spec).unwrap(), json!({"serialNumber": "SN1"}));
        let phases = [
            SwitchPhase::Discovered,
            SwitchPhase::Configuring,
            SwitchPhase::Installing,
            SwitchPhase::Provisioned,
            SwitchPhase::Failed,
            SwitchPhase::Unmatched,
            SwitchPhase::Held,
        ];
        for p in phases {
            assert_eq!(serde_json::to_value(p).unwrap(), json!(p.as_str()));
        }
    }
}

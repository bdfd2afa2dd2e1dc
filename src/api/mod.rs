//! The custom resources of `ztp.netops.dev/v1alpha1` (`OsImage`, `SwitchProfile`, `Switch`,
//! `NautobotSource`): what users `kubectl apply` or keep in Git.
//!
//! Every field carries a doc comment: the CRD generator turns them into the descriptions that
//! `kubectl explain` prints. Rules the OpenAPI schema cannot express are CEL rules
//! (`x-kubernetes-validations`) declared next to the field they guard.

pub mod conditions;
pub mod content;
pub mod names;
pub mod nautobot;
pub mod osimage;
pub mod references;
pub mod sonic;
pub mod switch;
pub mod switchprofile;
pub mod validate;

pub use conditions::{ConditionStatus, ConditionType};
pub use content::{Content, KeyRef, ObjectRef};
pub use names::{ImagePath, SegmentError, validate_length, validate_segment};
pub use nautobot::{
    ImageMapping, ImageSelect, MacSource, NautobotFilter, NautobotSource, NautobotSourceSpec,
    NautobotSourceStatus, ObjectCounts, ProfileRule, PrunePolicy, SkipReason, SkippedObject, SwitchMapping,
};
pub use osimage::{
    Artifact, DeletionPolicy, ImageSource, OsImage, OsImagePhase, OsImageSpec, OsImageStatus, Progress,
    S3Source, UrlSource,
};
pub use references::References;
pub use sonic::{
    SonicConfigDb, SonicConnectivityCheck, SonicDownload, SonicDownloadFile, SonicFirmware,
    SonicFirmwareInstall, SonicFirmwareRemove, SonicPlugin, SonicSection, SonicSnmp, SonicSpec,
};
pub use switch::{
    Attempt, AttemptResult, AttemptTrigger, DeviceFacts, MatchedBy, MatchedProfile, StageRecord, StageResult,
    Switch, SwitchPhase, SwitchSpec, SwitchStatus,
};
pub use switchprofile::{
    CumulusSpec, DeviceMatch, DeviceRecord, DeviceStage, DeviceSummary, OnieSpec, SwitchCounts,
    SwitchProfile, SwitchProfileSpec, SwitchProfileStatus, ZtpSection, ZtpSectionKind, ZtpSpec,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{CustomResourceDefinition, JSON};
use kube::{CustomResourceExt, core::crd::merge_crds};

/// API group of every resource of this operator.
pub const GROUP: &str = "ztp.netops.dev";
/// The one served (and stored) version.
pub const VERSION: &str = "v1alpha1";

/// The generated CustomResourceDefinitions, in a stable order. `ztp-operator crds` prints these and
/// `crds/` holds them; a test fails when the two drift apart.
pub fn crds() -> Vec<CustomResourceDefinition> {
    // merge_crds validates that a single version is declared served + storage.
    let one = |crd| {
        with_unobserved_status(merge_crds(vec![crd], VERSION).expect("a single-version CRD always merges"))
    };
    vec![one(OsImage::crd()), one(SwitchProfile::crd()), one(Switch::crd()), one(NautobotSource::crd())]
}

/// `status.observedGeneration` of an object no controller has written a status for yet.
pub const UNOBSERVED_GENERATION: i64 = -1;

/// Gives `status` the default `{observedGeneration: -1}` (the same default Flux's own CRDs
/// declare). The apiserver applies it to every object it serves without a status, so before the
/// controller's first status write kstatus (Flux, `kstatus`-based tools) reads "generation 1, but
/// latest observed generation is -1": in progress. Without it an object with no status at all
/// is, to kstatus, a resource without conditions: `Current`, healthy before anything was fetched.
fn with_unobserved_status(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    for version in &mut crd.spec.versions {
        let status = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|s| s.properties.as_mut())
            .and_then(|p| p.get_mut("status"))
            .expect("every kind has a status subresource, so a status property");
        status.default = Some(JSON(serde_json::json!({ "observedGeneration": UNOBSERVED_GENERATION })));
    }
    crd
}

/// The CRDs as one multi-document YAML stream (what `ztp-operator crds` prints).
pub fn crds_yaml() -> Result<String, yaml_serde::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&yaml_serde::to_string(&crd)?);
    }
    Ok(out)
}

/// `namespace/name` of an object, for messages and as a key.
pub fn object_name(meta: &kube::api::ObjectMeta) -> String {
    format!("{}/{}", meta.namespace.as_deref().unwrap_or("default"), meta.name.as_deref().unwrap_or("?"))
}

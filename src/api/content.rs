//! A piece of content a device receives: inline text, a ConfigMap or Secret key, or an OsImage.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Where one piece of device content comes from. Exactly one source is set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "[has(self.inline), has(self.configMapKeyRef), has(self.secretKeyRef), has(self.osImageRef)].filter(x, x).size() == 1"
).message("exactly one of inline, configMapKeyRef, secretKeyRef or osImageRef must be set"))]
#[x_kube(validation = kube::core::Rule::new("!(has(self.osImageRef) && has(self.template) && self.template)")
    .message("an osImageRef cannot be a template: images are served byte for byte"))]
pub struct Content {
    /// The content itself, written in the profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 262144))]
    pub inline: Option<String>,
    /// A key of a ConfigMap in the profile's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeyRef>,
    /// A key of a Secret in the profile's namespace. The controller reads it and renders it into
    /// the device snapshot; the server never reads Secrets through the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeyRef>,
    /// An OsImage in the profile's namespace: the device receives a URL of the verified image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_image_ref: Option<ObjectRef>,
    /// Render the text as a template (minijinja syntax). Templates see the device's identity
    /// (`serial`, `mac`, `model`, …), the profile's `hostname` and `variables`, and `server_url`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub template: bool,
}

/// A key inside a ConfigMap or Secret of the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KeyRef {
    /// Name of the ConfigMap or Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key inside its data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A reference to another object of the same namespace, by name.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// Name of the object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

//! `OsImage`: one verified image in the store, at `{platform}/{version}/{filename}`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::content::KeyRef;

/// An OS or firmware image that the controller fetches, verifies against `sha256` in the same
/// streaming pass, and stores at `{platform}/{version}/{filename}` with an entry in
/// `manifest.json`. Switches then download it from the serving Deployment.
#[allow(clippy::duplicated_attributes)] // several `printcolumn(type_ = …)` entries are intended
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ztp.netops.dev",
    version = "v1alpha1",
    kind = "OsImage",
    plural = "osimages",
    namespaced,
    status = "OsImageStatus",
    shortname = "osi",
    shortname = "osimg",
    category = "ztp",
    doc = "An OS or firmware image, fetched, verified (SHA-256) and stored for switches to install.",
    printcolumn(name = "Platform", type_ = "string", json_path = ".spec.platform"),
    printcolumn(name = "Version", type_ = "string", json_path = ".spec.version"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Progress", type_ = "string", json_path = ".status.progressText"),
    printcolumn(
        name = "Size",
        type_ = "integer",
        format = "int64",
        json_path = ".status.artifact.size",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "Message", type_ = "string", json_path = ".status.message", priority = 1)
)]
#[serde(rename_all = "camelCase")]
pub struct OsImageSpec {
    /// Platform key, the first path segment in the store, e.g. `cumulus-linux`, `nvos`, `sonic`,
    /// `onie`. Devices and profiles refer to images by platform and version.
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = super::names::segment_rule("platform"))]
    #[x_kube(validation = super::names::reserved_rule("platform"))]
    pub platform: String,

    /// Version string, the second path segment, e.g. `5.14.0`.
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = super::names::segment_rule("version"))]
    #[x_kube(validation = super::names::reserved_rule("version"))]
    pub version: String,

    /// File name in the store, the third path segment. Defaults to the last path segment of the
    /// source URL (or S3 key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = super::names::segment_rule("filename"))]
    #[x_kube(validation = super::names::reserved_rule("filename"))]
    pub filename: Option<String>,

    /// Where the controller fetches the image from: exactly one of `url` or `s3`.
    pub source: ImageSource,

    /// Expected SHA-256 of the image, 64 lowercase hexadecimal digits, as published by the vendor.
    /// The image is stored only if the downloaded bytes hash to exactly this value.
    #[schemars(length(min = 64, max = 64))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[0-9a-f]{64}$')")
        .message("sha256 must be 64 lowercase hexadecimal digits"))]
    pub sha256: String,

    /// Tag this file as the firmware image of its `{platform}/{version}/` directory (the
    /// `firmware-image` tag in `manifest.json`). At most one file per directory carries it.
    #[serde(default = "default_true")]
    pub firmware_image: bool,

    /// What happens to the stored file when this OsImage is deleted: `Delete` removes the file and
    /// its manifest entry (never a file whose hash differs from this image's), `Retain` keeps both.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

fn default_true() -> bool {
    true
}

/// Where an image comes from. Exactly one field is set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.url) != has(self.s3)")
    .message("source must set exactly one of url or s3"))]
pub struct ImageSource {
    /// An `http://`, `https://` or `file://` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<UrlSource>,
    /// An object in an S3-compatible bucket (AWS S3, Ceph RGW, MinIO).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Source>,
}

/// An image fetched over HTTP(S), or read from a local file.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UrlSource {
    /// The URL: `http://`, `https://` or `file://`. Proxies come from the controller's standard
    /// `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` environment.
    #[schemars(length(min = 1, max = 4096))]
    #[x_kube(validation = kube::core::Rule::new("self.startsWith('http://') || self.startsWith('https://') || self.startsWith('file://')")
        .message("url must start with http://, https:// or file://"))]
    pub url: String,
    /// A ConfigMap key holding PEM CA certificates to trust for this https URL, in addition to the
    /// system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_ref: Option<KeyRef>,
    /// A Secret whose every key/value pair is sent as an HTTP request header (for example
    /// `Authorization`). Header values are never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_secret_ref: Option<super::content::ObjectRef>,
    /// Skip TLS certificate verification. Only for lab use: the SHA-256 check still applies.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_tls_verify: bool,
}

/// An image stored as an object in an S3-compatible bucket.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct S3Source {
    /// Bucket name.
    #[schemars(length(min = 1, max = 255))]
    pub bucket: String,
    /// Object key.
    #[schemars(length(min = 1, max = 1024))]
    pub key: String,
    /// Endpoint URL for non-AWS servers (Ceph RGW, MinIO), e.g. `https://rgw.example.net`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub endpoint: Option<String>,
    /// Region; `us-east-1` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub region: Option<String>,
    /// A Secret with keys `accessKeyId` and `secretAccessKey` (and optionally `sessionToken`).
    /// Without it the controller's default AWS credential chain is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<super::content::ObjectRef>,
    /// Address the bucket as `endpoint/bucket/key` (path style), which Ceph and MinIO usually need.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force_path_style: bool,
}

/// What deleting an OsImage does to the stored file.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Remove the file and its manifest entry (unless the stored file's hash differs).
    #[default]
    Delete,
    /// Keep the file and its manifest entry.
    Retain,
}

/// Observed state of an OsImage.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OsImageStatus {
    /// The `metadata.generation` this status describes; -1 (the CRD's default) until the
    /// controller has written a status, so that a new object reads as in progress, not healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Coarse state for humans: Pending, Fetching, Ready, Failed or Deleting. Automation should
    /// read `conditions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<OsImagePhase>,
    /// kstatus conditions: `Ready`, `Reconciling`, `Stalled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The verified file in the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Artifact>,
    /// Bytes fetched so far, while a fetch runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// For humans (the `Progress` column of `kubectl get osimages`): `312 MiB / 1.0 GiB (30%)`
    /// while a fetch runs (only the bytes received when the source announced no size), updated
    /// with `progress`; the stored size, e.g. `1.0 GiB`, when Ready. Binary units (KiB, MiB,
    /// GiB); the percentage is rounded down. Automation should read `progress` and
    /// `artifact.size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_text: Option<String>,
    /// Fetch attempts made for the current generation (reset when the spec changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,
    /// While a transient fetch error is retried with backoff: when the next attempt is due. No
    /// wake-up before this time starts an attempt (set the `ztp.netops.dev/retry` annotation to a
    /// new value to try at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_time: Option<Time>,
    /// The value of the `ztp.netops.dev/retry` annotation last acted on (a retry is made once per
    /// new value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_retry: Option<String>,
    /// The last thing worth telling a human, e.g. `sha256 mismatch: expected …, got …`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Coarse lifecycle state of an OsImage.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OsImagePhase {
    /// Accepted, not yet fetched.
    Pending,
    /// Bytes are flowing.
    Fetching,
    /// Verified and stored.
    Ready,
    /// Stopped: wrong checksum, unreachable source, conflict. See `message`.
    Failed,
    /// Deletion in progress.
    Deleting,
}

/// A verified file in the store.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// Path relative to the store root: `{platform}/{version}/{filename}`.
    pub path: String,
    /// SHA-256 of the stored bytes (equal to `spec.sha256`).
    pub sha256: String,
    /// Size in bytes.
    pub size: i64,
    /// The URL devices download it from, when the server's external URL is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// When the file was last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
}

/// Progress of a running fetch.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Bytes received and hashed so far.
    pub bytes_done: i64,
    /// Total size, when the source announced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<i64>,
}

impl OsImageSpec {
    /// The file name in the store: `spec.filename`, else the last path segment of the source.
    /// `None` when neither yields a name (e.g. a URL ending in `/`).
    pub fn effective_filename(&self) -> Option<String> {
        if let Some(f) = &self.filename {
            return Some(f.clone());
        }
        let raw = match (&self.source.url, &self.source.s3) {
            (Some(u), _) => u.url.split(['?', '#']).next().unwrap_or_default(),
            (None, Some(s3)) => s3.key.as_str(),
            (None, None) => return None,
        };
        let last = raw.rsplit('/').next().unwrap_or_default();
        (!last.is_empty()).then(|| last.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url_spec(url: &str) -> OsImageSpec {
        OsImageSpec {
            platform: "nvos".into(),
            version: "1".into(),
            filename: None,
            source: ImageSource { url: Some(UrlSource { url: url.into(), ..Default::default() }), s3: None },
            sha256: "0".repeat(64),
            firmware_image: true,
            deletion_policy: DeletionPolicy::Delete,
        }
    }

    #[test]
    fn filename_defaults_to_last_url_segment() {
        assert_eq!(url_spec("http://h/a/b/nvos.bin").effective_filename().as_deref(), Some("nvos.bin"));
        assert_eq!(url_spec("http://h/a/nvos.bin?sig=1#x").effective_filename().as_deref(), Some("nvos.bin"));
        assert_eq!(url_spec("http://h/a/").effective_filename(), None);
        let mut s = url_spec("http://h/a/");
        s.filename = Some("x.bin".into());
        assert_eq!(s.effective_filename().as_deref(), Some("x.bin"));
        s.filename = None;
        s.source = ImageSource {
            url: None,
            s3: Some(S3Source { bucket: "b".into(), key: "k/y.bin".into(), ..Default::default() }),
        };
        assert_eq!(s.effective_filename().as_deref(), Some("y.bin"));
    }

    #[test]
    fn defaults_apply_when_fields_are_omitted() {
        let spec: OsImageSpec = serde_json::from_value(serde_json::json!({
            "platform": "nvos", "version": "1", "sha256": "a".repeat(64),
            "source": {"url": {"url": "http://h/x.bin"}}
        }))
        .unwrap();
        assert!(spec.firmware_image);
        assert_eq!(spec.deletion_policy, DeletionPolicy::Delete);
    }
}

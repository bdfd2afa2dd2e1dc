//! `manifest.json` at the store root, in the reference service's format:
//! `{"images": [{"platform", "version", "filename", "path", "sha256", "tags": {"firmware-image": ""}}]}`.
//!
//! Reading is tolerant (a bare array is accepted, unknown keys are kept and written back as the
//! exact JSON text their writer put there: numbers are not re-rounded through `f64`) and
//! validating (names are safe segments, `path` agrees with them, digests are SHA-256, no path twice,
//! at most one firmware image per `{platform}/{version}/`). A manifest that fails validation is an
//! error naming the file and the place; callers never overwrite it.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize, de::value::MapDeserializer};
use serde_json::value::RawValue;

use crate::{
    api::{ImagePath, SegmentError},
    hash::Sha256Digest,
};

/// The manifest's file name at the store root.
pub const MANIFEST_NAME: &str = "manifest.json";
/// The tag that marks a directory's OS / firmware image.
pub const FIRMWARE_TAG: &str = "firmware-image";

/// One JSON value kept as the exact text it was read as (a foreign writer's number such as
/// `33001338077844212052` stays that, not `3.3001338077844212e19`). Equal when the texts are.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawJson(Box<RawValue>);

impl RawJson {
    /// The JSON text of `value` (for values this operator writes itself).
    pub fn of(value: &impl Serialize) -> Self {
        Self(serde_json::value::to_raw_value(value).expect("a JSON value serialises"))
    }

    pub fn get(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

/// Keys this version does not know, with their values as read.
pub type Foreign = BTreeMap<String, RawJson>;

/// One stored file. Read with [`ManifestEntry::from_json`] (not `Deserialize`: a flattened
/// [`RawJson`] cannot be, and duplicate keys are tolerated, the last one winning as in a
/// `serde_json::Value`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ManifestEntry {
    pub platform: String,
    pub version: String,
    pub filename: String,
    pub path: String,
    pub sha256: Sha256Digest,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Size in bytes (written by this operator; absent in hand-edited entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Who wrote the entry: `osimage/<namespace>/<name>`, `upload`, or absent (by hand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Keys this version does not know, kept as they were.
    #[serde(flatten)]
    pub extra: Foreign,
}

/// The keys [`ManifestEntry`] knows, read from an entry's object.
#[derive(Deserialize)]
struct KnownKeys {
    platform: String,
    version: String,
    filename: String,
    path: String,
    sha256: Sha256Digest,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    owner: Option<String>,
}

/// The JSON keys of [`KnownKeys`] (and of [`ManifestEntry`] without `extra`).
const KNOWN_KEYS: [&str; 8] = ["platform", "version", "filename", "path", "sha256", "tags", "size", "owner"];

impl ManifestEntry {
    /// Reads one entry from its object's keys; keys it does not know go to `extra` unchanged.
    pub fn from_json(mut object: BTreeMap<String, Box<RawValue>>) -> Result<Self, serde_json::Error> {
        let known = object
            .iter()
            .filter(|(key, _)| KNOWN_KEYS.contains(&key.as_str()))
            .map(|(key, value)| (key.as_str(), &**value));
        let known = KnownKeys::deserialize(MapDeserializer::new(known))?;
        object.retain(|key, _| !KNOWN_KEYS.contains(&key.as_str()));
        Ok(Self {
            platform: known.platform,
            version: known.version,
            filename: known.filename,
            path: known.path,
            sha256: known.sha256,
            tags: known.tags,
            size: known.size,
            owner: known.owner,
            extra: object.into_iter().map(|(key, value)| (key, RawJson(value))).collect(),
        })
    }

    pub fn new(
        path: &ImagePath,
        sha256: Sha256Digest,
        size: u64,
        firmware: bool,
        owner: Option<String>,
    ) -> Self {
        let mut tags = BTreeMap::new();
        if firmware {
            tags.insert(FIRMWARE_TAG.to_owned(), String::new());
        }
        Self {
            platform: path.platform().to_owned(),
            version: path.version().to_owned(),
            filename: path.filename().to_owned(),
            path: path.to_string(),
            sha256,
            tags,
            size: Some(size),
            owner,
            extra: Foreign::new(),
        }
    }

    pub fn is_firmware(&self) -> bool {
        self.tags.contains_key(FIRMWARE_TAG)
    }

    /// The validated path of this entry (a device snapshot's under the reserved
    /// [`SNAPSHOT_PLATFORM`](crate::api::names::SNAPSHOT_PLATFORM)).
    pub fn image_path(&self) -> Result<ImagePath, SegmentError> {
        use crate::api::names::SNAPSHOT_PLATFORM;
        if self.platform == SNAPSHOT_PLATFORM {
            ImagePath::internal(SNAPSHOT_PLATFORM, &self.version, &self.filename)
        } else {
            ImagePath::new(&self.platform, &self.version, &self.filename)
        }
    }
}

/// The whole manifest.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Manifest {
    pub images: Vec<ManifestEntry>,
    /// Top-level keys this version does not know, kept as they were.
    #[serde(flatten)]
    pub extra: Foreign,
}

/// Why a manifest cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ManifestError {
    #[error("{file}: not valid JSON at line {line}, column {column}: {reason}")]
    Syntax { file: String, line: usize, column: usize, reason: String },
    #[error("{file}: {reason}")]
    Shape { file: String, reason: String },
    #[error("{file}: images[{index}] ({path}): {reason}")]
    Entry { file: String, index: usize, path: String, reason: String },
}

/// Why a change to the manifest is refused (the manifest itself is fine).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ManifestConflict {
    #[error("{path} is already in the manifest with sha256 {existing}{}", owner_note(.owner))]
    DifferentFile { path: String, existing: Sha256Digest, owner: Option<String> },
    #[error("{dir}/ already has a different firmware image, {other}{}", owner_note(.owner))]
    OtherFirmware { dir: String, other: String, owner: Option<String> },
    #[error("{path} is already in the store without a manifest entry (copied by hand?); remove it first")]
    Untracked { path: String },
}

fn owner_note(owner: &Option<String>) -> String {
    owner.as_ref().map(|o| format!(" (written by {o})")).unwrap_or_default()
}

impl Manifest {
    /// Parses and validates `bytes` (the contents of `file`, named in errors).
    pub fn parse(file: &str, bytes: &[u8]) -> Result<Self, ManifestError> {
        // Read as raw text first: the syntax is checked once, and no value goes through `f64`.
        let value: Box<RawValue> = serde_json::from_slice(bytes).map_err(|e| ManifestError::Syntax {
            file: file.to_owned(),
            line: e.line(),
            column: e.column(),
            reason: e.to_string().split(" at line").next().unwrap_or_default().to_owned(),
        })?;
        let shape = || ManifestError::Shape {
            file: file.to_owned(),
            reason: "expected an object with an \"images\" array, or an array of entries".to_owned(),
        };
        let (raw_images, extra) = match serde_json::from_str::<BTreeMap<String, Box<RawValue>>>(value.get()) {
            Ok(mut object) => {
                let images = object.remove("images").ok_or_else(shape)?;
                let images = serde_json::from_str::<Vec<Box<RawValue>>>(images.get()).map_err(|_| shape())?;
                (images, object.into_iter().map(|(key, value)| (key, RawJson(value))).collect())
            }
            Err(_) => (serde_json::from_str(value.get()).map_err(|_| shape())?, Foreign::new()),
        };
        let mut images = Vec::with_capacity(raw_images.len());
        for (index, raw) in raw_images.into_iter().enumerate() {
            let object = serde_json::from_str::<BTreeMap<String, Box<RawValue>>>(raw.get());
            let path = object
                .as_ref()
                .ok()
                .and_then(|o| o.get("path"))
                .and_then(|p| serde_json::from_str::<String>(p.get()).ok())
                .unwrap_or_else(|| "?".to_owned());
            let entry_err = |reason: String| ManifestError::Entry {
                file: file.to_owned(),
                index,
                path: path.clone(),
                reason,
            };
            let object = object.map_err(|_| entry_err("expected an object".to_owned()))?;
            let entry = ManifestEntry::from_json(object).map_err(|e| entry_err(e.to_string()))?;
            let image_path = entry.image_path().map_err(|e| entry_err(e.to_string()))?;
            if entry.path != image_path.to_string() {
                return Err(entry_err(format!(
                    "path should be {image_path}, as platform/version/filename say"
                )));
            }
            images.push(entry);
        }
        let manifest = Self { images, extra };
        manifest.check_invariants().map_err(|(index, reason)| ManifestError::Entry {
            file: file.to_owned(),
            index,
            path: manifest.images[index].path.clone(),
            reason,
        })?;
        Ok(manifest)
    }

    /// No path twice; at most one firmware image per directory. Returns the offending index.
    fn check_invariants(&self) -> Result<(), (usize, String)> {
        let mut paths = HashMap::new();
        let mut firmware: HashMap<(&str, &str), usize> = HashMap::new();
        for (i, e) in self.images.iter().enumerate() {
            if let Some(first) = paths.insert(e.path.as_str(), i) {
                return Err((i, format!("listed twice (also images[{first}])")));
            }
            if e.is_firmware()
                && let Some(first) = firmware.insert((&e.platform, &e.version), i)
            {
                return Err((
                    i,
                    format!(
                        "second firmware image in {}/{}/ (images[{first}] {} already has the tag)",
                        e.platform, e.version, self.images[first].path
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The manifest as written to storage: pretty JSON with a trailing newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("a manifest always serialises");
        out.push(b'\n');
        out
    }

    pub fn get(&self, path: &ImagePath) -> Option<&ManifestEntry> {
        let p = path.to_string();
        self.images.iter().find(|e| e.path == p)
    }

    /// The firmware image of `{platform}/{version}/`, if one is tagged.
    pub fn firmware_of(&self, platform: &str, version: &str) -> Option<&ManifestEntry> {
        self.images.iter().find(|e| e.platform == platform && e.version == version && e.is_firmware())
    }

    /// Checks that `entry` may be written: the same path holds nothing or the same file (or
    /// `replace` allows replacing it), and no other file of its directory is a firmware image.
    pub fn check_insert(&self, entry: &ManifestEntry, replace: bool) -> Result<(), ManifestConflict> {
        if let Some(existing) = self.images.iter().find(|e| e.path == entry.path)
            && existing.sha256 != entry.sha256
            && !replace
        {
            return Err(ManifestConflict::DifferentFile {
                path: entry.path.clone(),
                existing: existing.sha256,
                owner: existing.owner.clone(),
            });
        }
        if entry.is_firmware()
            && let Some(other) = self.firmware_of(&entry.platform, &entry.version)
            && other.path != entry.path
        {
            return Err(ManifestConflict::OtherFirmware {
                dir: format!("{}/{}", entry.platform, entry.version),
                other: other.filename.clone(),
                owner: other.owner.clone(),
            });
        }
        Ok(())
    }

    /// Inserts or replaces the entry at `entry.path` after [`Self::check_insert`]. Unknown keys
    /// of a replaced entry are kept.
    pub fn insert(&mut self, mut entry: ManifestEntry, replace: bool) -> Result<(), ManifestConflict> {
        self.check_insert(&entry, replace)?;
        match self.images.iter_mut().find(|e| e.path == entry.path) {
            Some(existing) => {
                let mut extra = std::mem::take(&mut existing.extra);
                extra.append(&mut entry.extra);
                entry.extra = extra;
                *existing = entry;
            }
            None => self.images.push(entry),
        }
        Ok(())
    }

    /// [`Self::insert`] for a file about to be placed at `entry.path`, where `stored` says whether
    /// a file is there now: one without a manifest entry (a copy by hand, a crash's leftover) is
    /// taken as well, and replaced only when `replace` allows it.
    pub fn place(
        &mut self,
        entry: ManifestEntry,
        replace: bool,
        stored: bool,
    ) -> Result<(), ManifestConflict> {
        if stored && !replace && !self.images.iter().any(|e| e.path == entry.path) {
            return Err(ManifestConflict::Untracked { path: entry.path });
        }
        self.insert(entry, replace)
    }

    /// Removes the entry at `path`; returns it.
    pub fn remove(&mut self, path: &ImagePath) -> Option<ManifestEntry> {
        let p = path.to_string();
        let i = self.images.iter().position(|e| e.path == p)?;
        Some(self.images.remove(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "7c0a9f3b5e4d2c1a0f9e8d7c6b5a49382716f5e4d3c2b1a0f9e8d7c6b5a49382";
    const B: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";

    fn entry(p: &str, v: &str, f: &str, sha: &str, fw: bool) -> ManifestEntry {
        ManifestEntry::new(&ImagePath::new(p, v, f).unwrap(), sha.parse().unwrap(), 1, fw, None)
    }

    #[test]
    fn reads_the_reference_format_and_keeps_unknown_keys() {
        let text = format!(
            r#"{{"images": [{{"platform": "cumulus-linux", "version": "5.14.0",
                "filename": "cl.bin", "path": "cumulus-linux/5.14.0/cl.bin",
                "sha256": "{}", "tags": {{"firmware-image": ""}}, "note": "by hand"}}],
               "generator": "nv-config-manager"}}"#,
            A.to_uppercase()
        );
        let m = Manifest::parse("manifest.json", text.as_bytes()).unwrap();
        assert_eq!(m.images.len(), 1);
        assert!(m.images[0].is_firmware());
        assert_eq!(m.images[0].sha256.to_string(), A);
        assert_eq!(m.images[0].extra["note"].get(), r#""by hand""#);
        let back: serde_json::Value = serde_json::from_slice(&m.to_bytes()).unwrap();
        assert_eq!(back["generator"], "nv-config-manager");
        assert_eq!(back["images"][0]["note"], "by hand");
        assert_eq!(back["images"][0]["tags"], serde_json::json!({"firmware-image": ""}));
        assert!(back["images"][0].get("size").is_none(), "absent optional keys are not invented");
    }

    #[test]
    fn accepts_a_bare_array_and_an_empty_object_list() {
        let text =
            format!(r#"[{{"platform":"a","version":"1","filename":"f","path":"a/1/f","sha256":"{A}"}}]"#);
        let m = Manifest::parse("m", text.as_bytes()).unwrap();
        assert_eq!(m.images[0].tags.len(), 0);
        assert_eq!(Manifest::parse("m", br#"{"images": []}"#).unwrap().images.len(), 0);
    }

    #[test]
    fn malformed_manifests_name_file_and_place() {
        let err = Manifest::parse("/data/manifest.json", b"{\n  \"images\": [\n    {,\n").unwrap_err();
        assert!(matches!(err, ManifestError::Syntax { line: 3, .. }), "{err}");
        assert!(err.to_string().starts_with("/data/manifest.json: not valid JSON at line 3"), "{err}");

        let err = Manifest::parse("m", br#"{"files": []}"#).unwrap_err();
        assert!(err.to_string().contains("expected an object with an \"images\" array"), "{err}");

        let bad_sha =
            r#"{"images":[{"platform":"a","version":"1","filename":"f","path":"a/1/f","sha256":"xyz"}]}"#;
        let err = Manifest::parse("m", bad_sha.as_bytes()).unwrap_err();
        assert!(err.to_string().starts_with("m: images[0] (a/1/f): "), "{err}");
        assert!(err.to_string().contains("not a SHA-256 digest"), "{err}");

        let traversal = format!(
            r#"{{"images":[{{"platform":"..","version":"1","filename":"f","path":"../1/f","sha256":"{A}"}}]}}"#
        );
        let err = Manifest::parse("m", traversal.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("platform"), "{err}");

        let wrong_path = format!(
            r#"{{"images":[{{"platform":"a","version":"1","filename":"f","path":"b/1/f","sha256":"{A}"}}]}}"#
        );
        let err = Manifest::parse("m", wrong_path.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("path should be a/1/f"), "{err}");

        let two_fw = format!(
            r#"{{"images":[
              {{"platform":"a","version":"1","filename":"f","path":"a/1/f","sha256":"{A}","tags":{{"firmware-image":""}}}},
              {{"platform":"a","version":"1","filename":"g","path":"a/1/g","sha256":"{B}","tags":{{"firmware-image":""}}}}]}}"#
        );
        let err = Manifest::parse("m", two_fw.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("images[1] (a/1/g): second firmware image in a/1/"), "{err}");

        let dup = format!(
            r#"[{{"platform":"a","version":"1","filename":"f","path":"a/1/f","sha256":"{A}"}},
                {{"platform":"a","version":"1","filename":"f","path":"a/1/f","sha256":"{A}"}}]"#
        );
        assert!(Manifest::parse("m", dup.as_bytes()).unwrap_err().to_string().contains("listed twice"));
    }

    #[test]
    fn one_firmware_image_per_directory() {
        let mut m = Manifest::default();
        m.insert(entry("a", "1", "f", A, true), false).unwrap();
        // Support files beside it are fine.
        m.insert(entry("a", "1", "notes.txt", B, false), false).unwrap();
        // Another directory is independent.
        m.insert(entry("a", "2", "g", B, true), false).unwrap();
        let err = m.insert(entry("a", "1", "g", B, true), false).unwrap_err();
        assert_eq!(err.to_string(), "a/1/ already has a different firmware image, f");
        // Same path, same file: idempotent.
        m.insert(entry("a", "1", "f", A, true), false).unwrap();
        assert_eq!(m.images.len(), 3);
    }

    #[test]
    fn a_different_file_at_the_same_path_needs_replace() {
        let mut m = Manifest::default();
        let mut first = entry("a", "1", "f", A, false);
        first.owner = Some("upload".into());
        first.extra.insert("note".into(), RawJson::of(&"keep"));
        m.insert(first, false).unwrap();
        let err = m.insert(entry("a", "1", "f", B, false), false).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("a/1/f is already in the manifest with sha256 {A} (written by upload)")
        );
        m.insert(entry("a", "1", "f", B, false), true).unwrap();
        assert_eq!(m.images[0].sha256.to_string(), B);
        assert_eq!(m.images[0].extra["note"], RawJson::of(&"keep"));
        assert!(m.remove(&ImagePath::new("a", "1", "f").unwrap()).is_some());
        assert!(m.images.is_empty());
    }

    /// The fuzz target `manifest` found this (fuzz/seeds/manifest/float-extra): a foreign number
    /// beyond `u64` came back as another number once written and read again.
    #[test]
    fn foreign_numbers_are_written_back_as_they_were_read() {
        let crash = include_bytes!("../../fuzz/seeds/manifest/float-extra");
        let m = Manifest::parse("m", crash).unwrap();
        let again = Manifest::parse("m", &m.to_bytes()).unwrap();
        assert_eq!(again, m);

        let text = format!(
            r#"{{"images":[{{"platform":"a","version":"1","filename":"f","path":"a/1/f","sha256":"{A}",
                "fir":33001338077844212052, "ratio":0.1000000000000000055511151231257827,
                "nested":{{"n":1e400}}}}], "serial":18446744073709551616}}"#
        );
        let written = String::from_utf8(Manifest::parse("m", text.as_bytes()).unwrap().to_bytes()).unwrap();
        for kept in [
            r#""fir": 33001338077844212052"#,
            r#""ratio": 0.1000000000000000055511151231257827"#,
            r#""nested": {"n":1e400}"#,
            r#""serial": 18446744073709551616"#,
        ] {
            assert!(written.contains(kept), "{kept} not in {written}");
        }
    }

    #[test]
    fn known_keys_are_the_serialised_fields() {
        let mut e = entry("a", "1", "f", A, true);
        e.owner = Some("upload".into());
        let written: BTreeMap<String, serde_json::Value> =
            serde_json::from_value(serde_json::to_value(&e).unwrap()).unwrap();
        let mut known = KNOWN_KEYS.to_vec();
        known.sort_unstable();
        assert_eq!(written.keys().map(String::as_str).collect::<Vec<_>>(), known);
    }

    #[test]
    fn a_repeated_key_counts_once_the_last_wins() {
        let text = format!(
            r#"[{{"platform":"a","version":"1","filename":"f","path":"x","path":"a/1/f","sha256":"{A}","n":1,"n":2}}]"#
        );
        let m = Manifest::parse("m", text.as_bytes()).unwrap();
        assert_eq!(m.images[0].path, "a/1/f");
        assert_eq!(m.images[0].extra["n"].get(), "2");
    }
}

//! Folders of kubectl-style YAML (`*.yaml` / `*.yml`, several documents per file): what
//! standalone mode declares ([`load`]: OsImages, SwitchProfiles, Switches, NautobotSources and
//! the ConfigMaps / Secrets they reference) and the SwitchProfiles and Switches `ztpctl dhcp` reads
//! ([`read_profiles_and_switches`]). Documents are checked as the apiserver would ([`validate`])
//! and bounded in size and nesting before they are parsed.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use k8s_openapi::{
    api::core::v1::{ConfigMap, Secret},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use serde_json::Value;

use crate::{
    api::{NautobotSource, OsImage, Switch, SwitchProfile, object_name, validate},
    lookup::{config_map_data, secret_data},
};

/// A manifest file that cannot be read, or one of its documents that is not valid.
#[derive(Debug, thiserror::Error)]
#[error("read {path}: {message}")]
pub struct ManifestsError {
    pub path: PathBuf,
    pub message: String,
}

/// What the folder declares.
#[derive(Default, Clone)]
pub struct Desired {
    pub images: Vec<Arc<OsImage>>,
    pub profiles: Vec<Arc<SwitchProfile>>,
    pub switches: Vec<Arc<Switch>>,
    pub nautobot_sources: Vec<Arc<NautobotSource>>,
    pub config_maps: HashMap<(String, String), BTreeMap<String, Vec<u8>>>,
    pub secrets: HashMap<(String, String), BTreeMap<String, Vec<u8>>>,
}

/// Changes to any file name, size or mtime under the folder.
pub fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                out.push((p, m.len(), m.modified().ok()));
            }
        }
    }
    out.sort();
    out
}

/// A stable positive number for a spec, standing in for `metadata.generation`.
pub(crate) fn generation_of(spec: &Value) -> i64 {
    // FNV-1a over the canonical JSON: stable across runs and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in spec.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    i64::try_from(h >> 2).unwrap_or(1).max(1)
}

/// What the folder declares, and the files that could not be read (each skipped whole, with why).
pub struct Folder {
    pub desired: Desired,
    pub problems: Vec<ManifestsError>,
}

/// Reads every YAML file of the folder. A file that does not parse, or holds a document that is
/// not a valid object of its kind, is skipped whole and reported in [`Folder::problems`]; the
/// error is an OsImage declared twice (which file wins cannot be told).
pub fn load(dir: &Path) -> Result<Folder, ManifestsError> {
    let mut desired = Desired::default();
    let mut problems = Vec::new();
    for (path, _, mtime) in fingerprint(dir) {
        let mut file = Desired::default();
        match load_file(dir, &path, mtime, &mut file) {
            Ok(()) => {
                desired.images.extend(file.images);
                desired.profiles.extend(file.profiles);
                desired.switches.extend(file.switches);
                desired.nautobot_sources.extend(file.nautobot_sources);
                desired.config_maps.extend(file.config_maps);
                desired.secrets.extend(file.secrets);
            }
            Err(e) => problems.push(e),
        }
    }
    let mut seen = std::collections::HashSet::new();
    for image in &desired.images {
        let name = object_name(&image.metadata);
        if !seen.insert(name.clone()) {
            return Err(ManifestsError {
                path: dir.to_path_buf(),
                message: format!("OsImage {name} is declared twice"),
            });
        }
    }
    Ok(Folder { desired, problems })
}

/// The objects of one YAML file, added to `desired`.
fn load_file(
    dir: &Path,
    path: &Path,
    mtime: Option<SystemTime>,
    desired: &mut Desired,
) -> Result<(), ManifestsError> {
    let err = |message: String| ManifestsError { path: path.to_path_buf(), message };
    for (i, value) in read_documents(path)? {
        let kind = value.get("kind").and_then(Value::as_str).unwrap_or_default().to_owned();
        let doc_err = |e: serde_json::Error| err(format!("document {} ({kind}): {e}", i + 1));
        // What the apiserver would refuse is refused here too, with its words.
        if validate::is_ours(&value) {
            validate::validate(&value).map_err(|e| err(format!("document {}: {e}", i + 1)))?;
        }
        match kind.as_str() {
            "OsImage" => {
                let mut image: OsImage = serde_json::from_value(value.clone()).map_err(doc_err)?;
                let meta = &mut image.metadata;
                meta.namespace.get_or_insert_with(|| "default".into());
                meta.generation = Some(generation_of(&value["spec"]));
                // Older files win conflicts, as older objects do in a cluster.
                meta.creation_timestamp = mtime.and_then(|t| Timestamp::try_from(t).ok()).map(Time);
                image.status = None;
                resolve_relative_file_url(&mut image, dir);
                desired.images.push(Arc::new(image));
            }
            "SwitchProfile" => {
                let mut profile: SwitchProfile = serde_json::from_value(value.clone()).map_err(doc_err)?;
                profile.metadata.namespace.get_or_insert_with(|| "default".into());
                profile.metadata.generation = Some(generation_of(&value["spec"]));
                profile.status = None;
                desired.profiles.push(Arc::new(profile));
            }
            "Switch" => {
                let mut switch: Switch = serde_json::from_value(value.clone()).map_err(doc_err)?;
                switch.metadata.namespace.get_or_insert_with(|| "default".into());
                switch.metadata.generation = Some(generation_of(&value["spec"]));
                switch.status = None;
                desired.switches.push(Arc::new(switch));
            }
            "ConfigMap" => {
                let cm: ConfigMap = serde_json::from_value(value).map_err(doc_err)?;
                let key = (
                    cm.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
                    cm.metadata.name.clone().unwrap_or_default(),
                );
                desired.config_maps.insert(key, config_map_data(cm));
            }
            "Secret" => {
                let s: Secret = serde_json::from_value(value).map_err(doc_err)?;
                let key = (
                    s.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
                    s.metadata.name.clone().unwrap_or_default(),
                );
                desired.secrets.insert(key, secret_data(s));
            }
            "NautobotSource" => {
                let mut source: NautobotSource = serde_json::from_value(value.clone()).map_err(doc_err)?;
                source.metadata.namespace.get_or_insert_with(|| "default".into());
                source.metadata.generation = Some(generation_of(&value["spec"]));
                source.status = None;
                desired.nautobot_sources.push(Arc::new(source));
            }
            _ => {} // anything else is not ours
        }
    }
    Ok(())
}

/// The non-empty YAML documents of one file, with their 0-based index in the file.
fn read_documents(path: &Path) -> Result<Vec<(usize, Value)>, ManifestsError> {
    let err = |message: String| ManifestsError { path: path.to_path_buf(), message };
    let size = std::fs::metadata(path).map_err(|e| err(e.to_string()))?.len();
    if size > MAX_YAML_BYTES {
        return Err(err(format!("{size} bytes; a manifest file may have at most {MAX_YAML_BYTES}")));
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    parse_documents(&text).map_err(err)
}

/// The non-empty YAML documents of `text` (a manifest file's contents), with their 0-based
/// index; the nesting limit is checked first (see [`yaml_nesting_within`]).
pub fn parse_documents(text: &str) -> Result<Vec<(usize, Value)>, String> {
    yaml_nesting_within(text, MAX_YAML_DEPTH)?;
    let mut docs = Vec::new();
    for (i, doc) in yaml_serde::Deserializer::from_str(text).enumerate() {
        let value: Value =
            serde::Deserialize::deserialize(doc).map_err(|e| format!("document {}: {e}", i + 1))?;
        if !value.is_null() {
            docs.push((i, value));
        }
    }
    Ok(docs)
}

/// Largest manifest file read (a Kubernetes object is at most about 1.5 MiB).
pub const MAX_YAML_BYTES: u64 = 16 * 1024 * 1024;
/// Deepest nesting a manifest file may have, checked before it is parsed (the YAML parser itself
/// takes minutes for 100,000 levels before the deserializer's own limit of 128 applies).
pub const MAX_YAML_DEPTH: usize = 128;

/// Checks, in one linear pass and without parsing, that no line of `text` nests deeper than
/// `max`: flow collections (`[`, `{`) open across lines, block sequences started on one line
/// (`- - - x`) and indentation (two columns counted as one level) all count. Quoted scalars and
/// comments are skipped. Errs with what was found.
pub fn yaml_nesting_within(text: &str, max: usize) -> Result<(), String> {
    let mut flow = 0usize;
    for (n, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches([' ', '\t']).len();
        let mut rest = &line[indent..];
        let mut dashes = 0;
        while let Some(r) = rest.strip_prefix('-').filter(|r| r.is_empty() || r.starts_with([' ', '\t'])) {
            dashes += 1;
            rest = r.trim_start_matches([' ', '\t']);
        }
        let mut quote: Option<char> = None;
        for ch in rest.chars() {
            match (quote, ch) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(ch),
                (None, '#') => break,
                (None, '[' | '{') => flow += 1,
                (None, ']' | '}') => flow = flow.saturating_sub(1),
                _ => {}
            }
            if flow > max {
                return Err(format!("line {}: nested more than {max} levels deep", n + 1));
            }
        }
        if indent / 2 + dashes > max {
            return Err(format!("line {}: nested more than {max} levels deep", n + 1));
        }
    }
    Ok(())
}

/// Reads the SwitchProfiles of `path`: one YAML file (any extension), or every `*.yaml` /
/// `*.yml` under a folder (recursively, in path order), each possibly holding several
/// documents (`---`), exactly what users `kubectl apply`. Other kinds are ignored; a profile
/// without a namespace is in `default`, as in standalone mode. Status is dropped.
pub fn read_switch_profiles(path: &Path) -> Result<Vec<SwitchProfile>, ManifestsError> {
    read_profiles_and_switches(path).map(|(profiles, _)| profiles)
}

/// Reads the SwitchProfiles and the Switches of `path` (what `ztpctl dhcp` reserves hosts for),
/// as [`read_switch_profiles`] reads profiles: a Switch without a namespace is in `default`, its
/// status is dropped.
pub fn read_profiles_and_switches(path: &Path) -> Result<(Vec<SwitchProfile>, Vec<Switch>), ManifestsError> {
    let files = if path.is_dir() {
        fingerprint(path).into_iter().map(|(p, _, _)| p).collect()
    } else {
        vec![path.to_path_buf()]
    };
    let mut profiles = Vec::new();
    let mut switches = Vec::new();
    for file in files {
        for (i, value) in read_documents(&file)? {
            if validate::is_ours(&value) {
                validate::validate(&value).map_err(|e| ManifestsError {
                    path: file.clone(),
                    message: format!("document {}: {e}", i + 1),
                })?;
            }
            let kind = value.get("kind").and_then(Value::as_str).unwrap_or_default().to_owned();
            let doc_err = |e: serde_json::Error| ManifestsError {
                path: file.clone(),
                message: format!("document {} ({kind}): {e}", i + 1),
            };
            match kind.as_str() {
                "SwitchProfile" => {
                    let mut profile: SwitchProfile = serde_json::from_value(value).map_err(doc_err)?;
                    profile.metadata.namespace.get_or_insert_with(|| "default".into());
                    profile.status = None;
                    profiles.push(profile);
                }
                "Switch" => {
                    let mut switch: Switch = serde_json::from_value(value).map_err(doc_err)?;
                    switch.metadata.namespace.get_or_insert_with(|| "default".into());
                    switch.status = None;
                    switches.push(switch);
                }
                _ => {}
            }
        }
    }
    Ok((profiles, switches))
}

/// Standalone only: `file://./x` and `file://../x` are relative to the manifests folder, so a lab
/// folder works wherever it is checked out.
fn resolve_relative_file_url(image: &mut OsImage, dir: &Path) {
    if let Some(u) = image.spec.source.url.as_mut()
        && let Some(rel) =
            u.url.strip_prefix("file://").filter(|r| r.starts_with("./") || r.starts_with("../"))
    {
        let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()).join(rel);
        u.url = format!("file://{}", abs.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_nesting_is_measured_before_parsing() {
        let ok = "a:\n  b:\n    - [1, {c: \"[[[[\"}]  # [[[[\n    - - - x\n";
        assert_eq!(yaml_nesting_within(ok, 8), Ok(()));
        for deep in ["[".repeat(200), "{a: ".repeat(200), "- ".repeat(200) + "x", " ".repeat(400) + "x"] {
            let err = yaml_nesting_within(&deep, 128).expect_err("too deep");
            assert!(err.contains("nested more than 128 levels"), "{err}");
        }
        // Across lines, flow collections add up; closing brackets bring the depth back.
        let spread = "[\n".repeat(100) + &"]\n".repeat(100) + &"[\n".repeat(100);
        assert_eq!(yaml_nesting_within(&spread, 128), Ok(()));
        assert!(yaml_nesting_within(&(spread + &"[".repeat(30)), 128).is_err());
    }

    /// A NautobotSource is read like the other kinds (and checked as the apiserver would: an
    /// interval under 10 s is refused, the file skipped).
    #[test]
    fn nautobot_sources_are_read_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = "apiVersion: ztp.netops.dev/v1alpha1\nkind: NautobotSource\nmetadata: {name: dc1}\nspec:\n  url: https://nautobot.example.net\n  tokenSecretRef: {name: nautobot, key: token}\n";
        std::fs::write(dir.path().join("nautobot.yaml"), source).expect("write");
        std::fs::write(dir.path().join("fast.yaml"), source.replace("dc1", "dc2") + "  intervalSeconds: 1\n")
            .expect("write");
        let folder = load(dir.path()).expect("the folder loads");
        let sources = &folder.desired.nautobot_sources;
        assert_eq!(sources.len(), 1);
        assert_eq!(object_name(&sources[0].metadata), "default/dc1");
        assert_eq!(sources[0].spec.interval_seconds, 60);
        assert!(sources[0].metadata.generation.is_some_and(|g| g > 0));
        let problems: Vec<String> = folder.problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("fast.yaml") && problems[0].contains("intervalSeconds"), "{problems:?}");
    }

    #[test]
    fn a_bad_file_is_skipped_and_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = "apiVersion: ztp.netops.dev/v1alpha1\nkind: OsImage\nmetadata: {name: a}\nspec:\n  platform: lab\n  version: \"1\"\n  source: {url: {url: \"file:///x\"}}\n  sha256: 0000000000000000000000000000000000000000000000000000000000000000\n";
        std::fs::write(dir.path().join("good.yaml"), image).expect("write");
        std::fs::write(dir.path().join("bad.yaml"), "kind: OsImage\nspec: [\n").expect("write");
        std::fs::write(dir.path().join("deep.yaml"), "[".repeat(100_000)).expect("write");
        let folder = load(dir.path()).expect("the folder loads");
        assert_eq!(folder.desired.images.len(), 1);
        let problems: Vec<String> = folder.problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("bad.yaml")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("deep.yaml") && p.contains("nested")), "{problems:?}");
    }

    #[test]
    fn switches_are_read_and_checked_as_the_apiserver_would() {
        let dir = tempfile::tempdir().expect("tempdir");
        let switch = "apiVersion: ztp.netops.dev/v1alpha1\nkind: Switch\nmetadata: {name: leaf-17}\nspec:\n  serialNumber: MT2245X01234\n  hostname: leaf-17\n  variables: {loopback: 10.0.0.17}\n  hold: true\n";
        std::fs::write(dir.path().join("switch.yaml"), switch).expect("write");
        let bad_mac = "apiVersion: ztp.netops.dev/v1alpha1\nkind: Switch\nmetadata: {name: leaf-18}\nspec: {serialNumber: SN18, macAddress: nope}\n";
        std::fs::write(dir.path().join("bad.yaml"), bad_mac).expect("write");
        let folder = load(dir.path()).expect("the folder loads");
        let [sw] = &folder.desired.switches[..] else { panic!("{:?}", folder.desired.switches) };
        assert_eq!(sw.metadata.namespace.as_deref(), Some("default"));
        assert_eq!((sw.spec.serial_number.as_str(), sw.spec.hold), ("MT2245X01234", true));
        assert_eq!(sw.spec.variables["loopback"], "10.0.0.17");
        let problems: Vec<String> = folder.problems.iter().map(ToString::to_string).collect();
        assert!(
            problems.len() == 1
                && problems[0].contains("spec.macAddress")
                && problems[0].contains("six hex pairs"),
            "{problems:?}"
        );
    }
}

//! Building the device snapshot from SwitchProfiles: every content reference is resolved
//! (inline, ConfigMap key, Secret key, OsImage), templates are syntax-checked, MACs normalised,
//! Cumulus scripts given LF line endings. One implementation for the controller and standalone;
//! where ConfigMaps and Secrets come from is the [`ObjectLookup`] trait.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use crate::{
    api::{Content, OsImage, OsImagePhase, SwitchProfile, ZtpSectionKind},
    hash::Sha256Digest,
    profile::{
        identity::normalize_mac,
        render::{check_template, has_crlf},
        snapshot::{
            ImageRef, ProfileSnapshot, Resolved, SNAPSHOT_FORMAT, Snapshot, SonicSectionSnapshot,
            SonicSnapshot, Text, ZtpSectionSnapshot, ZtpSnapshot,
        },
        sonic,
    },
    reconcile::{object_name, sources::ObjectLookup},
};

/// The snapshot and, per profile (`namespace/name`), what could not be resolved.
#[derive(Debug, Default)]
pub struct Built {
    pub snapshot: Snapshot,
    /// Problems per profile; a profile without an entry is complete.
    pub problems: BTreeMap<String, Vec<String>>,
    /// Profiles whose Cumulus script had CRLF line endings (served with LF).
    pub crlf_normalised: BTreeSet<String>,
}

struct Resolver<'a> {
    lookup: &'a dyn ObjectLookup,
    images: &'a [Arc<OsImage>],
    used_images: BTreeMap<String, ImageRef>,
}

impl Resolver<'_> {
    /// Resolves one piece of content of profile `ns`; `what` names it in messages.
    async fn content(&mut self, ns: &str, what: &str, c: &Content) -> Result<Resolved, String> {
        if let Some(text) = &c.inline {
            return self.text(what, text.clone(), c.template);
        }
        if let Some(r) = &c.config_map_key_ref {
            let data = self.lookup.config_map(ns, &r.name).await.map_err(|e| format!("{what}: {e}"))?;
            let data = data.ok_or_else(|| format!("{what}: ConfigMap {ns}/{} not found", r.name))?;
            let bytes = data
                .get(&r.key)
                .ok_or_else(|| format!("{what}: ConfigMap {ns}/{} has no key {:?}", r.name, r.key))?;
            let text = String::from_utf8(bytes.clone()).map_err(|_| {
                format!("{what}: ConfigMap {ns}/{} key {:?} is not UTF-8 text", r.name, r.key)
            })?;
            return self.text(what, text, c.template);
        }
        if let Some(r) = &c.secret_key_ref {
            let data = self.lookup.secret(ns, &r.name).await.map_err(|e| format!("{what}: {e}"))?;
            let data = data.ok_or_else(|| format!("{what}: Secret {ns}/{} not found", r.name))?;
            let bytes = data
                .get(&r.key)
                .ok_or_else(|| format!("{what}: Secret {ns}/{} has no key {:?}", r.name, r.key))?;
            let text = String::from_utf8(bytes.clone())
                .map_err(|_| format!("{what}: Secret {ns}/{} key {:?} is not UTF-8 text", r.name, r.key))?;
            return self.text(what, text, c.template);
        }
        if let Some(r) = &c.os_image_ref {
            return self.image(ns, what, &r.name).map(Resolved::Image);
        }
        Err(format!("{what}: no content source set"))
    }

    fn text(&self, what: &str, text: String, template: bool) -> Result<Resolved, String> {
        let t = Text { text, template };
        check_template(&t, what).map_err(|e| e.to_string())?;
        Ok(Resolved::Text(t))
    }

    /// An OsImage of namespace `ns` that is Ready; returns its key in the snapshot's images.
    fn image(&mut self, ns: &str, what: &str, name: &str) -> Result<String, String> {
        let key = format!("{ns}/{name}");
        let image = self
            .images
            .iter()
            .find(|i| object_name(&i.metadata) == key)
            .ok_or_else(|| format!("{what}: OsImage {key} not found"))?;
        let status = image.status.as_ref();
        let artifact = status
            .filter(|s| {
                // Deletion bumps a custom resource's generation: an image whose deletion waits
                // for its profiles (the controller keeps its finalizer) is still stored and served.
                s.phase == Some(OsImagePhase::Ready)
                    && (s.observed_generation == image.metadata.generation
                        || image.metadata.deletion_timestamp.is_some())
            })
            .and_then(|s| s.artifact.as_ref())
            .ok_or_else(|| format!("{what}: OsImage {key} is not Ready yet"))?;
        self.used_images.insert(
            key.clone(),
            ImageRef {
                path: artifact.path.clone(),
                sha256: artifact.sha256.clone(),
                size: u64::try_from(artifact.size).unwrap_or(0),
            },
        );
        Ok(key)
    }
}

/// Builds the snapshot of `profiles` (any order; the snapshot is sorted by namespace/name).
pub async fn build(
    profiles: &[Arc<SwitchProfile>],
    images: &[Arc<OsImage>],
    lookup: &dyn ObjectLookup,
) -> Built {
    let mut sorted: Vec<&Arc<SwitchProfile>> =
        profiles.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
    sorted.sort_by_key(|p| object_name(&p.metadata));
    let mut r = Resolver { lookup, images, used_images: BTreeMap::new() };
    let mut built = Built::default();

    for p in sorted {
        let key = object_name(&p.metadata);
        let ns = p.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let mut problems = Vec::new();
        let spec = &p.spec;
        let mut snap = ProfileSnapshot {
            namespace: ns.clone(),
            name: p.metadata.name.clone().unwrap_or_default(),
            created: p.metadata.creation_timestamp.clone(),
            serial_numbers: spec.selector.serial_numbers.clone(),
            mac_addresses: Vec::new(),
            models: spec.selector.models.clone(),
            hostname: spec.hostname.clone(),
            variables: spec.variables.clone(),
            ..Default::default()
        };
        for mac in &spec.selector.mac_addresses {
            match normalize_mac(mac) {
                Some(m) => snap.mac_addresses.push(m),
                None => problems.push(format!("match.macAddresses: {mac:?} is not a MAC address")),
            }
        }
        if let Some(onie) = &spec.onie {
            if let Some(i) = &onie.install_image {
                match r.image(&ns, "onie.installImage", &i.name) {
                    Ok(k) => snap.onie_install = Some(k),
                    Err(e) => problems.push(e),
                }
            }
            if let Some(i) = &onie.update_image {
                match r.image(&ns, "onie.updateImage", &i.name) {
                    Ok(k) => snap.onie_update = Some(k),
                    Err(e) => problems.push(e),
                }
            }
        }
        if let Some(ztp) = &spec.ztp {
            let mut sections = Vec::new();
            for (i, section) in ztp.sections.iter().enumerate() {
                let what = format!("ztp.sections[{i}]");
                let resolved = match &section.content {
                    Some(c) => match r.content(&ns, &what, c).await {
                        Ok(res) => {
                            if section.kind == ZtpSectionKind::Image && !matches!(res, Resolved::Image(_)) {
                                problems.push(format!("{what}: an image section needs an osImageRef"));
                            }
                            Some(res)
                        }
                        Err(e) => {
                            problems.push(e);
                            None
                        }
                    },
                    None => None,
                };
                let mut declared = section.clone();
                declared.content = None;
                sections.push(ZtpSectionSnapshot { section: declared, resolved });
            }
            snap.ztp = Some(ZtpSnapshot {
                sections,
                restart_ztp_no_config: ztp.restart_ztp_no_config,
                restart_ztp_on_failure: ztp.restart_ztp_on_failure,
            });
        }
        if let Some(spec_sonic) = &spec.sonic {
            let mut sections = Vec::new();
            for (i, declared) in spec_sonic.sections.iter().enumerate() {
                let what = format!("sonic.sections[{i}]");
                if declared.plugins_set() != 1 {
                    problems.push(format!(
                        "{what}: set exactly one of firmware, configdbJson, connectivityCheck, snmp, download or plugin"
                    ));
                }
                let (section, contents) = sonic::contents(declared);
                let mut parts = BTreeMap::new();
                for (name, c) in contents {
                    let part_what = format!("{what}.{name}");
                    match r.content(&ns, &part_what, &c).await {
                        Ok(res) => {
                            if let Some(p) = sonic::part_problem(&name, &res) {
                                problems.push(format!("{what}: {p}"));
                            }
                            parts.insert(name, res);
                        }
                        Err(e) => problems.push(e),
                    }
                }
                sections.push(SonicSectionSnapshot { section, parts });
            }
            snap.sonic = Some(SonicSnapshot {
                sections,
                restart_ztp_no_config: spec_sonic.restart_ztp_no_config,
                restart_ztp_on_failure: spec_sonic.restart_ztp_on_failure,
                config_fallback: spec_sonic.config_fallback,
            });
        }
        if let Some(cumulus) = &spec.cumulus {
            match r.content(&ns, "cumulus.script", &cumulus.script).await {
                Ok(Resolved::Text(mut t)) => {
                    if has_crlf(&t.text) {
                        t.text = t.text.replace("\r\n", "\n").replace('\r', "\n");
                        built.crlf_normalised.insert(key.clone());
                    }
                    if !t.template && !t.text.contains("CUMULUS-AUTOPROVISIONING") {
                        problems
                            .push("cumulus.script: the script must contain CUMULUS-AUTOPROVISIONING".into());
                    }
                    snap.cumulus_script = Some(t);
                }
                Ok(Resolved::Image(_)) => problems.push("cumulus.script: must be text, not an image".into()),
                Err(e) => problems.push(e),
            }
        }
        for (name, c) in &spec.files {
            match r.content(&ns, &format!("files.{name}"), c).await {
                Ok(res) => {
                    snap.files.insert(name.clone(), res);
                }
                Err(e) => problems.push(e),
            }
        }
        if !problems.is_empty() {
            built.problems.insert(key, problems);
        }
        built.snapshot.profiles.push(snap);
    }
    built.snapshot.images = r.used_images;
    built.snapshot.format = SNAPSHOT_FORMAT;
    built.snapshot.version = version_of(&built.snapshot);
    built
}

/// A content hash of the snapshot (its `version` field excluded).
pub fn version_of(snapshot: &Snapshot) -> String {
    let mut s = snapshot.clone();
    s.version = String::new();
    let bytes = serde_json::to_vec(&s).expect("a snapshot always serialises");
    Sha256Digest::of(&bytes).to_string()[..16].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::ResolveError;

    /// ConfigMaps in memory; no Secrets.
    struct Maps(BTreeMap<String, BTreeMap<String, Vec<u8>>>);

    #[async_trait::async_trait]
    impl ObjectLookup for Maps {
        async fn config_map(
            &self,
            _namespace: &str,
            name: &str,
        ) -> Result<Option<BTreeMap<String, Vec<u8>>>, ResolveError> {
            Ok(self.0.get(name).cloned())
        }
        async fn secret(
            &self,
            _namespace: &str,
            _name: &str,
        ) -> Result<Option<BTreeMap<String, Vec<u8>>>, ResolveError> {
            Ok(None)
        }
    }

    fn profile(yaml: &str) -> Arc<SwitchProfile> {
        Arc::new(yaml_serde::from_str(yaml).expect("profile"))
    }

    #[tokio::test]
    async fn sonic_sections_resolve_into_parts_and_bad_ones_are_problems_never_served() {
        let maps = Maps(BTreeMap::from([(
            "base".to_owned(),
            BTreeMap::from([("config_db.json".to_owned(), br#"{"DEVICE_METADATA": {}}"#.to_vec())]),
        )]));
        let good = profile(
            r##"
apiVersion: ztp.netops.dev/v1alpha1
kind: SwitchProfile
metadata: {name: good, namespace: net}
spec:
  match: {serialNumbers: ["SN1"]}
  sonic:
    sections:
      - configdbJson: {content: {configMapKeyRef: {name: base, key: config_db.json}}}
      - plugin: {script: {inline: "#!/bin/sh\necho {{ serial }}\n", template: true}}
"##,
        );
        let bad = profile(
            r#"
apiVersion: ztp.netops.dev/v1alpha1
kind: SwitchProfile
metadata: {name: bad, namespace: net}
spec:
  match: {serialNumbers: ["SN2"]}
  sonic:
    sections:
      - firmware: {install: {image: {name: missing}}}
      - configdbJson: {content: {inline: "hostname leaf"}}
      - snmp: {communityRo: x}
        connectivityCheck: {pingHosts: ["192.0.2.1"]}
"#,
        );
        let built = build(&[good, bad], &[], &maps).await;
        assert_eq!(built.problems.get("net/good"), None);
        let sonic = built.snapshot.profiles[1].sonic.as_ref().expect("good has sonic");
        assert_eq!(built.snapshot.profiles[1].name, "good");
        let names: Vec<&String> = sonic.sections.iter().flat_map(|s| s.parts.keys()).collect();
        assert_eq!(names, ["config_db.json", "plugin"]);
        assert_eq!(
            sonic.sections[0].parts["config_db.json"],
            Resolved::Text(Text { text: r#"{"DEVICE_METADATA": {}}"#.into(), template: false })
        );
        assert_eq!(sonic.sections[1].section.plugin.as_ref().map(|p| &p.script), Some(&Content::default()));

        let problems = built.problems.get("net/bad").expect("bad has problems");
        assert_eq!(
            problems,
            &[
                "sonic.sections[0].install: OsImage net/missing not found".to_owned(),
                "sonic.sections[1]: configdbJson.content is not a JSON object".to_owned(),
                "sonic.sections[2]: set exactly one of firmware, configdbJson, connectivityCheck, snmp, download or plugin"
                    .to_owned(),
            ]
        );
    }
}

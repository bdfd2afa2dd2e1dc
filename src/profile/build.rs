//! Building the device snapshot from SwitchProfiles: every content reference is resolved
//! (inline, ConfigMap key, Secret key, OsImage), templates are syntax-checked, MACs normalised,
//! Cumulus scripts given LF line endings. One implementation for the controller and standalone;
//! where ConfigMaps and Secrets come from is the [`ObjectLookup`] trait of [`crate::lookup`].

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use crate::{
    api::{
        ConditionStatus, ConditionType, Content, OsImage, OsImagePhase, SonicSpec, Switch, SwitchProfile,
        ZtpSectionKind, ZtpSpec, conditions::find_condition, object_name,
    },
    hash::Sha256Digest,
    lookup::{Kind, LookupError, ObjectLookup},
    profile::{
        identity::{DeviceIdentity, Family, normalize_mac},
        index::DeviceIndex,
        problem::Problem,
        render::{RenderError, check_template, has_crlf},
        snapshot::{
            ImageRef, ProfileSnapshot, Resolved, SNAPSHOT_FORMAT, Snapshot, SonicSectionSnapshot,
            SonicSnapshot, SwitchSnapshot, Text, ZtpSectionSnapshot, ZtpSnapshot,
        },
        sonic,
        trial::{self, Part},
    },
};

/// The snapshot and, per profile (`namespace/name`), what could not be resolved.
#[derive(Debug, Default)]
pub struct Built {
    pub snapshot: Snapshot,
    /// Problems per profile; a profile without an entry is complete. Content with a problem is
    /// withheld from the snapshot (a ZTP or SONiC document whole, the Cumulus script, one file),
    /// so a switch asking for it gets 404, never an error nor half a document.
    pub problems: BTreeMap<String, Vec<Problem>>,
    /// Profiles whose Cumulus script had CRLF line endings (served with LF).
    pub crlf_normalised: BTreeSet<String>,
    /// Per Switch (`namespace/name`): what its own values make fail in its profile's trial render
    /// (its device would get an error for that part; the profile's other devices are served), and
    /// its `osImage` when that is not Ready (its device gets no install image meanwhile).
    pub switch_problems: BTreeMap<String, Vec<SwitchProblem>>,
    /// The snapshot's device index (for the profiles' claims and conflicts).
    pub index: DeviceIndex,
}

/// Why one Switch's device does not get all its profile would give it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SwitchProblem {
    /// A part of its profile fails to render with this Switch's values.
    #[error("profile {profile}: {error}")]
    Render {
        /// `namespace/name` of the profile.
        profile: String,
        error: RenderError,
    },
    /// Its `spec.osImage` is missing or not Ready: its device gets no install image meanwhile.
    #[error("{0}")]
    OsImage(Problem),
}

impl SwitchProblem {
    /// The reason of the Event a Switch with this problem gets: the profile problem's reasons
    /// ([`TEMPLATE_ERROR`](super::problem::TEMPLATE_ERROR), `WaitingForImage`, …).
    pub fn reason(&self) -> &'static str {
        match self {
            SwitchProblem::Render { .. } => super::problem::TEMPLATE_ERROR,
            SwitchProblem::OsImage(p) => p.reason(),
        }
    }
}

/// A Switch as the snapshot holds it, when it changes what its device gets
/// ([`SwitchSnapshot::matters`]) and is not being deleted.
pub fn switch_snapshot(s: &Switch) -> Option<SwitchSnapshot> {
    let snap = SwitchSnapshot {
        namespace: s.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
        name: s.metadata.name.clone().unwrap_or_default(),
        created: s.metadata.creation_timestamp.clone(),
        serial_number: s.spec.serial_number.clone(),
        mac_address: s.spec.mac_address.as_deref().and_then(normalize_mac),
        model: s.spec.model.clone(),
        profile: s.spec.profile.clone(),
        os_image: s
            .spec
            .os_image
            .as_ref()
            .map(|name| format!("{}/{name}", s.metadata.namespace.as_deref().unwrap_or("default"))),
        hostname: s.spec.hostname.clone(),
        variables: s.spec.variables.clone(),
    };
    (s.metadata.deletion_timestamp.is_none() && snap.matters()).then_some(snap)
}

/// The snapshot's Switches ([`switch_snapshot`]), sorted by namespace/name.
pub fn switch_snapshots(switches: &[Arc<Switch>]) -> Vec<SwitchSnapshot> {
    let mut out: Vec<SwitchSnapshot> = switches.iter().filter_map(|s| switch_snapshot(s)).collect();
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    out
}

/// Per profile (position in `snapshot.profiles`): the Switches with values of their own whose
/// device it serves (pinned, or matched by what the Switch declares), as positions in
/// `snapshot.switches`.
fn switch_users(snapshot: &Snapshot, index: &DeviceIndex) -> BTreeMap<usize, Vec<usize>> {
    let mut users: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (pos, sw) in snapshot.switches.iter().enumerate().filter(|(_, s)| s.has_values()) {
        let id = DeviceIdentity::declared(&sw.serial_number, sw.mac_address.as_deref(), sw.model.as_deref());
        // Only the Switch that counts for its serial (the older of two naming it).
        if index.switch_of(&id) != Some(pos) {
            continue;
        }
        if let Some(m) = index.lookup(&id) {
            users.entry(m.profile).or_default().push(pos);
        }
    }
    users
}

struct Resolver<'a> {
    lookup: &'a dyn ObjectLookup,
    images: &'a [Arc<OsImage>],
    used_images: BTreeMap<String, ImageRef>,
}

impl Resolver<'_> {
    /// Resolves one piece of content of profile `ns`; `what` names it in messages.
    async fn content(&mut self, ns: &str, what: &str, c: &Content) -> Result<Resolved, Problem> {
        if let Some(text) = &c.inline {
            return self.text(what, text.clone(), c.template);
        }
        let (kind, r) = if let Some(r) = &c.config_map_key_ref {
            (Kind::ConfigMap, r)
        } else if let Some(r) = &c.secret_key_ref {
            (Kind::Secret, r)
        } else if let Some(r) = &c.os_image_ref {
            return self.image(ns, what, &r.name).map(Resolved::Image);
        } else {
            return Err(Problem::invalid(what, "no content source set"));
        };
        let text = self.lookup.text(kind, ns, r).await.map_err(|e| {
            let (what, object) = (what.to_owned(), format!("{ns}/{}", r.name));
            match e {
                LookupError::NotFound { .. } => Problem::NotFound { what, kind: kind.as_str(), object },
                LookupError::NoKey { key, .. } => {
                    Problem::MissingKey { what, kind: kind.as_str(), object, key }
                }
                LookupError::NotUtf8 { .. } => Problem::invalid(&what, e.to_string()),
                LookupError::Backend { .. } => Problem::Lookup { what, message: e.to_string() },
            }
        })?;
        self.text(what, text, c.template)
    }

    fn text(&self, what: &str, text: String, template: bool) -> Result<Resolved, Problem> {
        let t = Text { text, template };
        check_template(&t, what).map_err(Problem::Template)?;
        Ok(Resolved::Text(t))
    }

    /// An OsImage of namespace `ns` that is Ready; returns its key in the snapshot's images.
    /// One that is not Ready yet waits; one that failed or is being deleted needs a human.
    fn image(&mut self, ns: &str, what: &str, name: &str) -> Result<String, Problem> {
        let key = format!("{ns}/{name}");
        let image = self.images.iter().find(|i| object_name(&i.metadata) == key).ok_or_else(|| {
            Problem::NotFound { what: what.to_owned(), kind: "OsImage", object: key.clone() }
        })?;
        // Deletion bumps a custom resource's generation: an image whose deletion waits for its
        // profiles (the controller keeps its finalizer) is still stored and served.
        let deleting = image.metadata.deletion_timestamp.is_some();
        let current =
            image.status.as_ref().filter(|s| s.observed_generation == image.metadata.generation || deleting);
        let not_ready =
            |state: String| Problem::ImageNotReady { what: what.to_owned(), image: key.clone(), state };
        let failed =
            |state: String| Problem::ImageFailed { what: what.to_owned(), image: key.clone(), state };
        let Some(status) = current else {
            return Err(not_ready("its status is not of its current spec yet".into()));
        };
        match (status.phase, &status.artifact) {
            (Some(OsImagePhase::Ready), Some(artifact)) => {
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
            (Some(OsImagePhase::Deleting), _) => Err(failed("is being deleted".into())),
            _ if deleting => Err(failed("is being deleted".into())),
            (phase, _) => {
                let stalled = find_condition(&status.conditions, ConditionType::Stalled)
                    .filter(|c| c.status == ConditionStatus::True.as_str());
                if phase == Some(OsImagePhase::Failed) || stalled.is_some() {
                    let why = stalled
                        .map(|c| c.message.clone())
                        .or_else(|| status.message.clone())
                        .unwrap_or_else(|| "no message".into());
                    return Err(failed(format!("failed: {why}")));
                }
                // Phase and the Reconciling reason only: they change with the phase, which wakes
                // the snapshot loop; progress does not (see `kubectl get osimage` for it).
                let phase = phase.map_or_else(|| "not started".to_owned(), |p| format!("{p:?}"));
                let reason = find_condition(&status.conditions, ConditionType::Reconciling)
                    .filter(|c| c.status == ConditionStatus::True.as_str())
                    .map(|c| format!(", {}", c.reason))
                    .unwrap_or_default();
                Err(not_ready(format!("{phase}{reason}")))
            }
        }
    }

    /// The ZTP JSON description of profile `ns` (`spec.ztp`), its contents resolved; what is wrong
    /// with it goes to `problems`.
    async fn ztp(&mut self, ns: &str, ztp: &ZtpSpec, problems: &mut Vec<Problem>) -> ZtpSnapshot {
        let mut sections = Vec::new();
        for (i, section) in ztp.sections.iter().enumerate() {
            let what = format!("ztp.sections[{i}]");
            let resolved = match &section.content {
                Some(c) => match self.content(ns, &what, c).await {
                    Ok(res) => {
                        if section.kind == ZtpSectionKind::Image && !matches!(res, Resolved::Image(_)) {
                            problems.push(Problem::invalid(&what, "an image section needs an osImageRef"));
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
        ZtpSnapshot {
            sections,
            restart_ztp_no_config: ztp.restart_ztp_no_config,
            restart_ztp_on_failure: ztp.restart_ztp_on_failure,
        }
    }

    /// The SONiC ZTP JSON description of profile `ns` (`spec.sonic`), its contents resolved;
    /// what is wrong with it goes to `problems`.
    async fn sonic(
        &mut self,
        ns: &str,
        spec_sonic: &SonicSpec,
        problems: &mut Vec<Problem>,
    ) -> SonicSnapshot {
        let mut sections = Vec::new();
        for (i, declared) in spec_sonic.sections.iter().enumerate() {
            let what = format!("sonic.sections[{i}]");
            if declared.plugins_set() != 1 {
                problems.push(Problem::invalid(
                    &what,
                    "set exactly one of firmware, configdbJson, connectivityCheck, snmp, download or plugin",
                ));
            }
            let (section, contents) = sonic::contents(declared);
            let mut parts = BTreeMap::new();
            for (name, c) in contents {
                let part_what = format!("{what}.{name}");
                match self.content(ns, &part_what, &c).await {
                    Ok(res) => {
                        if let Some(p) = sonic::part_problem(&name, &res) {
                            problems.push(Problem::invalid(&what, p));
                        }
                        parts.insert(name, res);
                    }
                    Err(e) => problems.push(e),
                }
            }
            sections.push(SonicSectionSnapshot { section, parts });
        }
        SonicSnapshot {
            sections,
            restart_ztp_no_config: spec_sonic.restart_ztp_no_config,
            restart_ztp_on_failure: spec_sonic.restart_ztp_on_failure,
            config_fallback: spec_sonic.config_fallback,
        }
    }
}

/// A part of a profile (the ZTP or SONiC document, the Cumulus script) is withheld from the
/// snapshot when resolving it found `problems`.
fn withhold_with_problems(part: Part, problems: &[Problem], withheld: &mut BTreeSet<Part>) {
    if !problems.is_empty() {
        withheld.insert(part);
    }
}

/// Builds the snapshot of `profiles` and `switches` (any order; the snapshot is sorted by
/// namespace/name).
pub async fn build(
    profiles: &[Arc<SwitchProfile>],
    switches: &[Arc<Switch>],
    images: &[Arc<OsImage>],
    lookup: &dyn ObjectLookup,
) -> Built {
    let mut sorted: Vec<&Arc<SwitchProfile>> =
        profiles.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
    sorted.sort_by_key(|p| object_name(&p.metadata));
    let mut r = Resolver { lookup, images, used_images: BTreeMap::new() };
    let mut built = Built::default();

    // Per profile (in snapshot order): its problems and the parts they withhold.
    let mut found: Vec<(Vec<Problem>, BTreeSet<Part>)> = Vec::new();
    for p in sorted {
        let key = object_name(&p.metadata);
        let ns = p.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let mut problems = Vec::new();
        let mut withheld = BTreeSet::new();
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
                None => problems
                    .push(Problem::invalid("match.macAddresses", format!("{mac:?} is not a MAC address"))),
            }
        }
        if let Some(onie) = &spec.onie {
            for (what, image, key) in [
                ("onie.installImage", &onie.install_image, &mut snap.onie_install),
                ("onie.updateImage", &onie.update_image, &mut snap.onie_update),
            ] {
                if let Some(i) = image {
                    match r.image(&ns, what, &i.name) {
                        Ok(k) => *key = Some(k),
                        Err(e) => problems.push(e),
                    }
                }
            }
        }
        if let Some(ztp) = &spec.ztp {
            let before = problems.len();
            snap.ztp = Some(r.ztp(&ns, ztp, &mut problems).await);
            withhold_with_problems(Part::Ztp, &problems[before..], &mut withheld);
        }
        if let Some(spec_sonic) = &spec.sonic {
            let before = problems.len();
            snap.sonic = Some(r.sonic(&ns, spec_sonic, &mut problems).await);
            withhold_with_problems(Part::Sonic, &problems[before..], &mut withheld);
        }
        if let Some(cumulus) = &spec.cumulus {
            let before = problems.len();
            match r.content(&ns, "cumulus.script", &cumulus.script).await {
                Ok(Resolved::Text(mut t)) => {
                    if has_crlf(&t.text) {
                        t.text = t.text.replace("\r\n", "\n").replace('\r', "\n");
                        built.crlf_normalised.insert(key.clone());
                    }
                    if !t.template && !t.text.contains("CUMULUS-AUTOPROVISIONING") {
                        problems.push(Problem::invalid(
                            "cumulus.script",
                            "the script must contain CUMULUS-AUTOPROVISIONING",
                        ));
                    }
                    snap.cumulus_script = Some(t);
                }
                Ok(Resolved::Image(_)) => {
                    problems.push(Problem::invalid("cumulus.script", "must be text, not an image"))
                }
                Err(e) => problems.push(e),
            }
            withhold_with_problems(Part::Cumulus, &problems[before..], &mut withheld);
        }
        for (name, c) in &spec.files {
            match r.content(&ns, &format!("files.{name}"), c).await {
                Ok(res) => {
                    snap.files.insert(name.clone(), res);
                }
                Err(e) => problems.push(e),
            }
        }
        found.push((problems, withheld));
        built.snapshot.profiles.push(snap);
    }
    built.snapshot.switches = switch_snapshots(switches);
    // A Switch's `osImage` is in the images when Ready; else its device gets no install image.
    for sw in &built.snapshot.switches {
        let Some((_, name)) = sw.os_image.as_deref().and_then(|key| key.split_once('/')) else { continue };
        if let Err(problem) = r.image(&sw.namespace, "osImage", name) {
            let key = format!("{}/{}", sw.namespace, sw.name);
            built.switch_problems.entry(key).or_default().push(SwitchProblem::OsImage(problem));
        }
    }
    built.snapshot.images = r.used_images;
    // The trial render, once every image the profiles use is known; then what has a problem is
    // withheld. A profile Switches with values of their own use is tried for each of them too: a
    // part is withheld only when it fails for its own sample device and for every such Switch
    // (the template is broken); one failing for some Switches is their problem.
    let images_only = Snapshot { images: built.snapshot.images.clone(), ..Default::default() };
    // Keys and pins only: what the trial withholds below does not change it.
    built.index = DeviceIndex::build(&built.snapshot);
    let users = switch_users(&built.snapshot, &built.index);
    let mut trials = Vec::new();
    for (pos, (snap, (problems, _))) in built.snapshot.profiles.iter().zip(&found).enumerate() {
        let switches: Vec<&SwitchSnapshot> =
            users.get(&pos).into_iter().flatten().map(|&sw| &built.snapshot.switches[sw]).collect();
        let verdict = trial::judge(snap, &switches, &images_only, problems.is_empty());
        let profile = format!("{}/{}", snap.namespace, snap.name);
        for (switch, errors) in verdict.switches {
            // A pinned osImage that is not Ready is its own problem (above), not a render's.
            let pin_missing = |e: &RenderError| matches!(e, RenderError::MissingImage { image, .. } if switch.os_image.as_ref() == Some(image));
            let theirs = errors
                .into_iter()
                .filter(|e| !pin_missing(e))
                .map(|error| SwitchProblem::Render { profile: profile.clone(), error });
            built
                .switch_problems
                .entry(format!("{}/{}", switch.namespace, switch.name))
                .or_default()
                .extend(theirs);
        }
        trials.push(verdict.profile);
    }
    for ((snap, (mut problems, mut withheld)), failures) in
        built.snapshot.profiles.iter_mut().zip(found).zip(trials)
    {
        let serial = trial::sample_device(snap, None, Family::Unknown).serial.unwrap_or_default();
        for (part, error) in failures {
            // What is withheld already has its problem; rendering it again would only repeat it.
            if withheld.contains(&part) {
                continue;
            }
            problems.push(Problem::Trial { error, serial: serial.clone() });
            withheld.insert(part);
        }
        for part in withheld {
            match part {
                Part::Ztp => snap.ztp = None,
                Part::Sonic => snap.sonic = None,
                Part::Cumulus => snap.cumulus_script = None,
                Part::File(name) => drop(snap.files.remove(&name)),
            }
        }
        if !problems.is_empty() {
            built.problems.insert(format!("{}/{}", snap.namespace, snap.name), problems);
        }
    }
    built.snapshot.format = SNAPSHOT_FORMAT;
    set_version(&mut built.snapshot);
    built
}

/// Sets the snapshot's `version`: a content hash of the rest, the SHA-256 of its JSON with an
/// empty `version`, streamed into the hasher (no copy of the snapshot, no JSON in memory: at
/// 5,000 Switches they were ~4 MiB at every rebuild).
pub fn set_version(snapshot: &mut Snapshot) {
    struct Hashing(sha2::Sha256);
    impl std::io::Write for Hashing {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            sha2::Digest::update(&mut self.0, bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    snapshot.version.clear();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, Hashing(sha2::Sha256::default()));
    serde_json::to_writer(&mut out, &*snapshot).expect("a snapshot always serialises");
    let hasher = out.into_inner().map_err(|_| ()).expect("hashing never fails").0;
    snapshot.version = Sha256Digest::finish(hasher).to_string()[..16].to_owned();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The streamed hash is the one of the snapshot's JSON with an empty version (what the
    /// version always was: published snapshots keep their version).
    #[test]
    fn version_is_the_hash_of_the_json_without_version() {
        let mut snapshot: Snapshot = serde_json::from_value(serde_json::json!({
            "format": 1, "version": "x", "profiles": [], "images": {},
            "switches": [{"namespace": "n", "name": "s", "serialNumber": "SN1", "variables": {"a": "b"}}],
        }))
        .expect("a snapshot");
        for _ in 0..2 {
            let mut unversioned = snapshot.clone();
            unversioned.version = String::new();
            let bytes = serde_json::to_vec(&unversioned).expect("json");
            set_version(&mut snapshot);
            assert_eq!(snapshot.version, Sha256Digest::of(&bytes).to_string()[..16]);
            snapshot.switches.clear();
        }
    }
    use crate::{
        lookup::{Data, LookupError},
        profile::problem::{
            IMAGE_FAILED, INVALID_CONTENT, Severity, TEMPLATE_ERROR, WAITING_FOR_IMAGE, WAITING_FOR_REFERENCE,
        },
    };

    /// ConfigMaps in memory; no Secrets.
    struct Maps(BTreeMap<String, BTreeMap<String, Vec<u8>>>);

    #[async_trait::async_trait]
    impl ObjectLookup for Maps {
        async fn config_map(&self, _namespace: &str, name: &str) -> Result<Option<Data>, LookupError> {
            Ok(self.0.get(name).cloned())
        }
        async fn secret(&self, _namespace: &str, _name: &str) -> Result<Option<Data>, LookupError> {
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
        let built = build(&[good, bad], &[], &[], &maps).await;
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

        let problems: Vec<String> = built
            .problems
            .get("net/bad")
            .expect("bad has problems")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            problems,
            [
                "sonic.sections[0].install: OsImage net/missing not found".to_owned(),
                "sonic.sections[1]: configdbJson.content is not a JSON object".to_owned(),
                "sonic.sections[2]: set exactly one of firmware, configdbJson, connectivityCheck, snmp, download or plugin"
                    .to_owned(),
            ]
        );
        // A SONiC document with a problem is withheld whole: a switch gets 404, not half of it.
        assert_eq!(built.snapshot.profiles[0].name, "bad");
        assert_eq!(built.snapshot.profiles[0].sonic, None);
    }

    fn image(name: &str, generation: i64, status: serde_json::Value) -> Arc<OsImage> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "ztp.netops.dev/v1alpha1", "kind": "OsImage",
                "metadata": {"name": name, "namespace": "net", "generation": generation},
                "spec": {"platform": "p", "version": "1", "source": {"url": {"url": "http://h/x.bin"}}, "sha256": "ab".repeat(32)},
                "status": status,
            }))
            .expect("image"),
        )
    }

    fn kinds(built: &Built, key: &str) -> Vec<(Severity, &'static str, String)> {
        built
            .problems
            .get(key)
            .map(|ps| ps.iter().map(|p| (p.severity(), p.reason(), p.to_string())).collect())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn an_image_still_fetching_waits_and_a_failed_one_needs_a_human() {
        let maps = Maps(BTreeMap::new());
        let uses = |name: &str, img: &str| {
            profile(&format!(
                "apiVersion: ztp.netops.dev/v1alpha1\nkind: SwitchProfile\nmetadata: {{name: {name}, namespace: net}}\n\
                 spec: {{match: {{serialNumbers: [{name}]}}, onie: {{installImage: {{name: {img}}}}}}}\n"
            ))
        };
        // An image whose status has one condition, and one stored for observed generation 1.
        let with = |phase: &str, type_: &str, reason: &str, message: &str| {
            serde_json::json!({"observedGeneration": 1, "phase": phase, "conditions": [{"type": type_,
                "status": "True", "reason": reason, "message": message, "lastTransitionTime": "2026-01-01T00:00:00Z"}]})
        };
        let stored = serde_json::json!({"observedGeneration": 1, "phase": "Ready",
            "artifact": {"path": "p/1/x.bin", "sha256": "ab".repeat(32), "size": 1}});
        let images = [
            image("fetching", 1, with("Fetching", "Reconciling", "Fetching", "1 MiB")),
            image("stale", 2, stored.clone()),
            image("failed", 1, with("Failed", "Stalled", "SourceNotFound", "404 from http://h/x.bin")),
            image("ready", 1, stored),
        ];
        let profiles = [
            uses("a", "fetching"),
            uses("b", "stale"),
            uses("c", "failed"),
            uses("d", "ready"),
            uses("e", "absent"),
        ];
        let built = build(&profiles, &[], &images, &maps).await;
        assert_eq!(
            kinds(&built, "net/a"),
            [(
                Severity::Waiting,
                WAITING_FOR_IMAGE,
                "onie.installImage: OsImage net/fetching is not Ready yet (Fetching, Fetching)".into()
            )]
        );
        assert_eq!(kinds(&built, "net/b")[0].0, Severity::Waiting);
        assert_eq!(
            kinds(&built, "net/c"),
            [(
                Severity::NeedsHuman,
                IMAGE_FAILED,
                "onie.installImage: OsImage net/failed failed: 404 from http://h/x.bin".into()
            )]
        );
        assert_eq!(kinds(&built, "net/d"), []);
        assert_eq!(
            kinds(&built, "net/e"),
            [(
                Severity::Waiting,
                WAITING_FOR_REFERENCE,
                "onie.installImage: OsImage net/absent not found".into()
            )]
        );
    }

    #[tokio::test]
    async fn a_missing_key_needs_a_human_a_missing_object_waits_and_a_bad_template_is_withheld() {
        let maps =
            Maps(BTreeMap::from([("cm".to_owned(), BTreeMap::from([("a".to_owned(), b"x".to_vec())]))]));
        let p = profile(
            r#"
apiVersion: ztp.netops.dev/v1alpha1
kind: SwitchProfile
metadata: {name: p, namespace: net}
spec:
  match: {serialNumbers: ["SN1"]}
  hostname: leaf01
  files:
    good: {inline: "{{ hostname }} {{ serial }}", template: true}
    nokey: {configMapKeyRef: {name: cm, key: b}}
    nocm: {configMapKeyRef: {name: other, key: a}}
    unknown: {inline: "site {{ variables.site }}", template: true}
"#,
        );
        let built = build(&[p], &[], &[], &maps).await;
        let got = kinds(&built, "net/p");
        assert_eq!(got.len(), 3, "{got:#?}");
        assert_eq!(
            got[0],
            (Severity::Waiting, WAITING_FOR_REFERENCE, "files.nocm: ConfigMap net/other not found".into())
        );
        assert_eq!(
            got[1],
            (Severity::NeedsHuman, INVALID_CONTENT, r#"files.nokey: ConfigMap net/cm has no key "b""#.into())
        );
        assert_eq!((got[2].0, got[2].1), (Severity::NeedsHuman, TEMPLATE_ERROR));
        assert!(got[2].2.starts_with("files.unknown: undefined value"), "{}", got[2].2);
        assert!(got[2].2.contains("`variables.site` is undefined"), "{}", got[2].2);
        assert!(got[2].2.ends_with("(trial render for a sample device, serial SN1)"), "{}", got[2].2);
        // Only the good file is served; the others are 404 for the switch, never a 500.
        let files: Vec<&String> = built.snapshot.profiles[0].files.keys().collect();
        assert_eq!(files, ["good"]);
    }

    fn a_switch(yaml: &str) -> Arc<Switch> {
        Arc::new(yaml_serde::from_str(yaml).expect("switch"))
    }

    #[tokio::test]
    async fn a_profile_per_model_renders_with_each_switchs_values_and_a_switch_that_lacks_one_is_told() {
        let maps = Maps(BTreeMap::new());
        let p = profile(
            r#"
apiVersion: ztp.netops.dev/v1alpha1
kind: SwitchProfile
metadata: {name: sn2410, namespace: net}
spec:
  match: {models: ["sn2410"]}
  files:
    loopback: {inline: "{{ hostname }} {{ variables.loopback }}", template: true}
    broken: {inline: "{{ variables.loopback | nosuchfilter }}", template: true}
"#,
        );
        let leaf = |name: &str, serial: &str, values: &str| {
            a_switch(&format!(
                "{{apiVersion: ztp.netops.dev/v1alpha1, kind: Switch, metadata: {{name: {name}, namespace: net}}, \
                 spec: {{serialNumber: {serial}, model: sn2410, {values}}}}}"
            ))
        };
        let switches = [
            leaf("leaf17", "MT17", "hostname: leaf17, variables: {loopback: 10.0.0.17}"),
            leaf("leaf18", "MT18", "hostname: leaf18"),
            // Declares its model only: in the snapshot, nothing to try.
            leaf("leaf19", "MT19", "reprovision: x"),
        ];
        let built = build(&[p], &switches, &[], &maps).await;
        // The file every Switch but one renders is served; its profile is fine (a device without
        // values of its own gets its error when it asks). The filter no device can render is
        // withheld, as before.
        let files: Vec<&String> = built.snapshot.profiles[0].files.keys().collect();
        assert_eq!(files, ["loopback"]);
        let got = kinds(&built, "net/sn2410");
        assert_eq!(got.len(), 1, "{got:#?}");
        assert!(got[0].2.starts_with("files.broken: "), "{}", got[0].2);
        // The Switch that lacks the variable is told, naming the profile and the variable.
        let told: Vec<&String> = built.switch_problems.keys().collect();
        assert_eq!(told, ["net/leaf18"]);
        let msg: Vec<String> = built.switch_problems["net/leaf18"].iter().map(ToString::to_string).collect();
        assert!(
            msg.iter().any(|m| m.starts_with("profile net/sn2410: files.loopback: undefined value")),
            "{msg:?}"
        );
        assert!(msg.iter().any(|m| m.contains("`variables.loopback` is undefined")), "{msg:?}");
        // The snapshot holds the Switches, sorted; one naming its serial only is not there.
        let names: Vec<&str> = built.snapshot.switches.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["leaf17", "leaf18", "leaf19"]);
        let bare = a_switch(
            "{apiVersion: ztp.netops.dev/v1alpha1, kind: Switch, metadata: {name: bare, namespace: net}, \
             spec: {serialNumber: MT20, reprovision: x, hold: true}}",
        );
        assert!(switch_snapshots(&[bare]).is_empty());
    }

    /// A Switch's `osImage` is in the snapshot (the Switch, and the image once Ready); one not
    /// Ready is the Switch's problem (a Warning Event), never its profile's.
    #[tokio::test]
    async fn a_switchs_os_image_is_in_the_snapshot_once_ready_and_its_problem_until_then() {
        let maps = Maps(BTreeMap::new());
        let p = profile(
            "{apiVersion: ztp.netops.dev/v1alpha1, kind: SwitchProfile, metadata: {name: leafs, namespace: net}, \
             spec: {match: {models: [sn2410]}, hostname: h, files: {a: {inline: '{{ hostname }}', template: true}}}}",
        );
        let pinned = |name: &str, serial: &str, os_image: &str| {
            a_switch(&format!(
                "{{apiVersion: ztp.netops.dev/v1alpha1, kind: Switch, metadata: {{name: {name}, namespace: net}}, \
                 spec: {{serialNumber: {serial}, osImage: {os_image}, hostname: {name}}}}}"
            ))
        };
        let stored = serde_json::json!({"observedGeneration": 1, "phase": "Ready",
            "artifact": {"path": "p/2/x.bin", "sha256": "cd".repeat(32), "size": 2}});
        let fetching = serde_json::json!({"observedGeneration": 1, "phase": "Fetching"});
        let images = [image("nos-2", 1, stored), image("nos-3", 1, fetching)];
        let switches = [
            pinned("leaf1", "SN1", "nos-2"),
            pinned("leaf2", "SN2", "nos-3"),
            pinned("leaf3", "SN3", "nos-4"),
        ];
        let built = build(&[p], &switches, &images, &maps).await;
        let pins: Vec<Option<&str>> = built.snapshot.switches.iter().map(|s| s.os_image.as_deref()).collect();
        assert_eq!(pins, [Some("net/nos-2"), Some("net/nos-3"), Some("net/nos-4")]);
        let stored: Vec<&String> = built.snapshot.images.keys().collect();
        assert_eq!(stored, ["net/nos-2"], "only the Ready one");
        assert_eq!(built.snapshot.images["net/nos-2"].path, "p/2/x.bin");
        assert!(built.problems.is_empty(), "the profile is fine: {:?}", built.problems);
        let told: BTreeMap<&str, Vec<(&str, String)>> = built
            .switch_problems
            .iter()
            .map(|(k, v)| (k.as_str(), v.iter().map(|p| (p.reason(), p.to_string())).collect()))
            .collect();
        assert_eq!(
            told,
            BTreeMap::from([
                (
                    "net/leaf2",
                    vec![(
                        WAITING_FOR_IMAGE,
                        "osImage: OsImage net/nos-3 is not Ready yet (Fetching)".to_owned()
                    )]
                ),
                (
                    "net/leaf3",
                    vec![(WAITING_FOR_REFERENCE, "osImage: OsImage net/nos-4 not found".to_owned())]
                ),
            ])
        );
    }

    #[tokio::test]
    async fn a_pinned_switch_is_in_the_snapshot_and_tried_with_the_profile_it_pins() {
        let maps = Maps(BTreeMap::new());
        let model = profile(
            "{apiVersion: ztp.netops.dev/v1alpha1, kind: SwitchProfile, metadata: {name: model, namespace: net}, \
             spec: {match: {models: [sn2410]}, files: {a: {inline: ok}}}}",
        );
        let special = profile(
            "{apiVersion: ztp.netops.dev/v1alpha1, kind: SwitchProfile, metadata: {name: special, namespace: net}, \
             spec: {files: {a: {inline: '{{ variables.rack }}', template: true}}}}",
        );
        let pinned = a_switch(
            "{apiVersion: ztp.netops.dev/v1alpha1, kind: Switch, metadata: {name: leaf01, namespace: net}, \
             spec: {serialNumber: MT01, model: sn2410, profile: special, macAddress: 0C-42-A1-00-00-01}}",
        );
        let built = build(&[model, special.clone()], std::slice::from_ref(&pinned), &[], &maps).await;
        assert_eq!(built.snapshot.switches.len(), 1);
        assert_eq!(built.snapshot.switches[0].mac_address.as_deref(), Some("0c:42:a1:00:00:01"));
        // No values: nothing to try but the profile itself, which fails for every device.
        assert_eq!(kinds(&built, "net/special").len(), 1);
        let mut with_rack = (*pinned).clone();
        with_rack.spec.variables.insert("rack".into(), "r1".into());
        let built = build(&[special], &[Arc::new(with_rack)], &[], &maps).await;
        assert_eq!(kinds(&built, "net/special"), []);
        assert!(built.switch_problems.is_empty());
        assert_eq!(built.snapshot.profiles[0].files.len(), 1);
    }
}

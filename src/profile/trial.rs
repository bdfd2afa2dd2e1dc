//! The trial render: when the snapshot is built, every template of a profile is rendered for a
//! sample device, with the same functions, environment and strictness the server uses when a
//! switch asks, so that an unknown variable, an unknown filter, printing an unset `hostname`, a
//! `config_db.json` that does not render to a JSON object or a Cumulus script that renders
//! without its marker makes the profile `Stalled` (reason `TemplateError`) at once, instead of a
//! switch getting an error when it boots.
//!
//! The sample device is one the profile matches: its first serial number, MAC address and model
//! from `match` (sample values where the profile does not name one), every other fact the
//! switches send set to a sample value, so a fact some device does not send never makes the
//! trial fail (`{% if mac %}` is for those). The profile's own `hostname` and `variables` are
//! used as they are. What the trial cannot see: a branch the sample device does not take
//! (`{% if model == "…" %}` for another model) is only checked for syntax.
//!
//! A profile that Switches with values of their own use (a hostname, variables: the "profile per
//! model, Switch per device" layout) is also trial-rendered once per such Switch, as its device
//! (its serial, MAC and model where it declares them) with its values merged over the profile's
//! ([`super::build`] decides what a failure there withholds).

use super::{
    identity::{DeviceIdentity, Family},
    render::{
        RenderContext, RenderError, cumulus_script, render_text_named, section_content, section_key, ztp_json,
    },
    snapshot::{ProfileSnapshot, Resolved, Snapshot, SwitchSnapshot},
    sonic,
};

/// Serial number of the sample device when the profile names none.
pub const SAMPLE_SERIAL: &str = "SAMPLE-SERIAL";
/// MAC address of the sample device when the profile names none (RFC 7042's documentation range).
pub const SAMPLE_MAC: &str = "00:00:5e:00:53:00";
/// Model of the sample device when the profile names none.
pub const SAMPLE_MODEL: &str = "x86_64-sample_switch-r0";
/// `server_url` of the trial render.
pub const SAMPLE_SERVER_URL: &str = "http://ztp.example.invalid";
/// `report_token` of the trial render (a server without a report key has none: a template that
/// prints it fails there, for the device, with a message saying so).
pub const SAMPLE_REPORT_TOKEN: &str = "sample-report-token";

/// A part of the profile's served content, as the snapshot holds it: a trial failure withholds
/// that part (see [`super::build`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    /// The NVOS ZTP JSON and its sections.
    Ztp,
    /// The SONiC ZTP JSON and its parts.
    Sonic,
    /// The Cumulus script.
    Cumulus,
    /// One named file.
    File(String),
}

/// The sample device of `profile`, asking as `family`: `switch`'s device when given (see the
/// module documentation).
pub fn sample_device(
    profile: &ProfileSnapshot,
    switch: Option<&SwitchSnapshot>,
    family: Family,
) -> DeviceIdentity {
    let serial = switch.map(|s| s.serial_number.as_str());
    let serial = serial.or(profile.serial_numbers.first().map(String::as_str)).unwrap_or(SAMPLE_SERIAL);
    let mac = switch.and_then(|s| s.mac_address.as_deref());
    let mac = mac.or(profile.mac_addresses.first().map(String::as_str)).unwrap_or(SAMPLE_MAC);
    let model = switch.and_then(|s| s.model.as_deref());
    let model = model.or(profile.models.first().map(String::as_str)).unwrap_or(SAMPLE_MODEL);
    let hostname = switch.and_then(|s| s.hostname.as_ref()).or(profile.hostname.as_ref());
    let hostname = hostname.cloned().unwrap_or_else(|| "sample".into());
    DeviceIdentity {
        family,
        serial: Some(serial.to_owned()),
        mac: Some(mac.to_owned()),
        models: vec![model.to_owned()],
        onie_operation: Some("os-install".into()),
        onie_arch: Some("x86_64".into()),
        onie_machine: Some("sample_switch".into()),
        onie_machine_rev: Some("0".into()),
        onie_vendor_id: Some("0".into()),
        os_version: Some("0.0.0".into()),
        container_name: Some("sample".into()),
        element_name: Some(hostname.clone()),
        host_name: Some(hostname),
    }
}

/// What templates see in the trial: the sample device, the profile (and Switch), the sample URL
/// and token.
fn sample_context<'a>(
    device: &'a DeviceIdentity,
    profile: &'a ProfileSnapshot,
    switch: Option<&'a SwitchSnapshot>,
) -> RenderContext<'a> {
    RenderContext {
        device,
        profile,
        switch,
        server_url: SAMPLE_SERVER_URL,
        report_token: Some(SAMPLE_REPORT_TOKEN.into()),
    }
}

/// Renders every template of `profile` for its sample device (`switch`'s device, with its values,
/// when given); returns each failure with the part it withholds. Whole documents (the ZTP JSON)
/// are built too when `documents` is true (the caller passes false while the profile has other
/// problems, e.g. an image not Ready yet, which the document would only repeat). Errors do not
/// name the profile (the status is its own).
pub fn trial_render(
    profile: &ProfileSnapshot,
    switch: Option<&SwitchSnapshot>,
    snapshot: &Snapshot,
    documents: bool,
) -> Vec<(Part, RenderError)> {
    let mut failures = Vec::new();
    let with = |family: Family| sample_device(profile, switch, family);
    let strip = |e: RenderError| e.with_profile("");
    if let Some(ztp) = &profile.ztp {
        let device = with(Family::Nvos);
        let ctx = sample_context(&device, profile, switch);
        for (i, s) in ztp.sections.iter().enumerate() {
            if let Err(e) = section_content(&ctx, ztp, &section_key(i, s.kind())) {
                failures.push((Part::Ztp, strip(e)));
            }
        }
        if documents && failures.is_empty() {
            let url = |k: &str| format!("{SAMPLE_SERVER_URL}/{k}");
            if let Err(e) =
                ztp_json(&ctx, snapshot, ztp, &url, &|i| format!("{SAMPLE_SERVER_URL}/{}", i.path))
            {
                failures.push((Part::Ztp, strip(e)));
            }
        }
    }
    if let Some(s) = &profile.sonic {
        let device = with(Family::Sonic);
        let ctx = sample_context(&device, profile, switch);
        for (i, section) in s.sections.iter().enumerate() {
            let key = sonic::section_key(i, &section.section);
            for name in section.parts.keys() {
                if let Err(e) = sonic::part_content(&ctx, s, &key, name) {
                    failures.push((Part::Sonic, strip(e)));
                }
            }
        }
        if documents && !failures.iter().any(|(p, _)| *p == Part::Sonic) {
            let part = |k: &str, n: &str| format!("{SAMPLE_SERVER_URL}/{k}/{n}");
            let image = |i: &super::snapshot::ImageRef| format!("{SAMPLE_SERVER_URL}/{}", i.path);
            if let Err(e) = sonic::document(&ctx, snapshot, s, &sonic::Urls { part: &part, image: &image }) {
                failures.push((Part::Sonic, strip(e)));
            }
        }
    }
    if let Some(script) = &profile.cumulus_script {
        let device = with(Family::Cumulus);
        let ctx = sample_context(&device, profile, switch);
        if let Err(e) = cumulus_script(script, &ctx) {
            failures.push((Part::Cumulus, strip(e)));
        }
    }
    let device = with(Family::RtBrick);
    let ctx = sample_context(&device, profile, switch);
    for (name, content) in &profile.files {
        if let Resolved::Text(t) = content
            && let Err(e) = render_text_named(t, &ctx, &format!("files.{name}"))
        {
            failures.push((Part::File(name.clone()), strip(e)));
        }
    }
    failures
}

/// What a profile's trial found: the failures that are the profile's (each withholds its part)
/// and, per Switch, what fails only with that Switch's values.
#[derive(Debug)]
pub struct Verdict<'a> {
    pub profile: Vec<(Part, RenderError)>,
    pub switches: Vec<(&'a SwitchSnapshot, Vec<RenderError>)>,
}

/// Trial-renders `profile` for its sample device and for each of `switches` (the Switches with
/// values of their own whose device it serves). A part is the profile's failure only when it
/// fails for the sample device and for every Switch (the template is broken); a part that
/// renders for some is not withheld, and each Switch it fails for is told (a variable only the
/// others set).
pub fn judge<'a>(
    profile: &ProfileSnapshot,
    switches: &[&'a SwitchSnapshot],
    snapshot: &Snapshot,
    documents: bool,
) -> Verdict<'a> {
    let own = trial_render(profile, None, snapshot, documents);
    let mut everywhere: Vec<Part> = own.iter().map(|(part, _)| part.clone()).collect();
    let mut theirs = Vec::new();
    for &switch in switches {
        let failed = trial_render(profile, Some(switch), snapshot, documents);
        everywhere.retain(|part| failed.iter().any(|(p, _)| p == part));
        theirs.push((switch, failed));
    }
    let switches = theirs
        .into_iter()
        .map(|(switch, failed)| {
            let errors = failed.into_iter().filter(|(part, _)| !everywhere.contains(part)).map(|(_, e)| e);
            (switch, errors.collect::<Vec<_>>())
        })
        .filter(|(_, errors)| !errors.is_empty())
        .collect();
    Verdict { profile: own.into_iter().filter(|(part, _)| everywhere.contains(part)).collect(), switches }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::profile::snapshot::{
        SonicSectionSnapshot, SonicSnapshot, Text, ZtpSectionSnapshot, ZtpSnapshot,
    };

    fn template(s: &str) -> Resolved {
        Resolved::Text(Text { text: s.into(), template: true })
    }

    fn profile() -> ProfileSnapshot {
        ProfileSnapshot {
            namespace: "net".into(),
            name: "leaf".into(),
            serial_numbers: vec!["SN-7".into()],
            variables: BTreeMap::from([("site".into(), "par1".into())]),
            ..Default::default()
        }
    }

    #[test]
    fn the_sample_device_is_one_the_profile_matches_with_every_fact_set() {
        let p = profile();
        let d = sample_device(&p, None, Family::Sonic);
        assert_eq!(d.serial.as_deref(), Some("SN-7"));
        assert_eq!(d.mac.as_deref(), Some(SAMPLE_MAC));
        assert_eq!(d.model(), Some(SAMPLE_MODEL));
        let by_model = ProfileSnapshot { models: vec!["Accton-AS7726".into()], ..Default::default() };
        let d = sample_device(&by_model, None, Family::Onie);
        assert_eq!((d.serial.as_deref(), d.model()), (Some(SAMPLE_SERIAL), Some("Accton-AS7726")));
        // Every fact any family sends is set: printing one never fails the trial.
        let mut p = profile();
        p.files.insert(
            "all".into(),
            template(
                "{{ serial }} {{ mac }} {{ model }} {{ family }} {{ server_url }} {{ onie.operation }} \
                 {{ onie.arch }} {{ onie.machine }} {{ onie.machine_rev }} {{ onie.vendor_id }} \
                 {{ onie.platform }} {{ container_name }} {{ element_name }} {{ host_name }} {{ os_version }} \
                 {{ variables.site }}",
            ),
        );
        assert_eq!(trial_render(&p, None, &Snapshot::default(), true), []);
    }

    #[test]
    fn what_fails_for_every_device_fails_the_trial_naming_the_part() {
        let mut p = profile();
        p.files.insert("good".into(), template("{{ serial }}\n"));
        p.files.insert("startup".into(), template("site {{ variables.sitee }}\n"));
        p.files.insert("plain".into(), Resolved::Text(Text { text: "{{ nope }}".into(), template: false }));
        // No hostname in the profile: printing it fails for every device.
        p.cumulus_script =
            Some(Text { text: "# CUMULUS-AUTOPROVISIONING\n{{ hostname }}\n".into(), template: true });
        p.sonic = Some(SonicSnapshot {
            sections: vec![SonicSectionSnapshot {
                section: crate::api::SonicSection {
                    configdb_json: Some(Default::default()),
                    ..Default::default()
                },
                parts: BTreeMap::from([(
                    sonic::part::CONFIG_DB.to_owned(),
                    template("not json {{ serial }}"),
                )]),
            }],
            ..Default::default()
        });
        let failures = trial_render(&p, None, &Snapshot::default(), true);
        let got: Vec<(Part, String)> = failures.iter().map(|(p, e)| (p.clone(), e.to_string())).collect();
        assert_eq!(got.len(), 3, "{got:#?}");
        assert_eq!(got[0].0, Part::Sonic);
        assert!(got[0].1.starts_with("sonic.01-configdb-json.config_db.json: not JSON"), "{}", got[0].1);
        assert_eq!(got[1].0, Part::Cumulus);
        assert!(got[1].1.starts_with("cumulus.script: "), "{}", got[1].1);
        assert!(got[1].1.contains("cannot print none"), "{}", got[1].1);
        assert_eq!(got[2].0, Part::File("startup".into()));
        assert!(got[2].1.starts_with("files.startup: undefined value"), "{}", got[2].1);
        assert!(got[2].1.contains("`variables.sitee` is undefined"), "{}", got[2].1);
        assert!(!got[2].1.contains("net/leaf"), "the profile's own status does not name it: {}", got[2].1);
    }

    #[test]
    fn guarded_facts_and_the_profiles_own_keys_pass_the_trial() {
        let mut p = profile();
        p.variables.insert("SN-7".into(), "10.0.0.7".into());
        p.ztp = Some(ZtpSnapshot {
            sections: vec![ZtpSectionSnapshot {
                section: crate::api::switchprofile::ZtpSection {
                    kind: crate::api::ZtpSectionKind::CommandsList,
                    ..serde_json::from_value(serde_json::json!({"kind": "commands-list"})).expect("section")
                },
                resolved: Some(template(
                    "{% if hostname %}nv set system hostname {{ hostname }}{% endif %}\nip {{ variables[serial] }}\n",
                )),
            }],
            ..Default::default()
        });
        assert_eq!(trial_render(&p, None, &Snapshot::default(), true), []);
        // A section without the content its kind needs fails the whole document.
        if let Some(z) = p.ztp.as_mut() {
            z.sections[0].resolved = None;
        }
        let failures = trial_render(&p, None, &Snapshot::default(), true);
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].0, Part::Ztp);
        assert_eq!(trial_render(&p, None, &Snapshot::default(), false), []);
    }
}
